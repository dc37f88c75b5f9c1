//! The `diagnose` report: one model, two sinks (text for people, JSON for tools).

pub(crate) mod json;
pub(crate) mod text;
pub(crate) mod timeline;

use galmanhae_common::retransmit::{RetransmitCounters, RetransmitKind};
use serde::Serialize;

pub(crate) use crate::findings::Finding;
use crate::{
    conntrack::Stats,
    kernel::{prereq::Check, probes::Hook},
    model::{self, Evidence, Flow, NatAudit, TimeLostSeconds, WorkloadEvidence},
};

pub(crate) const SCHEMA: &str = "galmanhae.diagnose/v1";

#[derive(Clone, Debug, Serialize)]
pub(crate) struct DiagnoseReport {
    pub(crate) schema: &'static str,
    pub(crate) host: HostInfo,
    pub(crate) duration_s: f64,
    pub(crate) prerequisites: Vec<Check>,
    pub(crate) hooks: Vec<HookReport>,
    pub(crate) workloads: Vec<WorkloadReport>,
    pub(crate) flows: Vec<FlowReport>,
    /// Dropped packets per workload, site, reason and location.
    pub(crate) drops: Vec<DropReport>,
    pub(crate) conntrack: Vec<ConntrackReport>,
    pub(crate) nat_audit: NatAudit,
    pub(crate) paths: Vec<PathReport>,
    pub(crate) leaks: Vec<LeakReport>,
    pub(crate) findings: Vec<Finding>,
    pub(crate) timeline: timeline::TimelineReport,
    pub(crate) health: HealthReport,
    pub(crate) notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct HostInfo {
    pub(crate) hostname: String,
    pub(crate) kernel: String,
    pub(crate) cpus: usize,
}

impl HostInfo {
    pub(crate) fn current() -> Self {
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
pub(crate) struct HookReport {
    #[serde(flatten)]
    pub(crate) hook: Hook,
    /// Kernel-side runs while attached (with `kernel.bpf_stats_enabled` or `BPF_ENABLE_STATS`).
    pub(crate) runs: Option<u64>,
    /// Average kernel-side cost per run.
    pub(crate) ns_per_run: Option<f64>,
    /// Runs the kernel skipped (another tracing program was running on the CPU): lost events.
    pub(crate) missed: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct WorkloadReport {
    pub(crate) kind: &'static str,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) runtime: String,
    pub(crate) image: Option<String>,
    pub(crate) netns: u32,
    /// The host namespace, shared with other workloads: segment counters are the host's.
    pub(crate) netns_shared: bool,
    /// `Tcp: OutSegs` delta of the workload's namespace.
    pub(crate) sent_segments: u64,
    /// `Tcp: RetransSegs` delta of the workload's namespace.
    pub(crate) retransmitted_segments: u64,
    pub(crate) retransmit_ratio: f64,
    /// What the kernel hooks counted for the workload's own sockets.
    pub(crate) hooked_retransmits: u64,
    pub(crate) hooked_retransmitted_segments: u64,
    pub(crate) failed_attempts: u64,
    pub(crate) time_lost: TimeLostSeconds,
    pub(crate) vanished: bool,
    /// The runtime no longer lists the container: `name` is its last known.
    pub(crate) removed: bool,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct FlowReport {
    pub(crate) workload: String,
    pub(crate) workload_kind: &'static str,
    pub(crate) family: &'static str,
    pub(crate) local: String,
    pub(crate) remote: String,
    pub(crate) retransmits: u64,
    pub(crate) retransmitted_segments: u64,
    pub(crate) failed_attempts: u64,
    pub(crate) kinds: Kinds,
    pub(crate) time_lost: TimeLostSeconds,
    /// The flow as it leaves the host, when it is translated; `null` otherwise.
    pub(crate) nat: Option<NatReport>,
    /// Average payload of a retransmitted segment, bytes.
    pub(crate) retransmitted_segment_bytes: Option<u64>,
    pub(crate) netns: u32,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct NatReport {
    pub(crate) local: String,
    pub(crate) remote: String,
}

impl From<&crate::attribute::nat::Binding> for NatReport {
    fn from(b: &crate::attribute::nat::Binding) -> Self {
        Self {
            local: b.nat_local.to_string(),
            remote: b.nat_remote.to_string(),
        }
    }
}

/// Packets of one workload dropped at one site for one reason.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct DropReport {
    pub(crate) workload: String,
    pub(crate) workload_kind: &'static str,
    /// Where: `host`, the workload's own name, or another namespace's.
    pub(crate) dropped_in: String,
    pub(crate) netns: u32,
    pub(crate) reason: String,
    pub(crate) location: String,
    pub(crate) packets: u64,
    /// Packets by direction (from the workload / to it), when known.
    pub(crate) egress: u64,
    pub(crate) ingress: u64,
    /// Of which TCP segments and UDP datagrams: the workload's traffic (the rest is
    /// neighbour discovery, multicast listener reports, ICMP).
    pub(crate) tcp: u64,
    pub(crate) udp: u64,
    /// Of which ICMP "fragmentation needed" / `ICMPv6` "packet too big": path MTU discovery
    /// messages that never arrived.
    pub(crate) icmp_too_big: u64,
    /// Up to five example flows, `src -> dst` (with the protocol; ICMP shows type/code).
    pub(crate) examples: Vec<String>,
}

/// Conntrack of one namespace over the window: table fill at the end, event counter growth.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ConntrackReport {
    pub(crate) namespace: String,
    pub(crate) netns: u32,
    #[serde(flatten)]
    pub(crate) stats: Stats,
}

/// The MTUs on a workload's path to a remote.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PathReport {
    pub(crate) workload: String,
    pub(crate) remote: String,
    /// Each hop: its role (`workload`, `host_veth`, `bridge`, `egress`), interface and MTU.
    pub(crate) hops: Vec<Hop>,
    pub(crate) smallest_mtu: Option<u32>,
    /// (inner, egress) when the workload side allows larger packets than the egress.
    pub(crate) mismatch: Option<(u32, u32)>,
    pub(crate) notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Hop {
    pub(crate) role: &'static str,
    pub(crate) interface: String,
    pub(crate) mtu: u32,
}

/// Packets of a workload that left the host untranslated, with its bridge address.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LeakReport {
    pub(crate) workload: String,
    pub(crate) interface: String,
    pub(crate) packets: u64,
    pub(crate) examples: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Kinds {
    pub(crate) rto: u64,
    pub(crate) fast: u64,
    pub(crate) tlp: u64,
    pub(crate) syn: u64,
    pub(crate) synack: u64,
    pub(crate) other: u64,
    pub(crate) failed: u64,
}

impl Kinds {
    pub(crate) fn from_counters(c: &RetransmitCounters) -> Self {
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

/// What the kernel side could not do. Nothing is dropped without being counted here.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct HealthReport {
    pub(crate) flow_map_entries: usize,
    pub(crate) flow_map_capacity: u32,
    /// Retransmits counted per workload only, because the flow map was full.
    pub(crate) flow_map_full: u64,
    /// Retransmits lost because both maps were full.
    pub(crate) lost: u64,
    pub(crate) read_errors: u64,
    /// Drops counted per site only, because the drop map was full.
    pub(crate) drop_map_full: u64,
    /// Drops lost because both drop maps were full.
    pub(crate) drops_lost: u64,
    /// Untranslated packets not counted because the leak map was full.
    pub(crate) leaks_lost: u64,
}

/// Everything the report needs besides the evidence and findings.
pub(crate) struct ReportContext {
    pub(crate) prerequisites: Vec<Check>,
    pub(crate) hooks: Vec<HookReport>,
    pub(crate) flow_capacity: u32,
    pub(crate) notes: Vec<String>,
    pub(crate) top: usize,
}

/// The report of a window: its evidence as the JSON contract spells it, and the findings.
pub(crate) fn build(
    evidence: &Evidence,
    findings: Vec<Finding>,
    context: ReportContext,
) -> DiagnoseReport {
    let mut flows: Vec<FlowReport> = evidence.flows.iter().map(FlowReport::from).collect();
    flows.truncate(context.top);
    let mut drops: Vec<DropReport> = evidence.drops.iter().map(DropReport::from).collect();
    drops.truncate(context.top.max(20));
    let h = &evidence.health;
    DiagnoseReport {
        schema: SCHEMA,
        host: HostInfo::current(),
        duration_s: (evidence.duration.as_secs_f64() * 10.0).round() / 10.0,
        prerequisites: context.prerequisites,
        hooks: context.hooks,
        workloads: evidence
            .workloads
            .iter()
            .map(WorkloadReport::from)
            .collect(),
        flows,
        drops,
        conntrack: evidence
            .conntrack
            .iter()
            .filter(|c| c.busy())
            .map(ConntrackReport::from)
            .collect(),
        nat_audit: evidence.nat_audit.clone(),
        paths: evidence.paths.iter().map(PathReport::from).collect(),
        leaks: evidence.leaks.iter().map(LeakReport::from).collect(),
        findings,
        timeline: timeline::TimelineReport::default(),
        health: HealthReport {
            flow_map_entries: h.flow_map_entries,
            flow_map_capacity: context.flow_capacity,
            flow_map_full: h.flow_map_full,
            lost: h.lost,
            read_errors: h.read_errors,
            drop_map_full: h.drop_map_full,
            drops_lost: h.drops_lost,
            leaks_lost: h.leaks_lost,
        },
        notes: context.notes,
    }
}

impl From<&WorkloadEvidence> for WorkloadReport {
    fn from(w: &WorkloadEvidence) -> Self {
        Self {
            kind: w.workload.kind.as_str(),
            id: w.workload.id.to_string(),
            name: w.workload.name.to_string(),
            runtime: w.workload.runtime.to_string(),
            image: w.workload.image.as_deref().map(str::to_owned),
            netns: w.workload.netns,
            netns_shared: w.workload.netns_shared,
            sent_segments: w.segments.out_segs,
            retransmitted_segments: w.segments.retrans_segs,
            retransmit_ratio: w.ratio(),
            hooked_retransmits: w.hooked.retransmits,
            hooked_retransmitted_segments: w.hooked.segments,
            failed_attempts: w.hooked.failed,
            time_lost: w.lost(),
            vanished: w.vanished,
            removed: w.removed,
        }
    }
}

impl From<&Flow> for FlowReport {
    fn from(f: &Flow) -> Self {
        Self {
            workload: f.workload.name.to_string(),
            workload_kind: f.workload.kind.as_str(),
            family: f.family.as_str(),
            local: f.local.to_string(),
            remote: f.remote.to_string(),
            retransmits: f.counters.retransmits,
            retransmitted_segments: f.counters.segments,
            failed_attempts: f.counters.failed,
            kinds: Kinds::from_counters(&f.counters),
            time_lost: f.lost(),
            nat: f.nat.as_ref().map(NatReport::from),
            retransmitted_segment_bytes: f.segment_bytes(),
            netns: f.netns,
        }
    }
}

impl From<&model::Drop> for DropReport {
    fn from(d: &model::Drop) -> Self {
        Self {
            workload: d.workload.name.to_string(),
            workload_kind: d.workload.kind.as_str(),
            dropped_in: d.site.name().to_owned(),
            netns: d.netns,
            reason: d.reason.name().to_owned(),
            location: d.location.name(),
            packets: d.packets,
            egress: d.egress,
            ingress: d.ingress,
            tcp: d.tcp,
            udp: d.udp,
            icmp_too_big: d.icmp_too_big,
            examples: d.examples.clone(),
        }
    }
}

impl From<&model::Conntrack> for ConntrackReport {
    fn from(c: &model::Conntrack) -> Self {
        Self {
            namespace: c.namespace.name().to_owned(),
            netns: c.netns,
            stats: c.stats.clone(),
        }
    }
}

impl From<&model::Path> for PathReport {
    fn from(p: &model::Path) -> Self {
        Self {
            workload: p.workload.clone(),
            remote: p.remote.to_string(),
            hops: p
                .hops
                .iter()
                .map(|h| Hop {
                    role: h.role.as_str(),
                    interface: h.interface.clone(),
                    mtu: h.mtu,
                })
                .collect(),
            smallest_mtu: p.smallest_mtu,
            mismatch: p.mismatch,
            notes: p.notes.clone(),
        }
    }
}

impl From<&model::Leak> for LeakReport {
    fn from(l: &model::Leak) -> Self {
        Self {
            workload: l.owner.to_string(),
            interface: l.interface.clone(),
            packets: l.packets,
            examples: l.examples.clone(),
        }
    }
}
