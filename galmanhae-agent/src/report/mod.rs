//! The `diagnose` report: one model, two sinks (text for people, JSON for tools).

pub mod json;
pub mod text;
pub mod timeline;

use galmanhae_common::retransmit::{RetransmitCounters, RetransmitKind};
use serde::Serialize;

pub use crate::findings::Finding;
use crate::{
    conntrack::Stats,
    kernel::{prereq::Check, probes::Hook},
    model::{self, Evidence, Flow, NatAudit, TimeLostSeconds, WorkloadEvidence},
};

pub const SCHEMA: &str = "galmanhae.diagnose/v1";

#[derive(Clone, Debug, Serialize)]
pub(crate) struct DiagnoseReport {
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
pub(crate) struct WorkloadReport {
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
    pub time_lost: TimeLostSeconds,
    pub vanished: bool,
    /// The runtime no longer lists the container: `name` is its last known.
    pub removed: bool,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct FlowReport {
    pub workload: String,
    pub workload_kind: &'static str,
    pub family: &'static str,
    pub local: String,
    pub remote: String,
    pub retransmits: u64,
    pub retransmitted_segments: u64,
    pub failed_attempts: u64,
    pub kinds: Kinds,
    pub time_lost: TimeLostSeconds,
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

/// Everything the report needs besides the evidence and findings.
pub(crate) struct ReportContext {
    pub prerequisites: Vec<Check>,
    pub hooks: Vec<HookReport>,
    pub flow_capacity: u32,
    pub notes: Vec<String>,
    pub top: usize,
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
            id: w.workload.id.clone(),
            name: w.workload.name.clone(),
            runtime: w.workload.runtime.clone(),
            image: w.workload.image.clone(),
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
            workload: f.workload.name.clone(),
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
            workload: d.workload.name.clone(),
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
