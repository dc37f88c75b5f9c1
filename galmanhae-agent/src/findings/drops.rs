//! `local_drops` (the host drops the workload's packets) and `loss_beyond_host` (it
//! retransmits, but nothing on this host dropped its packets).

use galmanhae_common::retransmit::RetransmitKind;

use super::{Finding, Severity, flow_names, flows_of, lost_packets, own_drops, percent};
use crate::model::{DropReason, Evidence, Location, Site};

/// Retransmit ratio and volume from which loss is worth a finding.
const LOSSY_RATIO: f64 = 0.005;
const LOSSY_SEGMENTS: u64 = 20;
/// Retransmit ratio from which loss beyond the host is high.
const HIGH_RATIO: f64 = 0.02;
/// Dropped packets from which local drops are worth a finding without retransmits.
const MIN_DROPS: u64 = 5;

pub(super) fn local_drops(evidence: &Evidence) -> Vec<Finding> {
    let mut out = Vec::new();
    for w in &evidence.workloads {
        let name = &w.workload.name;
        let retransmitted = w.segments.retrans_segs;
        let mut drops: Vec<_> = own_drops(evidence, name)
            .filter(|d| lost_packets(d) > 0 && d.reason != DropReason::PKT_TOO_BIG)
            .collect();
        drops.sort_by_key(|d| std::cmp::Reverse(lost_packets(d)));
        let total: u64 = drops.iter().map(|d| lost_packets(d)).sum();
        if total == 0 || (total < MIN_DROPS && retransmitted == 0) {
            continue;
        }
        let explains = retransmitted > 0 && total * 2 >= retransmitted;
        let severity = if explains || w.ratio() >= LOSSY_RATIO {
            Severity::High
        } else if total >= MIN_DROPS {
            Severity::Medium
        } else {
            Severity::Low
        };
        let top = drops[0];
        let mut lines: Vec<String> = drops
            .iter()
            .take(5)
            .map(|d| {
                format!(
                    "{} packets dropped in {} (netns {}): reason {} at {}{}",
                    lost_packets(d),
                    d.site.name(),
                    d.netns,
                    d.reason.name(),
                    d.location.name(),
                    d.examples
                        .first()
                        .map_or(String::new(), |e| format!(", e.g. {e}"))
                )
            })
            .collect();
        lines.push(format!(
            "{} retransmitted segments of {} sent ({})",
            retransmitted,
            w.segments.out_segs,
            percent(w.ratio())
        ));
        out.push(Finding {
            id: "local_drops",
            severity,
            workload: name.to_string(),
            flows: top.examples.clone(),
            summary: format!(
                "{total} packets of {} `{name}` were dropped on this host, mostly {} at {} in {}",
                w.workload.kind.as_str(),
                top.reason.name(),
                top.location.name(),
                top.site.name()
            ),
            evidence: lines,
            advice: advice_for(&top.reason, &top.location, &top.site),
        });
    }
    out
}

