//! The label sets of the folded families, and the families' names. Both are a contract:
//! `deploy/METRICS.md`.

use prometheus_client::encoding::EncodeLabelSet;

use crate::attribute::Workload;

/// Labels of the per-workload segment counters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub workload: String,
    pub workload_kind: &'static str,
    pub container_id: String,
    pub runtime: String,
}

impl WorkloadLabels {
    pub(super) fn of(workload: &Workload) -> Self {
        Self {
            workload: workload.name.to_string(),
            workload_kind: workload.kind.as_str(),
            container_id: workload.id.to_string(),
            runtime: workload.runtime.to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RemoteLabels {
    pub(crate) workload: String,
    pub(crate) remote: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct OnlyWorkload {
    pub(crate) workload: String,
}

/// A bucket (index into `STALL_BUCKETS_MS`, `+Inf` last) of a workload's stall histogram.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct StallBucket {
    pub(crate) workload: String,
    pub(crate) bucket: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RetransmitLabels {
    pub workload: String,
    pub remote: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DropLabels {
    pub(crate) workload: String,
    pub(crate) reason: String,
    pub(crate) location: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct LeakLabels {
    pub(crate) workload: String,
    pub(crate) interface: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct NamespaceLabels {
    pub(crate) namespace: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ConntrackEventLabels {
    pub(crate) namespace: String,
    pub(crate) event: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct NatLabels {
    pub(crate) workload: String,
    pub(crate) source: String,
    pub(crate) translated: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct PathLabels {
    pub(crate) workload: String,
    pub(crate) hop: &'static str,
    pub(crate) interface: String,
}

/// Family names as PromQL sees them, for `galmanhae_series_dropped_total{family}`.
pub(crate) mod family {
    pub(crate) const SENT: &str = "galmanhae_tcp_sent_segments_total";
    pub(crate) const RETRANSMITS: &str = "galmanhae_tcp_retransmits_total";
    pub(crate) const DROPS: &str = "galmanhae_skb_drops_total";
    pub(crate) const LEAKS: &str = "galmanhae_nat_leaked_packets_total";
    pub(crate) const NAT: &str = "galmanhae_nat_info";
    pub(crate) const PATH_MTU: &str = "galmanhae_path_mtu_bytes";
    pub(crate) const CONNTRACK: &str = "galmanhae_conntrack_entries";
    pub(crate) const FINDING: &str = "galmanhae_finding";
}
