//! The series of every family the agent folds, handled as one.

use std::time::{Duration, Instant};

use super::{
    ConntrackEventLabels, DropLabels, FindingLabels, LeakLabels, NamespaceLabels, NatLabels,
    OnlyWorkload, PathLabels, RemoteLabels, RetransmitLabels, StallBucket, WorkloadLabels,
    series::{Lifecycle, Series},
};

/// The series of every family the agent folds from its passes (its own health is read at
/// scrape time, see [`encode`](super::encode)).
#[derive(Debug, Default)]
pub struct Families {
    pub sent: Series<WorkloadLabels>,
    pub retransmitted: Series<WorkloadLabels>,
    pub retransmits: Series<RetransmitLabels>,
    pub(crate) retransmit_segments: Series<RemoteLabels>,
    /// Nanoseconds in RTO recovery, and waiting for SYN retries, per remote.
    pub(crate) rto_stall: Series<RemoteLabels>,
    pub(crate) syn_retry: Series<RemoteLabels>,
    /// Completed recoveries per duration bucket, and their nanoseconds, per workload.
    pub(crate) stall_buckets: Series<StallBucket>,
    pub(crate) stall_sum: Series<OnlyWorkload>,
    pub(crate) drops: Series<DropLabels>,
    pub(crate) leaks: Series<LeakLabels>,
    pub(crate) conntrack_entries: Series<NamespaceLabels>,
    pub(crate) conntrack_max: Series<NamespaceLabels>,
    pub(crate) conntrack_events: Series<ConntrackEventLabels>,
    pub(crate) nat_info: Series<NatLabels>,
    pub(crate) path_mtu: Series<PathLabels>,
    /// 1 per finding that holds over the findings window.
    pub(crate) findings: Series<FindingLabels>,
}

impl Families {
    fn all(&self) -> [&dyn Lifecycle; 16] {
        [
            &self.sent,
            &self.retransmitted,
            &self.retransmits,
            &self.retransmit_segments,
            &self.rto_stall,
            &self.syn_retry,
            &self.stall_buckets,
            &self.stall_sum,
            &self.drops,
            &self.leaks,
            &self.conntrack_entries,
            &self.conntrack_max,
            &self.conntrack_events,
            &self.nat_info,
            &self.path_mtu,
            &self.findings,
        ]
    }

    fn all_mut(&mut self) -> [&mut dyn Lifecycle; 16] {
        [
            &mut self.sent,
            &mut self.retransmitted,
            &mut self.retransmits,
            &mut self.retransmit_segments,
            &mut self.rto_stall,
            &mut self.syn_retry,
            &mut self.stall_buckets,
            &mut self.stall_sum,
            &mut self.drops,
            &mut self.leaks,
            &mut self.conntrack_entries,
            &mut self.conntrack_max,
            &mut self.conntrack_events,
            &mut self.nat_info,
            &mut self.path_mtu,
            &mut self.findings,
        ]
    }
}

/// Every family at once. A NAT binding goes at once when the table no longer has it, or after
/// the grace period if the table cannot be read.
impl Lifecycle for Families {
    fn mark_shown(&mut self) {
        for series in self.all_mut() {
            series.mark_shown();
        }
    }

    fn release(&mut self) {
        for series in self.all_mut() {
            series.release();
        }
    }

    fn expire(&mut self, now: Instant, grace: Duration) -> usize {
        self.all_mut()
            .into_iter()
            .map(|s| s.expire(now, grace))
            .sum()
    }

    fn len(&self) -> usize {
        self.all().iter().map(|s| s.len()).sum()
    }
}
