//! From evidence to findings: each rule reads the report's measurements (workloads, flows,
//! drops, conntrack, NAT audit, paths) and says what is wrong, for whom, why it thinks so and
//! what to change. One file per family of causes (see `../shared/research` R1-R7).

mod conntrack;
mod drops;
mod mtu;
mod syn;
mod time;

use serde::Serialize;

use crate::report::{DiagnoseReport, DropReport};

/// One diagnosed problem. `id` values are a contract (see docs/findings.md).
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    pub workload: String,
    pub flows: Vec<String>,
    pub summary: String,
    pub evidence: Vec<String>,
    pub advice: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
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
pub fn evaluate(report: &DiagnoseReport) -> Vec<Finding> {
    let mut findings = Vec::new();
    findings.extend(conntrack::table_full(report));
    findings.extend(conntrack::snat_collision(report));
    findings.extend(conntrack::nat_leak(report));
    findings.extend(mtu::path_mtu(report));
    findings.extend(drops::local_drops(report));
    findings.extend(syn::syn_retransmits(report));
    findings.extend(drops::loss_beyond_host(report));
    time::cite(report, &mut findings);
    findings.extend(time::rto_stalls(report));
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
fn own_drops<'a>(
    report: &'a DiagnoseReport,
    workload: &'a str,
) -> impl Iterator<Item = &'a DropReport> {
    report.drops.iter().filter(move |d| {
        d.workload == workload && (d.dropped_in == "host" || d.dropped_in == workload)
    })
}

/// Drop reasons that are TCP's own receive-side bookkeeping (duplicates, closed sockets), not
/// lost packets.
const BOOKKEEPING: [&str; 11] = [
    "TCP_OLD_DATA",
    "TCP_OLD_SEQUENCE",
    "TCP_OFOMERGE",
    "TCP_OLD_ACK",
    "TCP_TOO_OLD_ACK",
    "TCP_CLOSE",
    "TCP_RESET",
    "SOCKET_CLOSE",
    "QUEUE_PURGE",
    "NO_SOCKET",
    "TCP_ZEROWINDOW",
];

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
fn lost_packets(drop: &DropReport) -> u64 {
    let teardown =
        drop.reason == "NOT_SPECIFIED" && SOCKET_TEARDOWN.contains(&drop.location.as_str());
    if teardown || BOOKKEEPING.contains(&drop.reason.as_str()) {
        0
    } else {
        drop.tcp + drop.udp
    }
}

/// Flows of a workload as `local -> remote` (with the NAT side when there is one).
fn flow_names(report: &DiagnoseReport, workload: &str, limit: usize) -> Vec<String> {
    report
        .flows
        .iter()
        .filter(|f| f.workload == workload)
        .take(limit)
        .map(|f| match &f.nat {
            Some(nat) => format!(
                "{} -> {} (as {} -> {})",
                f.local, f.remote, nat.local, nat.remote
            ),
            None => format!("{} -> {}", f.local, f.remote),
        })
        .collect()
}

fn percent(ratio: f64) -> String {
    format!("{:.2}%", ratio * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drop(reason: &str, location: &str) -> DropReport {
        DropReport {
            workload: "netns:web".to_owned(),
            workload_kind: "netns",
            dropped_in: "netns:web".to_owned(),
            netns: 1,
            reason: reason.to_owned(),
            location: location.to_owned(),
            packets: 3,
            egress: 0,
            ingress: 3,
            tcp: 2,
            udp: 0,
            icmp_too_big: 0,
            examples: Vec::new(),
        }
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
