//! Packets that left the host untranslated (`nat_leak`): the tc egress program on the uplinks
//! (`galmanhae-ebpf/src/leak.rs`) counts those whose source lies in a MASQUERADE rule's
//! subnet. Here: which interfaces are uplinks, which subnets are translated, and whose packets
//! the counted ones were.

use std::{collections::BTreeMap, net::SocketAddr};

use aya::Ebpf;
use galmanhae_common::{drop::IPPROTO_TCP, leak::LeakKey};

use super::maps::{Counts, ReadError, read_counts};
use crate::{
    addr::{self, ip},
    attribute::Attributor,
    kernel::probes::Probes,
    path::{self, Interface},
    report::{LeakReport, NatAudit},
};

/// Untranslated packets per uplink and flow, cumulative since the program was attached.
pub type LeakSample = Counts<LeakKey>;

pub fn read(ebpf: &Ebpf) -> Result<LeakSample, ReadError> {
    read_counts(ebpf, "LEAKS")
}

/// Where translated packets leave: the host's interfaces that are up, except loopback,
/// bridges and their ports (container veths), and interfaces a MASQUERADE rule excludes
/// (`! -o docker0`).
pub fn uplinks(audit: &NatAudit) -> Result<Vec<Interface>, path::PathError> {
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
pub fn watch(probes: &mut Probes, audit: &NatAudit) -> Option<String> {
    match uplinks(audit) {
        Ok(links) => {
            let links: Vec<(u32, String)> =
                links.into_iter().map(|l| (l.ifindex, l.name)).collect();
            probes.watch_uplinks(&audit.translated_subnets(), &links);
            None
        }
        Err(e) => Some(format!(
            "NAT leaks unwatched: listing the host's interfaces failed ({e})"
        )),
    }
}

/// The watched uplinks that no longer exist (or are another interface now).
pub fn vanished(watched: &BTreeMap<u32, String>) -> Vec<String> {
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

/// Untranslated packets per workload and uplink, with a few example flows each.
pub fn reports(
    delta: &LeakSample,
    attributor: &mut Attributor,
    uplinks: &BTreeMap<u32, String>,
) -> Vec<LeakReport> {
    let mut by_owner: BTreeMap<(String, String), LeakReport> = BTreeMap::new();
    let mut keys: Vec<(&LeakKey, &u64)> = delta.iter().collect();
    keys.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (key, packets) in keys {
        let source = ip(key.src_addr);
        let workload = attributor.netns_of_address(source).map_or_else(
            || format!("bridge address {source}"),
            |netns| attributor.workload(netns, 0).name,
        );
        let interface = uplinks
            .get(&key.ifindex)
            .cloned()
            .unwrap_or_else(|| format!("ifindex {}", key.ifindex));
        let report = by_owner
            .entry((workload.clone(), interface.clone()))
            .or_insert_with(|| LeakReport {
                workload,
                interface,
                packets: 0,
                examples: Vec::new(),
            });
        report.packets += packets;
        if report.examples.len() < 5 {
            report.examples.push(describe(key));
        }
    }
    let mut out: Vec<LeakReport> = by_owner.into_values().collect();
    out.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.workload.cmp(&b.workload)));
    out
}

fn describe(key: &LeakKey) -> String {
    let packet = addr::describe(
        key.protocol,
        SocketAddr::new(ip(key.src_addr), key.src_port),
        SocketAddr::new(ip(key.dst_addr), key.dst_port),
    );
    if key.protocol == IPPROTO_TCP {
        format!("{packet} flags {}", tcp_flags(key.tcp_flags))
    } else {
        packet
    }
}

/// `SYN|FIN`-style names of the flags set.
fn tcp_flags(flags: u8) -> String {
    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    let set: Vec<&str> = NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| flags & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect();
    if set.is_empty() {
        "none".to_owned()
    } else {
        set.join("|")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_flags() {
        assert_eq!(tcp_flags(0x03), "FIN|SYN");
        assert_eq!(tcp_flags(0x12), "SYN|ACK");
        assert_eq!(tcp_flags(0), "none");
    }
}
