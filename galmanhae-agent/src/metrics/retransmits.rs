//! Retransmits folded per workload and server-side remote, the heaviest remotes by recent
//! retransmits (top-K), the rest as `other`.

use std::{net::SocketAddr, time::Instant};

use galmanhae_common::retransmit::{RetransmitCounters, RetransmitKind};

use super::{
    Exporter, RemoteLabels, RetransmitLabels, family,
    series::{Admission, TopK},
};
use crate::model::Evidence;

impl Exporter {
    pub(super) fn fold_retransmits(&mut self, evidence: &Evidence, now: Instant) {
        for flow in &evidence.flows {
            let remote = remote_label(flow.local, flow.remote, &flow.counters);
            let remote =
                self.count_retransmits(&flow.workload.name, Some(remote), &flow.counters, now);
            if let Some(remote) = remote {
                self.count_time_lost(&flow.workload.name, remote, &flow.time_lost, now);
            }
        }
        for (workload, counters) in &evidence.overflow {
            // Counted per owner only (the flow map was full): no remote to name.
            self.count_retransmits(&workload.name, None, counters, now);
        }
    }

    fn count_retransmits(
        &mut self,
        workload: &str,
        remote: Option<String>,
        counters: &RetransmitCounters,
        now: Instant,
    ) -> Option<String> {
        if !self.admit(workload, family::RETRANSMITS, now) {
            return None;
        }
        let remote = self.remote_slot(workload, remote, counters, now);
        if counters.segments > 0 {
            let labels = RemoteLabels {
                workload: workload.to_owned(),
                remote: remote.clone(),
            };
            self.series
                .retransmit_segments
                .add(labels, counters.segments, now);
        }
        let kinds = RetransmitKind::ALL
            .iter()
            .map(|k| (k.name(), counters.kinds[*k as usize]))
            .chain([("failed", counters.failed)]);
        for (kind, count) in kinds {
            if count > 0 {
                let labels = RetransmitLabels {
                    workload: workload.to_owned(),
                    remote: remote.clone(),
                    kind,
                };
                self.series.retransmits.add(labels, count, now);
            }
        }
        Some(remote)
    }

    /// The remote label of a workload's retransmits: `unknown` without a remote, else the
    /// remote while it is among the workload's heaviest, `other` when it is not.
    fn remote_slot(
        &mut self,
        workload: &str,
        remote: Option<String>,
        counters: &RetransmitCounters,
        now: Instant,
    ) -> String {
        let max = self.limits.max_remotes_per_workload;
        let top = self
            .remotes
            .entry(workload.to_owned())
            .or_insert_with(|| TopK::new(max));
        match remote {
            None => "unknown".to_owned(),
            Some(remote) => match top.admit(&remote, counters.retransmits + counters.failed, now) {
                Admission::Kept => remote,
                Admission::Promoted { demoted } => {
                    // From now on it is counted in `other`: its own series stop (stale).
                    let demoted_series = |w: &str, r: &str| w == workload && r == demoted;
                    self.series
                        .retransmits
                        .remove_where(|l| demoted_series(&l.workload, &l.remote));
                    self.series
                        .retransmit_segments
                        .remove_where(|l| demoted_series(&l.workload, &l.remote));
                    remote
                }
                Admission::Refused => "other".to_owned(),
            },
        }
    }
}

/// The server side of a flow: the remote `ip:port` when the workload is the client, the
/// remote's address alone when the workload serves (its peer's port is ephemeral: folded).
fn remote_label(local: SocketAddr, remote: SocketAddr, counters: &RetransmitCounters) -> String {
    if workload_serves(local, remote, counters) {
        remote.ip().to_string()
    } else {
        remote.to_string()
    }
}

/// The Linux default `ip_local_port_range`: ports a client's socket is given.
const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

/// A SYN-ACK retransmit is a server's, a SYN retransmit a client's. Otherwise the side whose
/// port is ephemeral is the client; when both or neither are, the lower port serves.
fn workload_serves(local: SocketAddr, remote: SocketAddr, counters: &RetransmitCounters) -> bool {
    if counters.kinds[RetransmitKind::SynAck as usize] > 0 {
        return true;
    }
    if counters.kinds[RetransmitKind::Syn as usize] > 0 {
        return false;
    }
    match (
        EPHEMERAL.contains(&local.port()),
        EPHEMERAL.contains(&remote.port()),
    ) {
        (true, false) => false,
        (false, true) => true,
        _ => local.port() < remote.port(),
    }
}

#[cfg(test)]
mod tests {
    use galmanhae_common::retransmit::FlowKey;

    use super::*;

    fn flow(local_port: u16, remote_port: u16) -> FlowKey {
        let mut remote_addr = [0; 16];
        remote_addr[10] = 0xff;
        remote_addr[11] = 0xff;
        remote_addr[12..].copy_from_slice(&[198, 19, 0, 2]);
        FlowKey {
            netns: 1,
            family: galmanhae_common::retransmit::AF_INET,
            local_port,
            remote_port,
            padding: [0; 6],
            cgroup_id: 0,
            local_addr: remote_addr,
            remote_addr,
        }
    }

    fn label(local_port: u16, remote_port: u16, counters: &RetransmitCounters) -> String {
        let (local, remote) = crate::addr::endpoints(&flow(local_port, remote_port));
        remote_label(local, remote, counters)
    }

    #[test]
    fn remote_is_the_server_side() {
        let none = RetransmitCounters::default();
        // The workload connected out: the remote's service port stays.
        assert_eq!(label(41_000, 5432, &none), "198.19.0.2:5432");
        // The workload serves: the client's ephemeral port is folded.
        assert_eq!(label(8080, 45_000, &none), "198.19.0.2");
        // Neither ephemeral: the lower port serves.
        assert_eq!(label(9000, 5432, &none), "198.19.0.2:5432");
        // A SYN-ACK says the workload serves, whatever the ports.
        let mut synack = RetransmitCounters::default();
        synack.kinds[RetransmitKind::SynAck as usize] = 1;
        assert_eq!(label(40_000, 50_000, &synack), "198.19.0.2");
    }
}
