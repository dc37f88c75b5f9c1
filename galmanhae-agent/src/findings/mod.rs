//! From evidence to findings: each rule is a pure function of [`Evidence`] (workloads, flows,
//! drops, conntrack, NAT audit, paths, leaks) that says what is wrong, for whom, why it thinks
//! so and what to change. One file per family of causes; `diagnose` prints them, `run`
//! serves them.

mod conntrack;
mod drops;
mod mtu;
mod syn;
mod time;

use serde::Serialize;

use crate::model::{Drop, DropReason, Evidence};

/// One diagnosed problem. `id` values are a contract (see docs/findings.md).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Finding {
    pub(crate) id: &'static str,
    pub(crate) severity: Severity,
    pub(crate) workload: String,
    pub(crate) flows: Vec<String>,
    pub(crate) summary: String,
    pub(crate) evidence: Vec<String>,
    pub(crate) advice: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// Causes before symptoms: at equal severity a finding that names a mechanism (a full table,
/// a black hole) ranks above one that only locates the loss.
const SPECIFICITY: [&str; 8] = [
    "conntrack_full",
    "snat_collision",
    "nat_leak",
    "path_mtu",
    "local_drops",
    "syn_retransmits",
    "loss_beyond_host",
    "rto_stalls",
];

/// Every finding the evidence supports, most important first.
pub(crate) fn evaluate(evidence: &Evidence) -> Vec<Finding> {
    let mut findings = Vec::new();
    findings.extend(conntrack::table_full(evidence));
    findings.extend(conntrack::snat_collision(evidence));
    findings.extend(conntrack::nat_leak(evidence));
    findings.extend(mtu::path_mtu(evidence));
    findings.extend(drops::local_drops(evidence));
    findings.extend(syn::syn_retransmits(evidence));
    findings.extend(drops::loss_beyond_host(evidence));
    time::cite(evidence, &mut findings);
    findings.extend(time::rto_stalls(evidence));
    findings.sort_by_key(|f| {
        (
            std::cmp::Reverse(f.severity),
            SPECIFICITY.iter().position(|id| *id == f.id),
        )
    });
    findings
}

/// Drops of `workload` where it matters: in its own namespace or on the host, not at the far
/// end of its flows (a peer's namespace on this machine stands for a remote host).
fn own_drops<'a>(evidence: &'a Evidence, workload: &'a str) -> impl Iterator<Item = &'a Drop> {
    evidence
        .drops
        .iter()
        .filter(move |d| *d.workload.name == *workload && d.site.is_local())
}

/// Functions that free a closing socket's queues. Newer kernels name these drops
/// (`SOCKET_CLOSE`, `QUEUE_PURGE`); older ones (6.1, seen in the VM test) say `NOT_SPECIFIED`,
/// and unread data at close would read as a local drop.
const SOCKET_TEARDOWN: [&str; 8] = [
    "sk_stream_kill_queues",
    "inet_sock_destruct",
    "inet_csk_destroy_sock",
    "tcp_write_queue_purge",
    "__skb_queue_purge",
    "skb_queue_purge",
    "__tcp_close",
    "tcp_close",
];

/// Packets of the workload's own traffic (TCP and UDP) lost at this site; 0 for TCP's
/// bookkeeping drops (also unnamed ones at a socket's teardown) and for neighbour discovery,
/// multicast and ICMP.
fn lost_packets(drop: &Drop) -> u64 {
    let teardown =
        drop.reason == DropReason::NOT_SPECIFIED && drop.location.is_any_of(&SOCKET_TEARDOWN);
    if teardown || drop.reason.is_tcp_bookkeeping() {
        0
    } else {
        drop.tcp + drop.udp
    }
}

/// Flows of a workload as `local -> remote` (with the NAT side when there is one).
fn flow_names(evidence: &Evidence, workload: &str, limit: usize) -> Vec<String> {
    flows_of(evidence, workload)
        .take(limit)
        .map(crate::model::Flow::describe)
        .collect()
}

fn flows_of<'a>(
    evidence: &'a Evidence,
    workload: &'a str,
) -> impl Iterator<Item = &'a crate::model::Flow> {
    evidence
        .flows
        .iter()
        .filter(move |f| *f.workload.name == *workload)
}

fn percent(ratio: f64) -> String {
    format!("{:.2}%", ratio * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Namespace, Site,
        testing::{conntrack, container, drop, dropped, evidence, workload},
    };

    /// `app` retransmits 20 of 1000 segments and the host dropped 20 of its packets: a high
    /// `local_drops` (the drops explain the retransmits).
    fn app_with_host_drops() -> Evidence {
        let app = container("app", 2);
        evidence(
            vec![workload(&app, 1000, 20)],
            Vec::new(),
            vec![dropped(
                &app,
                Site::Host,
                "NETFILTER_DROP",
                "nf_hook_slow",
                20,
            )],
        )
    }

    #[test]
    fn causes_rank_before_symptoms_at_equal_severity() {
        // Local drops (high) and a full table that dropped (high): the cause ranks first.
        let mut evidence = app_with_host_drops();
        let mut full = conntrack(Namespace::Host, 1000, 1000);
        full.stats.drop = 5;
        evidence.conntrack = vec![full];
        let ids: Vec<_> = evaluate(&evidence).iter().map(|f| f.id).collect();
        assert_eq!(ids, ["conntrack_full", "local_drops"]);
    }

    #[test]
    fn higher_severity_ranks_first() {
        // A medium full table (no drops) after high local drops.
        let mut evidence = app_with_host_drops();
        evidence.conntrack = vec![conntrack(Namespace::Host, 950, 1000)];
        let ranked: Vec<_> = evaluate(&evidence)
            .iter()
            .map(|f| (f.id, f.severity))
            .collect();
        assert_eq!(
            ranked,
            [
                ("local_drops", Severity::High),
                ("conntrack_full", Severity::Medium)
            ]
        );
    }

    #[test]
    fn quiet_evidence_has_no_findings() {
        let app = container("app", 2);
        assert!(
            evaluate(&evidence(
                vec![workload(&app, 1000, 0)],
                Vec::new(),
                Vec::new()
            ))
            .is_empty()
        );
    }

    #[test]
    fn a_closing_socket_freeing_its_queue_loses_nothing() {
        assert_eq!(
            lost_packets(&drop("NOT_SPECIFIED", "sk_stream_kill_queues")),
            0
        );
        assert_eq!(lost_packets(&drop("SOCKET_CLOSE", "tcp_done")), 0);
        assert_eq!(lost_packets(&drop("NOT_SPECIFIED", "ip_forward")), 2);
        assert_eq!(
            lost_packets(&drop("NETFILTER_DROP", "sk_stream_kill_queues")),
            2
        );
    }
}