pub(super) fn loss_beyond_host(evidence: &Evidence) -> Vec<Finding> {
    let mut out = Vec::new();
    for w in &evidence.workloads {
        let name = &w.workload.name;
        let retransmitted = w.segments.retrans_segs;
        if w.ratio() < LOSSY_RATIO || retransmitted < LOSSY_SEGMENTS {
            continue;
        }
        let local: u64 = own_drops(evidence, name).map(lost_packets).sum();
        // Local drops that account for a tenth of the retransmits or more: not beyond the host.
        if local * 10 >= retransmitted {
            continue;
        }
        let mut kinds = [0u64; 4];
        let mut remotes = std::collections::BTreeSet::new();
        for f in flows_of(evidence, name) {
            kinds[0] += f.kind(RetransmitKind::Rto);
            kinds[1] += f.kind(RetransmitKind::Fast);
            kinds[2] += f.kind(RetransmitKind::Tlp);
            kinds[3] += f.kind(RetransmitKind::Syn);
            remotes.insert(f.remote.to_string());
        }
        out.push(Finding {
            id: "loss_beyond_host",
            severity: if w.ratio() >= HIGH_RATIO {
                Severity::High
            } else {
                Severity::Medium
            },
            workload: name.to_string(),
            flows: flow_names(evidence, name, 5),
            summary: format!(
                "{} `{name}` retransmits {} of its segments but this host dropped (almost) none \
                 of them: the loss is on the network path",
                w.workload.kind.as_str(),
                percent(w.ratio())
            ),
            evidence: vec![
                format!(
                    "{retransmitted} retransmitted segments of {} sent",
                    w.segments.out_segs
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
fn advice_for(reason: &DropReason, location: &Location, site: &Site) -> String {
    let ns = match site {
        Site::Host => String::new(),
        other => format!(" inside `{}`'s namespace (nsenter -n -t PID)", other.name()),
    };
    let at = location.name();
    if *reason == DropReason::NETFILTER_DROP && location.mentions("nf_hook_slow") {
        format!(
            "A netfilter hook (conntrack, or a rule's verdict) drops them{ns}: check \
             `conntrack -S` for drop/insert_failed/invalid and list the rules with counters \
             (`iptables-save -c`, `nft list ruleset`) to find the one that matches."
        )
    } else if *reason == DropReason::NETFILTER_DROP {
        format!(
            "A firewall rule drops them{ns} ({at}): list the rules with their counters \
             (`iptables-save -c | grep -v '\\[0:0\\]'`, `nft list ruleset`), DOCKER-USER first, \
             and remove or narrow the rule."
        )
    } else if reason.is_queueing() {
        format!(
            "A queueing discipline or tc program drops them{ns}: check `tc -s qdisc` and \
             `tc filter show`; raise the queue limit or the shaping rate."
        )
    } else if reason.is_neighbour() {
        format!("Neighbour resolution fails{ns}: check `ip neigh` and the gateway's reachability.")
    } else if [DropReason::IP_OUTNOROUTES, DropReason::IP_INNOROUTES].contains(reason) {
        format!("There is no route for them{ns}: check `ip route` and `ip rule`.")
    } else if [
        DropReason::SOCKET_RCVBUFF,
        DropReason::PROTO_MEM,
        DropReason::SOCKET_BACKLOG,
    ]
    .contains(reason)
    {
        format!(
            "The receiving socket cannot keep up{ns}: raise its buffer \
             (net.core.rmem_max, SO_RCVBUF) or read faster."
        )
    } else if *reason == DropReason::CPU_BACKLOG {
        "The per-CPU input backlog overflows: raise net.core.netdev_max_backlog \
         or spread interrupts (RPS/RFS)."
            .to_owned()
    } else {
        format!(
            "The kernel drops them at {at}{ns} ({}): see the reason's comment in \
             include/net/dropreason-core.h; `perf trace -e skb:kfree_skb` shows each drop.",
            reason.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use galmanhae_common::retransmit::RetransmitKind;

    use super::*;
    use crate::model::testing::{container, dropped, evidence, flow, retransmits, workload};

    const NF: &str = "NETFILTER_DROP";
    const HOOK: &str = "nf_hook_slow";

    /// `app` sent `sent` and retransmitted `retransmitted`; `n` of its packets were dropped
    /// for `reason` at `site`.
    fn app(sent: u64, retransmitted: u64, site: Site, reason: &str, n: u64) -> Evidence {
        let app = container("app", 2);
        let drops = if n > 0 {
            vec![dropped(&app, site, reason, HOOK, n)]
        } else {
            Vec::new()
        };
        evidence(vec![workload(&app, sent, retransmitted)], Vec::new(), drops)
    }

    fn severity_of(found: &[Finding]) -> Option<Severity> {
        assert!(found.len() <= 1, "{found:?}");
        found.first().map(|f| f.severity)
    }

    #[test]
    fn without_retransmits_five_drops_make_a_finding_and_four_do_not() {
        assert_eq!(
            severity_of(&local_drops(&app(1000, 0, Site::Host, NF, 4))),
            None
        );
        assert_eq!(
            severity_of(&local_drops(&app(1000, 0, Site::Host, NF, 5))),
            Some(Severity::Medium)
        );
        assert_eq!(
            severity_of(&local_drops(&app(1000, 0, Site::Host, NF, 0))),
            None
        );
    }

    #[test]
    fn drops_that_explain_half_the_retransmits_are_high() {
        // 10 retransmitted of 10 000 (0.1 %): 5 drops explain half, 4 do not.
        let own = || Site::Own("app".to_owned());
        assert_eq!(
            severity_of(&local_drops(&app(10_000, 10, own(), NF, 5))),
            Some(Severity::High)
        );
        assert_eq!(
            severity_of(&local_drops(&app(10_000, 10, own(), NF, 4))),
            Some(Severity::Low)
        );
        // With retransmits one drop is enough for a finding.
        assert_eq!(
            severity_of(&local_drops(&app(10_000, 10, own(), NF, 1))),
            Some(Severity::Low)
        );
    }

    #[test]
    fn a_lossy_ratio_makes_local_drops_high() {
        // 0.5 % is lossy, 0.49 % is not.
        assert_eq!(
            severity_of(&local_drops(&app(10_000, 50, Site::Host, NF, 1))),
            Some(Severity::High)
        );
        assert_eq!(
            severity_of(&local_drops(&app(10_000, 49, Site::Host, NF, 1))),
            Some(Severity::Low)
        );
    }

    #[test]
    fn drops_at_the_far_end_too_big_ones_and_bookkeeping_are_not_local_drops() {
        let peer = Site::Peer("db".to_owned());
        assert!(local_drops(&app(1000, 0, peer, NF, 50)).is_empty());
        assert!(local_drops(&app(1000, 0, Site::Host, "PKT_TOO_BIG", 50)).is_empty());
        assert!(local_drops(&app(1000, 0, Site::Host, "TCP_OLD_DATA", 50)).is_empty());
        assert!(local_drops(&app(1000, 0, Site::Unknown, NF, 50)).is_empty());
    }

    #[test]
    fn local_drops_say_where_and_what_to_do() {
        let found = local_drops(&app(1000, 0, Site::Own("app".to_owned()), NF, 7));
        let f = &found[0];
        assert_eq!((f.id, f.workload.as_str()), ("local_drops", "app"));
        assert_eq!(
            f.summary,
            "7 packets of container `app` were dropped on this host, mostly NETFILTER_DROP at \
             nf_hook_slow in app"
        );
        assert!(
            f.evidence[0].starts_with("7 packets dropped in app (netns 2)"),
            "{f:?}"
        );
        assert!(
            f.advice.contains("inside `app`'s namespace"),
            "{}",
            f.advice
        );
        assert!(f.advice.contains("conntrack -S"), "{}", f.advice);
        let host = local_drops(&app(1000, 0, Site::Host, "QDISC_DROP", 7));
        assert!(
            host[0].advice.starts_with("A queueing discipline"),
            "{host:?}"
        );
        assert!(!host[0].advice.contains("nsenter"));
    }

    #[test]
    fn the_advice_follows_the_reason() {
        let at = |f: &str| Location {
            address: 1,
            function: Some(f.to_owned()),
        };
        let reason = |r: &str| DropReason::new(r.to_owned());
        let advice = |r: &str, l: &str| advice_for(&reason(r), &at(l), &Site::Host);
        assert!(
            advice(NF, "nft_do_chain").starts_with("A firewall rule drops them (nft_do_chain)")
        );
        assert!(advice("NEIGH_FAILED", "x").starts_with("Neighbour resolution fails"));
        assert!(advice("IP_OUTNOROUTES", "x").starts_with("There is no route"));
        assert!(advice("SOCKET_RCVBUFF", "x").starts_with("The receiving socket"));
        assert!(advice("CPU_BACKLOG", "x").starts_with("The per-CPU input backlog"));
        assert!(advice("OTHERHOST", "x").contains("(OTHERHOST)"));
    }

    #[test]
    fn loss_beyond_the_host_needs_a_lossy_ratio_and_twenty_segments() {
        let quiet = |sent, retransmitted| {
            loss_beyond_host(&app(sent, retransmitted, Site::Host, NF, 0)).is_empty()
        };
        // 20 of 4000 is 0.5 %: a finding; 19 segments or a ratio just below is not.
        assert!(!quiet(4000, 20));
        assert!(quiet(3800, 19));
        assert!(quiet(4001, 20));
    }

    #[test]
    fn loss_beyond_the_host_is_high_from_two_percent() {
        let severity = |retransmitted| {
            severity_of(&loss_beyond_host(&app(
                4000,
                retransmitted,
                Site::Host,
                NF,
                0,
            )))
        };
        assert_eq!(severity(80), Some(Severity::High));
        assert_eq!(severity(79), Some(Severity::Medium));
    }

    #[test]
    fn local_drops_of_a_tenth_of_the_retransmits_keep_the_loss_on_this_host() {
        assert_eq!(loss_beyond_host(&app(4000, 20, Site::Host, NF, 1)).len(), 1);
        assert!(loss_beyond_host(&app(4000, 20, Site::Host, NF, 2)).is_empty());
        // Drops at the far end do not count against it.
        let peer = Site::Peer("db".to_owned());
        assert_eq!(loss_beyond_host(&app(4000, 20, peer, NF, 20)).len(), 1);
    }

    #[test]
    fn loss_beyond_the_host_lists_kinds_and_remotes() {
        let mut evidence = app(4000, 40, Site::Host, NF, 0);
        let app = evidence.workloads[0].workload.clone();
        evidence.flows = vec![
            retransmits(
                flow(&app, 41_000, "198.19.0.2:5432"),
                RetransmitKind::Rto,
                3,
                100,
            ),
            retransmits(
                flow(&app, 41_001, "198.19.0.3:80"),
                RetransmitKind::Fast,
                2,
                100,
            ),
        ];
        let found = loss_beyond_host(&evidence);
        let f = &found[0];
        assert!(
            f.evidence
                .contains(&"retransmits by kind: rto 3, fast 2, tlp 0, syn 0".to_owned())
        );
        assert!(
            f.evidence
                .contains(&"remotes: 198.19.0.2:5432, 198.19.0.3:80".to_owned())
        );
        assert_eq!(f.flows.len(), 2);
    }
}
