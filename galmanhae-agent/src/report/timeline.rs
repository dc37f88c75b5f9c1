//! The report's timeline: per second, the retransmits and RTO-stall seconds of the workloads
//! that had the most, with the period of bursts that repeat; and its sparkline rows.

use hashbrown::HashMap;

use serde::Serialize;

use crate::timeline::{Second, burst_period};

/// Workloads the timeline shows.
const TOP: usize = 5;
/// Columns of a sparkline: longer windows are folded, each column the largest of its seconds.
const COLUMNS: usize = 60;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct TimelineReport {
    /// Seconds the rows cover (the window's last hour at most).
    pub(crate) seconds: usize,
    /// Seconds of a longer window left out at its start.
    pub(crate) dropped_seconds: usize,
    pub(crate) workloads: Vec<TimelineRow>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct TimelineRow {
    pub(crate) workload: String,
    pub(crate) retransmits: Vec<u64>,
    pub(crate) stall_seconds: Vec<f64>,
    /// Seconds between the starts of bursts that repeat at regular intervals, if they do.
    pub(crate) period_s: Option<f64>,
}

impl TimelineReport {
    /// The rows of the [`TOP`] workloads by stall, then retransmits.
    pub(crate) fn new(by_name: HashMap<String, Vec<Second>>, dropped_seconds: usize) -> Self {
        let seconds = by_name.values().map(Vec::len).max().unwrap_or(0);
        let mut rows: Vec<TimelineRow> = by_name
            .into_iter()
            .map(|(workload, row)| TimelineRow {
                period_s: burst_period(&row),
                retransmits: row.iter().map(|s| s.retransmits).collect(),
                stall_seconds: row
                    .iter()
                    .map(|s| (s.stall_seconds * 1000.0).round() / 1000.0)
                    .collect(),
                workload,
            })
            .filter(|r| {
                r.retransmits.iter().any(|n| *n > 0) || r.stall_seconds.iter().any(|s| *s > 0.0)
            })
            .collect();
        let weight = |r: &TimelineRow| {
            (
                r.stall_seconds.iter().sum::<f64>(),
                r.retransmits.iter().sum::<u64>(),
            )
        };
        rows.sort_by(|a, b| {
            let (sa, ra) = weight(a);
            let (sb, rb) = weight(b);
            sb.total_cmp(&sa)
                .then(rb.cmp(&ra))
                .then(a.workload.cmp(&b.workload))
        });
        rows.truncate(TOP);
        Self {
            seconds,
            dropped_seconds,
            workloads: rows,
        }
    }
}

/// `values` as at most [`COLUMNS`] bars, scaled to their largest; a space where a column is 0.
pub(crate) fn sparkline(values: &[f64]) -> String {
    let per_column = values.len().div_ceil(COLUMNS).max(1);
    let columns: Vec<f64> = values
        .chunks(per_column)
        .map(|c| c.iter().copied().fold(0.0, f64::max))
        .collect();
    let top = columns.iter().copied().fold(0.0, f64::max);
    columns
        .iter()
        .map(|v| {
            if *v <= 0.0 || top <= 0.0 {
                ' '
            } else {
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "an index from 0 to 7"
                )]
                let bar = ((v / top) * 7.0).round() as usize;
                BARS[bar.min(7)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_to_the_largest_and_fold_long_windows() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0]), " ▃▅█");
        assert_eq!(sparkline(&[]), "");
        let long = vec![1.0; 600];
        assert_eq!(sparkline(&long).chars().count(), 60);
    }

    #[test]
    fn rows_keep_the_workloads_that_lost_most() {
        let quiet = vec![Second::default(); 4];
        let lossy = vec![
            Second {
                retransmits: 3,
                stall_seconds: 0.0,
            };
            4
        ];
        let stalled = vec![
            Second {
                retransmits: 1,
                stall_seconds: 1.0,
            };
            4
        ];
        let report = TimelineReport::new(
            [("quiet", quiet), ("lossy", lossy), ("stalled", stalled)]
                .into_iter()
                .map(|(n, r)| (n.to_owned(), r))
                .collect(),
            0,
        );
        let names: Vec<&str> = report
            .workloads
            .iter()
            .map(|r| r.workload.as_str())
            .collect();
        assert_eq!(names, ["stalled", "lossy"]);
        assert_eq!(report.seconds, 4);
    }
}
