//! Time lost: `rto_stalls` (a workload's flows sat in RTO recovery for seconds), and the time
//! every other finding's workload lost, cited in its evidence with the knobs that bound it.
//! RTO backoff is what turns a few lost packets into seconds: from the 200 ms minimum,
//! timeouts in a row double (0.2 + 0.4 + 0.8 + ... = 25.4 s after 7); a SYN waits 1, 2, 4... s.

use super::{Finding, Severity};
use crate::report::{DiagnoseReport, TimeLostReport};

/// RTO stall seconds in a window from which a workload gets an `rto_stalls` finding; and from
/// which (or from this many timeouts in a row) it is high.
const STALL_SECONDS: f64 = 1.0;
const HIGH_STALL_SECONDS: f64 = 5.0;
const HIGH_TIMEOUTS_IN_A_ROW: u32 = 4;

const RTO_KNOBS: &str = "Bound the stall: a client read timeout (connection pool, driver) \
    shorter than the backoff, with connections validated before use; on Linux 6.15+ \
    `net.ipv4.tcp_rto_max_ms` (or the TCP_RTO_MAX_MS socket option) caps the backoff below its \
    120 s default.";
const SYN_KNOBS: &str = "Bound the wait for a connection: the pool's connect timeout (a few \
    seconds, then another server or a retry), and `net.ipv4.tcp_syn_retries` (default 6: a \
    connect gives up after 127 s).";

pub fn rto_stalls(report: &DiagnoseReport) -> Vec<Finding> {
    let mut out = Vec::new();
    for w in &report.workloads {
        let t = &w.time_lost;
        if t.rto_stall_seconds < STALL_SECONDS {
            continue;
        }
        let mut flows: Vec<_> = report
            .flows
            .iter()
            .filter(|f| f.workload == w.name && f.time_lost.rto_stall_seconds > 0.0)
            .collect();
        flows.sort_by(|a, b| {
            b.time_lost
                .rto_stall_seconds
                .total_cmp(&a.time_lost.rto_stall_seconds)
        });
        let mut evidence: Vec<String> = flows
            .iter()
            .take(5)
            .map(|f| format!("{} -> {}: {}", f.local, f.remote, stall_words(&f.time_lost)))
            .collect();
        evidence.push(backoff_words(t.max_consecutive_timeouts));
        let worst = flows
            .first()
            .map_or(String::new(), |f| format!(" on {}", f.remote));
        out.push(Finding {
            id: "rto_stalls",
            severity: severity(t),
            workload: w.name.clone(),
            flows: flows
                .iter()
                .take(5)
                .map(|f| format!("{} -> {}", f.local, f.remote))
                .collect(),
            summary: format!(
                "{} `{}` lost {:.1} s to RTO stalls{worst}, longest {:.1} s ({} timeouts in a row)",
                w.kind,
                w.name,
                t.rto_stall_seconds,
                t.longest_rto_stall_seconds,
                t.max_consecutive_timeouts
            ),
            evidence,
            advice: format!(
                "The other findings for `{}` name the cause of the losses; the seconds come from \
                 the backoff. {RTO_KNOBS}",
                w.name
            ),
        });
    }
    out
}

/// Adds to each finding the time its workload lost, and the knobs that bound it.
pub fn cite(report: &DiagnoseReport, findings: &mut [Finding]) {
    for f in findings.iter_mut().filter(|f| f.id != "rto_stalls") {
        let Some(w) = report.workloads.iter().find(|w| w.name == f.workload) else {
            continue;
        };
        let t = &w.time_lost;
        if t.rto_stall_seconds > 0.0 {
            f.evidence.push(format!("time lost: {}", stall_words(t)));
            f.advice.push(' ');
            f.advice.push_str(RTO_KNOBS);
        }
        if t.syn_retry_seconds > 0.0 {
            f.evidence.push(format!(
                "time lost: {:.1} s waiting for SYN retries ({} SYN timeouts)",
                t.syn_retry_seconds, t.syn_timeouts
            ));
            f.advice.push(' ');
            f.advice.push_str(SYN_KNOBS);
        }
    }
}

fn severity(t: &TimeLostReport) -> Severity {
    if t.rto_stall_seconds >= HIGH_STALL_SECONDS
        || t.max_consecutive_timeouts >= HIGH_TIMEOUTS_IN_A_ROW
    {
        Severity::High
    } else {
        Severity::Medium
    }
}

fn stall_words(t: &TimeLostReport) -> String {
    format!(
        "{:.1} s in RTO recovery over {} recoveries, longest {:.1} s ({} timeouts in a row)",
        t.rto_stall_seconds,
        t.rto_recoveries,
        t.longest_rto_stall_seconds,
        t.max_consecutive_timeouts
    )
}

/// What `n` timeouts in a row cost at the minimum RTO: the backoff that produced the stall.
fn backoff_words(n: u32) -> String {
    let seconds = 0.2 * (2_f64.powi(i32::try_from(n.min(30)).unwrap_or(30)) - 1.0);
    format!(
        "{n} timeouts in a row back off to {seconds:.1} s even from the 200 ms minimum RTO \
         (each doubles the wait)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(stall: f64, in_a_row: u32) -> TimeLostReport {
        TimeLostReport {
            rto_stall_seconds: stall,
            longest_rto_stall_seconds: stall,
            rto_recoveries: 1,
            max_consecutive_timeouts: in_a_row,
            ..TimeLostReport::default()
        }
    }

    #[test]
    fn seconds_or_a_long_backoff_make_a_stall_high() {
        assert_eq!(severity(&lost(1.5, 2)), Severity::Medium);
        assert_eq!(severity(&lost(5.0, 2)), Severity::High);
        assert_eq!(severity(&lost(3.0, 4)), Severity::High);
    }

    #[test]
    fn backoff_is_the_doubling_sum_from_the_minimum_rto() {
        assert!(backoff_words(7).contains("25.4 s"), "{}", backoff_words(7));
        assert!(backoff_words(1).contains("0.2 s"));
        assert!(stall_words(&lost(12.9, 6)).contains("12.9 s in RTO recovery over 1"));
    }
}
