//! The MTUs on a workload's path: its own interface, the host-side veth peer, the bridge
//! that veth is enslaved to, and the host's egress interface towards the remote. A
//! container behind Docker's bridge NAT whose MTU is larger than the egress's has its
//! large segments dropped in `ip_forward` (`PKT_TOO_BIG`): the MTUs say why.
//!
//! Everything is read over rtnetlink from the host's namespace, the container's interfaces
//! too (`IFLA_TARGET_NETNSID`); its namespace is entered only to read its own route, when
//! no single veth says which of its interfaces the flow leaves by.

mod error;
mod links;
mod nsid;
mod routes;
mod rtnl;
mod walk;

use std::net::IpAddr;

use self::rtnl::Rtnl;
pub use self::{error::PathError, links::Interface, routes::Route, walk::PathMtu};

/// Every interface of the calling thread's network namespace.
pub(crate) fn links() -> Result<Vec<Interface>, PathError> {
    links::dump_links(&mut Rtnl::open()?, None)
}

/// Every interface of the namespace that the calling thread's namespace numbers `nsid`
/// (`IFLA_TARGET_NETNSID`, Linux 4.20), without entering it. Their `link_netnsid` is
/// numbered from the caller's view too: for a veth whose peer is in the caller's own
/// namespace, the kernel gives that namespace an id in its own table (`ip netns list-id`
/// then lists it, without a name).
pub fn links_in(nsid: i32) -> Result<Vec<Interface>, PathError> {
    links::dump_links(&mut Rtnl::open()?, Some(nsid))
}

/// The route the calling thread's namespace takes to `dst`, like `ip route get`.
pub fn route_to(dst: IpAddr) -> Result<Route, PathError> {
    routes::route(&mut Rtnl::open()?, dst)
}

/// The id the calling thread's namespace gives the network namespace of `pid`; `None` when
/// it has none yet (the path walk gives it one, as `ip netns set` does).
pub fn nsid_of_pid(pid: u32) -> Result<Option<i32>, PathError> {
    nsid::nsid(&mut Rtnl::open()?, pid)
}

/// The MTUs on the path of the workload that `pid` (any process in its network namespace)
/// belongs to, towards `remote`, the flow's remote address. Never fails: what cannot be
/// read (a process that exited, an interface that vanished, no nsid) goes into `notes`.
pub fn workload_path(pid: u32, remote: IpAddr) -> PathMtu {
    walk::path_of(pid, None, remote)
}

/// [`workload_path`] for a process known to live in a namespace of its own (the caller found
/// it from the kernel's task list), so `/proc/PID/ns/net`, which needs ptrace access to the
/// process, is not read.
pub(crate) fn separate_workload_path(pid: u32, remote: IpAddr) -> PathMtu {
    walk::path_of(pid, Some(false), remote)
}
