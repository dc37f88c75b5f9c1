//! Reading the programs' maps: per-CPU values summed, deleted keys skipped.

use std::{collections::HashMap, hash::Hash};

use aya::{
    Ebpf, Pod,
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
};
use galmanhae_common::health::HealthCounter;

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

/// Every key of a per-CPU hash map, its CPUs' values folded into one with `add`.
pub fn read_per_cpu_hash<K, V>(
    ebpf: &Ebpf,
    name: &'static str,
    add: impl Fn(&mut V, &V),
) -> Result<HashMap<K, V>, ReadError>
where
    K: Pod + Eq + Hash,
    V: Pod + Default,
{
    let map = ebpf.map(name).ok_or(ReadError::NoMap(name))?;
    let map: PerCpuHashMap<&MapData, K, V> =
        PerCpuHashMap::try_from(map).map_err(|source| ReadError::Map { name, source })?;
    let mut out = HashMap::new();
    for entry in &map {
        match entry {
            Ok((key, values)) => {
                let mut total = V::default();
                for v in values.iter() {
                    add(&mut total, v);
                }
                out.insert(key, total);
            }
            // The key was deleted between get_next_key and lookup: nothing to count.
            Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(ReadError::Map { name, source }),
        }
    }
    Ok(out)
}

/// Packets per key of a per-CPU hash of `u64` counters, cumulative since the program loaded.
pub type Counts<K> = HashMap<K, u64>;

/// Every key of a per-CPU counting map, its CPUs' counts summed.
pub fn read_counts<K: Pod + Eq + Hash>(
    ebpf: &Ebpf,
    name: &'static str,
) -> Result<Counts<K>, ReadError> {
    read_per_cpu_hash(ebpf, name, |total: &mut u64, n: &u64| *total += n)
}

/// What each key counted since `then`; keys that counted nothing are left out.
pub fn counts_since<K: Copy + Eq + Hash>(now: &Counts<K>, then: &Counts<K>) -> Counts<K> {
    delta(
        now,
        then,
        |now, then| now.saturating_sub(*then),
        |n| *n == 0,
    )
}

/// The `HEALTH` counters, indexed by [`HealthCounter`].
pub fn read_health(ebpf: &Ebpf) -> Result<[u64; HealthCounter::COUNT as usize], ReadError> {
    const HEALTH: &str = "HEALTH";
    let map = ebpf.map(HEALTH).ok_or(ReadError::NoMap(HEALTH))?;
    let map: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map).map_err(|source| ReadError::Map {
            name: HEALTH,
            source,
        })?;
    let mut health = [0; HealthCounter::COUNT as usize];
    for counter in HealthCounter::ALL {
        let values = map
            .get(&(counter as u32), 0)
            .map_err(|source| ReadError::Map {
                name: HEALTH,
                source,
            })?;
        health[counter as usize] = values.iter().sum();
    }
    Ok(health)
}

#[expect(
    clippy::implicit_hasher,
    reason = "every map read from the kernel uses the default hasher"
)]
/// `now - then` per key, keeping only keys that changed (a key absent before starts at zero).
pub fn delta<K: Copy + Eq + Hash, V: Copy>(
    now: &HashMap<K, V>,
    then: &HashMap<K, V>,
    since: impl Fn(&V, &V) -> V,
    is_zero: impl Fn(&V) -> bool,
) -> HashMap<K, V> {
    now.iter()
        .filter_map(|(key, value)| {
            let d = then.get(key).map_or(*value, |old| since(value, old));
            (!is_zero(&d)).then_some((*key, d))
        })
        .collect()
}
