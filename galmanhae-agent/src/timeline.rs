//! diagnose's per-second timeline: retransmits and RTO-stall seconds per owner (namespace and
//! cgroup), one sample per tick, named at the end; and the period of bursts that come back at
//! regular intervals (the incident's "again and again").

use std::collections::VecDeque;

use hashbrown::HashMap;

use galmanhae_common::retransmit::OwnerKey;

use crate::pipeline::Snapshot;

/// Seconds kept: a longer `diagnose` keeps its last hour.
const MAX_SECONDS: usize = 3_600;
/// Bursts needed before a period is claimed, and how regular their starts must be (standard
/// deviation of the gaps over their mean).
const MIN_BURSTS: usize = 3;
const MAX_GAP_SPREAD: f64 = 0.25;

/// One second of one owner.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Second {
    pub(crate) retransmits: u64,
    pub(crate) stall_seconds: f64,
}

/// Per tick, what each owner did in it.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    ticks: VecDeque<HashMap<OwnerKey, Second>>,
    /// Ticks dropped from the front (beyond [`MAX_SECONDS`]).
    pub(crate) dropped: usize,
}

fn owner(netns: u32, cgroup_id: u64) -> OwnerKey {
    OwnerKey {
        netns,
        padding: 0,
        cgroup_id,
    }
}

impl Timeline {
    /// Records the tick between two consecutive snapshots.
    pub(crate) fn record(&mut self, previous: &Snapshot, latest: &Snapshot) {
        let mut tick: HashMap<OwnerKey, Second> = HashMap::new();
        let delta = latest.retransmits.since(&previous.retransmits);
        for (key, counters) in delta.by_flow() {
            tick.entry(owner(key.netns, key.cgroup_id))
                .or_default()
                .retransmits += counters.retransmits;
        }
        for (key, counters) in &delta.overflow {
            tick.entry(*key).or_default().retransmits += counters.retransmits;
        }
        for (key, lost) in latest.time_lost.since(&previous.time_lost) {
            #[expect(clippy::cast_precision_loss, reason = "seconds")]
            let seconds = lost.rto_stall_ns as f64 / 1e9;
            tick.entry(owner(key.netns, key.cgroup_id))
                .or_default()
                .stall_seconds += seconds;
        }
        self.ticks.push_back(tick);
        if self.ticks.len() > MAX_SECONDS {
            self.ticks.pop_front();
            self.dropped += 1;
        }
    }

    /// Every owner's seconds, merged by `name` (several owners can be one workload).
    pub(crate) fn by_name(
        &self,
        mut name: impl FnMut(&OwnerKey) -> String,
    ) -> HashMap<String, Vec<Second>> {
        let mut out: HashMap<String, Vec<Second>> = HashMap::new();
        for (at, tick) in self.ticks.iter().enumerate() {
            for (key, second) in tick {
                let row = out
                    .entry(name(key))
                    .or_insert_with(|| vec![Second::default(); self.ticks.len()]);
                row[at].retransmits += second.retransmits;
                row[at].stall_seconds += second.stall_seconds;
            }
        }
        out
    }
}

/// The period of bursts (runs of seconds with retransmits or stalls after a quiet second),
/// when at least [`MIN_BURSTS`] of them start at regular intervals.
pub(crate) fn burst_period(seconds: &[Second]) -> Option<f64> {
    let active = |s: &Second| s.retransmits > 0 || s.stall_seconds > 0.0;
    let starts: Vec<usize> = (0..seconds.len())
        .filter(|&i| active(&seconds[i]) && (i == 0 || !active(&seconds[i - 1])))
        .collect();
    if starts.len() < MIN_BURSTS {
        return None;
    }
    #[expect(clippy::cast_precision_loss, reason = "seconds")]
    let gaps: Vec<f64> = starts.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
    #[expect(clippy::cast_precision_loss, reason = "a handful of gaps")]
    let count = gaps.len() as f64;
    let mean = gaps.iter().sum::<f64>() / count;
    let spread = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / count).sqrt();
    (mean >= 2.0 && spread / mean <= MAX_GAP_SPREAD).then_some(mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(pattern: &str) -> Vec<Second> {
        pattern
            .chars()
            .map(|c| Second {
                retransmits: u64::from(c == 'r'),
                stall_seconds: if c == 's' { 1.0 } else { 0.0 },
            })
            .collect()
    }

    #[test]
    fn regular_bursts_have_a_period() {
        // Bursts every 5 s, of 1-2 s each, stalls and retransmits alike.
        assert_eq!(burst_period(&seconds("rs...r....ss...r....")), Some(5.0));
    }

    #[test]
    fn irregular_or_too_few_bursts_have_none() {
        assert_eq!(burst_period(&seconds("r.r.........r..r")), None);
        assert_eq!(burst_period(&seconds("r....r.....")), None);
        assert_eq!(burst_period(&seconds("rrrrrrrrrr")), None);
        assert_eq!(burst_period(&seconds("")), None);
    }
}
