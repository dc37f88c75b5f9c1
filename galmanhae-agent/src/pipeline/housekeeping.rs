//! Kernel-map housekeeping for a long-running agent: entries of sockets, flows, drops and NAT
//! leaks idle for a minute are deleted once their map is half full, and closed sockets'
//! time-lost entries at the next full pass, so that a daemon that runs for months keeps
//! per-flow detail. What they counted is already in the summaries the entries were read into.

use std::time::{Duration, Instant};

use hashbrown::HashMap;

use galmanhae_common::{
    drop::DropKey,
    leak::LeakKey,
    retransmit::{FlowKey, FlowState, SocketState},
};

use super::{Snapshot, Summary};
use crate::{
    collect::maps::{IdleKeys, remove_keys},
    kernel::probes::Probes,
};

/// An entry is freed after this long without counting, once its map is half full.
const FLOW_IDLE: Duration = Duration::from_secs(60);

/// When each kernel map's keys last changed, and how many entries were freed.
#[derive(Debug, Default)]
pub(crate) struct Housekeeping {
    sockets_idle: IdleKeys<u64>,
    flows_idle: IdleKeys<FlowKey>,
    drops_idle: IdleKeys<DropKey>,
    leaks_idle: IdleKeys<LeakKey>,
    /// The keys that counted in the passes since the last housekeeping.
    pending: Changed,
    /// Kernel map entries freed because their flow went idle or closed.
    pub(crate) evicted: u64,
}

/// Keys that counted, per map.
#[derive(Debug, Default)]
struct Changed {
    sockets: Vec<u64>,
    flows: Vec<FlowKey>,
    drops: Vec<DropKey>,
    leaks: Vec<LeakKey>,
}

impl Changed {
    fn add(&mut self, summary: &Summary) {
        let retransmits = &summary.retransmits;
        self.sockets.extend(retransmits.sockets.keys());
        self.flows.extend(retransmits.flows.keys());
        self.drops
            .extend(summary.drops.iter().filter_map(|d| d.key));
        self.leaks.extend(summary.leaks.keys());
    }
}

impl Housekeeping {
    /// Records which keys of `last` counted in `summary` (a pass ending at `last`); on a
    /// `full` pass, frees idle entries from the kernel and from `last`. Idle times are
    /// counted in full passes (every 10 s): against a minute, close enough, and a light pass
    /// does not walk every key of every map.
    pub(crate) fn free_idle(
        &mut self,
        probes: &mut Probes,
        last: &mut Snapshot,
        summary: &Summary,
        now: Instant,
        full: bool,
    ) {
        self.pending.add(summary);
        if !full {
            return;
        }
        let changed = std::mem::take(&mut self.pending);
        let ebpf = &mut probes.ebpf;
        let capacity = probes.flow_capacity as usize;
        self.evicted += free_idle::<u64, SocketState, _>(
            ebpf,
            ("RETRANSMIT_SOCKETS", capacity),
            &mut self.sockets_idle,
            &mut last.retransmits.sockets,
            &changed.sockets,
            now,
        );
        self.evicted += free_idle::<FlowKey, FlowState, _>(
            ebpf,
            ("RETRANSMIT_FLOWS", capacity),
            &mut self.flows_idle,
            &mut last.retransmits.flows,
            &changed.flows,
            now,
        );
        self.evicted += free_idle::<DropKey, u64, _>(
            ebpf,
            ("DROPS", galmanhae_common::drop::DROP_MAP_CAPACITY as usize),
            &mut self.drops_idle,
            &mut last.drops.flows,
            &changed.drops,
            now,
        );
        self.evicted += free_idle::<LeakKey, u64, _>(
            ebpf,
            ("LEAKS", galmanhae_common::leak::LEAK_MAP_CAPACITY as usize),
            &mut self.leaks_idle,
            &mut last.leaks,
            &changed.leaks,
            now,
        );
        self.evicted += free_closed_sockets(probes, last);
    }
}

/// Deletes the `TIME_LOST` entries of closed sockets, already counted: they never change
/// again, and the map holds only sockets that may still lose time.
fn free_closed_sockets(probes: &mut Probes, last: &mut Snapshot) -> u64 {
    let closed: Vec<u64> = last
        .time_lost
        .sockets
        .iter()
        .filter(|(_, s)| s.flags & galmanhae_common::stall::CLOSED != 0)
        .map(|(cookie, _)| *cookie)
        .collect();
    if closed.is_empty() {
        return 0;
    }
    for cookie in &closed {
        last.time_lost.sockets.remove(cookie);
    }
    let ebpf = &mut probes.ebpf;
    match remove_keys::<u64, galmanhae_common::stall::SocketTime>(ebpf, "TIME_LOST", &closed) {
        Ok(n) => n as u64,
        Err(e) => {
            log::warn!("freeing closed sockets of TIME_LOST: {e}");
            0
        }
    }
}

/// Records a pass of one kernel map (`changed`: its keys that counted, `last`: its last read),
/// then, once the map (name, capacity) is half full, deletes its keys idle for [`FLOW_IDLE`]
/// from the kernel and from `last`; returns how many were deleted.
fn free_idle<K: Copy + Eq + std::hash::Hash + aya::Pod, V: aya::Pod, T>(
    ebpf: &mut aya::Ebpf,
    (map, capacity): (&'static str, usize),
    idle: &mut IdleKeys<K>,
    last: &mut HashMap<K, T>,
    changed: &[K],
    now: Instant,
) -> u64 {
    idle.observe(last, changed, now);
    if last.len() * 2 < capacity {
        return 0;
    }
    let keys = idle.idle(now, FLOW_IDLE);
    if keys.is_empty() {
        return 0;
    }
    for key in &keys {
        last.remove(key);
        idle.forget(key);
    }
    match remove_keys::<K, V>(ebpf, map, &keys) {
        Ok(n) => {
            log::debug!("freed {n} idle entries of {map}");
            n as u64
        }
        Err(e) => {
            log::warn!("freeing idle entries of {map}: {e}");
            0
        }
    }
}
