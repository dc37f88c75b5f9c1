//! Reading the programs' maps: per-CPU values summed, deleted keys skipped.

use std::hash::Hash;

use hashbrown::HashMap;

use std::os::fd::AsFd as _;

use aya::{
    Ebpf, Pod,
    maps::{Map, MapData, MapError, PerCpuArray, PerCpuHashMap},
};
use galmanhae_common::health::HealthCounter;

use super::batch;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("map {0} is missing from the eBPF object")]
    NoMap(&'static str),
    #[error("reading map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
}

/// Every key of a per-CPU hash map, its CPUs' values folded into one with `add`.
pub(crate) fn read_per_cpu_hash<K, V>(
    ebpf: &Ebpf,
    name: &'static str,
    add: impl Fn(&mut V, &V),
) -> Result<HashMap<K, V>, ReadError>
where
    K: Pod + Eq + Hash,
    V: Pod + Default,
{
    let map = ebpf.map(name).ok_or(ReadError::NoMap(name))?;
    let cpus = aya::util::nr_cpus().unwrap_or(0);
    let stride = size_of::<V>().next_multiple_of(8);
    if cpus > 0
        && let Some(entries) = read_batched::<K>(map, name, stride * cpus)
    {
        return entries.map(|(keys, values)| {
            keys.into_iter()
                .zip(values.chunks_exact(stride * cpus))
                .map(|(key, values)| {
                    let mut total = V::default();
                    for cpu in values.chunks_exact(stride) {
                        add(&mut total, &from_bytes(cpu));
                    }
                    (key, total)
                })
                .collect()
        });
    }
    let map: PerCpuHashMap<&MapData, K, V> =
        PerCpuHashMap::try_from(map).map_err(|source| ReadError::Map { name, source })?;
    collect(name, &map, |values| {
        let mut total = V::default();
        for v in values.iter() {
            add(&mut total, v);
        }
        total
    })
}

/// Every key of a shared (not per-CPU) hash map, its value mapped by `project`.
pub(crate) fn read_hash<K, V, T>(
    ebpf: &Ebpf,
    name: &'static str,
    project: impl Fn(&V) -> T,
) -> Result<HashMap<K, T>, ReadError>
where
    K: Pod + Eq + Hash,
    V: Pod,
{
    let map = ebpf.map(name).ok_or(ReadError::NoMap(name))?;
    if let Some(entries) = read_batched::<K>(map, name, size_of::<V>()) {
        return entries.map(|(keys, values)| {
            keys.into_iter()
                .zip(values.chunks_exact(size_of::<V>()))
                .map(|(key, value)| (key, project(&from_bytes::<V>(value))))
                .collect()
        });
    }
    let map: aya::maps::HashMap<&MapData, K, V> =
        aya::maps::HashMap::try_from(map).map_err(|source| ReadError::Map { name, source })?;
    collect(name, &map, |value| project(&value))
}

/// A map's keys, and their values' bytes in the same order.
type Batch<K> = (Vec<K>, Vec<u8>);

/// The entries of a hash map read in batches: the keys, and the values' bytes (`value_size`
/// per key, in the same order); `None` where the kernel cannot (the caller iterates).
fn read_batched<K: Pod>(
    map: &Map,
    name: &'static str,
    value_size: usize,
) -> Option<Result<Batch<K>, ReadError>> {
    let (Map::HashMap(data) | Map::PerCpuHashMap(data)) = map else {
        return None;
    };
    let read = batch::lookup_all(data.fd().as_fd(), size_of::<K>(), value_size)?;
    Some(
        read.map(|(keys, values)| {
            let keys = keys.chunks_exact(size_of::<K>()).map(from_bytes).collect();
            (keys, values)
        })
        .map_err(|e| ReadError::Map {
            name,
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_lookup_batch",
                io_error: e,
            }),
        }),
    )
}

/// A `T` from the first `size_of::<T>()` of `bytes`, which the kernel wrote as one.
fn from_bytes<T: Pod>(bytes: &[u8]) -> T {
    assert!(
        bytes.len() >= size_of::<T>(),
        "a map entry shorter than its type"
    );
    // SAFETY: `T` is plain old data and `bytes` holds at least one, possibly unaligned.
    unsafe { bytes.as_ptr().cast::<T>().read_unaligned() }
}

