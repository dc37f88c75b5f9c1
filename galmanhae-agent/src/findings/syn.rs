//! `syn_retransmits`: connections that fail to set up. A SYN retransmit costs 1 s, then 2 s,
//! 4 s...: the 20-30 s stalls of the incident are a handful of them.

use std::collections::BTreeMap;

use super::{Finding, Severity};
use crate::report::DiagnoseReport;

pub fn syn_retransmits(report: &DiagnoseReport) -> Vec<Finding> {
    let mut out = Vec::new();
    for w in &report.workloads {
        // Per remote: SYN retransmits and the connections that had them.
        let mut by_remote: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for f in report.flows.iter().filter(|f| f.workload == w.name) {
            if f.kinds.syn > 0 {
                let entry = by_remote.entry(f.remote.as_str()).or_default();
                entry.0 += f.kinds.syn;
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
            .map(|(remote, _)| (*remote).to_owned())
            .unwrap_or_default();
        let mut evidence: Vec<String> = by_remote
            .iter()
            .map(|(remote, (syn, conns))| {
                format!("{remote}: {syn} SYN retransmits on {conns} connections")
            })
            .collect();
        let drops: u64 = report
            .drops
            .iter()
            .filter(|d| d.workload == w.name && d.tcp > 0)
            .map(|d| d.tcp)
            .sum();
        evidence.push(format!(
            "{drops} of its TCP packets dropped on this machine in the window"
        ));
        out.push(Finding {
            id: "syn_retransmits",
            severity: if total >= 3 {
                Severity::High
            } else {
                Severity::Medium
            },
            workload: w.name.clone(),
            flows: by_remote.keys().map(|r| format!("-> {r}")).collect(),
            summary: format!(
                "connections from `{}` to {worst} fail to set up: {total} SYN retransmits \
                 (each one waits 1 s, 2 s, 4 s... before the next try)",
                w.name
            ),
            evidence,
            advice: "Check that the remote listens and accepts (listen backlog, \
                     `ss -ltn`), and that no firewall or security group drops the SYNs. \
                     If conntrack insert_failed or drop rise at the same time, see the \
                     conntrack findings; on NATed hosts use MASQUERADE --random-fully."
                .to_owned(),
        });
    }
    out
}
