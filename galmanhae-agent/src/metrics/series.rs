//! Series kept between scrapes, and the caps that keep their labels bounded. A series lives
//! while it is active (its counter grows, or what it describes is still there) and for the
//! grace period after; then it is removed and Prometheus marks it stale.
//!
//! A counter that first appears with its count already in it shows `rate()` and `increase()`
//! nothing: they need two samples. So a new counter is served at zero first, and what it
//! counted is added in the first pass after a scrape has shown that zero. One-off bursts (a
//! first retransmit to a new remote, a NAT leak) are then visible as an increase, one pass
//! later. Counts from before the agent started are a baseline and are served at once
//! ([`Lifecycle::settle`]).

use std::{
    hash::Hash,
    time::{Duration, Instant},
};

use hashbrown::HashMap;

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
    pub(crate) fn add_alive(&mut self, labels: L, delta: u64, now: Instant) {
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

    /// Sets a gauge; it is active.
    pub(crate) fn set(&mut self, labels: L, value: u64, now: Instant) {
        let entry = Entry {
            value,
            held: 0,
            shown: true,
            active: now,
        };
        self.entries.insert(labels, entry);
    }

    /// Removes the gauges not set since `since` (what they described is gone).
    pub(crate) fn retain_set_since(&mut self, since: Instant) {
        self.entries.retain(|_, e| e.active >= since);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&L, u64)> {
        self.entries.iter().map(|(labels, e)| (labels, e.value))
    }

    /// Removes the series whose labels match.
    pub(crate) fn remove_where(&mut self, matches: impl Fn(&L) -> bool) {
        self.entries.retain(|labels, _| !matches(labels));
    }

    /// The value served now.
    pub(crate) fn get(&self, labels: &L) -> Option<u64> {
        self.entries.get(labels).map(|e| e.value)
    }
}

/// What a family's series do between passes, whatever their labels.
pub trait Lifecycle {
    /// A scrape serves the series now: the held counts of new series go out on the next
    /// [`Self::release`].
    fn mark_shown(&mut self);
    /// Adds what series already shown at zero have held.
    fn release(&mut self);
    /// Removes the series inactive for longer than `grace`; how many went.
    fn expire(&mut self, now: Instant, grace: Duration) -> usize;
    fn len(&self) -> usize;

    /// Serves every count at once: the baseline taken when the agent starts.
    fn settle(&mut self) {
        self.mark_shown();
        self.release();
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<L: Eq + Hash> Lifecycle for Series<L> {
    fn mark_shown(&mut self) {
        for entry in self.entries.values_mut() {
            entry.shown = true;
        }
    }

    fn release(&mut self) {
        for entry in self.entries.values_mut().filter(|e| e.shown) {
            entry.value += entry.held;
            entry.held = 0;
        }
    }

    fn expire(&mut self, now: Instant, grace: Duration) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.active) <= grace);
        before - self.entries.len()
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// At most `max` distinct keys; a key keeps its slot while in use and for the grace period.
#[derive(Debug)]
pub(crate) struct Slots<K> {
    max: usize,
    used: HashMap<K, Instant>,
}

impl<K: Eq + Hash> Slots<K> {
    pub(crate) fn new(max: u32) -> Self {
        Self {
            max: max as usize,
            used: HashMap::new(),
        }
    }

    /// Whether `key` has a slot (taking a free one if needed); refreshes it.
    pub(crate) fn admit(&mut self, key: K, now: Instant) -> bool {
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
    pub(crate) fn expire(&mut self, now: Instant, grace: Duration) {
        self.used
            .retain(|_, last| now.saturating_duration_since(*last) <= grace);
    }

    /// How many slots are taken (the tests count them).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.used.len()
    }
}

/// How fast a remote's weight in [`TopK`] fades: a steady rate `r` weighs about `r × 87 s`.
const TOP_K_HALF_LIFE: Duration = Duration::from_secs(60);

/// A newcomer takes the slot of the lightest kept key only when it weighs this many times as
/// much: ranks do not flap between two remotes of about the same weight.
const TOP_K_HYSTERESIS: f64 = 2.0;

/// Candidates remembered per kept slot: enough to notice a riser, bounded whatever comes.
const TOP_K_CANDIDATES_PER_SLOT: usize = 4;

/// The `max` heaviest keys by recent weight (an exponentially decayed count), with hysteresis.
/// Kept keys get series of their own; the others are counted in an `other` bucket.
#[derive(Debug)]
pub(crate) struct TopK<K> {
    max: usize,
    kept: HashMap<K, Weight>,
    candidates: HashMap<K, Weight>,
}

#[derive(Clone, Copy, Debug)]
struct Weight {
    value: f64,
    at: Instant,
}

impl Weight {
    fn new(now: Instant) -> Self {
        Self {
            value: 0.0,
            at: now,
        }
    }