/// The entries of a map iteration, each value mapped by `value`.
fn collect<K: Eq + Hash, V, T>(
    name: &'static str,
    entries: impl IntoIterator<Item = Result<(K, V), MapError>>,
    value: impl Fn(V) -> T,
) -> Result<HashMap<K, T>, ReadError> {
    let mut out = HashMap::new();
    for entry in entries {
        match entry {
            Ok((key, v)) => {
                out.insert(key, value(v));
            }
            // The key was deleted between get_next_key and lookup: nothing to count.
            Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(ReadError::Map { name, source }),
        }
    }
    Ok(out)
}

/// Packets per key of a per-CPU hash of `u64` counters, cumulative since the program loaded.
pub(crate) type Counts<K> = HashMap<K, u64>;

/// Every key of a per-CPU counting map, its CPUs' counts summed.
pub(crate) fn read_counts<K: Pod + Eq + Hash>(
    ebpf: &Ebpf,
    name: &'static str,
) -> Result<Counts<K>, ReadError> {
    read_per_cpu_hash(ebpf, name, |total: &mut u64, n: &u64| *total += n)
}

/// What each key counted since `then`; keys that counted nothing are left out.
pub(crate) fn counts_since<K: Copy + Eq + Hash>(now: &Counts<K>, then: &Counts<K>) -> Counts<K> {
    delta(
        now,
        then,
        |now, then| now.saturating_sub(*then),
        |n| *n == 0,
    )
}

/// The `HEALTH` counters, indexed by [`HealthCounter`].
pub(crate) fn read_health(ebpf: &Ebpf) -> Result<[u64; HealthCounter::COUNT as usize], ReadError> {
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

/// `now - then` per key, keeping only keys that changed (a key absent before starts at zero).
pub(crate) fn delta<K: Copy + Eq + Hash, V: Copy>(
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

/// When each key of a counting map last changed, so that a long-running agent can free the
/// entries of finished flows before the map fills up.
#[derive(Debug)]
pub(crate) struct IdleKeys<K> {
    changed: HashMap<K, std::time::Instant>,
}

impl<K> Default for IdleKeys<K> {
    fn default() -> Self {
        Self {
            changed: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> IdleKeys<K> {
    /// Records a pass: `changed` counted since the last one, `present` are in the map now.
    pub(crate) fn observe<T>(
        &mut self,
        present: &HashMap<K, T>,
        changed: &[K],
        now: std::time::Instant,
    ) {
        self.changed.retain(|k, _| present.contains_key(k));
        for key in present.keys() {
            self.changed.entry(*key).or_insert(now);
        }
        for key in changed {
            self.changed.insert(*key, now);
        }
    }

    /// Keys unchanged for at least `idle`, oldest first.
    pub(crate) fn idle(&self, now: std::time::Instant, idle: std::time::Duration) -> Vec<K> {
        let mut keys: Vec<(K, std::time::Instant)> = self
            .changed
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= idle)
            .map(|(k, t)| (*k, *t))
            .collect();
        keys.sort_by_key(|(_, t)| *t);
        keys.into_iter().map(|(k, _)| k).collect()
    }

    pub(crate) fn forget(&mut self, key: &K) {
        self.changed.remove(key);
    }
}

/// Deletes `keys` from a hash map (shared or per CPU); how many were there. A program that
/// counts into an entry in the microseconds between our last read and the deletion loses that
/// count, which is why only entries idle for a long time are deleted, and only when the map
/// fills up.
pub(crate) fn remove_keys<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    keys: &[K],
) -> Result<usize, ReadError> {
    let map = ebpf.map_mut(name).ok_or(ReadError::NoMap(name))?;
    let error = |source| ReadError::Map { name, source };
    if matches!(map, Map::PerCpuHashMap(_)) {
        let mut map: PerCpuHashMap<&mut MapData, K, V> =
            PerCpuHashMap::try_from(map).map_err(error)?;
        remove_each(keys, |k| map.remove(k)).map_err(error)
    } else {
        let mut map: aya::maps::HashMap<&mut MapData, K, V> =
            aya::maps::HashMap::try_from(map).map_err(error)?;
        remove_each(keys, |k| map.remove(k)).map_err(error)
    }
}

fn remove_each<K>(
    keys: &[K],
    mut remove: impl FnMut(&K) -> Result<(), MapError>,
) -> Result<usize, MapError> {
    let mut removed = 0;
    for key in keys {
        match remove(key) {
            Ok(()) => removed += 1,
            // Deleted meanwhile (nothing else deletes, but it is not an error either).
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}
