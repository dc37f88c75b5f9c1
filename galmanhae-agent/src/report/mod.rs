//! The `diagnose` report: one model, two sinks (text for people, JSON for tools).

pub mod json;
pub mod text;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use galmanhae_common::{
    health::HealthCounter,
    retransmit::{AF_INET, FlowKey, RetransmitCounters, RetransmitKind},
};
use serde::Serialize;

use crate::{
    kernel::{prereq::Check, probes::Hook},
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
    pub findings: Vec<Finding>,
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
    pub vanished: bool,
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
    pub netns: u32,
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

/// Filled by later capabilities (NAT, drops, MTU); the list is part of the v1 contract.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub severity: &'static str,
    pub workload: String,
    pub flows: Vec<String>,
    pub summary: String,
    pub evidence: Vec<String>,
    pub advice: String,
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
}

/// Everything the report needs besides the window.
pub struct ReportContext {
    pub prerequisites: Vec<Check>,
    pub hooks: Vec<HookReport>,
    pub flow_capacity: u32,
    pub notes: Vec<String>,
    pub top: usize,
}

pub fn build(summary: &Summary, context: ReportContext) -> DiagnoseReport {
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
            vanished: w.vanished,
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
    flows.truncate(context.top);

    DiagnoseReport {
        schema: SCHEMA,
        host: HostInfo::current(),
        duration_s: (summary.duration.as_secs_f64() * 10.0).round() / 10.0,
        prerequisites: context.prerequisites,
        hooks: context.hooks,
        workloads,
        flows,
        findings: Vec::new(),
        health: HealthReport {
            flow_map_entries: summary.flow_entries,
            flow_map_capacity: context.flow_capacity,
            flow_map_full: summary.retransmits.health(HealthCounter::FlowMapFull),
            lost: summary.retransmits.health(HealthCounter::OverflowMapFull),
            read_errors: summary.retransmits.health(HealthCounter::ReadError),
        },
        notes: context.notes,
    }
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

/// Local and remote socket addresses; IPv4 flows come v4-mapped from the kernel.
pub fn endpoints(key: &FlowKey) -> (SocketAddr, SocketAddr) {
    let ip = |bytes: [u8; 16]| {
        let v6 = Ipv6Addr::from(bytes);
        match (key.family, v6.to_ipv4_mapped()) {
            (AF_INET, Some(v4)) => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        }
    };
    (
        SocketAddr::new(ip(key.local_addr), key.local_port),
        SocketAddr::new(ip(key.remote_addr), key.remote_port),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(family: u16, local: [u8; 16], remote: [u8; 16]) -> FlowKey {
        FlowKey {
            netns: 1,
            family,
            local_port: 41000,
            remote_port: 5432,
            padding: [0; 6],
            cgroup_id: 0,
            local_addr: local,
            remote_addr: remote,
        }
    }

    #[test]
    fn formats_v4_mapped_and_v6_endpoints() {
        let v4 = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_ipv6_mapped().octets();
        let (l, r) = endpoints(&key(AF_INET, v4([198, 18, 100, 2]), v4([198, 19, 0, 2])));
        assert_eq!(
            (l.to_string(), r.to_string()),
            ("198.18.100.2:41000".into(), "198.19.0.2:5432".into())
        );
        let a: Ipv6Addr = "2001:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:2::2".parse().unwrap();
        let (l, r) = endpoints(&key(10, a.octets(), b.octets()));
        assert_eq!(
            (l.to_string(), r.to_string()),
            ("[2001:2::1]:41000".into(), "[2001:2::2]:5432".into())
        );
    }

    #[test]
    fn ratio_of_nothing_is_zero() {
        assert!(ratio(0, 0).abs() < f64::EPSILON);
        assert!((ratio(5, 100) - 0.05).abs() < 1e-12);
    }
}
