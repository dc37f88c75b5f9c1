//! The MTUs on each workload's path to the remote it retransmits to most (see [`crate::path`]).

use std::collections::BTreeMap;

use super::Summary;
use crate::{
    attribute::Attributor,
    model::{Hop, HopRole, Path},
    path,
};

/// One path per workload with its own namespace and retransmitting flows.
pub(crate) fn read(summary: &Summary, attributor: &Attributor) -> Vec<Path> {
    // The remote with the most retransmitted segments, per workload.
    let mut top: BTreeMap<&str, (u64, std::net::SocketAddr, u32)> = BTreeMap::new();
    for f in &summary.flows {
        if f.workload.netns_shared {
            continue;
        }
        let (_, remote) = crate::addr::endpoints(&f.key);
        let entry = top
            .entry(&*f.workload.name)
            .or_insert((0, remote, f.key.netns));
        if f.counters.segments > entry.0 {
            *entry = (f.counters.segments, remote, f.key.netns);
        }
    }
    top.into_iter()
        .filter_map(|(workload, (_, remote, netns))| {
            let pid = u32::try_from(attributor.pid_of(netns)?).ok()?;
            let found = path::separate_workload_path(pid, remote.ip());
            let mut hops = Vec::new();
            let mut hop = |role, name: &str, mtu| {
                hops.push(Hop {
                    role,
                    interface: name.to_owned(),
                    mtu,
                });
            };
            if let Some(i) = &found.workload_if {
                hop(HopRole::Workload, &i.name, i.mtu);
            }
            if let Some(i) = &found.host_veth {
                hop(HopRole::HostVeth, &i.name, i.mtu);
            }
            if let Some(i) = &found.bridge {
                hop(HopRole::Bridge, &i.name, i.mtu);
            }
            if let Some(r) = &found.egress {
                hop(HopRole::Egress, &r.dev, r.mtu());
            }
            Some(Path {
                workload: workload.to_owned(),
                remote: remote.ip(),
                hops,
                smallest_mtu: found.smallest(),
                mismatch: found.mismatch(),
                notes: found.notes,
            })
        })
        .collect()
}
