//! The daemon's findings window: the summaries of the passes of the last `length`, kept in
//! slots so that a pass's cost does not grow with the window.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use super::{Summary, drops::compact};

/// The window is kept in this many slots (one more while the oldest leaves): each pass
/// merges into the newest, and the window's summary merges the slots, not every pass. At the
/// default 5 minutes and a pass every 5 s that is 11 summaries merged per pass, not 60; the
/// window's start moves in steps of a tenth of its length.
const SLOTS: u32 = 10;

/// Passes merged, from the first that ended `opened` to the last that ended `ended`.
#[derive(Debug)]
struct Slot {
    opened: Instant,
    ended: Instant,
    summary: Summary,
}

#[derive(Debug)]
pub(super) struct FindingsWindow {
    slots: VecDeque<Slot>,
    length: Duration,
}

impl FindingsWindow {
    pub(super) fn new(length: Duration) -> Self {
        Self {
            slots: VecDeque::new(),
            length,
        }
    }

    /// Adds a pass that ended `now`; drops the slots whose last pass ended before the
    /// window.
    pub(super) fn add(&mut self, mut summary: Summary, now: Instant) {
        let slot_length = self.length / SLOTS;
        match self.slots.back_mut() {
            Some(slot) if now.saturating_duration_since(slot.opened) < slot_length => {
                let mut merged = Summary::merge([&slot.summary, &summary]);
                merged.drops = compact(&merged.drops);
                slot.summary = merged;
                slot.ended = now;
            }
            _ => {
                summary.drops = compact(&summary.drops);
                self.slots.push_back(Slot {
                    opened: now,
                    ended: now,
                    summary,
                });
            }
        }
        while self
            .slots
            .front()
            .is_some_and(|slot| now.saturating_duration_since(slot.ended) > self.length)
        {
            self.slots.pop_front();
        }
    }

    /// Everything in the window, as one summary.
    pub(super) fn summary(&self) -> Summary {
        Summary::merge(self.slots.iter().map(|slot| &slot.summary))
    }

    pub(super) fn length(&self) -> Duration {
        self.length
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(seconds: u64) -> Summary {
        Summary {
            duration: Duration::from_secs(seconds),
            ..Summary::default()
        }
    }

    #[test]
    fn a_pass_every_5_s_for_an_hour_keeps_11_slots_and_the_last_5_minutes() {
        let mut window = FindingsWindow::new(Duration::from_secs(300));
        let start = Instant::now();
        for i in 1..=720 {
            window.add(pass(5), start + Duration::from_secs(5 * i));
            assert!(window.slots.len() <= 11, "{} slots", window.slots.len());
        }
        // Between the window and the window and a slot: 300 to 330 s of passes.
        let held = window.summary().duration.as_secs();
        assert!((300..=330).contains(&held), "{held} s held");
    }

    #[test]
    fn every_pass_counts_until_it_leaves() {
        let mut window = FindingsWindow::new(Duration::from_secs(10));
        let start = Instant::now();
        for i in 1..=7 {
            window.add(pass(1), start + Duration::from_secs(i));
        }
        assert_eq!(window.summary().duration, Duration::from_secs(7));
        // 30 s later, one pass: everything before it has left.
        window.add(pass(30), start + Duration::from_secs(37));
        assert_eq!(window.summary().duration, Duration::from_secs(30));
    }
}
