//! `syn_retransmits`: connections that fail to set up. A SYN retransmit costs 1 s, then 2 s,
//! 4 s...: the 20-30 s stalls of the incident are a handful of them.

use std::collections::BTreeMap;

use galmanhae_common::retransmit::RetransmitKind;

use super::{Finding, Severity, flows_of};
use crate::model::Evidence;

/// SYN retransmits from which connections failing to set up is high.
const HIGH_SYN: u64 = 3;

pub(super) fn syn_retransmits(evidence: &Evidence) -> Vec<Finding> {
    let mut out = Vec::new();
    for w in &evidence.workloads {
        let name = &w.workload.name;
        // Per remote (as text, the order the report lists them in): SYN retransmits and the
        // connections that had them.
        let mut by_remote: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for f in flows_of(evidence, name) {
            let syn = f.kind(RetransmitKind::Syn);
            if syn > 0 {
                let entry = by_remote.entry(f.remote.to_string()).or_default();
                entry.0 += syn;
                entry.1 += 1;
            }
        }
        let total: u64 = by_remote.values().map(|(syn, _)| syn).sum();
        if total == 0 {
            continue;
        }
        let worst = by_remote
            .iter()
            .max_by_key(|(_, (syn, _))| *syn)
            .map(|(remote, _)| remote.clone())
            .unwrap_or_default();
        let mut lines: Vec<String> = by_remote
            .iter()
            .map(|(remote, (syn, conns))| {
                format!("{remote}: {syn} SYN retransmits on {conns} connections")
            })
            .collect();
        let drops: u64 = evidence
            .drops
            .iter()
            .filter(|d| d.workload.name == *name)
            .map(|d| d.tcp)
            .sum();
        lines.push(format!(
            "{drops} of its TCP packets dropped on this machine in the window"
        ));
        out.push(Finding {
            id: "syn_retransmits",
            severity: if total >= HIGH_SYN {
                Severity::High
            } else {
                Severity::Medium
            },
            workload: name.to_string(),
            flows: by_remote.keys().map(|r| format!("-> {r}")).collect(),
            summary: format!(
                "connections from `{name}` to {worst} fail to set up: {total} SYN retransmits \
                 (each one waits 1 s, 2 s, 4 s... before the next try)"
            ),
            evidence: lines,
            advice: "Check that the remote listens and accepts (listen backlog, \
                     `ss -ltn`), and that no firewall or security group drops the SYNs. \
                     If conntrack insert_failed or drop rise at the same time, see the \
                     conntrack findings; on NATed hosts use MASQUERADE --random-fully."
                .to_owned(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{container, evidence, flow, retransmits, workload};

    fn with_syns(counts: &[u64]) -> Vec<Finding> {
        let app = container("app", 2);
        let flows = counts
            .iter()
            .zip(41_000..)
            .map(|(n, port)| {
                retransmits(
                    flow(&app, port, "198.19.0.2:5432"),
                    RetransmitKind::Syn,
                    *n,
                    0,
                )
            })
            .collect();
        syn_retransmits(&evidence(vec![workload(&app, 100, 1)], flows, Vec::new()))
    }

    #[test]
    fn no_syn_retransmit_no_finding() {
        assert!(with_syns(&[]).is_empty());
        assert!(with_syns(&[0]).is_empty());
    }

    #[test]
    fn three_syn_retransmits_are_high_and_two_medium() {
        assert_eq!(with_syns(&[2])[0].severity, Severity::Medium);
        assert_eq!(with_syns(&[1, 1])[0].severity, Severity::Medium);
        assert_eq!(with_syns(&[2, 1])[0].severity, Severity::High);
    }

    #[test]
    fn syn_retransmits_are_counted_per_remote() {
        let found = with_syns(&[2, 1]);
        let f = &found[0];
        assert_eq!(f.flows, ["-> 198.19.0.2:5432"]);
        assert_eq!(
            f.evidence[0],
            "198.19.0.2:5432: 3 SYN retransmits on 2 connections"
        );
        assert!(
            f.summary
                .contains("to 198.19.0.2:5432 fail to set up: 3 SYN"),
            "{f:?}"
        );
    }
}
