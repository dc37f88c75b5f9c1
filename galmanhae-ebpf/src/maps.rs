//! Counting into hash maps, shared by every program.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    maps::{HashMap, PerCpuHashMap},
};

const EEXIST: i32 = 17;

/// A hash map whose values are updated in place: per CPU (keys that several CPUs count into
/// at once) or shared (keys whose events never race).
pub trait Slots<K, V> {
    fn slot(&self, key: &K) -> Option<*mut V>;
    fn create(&self, key: &K, value: &V) -> Result<(), i32>;
}

macro_rules! impl_slots {
    ($($map:ident),+) => {
        $(
            impl<K, V> Slots<K, V> for $map<K, V> {
                #[inline(always)]
                fn slot(&self, key: &K) -> Option<*mut V> {
                    self.get_ptr_mut(key)
                }
                #[inline(always)]
                fn create(&self, key: &K, value: &V) -> Result<(), i32> {
                    self.insert(key, value, u64::from(BPF_NOEXIST))
                }
            }
        )+
    };
}
impl_slots!(HashMap, PerCpuHashMap);

/// Applies `update` to the value of `key` (this CPU's, for a per-CPU map), creating it from
/// `V::default()` if needed. `true` if counted; `false` only when the map is full. The value
/// goes to `create` by reference: one more copy would overflow the 512-byte BPF stack.
#[inline(always)]
pub fn update<K, V: Default>(map: &impl Slots<K, V>, key: &K, update: &impl Fn(&mut V)) -> bool {
    if let Some(value) = map.slot(key) {
        // SAFETY: per CPU, this CPU's slot; shared, a key whose updates never race (the
        // caller's contract). Nothing else writes it while the program runs.
        update(unsafe { &mut *value });
        return true;
    }
    let mut fresh = V::default();
    update(&mut fresh);
    match map.create(key, &fresh) {
        Ok(()) => true,
        // Another CPU created the key in between: update what it created.
        Err(e) if e == -EEXIST => match map.slot(key) {
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

/// Adds `n` to the shared counter of `key`, creating it if needed: with the BPF atomic add
/// (`lock xadd`, every kernel), since several CPUs may count one key at once. `true` if
/// counted; `false` only when the map is full.
#[inline(always)]
pub fn add_shared<K>(map: &HashMap<K, u64>, key: &K, n: u64) -> bool {
    let add = |counter: *mut u64| {
        // SAFETY: a value of the map, aligned; the result is unused, so LLVM emits the plain
        // atomic add.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n) };
    };
    if let Some(counter) = map.get_ptr_mut(key) {
        add(counter);
        return true;
    }
    match map.insert(key, n, u64::from(BPF_NOEXIST)) {
        Ok(()) => true,
        // Another CPU created the key in between: add to what it created.
        Err(e) if e == -EEXIST => map.get_ptr_mut(key).map(add).is_some(),
        Err(_) => false,
    }
}
