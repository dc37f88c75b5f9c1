//! The MTUs on a workload's path: its own interface, the host-side veth peer, the bridge
//! that veth is enslaved to, and the host's egress interface towards the remote. A
//! container behind Docker's bridge NAT whose MTU is larger than the egress's has its
//! large segments dropped in `ip_forward` (`PKT_TOO_BIG`): the MTUs say why.
//!
//! Everything is read over rtnetlink from the host's namespace, the container's interfaces
//! too (`IFLA_TARGET_NETNSID`); its namespace is entered only to read its own route, when
//! no single veth says which of its interfaces the flow leaves by.

mod rtnl;

use std::{io, net::IpAddr, os::unix::fs::MetadataExt as _};

use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    nsid::{NsidAttribute, NsidMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric},
};

use self::rtnl::{Answer, Rtnl};

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error(
        "cannot open an rtnetlink socket ({0}): interfaces and routes are read over \
         NETLINK_ROUTE, which every Linux kernel has; is this Linux?"
    )]
    Socket(#[source] io::Error),
    #[error("netlink {request}: {source}")]
    Io {
        request: &'static str,
        source: io::Error,
    },
    #[error(
        "the kernel refused {request} ({source}): reading another namespace's interfaces and \
         assigning namespace ids needs CAP_NET_ADMIN; run galmanhae as root"
    )]
    Permission {
        request: &'static str,
        source: io::Error,
    },
    #[error("the kernel refused {request}: {source}")]
    Kernel {
        request: &'static str,
        source: io::Error,
    },
    #[error("netlink {request}: the kernel's answer is malformed: {source}")]
    Malformed {
        request: &'static str,
        source: netlink_packet_core::DecodeError,
    },
    #[error("netlink {request}: the answer lacks {missing}")]
    NoAnswer {
        request: &'static str,
        missing: &'static str,
    },
    #[error(
        "netlink {request}: interfaces or routes changed during each of several dumps; \
         ask again when the host is quieter"
    )]
    Interrupted { request: &'static str },
    #[error(
        "process {pid} has exited, so its network namespace cannot be looked up: pass a pid \
         that lives in the workload"
    )]
    NoProcess { pid: u32 },
    #[error(
        "no network namespace has id {nsid} (it was deleted, or the id belongs to another \
         namespace's view): look it up again with nsid_of_pid"
    )]
    NoNetns { nsid: i32 },
    #[error(
        "this kernel ignored IFLA_TARGET_NETNSID and answered with its own interfaces: reading \
         another namespace's interfaces by nsid needs Linux 4.20 or newer"
    )]
    TargetNetnsidIgnored,
    #[error("interface {ifindex} does not exist (any more): it was deleted while being read")]
    NoInterface { ifindex: u32 },
    #[error("no route to {dst} ({source}): check `ip route get {dst}`")]
    NoRoute { dst: IpAddr, source: io::Error },
    #[error(
        "cannot read or enter the network namespace of process {pid} ({source}): that needs \
         CAP_SYS_PTRACE to read it and CAP_SYS_ADMIN to enter it; run galmanhae as root"
    )]
    NetnsAccess { pid: u32, source: io::Error },
}

impl PathError {
    /// An `NLMSG_ERROR` (or failed `NLMSG_DONE`) code, negative as the kernel sends it.
    fn refused(request: &'static str, code: i32) -> Self {
        let errno = code.saturating_abs();
        let source = io::Error::from_raw_os_error(errno);
        if errno == libc::EPERM || errno == libc::EACCES {
            Self::Permission { request, source }
        } else {
            Self::Kernel { request, source }
        }
    }

    /// Reading or entering `/proc/PID/ns/net` failed.
    fn netns(pid: u32, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            Self::NoProcess { pid }
        } else {
            Self::NetnsAccess { pid, source }
        }
    }

    /// The errno of a refusal that has no variant of its own.
    fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

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
}

