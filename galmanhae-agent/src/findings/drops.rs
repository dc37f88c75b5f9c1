//! `local_drops` (the host drops the workload's packets) and `loss_beyond_host` (it
//! retransmits, but nothing on this host dropped its packets).

use super::{Finding, Severity, flow_names, lost_packets, own_drops, percent};
use crate::report::DiagnoseReport;

/// Retransmit ratio and volume from which loss is worth a finding.
const LOSSY_RATIO: f64 = 0.005;
const LOSSY_SEGMENTS: u64 = 20;
/// Dropped packets from which local drops are worth a finding without retransmits.
const MIN_DROPS: u64 = 5;

pub fn local_drops(report: &DiagnoseReport) -> Vec<Finding> {
    let mut out = Vec::new();
    for w in &report.workloads {
        let mut drops: Vec<_> = own_drops(report, &w.name)
            .filter(|d| lost_packets(d) > 0 && d.reason != "PKT_TOO_BIG")
            .collect();
        drops.sort_by_key(|d| std::cmp::Reverse(lost_packets(d)));
        let total: u64 = drops.iter().map(|d| lost_packets(d)).sum();
        if total == 0 || (total < MIN_DROPS && w.retransmitted_segments == 0) {
            continue;
        }
        let explains = w.retransmitted_segments > 0 && total * 2 >= w.retransmitted_segments;
        let severity = if explains || w.retransmit_ratio >= LOSSY_RATIO {
            Severity::High
        } else if total >= MIN_DROPS {
            Severity::Medium
        } else {
            Severity::Low
        };
        let top = drops[0];
        let mut evidence: Vec<String> = drops
            .iter()
            .take(5)
            .map(|d| {
                format!(
                    "{} packets dropped in {} (netns {}): reason {} at {}{}",
                    lost_packets(d),
                    d.dropped_in,
                    d.netns,
                    d.reason,
                    d.location,
                    d.examples
                        .first()
                        .map_or(String::new(), |e| format!(", e.g. {e}"))
                )
            })
            .collect();
        evidence.push(format!(
            "{} retransmitted segments of {} sent ({})",
            w.retransmitted_segments,
            w.sent_segments,
            percent(w.retransmit_ratio)
        ));
        out.push(Finding {
            id: "local_drops",
            severity,
            workload: w.name.clone(),
            flows: top.examples.clone(),
            summary: format!(
                "{total} packets of {} `{}` were dropped on this host, mostly {} at {} in {}",
                w.kind, w.name, top.reason, top.location, top.dropped_in
            ),
            evidence,
            advice: advice_for(&top.reason, &top.location, &top.dropped_in),
        });
    }
    out
}

pub fn loss_beyond_host(report: &DiagnoseReport) -> Vec<Finding> {
    let mut out = Vec::new();
    for w in &report.workloads {
        if w.retransmit_ratio < LOSSY_RATIO || w.retransmitted_segments < LOSSY_SEGMENTS {
            continue;
        }
        let local: u64 = own_drops(report, &w.name).map(lost_packets).sum();
        // Local drops that account for a tenth of the retransmits or more: not beyond the host.
        if local * 10 >= w.retransmitted_segments {
            continue;
        }
        let flows: Vec<_> = report
            .flows
            .iter()
            .filter(|f| f.workload == w.name)
            .collect();
        let mut kinds = [0u64; 4];
        for f in &flows {
            kinds[0] += f.kinds.rto;
            kinds[1] += f.kinds.fast;
            kinds[2] += f.kinds.tlp;
            kinds[3] += f.kinds.syn;
        }
        let remotes: std::collections::BTreeSet<&str> =
            flows.iter().map(|f| f.remote.as_str()).collect();
        out.push(Finding {
            id: "loss_beyond_host",
            severity: if w.retransmit_ratio >= 0.02 {
                Severity::High
            } else {
                Severity::Medium
            },
            workload: w.name.clone(),
            flows: flow_names(report, &w.name, 5),
            summary: format!(
                "{} `{}` retransmits {} of its segments but this host dropped (almost) none \
                 of them: the loss is on the network path",
                w.kind,
                w.name,
                percent(w.retransmit_ratio)
            ),
            evidence: vec![
                format!(
                    "{} retransmitted segments of {} sent",
                    w.retransmitted_segments, w.sent_segments
                ),
                format!(
                    "{local} of its packets dropped on this host (its namespace and the host's)"
                ),
                format!(
                    "retransmits by kind: rto {}, fast {}, tlp {}, syn {}",
                    kinds[0], kinds[1], kinds[2], kinds[3]
                ),
                format!(
                    "remotes: {}",
                    remotes.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ],
            advice: "Look beyond this host: the remote end (its NIC, firewall, conntrack, \
                     listen queue), the network in between (cloud firewall connection \
                     tracking, NAT gateway idle timeouts, a congested or lossy link). Capture \
                     on the egress interface to confirm segments leave this host."
                .to_owned(),
        });
    }
    out
}

/// What to do about drops, by where and why the kernel dropped them.
fn advice_for(reason: &str, location: &str, dropped_in: &str) -> String {
    let ns = if dropped_in == "host" {
        String::new()
    } else {
        format!(" inside `{dropped_in}`'s namespace (nsenter -n -t PID)")
    };
    match reason {
        "NETFILTER_DROP" if location.contains("nf_hook_slow") => format!(
            "A netfilter hook (conntrack, or a rule's verdict) drops them{ns}: check \
             `conntrack -S` for drop/insert_failed/invalid and list the rules with counters \
             (`iptables-save -c`, `nft list ruleset`) to find the one that matches."
        ),
        "NETFILTER_DROP" => format!(
            "A firewall rule drops them{ns} ({location}): list the rules with their counters \
             (`iptables-save -c | grep -v '\\[0:0\\]'`, `nft list ruleset`), DOCKER-USER first, \
             and remove or narrow the rule."
        ),
        r if r.starts_with("QDISC") || r.starts_with("FQ_") || r == "TC_EGRESS" => format!(
            "A queueing discipline or tc program drops them{ns}: check `tc -s qdisc` and \
             `tc filter show`; raise the queue limit or the shaping rate."
        ),
        r if r.starts_with("NEIGH") => format!(
            "Neighbour resolution fails{ns}: check `ip neigh` and the gateway's reachability."
        ),
        "IP_OUTNOROUTES" | "IP_INNOROUTES" => {
            format!("There is no route for them{ns}: check `ip route` and `ip rule`.")
        }
        "SOCKET_RCVBUFF" | "PROTO_MEM" | "SOCKET_BACKLOG" => format!(
            "The receiving socket cannot keep up{ns}: raise its buffer \
             (net.core.rmem_max, SO_RCVBUF) or read faster."
        ),
        "CPU_BACKLOG" => "The per-CPU input backlog overflows: raise net.core.netdev_max_backlog \
                          or spread interrupts (RPS/RFS)."
            .to_owned(),
        _ => format!(
            "The kernel drops them at {location}{ns} ({reason}): see the reason's comment in \
             include/net/dropreason-core.h; `perf trace -e skb:kfree_skb` shows each drop."
        ),
    }
}
