//! Counting into per-CPU hash maps, shared by every program.

use aya_ebpf::{bindings::BPF_NOEXIST, maps::PerCpuHashMap};

const EEXIST: i32 = 17;

/// Applies `update` to this CPU's value of `key`, creating it (from `V::default()`) if needed.
/// `true` if counted; `false` only when the map is full. The value goes to `insert` by
/// reference: one more copy would overflow the 512-byte BPF stack.
#[inline(always)]
pub fn update<K, V: Default>(map: &PerCpuHashMap<K, V>, key: &K, update: &impl Fn(&mut V)) -> bool {
    if let Some(value) = map.get_ptr_mut(key) {
        // SAFETY: this CPU's slot; nothing else writes it while the program runs.
        update(unsafe { &mut *value });
        return true;
    }
    let mut fresh = V::default();
    update(&mut fresh);
    match map.insert(key, &fresh, u64::from(BPF_NOEXIST)) {
        Ok(()) => true,
        // Another CPU created the key in between: this CPU's slot starts at zero.
        Err(e) if e == -EEXIST => match map.get_ptr_mut(key) {
            Some(value) => {
                // SAFETY: as above.
                update(unsafe { &mut *value });
                true
            }
            None => false,
        },
        Err(_) => false,
    }
}