impl Interface {
    /// `None` for a message without a name or MTU, which no real interface sends.
    fn from_message(message: &LinkMessage) -> Option<Self> {
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

/// The MTUs on a workload's path; what could not be read is `None` and said in `notes`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PathMtu {
    /// Inside the workload's namespace: the peer of `host_veth`, or (no veth, or several)
    /// the interface of its own route to the remote, its default route's as a rule.
    pub workload_if: Option<Interface>,
    pub host_veth: Option<Interface>,
    pub bridge: Option<Interface>,
    /// The host's route to the remote.
    pub egress: Option<Route>,
    pub notes: Vec<String>,
}

impl PathMtu {
    /// The smallest MTU on the path: the largest packet that crosses it whole.
    pub fn smallest(&self) -> Option<u32> {
        self.inner_mtus()
            .chain(self.egress.as_ref().map(Route::mtu))
            .min()
    }

    /// `(largest MTU on the workload's side, egress MTU)` when the workload's side is
    /// larger: its full-sized segments cannot leave the host.
    pub fn mismatch(&self) -> Option<(u32, u32)> {
        let inner = self.inner_mtus().max()?;
        let egress = self.egress.as_ref()?.mtu();
        (inner > egress).then_some((inner, egress))
    }

    fn inner_mtus(&self) -> impl Iterator<Item = u32> + '_ {
        [&self.workload_if, &self.host_veth, &self.bridge]
            .into_iter()
            .flatten()
            .map(|interface| interface.mtu)
    }
}

/// Every interface of the calling thread's network namespace.
pub(crate) fn links() -> Result<Vec<Interface>, PathError> {
    dump_links(&mut Rtnl::open()?, None)
}

/// Every interface of the namespace that the calling thread's namespace numbers `nsid`
/// (`IFLA_TARGET_NETNSID`, Linux 4.20), without entering it. Their `link_netnsid` is
/// numbered from the caller's view too: for a veth whose peer is in the caller's own
/// namespace, the kernel gives that namespace an id in its own table (`ip netns list-id`
/// then lists it, without a name).
pub fn links_in(nsid: i32) -> Result<Vec<Interface>, PathError> {
    dump_links(&mut Rtnl::open()?, Some(nsid))
}

/// The route the calling thread's namespace takes to `dst`, like `ip route get`.
pub fn route_to(dst: IpAddr) -> Result<Route, PathError> {
    route(&mut Rtnl::open()?, dst)
}

/// The id the calling thread's namespace gives the network namespace of `pid`; `None` when
/// it has none yet (the path walk gives it one, as `ip netns set` does).
pub fn nsid_of_pid(pid: u32) -> Result<Option<i32>, PathError> {
    nsid(&mut Rtnl::open()?, pid)
}

/// The MTUs on the path of the workload that `pid` (any process in its network namespace)
/// belongs to, towards `remote`, the flow's remote address. Never fails: what cannot be
/// read (a process that exited, an interface that vanished, no nsid) goes into `notes`.
pub fn workload_path(pid: u32, remote: IpAddr) -> PathMtu {
    path_of(pid, None, remote)
}

/// [`workload_path`] for a process known to live in a namespace of its own (the caller found
/// it from the kernel's task list), so `/proc/PID/ns/net`, which needs ptrace access to the
/// process, is not read.
pub(crate) fn separate_workload_path(pid: u32, remote: IpAddr) -> PathMtu {
    path_of(pid, Some(false), remote)
}

fn path_of(pid: u32, shares_host_netns: Option<bool>, remote: IpAddr) -> PathMtu {
    let mut path = PathMtu {
        workload_if: None,
        host_veth: None,
        bridge: None,
        egress: None,
        notes: Vec::new(),
    };
    let mut host = match Rtnl::open() {
        Ok(host) => host,
        Err(error) => {
            path.notes.push(error.to_string());
            return path;
        }
    };
    match route(&mut host, remote) {
        Ok(egress) => path.egress = Some(egress),
        Err(error) => path.notes.push(format!("egress: {error}")),
    }
    if let Err(error) = walk(&mut host, pid, shares_host_netns, remote, &mut path) {
        path.notes.push(error.to_string());
    }
    path
}

