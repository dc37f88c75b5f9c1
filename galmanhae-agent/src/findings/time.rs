//! Time lost: `rto_stalls` (a workload's flows sat in RTO recovery for seconds), and the time
//! every other finding's workload lost, cited in its evidence with the knobs that bound it.
//! RTO backoff is what turns a few lost packets into seconds: from the 200 ms minimum,
//! timeouts in a row double (0.2 + 0.4 + 0.8 + ... = 25.4 s after 7); a SYN waits 1, 2, 4... s.

use super::{Finding, Severity, flows_of};
use crate::model::{Evidence, TimeLostSeconds};

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

pub(super) fn rto_stalls(evidence: &Evidence) -> Vec<Finding> {
    let mut out = Vec::new();
    for w in &evidence.workloads {
        let name = &w.workload.name;
        let t = &w.lost();
        if t.rto_stall_seconds < STALL_SECONDS {
            continue;
        }
        let mut flows: Vec<_> = flows_of(evidence, name)
            .map(|f| (f, f.lost()))
            .filter(|(_, lost)| lost.rto_stall_seconds > 0.0)
            .collect();
        flows.sort_by(|(_, a), (_, b)| b.rto_stall_seconds.total_cmp(&a.rto_stall_seconds));
        let mut lines: Vec<String> = flows
            .iter()
            .take(5)
            .map(|(f, lost)| format!("{} -> {}: {}", f.local, f.remote, stall_words(lost)))
            .collect();
        lines.push(backoff_words(t.max_consecutive_timeouts));
        let worst = flows
            .first()
            .map_or(String::new(), |(f, _)| format!(" on {}", f.remote));
        out.push(Finding {
            id: "rto_stalls",
            severity: severity(t),
            workload: name.to_string(),
            flows: flows
                .iter()
                .take(5)
                .map(|(f, _)| format!("{} -> {}", f.local, f.remote))
                .collect(),
            summary: format!(
                "{} `{name}` lost {:.1} s to RTO stalls{worst}, longest {:.1} s ({} timeouts in a row)",
                w.workload.kind.as_str(),
                t.rto_stall_seconds,
                t.longest_rto_stall_seconds,
                t.max_consecutive_timeouts
            ),
            evidence: lines,
            advice: format!(
                "The other findings for `{name}` name the cause of the losses; the seconds come \
                 from the backoff. {RTO_KNOBS}"
            ),
        });
    }
    out
}

/// Adds to each finding the time its workload lost, and the knobs that bound it.
pub(super) fn cite(evidence: &Evidence, findings: &mut [Finding]) {
    for f in findings.iter_mut().filter(|f| f.id != "rto_stalls") {
        let Some(w) = evidence
            .workloads
            .iter()
            .find(|w| *w.workload.name == *f.workload)
        else {
            continue;
        };
        let t = &w.lost();
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

fn severity(t: &TimeLostSeconds) -> Severity {
    if t.rto_stall_seconds >= HIGH_STALL_SECONDS
        || t.max_consecutive_timeouts >= HIGH_TIMEOUTS_IN_A_ROW
    {
        Severity::High
    } else {
        Severity::Medium
    }
}

fn stall_words(t: &TimeLostSeconds) -> String {
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
    use crate::model::testing::{container, evidence, flow, stalled, workload};

    fn lost(stall: f64, in_a_row: u32) -> TimeLostSeconds {
        TimeLostSeconds {
            rto_stall_seconds: stall,
            longest_rto_stall_seconds: stall,
            rto_recoveries: 1,
            max_consecutive_timeouts: in_a_row,
            ..TimeLostSeconds::default()
        }
    }

    /// `app` stalled `ms` in RTO recovery, `in_a_row` timeouts in a row, on one flow.
    fn app(ms: u64, in_a_row: u32) -> Evidence {
        let app = container("app", 2);
        let mut w = workload(&app, 1000, 5);
        w.time_lost = stalled(ms, in_a_row);
        let mut f = flow(&app, 41_000, "198.19.0.2:5432");
        f.time_lost = stalled(ms, in_a_row);
        evidence(vec![w], vec![f], Vec::new())
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

    #[test]
    fn a_second_of_stalls_is_a_finding_and_just_under_is_not() {
        assert!(rto_stalls(&app(999, 2)).is_empty());
        let found = rto_stalls(&app(1000, 2));
        assert_eq!(found[0].severity, Severity::Medium);
        assert_eq!(found[0].flows, ["198.18.100.2:41000 -> 198.19.0.2:5432"]);
        assert!(
            found[0]
                .summary
                .contains("lost 1.0 s to RTO stalls on 198.19.0.2:5432")
        );
    }

    #[test]
    fn five_seconds_or_four_timeouts_in_a_row_are_high() {
        assert_eq!(rto_stalls(&app(4999, 3))[0].severity, Severity::Medium);
        assert_eq!(rto_stalls(&app(5000, 3))[0].severity, Severity::High);
        assert_eq!(rto_stalls(&app(1000, 4))[0].severity, Severity::High);
    }

    #[test]
    fn other_findings_cite_the_time_their_workload_lost() {
        let mut evidence = app(2500, 3);
        evidence.workloads[0].time_lost.syn_retry_ns = 3_000_000_000;
        evidence.workloads[0].time_lost.syn_timeouts = 2;
        let finding = |id, workload: &str| Finding {
            id,
            severity: Severity::High,
            workload: workload.to_owned(),
            flows: Vec::new(),
            summary: String::new(),
            evidence: Vec::new(),
            advice: "Fix it.".to_owned(),
        };
        let mut findings = [finding("local_drops", "app"), finding("local_drops", "db")];
        cite(&evidence, &mut findings);
        assert_eq!(
            findings[0].evidence,
            [
                "time lost: 2.5 s in RTO recovery over 1 recoveries, longest 2.5 s (3 timeouts \
                 in a row)",
                "time lost: 3.0 s waiting for SYN retries (2 SYN timeouts)",
            ]
        );
        assert!(findings[0].advice.starts_with("Fix it. Bound the stall"));
        assert!(findings[0].advice.ends_with(SYN_KNOBS));
        assert!(findings[1].evidence.is_empty(), "db lost no time");
    }
}
