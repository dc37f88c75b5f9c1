//! Reads the retransmit maps the kernel programs fill (`galmanhae-ebpf/src/retransmit.rs`).

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues},
};
use galmanhae_common::{
    health::HealthCounter,
    retransmit::{FlowKey, OwnerKey, RetransmitCounters},
};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("map {0} is missing from the eBPF object")]
    NoMap(&'static str),
    #[error("reading map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
}

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
        fn diff<K: Copy + Eq + std::hash::Hash>(
            now: &HashMap<K, RetransmitCounters>,
            then: &HashMap<K, RetransmitCounters>,
        ) -> HashMap<K, RetransmitCounters> {
            now.iter()
                .filter_map(|(key, counters)| {
                    let delta = then.get(key).map_or(*counters, |old| counters.since(old));
                    (!delta.is_zero()).then_some((*key, delta))
                })
                .collect()
        }
        let mut health = self.health;
        for (now, then) in health.iter_mut().zip(earlier.health) {
            *now = now.saturating_sub(then);
        }
        Self {
            flows: diff(&self.flows, &earlier.flows),
            overflow: diff(&self.overflow, &earlier.overflow),
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

fn sum(values: &PerCpuValues<RetransmitCounters>) -> RetransmitCounters {
    let mut total = RetransmitCounters::default();
    for v in values.iter() {
        total.add(v);
    }
    total
}

fn read_hash<K: aya::Pod + Eq + std::hash::Hash>(
    ebpf: &Ebpf,
    name: &'static str,
) -> Result<HashMap<K, RetransmitCounters>, ReadError> {
    let map = ebpf.map(name).ok_or(ReadError::NoMap(name))?;
    let map: PerCpuHashMap<&MapData, K, RetransmitCounters> =
        PerCpuHashMap::try_from(map).map_err(|source| ReadError::Map { name, source })?;
    let mut out = HashMap::new();
    for entry in &map {
        match entry {
            Ok((key, values)) => {
                out.insert(key, sum(&values));
            }
            // The key was deleted between get_next_key and lookup: nothing to count.
            Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(ReadError::Map { name, source }),
        }
    }
    Ok(out)
}

/// Reads all retransmit maps once.
pub fn read(ebpf: &Ebpf) -> Result<RetransmitSample, ReadError> {
    const HEALTH: &str = "HEALTH";
    let health_map = ebpf.map(HEALTH).ok_or(ReadError::NoMap(HEALTH))?;
    let health_map: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(health_map).map_err(|source| ReadError::Map {
            name: HEALTH,
            source,
        })?;
    let mut health = [0; HealthCounter::COUNT as usize];
    for counter in HealthCounter::ALL {
        let values = health_map
            .get(&(counter as u32), 0)
            .map_err(|source| ReadError::Map {
                name: HEALTH,
                source,
            })?;
        health[counter as usize] = values.iter().sum();
    }
    Ok(RetransmitSample {
        flows: read_hash(ebpf, "RETRANSMIT_FLOWS")?,
        overflow: read_hash(ebpf, "RETRANSMIT_OVERFLOW")?,
        health,
    })
}
