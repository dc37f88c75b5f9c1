//! The `diagnose` report: one model, two sinks (text for people, JSON for tools).

pub mod json;
pub mod text;
pub mod timeline;

use std::collections::BTreeMap;

use galmanhae_common::{
    drop::{DropKey, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    health::HealthCounter,
    retransmit::{AF_INET, RetransmitCounters, RetransmitKind},
};
use serde::Serialize;

pub use crate::addr::endpoints;
use crate::{
    addr::{conntrack_source, describe, packet_endpoints},
    attribute::nat::{Binding, Direction},
    collect::{drops::DropReasons, time_lost::TimeLost},
    conntrack::{MasqueradeRule, Stats, Sysctls},
    kernel::{kallsyms::Symbolizer, prereq::Check, probes::Hook},
    pipeline::Summary,
};

pub const SCHEMA: &str = "galmanhae.diagnose/v1";

#[derive(Clone, Debug, Serialize)]
pub struct DiagnoseReport {
    pub schema: &'static str,
    pub host: HostInfo,
    pub duration_s: f64,
    pub prerequisites: Vec<Check>,
    pub hooks: Vec<HookReport>,
    pub workloads: Vec<WorkloadReport>,
    pub flows: Vec<FlowReport>,
    /// Dropped packets per workload, site, reason and location.
    pub drops: Vec<DropReport>,
    pub conntrack: Vec<ConntrackReport>,
    pub nat_audit: NatAudit,
    pub paths: Vec<PathReport>,
    pub leaks: Vec<LeakReport>,
    pub findings: Vec<Finding>,
    pub timeline: timeline::TimelineReport,
    pub health: HealthReport,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HostInfo {
    pub hostname: String,
    pub kernel: String,
    pub cpus: usize,
}

impl HostInfo {
    pub fn current() -> Self {
        let uname = hostname_and_release();
        Self {
            hostname: uname.0,
            kernel: uname.1,
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        }
    }
}

fn hostname_and_release() -> (String, String) {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    (
        read("/proc/sys/kernel/hostname"),
        read("/proc/sys/kernel/osrelease"),
    )
}

#[derive(Clone, Debug, Serialize)]
pub struct HookReport {
    #[serde(flatten)]
    pub hook: Hook,
    /// Kernel-side runs while attached (with `kernel.bpf_stats_enabled` or `BPF_ENABLE_STATS`).
    pub runs: Option<u64>,
    /// Average kernel-side cost per run.
    pub ns_per_run: Option<f64>,
    /// Runs the kernel skipped (another tracing program was running on the CPU): lost events.
    pub missed: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkloadReport {
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    pub runtime: String,
    pub image: Option<String>,
    pub netns: u32,
    /// The host namespace, shared with other workloads: segment counters are the host's.
    pub netns_shared: bool,
    /// `Tcp: OutSegs` delta of the workload's namespace.
    pub sent_segments: u64,
    /// `Tcp: RetransSegs` delta of the workload's namespace.
    pub retransmitted_segments: u64,
    pub retransmit_ratio: f64,
    /// What the kernel hooks counted for the workload's own sockets.
    pub hooked_retransmits: u64,
    pub hooked_retransmitted_segments: u64,
    pub failed_attempts: u64,
    pub time_lost: TimeLostReport,
    pub vanished: bool,
    /// The runtime no longer lists the container: `name` is its last known.
    pub removed: bool,
}

/// What retransmissions cost in time: RTO recoveries and timed-out handshakes (a running one
/// counted up to the end of the window).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct TimeLostReport {
    pub rto_stall_seconds: f64,
    pub longest_rto_stall_seconds: f64,
    pub rto_recoveries: u64,
    pub max_consecutive_timeouts: u32,
    pub syn_retry_seconds: f64,
    pub syn_timeouts: u64,
    /// Handshakes whose first SYN time was assumed one initial RTO before the first timeout.
    pub syn_start_estimated: u64,
}

impl From<&TimeLost> for TimeLostReport {
    #[expect(clippy::cast_precision_loss, reason = "nanoseconds as seconds")]
    fn from(t: &TimeLost) -> Self {
        let seconds = |ns: u64| (ns as f64 / 1e9 * 1000.0).round() / 1000.0;
        Self {
            rto_stall_seconds: seconds(t.rto_stall_ns),
            longest_rto_stall_seconds: seconds(t.longest_rto_stall_ns),
            rto_recoveries: t.rto_recoveries,
            max_consecutive_timeouts: t.max_consecutive_timeouts,
            syn_retry_seconds: seconds(t.syn_retry_ns),
            syn_timeouts: t.syn_timeouts,
            syn_start_estimated: t.syn_estimated,
        }
    }
}

impl TimeLostReport {
    /// Seconds lost in all, stalls and handshakes.
    pub fn seconds(&self) -> f64 {
        self.rto_stall_seconds + self.syn_retry_seconds
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FlowReport {
    pub workload: String,
    pub workload_kind: &'static str,
    pub family: &'static str,
    pub local: String,
    pub remote: String,
    pub retransmits: u64,
    pub retransmitted_segments: u64,
    pub failed_attempts: u64,
    pub kinds: Kinds,
    pub time_lost: TimeLostReport,
    /// The flow as it leaves the host, when it is translated; `null` otherwise.
    pub nat: Option<NatReport>,
    /// Average payload of a retransmitted segment, bytes.
    pub retransmitted_segment_bytes: Option<u64>,
    pub netns: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct NatReport {
    pub local: String,
    pub remote: String,
}

impl From<&Binding> for NatReport {
    fn from(b: &Binding) -> Self {
        Self {
            local: b.nat_local.to_string(),
            remote: b.nat_remote.to_string(),
        }
    }
}

/// Packets of one workload dropped at one site for one reason.
#[derive(Clone, Debug, Serialize)]
pub struct DropReport {
    pub workload: String,
    pub workload_kind: &'static str,
    /// Where: `host`, the workload's own name, or another namespace's.
    pub dropped_in: String,
    pub netns: u32,
    pub reason: String,
    pub location: String,
    pub packets: u64,
    /// Packets by direction (from the workload / to it), when known.
    pub egress: u64,
    pub ingress: u64,
    /// Of which TCP segments and UDP datagrams: the workload's traffic (the rest is
    /// neighbour discovery, multicast listener reports, ICMP).
    pub tcp: u64,
    pub udp: u64,
    /// Of which ICMP "fragmentation needed" / `ICMPv6` "packet too big": path MTU discovery
    /// messages that never arrived.
    pub icmp_too_big: u64,
    /// Up to five example flows, `src -> dst` (with the protocol; ICMP shows type/code).
    pub examples: Vec<String>,
}

/// Conntrack of one namespace over the window: table fill at the end, event counter growth.
#[derive(Clone, Debug, Serialize)]
pub struct ConntrackReport {
    pub namespace: String,
    pub netns: u32,
    #[serde(flatten)]
    pub stats: Stats,
}

/// The host's NAT set-up, checked for known traps.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NatAudit {
    /// MASQUERADE rules as `iptables-save` prints them, and whether they randomise ports fully.
    pub masquerade: Vec<MasqueradeRule>,
    /// `tcp_be_liberal`, `tcp_loose`, the established timeout, the table size.
    #[serde(flatten)]
    pub sysctls: Sysctls,
    /// Why part of the audit could not be done.
    pub unavailable: Vec<String>,
    /// The host has no iptables tools: nothing to audit, by design.
    #[serde(skip)]
    pub no_tools: bool,
}

impl NatAudit {
    /// The source prefixes MASQUERADE translates: a packet from one must not leave as is.
    pub fn translated_subnets(&self) -> Vec<ipnet::IpNet> {
        let mut nets: Vec<ipnet::IpNet> = self
            .masquerade
            .iter()
            .filter_map(MasqueradeRule::source_net)
            .collect();
        nets.sort_unstable();
        nets.dedup();
        nets
    }

    /// Whether a MASQUERADE rule translates packets from `addr` (a bridge address).
    pub fn masqueraded(&self, addr: std::net::IpAddr) -> bool {
        self.masquerade
            .iter()
            .filter_map(MasqueradeRule::source_net)
            .any(|net| net.contains(&addr))
    }
}

/// The MTUs on a workload's path to a remote.
#[derive(Clone, Debug, Serialize)]
pub struct PathReport {
    pub workload: String,
    pub remote: String,
    /// Each hop: its role (`workload`, `host_veth`, `bridge`, `egress`), interface and MTU.
    pub hops: Vec<Hop>,
    pub smallest_mtu: Option<u32>,
    /// (inner, egress) when the workload side allows larger packets than the egress.
    pub mismatch: Option<(u32, u32)>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Hop {
    pub role: &'static str,
    pub interface: String,
    pub mtu: u32,
}

/// Packets of a workload that left the host untranslated, with its bridge address.
#[derive(Clone, Debug, Serialize)]
pub struct LeakReport {
    pub workload: String,
    pub interface: String,
    pub packets: u64,
    pub examples: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Kinds {
    pub rto: u64,
    pub fast: u64,
    pub tlp: u64,
    pub syn: u64,
    pub synack: u64,
    pub other: u64,
    pub failed: u64,
}

impl Kinds {
    fn from_counters(c: &RetransmitCounters) -> Self {
        let k = |kind: RetransmitKind| c.kinds[kind as usize];
        Self {
            rto: k(RetransmitKind::Rto),
            fast: k(RetransmitKind::Fast),
            tlp: k(RetransmitKind::Tlp),
            syn: k(RetransmitKind::Syn),
            synack: k(RetransmitKind::SynAck),
            other: k(RetransmitKind::Other),
            failed: c.failed,
        }
    }
}

pub use crate::findings::Finding;

/// What the kernel side could not do. Nothing is dropped without being counted here.
#[derive(Clone, Debug, Serialize)]
pub struct HealthReport {
    pub flow_map_entries: usize,
    pub flow_map_capacity: u32,
    /// Retransmits counted per workload only, because the flow map was full.
    pub flow_map_full: u64,
    /// Retransmits lost because both maps were full.
    pub lost: u64,
    pub read_errors: u64,
    /// Drops counted per site only, because the drop map was full.
    pub drop_map_full: u64,
    /// Drops lost because both drop maps were full.
    pub drops_lost: u64,
    /// Untranslated packets not counted because the leak map was full.
    pub leaks_lost: u64,
}

/// Everything the report needs besides the window.
pub struct ReportContext<'a> {
    pub prerequisites: Vec<Check>,
    pub hooks: Vec<HookReport>,
    pub flow_capacity: u32,
    pub notes: Vec<String>,
    pub top: usize,
    pub drop_reasons: &'a DropReasons,
    pub symbols: &'a Symbolizer,
    pub conntrack: Vec<ConntrackReport>,
    pub nat_audit: NatAudit,
    pub paths: Vec<PathReport>,
    pub leaks: Vec<LeakReport>,
}

pub fn build(summary: &Summary, context: ReportContext<'_>) -> DiagnoseReport {
    let mut workloads: Vec<WorkloadReport> = summary
        .workloads
        .iter()
        .map(|w| WorkloadReport {
            kind: w.workload.kind.as_str(),
            id: w.workload.id.clone(),
            name: w.workload.name.clone(),
            runtime: w.workload.runtime.clone(),
            image: w.workload.image.clone(),
            netns: w.workload.netns,
            netns_shared: w.workload.netns_shared,
            sent_segments: w.netns_tcp.out_segs,
            retransmitted_segments: w.netns_tcp.retrans_segs,
            retransmit_ratio: ratio(w.netns_tcp.retrans_segs, w.netns_tcp.out_segs),
            hooked_retransmits: w.hooked.retransmits,
            hooked_retransmitted_segments: w.hooked.segments,
            failed_attempts: w.hooked.failed,
            time_lost: TimeLostReport::from(&w.time_lost),
            vanished: w.vanished,
            removed: w.removed,
        })
        .collect();
    workloads.sort_by(|a, b| {
        b.retransmit_ratio
            .total_cmp(&a.retransmit_ratio)
            .then(b.retransmitted_segments.cmp(&a.retransmitted_segments))
            .then(a.name.cmp(&b.name))
    });

    let mut flows: Vec<FlowReport> = summary
        .flows
        .iter()
        .map(|f| {
            let (local, remote) = endpoints(&f.key);
            FlowReport {
                workload: f.workload.name.clone(),
                workload_kind: f.workload.kind.as_str(),
                family: if f.key.family == AF_INET {
                    "ipv4"
                } else {
                    "ipv6"
                },
                local: local.to_string(),
                remote: remote.to_string(),
                retransmits: f.counters.retransmits,
                retransmitted_segments: f.counters.segments,
                failed_attempts: f.counters.failed,
                kinds: Kinds::from_counters(&f.counters),
                time_lost: TimeLostReport::from(&f.time_lost),
                nat: f.nat.as_ref().map(NatReport::from),
                retransmitted_segment_bytes: (f.counters.segments > 0 && f.counters.bytes > 0)
                    .then(|| f.counters.bytes / f.counters.segments),
                netns: f.key.netns,
            }
        })
        .collect();
    flows.sort_by(|a, b| {
        b.retransmitted_segments
            .cmp(&a.retransmitted_segments)
            .then(b.failed_attempts.cmp(&a.failed_attempts))
            .then(a.workload.cmp(&b.workload))
            .then(a.local.cmp(&b.local))
    });

    let drops = drop_reports(summary, &context);
    let mut report = DiagnoseReport {
        schema: SCHEMA,
        host: HostInfo::current(),
        duration_s: (summary.duration.as_secs_f64() * 10.0).round() / 10.0,
        prerequisites: context.prerequisites,
        hooks: context.hooks,
        workloads,
        flows,
        drops,
        conntrack: context.conntrack,
        nat_audit: context.nat_audit,
        paths: context.paths,
        leaks: context.leaks,
        findings: Vec::new(),
        timeline: timeline::TimelineReport::default(),
        health: HealthReport {
            flow_map_entries: summary.flow_entries,
            flow_map_capacity: context.flow_capacity,
            flow_map_full: summary.retransmits.health(HealthCounter::FlowMapFull),
            lost: summary.retransmits.health(HealthCounter::OverflowMapFull),
            read_errors: summary.retransmits.health(HealthCounter::ReadError),
            drop_map_full: summary.retransmits.health(HealthCounter::DropMapFull),
            drops_lost: summary.retransmits.health(HealthCounter::DropOverflowFull),
            leaks_lost: summary.retransmits.health(HealthCounter::LeakMapFull),
        },
        notes: context.notes,
    };
    // Findings see every flow (a SYN-only flow has few segments and would fall off the top);
    // the report lists the top ones.
    report.findings = crate::findings::evaluate(&report);
    report.flows.truncate(context.top);
    report
}

/// Drops grouped by workload, site, reason and location, most packets first.
fn drop_reports(summary: &Summary, context: &ReportContext<'_>) -> Vec<DropReport> {
    let mut groups: BTreeMap<(String, u32, u32, u64), DropReport> = BTreeMap::new();
    for d in &summary.drops {
        let report = groups
            .entry((d.workload.name.clone(), d.netns, d.reason, d.location))
            .or_insert_with(|| DropReport {
                workload: d.workload.name.clone(),
                workload_kind: d.workload.kind.as_str(),
                dropped_in: d.dropped_in.clone(),
                netns: d.netns,
                reason: context.drop_reasons.name(d.reason),
                location: context.symbols.name(d.location),
                packets: 0,
                egress: 0,
                ingress: 0,
                tcp: 0,
                udp: 0,
                icmp_too_big: 0,
                examples: Vec::new(),
            });
        report.packets += d.packets;
        match d.direction {
            Some(Direction::Egress) => report.egress += d.packets,
            Some(Direction::Ingress) => report.ingress += d.packets,
            None => {}
        }
        if let Some(key) = &d.key {
            match key.protocol {
                IPPROTO_TCP => report.tcp += d.packets,
                IPPROTO_UDP => report.udp += d.packets,
                _ => {}
            }
            if is_icmp_too_big(key) {
                report.icmp_too_big += d.packets;
            }
        }
        if let Some(example) = d.key.as_ref().and_then(describe_packet) {
            if report.examples.len() < 5 && !report.examples.contains(&example) {
                report.examples.push(example);
            }
        }
    }
    let mut drops: Vec<DropReport> = groups.into_values().collect();
    drops.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.workload.cmp(&b.workload)));
    drops.truncate(context.top.max(20));
    drops
}

/// ICMP type 3 code 4 (RFC 1191) or `ICMPv6` type 2 (RFC 8201); the kernel map keeps the
/// type and code in the port fields.
fn is_icmp_too_big(key: &DropKey) -> bool {
    match key.protocol {
        IPPROTO_ICMP => key.src_port == 3 && key.dst_port == 4,
        IPPROTO_ICMPV6 => key.src_port == 2,
        _ => false,
    }
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

#[expect(
    clippy::cast_precision_loss,
    reason = "a ratio for display; exact counts are reported too"
)]
fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_of_nothing_is_zero() {
        assert!(ratio(0, 0).abs() < f64::EPSILON);
        assert!((ratio(5, 100) - 0.05).abs() < 1e-12);
    }
}
