//! Series kept between scrapes, and the caps that keep their labels bounded. A series lives
//! while it is active (its counter grows, or what it describes is still there) and for the
//! grace period after; then it is removed and Prometheus marks it stale.
//!
//! A counter that first appears with its count already in it shows `rate()` and `increase()`
//! nothing: they need two samples. So a new counter is served at zero first, and what it
//! counted is added in the first pass after a scrape has shown that zero. One-off bursts (a
//! first retransmit to a new remote, a NAT leak) are then visible as an increase, one pass
//! later. Counts from before the agent started are a baseline and are served at once
//! ([`Series::settle`]).

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// Values by label set. Counters grow with [`Self::add`]; gauges are replaced with [`Self::set`].
#[derive(Debug)]
pub struct Series<L> {
    entries: HashMap<L, Entry>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// What is served.
    value: u64,
    /// Counted but not yet served: the series has not been shown at zero yet.
    held: u64,
    /// A scrape has served this series.
    shown: bool,
    active: Instant,
}

impl<L> Default for Series<L> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<L: Eq + Hash> Series<L> {
    /// Adds `delta` to a counter, creating it at zero. A counter that grows is active.
    pub fn add(&mut self, labels: L, delta: u64, now: Instant) {
        self.grow(labels, delta, now, delta > 0);
    }

    /// Adds `delta` to a counter whose subject still exists: it is active even if it did not
    /// grow.
    pub fn add_alive(&mut self, labels: L, delta: u64, now: Instant) {
        self.grow(labels, delta, now, true);
    }

    fn grow(&mut self, labels: L, delta: u64, now: Instant, active: bool) {
        let entry = self.entries.entry(labels).or_insert(Entry {
            value: 0,
            held: 0,
            shown: false,
            active: now,
        });
        if entry.shown {
            entry.value += entry.held + delta;
            entry.held = 0;
        } else {
            entry.held += delta;
        }
        if active {
            entry.active = now;
        }
    }

    /// A scrape serves the series now: the held counts of new series go out on the next
    /// [`Self::release`].
    pub fn mark_shown(&mut self) {
        for entry in self.entries.values_mut() {
            entry.shown = true;
        }
    }

    /// Adds what series already shown at zero have held.
    pub fn release(&mut self) {
        for entry in self.entries.values_mut().filter(|e| e.shown) {
            entry.value += entry.held;
            entry.held = 0;
        }
    }

    /// Serves every count at once: the baseline taken when the agent starts.
    pub fn settle(&mut self) {
        self.mark_shown();
        self.release();
    }

    /// Sets a gauge; it is active.
    pub fn set(&mut self, labels: L, value: u64, now: Instant) {
        let entry = Entry {
            value,
            held: 0,
            shown: true,
            active: now,
        };
        self.entries.insert(labels, entry);
    }

    /// Removes the series inactive for longer than `grace`; how many went.
    pub fn expire(&mut self, now: Instant, grace: Duration) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.active) <= grace);
        before - self.entries.len()
    }

    /// Removes the gauges not set since `since` (what they described is gone).
    pub fn retain_set_since(&mut self, since: Instant) {
        self.entries.retain(|_, e| e.active >= since);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&L, u64)> {
        self.entries.iter().map(|(labels, e)| (labels, e.value))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value served now.
    pub fn get(&self, labels: &L) -> Option<u64> {
        self.entries.get(labels).map(|e| e.value)
    }
}

/// What a family's series do between passes, whatever their labels.
pub trait Lifecycle {
    fn mark_shown(&mut self);
    fn release(&mut self);
    fn settle(&mut self);
    fn expire(&mut self, now: Instant, grace: Duration) -> usize;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<L: Eq + Hash> Lifecycle for Series<L> {
    fn mark_shown(&mut self) {
        Self::mark_shown(self);
    }

    fn release(&mut self) {
        Self::release(self);
    }

    fn settle(&mut self) {
        Self::settle(self);
    }

    fn expire(&mut self, now: Instant, grace: Duration) -> usize {
        Self::expire(self, now, grace)
    }

    fn len(&self) -> usize {
        Self::len(self)
    }
}

/// At most `max` distinct keys; a key keeps its slot while in use and for the grace period.
#[derive(Debug)]
pub struct Slots<K> {
    max: usize,
    used: HashMap<K, Instant>,
}

impl<K: Eq + Hash> Slots<K> {
    pub fn new(max: u32) -> Self {
        Self {
            max: max as usize,
            used: HashMap::new(),
        }
    }

    /// Whether `key` has a slot (taking a free one if needed); refreshes it.
    pub fn admit(&mut self, key: K, now: Instant) -> bool {
        if let Some(last) = self.used.get_mut(&key) {
            *last = now;
            return true;
        }
        if self.used.len() >= self.max {
            return false;
        }
        self.used.insert(key, now);
        true
    }

    /// Frees the slots unused for longer than `grace`.
    pub fn expire(&mut self, now: Instant, grace: Duration) {
        self.used
            .retain(|_, last| now.saturating_duration_since(*last) <= grace);
    }

    pub fn len(&self) -> usize {
        self.used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_grow_and_expire_after_grace() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(60);
        let mut series = Series::default();
        series.add("a", 5, t0);
        series.settle();
        series.add("a", 3, t0 + Duration::from_secs(10));
        series.add("b", 0, t0);
        assert_eq!(series.get(&"a"), Some(8));
        assert_eq!(series.get(&"b"), Some(0));
        // "b" never grew: it expires first; "a" stays while touched.
        series.add_alive("a", 0, t0 + Duration::from_secs(100));
        assert_eq!(series.expire(t0 + Duration::from_secs(120), grace), 1);
        assert_eq!(series.get(&"a"), Some(8));
        assert_eq!(series.expire(t0 + Duration::from_secs(161), grace), 1);
        assert!(series.is_empty());
    }

    #[test]
    fn a_new_counter_is_served_at_zero_before_its_count() {
        let t0 = Instant::now();
        let mut series = Series::default();
        series.add("old", 7, t0);
        series.settle();
        assert_eq!(series.get(&"old"), Some(7), "a baseline is served at once");
        // A pass before any scrape: still zero, however many passes count.
        series.release();
        series.add("new", 3, t0);
        series.release();
        series.add("new", 2, t0);
        assert_eq!(series.get(&"new"), Some(0));
        // A scrape serves it at zero; the next pass adds what it held.
        series.mark_shown();
        assert_eq!(series.get(&"new"), Some(0));
        series.release();
        assert_eq!(series.get(&"new"), Some(5));
        series.add("new", 1, t0);
        series.add("old", 1, t0);
        assert_eq!((series.get(&"new"), series.get(&"old")), (Some(6), Some(8)));
    }

    #[test]
    fn slots_cap_and_free() {
        let t0 = Instant::now();
        let mut slots = Slots::new(2);
        assert!(slots.admit("a", t0));
        assert!(slots.admit("b", t0));
        assert!(!slots.admit("c", t0));
        assert!(slots.admit("a", t0 + Duration::from_secs(50)));
        slots.expire(t0 + Duration::from_secs(61), Duration::from_secs(60));
        assert_eq!(slots.len(), 1);
        assert!(slots.admit("c", t0 + Duration::from_secs(61)));
    }
}
