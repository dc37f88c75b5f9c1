//! Conntrack causes: `conntrack_full` (new flows dropped), `snat_collision` (insert failures
//! and clashes when SNAT picks ports) and `nat_leak` (untranslated packets leaving the host).

use galmanhae_common::retransmit::RetransmitKind;

use super::{Finding, Severity};
use crate::model::{Evidence, Flow};

/// Fill level from which the table counts as nearly full.
const NEARLY_FULL: f64 = 0.9;

pub(super) fn table_full(evidence: &Evidence) -> Vec<Finding> {
    let mut out = Vec::new();
    for ct in evidence.conntrack.iter().filter(|c| c.busy()) {
        let fill = ct.fill();
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
            workload: ct.namespace.name().to_owned(),
            flows: flows_where(evidence, |f| f.kind(RetransmitKind::Syn) > 0),
            summary: format!(
                "the conntrack table of {} is {} ({} of {} entries): new connections are dropped",
                ct.namespace.name(),
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

pub(super) fn snat_collision(evidence: &Evidence) -> Vec<Finding> {
    let unrandom: Vec<&str> = evidence
        .nat_audit
        .masquerade
        .iter()
        .filter(|m| !m.random_fully)
        .map(|m| m.rule.as_str())
        .collect();
    let mut out = Vec::new();
    for ct in evidence.conntrack.iter().filter(|c| c.busy()) {
        if ct.stats.insert_failed == 0 && ct.stats.clash_resolve == 0 {
            continue;
        }
        let mut lines = vec![format!(
            "conntrack ({}) in the window: insert_failed +{}, clash_resolve +{}, drop +{}",
            ct.stats.source.as_str(),
            ct.stats.insert_failed,
            ct.stats.clash_resolve,
            ct.stats.drop
        )];
        lines.extend(
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
            workload: ct.namespace.name().to_owned(),
            // A SYN that lost the race leaves no conntrack entry to show its NAT side: the
            // flow's bridge address says it was translated.
            flows: flows_where(evidence, |f| {
                (f.kind(RetransmitKind::Syn) > 0 || f.counters.failed > 0)
                    && (f.nat.is_some() || evidence.nat_audit.masqueraded(f.local.ip()))
            }),
            summary: format!(
                "conntrack in {} failed to insert {} new connections and resolved {} clashes: \
                 concurrent connections raced for the same NAT tuple",
                ct.namespace.name(),
                ct.stats.insert_failed,
                ct.stats.clash_resolve
            ),
            evidence: lines,
            advice: "Randomise SNAT source ports fully: add --random-fully to the MASQUERADE \
                     rules (Docker: `iptables -t nat -I POSTROUTING -s <bridge subnet> ! -o \
                     docker0 -j MASQUERADE --random-fully`, or Docker >= 25 with nftables), \
                     and spread connections over more source addresses or destinations."
                .to_owned(),
        });
    }
    out
}

pub(super) fn nat_leak(evidence: &Evidence) -> Vec<Finding> {
    let invalid: u64 = evidence
        .conntrack
        .iter()
        .filter(|c| c.busy())
        .map(|c| c.stats.invalid)
        .sum();
    evidence
        .leaks
        .iter()
        .filter(|l| l.packets > 0)
        .map(|l| Finding {
            id: "nat_leak",
            severity: Severity::High,
            workload: l.owner.to_string(),
            flows: l.examples.clone(),
            summary: format!(
                "{} packets of `{}` left the host through {} with their untranslated bridge \
                 address: conntrack marked them INVALID and NAT skipped them",
                l.packets, l.owner, l.interface
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
fn flows_where(evidence: &Evidence, suffers: impl Fn(&Flow) -> bool) -> Vec<String> {
    evidence
        .flows
        .iter()
        .filter(|f| suffers(f))
        .map(|f| format!("{}: {} -> {}", f.workload.name, f.local, f.remote))
        .take(5)
        .collect()
}

#[cfg(test)]
mod tests {
    use galmanhae_common::retransmit::RetransmitKind;

    use super::*;
    use crate::model::{
        Namespace,
        testing::{conntrack, container, flow, leak, masquerade, retransmits},
    };

    fn with_conntrack(ct: crate::model::Conntrack) -> Evidence {
        Evidence {
            conntrack: vec![ct],
            ..Evidence::default()
        }
    }

    fn severities(findings: &[Finding]) -> Vec<Severity> {
        findings.iter().map(|f| f.severity).collect()
    }

    #[test]
    fn a_table_at_ninety_percent_is_nearly_full_and_just_below_is_not() {
        let below = table_full(&with_conntrack(conntrack(Namespace::Host, 899, 1000)));
        assert!(below.is_empty(), "{below:?}");
        let at = table_full(&with_conntrack(conntrack(Namespace::Host, 900, 1000)));
        assert_eq!(severities(&at), [Severity::Medium]);
        assert_eq!(at[0].workload, "host");
        assert!(
            at[0].summary.contains("is nearly full (900 of 1000"),
            "{at:?}"
        );
        let full = table_full(&with_conntrack(conntrack(Namespace::Host, 1000, 1000)));
        assert!(
            full[0].summary.contains("is full (1000 of 1000"),
            "{full:?}"
        );
    }

    #[test]
    fn dropped_new_connections_are_high_but_a_lost_insert_race_is_not_a_full_table() {
        let mut ct = conntrack(Namespace::Workload("app".to_owned()), 10, 1000);
        ct.stats.drop = 1;
        ct.stats.insert_failed = 1;
        assert!(table_full(&with_conntrack(ct.clone())).is_empty());
        ct.stats.drop = 2;
        let found = table_full(&with_conntrack(ct.clone()));
        assert_eq!(severities(&found), [Severity::High]);
        assert_eq!(found[0].workload, "app");
        ct.stats.drop = 0;
        ct.stats.insert_failed = 0;
        ct.stats.early_drop = 1;
        assert_eq!(
            severities(&table_full(&with_conntrack(ct))),
            [Severity::Medium]
        );
    }

    #[test]
    fn a_full_table_names_the_flows_that_retry_syns() {
        let app = container("app", 2);
        let mut evidence = with_conntrack(conntrack(Namespace::Host, 1000, 1000));
        evidence.flows = vec![
            retransmits(
                flow(&app, 41_000, "198.19.0.2:5432"),
                RetransmitKind::Syn,
                1,
                0,
            ),
            retransmits(
                flow(&app, 41_001, "198.19.0.3:80"),
                RetransmitKind::Rto,
                1,
                100,
            ),
        ];
        let found = table_full(&evidence);
        assert_eq!(
            found[0].flows,
            ["app: 198.18.100.2:41000 -> 198.19.0.2:5432"]
        );
    }

    #[test]
    fn insert_failures_or_clashes_are_snat_collisions() {
        let quiet = conntrack(Namespace::Host, 10, 1000);
        assert!(snat_collision(&with_conntrack(quiet.clone())).is_empty());
        let mut clash = quiet.clone();
        clash.stats.clash_resolve = 1;
        assert_eq!(
            severities(&snat_collision(&with_conntrack(clash))),
            [Severity::Medium]
        );
        let mut failed = quiet;
        failed.stats.insert_failed = 1;
        assert_eq!(
            severities(&snat_collision(&with_conntrack(failed))),
            [Severity::High]
        );
    }

    #[test]
    fn snat_collisions_cite_unrandomised_rules_and_translated_syn_flows() {
        let app = container("app", 2);
        let mut ct = conntrack(Namespace::Host, 10, 1000);
        ct.stats.insert_failed = 3;
        let mut evidence = with_conntrack(ct);
        evidence.nat_audit.masquerade = vec![
            masquerade("198.18.100.0/24", false),
            masquerade("172.18.0.0/16", true),
        ];
        evidence.flows = vec![
            // From a masqueraded subnet, no conntrack entry (the SYN lost the race).
            retransmits(
                flow(&app, 41_000, "198.19.0.2:5432"),
                RetransmitKind::Syn,
                2,
                0,
            ),
            // Not a SYN: not a candidate.
            retransmits(
                flow(&app, 41_001, "198.19.0.2:5432"),
                RetransmitKind::Rto,
                2,
                100,
            ),
        ];
        let found = snat_collision(&evidence);
        assert_eq!(
            found[0].flows,
            ["app: 198.18.100.2:41000 -> 198.19.0.2:5432"]
        );
        let unrandom: Vec<_> = found[0]
            .evidence
            .iter()
            .filter(|e| e.starts_with("MASQUERADE without --random-fully"))
            .collect();
        assert_eq!(unrandom.len(), 1, "{:?}", found[0].evidence);
        assert!(unrandom[0].contains("198.18.100.0/24"));
    }

    #[test]
    fn untranslated_packets_are_a_nat_leak() {
        let mut evidence = Evidence {
            leaks: vec![leak("app", "ens3", 0)],
            ..Evidence::default()
        };
        assert!(nat_leak(&evidence).is_empty());
        evidence.leaks = vec![leak("app", "ens3", 1)];
        let mut ct = conntrack(Namespace::Host, 10, 1000);
        ct.stats.invalid = 7;
        evidence.conntrack = vec![ct];
        let found = nat_leak(&evidence);
        assert_eq!(severities(&found), [Severity::High]);
        assert_eq!(found[0].workload, "app");
        assert!(
            found[0]
                .evidence
                .contains(&"conntrack invalid +7 in the window".to_owned())
        );
    }
}
