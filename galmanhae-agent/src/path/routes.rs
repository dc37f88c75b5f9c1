//! The kernel's route to one destination over rtnetlink (`RTM_GETROUTE`), as `ip route get`
//! shows it.

use std::net::IpAddr;

use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric},
};

use super::{
    PathError,
    links::link,
    rtnl::{Answer, Rtnl},
};

/// The kernel's route to one destination, as `ip route get` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Route {
    pub oif: u32,
    pub dev: String,
    pub dev_mtu: u32,
    /// The route's `RTAX_MTU` metric: a configured `mtu` or a PMTU learnt from ICMP
    /// "fragmentation needed" and cached on the route.
    pub route_mtu: Option<u32>,
    pub gateway: Option<IpAddr>,
    pub prefsrc: Option<IpAddr>,
}

impl Route {
    /// The largest packet that leaves by this route.
    pub fn mtu(&self) -> u32 {
        self.route_mtu
            .map_or(self.dev_mtu, |mtu| mtu.min(self.dev_mtu))
    }
}

pub(super) fn route(rtnl: &mut Rtnl, dst: IpAddr) -> Result<Route, PathError> {
    let mut request = RouteMessage::default();
    (
        request.header.address_family,
        request.header.destination_prefix_length,
    ) = match dst {
        IpAddr::V4(_) => (AddressFamily::Inet, 32),
        IpAddr::V6(_) => (AddressFamily::Inet6, 128),
    };
    request
        .attributes
        .push(RouteAttribute::Destination(dst.into()));
    let replies = rtnl
        .request(
            &RouteNetlinkMessage::GetRoute(request),
            Answer::Acked,
            "RTM_GETROUTE",
        )
        .map_err(|error| match error {
            PathError::Kernel { source, .. } => PathError::NoRoute { dst, source },
            error => error,
        })?;
    let hop = replies
        .iter()
        .find_map(|reply| match reply {
            RouteNetlinkMessage::NewRoute(message) => Hop::from_message(message),
            _ => None,
        })
        .ok_or(PathError::NoAnswer {
            request: "RTM_GETROUTE",
            missing: "a route with an output interface",
        })?;
    let dev = link(rtnl, hop.oif)?;
    Ok(Route {
        oif: hop.oif,
        dev: dev.name,
        dev_mtu: dev.mtu,
        route_mtu: hop.mtu,
        gateway: hop.gateway,
        prefsrc: hop.prefsrc,
    })
}

/// What an `RTM_NEWROUTE` answer says; the device's name and MTU take another request.
#[derive(Debug, PartialEq, Eq)]
struct Hop {
    oif: u32,
    mtu: Option<u32>,
    gateway: Option<IpAddr>,
    prefsrc: Option<IpAddr>,
}

impl Hop {
    /// `None` without an output interface (`RTA_OIF`).
    fn from_message(message: &RouteMessage) -> Option<Self> {
        let ip = |address: &RouteAddress| match address {
            RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
            RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
            _ => None,
        };
        let (mut oif, mut mtu, mut gateway, mut prefsrc) = (None, None, None, None);
        for attribute in &message.attributes {
            match attribute {
                RouteAttribute::Oif(value) => oif = Some(*value),
                RouteAttribute::Gateway(address) => gateway = ip(address),
                RouteAttribute::PrefSource(address) => prefsrc = ip(address),
                RouteAttribute::Metrics(metrics) => {
                    mtu = metrics.iter().find_map(|metric| match metric {
                        RouteMetric::Mtu(value) => Some(*value),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        Some(Self {
            oif: oif?,
            mtu,
            gateway,
            prefsrc,
        })
    }
}

/// A route out of `gmh-mtup1` with these MTUs, for the tests of the path's parts.
#[cfg(test)]
pub(super) fn test_route(dev_mtu: u32, route_mtu: Option<u32>) -> Route {
    Route {
        oif: 2,
        dev: "gmh-mtup1".to_owned(),
        dev_mtu,
        route_mtu,
        gateway: None,
        prefsrc: None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    use super::test_route as route;

    #[test]
    fn a_route_answer_becomes_a_hop() {
        let mut message = RouteMessage::default();
        message.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(198, 18, 252, 9))),
            RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(198, 18, 251, 254))),
            RouteAttribute::PrefSource(RouteAddress::Inet(Ipv4Addr::new(198, 18, 251, 1))),
            RouteAttribute::Oif(5),
            RouteAttribute::Metrics(vec![RouteMetric::Advmss(1360), RouteMetric::Mtu(1400)]),
        ];
        assert_eq!(
            Hop::from_message(&message),
            Some(Hop {
                oif: 5,
                mtu: Some(1400),
                gateway: Some(IpAddr::V4(Ipv4Addr::new(198, 18, 251, 254))),
                prefsrc: Some(IpAddr::V4(Ipv4Addr::new(198, 18, 251, 1))),
            })
        );
        message
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        assert_eq!(Hop::from_message(&message), None);
    }

    #[test]
    fn the_route_mtu_only_lowers_the_device_mtu() {
        assert_eq!(route(1400, None).mtu(), 1400);
        assert_eq!(route(1500, Some(1280)).mtu(), 1280);
        assert_eq!(route(1400, Some(9000)).mtu(), 1400);
    }
}
