//! The path walk: from the workload's namespace to the host's egress, the MTU of each hop
//! that could be read and a note for each that could not.

use std::{net::IpAddr, os::unix::fs::MetadataExt as _};

use super::{
    PathError,
    links::{Interface, dump_links, link},
    nsid::{assign, nsid},
    routes::{Route, route},
    rtnl::Rtnl,
};

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

pub(super) fn path_of(pid: u32, shares_host_netns: Option<bool>, remote: IpAddr) -> PathMtu {
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

    let nsid = workload_nsid(host, pid, path)?;
    let host_links = dump_links(host, None)?;
    let Some(veth) = veth_into(&host_links, nsid, pid, remote, path)? else {
        return Ok(());
    };
    bridge_of(&host_links, &veth, path);
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

/// The id the host gives the namespace of `pid`, assigned (with a note) if it had none.
fn workload_nsid(host: &mut Rtnl, pid: u32, path: &mut PathMtu) -> Result<i32, PathError> {
    if let Some(nsid) = nsid(host, pid)? {
        return Ok(nsid);
    }
    let nsid = assign(host, pid)?;
    path.notes.push(format!(
        "the network namespace of process {pid} had no nsid; assigned {nsid} \
         (as `ip netns set` does)"
    ));
    Ok(nsid)
}

/// The host's veth into namespace `nsid` that the flow takes. `None`, with a note, when no
/// veth leads there, or several do and none to the interface of the workload's own route to
/// `remote`; that interface is then the workload's.
fn veth_into(
    host_links: &[Interface],
    nsid: i32,
    pid: u32,
    remote: IpAddr,
    path: &mut PathMtu,
) -> Result<Option<Interface>, PathError> {
    let veths: Vec<&Interface> = host_links
        .iter()
        .filter(|interface| interface.link_netnsid == Some(nsid))
        .collect();
    match veths.as_slice() {
        [] => {
            path.notes.push(format!(
                "no veth in the host's namespace leads into that of process {pid} (macvlan, \
                 ipvlan, or no network): its interface is the one of its route to {remote}"
            ));
            path.workload_if = Some(workload_route_interface(pid, remote)?);
            Ok(None)
        }
        [veth] => Ok(Some((*veth).clone())),
        several => {
            // Several networks: the workload's own route says which one the flow takes.
            let inside = workload_route_interface(pid, remote)?;
            let veth = several
                .iter()
                .find(|veth| veth.peer_ifindex == Some(inside.ifindex))
                .map(|veth| (*veth).clone());
            path.workload_if = Some(inside);
            if veth.is_none() {
                path.notes.push(format!(
                    "{} veths lead into the namespace of process {pid}, none to the \
                     interface of its route to {remote}",
                    several.len()
                ));
            }
            Ok(veth)
        }
    }
}

/// The bridge `veth` is enslaved to, or a note saying why there is none.
fn bridge_of(host_links: &[Interface], veth: &Interface, path: &mut PathMtu) {
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

#[cfg(test)]
mod tests {
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
            ethernet: true,
        }
    }

    use super::super::routes::test_route as route;

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
}
