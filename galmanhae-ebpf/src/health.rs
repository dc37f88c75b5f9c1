//! Counters of what the programs could not do (see `galmanhae_common::health`).

use aya_ebpf::{macros::map, maps::PerCpuArray};
use galmanhae_common::health::HealthCounter;

#[map]
static HEALTH: PerCpuArray<u64> = PerCpuArray::with_max_entries(HealthCounter::COUNT, 0);

#[inline(always)]
pub fn bump(counter: HealthCounter) {
    if let Some(slot) = HEALTH.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no other writer on this CPU while the program runs.
        unsafe { *slot += 1 };
    }
}