/// Fills `path` from the workload's side, as far as it can be read.
fn walk(
    host: &mut Rtnl,
    pid: u32,
    shares_host_netns: Option<bool>,
    remote: IpAddr,
    path: &mut PathMtu,
) -> Result<(), PathError> {
    let shared = match shares_host_netns {
        Some(shared) => shared,
        None => shares_netns(pid)?,
    };
    if shared {
        path.notes.push(format!(
            "process {pid} shares the host's network namespace: no veth or bridge on its path"
        ));
        if let Some(egress) = &path.egress {
            path.workload_if = Some(link(host, egress.oif)?);
        }
        return Ok(());
    }

    let nsid = if let Some(nsid) = nsid(host, pid)? {
        nsid
    } else {
        let nsid = assign(host, pid)?;
        path.notes.push(format!(
            "the network namespace of process {pid} had no nsid; assigned {nsid} \
             (as `ip netns set` does)"
        ));
        nsid
    };
    let host_links = dump_links(host, None)?;
    let veths: Vec<&Interface> = host_links
        .iter()
        .filter(|interface| interface.link_netnsid == Some(nsid))
        .collect();
    let veth = match veths.as_slice() {
        [] => {
            path.notes.push(format!(
                "no veth in the host's namespace leads into that of process {pid} (macvlan, \
                 ipvlan, or no network): its interface is the one of its route to {remote}"
            ));
            path.workload_if = Some(workload_route_interface(pid, remote)?);
            return Ok(());
        }
        [veth] => (*veth).clone(),
        several => {
            // Several networks: the workload's own route says which one the flow takes.
            let inside = workload_route_interface(pid, remote)?;
            let veth = several
                .iter()
                .find(|veth| veth.peer_ifindex == Some(inside.ifindex))
                .map(|veth| (*veth).clone());
            path.workload_if = Some(inside);
            let Some(veth) = veth else {
                path.notes.push(format!(
                    "{} veths lead into the namespace of process {pid}, none to the \
                     interface of its route to {remote}",
                    several.len()
                ));
                return Ok(());
            };
            veth
        }
    };

    match veth.master {
        Some(master) => {
            path.bridge = host_links
                .iter()
                .find(|interface| interface.ifindex == master)
                .cloned();
            if path.bridge.is_none() {
                path.notes.push(format!(
                    "bridge {master} of {} vanished while being read",
                    veth.name
                ));
            }
        }
        None => path.notes.push(format!(
            "{} is not enslaved to a bridge (a routed veth)",
            veth.name
        )),
    }
    let peer = veth.peer_ifindex;
    let name = veth.name.clone();
    path.host_veth = Some(veth);
    if path.workload_if.is_none() {
        path.workload_if = dump_links(host, Some(nsid))?
            .into_iter()
            .find(|interface| Some(interface.ifindex) == peer);
        if path.workload_if.is_none() {
            path.notes.push(format!(
                "the workload's end of {name} (ifindex {}) vanished while being read",
                peer.map_or_else(|| "unknown".to_owned(), |ifindex| ifindex.to_string())
            ));
        }
    }
    Ok(())
}

/// Whether `pid` is in the calling thread's network namespace, where the host socket is.
fn shares_netns(pid: u32) -> Result<bool, PathError> {
    let inode = |path: &str| std::fs::metadata(path).map(|meta| (meta.dev(), meta.ino()));
    let theirs = inode(&format!("/proc/{pid}/ns/net")).map_err(|e| PathError::netns(pid, e))?;
    let ours = inode("/proc/thread-self/ns/net").map_err(|e| PathError::netns(pid, e))?;
    Ok(theirs == ours)
}

/// The interface of the workload's own route to `remote`, read inside its namespace.
fn workload_route_interface(pid: u32, remote: IpAddr) -> Result<Interface, PathError> {
    let mut inside = Rtnl::open_in_netns_of(pid)?;
    let route = route(&mut inside, remote)?;
    link(&mut inside, route.oif)
}

