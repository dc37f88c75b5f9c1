//! Time lost to retransmission as series: per remote the seconds in RTO recovery and waiting
//! for SYN retries, per workload the durations of completed recoveries (a histogram). They
//! fold from the same [`crate::pipeline::Summary`] as diagnose's `time_lost`.

use std::time::Instant;

use super::{Exporter, OnlyWorkload, RemoteLabels, StallBucket};
use crate::collect::time_lost::TimeLost;

impl Exporter {
    /// Adds a flow's time lost under the remote label its retransmits were counted under.
    pub(super) fn count_time_lost(
        &mut self,
        workload: &str,
        remote: String,
        lost: &TimeLost,
        now: Instant,
    ) {
        if lost.is_zero() {
            return;
        }
        let labels = RemoteLabels {
            workload: workload.to_owned(),
            remote,
        };
        if lost.rto_stall_ns > 0 {
            self.series
                .rto_stall
                .add(labels.clone(), lost.rto_stall_ns, now);
        }
        if lost.syn_retry_ns > 0 {
            self.series.syn_retry.add(labels, lost.syn_retry_ns, now);
        }
        for (bucket, count) in lost.stall_buckets.iter().enumerate() {
            if *count > 0 {
                let labels = StallBucket {
                    workload: workload.to_owned(),
                    bucket,
                };
                self.series.stall_buckets.add(labels, *count, now);
            }
        }
        if lost.completed_stall_ns > 0 {
            let labels = OnlyWorkload {
                workload: workload.to_owned(),
            };
            self.series
                .stall_sum
                .add(labels, lost.completed_stall_ns, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::{Families, Lifecycle as _, encode::render_families};

    #[test]
    fn seconds_and_the_stall_histogram_render_as_prometheus_reads_them() {
        let mut families = Families::default();
        let now = Instant::now();
        let remote = RemoteLabels {
            workload: "app".to_owned(),
            remote: "198.19.0.2:5432".to_owned(),
        };
        families.rto_stall.add(remote.clone(), 2_909_000_000, now);
        families.syn_retry.add(remote, 3_000_000_000, now);
        for (bucket, count) in [(4, 1), (9, 2)] {
            let labels = StallBucket {
                workload: "app".to_owned(),
                bucket,
            };
            families.stall_buckets.add(labels, count, now);
        }
        let sum = OnlyWorkload {
            workload: "app".to_owned(),
        };
        families.stall_sum.add(sum, 2_909_000_000, now);
        families.settle();
        let text = render_families(Arc::new(families), false).expect("renders");
        for line in [
            "galmanhae_tcp_rto_stall_seconds_total{workload=\"app\",remote=\"198.19.0.2:5432\"} 2.909",
            "galmanhae_tcp_syn_retry_seconds_total{workload=\"app\",remote=\"198.19.0.2:5432\"} 3.0",
            "galmanhae_tcp_rto_stall_duration_seconds_bucket{workload=\"app\",le=\"2\"} 0",
            "galmanhae_tcp_rto_stall_duration_seconds_bucket{workload=\"app\",le=\"5\"} 1",
            "galmanhae_tcp_rto_stall_duration_seconds_bucket{workload=\"app\",le=\"60\"} 1",
            "galmanhae_tcp_rto_stall_duration_seconds_bucket{workload=\"app\",le=\"+Inf\"} 3",
            "galmanhae_tcp_rto_stall_duration_seconds_sum{workload=\"app\"} 2.909",
            "galmanhae_tcp_rto_stall_duration_seconds_count{workload=\"app\"} 3",
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
    }
}
