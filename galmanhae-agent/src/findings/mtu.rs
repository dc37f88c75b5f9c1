//! `path_mtu`: packets larger than the path allows, dropped on this host (`PKT_TOO_BIG` in
//! `ip_forward`), the ICMP that would tell the sender dropped too (a black hole), or
//! retransmitted segments larger than the egress MTU of a mismatched path.

use super::{Finding, Severity, flow_names, own_drops};
use crate::report::DiagnoseReport;

/// IPv4 + TCP headers with timestamps: a segment of this much payload fills an MTU of
/// payload + 52.
const HEADERS: u64 = 52;

#[expect(
    clippy::too_many_lines,
    reason = "gathering the evidence, then wording it; split when a second MTU rule comes"
)]
pub fn path_mtu(report: &DiagnoseReport) -> Vec<Finding> {
    let mut out = Vec::new();
    for w in &report.workloads {
        let too_big: u64 = own_drops(report, &w.name)
            .filter(|d| d.reason == "PKT_TOO_BIG")
            .map(|d| d.packets)
            .sum();
        let icmp_dropped: u64 = report
            .drops
            .iter()
            .filter(|d| d.workload == w.name)
            .map(|d| d.icmp_too_big)
            .sum();
        let path = report.paths.iter().find(|p| p.workload == w.name);
        let mismatch = path.and_then(|p| p.mismatch);
        let oversize: Vec<_> = report
            .flows
            .iter()
            .filter(|f| f.workload == w.name)
            .filter(|f| match (f.retransmitted_segment_bytes, mismatch) {
                (Some(bytes), Some((_, egress))) => bytes + HEADERS > u64::from(egress),
                _ => false,
            })
            .collect();
        // A mismatch alone is configuration, shown under `paths`; a finding needs traffic
        // that suffers from it.
        if too_big == 0 && icmp_dropped == 0 && oversize.is_empty() {
            continue;
        }
        let rto: u64 = report
            .flows
            .iter()
            .filter(|f| f.workload == w.name)
            .map(|f| f.kinds.rto)
            .sum();
        let severity = if icmp_dropped > 0 || (too_big > 0 && rto > 0) {
            Severity::High
        } else if too_big > 0 || !oversize.is_empty() {
            Severity::Medium
        } else {
            Severity::Low
        };
        let mut evidence = Vec::new();
        if let Some(p) = path {
            let hops: Vec<String> = p
                .hops
                .iter()
                .map(|h| format!("{} {} {}", h.role, h.interface, h.mtu))
                .collect();
            evidence.push(format!("path to {}: {}", p.remote, hops.join(", ")));
        }
        if too_big > 0 {
            evidence.push(format!(
                "{too_big} packets dropped as too big for the next hop (PKT_TOO_BIG)"
            ));
        }
        if icmp_dropped > 0 {
            evidence.push(format!(
                "{icmp_dropped} ICMP fragmentation-needed / packet-too-big messages to it were \
                 dropped: it never learns the path MTU (a black hole)"
            ));
        }
        for f in oversize.iter().take(3) {
            evidence.push(format!(
                "{} -> {}: {} retransmitted segments of {} bytes payload (rto {})",
                f.local,
                f.remote,
                f.retransmitted_segments,
                f.retransmitted_segment_bytes.unwrap_or(0),
                f.kinds.rto
            ));
        }
        let egress = mismatch
            .map(|(_, e)| e)
            .or(path.and_then(|p| p.smallest_mtu));
        let mtu = egress.map_or_else(|| "the egress MTU".to_owned(), |m| m.to_string());
        out.push(Finding {
            id: "path_mtu",
            severity,
            workload: w.name.clone(),
            flows: flow_names(report, &w.name, 5),
            summary: match (icmp_dropped > 0, mismatch) {
                (true, _) => format!(
                    "`{}` sends packets too big for its path and the ICMP that says so is \
                     dropped: a path MTU black hole",
                    w.name
                ),
                (false, Some((inner, egress))) => format!(
                    "`{}` uses MTU {inner} but its traffic leaves the host through MTU {egress}",
                    w.name
                ),
                (false, None) => format!(
                    "packets of `{}` are dropped as too big for the next hop",
                    w.name
                ),
            },
            evidence,
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
