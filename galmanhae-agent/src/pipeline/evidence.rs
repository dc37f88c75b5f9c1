//! From a window's summary to [`Evidence`]: flows, drops and leaks attributed and named,
//! conntrack per namespace, the NAT audit, kernel health. Sorted as the report lists them.

use std::collections::BTreeMap;

use galmanhae_common::{
    drop::{DropKey, IPPROTO_TCP, IPPROTO_UDP},
    health::HealthCounter,
    retransmit::AF_INET,
};

use super::{
    Pipeline, Summary,
    drops::{EXAMPLES, is_icmp_too_big},
    leaks,
};
use crate::{
    addr::{conntrack_source, describe, endpoints, packet_endpoints},
    attribute::{Attributor, nat::Direction},
    kernel::{drop_reasons::DropReasons, kallsyms::Symbolizer},
    model::{
        Conntrack, Drop, DropReason, Evidence, Family, Flow, Health, Location, NamespaceSegments,
        WorkloadEvidence,
    },
};

impl Pipeline {
    /// The evidence of a window. Paths and NAT pairs are read at their own rates: the caller
    /// adds them ([`Pipeline::paths`], [`super::nat::NatSources::pairs`]).
    pub(crate) fn evidence(&mut self, summary: &Summary) -> Evidence {
        self.probes
            .symbols
            .learn(summary.drops.iter().map(|d| d.location));
        Evidence {
            duration: summary.duration,
            workloads: workloads(summary),
            flows: flows(summary),
            overflow: summary
                .retransmits
                .overflow
                .iter()
                .map(|(owner, counters)| {
                    let workload = self.attributor.workload(owner.netns, owner.cgroup_id);
                    (workload, *counters)
                })
                .collect(),
            drops: drops(summary, &self.probes.drop_reasons, &self.probes.symbols),
            conntrack: conntrack(summary, &mut self.attributor),
            nat_audit: self.nat.audit().clone(),
            nat: None,
            paths: Vec::new(),
            leaks: leaks::attribute(&summary.leaks, &mut self.attributor, &self.probes.uplinks),
            namespaces: summary
                .segments
                .iter()
                .map(|(netns, segments)| NamespaceSegments {
                    netns: *netns,
                    workload: self.attributor.workload(*netns, 0),
                    segments: *segments,
                })
                .collect(),
            health: health(summary),
        }
    }
}

/// Workloads by retransmit ratio, then retransmitted segments, then name.
fn workloads(summary: &Summary) -> Vec<WorkloadEvidence> {
    let mut workloads: Vec<WorkloadEvidence> = summary
        .workloads
        .iter()
        .map(|w| WorkloadEvidence {
            workload: w.workload.clone(),
            segments: w.netns_tcp,
            hooked: w.hooked,
            time_lost: w.time_lost,
            vanished: w.vanished,
            removed: w.removed,
        })
        .collect();
    workloads.sort_by(|a, b| {
        b.ratio()
            .total_cmp(&a.ratio())
            .then(b.segments.retrans_segs.cmp(&a.segments.retrans_segs))
            .then_with(|| a.workload.name.cmp(&b.workload.name))
    });
    workloads
}

/// Flows by retransmitted segments, then failed attempts, workload and local address. Sorted
/// as references: moving the flows themselves (hundreds of bytes each) was most of the sort.
fn flows(summary: &Summary) -> Vec<Flow> {
    let mut order: Vec<_> = summary
        .flows
        .iter()
        .map(|f| {
            let (local, remote) = endpoints(&f.key);
            (f, local, remote)
        })
        .collect();
    order.sort_by(|(a, a_local, _), (b, b_local, _)| {
        b.counters
            .segments
            .cmp(&a.counters.segments)
            .then(b.counters.failed.cmp(&a.counters.failed))
            .then_with(|| a.workload.name.cmp(&b.workload.name))
            .then_with(|| a_local.cmp(b_local))
    });
    order
        .into_iter()
        .map(|(f, local, remote)| Flow {
            workload: f.workload.clone(),
            family: if f.key.family == AF_INET {
                Family::Ipv4
            } else {
                Family::Ipv6
            },
            local,
            remote,
            netns: f.key.netns,
            counters: f.counters,
            time_lost: f.time_lost,
            nat: f.nat,
        })
        .collect()
}

/// Drops grouped by workload, site, reason and location, most packets first.
fn drops(summary: &Summary, reasons: &DropReasons, symbols: &Symbolizer) -> Vec<Drop> {
    let mut groups: BTreeMap<(&str, u32, u32, u64), Drop> = BTreeMap::new();
    for d in &summary.drops {
        let group = groups
            .entry((&*d.workload.name, d.netns, d.reason, d.location))
            .or_insert_with(|| Drop {
                workload: d.workload.clone(),
                site: d.site.clone(),
                netns: d.netns,
                reason: DropReason::new(reasons.name(d.reason)),
                location: Location {
                    address: d.location,
                    function: symbols.resolved(d.location).map(str::to_owned),
                },
                packets: 0,
                egress: 0,
                ingress: 0,
                tcp: 0,
                udp: 0,
                icmp_too_big: 0,
                examples: Vec::new(),
            });
        group.packets += d.packets;
        match d.direction {
            Some(Direction::Egress) => group.egress += d.packets,
            Some(Direction::Ingress) => group.ingress += d.packets,
            None => {}
        }
        let Some(key) = &d.key else {
            continue;
        };
        match key.protocol {
            IPPROTO_TCP => group.tcp += d.packets,
            IPPROTO_UDP => group.udp += d.packets,
            _ => {}
        }
        if is_icmp_too_big(key) {
            group.icmp_too_big += d.packets;
        }
        // Formatting is most of a pass's cost here: only while examples are wanted.
        if group.examples.len() < EXAMPLES
            && let Some(example) = describe_packet(key)
            && !group.examples.contains(&example)
        {
            group.examples.push(example);
        }
    }
    let mut drops: Vec<Drop> = groups.into_values().collect();
    drops.sort_by(|a, b| {
        b.packets
            .cmp(&a.packets)
            .then_with(|| a.workload.name.cmp(&b.workload.name))
    });
    drops
}

/// `tcp 198.18.100.2:41000 -> 198.19.0.2:5432`, `icmp 198.19.0.1 -> 198.18.100.2 type 3 code 4`.
fn describe_packet(key: &DropKey) -> Option<String> {
    let (src, dst) = packet_endpoints(key)?;
    let packet = describe(key.protocol, src, dst);
    // After SNAT the packet shows the host's address; say whose connection it was.
    Some(match conntrack_source(key) {
        Some((origin, false)) if origin != src => format!("{packet} (SNAT of {origin})"),
        _ => packet,
    })
}

/// Every namespace whose conntrack was read, named.
fn conntrack(summary: &Summary, attributor: &mut Attributor) -> Vec<Conntrack> {
    summary
        .conntrack
        .iter()
        .map(|(netns, stats)| Conntrack {
            namespace: super::namespace(attributor, *netns),
            netns: *netns,
            stats: stats.clone(),
        })
        .collect()
}

fn health(summary: &Summary) -> Health {
    let counter = |c| summary.retransmits.health(c);
    Health {
        flow_map_entries: summary.flow_entries,
        flow_map_full: counter(HealthCounter::FlowMapFull),
        lost: counter(HealthCounter::OverflowMapFull),
        read_errors: counter(HealthCounter::ReadError),
        drop_map_full: counter(HealthCounter::DropMapFull),
        drops_lost: counter(HealthCounter::DropOverflowFull),
        leaks_lost: counter(HealthCounter::LeakMapFull),
    }
}
