//! Evidence: what one window saw, as typed domain values. The pipeline builds it from every
//! source; findings, the `diagnose` report and the daemon's series read only this (and the
//! findings), so that both commands see the same thing.

mod conntrack;
mod drop;
mod flow;
mod leak;
mod path;
#[cfg(test)]
pub(crate) mod testing;
mod time;

use std::time::Duration;

use galmanhae_common::retransmit::RetransmitCounters;

pub(crate) use self::{
    conntrack::{Conntrack, Namespace},
    drop::{Drop, DropReason, Location, Site},
    flow::{Family, Flow},
    leak::{Leak, LeakOwner},
    path::{Hop, HopRole, Path},
    time::TimeLostSeconds,
};
pub(crate) use crate::collect::netfilter::NatAudit;
use crate::{
    attribute::Workload,
    collect::{netns_snmp::TcpSegments, time_lost::TimeLost},
};

/// Everything a window saw. Lists are in the order the report shows them: workloads by
/// retransmit ratio, flows by retransmitted segments, drops and leaks by packets.
#[derive(Clone, Debug, Default)]
pub(crate) struct Evidence {
    pub(crate) duration: Duration,
    pub(crate) workloads: Vec<WorkloadEvidence>,
    /// Every flow that retransmitted or lost time (not only the top ones).
    pub(crate) flows: Vec<Flow>,
    /// Retransmits counted per workload only, because the flow map was full.
    pub(crate) overflow: Vec<(Workload, RetransmitCounters)>,
    pub(crate) drops: Vec<Drop>,
    /// Every namespace whose conntrack was read; [`Conntrack::busy`] says which matter.
    pub(crate) conntrack: Vec<Conntrack>,
    pub(crate) nat_audit: NatAudit,
    /// Which workload address leaves as which host address; `None` when the table was not
    /// read for this window.
    pub(crate) nat: Option<Vec<NatPair>>,
    pub(crate) paths: Vec<Path>,
    pub(crate) leaks: Vec<Leak>,
    /// Every namespace's cumulative segment counters at the end of the window.
    pub(crate) namespaces: Vec<NamespaceSegments>,
    pub(crate) health: Health,
}

/// A workload's totals over the window.
#[derive(Clone, Debug)]
pub(crate) struct WorkloadEvidence {
    pub(crate) workload: Workload,
    /// Growth of its namespace's `OutSegs`/`RetransSegs`.
    pub(crate) segments: TcpSegments,
    /// What the kernel hooks counted for its own sockets (flows and overflow).
    pub(crate) hooked: RetransmitCounters,
    pub(crate) time_lost: TimeLost,
    /// Its namespace disappeared before the window ended.
    pub(crate) vanished: bool,
    /// Its runtime no longer lists it: the name is its last known.
    pub(crate) removed: bool,
}

impl WorkloadEvidence {
    /// Retransmitted over sent segments of its namespace; 0 when it sent nothing.
    pub(crate) fn ratio(&self) -> f64 {
        ratio(self.segments.retrans_segs, self.segments.out_segs)
    }

    pub(crate) fn lost(&self) -> TimeLostSeconds {
        TimeLostSeconds::from(&self.time_lost)
    }
}

/// A workload's address and the host address it is source-NATed to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct NatPair {
    pub(crate) workload: String,
    pub(crate) source: std::net::IpAddr,
    pub(crate) translated: std::net::IpAddr,
}

/// One namespace's cumulative `Tcp:` counters, and whose it is.
#[derive(Clone, Debug)]
pub(crate) struct NamespaceSegments {
    pub(crate) netns: u32,
    pub(crate) workload: Workload,
    pub(crate) segments: TcpSegments,
}

/// What the kernel side could not count in full over the window.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Health {
    /// Entries in the flow map at the end (not a delta).
    pub(crate) flow_map_entries: usize,
    pub(crate) flow_map_full: u64,
    pub(crate) lost: u64,
    pub(crate) read_errors: u64,
    pub(crate) drop_map_full: u64,
    pub(crate) drops_lost: u64,
    pub(crate) leaks_lost: u64,
}

#[expect(
    clippy::cast_precision_loss,
    reason = "a ratio for display; exact counts are reported too"
)]
pub(crate) fn ratio(part: u64, whole: u64) -> f64 {
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
