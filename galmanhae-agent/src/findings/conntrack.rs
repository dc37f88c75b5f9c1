//! Conntrack causes: `conntrack_full` (new flows dropped), `snat_collision` (insert failures
//! and clashes when SNAT picks ports) and `nat_leak` (untranslated packets leaving the host).

use super::{Finding, Severity};
use crate::report::{DiagnoseReport, FlowReport};

/// Fill level from which the table counts as nearly full.
const NEARLY_FULL: f64 = 0.9;

pub fn table_full(report: &DiagnoseReport) -> Vec<Finding> {
    let mut out = Vec::new();
    for ct in &report.conntrack {
        #[expect(clippy::cast_precision_loss, reason = "a fill ratio")]
        let fill = match (ct.stats.entries, ct.stats.max) {
            (Some(entries), Some(max)) if max > 0 => entries as f64 / max as f64,
            _ => 0.0,
        };
        // A failed insert (a clash) also counts in `drop`: only the rest is a full table.
        let full_drops = ct.stats.drop.saturating_sub(ct.stats.insert_failed);
        if fill < NEARLY_FULL && full_drops == 0 && ct.stats.early_drop == 0 {
            continue;
        }
        out.push(Finding {
            id: "conntrack_full",
            severity: if full_drops > 0 {
                Severity::High
            } else {
                Severity::Medium
            },
            workload: ct.namespace.clone(),
            flows: flows_where(report, |f| f.kinds.syn > 0),
            summary: format!(
                "the conntrack table of {} is {} ({} of {} entries): new connections are dropped",
                ct.namespace,
                if fill >= 1.0 { "full" } else { "nearly full" },
                ct.stats.entries.unwrap_or(0),
                ct.stats.max.unwrap_or(0)
            ),
            evidence: vec![
                format!(
                    "conntrack ({}): {} entries, max {}",
                    ct.stats.source.as_str(),
                    ct.stats.entries.unwrap_or(0),
                    ct.stats.max.unwrap_or(0)
                ),
                format!(
                    "in the window: drop +{}, early_drop +{}, insert_failed +{}",
                    ct.stats.drop, ct.stats.early_drop, ct.stats.insert_failed
                ),
            ],
            advice: format!(
                "Raise net.netfilter.nf_conntrack_max (now {}) and the hash size \
                 (/sys/module/nf_conntrack/parameters/hashsize) to match; find what fills the \
                 table with `conntrack -L | awk '{{print $4}}' | sort | uniq -c`; shorten \
                 timeouts only for states that pile up (e.g. nf_conntrack_tcp_timeout_time_wait).",
                ct.stats.max.unwrap_or(0)
            ),
        });
    }
    out
}

pub fn snat_collision(report: &DiagnoseReport) -> Vec<Finding> {
    let unrandom: Vec<&str> = report
        .nat_audit
        .masquerade
        .iter()
        .filter(|m| !m.random_fully)
        .map(|m| m.rule.as_str())
        .collect();
    let mut out = Vec::new();
    for ct in &report.conntrack {
        if ct.stats.insert_failed == 0 && ct.stats.clash_resolve == 0 {
            continue;
        }
        let mut evidence = vec![format!(
            "conntrack ({}) in the window: insert_failed +{}, clash_resolve +{}, drop +{}",
            ct.stats.source.as_str(),
            ct.stats.insert_failed,
            ct.stats.clash_resolve,
            ct.stats.drop
        )];
        evidence.extend(
            unrandom
                .iter()
                .map(|r| format!("MASQUERADE without --random-fully: {r}")),
        );
        out.push(Finding {
            id: "snat_collision",
            severity: if ct.stats.insert_failed > 0 {
                Severity::High
            } else {
                Severity::Medium
            },
            workload: ct.namespace.clone(),
            // A SYN that lost the race leaves no conntrack entry to show its NAT side: the
            // flow's bridge address says it was translated.
            flows: flows_where(report, |f| {
                (f.kinds.syn > 0 || f.failed_attempts > 0)
                    && (f.nat.is_some()
                        || f.local
                            .parse::<std::net::SocketAddr>()
                            .is_ok_and(|local| report.nat_audit.masqueraded(local.ip())))
            }),
            summary: format!(
                "conntrack in {} failed to insert {} new connections and resolved {} clashes: \
                 concurrent connections raced for the same NAT tuple",
                ct.namespace, ct.stats.insert_failed, ct.stats.clash_resolve
            ),
            evidence,
            advice: "Randomise SNAT source ports fully: add --random-fully to the MASQUERADE \
                     rules (Docker: `iptables -t nat -I POSTROUTING -s <bridge subnet> ! -o \
                     docker0 -j MASQUERADE --random-fully`, or Docker >= 25 with nftables), \
                     and spread connections over more source addresses or destinations."
                .to_owned(),
        });
    }
    out
}

pub fn nat_leak(report: &DiagnoseReport) -> Vec<Finding> {
    let invalid: u64 = report.conntrack.iter().map(|c| c.stats.invalid).sum();
    report
        .leaks
        .iter()
        .filter(|l| l.packets > 0)
        .map(|l| Finding {
            id: "nat_leak",
            severity: Severity::High,
            workload: l.workload.clone(),
            flows: l.examples.clone(),
            summary: format!(
                "{} packets of `{}` left the host through {} with their untranslated bridge \
                 address: conntrack marked them INVALID and NAT skipped them",
                l.packets, l.workload, l.interface
            ),
            evidence: vec![
                format!(
                    "{} packets out of {} with a bridge source",
                    l.packets, l.interface
                ),
                format!("conntrack invalid +{invalid} in the window"),
            ],
            advice: "Drop INVALID packets before they leave (`iptables -I DOCKER-USER -m \
                     conntrack --ctstate INVALID -j DROP`), or accept out-of-window segments \
                     with net.netfilter.nf_conntrack_tcp_be_liberal=1; the remote (or the \
                     cloud network) otherwise drops them and the sender retransmits."
                .to_owned(),
        })
        .collect()
}

/// The first five flows of any workload that `suffers`, as `workload: local -> remote`.
fn flows_where(report: &DiagnoseReport, suffers: impl Fn(&FlowReport) -> bool) -> Vec<String> {
    report
        .flows
        .iter()
        .filter(|f| suffers(f))
        .map(|f| format!("{}: {} -> {}", f.workload, f.local, f.remote))
        .take(5)
        .collect()
}
