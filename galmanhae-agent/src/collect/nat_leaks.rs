//! Packets that left the host untranslated (`nat_leak`): the tc egress program on the uplinks
//! (`galmanhae-ebpf/src/leak.rs`) counts those whose source lies in a MASQUERADE rule's
//! subnet. Here: which interfaces are uplinks, which subnets are translated, and whose packets
//! the counted ones were.

use std::collections::BTreeMap;

use aya::Ebpf;
use galmanhae_common::leak::LeakKey;

use super::{
    maps::{Counts, ReadError, read_counts},
    netfilter::NatAudit,
};
use crate::{
    kernel::{leak_watch::Uplink, probes::Probes},
    path::{self, Interface},
};

/// Untranslated packets per uplink and flow, cumulative since the program was attached.
pub(crate) type LeakSample = Counts<LeakKey>;

pub(crate) fn read(ebpf: &Ebpf) -> Result<LeakSample, ReadError> {
    read_counts(ebpf, "LEAKS")
}

/// Where translated packets leave: the host's interfaces that are up, except loopback,
/// bridges and their ports (container veths), and interfaces a MASQUERADE rule excludes
/// (`! -o docker0`).
pub(crate) fn uplinks(audit: &NatAudit) -> Result<Vec<Interface>, path::PathError> {
    let excluded: Vec<&str> = audit
        .masquerade
        .iter()
        .filter_map(|m| m.out_iface.as_deref()?.strip_prefix('!'))
        .collect();
    Ok(path::links()?
        .into_iter()
        .filter(|l| {
            l.up && l.name != "lo"
                && l.master.is_none()
                && l.kind.as_deref() != Some("bridge")
                && !excluded.contains(&l.name.as_str())
        })
        .collect())
}

/// Starts watching the uplinks for untranslated packets; a note when that cannot be done.
pub(crate) fn watch(probes: &mut Probes, audit: &NatAudit) -> Option<String> {
    match uplinks(audit) {
        Ok(links) => {
            let links: Vec<Uplink> = links
                .into_iter()
                .map(|l| Uplink {
                    ifindex: l.ifindex,
                    name: l.name,
                    ethernet: l.ethernet,
                })
                .collect();
            probes.watch_uplinks(&audit.translated_subnets(), &links);
            None
        }
        Err(e) => Some(format!(
            "NAT leaks unwatched: listing the host's interfaces failed ({e})"
        )),
    }
}

/// The watched uplinks that no longer exist (or are another interface now).
pub(crate) fn vanished(watched: &BTreeMap<u32, String>) -> Vec<String> {
    let Ok(now) = path::links() else {
        return Vec::new();
    };
    watched
        .iter()
        .filter(|(ifindex, name)| {
            !now.iter()
                .any(|l| l.ifindex == **ifindex && l.name == **name)
        })
        .map(|(_, name)| name.clone())
        .collect()
}
