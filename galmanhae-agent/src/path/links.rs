//! Interfaces over rtnetlink (`RTM_GETLINK`): one by ifindex, or every one of a namespace.

use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage},
};

use super::{
    PathError,
    rtnl::{Answer, Rtnl},
};

/// One network interface as rtnetlink reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub mtu: u32,
    /// `veth`, `bridge`, `dummy`, ... (`IFLA_INFO_KIND`); `None` for physical devices.
    pub kind: Option<String>,
    /// Ifindex of the bridge (or bond) this interface is enslaved to (`IFLA_MASTER`).
    pub master: Option<u32>,
    /// The namespace id of the peer's namespace (`IFLA_LINK_NETNSID`), as the asking
    /// namespace numbers it.
    pub link_netnsid: Option<i32>,
    /// `IFLA_LINK`: for a veth, the peer's ifindex in the peer's namespace.
    pub peer_ifindex: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// An Ethernet device (`ARPHRD_ETHER`: physical NICs, veths, bridges, VLANs, bonds).
    pub ethernet: bool,
}

impl Interface {
    /// `None` for a message without a name or MTU, which no real interface sends.
    pub(super) fn from_message(message: &LinkMessage) -> Option<Self> {
        let mut name = None;
        let mut mtu = None;
        let mut interface = Self {
            name: String::new(),
            ifindex: message.header.index,
            mtu: 0,
            kind: None,
            master: None,
            link_netnsid: None,
            peer_ifindex: None,
            up: message.header.flags.contains(LinkFlags::Up),
            ethernet: message.header.link_layer_type == LinkLayerType::Ether,
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(value) => name = Some(value.clone()),
                LinkAttribute::Mtu(value) => mtu = Some(*value),
                LinkAttribute::Controller(value) => interface.master = Some(*value),
                LinkAttribute::LinkNetNsId(value) => interface.link_netnsid = Some(*value),
                LinkAttribute::Link(value) => interface.peer_ifindex = Some(*value),
                LinkAttribute::LinkInfo(infos) => {
                    interface.kind = infos.iter().find_map(|info| match info {
                        LinkInfo::Kind(kind) => Some(kind.to_string()),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        interface.name = name?;
        interface.mtu = mtu?;
        Some(interface)
    }
}

pub(super) fn dump_links(rtnl: &mut Rtnl, nsid: Option<i32>) -> Result<Vec<Interface>, PathError> {
    let mut request = LinkMessage::default();
    // IFLA_TARGET_NETNSID is the same attribute number as IFLA_IF_NETNSID.
    request
        .attributes
        .extend(nsid.map(LinkAttribute::IfNetnsId));
    let replies = rtnl
        .request(
            &RouteNetlinkMessage::GetLink(request),
            Answer::Dump,
            "RTM_GETLINK",
        )
        .map_err(|error| match (nsid, error.errno()) {
            // get_net_ns_by_id() found nothing (6.18 says so in NLMSG_DONE).
            (Some(nsid), Some(libc::EINVAL)) => PathError::NoNetns { nsid },
            _ => error,
        })?;
    let mut interfaces = Vec::new();
    for reply in &replies {
        let RouteNetlinkMessage::NewLink(message) = reply else {
            continue;
        };
        // A kernel that knows the attribute echoes it in every reply; an older one
        // silently dumps its own namespace instead.
        if let Some(nsid) = nsid {
            if !message.attributes.contains(&LinkAttribute::IfNetnsId(nsid)) {
                return Err(PathError::TargetNetnsidIgnored);
            }
        }
        interfaces.extend(Interface::from_message(message));
    }
    Ok(interfaces)
}

pub(super) fn link(rtnl: &mut Rtnl, ifindex: u32) -> Result<Interface, PathError> {
    let mut request = LinkMessage::default();
    request.header.index = ifindex;
    let replies = rtnl
        .request(
            &RouteNetlinkMessage::GetLink(request),
            Answer::Acked,
            "RTM_GETLINK",
        )
        .map_err(|error| match error.errno() {
            Some(libc::ENODEV) => PathError::NoInterface { ifindex },
            _ => error,
        })?;
    replies
        .iter()
        .find_map(|reply| match reply {
            RouteNetlinkMessage::NewLink(message) => Interface::from_message(message),
            _ => None,
        })
        .ok_or(PathError::NoAnswer {
            request: "RTM_GETLINK",
            missing: "an interface with a name and an MTU",
        })
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::InfoKind;

    use super::*;

    #[test]
    fn a_veth_message_becomes_an_interface() {
        let mut message = LinkMessage::default();
        message.header.index = 17;
        message.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        message.attributes = vec![
            LinkAttribute::IfName("gmh-mtc1".to_owned()),
            LinkAttribute::Mtu(1500),
            LinkAttribute::Controller(9),
            LinkAttribute::LinkNetNsId(3),
            LinkAttribute::Link(2),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        let veth = Interface::from_message(&message).unwrap();
        assert_eq!(
            (
                veth.name.as_str(),
                veth.ifindex,
                veth.mtu,
                veth.kind.as_deref()
            ),
            ("gmh-mtc1", 17, 1500, Some("veth"))
        );
        assert_eq!(
            (veth.master, veth.link_netnsid, veth.peer_ifindex, veth.up),
            (Some(9), Some(3), Some(2), true)
        );

        message.header.flags = LinkFlags::Broadcast;
        message.attributes.truncate(2);
        let plain = Interface::from_message(&message).unwrap();
        assert_eq!((plain.kind, plain.master, plain.up), (None, None, false));

        message.attributes.remove(1);
        assert!(Interface::from_message(&message).is_none(), "no MTU");
    }
}
