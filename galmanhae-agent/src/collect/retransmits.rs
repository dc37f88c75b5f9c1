//! Reads the retransmit maps the kernel programs fill (`galmanhae-ebpf/src/retransmit.rs`).

use hashbrown::HashMap;

use aya::Ebpf;
use galmanhae_common::{
    health::HealthCounter,
    retransmit::{FlowKey, FlowState, OwnerKey, RetransmitCounters, SocketState},
};

pub(crate) use super::maps::ReadError;
use super::maps::{delta, read_hash, read_health, read_per_cpu_hash};

/// Cumulative counters since the programs were loaded.
#[derive(Clone, Debug, Default)]
pub(crate) struct RetransmitSample {
    /// Per socket cookie (the BTF program): the socket's flow and counters.
    pub(crate) sockets: HashMap<u64, (FlowKey, RetransmitCounters)>,
    /// Per flow (the classic tracepoint program, SYN-ACKs).
    pub(crate) flows: HashMap<FlowKey, RetransmitCounters>,
    /// Counted per owner because the flow map was full.
    pub(crate) overflow: HashMap<OwnerKey, RetransmitCounters>,
    /// Indexed by [`HealthCounter`].
    pub(crate) health: [u64; HealthCounter::COUNT as usize],
}

impl RetransmitSample {
    /// What happened between `earlier` and `self`.
    #[must_use]
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        let since = |now: &RetransmitCounters, then: &RetransmitCounters| now.since(then);
        let mut health = self.health;
        for (now, then) in health.iter_mut().zip(earlier.health) {
            *now = now.saturating_sub(then);
        }
        Self {
            sockets: delta(
                &self.sockets,
                &earlier.sockets,
                |(flow, now), (_, then)| (*flow, now.since(then)),
                |(_, counters)| counters.is_zero(),
            ),
            flows: delta(
                &self.flows,
                &earlier.flows,
                since,
                RetransmitCounters::is_zero,
            ),
            overflow: delta(
                &self.overflow,
                &earlier.overflow,
                since,
                RetransmitCounters::is_zero,
            ),
            health,
        }
    }

    /// Per flow, sockets folded in (two sockets can have had the same tuple).
    pub(crate) fn by_flow(&self) -> HashMap<FlowKey, RetransmitCounters> {
        let mut flows = self.flows.clone();
        for (flow, counters) in self.sockets.values() {
            flows.entry(*flow).or_default().add(counters);
        }
        flows
    }

    /// Entries in the kernel's socket and flow maps.
    pub(crate) fn entries(&self) -> usize {
        self.sockets.len() + self.flows.len()
    }

    /// Sum of every socket, flow and overflow bucket.
    pub(crate) fn total(&self) -> RetransmitCounters {
        let mut total = RetransmitCounters::default();
        let sockets = self.sockets.values().map(|(_, counters)| counters);
        for counters in sockets
            .chain(self.flows.values())
            .chain(self.overflow.values())
        {
            total.add(counters);
        }
        total
    }

    pub(crate) fn health(&self, counter: HealthCounter) -> u64 {
        self.health[counter as usize]
    }
}

/// Reads all retransmit maps (and the shared health counters) once.
pub(crate) fn read(ebpf: &Ebpf) -> Result<RetransmitSample, ReadError> {
    Ok(RetransmitSample {
        sockets: read_hash(ebpf, "RETRANSMIT_SOCKETS", |s: &SocketState| {
            (s.flow, s.state.counters)
        })?,
        flows: read_hash(ebpf, "RETRANSMIT_FLOWS", |state: &FlowState| state.counters)?,
        overflow: read_per_cpu_hash(ebpf, "RETRANSMIT_OVERFLOW", RetransmitCounters::add)?,
        health: read_health(ebpf)?,
    })
}