fn dump_links(rtnl: &mut Rtnl, nsid: Option<i32>) -> Result<Vec<Interface>, PathError> {
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

fn link(rtnl: &mut Rtnl, ifindex: u32) -> Result<Interface, PathError> {
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

fn route(rtnl: &mut Rtnl, dst: IpAddr) -> Result<Route, PathError> {
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

fn nsid(rtnl: &mut Rtnl, pid: u32) -> Result<Option<i32>, PathError> {
    let mut request = NsidMessage::default();
    request.attributes.push(NsidAttribute::Pid(pid));
    let replies = rtnl
        .request(
            &RouteNetlinkMessage::GetNsId(request),
            Answer::Acked,
            "RTM_GETNSID",
        )
        .map_err(|error| no_process(error, pid))?;
    let nsid = replies
        .iter()
        .find_map(|reply| match reply {
            RouteNetlinkMessage::NewNsId(message) => {
                message
                    .attributes
                    .iter()
                    .find_map(|attribute| match attribute {
                        NsidAttribute::Id(nsid) => Some(*nsid),
                        _ => None,
                    })
            }
            _ => None,
        })
        .ok_or(PathError::NoAnswer {
            request: "RTM_GETNSID",
            missing: "NETNSA_NSID",
        })?;
    // NETNSA_NSID_NOT_ASSIGNED is -1.
    Ok((nsid >= 0).then_some(nsid))
}

fn assign(rtnl: &mut Rtnl, pid: u32) -> Result<i32, PathError> {
    let mut request = NsidMessage::default();
    // NETNSA_NSID -1: the kernel picks the id.
    request.attributes = vec![NsidAttribute::Pid(pid), NsidAttribute::Id(-1)];
    match rtnl.request(
        &RouteNetlinkMessage::NewNsId(request),
        Answer::Acked,
        "RTM_NEWNSID",
    ) {
        // EEXIST: someone (a veth, `ip netns set`) assigned one meanwhile.
        Err(error) if error.errno() != Some(libc::EEXIST) => return Err(no_process(error, pid)),
        _ => {}
    }
    nsid(rtnl, pid)?.ok_or(PathError::NoAnswer {
        request: "RTM_NEWNSID",
        missing: "an id for the namespace after assigning one",
    })
}

/// `get_net_ns_by_pid()` answers ESRCH for a pid that is gone.
fn no_process(error: PathError, pid: u32) -> PathError {
    match error.errno() {
        Some(libc::ESRCH) => PathError::NoProcess { pid },
        _ => error,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use netlink_packet_route::link::InfoKind;

    use super::*;

    fn interface(name: &str, mtu: u32) -> Interface {
        Interface {
            name: name.to_owned(),
            ifindex: 1,
            mtu,
            kind: None,
            master: None,
            link_netnsid: None,
            peer_ifindex: None,
            up: true,
        }
    }

    fn route(dev_mtu: u32, route_mtu: Option<u32>) -> Route {
        Route {
            oif: 2,
            dev: "gmh-mtup1".to_owned(),
            dev_mtu,
            route_mtu,
            gateway: None,
            prefsrc: None,
        }
    }

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

    #[test]
    fn mismatch_compares_the_largest_inner_mtu_with_the_egress() {
        let mut path = PathMtu {
            workload_if: Some(interface("eth0", 1500)),
            host_veth: Some(interface("gmh-mtc1", 1500)),
            bridge: Some(interface("gmh-mtbr1", 1500)),
            egress: Some(route(1400, None)),
            notes: Vec::new(),
        };
        assert_eq!(path.smallest(), Some(1400));
        assert_eq!(path.mismatch(), Some((1500, 1400)));

        path.egress = Some(route(1500, Some(1450)));
        assert_eq!(path.mismatch(), Some((1500, 1450)));

        path.workload_if = Some(interface("eth0", 1400));
        path.host_veth = None;
        path.bridge = None;
        path.egress = Some(route(1500, None));
        assert_eq!((path.smallest(), path.mismatch()), (Some(1400), None));

        path.egress = None;
        assert_eq!((path.smallest(), path.mismatch()), (Some(1400), None));
        path.workload_if = None;
        assert_eq!((path.smallest(), path.mismatch()), (None, None));
    }

    #[test]
    fn errors_say_what_to_do() {
        let err = PathError::refused("RTM_GETLINK", -libc::EINVAL);
        assert_eq!(err.errno(), Some(libc::EINVAL));
        assert!(matches!(
            no_process(PathError::refused("RTM_GETNSID", -libc::ESRCH), 7),
            PathError::NoProcess { pid: 7 }
        ));
        assert!(
            PathError::NoProcess { pid: 7 }
                .to_string()
                .contains("exited")
        );
    }
}
