//! Packets that left the host untranslated (`nat_leak`): the tc egress program on the uplinks
//! (`galmanhae-ebpf/src/leak.rs`) counts those whose source lies in a MASQUERADE rule's
//! subnet. Here: which interfaces are uplinks, which subnets are translated, and whose packets
//! the counted ones were.

use std::collections::{BTreeMap, HashMap};

use aya::Ebpf;
use galmanhae_common::leak::LeakKey;
use ipnet::IpNet;

use super::maps::{ReadError, delta, read_per_cpu_hash};
use crate::{
    addr::ip,
    attribute::Attributor,
    kernel::probes::Probes,
    path::{self, Interface},
    report::{LeakReport, NatAudit},
};

/// Cumulative untranslated packets since the program was attached.
#[derive(Clone, Debug, Default)]
pub struct LeakSample {
    pub flows: HashMap<LeakKey, u64>,
}

impl LeakSample {
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            flows: delta(
                &self.flows,
                &earlier.flows,
                |now, then| now.saturating_sub(*then),
                |n| *n == 0,
            ),
        }
    }
}

pub fn read(ebpf: &Ebpf) -> Result<LeakSample, ReadError> {
    Ok(LeakSample {
        flows: read_per_cpu_hash(ebpf, "LEAKS", |total: &mut u64, n: &u64| *total += n)?,
    })
}

/// The source prefixes MASQUERADE translates: a packet from one of them must not leave as is.
pub fn nated_subnets(audit: &NatAudit) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = audit
        .masquerade
        .iter()
        .filter_map(crate::conntrack::MasqueradeRule::source_net)
        .collect();
    nets.sort_unstable();
    nets.dedup();
    nets
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
            probes.watch_uplinks(&nated_subnets(audit), &links);
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
    let mut keys: Vec<(&LeakKey, &u64)> = delta.flows.iter().collect();
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
    let (src, dst) = (ip(key.src_addr), ip(key.dst_addr));
    match key.protocol {
        galmanhae_common::drop::IPPROTO_TCP => format!(
            "tcp {} -> {} flags {}",
            std::net::SocketAddr::new(src, key.src_port),
            std::net::SocketAddr::new(dst, key.dst_port),
            tcp_flags(key.tcp_flags)
        ),
        galmanhae_common::drop::IPPROTO_UDP => format!(
            "udp {} -> {}",
            std::net::SocketAddr::new(src, key.src_port),
            std::net::SocketAddr::new(dst, key.dst_port)
        ),
        other => format!("proto {other} {src} -> {dst}"),
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