    fn at(&self, now: Instant) -> f64 {
        let age = now.saturating_duration_since(self.at).as_secs_f64();
        self.value * (-age / TOP_K_HALF_LIFE.as_secs_f64()).exp2()
    }

    fn add(&mut self, weight: u64, now: Instant) {
        #[expect(clippy::cast_precision_loss, reason = "a ranking weight")]
        let weight = weight as f64;
        self.value = self.at(now) + weight;
        self.at = now;
    }
}

/// What [`TopK::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission<K> {
    /// The key has a slot (it may have just taken a free one).
    Kept,
    /// The key took the slot of `demoted`, which is counted in `other` from now on.
    Promoted { demoted: K },
    /// No slot: count it in `other`.
    Refused,
}

impl<K: Clone + Eq + Hash> TopK<K> {
    pub(crate) fn new(max: u32) -> Self {
        Self {
            max: max as usize,
            kept: HashMap::new(),
            candidates: HashMap::new(),
        }
    }

    /// Adds `weight` to `key` and decides whether it has a slot.
    pub(crate) fn admit(&mut self, key: &K, weight: u64, now: Instant) -> Admission<K> {
        if let Some(kept) = self.kept.get_mut(key) {
            kept.add(weight, now);
            return Admission::Kept;
        }
        let mut candidate = self
            .candidates
            .remove(key)
            .unwrap_or_else(|| Weight::new(now));
        candidate.add(weight, now);
        if self.kept.len() < self.max {
            self.kept.insert(key.clone(), candidate);
            return Admission::Kept;
        }
        let lightest = self
            .kept
            .iter()
            .map(|(k, w)| (k, w.at(now)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(k, w)| (k.clone(), w));
        match lightest {
            Some((demoted, weight)) if candidate.value > TOP_K_HYSTERESIS * weight => {
                if let Some(w) = self.kept.remove(&demoted) {
                    self.candidates.insert(demoted.clone(), w);
                }
                self.kept.insert(key.clone(), candidate);
                self.bound_candidates(now);
                Admission::Promoted { demoted }
            }
            _ => {
                self.candidates.insert(key.clone(), candidate);
                self.bound_candidates(now);
                Admission::Refused
            }
        }
    }

    /// Forgets the lightest candidates beyond the bound.
    fn bound_candidates(&mut self, now: Instant) {
        let bound = self.max.max(1) * TOP_K_CANDIDATES_PER_SLOT;
        if self.candidates.len() <= bound {
            return;
        }
        let mut weights: Vec<(K, f64)> = self
            .candidates
            .iter()
            .map(|(k, w)| (k.clone(), w.at(now)))
            .collect();
        weights.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        for (key, _) in weights.into_iter().skip(bound) {
            self.candidates.remove(&key);
        }
    }

    /// Frees the slots (and forgets the candidates) not counted for longer than `grace`.
    pub(crate) fn expire(&mut self, now: Instant, grace: Duration) {
        let recent = |w: &mut Weight| now.saturating_duration_since(w.at) <= grace;
        self.kept.retain(|_, w| recent(w));
        self.candidates.retain(|_, w| recent(w));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.candidates.is_empty()
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

    #[test]
    fn top_k_keeps_the_heaviest_with_hysteresis() {
        let t0 = Instant::now();
        let mut top = TopK::new(2);
        assert_eq!(top.admit(&"a", 10, t0), Admission::Kept);
        assert_eq!(top.admit(&"b", 5, t0), Admission::Kept);
        // Lighter than twice the lightest kept: counted in `other`, but remembered.
        assert_eq!(top.admit(&"c", 8, t0), Admission::Refused);
        assert_eq!(top.admit(&"c", 1, t0), Admission::Refused);
        // Its weight grows: it takes the lightest slot.
        assert_eq!(top.admit(&"c", 2, t0), Admission::Promoted { demoted: "b" });
        // "b" comes back a little heavier than "c": hysteresis keeps the ranks.
        assert_eq!(top.admit(&"b", 7, t0), Admission::Refused);
        // Weights fade: an hour later "a" and "c" weigh nothing, and a newcomer takes a slot.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(
            top.admit(&"d", 1, later),
            Admission::Promoted { demoted: "a" }
        );
    }

    #[test]
    fn top_k_candidates_are_bounded_and_expire() {
        let t0 = Instant::now();
        let mut top = TopK::new(1);
        assert_eq!(top.admit(&1000, 1_000, t0), Admission::Kept);
        for key in 0..100 {
            assert_eq!(top.admit(&key, 1, t0), Admission::Refused);
        }
        assert_eq!(top.candidates.len(), TOP_K_CANDIDATES_PER_SLOT);
        top.expire(t0 + Duration::from_secs(61), Duration::from_secs(60));
        assert!(top.is_empty());
    }
}
