//! `path_mtu`: packets larger than the path allows, dropped on this host (`PKT_TOO_BIG` in
//! `ip_forward`), the ICMP that would tell the sender dropped too (a black hole), or
//! retransmitted segments larger than the egress MTU of a mismatched path.

use galmanhae_common::retransmit::RetransmitKind;

use super::{Finding, Severity, flow_names, flows_of, own_drops};
use crate::model::{DropReason, Evidence};

/// IPv4 + TCP headers with timestamps: a segment of this much payload fills an MTU of
/// payload + 52.
const HEADERS: u64 = 52;

pub(super) fn path_mtu(evidence: &Evidence) -> Vec<Finding> {
    let mut out = Vec::new();
    for w in &evidence.workloads {
        let name = &w.workload.name;
        let too_big: u64 = own_drops(evidence, name)
            .filter(|d| d.reason == DropReason::PKT_TOO_BIG)
            .map(|d| d.packets)
            .sum();
        let icmp_dropped: u64 = evidence
            .drops
            .iter()
            .filter(|d| d.workload.name == *name)
            .map(|d| d.icmp_too_big)
            .sum();
        let path = evidence.paths.iter().find(|p| *p.workload == **name);
        let mismatch = path.and_then(|p| p.mismatch);
        let oversize: Vec<_> = flows_of(evidence, name)
            .filter(|f| match (f.segment_bytes(), mismatch) {
                (Some(bytes), Some((_, egress))) => bytes + HEADERS > u64::from(egress),
                _ => false,
            })
            .collect();
        // A mismatch alone is configuration, shown under `paths`; a finding needs traffic
        // that suffers from it.
        if too_big == 0 && icmp_dropped == 0 && oversize.is_empty() {
            continue;
        }
        let rto: u64 = flows_of(evidence, name)
            .map(|f| f.kind(RetransmitKind::Rto))
            .sum();
        let severity = if icmp_dropped > 0 || (too_big > 0 && rto > 0) {
            Severity::High
        } else if too_big > 0 || !oversize.is_empty() {
            Severity::Medium
        } else {
            Severity::Low
        };
        let mut lines = Vec::new();
        if let Some(p) = path {
            let hops: Vec<String> = p
                .hops
                .iter()
                .map(|h| format!("{} {} {}", h.role.as_str(), h.interface, h.mtu))
                .collect();
            lines.push(format!("path to {}: {}", p.remote, hops.join(", ")));
        }
        if too_big > 0 {
            lines.push(format!(
                "{too_big} packets dropped as too big for the next hop (PKT_TOO_BIG)"
            ));
        }
        if icmp_dropped > 0 {
            lines.push(format!(
                "{icmp_dropped} ICMP fragmentation-needed / packet-too-big messages to it were \
                 dropped: it never learns the path MTU (a black hole)"
            ));
        }
        for f in oversize.iter().take(3) {
            lines.push(format!(
                "{} -> {}: {} retransmitted segments of {} bytes payload (rto {})",
                f.local,
                f.remote,
                f.counters.segments,
                f.segment_bytes().unwrap_or(0),
                f.kind(RetransmitKind::Rto)
            ));
        }
        let egress = mismatch
            .map(|(_, e)| e)
            .or(path.and_then(|p| p.smallest_mtu));
        let mtu = egress.map_or_else(|| "the egress MTU".to_owned(), |m| m.to_string());
        out.push(Finding {
            id: "path_mtu",
            severity,
            workload: name.to_string(),
            flows: flow_names(evidence, name, 5),
            summary: match (icmp_dropped > 0, mismatch) {
                (true, _) => format!(
                    "`{name}` sends packets too big for its path and the ICMP that says so is \
                     dropped: a path MTU black hole"
                ),
                (false, Some((inner, egress))) => format!(
                    "`{name}` uses MTU {inner} but its traffic leaves the host through MTU {egress}"
                ),
                (false, None) => {
                    format!("packets of `{name}` are dropped as too big for the next hop")
                }
            },
            evidence: lines,
            advice: format!(
                "Give the containers the egress MTU: in /etc/docker/daemon.json set \
                 {{\"mtu\": {mtu}}} (default bridge) or create networks with `-o \
                 com.docker.network.driver.mtu={mtu}`, then recreate the containers. Let ICMP \
                 type 3 code 4 (IPv6: type 2) through every firewall on the path, or enable \
                 `net.ipv4.tcp_mtu_probing=1` in the container's namespace as a stopgap."
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use galmanhae_common::retransmit::RetransmitKind;

    use super::*;
    use crate::model::{
        Site,
        testing::{container, dropped, evidence, flow, path, retransmits, workload},
    };

    /// `app`, with these drops and flows, its path at MTU 1500 inside and `egress` out.
    fn app(egress: u32, drops: &[(&str, u64)], flows: &[(RetransmitKind, u64)]) -> Evidence {
        let app = container("app", 2);
        let drops = drops
            .iter()
            .map(|(reason, n)| dropped(&app, Site::Host, reason, "ip_forward", *n))
            .collect();
        let flows = flows
            .iter()
            .map(|(kind, bytes)| {
                retransmits(flow(&app, 41_000, "198.19.0.2:5432"), *kind, 2, *bytes)
            })
            .collect();
        let mut evidence = evidence(vec![workload(&app, 1000, 2)], flows, drops);
        evidence.paths = vec![path("app", 1500, egress)];
        evidence
    }

    fn severity_of(evidence: &Evidence) -> Option<Severity> {
        let found = path_mtu(evidence);
        assert!(found.len() <= 1, "{found:?}");
        found.first().map(|f| f.severity)
    }

    #[test]
    fn a_mismatch_alone_is_no_finding() {
        assert_eq!(severity_of(&app(1400, &[], &[])), None);
    }

    #[test]
    fn too_big_drops_are_medium_and_high_with_rto_retransmits() {
        assert_eq!(
            severity_of(&app(1500, &[("PKT_TOO_BIG", 1)], &[])),
            Some(Severity::Medium)
        );
        assert_eq!(
            severity_of(&app(
                1500,
                &[("PKT_TOO_BIG", 1)],
                &[(RetransmitKind::Rto, 100)]
            )),
            Some(Severity::High)
        );
        // Other reasons are local_drops' business.
        assert_eq!(severity_of(&app(1500, &[("NETFILTER_DROP", 5)], &[])), None);
    }

    #[test]
    fn a_dropped_icmp_too_big_is_a_black_hole() {
        let mut evidence = app(1500, &[("NETFILTER_DROP", 1)], &[]);
        evidence.drops[0].icmp_too_big = 1;
        let found = path_mtu(&evidence);
        assert_eq!(found[0].severity, Severity::High);
        assert!(
            found[0].summary.contains("a path MTU black hole"),
            "{found:?}"
        );
    }

    #[test]
    fn segments_larger_than_the_egress_allows_are_oversize() {
        // 1348 bytes + 52 of headers fit MTU 1400; 1349 do not.
        let fits = app(1400, &[], &[(RetransmitKind::Rto, 1348)]);
        assert_eq!(severity_of(&fits), None);
        let oversize = app(1400, &[], &[(RetransmitKind::Rto, 1349)]);
        assert_eq!(severity_of(&oversize), Some(Severity::Medium));
        let f = &path_mtu(&oversize)[0];
        assert_eq!(
            f.summary,
            "`app` uses MTU 1500 but its traffic leaves the host through MTU 1400"
        );
        assert_eq!(
            f.evidence[0],
            "path to 198.19.0.2: workload eth0 1500, egress ens3 1400"
        );
        assert!(f.advice.contains("{\"mtu\": 1400}"), "{}", f.advice);
    }
}
