//! The Prometheus sink of `galmanhae run`: the diagnose pipeline run pass after pass, its
//! deltas folded into long-lived series. Families and labels are a contract:
//! `deploy/METRICS.md`.
//!
//! A pass runs on every scrape (the maps are read at scrape time) and on a timer (so that
//! vanished containers are seen, names refreshed, the NAT table and path MTUs read).
//! [`encode`] encodes the series with `prometheus-client`; [`http`] serves them.

pub mod encode;
mod findings;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod series;
pub(crate) mod shared;
mod time_lost;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::{Duration, Instant},
};

use galmanhae_common::retransmit::{RetransmitCounters, RetransmitKind};
use prometheus_client::encoding::EncodeLabelSet;

pub(crate) use self::findings::FindingLabels;
use self::health::{COLLECTORS, SourceState};
pub use self::series::Lifecycle;
use self::series::{Admission, Series, Slots, TopK};
use crate::{
    attribute::{Workload, WorkloadKind},
    collect::{netfilter::NatAudit, netns_snmp::TcpSegments, retransmits::ReadError},
    config::Limits,
    findings::Finding,
    model::Evidence,
    pipeline::{
        Pipeline,
        passes::{Pass, Passes},
    },
};

/// Labels of the per-workload segment counters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub workload: String,
    pub workload_kind: &'static str,
    pub container_id: String,
    pub runtime: String,
}

