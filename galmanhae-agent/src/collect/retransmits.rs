//! Reads the retransmit maps the kernel programs fill (`galmanhae-ebpf/src/retransmit.rs`).

use std::collections::HashMap;

use aya::Ebpf;
use galmanhae_common::{
    health::HealthCounter,
    retransmit::{FlowKey, FlowState, OwnerKey, RetransmitCounters},
};

pub use super::maps::ReadError;
use super::maps::{delta, read_hash, read_health, read_per_cpu_hash};

/// Cumulative counters since the programs were loaded.
#[derive(Clone, Debug, Default)]
pub struct RetransmitSample {
    pub flows: HashMap<FlowKey, RetransmitCounters>,
    /// Counted per owner because the flow map was full.
    pub overflow: HashMap<OwnerKey, RetransmitCounters>,
    /// Indexed by [`HealthCounter`].
    pub health: [u64; HealthCounter::COUNT as usize],
}

impl RetransmitSample {
    /// What happened between `earlier` and `self`.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let since = |now: &RetransmitCounters, then: &RetransmitCounters| now.since(then);
        let mut health = self.health;
        for (now, then) in health.iter_mut().zip(earlier.health) {
            *now = now.saturating_sub(then);
        }
        Self {
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

    /// Sum of every flow and overflow bucket.
    pub fn total(&self) -> RetransmitCounters {
        let mut total = RetransmitCounters::default();
        for counters in self.flows.values().chain(self.overflow.values()) {
            total.add(counters);
        }
        total
    }

    pub fn health(&self, counter: HealthCounter) -> u64 {
        self.health[counter as usize]
    }
}

/// Reads all retransmit maps (and the shared health counters) once.
pub fn read(ebpf: &Ebpf) -> Result<RetransmitSample, ReadError> {
    Ok(RetransmitSample {
        flows: read_hash(ebpf, "RETRANSMIT_FLOWS", |state: &FlowState| state.counters)?,
        overflow: read_per_cpu_hash(ebpf, "RETRANSMIT_OVERFLOW", RetransmitCounters::add)?,
        health: read_health(ebpf)?,
    })
}
