//! The daemon's findings window: the summaries of the passes of the last `length`, kept in
//! slots and with their drops compacted, so that neither a pass's cost nor the window's
//! memory grows with the window.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use hashbrown::HashMap;

use super::{
    Summary,
    drops::{DropTotals, EXAMPLES, is_icmp_too_big},
};
use crate::attribute::nat::Direction;

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

/// A pass's drops as the findings window keeps them: what the report derives from them (per
/// workload, namespace, reason and location: packets by direction and protocol, ICMP "too
/// big", up to [`EXAMPLES`] example packets) without a row per packet header. The first
/// rows of each group keep their headers; the rest add their packets to the group's first.
/// One row per flow and reason made a storm's window hold thousands of rows per pass.
fn compact(drops: &[Arc<DropTotals>]) -> Vec<Arc<DropTotals>> {
    type Group<'a> = (&'a str, u32, u32, u64, Option<Direction>, Option<u8>, bool);
    let mut groups: HashMap<Group<'_>, (usize, usize)> = HashMap::new();
    let mut out: Vec<Arc<DropTotals>> = Vec::new();
    for d in drops {
        let group = (
            &*d.workload.name,
            d.netns,
            d.reason,
            d.location,
            d.direction,
            d.key.map(|k| k.protocol),
            d.key.as_ref().is_some_and(is_icmp_too_big),
        );
        match groups.get_mut(&group) {
            Some((kept, first)) if *kept >= EXAMPLES => {
                if let Some(first) = out.get_mut(*first) {
                    Arc::make_mut(first).packets += d.packets;
                }
            }
            Some((kept, _)) => {
                *kept += 1;
                out.push(Arc::clone(d));
            }
            None => {
                groups.insert(group, (1, out.len()));
                out.push(Arc::clone(d));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use galmanhae_common::drop::{DropKey, IPPROTO_TCP, IPPROTO_UDP};

    use super::*;
    use crate::model::{Site, testing};

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

    fn row(port: u16, protocol: u8, packets: u64) -> Arc<DropTotals> {
        // SAFETY: DropKey is plain integers; all zeros is a valid key.
        let mut key: DropKey = unsafe { std::mem::zeroed() };
        key.protocol = protocol;
        key.src_port = port;
        Arc::new(DropTotals {
            workload: testing::container("app", 2),
            site: Site::Host,
            netns: 1,
            reason: 6,
            location: 0xffff_0000,
            key: Some(key),
            direction: Some(Direction::Egress),
            packets,
        })
    }

    #[test]
    fn a_window_keeps_examples_and_sums_not_a_row_per_packet_header() {
        let mut rows: Vec<_> = (0..12)
            .map(|port| row(40_000 + port, IPPROTO_TCP, 2))
            .collect();
        rows.push(row(53, IPPROTO_UDP, 3));
        let kept = compact(&rows);
        let tcp: Vec<_> = kept
            .iter()
            .filter(|d| d.key.is_some_and(|k| k.protocol == IPPROTO_TCP))
            .collect();
        assert_eq!(tcp.len(), EXAMPLES);
        assert_eq!(tcp.iter().map(|d| d.packets).sum::<u64>(), 24);
        assert_eq!(tcp[0].packets, 2 * (12 - 4));
        let udp: Vec<_> = kept
            .iter()
            .filter(|d| d.key.is_some_and(|k| k.protocol == IPPROTO_UDP))
            .collect();
        assert_eq!(udp.len(), 1);
        assert_eq!(udp[0].packets, 3);
        // The pass's own rows are untouched.
        assert!(rows.iter().all(|d| d.packets <= 3));
    }
}