impl WorkloadLabels {
    fn of(workload: &Workload) -> Self {
        Self {
            workload: workload.name.clone(),
            workload_kind: workload.kind.as_str(),
            container_id: workload.id.clone(),
            runtime: workload.runtime.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RemoteLabels {
    pub(crate) workload: String,
    pub(crate) remote: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct OnlyWorkload {
    pub(crate) workload: String,
}

/// A bucket (index into `STALL_BUCKETS_MS`, `+Inf` last) of a workload's stall histogram.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct StallBucket {
    pub(crate) workload: String,
    pub(crate) bucket: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RetransmitLabels {
    pub workload: String,
    pub remote: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DropLabels {
    pub(crate) workload: String,
    pub(crate) reason: String,
    pub(crate) location: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct LeakLabels {
    pub(crate) workload: String,
    pub(crate) interface: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct NamespaceLabels {
    pub(crate) namespace: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ConntrackEventLabels {
    pub(crate) namespace: String,
    pub(crate) event: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct NatLabels {
    pub(crate) workload: String,
    pub(crate) source: String,
    pub(crate) translated: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct PathLabels {
    pub(crate) workload: String,
    pub(crate) hop: &'static str,
    pub(crate) interface: String,
}

/// Family names as PromQL sees them, for `galmanhae_series_dropped_total{family}`.
pub(crate) mod family {
    pub(crate) const SENT: &str = "galmanhae_tcp_sent_segments_total";
    pub(crate) const RETRANSMITS: &str = "galmanhae_tcp_retransmits_total";
    pub(crate) const DROPS: &str = "galmanhae_skb_drops_total";
    pub(crate) const LEAKS: &str = "galmanhae_nat_leaked_packets_total";
    pub(crate) const NAT: &str = "galmanhae_nat_info";
    pub(crate) const PATH_MTU: &str = "galmanhae_path_mtu_bytes";
    pub(crate) const CONNTRACK: &str = "galmanhae_conntrack_entries";
    pub(crate) const FINDING: &str = "galmanhae_finding";
}

/// The series of every family the agent folds from its passes (its own health is read at
/// scrape time, see [`encode`]).
#[derive(Debug, Default)]
pub struct Families {
    pub sent: Series<WorkloadLabels>,
    pub retransmitted: Series<WorkloadLabels>,
    pub retransmits: Series<RetransmitLabels>,
    pub(crate) retransmit_segments: Series<RemoteLabels>,
    /// Nanoseconds in RTO recovery, and waiting for SYN retries, per remote.
    pub(crate) rto_stall: Series<RemoteLabels>,
    pub(crate) syn_retry: Series<RemoteLabels>,
    /// Completed recoveries per duration bucket, and their nanoseconds, per workload.
    pub(crate) stall_buckets: Series<StallBucket>,
    pub(crate) stall_sum: Series<OnlyWorkload>,
    pub(crate) drops: Series<DropLabels>,
    pub(crate) leaks: Series<LeakLabels>,
    pub(crate) conntrack_entries: Series<NamespaceLabels>,
    pub(crate) conntrack_max: Series<NamespaceLabels>,
    pub(crate) conntrack_events: Series<ConntrackEventLabels>,
    pub(crate) nat_info: Series<NatLabels>,
    pub(crate) path_mtu: Series<PathLabels>,
    /// 1 per finding that holds over the findings window.
    pub(crate) findings: Series<FindingLabels>,
}

impl Families {
    fn all(&self) -> [&dyn Lifecycle; 16] {
        [
            &self.sent,
            &self.retransmitted,
            &self.retransmits,
            &self.retransmit_segments,
            &self.rto_stall,
            &self.syn_retry,
            &self.stall_buckets,
            &self.stall_sum,
            &self.drops,
            &self.leaks,
            &self.conntrack_entries,
            &self.conntrack_max,
            &self.conntrack_events,
            &self.nat_info,
            &self.path_mtu,
            &self.findings,
        ]
    }

    fn all_mut(&mut self) -> [&mut dyn Lifecycle; 16] {
        [
            &mut self.sent,
            &mut self.retransmitted,
            &mut self.retransmits,
            &mut self.retransmit_segments,
            &mut self.rto_stall,
            &mut self.syn_retry,
            &mut self.stall_buckets,
            &mut self.stall_sum,
            &mut self.drops,
            &mut self.leaks,
            &mut self.conntrack_entries,
            &mut self.conntrack_max,
            &mut self.conntrack_events,
            &mut self.nat_info,
            &mut self.path_mtu,
            &mut self.findings,
        ]
    }
}

/// Every family at once. A NAT binding goes at once when the table no longer has it, or after
/// the grace period if the table cannot be read.
impl Lifecycle for Families {
    fn mark_shown(&mut self) {
        for series in self.all_mut() {
            series.mark_shown();
        }
    }

    fn release(&mut self) {
        for series in self.all_mut() {
            series.release();
        }
    }

    fn expire(&mut self, now: Instant, grace: Duration) -> usize {
        self.all_mut()
            .into_iter()
            .map(|s| s.expire(now, grace))
            .sum()
    }

    fn len(&self) -> usize {
        self.all().iter().map(|s| s.len()).sum()
    }
}

/// Everything a scrape shows, updated by [`Exporter::collect`].
pub(crate) struct Exporter {
    pub(crate) passes: Passes,
    limits: Limits,
    /// Last segment counters per namespace and when the namespace was last seen.
    netns_tcp: HashMap<u32, (TcpSegments, Instant)>,
    /// The host's NAT audit as last read.
    pub(crate) nat_audit: NatAudit,
    /// The findings of the last pass, over the findings window.
    findings: Vec<Finding>,

    pub(crate) series: Families,

    workloads: Slots<String>,
    remotes: HashMap<String, TopK<String>>,
    locations: TopK<String>,
    /// Series refused by a cap, per family, counted per pass.
    pub(crate) series_dropped: BTreeMap<&'static str, u64>,
    /// What became of each user-space source on the last pass (`bpf_stats` is read at
    /// scrape time).
    pub(crate) collectors: BTreeMap<&'static str, SourceState>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    /// Takes the first snapshot: counting starts here. `notes` are the start-up's, `docker`
    /// whether the Docker API named the containers (`None`: not asked).
    pub(crate) fn new(
        pipeline: Pipeline,
        notes: &[String],
        docker: Option<bool>,
        (limits, findings_window): (Limits, Duration),
    ) -> Result<Self, ReadError> {
        for note in notes.iter().chain(&pipeline.probes.notes) {
            log::info!("{note}");
        }
        let mut passes = Passes::new(pipeline, limits.series_grace_period, findings_window)?;
        let baseline = passes.baseline();
        let now = Instant::now();
        let mut exporter = Self {
            passes,
            limits,
            netns_tcp: HashMap::new(),
            nat_audit: baseline.nat_audit.clone(),
            findings: Vec::new(),
            series: Families::default(),
            workloads: Slots::new(limits.max_workloads),
            remotes: HashMap::new(),
            locations: TopK::new(limits.max_drop_locations),
            series_dropped: BTreeMap::new(),
            collectors: COLLECTORS
                .iter()
                .filter(|(c, _)| *c != "bpf_stats")
                .map(|(c, _)| match *c {
                    "docker" => (*c, docker.map_or(SourceState::Off, SourceState::worked)),
                    _ => (*c, SourceState::Ok),
                })
                .collect(),
        };
        // The baseline: what namespaces counted before the agent started is served at once.
        exporter.fold_segments(&baseline, now);
        exporter.fold_conntrack(&baseline, now);
        exporter.series.settle();
        Ok(exporter)
    }

    /// One pass of the engine, folded into the series. `full` also refreshes names, the NAT
    /// table and path MTUs. Fails, changing nothing, when the maps cannot be read.
    pub(crate) fn collect(&mut self, full: bool) -> Result<(), ReadError> {
        let now = Instant::now();
        let pass = match self.passes.pass(full) {
            Ok(pass) => pass,
            Err(e) => {
                log::warn!("reading the maps: {e}");
                self.collectors.insert("maps", SourceState::Failed);
                return Err(e);
            }
        };
        self.note_sources(&pass);
        let evidence = &pass.evidence;
        self.nat_audit.clone_from(&evidence.nat_audit);
        self.series.release();
        self.fold_segments(evidence, now);
        self.fold_retransmits(evidence, now);
        self.fold_drops(evidence, now);
        self.fold_leaks(evidence, now);
        self.fold_conntrack(evidence, now);
        self.fold_nat(evidence, now);
        self.fold_paths(evidence, now);
        self.fold_findings(&pass.window, now);
        self.expire(now);
        Ok(())
    }

    /// What became of each user-space source in this pass.
    fn note_sources(&mut self, pass: &Pass) {
        let evidence = &pass.evidence;
        let mut note = |collector, state| {
            self.collectors.insert(collector, state);
        };
        note("maps", SourceState::Ok);
        note("snmp", SourceState::worked(!evidence.namespaces.is_empty()));
        // The last answer of the names thread. Not asked (no socket, or no permission by
        // choice): off, not failing.
        note(
            "docker",
            pass.docker.map_or(SourceState::Off, SourceState::worked),
        );
        note("conntrack", SourceState::worked(pass.conntrack));
        if let Some(read) = pass.nat_table {
            let audit = &evidence.nat_audit;
            let rules = if audit.no_tools {
                SourceState::Off
            } else {
                SourceState::worked(audit.unavailable.is_empty())
            };
            note("nat_rules", rules);
            note("nat_table", SourceState::worked(read));
        }
        let named = evidence.drops.iter().all(|d| d.location.function.is_some());
        note("kallsyms", SourceState::worked(named));
    }

    /// Whether a workload may have series; counts the refusal against `family` if not.
    fn admit(&mut self, workload: &str, family: &'static str, now: Instant) -> bool {
        let admitted = self.workloads.admit(workload.to_owned(), now);
        if !admitted {
            *self.series_dropped.entry(family).or_default() += 1;
        }
        admitted
    }

    /// Segment counters per namespace, the kernel's own: growth since the last reading, so
    /// that a namespace recreated under the same name continues its series.
    fn fold_segments(&mut self, evidence: &Evidence, now: Instant) {
        for namespace in &evidence.namespaces {
            let tcp = namespace.segments;
            let delta = match self.netns_tcp.get(&namespace.netns) {
                Some((before, _))
                    if tcp.out_segs >= before.out_segs
                        && tcp.retrans_segs >= before.retrans_segs =>
                {
                    tcp.since(before)
                }
                // First seen, or the inode was reused by a new namespace: from its creation.
                _ => tcp,
            };
            self.netns_tcp.insert(namespace.netns, (tcp, now));
            let workload = &namespace.workload;
            if workload.netns_shared && workload.kind != WorkloadKind::Host {
                continue;
            }
            let labels = WorkloadLabels::of(workload);
            // Every namespace gets its series at once, also idle, so that the ratio has both.
            if !self.admit(&workload.name, family::SENT, now) {
                continue;
            }
            self.series
                .sent
                .add_alive(labels.clone(), delta.out_segs, now);
            self.series
                .retransmitted
                .add_alive(labels, delta.retrans_segs, now);
        }
    }

    fn fold_retransmits(&mut self, evidence: &Evidence, now: Instant) {
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
        let max = self.limits.max_remotes_per_workload;
        let top = self
            .remotes
            .entry(workload.to_owned())
            .or_insert_with(|| TopK::new(max));
        let remote = match remote {
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
        };
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

    fn fold_drops(&mut self, evidence: &Evidence, now: Instant) {
        for drop in &evidence.drops {
            if !self.admit(&drop.workload.name, family::DROPS, now) {
                continue;
            }
            // Unnamed (no CAP_SYSLOG), an address would be an unbounded label.
            let location = drop
                .location
                .function
                .clone()
                .unwrap_or_else(|| "unknown".to_owned());
            let location = match self.locations.admit(&location, drop.packets, now) {
                Admission::Kept => location,
                Admission::Promoted { demoted } => {
                    self.series.drops.remove_where(|l| l.location == demoted);
                    location
                }
                Admission::Refused => "other".to_owned(),
            };
            let labels = DropLabels {
                workload: drop.workload.name.clone(),
                reason: drop.reason.name().to_owned(),
                location,
            };
            self.series.drops.add(labels, drop.packets, now);
        }
    }

    fn fold_leaks(&mut self, evidence: &Evidence, now: Instant) {
        for leak in &evidence.leaks {
            let workload = leak.owner.to_string();
            if !self.admit(&workload, family::LEAKS, now) {
                continue;
            }
            let labels = LeakLabels {
                workload,
                interface: leak.interface.clone(),
            };
            self.series.leaks.add(labels, leak.packets, now);
        }
    }

    /// Conntrack of the namespaces that are busy, or were (their series stay up to date).
    fn fold_conntrack(&mut self, evidence: &Evidence, now: Instant) {
        for ct in &evidence.conntrack {
            let labels = NamespaceLabels {
                namespace: ct.namespace.name().to_owned(),
            };
            let shown = self.series.conntrack_entries.get(&labels).is_some();
            if !(ct.busy() || shown) || !self.admit(&labels.namespace, family::CONNTRACK, now) {
                continue;
            }
            let stats = &ct.stats;
            self.series
                .conntrack_entries
                .set(labels.clone(), stats.entries.unwrap_or(0), now);
            if let Some(max) = stats.max {
                self.series.conntrack_max.set(labels.clone(), max, now);
            }
            for (event, count) in stats.events() {
                let event = ConntrackEventLabels {
                    namespace: labels.namespace.clone(),
                    event,
                };
                self.series.conntrack_events.add_alive(event, count, now);
            }
        }
    }

    /// Which workload leaves as which address, when the pass read the NAT table.
    fn fold_nat(&mut self, evidence: &Evidence, now: Instant) {
        let Some(pairs) = &evidence.nat else {
            return;
        };
        for pair in pairs {
            if !self.admit(&pair.workload, family::NAT, now) {
                continue;
            }
            let labels = NatLabels {
                workload: pair.workload.clone(),
                source: pair.source.to_string(),
                translated: pair.translated.to_string(),
            };
            self.series.nat_info.set(labels, 1, now);
        }
        // A translation no longer in the table is gone now, not after a grace period.
        self.series.nat_info.retain_set_since(now);
    }

    fn fold_paths(&mut self, evidence: &Evidence, now: Instant) {
        for path in &evidence.paths {
            if !self.admit(&path.workload, family::PATH_MTU, now) {
                continue;
            }
            for hop in &path.hops {
                let labels = PathLabels {
                    workload: path.workload.clone(),
                    hop: hop.role.as_str(),
                    interface: hop.interface.clone(),
                };
                self.series.path_mtu.set(labels, u64::from(hop.mtu), now);
            }
        }
    }

    /// Series, slots and namespaces unused for longer than the grace period go.
    fn expire(&mut self, now: Instant) {
        let grace = self.limits.series_grace_period;
        let gone: Vec<u32> = self
            .netns_tcp
            .iter()
            .filter(|(_, (_, seen))| now.saturating_duration_since(*seen) > grace)
            .map(|(netns, _)| *netns)
            .collect();
        for netns in gone {
            self.netns_tcp.remove(&netns);
        }
        self.series.expire(now, grace);
        // Workloads still live keep their slot: refresh it from the segment series.
        let live_workloads: Vec<String> = self
            .series
            .sent
            .iter()
            .map(|(labels, _)| labels.workload.clone())
            .collect();
        for workload in live_workloads {
            self.workloads.admit(workload, now);
        }
        self.workloads.expire(now, grace);
        for slots in self.remotes.values_mut() {
            slots.expire(now, grace);
        }
        self.remotes.retain(|_, slots| !slots.is_empty());
        self.locations.expire(now, grace);
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
