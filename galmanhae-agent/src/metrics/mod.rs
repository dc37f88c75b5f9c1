//! The Prometheus sink of `galmanhae run`: the diagnose pipeline run pass after pass, its
//! deltas folded into long-lived series. Families and labels are a contract:
//! `deploy/METRICS.md`.
//!
//! A pass runs on every scrape (the maps are read at scrape time) and on a timer (so that
//! vanished containers are seen, names refreshed, the NAT table and path MTUs read).
//! [`families`] encodes the series with `prometheus-client`; [`http`] serves them.

pub mod families;
pub mod health;
pub mod http;
pub mod series;
mod time_lost;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::{Duration, Instant},
};

use galmanhae_common::{
    drop::DropKey,
    leak::LeakKey,
    retransmit::{FlowKey, FlowState, RetransmitCounters, RetransmitKind, SocketState},
};
use prometheus_client::encoding::EncodeLabelSet;

use self::health::{COLLECTORS, SourceState};
pub use self::series::Lifecycle;
use self::series::{Admission, Series, Slots, TopK};
use crate::{
    addr::endpoints,
    attribute::{Workload, WorkloadKind, nat::NatIndex},
    collect::{
        maps::{IdleKeys, ReadError, remove_keys},
        nat_leaks, netfilter,
        netns_snmp::TcpSegments,
        paths,
    },
    commands::Started,
    config::Limits,
    conntrack::Stats,
    pipeline::{Pipeline, Snapshot, Summary, Window},
    report::NatAudit,
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
pub struct RemoteLabels {
    pub workload: String,
    pub remote: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OnlyWorkload {
    pub workload: String,
}

/// A bucket (index into `STALL_BUCKETS_MS`, `+Inf` last) of a workload's stall histogram.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StallBucket {
    pub workload: String,
    pub bucket: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RetransmitLabels {
    pub workload: String,
    pub remote: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DropLabels {
    pub workload: String,
    pub reason: String,
    pub location: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LeakLabels {
    pub workload: String,
    pub interface: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConntrackEventLabels {
    pub namespace: String,
    pub event: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct NatLabels {
    pub workload: String,
    pub source: String,
    pub translated: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PathLabels {
    pub workload: String,
    pub hop: &'static str,
    pub interface: String,
}

/// Family names as PromQL sees them, for `galmanhae_series_dropped_total{family}`.
pub mod family {
    pub const SENT: &str = "galmanhae_tcp_sent_segments_total";
    pub const RETRANSMITTED: &str = "galmanhae_tcp_retransmitted_segments_total";
    pub const RETRANSMITS: &str = "galmanhae_tcp_retransmits_total";
    pub const DROPS: &str = "galmanhae_skb_drops_total";
    pub const LEAKS: &str = "galmanhae_nat_leaked_packets_total";
    pub const NAT: &str = "galmanhae_nat_info";
    pub const PATH_MTU: &str = "galmanhae_path_mtu_bytes";
    pub const CONNTRACK: &str = "galmanhae_conntrack_entries";
}

/// A flow's counters free their kernel entry after this long without a retransmit, once the
/// map is half full.
const FLOW_IDLE: Duration = Duration::from_secs(60);
/// The MASQUERADE audit (`iptables-save`, a fork) runs this often, not every pass.
const AUDIT_EVERY: Duration = Duration::from_secs(60);

/// The series of every family the agent folds from its passes (its own health is read at
/// scrape time, see [`families`]).
#[derive(Debug, Default)]
pub struct Families {
    pub sent: Series<WorkloadLabels>,
    pub retransmitted: Series<WorkloadLabels>,
    pub retransmits: Series<RetransmitLabels>,
    pub retransmit_segments: Series<RemoteLabels>,
    /// Nanoseconds in RTO recovery, and waiting for SYN retries, per remote.
    pub rto_stall: Series<RemoteLabels>,
    pub syn_retry: Series<RemoteLabels>,
    /// Completed recoveries per duration bucket, and their nanoseconds, per workload.
    pub stall_buckets: Series<StallBucket>,
    pub stall_sum: Series<OnlyWorkload>,
    pub drops: Series<DropLabels>,
    pub leaks: Series<LeakLabels>,
    pub conntrack_entries: Series<NamespaceLabels>,
    pub conntrack_max: Series<NamespaceLabels>,
    pub conntrack_events: Series<ConntrackEventLabels>,
    pub nat_info: Series<NatLabels>,
    pub path_mtu: Series<PathLabels>,
}

impl Families {
    fn all(&self) -> [&dyn Lifecycle; 15] {
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
        ]
    }

    fn all_mut(&mut self) -> [&mut dyn Lifecycle; 15] {
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
pub struct Exporter {
    pub pipeline: Pipeline,
    limits: Limits,
    /// The maps as of the last pass: the next pass counts from here.
    last: Snapshot,
    sockets_idle: IdleKeys<u64>,
    flows_idle: IdleKeys<FlowKey>,
    drops_idle: IdleKeys<DropKey>,
    leaks_idle: IdleKeys<LeakKey>,
    /// Last segment counters per namespace and when the namespace was last seen.
    netns_tcp: HashMap<u32, (TcpSegments, Instant)>,
    conntrack_last: HashMap<u32, Stats>,
    nat: NatIndex,
    pub nat_audit: NatAudit,
    audited: Instant,

    pub series: Families,

    workloads: Slots<String>,
    remotes: HashMap<String, TopK<String>>,
    locations: TopK<String>,
    /// Series refused by a cap, per family, counted per pass.
    pub series_dropped: BTreeMap<&'static str, u64>,
    /// Kernel map entries freed because their flow went idle.
    pub evicted: u64,
    /// What became of each user-space source on the last pass (`bpf_stats` is read at
    /// scrape time).
    pub collectors: BTreeMap<&'static str, SourceState>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    /// Takes the first snapshot: counting starts here.
    pub fn new(started: Started, limits: Limits) -> Result<Self, ReadError> {
        let Started {
            mut pipeline,
            nat_audit,
            notes,
            docker,
            ..
        } = started;
        for note in notes.iter().chain(&pipeline.probes.notes) {
            log::info!("{note}");
        }
        let last = pipeline.snapshot()?;
        let now = Instant::now();
        let mut exporter = Self {
            pipeline,
            limits,
            last,
            sockets_idle: IdleKeys::default(),
            flows_idle: IdleKeys::default(),
            drops_idle: IdleKeys::default(),
            leaks_idle: IdleKeys::default(),
            netns_tcp: HashMap::new(),
            conntrack_last: HashMap::new(),
            nat: NatIndex::default(),
            nat_audit,
            audited: now,
            series: Families::default(),
            workloads: Slots::new(limits.max_workloads),
            remotes: HashMap::new(),
            locations: TopK::new(limits.max_drop_locations),
            series_dropped: BTreeMap::new(),
            evicted: 0,
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
        exporter.fold_segments(now);
        exporter.fold_conntrack(now);
        exporter.series.settle();
        Ok(exporter)
    }

    /// One pass: read the maps and namespaces, attribute what changed since the last pass,
    /// fold it into the series. `full` also refreshes names, the NAT table and path MTUs.
    /// Fails, changing nothing, when the maps cannot be read.
    pub fn collect(&mut self, full: bool) -> Result<(), ReadError> {
        let now = Instant::now();
        let snapshot = match self.pipeline.snapshot() {
            Ok(snapshot) => snapshot,
            Err(e) => {
                log::warn!("reading the maps: {e}");
                self.collectors.insert("maps", SourceState::Failed);
                return Err(e);
            }
        };
        self.collectors.insert("maps", SourceState::Ok);
        self.collectors
            .insert("snmp", SourceState::worked(!snapshot.netns_tcp.is_empty()));
        // A new namespace is most likely a new container: name it before its first series.
        let new_namespace = snapshot
            .netns_tcp
            .keys()
            .any(|netns| !self.netns_tcp.contains_key(netns));
        if full || new_namespace {
            self.pipeline.attributor.refresh_names();
        }
        // The last answer of the names thread. Not asked (no socket, or no permission by
        // choice): off, not failing.
        let docker = self.pipeline.attributor.docker_answered();
        self.collectors.insert(
            "docker",
            docker.map_or(SourceState::Off, SourceState::worked),
        );
        if full {
            self.refresh_nat(now);
        }
        self.series.release();
        let mut window = Window::new(std::mem::take(&mut self.last));
        window.update(snapshot);
        let summary = window.summarize(&mut self.pipeline.attributor, &self.nat);
        self.last = window.into_latest();

        self.fold_segments(now);
        self.fold_retransmits(&summary, now);
        self.fold_drops(&summary, now);
        self.fold_leaks(&summary, now);
        self.fold_conntrack(now);
        if full {
            self.fold_paths(&summary, now);
        }
        self.expire(now);
        self.free_idle_entries(&summary, now);
        Ok(())
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
    fn fold_segments(&mut self, now: Instant) {
        let namespaces: Vec<(u32, TcpSegments)> =
            self.last.netns_tcp.iter().map(|(n, t)| (*n, *t)).collect();
        for (netns, tcp) in namespaces {
            let delta = match self.netns_tcp.get(&netns) {
                Some((before, _))
                    if tcp.out_segs >= before.out_segs
                        && tcp.retrans_segs >= before.retrans_segs =>
                {
                    tcp.since(before)
                }
                // First seen, or the inode was reused by a new namespace: from its creation.
                _ => tcp,
            };
            self.netns_tcp.insert(netns, (tcp, now));
            let workload = self.pipeline.attributor.workload(netns, 0);
            if workload.netns_shared && workload.kind != WorkloadKind::Host {
                continue;
            }
            let labels = WorkloadLabels::of(&workload);
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

    fn fold_retransmits(&mut self, summary: &Summary, now: Instant) {
        for flow in &summary.flows {
            let remote = remote_label(&flow.key, &flow.counters);
            let remote =
                self.count_retransmits(&flow.workload.name, Some(remote), &flow.counters, now);
            if let Some(remote) = remote {
                self.count_time_lost(&flow.workload.name, remote, &flow.time_lost, now);
            }
        }
        for (owner, counters) in &summary.retransmits.overflow {
            let workload = self
                .pipeline
                .attributor
                .workload(owner.netns, owner.cgroup_id);
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

    fn fold_drops(&mut self, summary: &Summary, now: Instant) {
        self.pipeline
            .probes
            .symbols
            .learn(summary.drops.iter().map(|d| d.location));
        let mut kallsyms_ok = true;
        for drop in &summary.drops {
            if !self.admit(&drop.workload.name, family::DROPS, now) {
                continue;
            }
            let probes = &self.pipeline.probes;
            // Unnamed (no CAP_SYSLOG), an address would be an unbounded label.
            let location = probes.symbols.resolved(drop.location);
            kallsyms_ok &= location.is_some();
            let location = location.unwrap_or("unknown").to_owned();
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
                reason: probes.drop_reasons.name(drop.reason),
                location,
            };
            self.series.drops.add(labels, drop.packets, now);
        }
        self.collectors
            .insert("kallsyms", SourceState::worked(kallsyms_ok));
    }

    fn fold_leaks(&mut self, summary: &Summary, now: Instant) {
        let reports = nat_leaks::reports(
            &summary.leaks,
            &mut self.pipeline.attributor,
            &self.pipeline.probes.uplinks,
        );
        for report in reports {
            if !self.admit(&report.workload, family::LEAKS, now) {
                continue;
            }
            let labels = LeakLabels {
                workload: report.workload,
                interface: report.interface,
            };
            self.series.leaks.add(labels, report.packets, now);
        }
    }

    fn fold_conntrack(&mut self, now: Instant) {
        let sample = netfilter::sample(&self.pipeline.attributor);
        let host = self.pipeline.attributor.host_netns();
        self.collectors.insert(
            "conntrack",
            SourceState::worked(host.is_some_and(|h| sample.netns.contains_key(&h))),
        );
        for note in &sample.notes {
            log::debug!("{note}");
        }
        for (netns, stats) in sample.netns {
            let delta = match self.conntrack_last.get(&netns) {
                Some(before) if stats.insert >= before.insert => stats.since(before),
                _ => stats.clone(),
            };
            let namespace = if Some(netns) == host {
                "host".to_owned()
            } else {
                self.pipeline.attributor.workload(netns, 0).name
            };
            let events = delta.events();
            let busy = stats.entries.unwrap_or(0) > 0
                || events.iter().any(|(_, n)| *n > 0)
                || self
                    .series
                    .conntrack_entries
                    .get(&NamespaceLabels {
                        namespace: namespace.clone(),
                    })
                    .is_some();
            self.conntrack_last.insert(netns, stats.clone());
            if !busy || !self.admit(&namespace, family::CONNTRACK, now) {
                continue;
            }
            let labels = NamespaceLabels { namespace };
            self.series
                .conntrack_entries
                .set(labels.clone(), stats.entries.unwrap_or(0), now);
            if let Some(max) = stats.max {
                self.series.conntrack_max.set(labels.clone(), max, now);
            }
            for (event, count) in events {
                let event = ConntrackEventLabels {
                    namespace: labels.namespace.clone(),
                    event,
                };
                self.series.conntrack_events.add_alive(event, count, now);
            }
        }
    }

    /// The host's NAT table (which workload leaves as which address) and, now and then, the
    /// MASQUERADE rules.
    fn refresh_nat(&mut self, now: Instant) {
        if now.saturating_duration_since(self.audited) >= AUDIT_EVERY {
            self.nat_audit = netfilter::audit();
            self.audited = now;
        }
        // The leak watch follows new and gone subnets (the audit) and uplinks (every call).
        if let Some(note) = nat_leaks::watch(&mut self.pipeline.probes, &self.nat_audit) {
            log::debug!("{note}");
        }
        let rules = if self.nat_audit.no_tools {
            SourceState::Off
        } else {
            SourceState::worked(self.nat_audit.unavailable.is_empty())
        };
        self.collectors.insert("nat_rules", rules);
        match netfilter::nat_index() {
            Ok(index) => {
                self.nat = index;
                self.collectors.insert("nat_table", SourceState::Ok);
            }
            Err(e) => {
                log::debug!("NAT table: {e}");
                self.collectors.insert("nat_table", SourceState::Failed);
                return;
            }
        }
        let mut pairs: Vec<(String, String, String)> = Vec::new();
        for binding in self.nat.bindings() {
            if binding.local.ip() == binding.nat_local.ip() {
                continue;
            }
            let Some(netns) = self
                .pipeline
                .attributor
                .netns_of_address(binding.local.ip())
            else {
                continue;
            };
            let workload = self.pipeline.attributor.workload(netns, 0).name;
            pairs.push((
                workload,
                binding.local.ip().to_string(),
                binding.nat_local.ip().to_string(),
            ));
        }
        pairs.sort_unstable();
        pairs.dedup();
        for (workload, source, translated) in pairs {
            if !self.admit(&workload, family::NAT, now) {
                continue;
            }
            let labels = NatLabels {
                workload,
                source,
                translated,
            };
            self.series.nat_info.set(labels, 1, now);
        }
        // A translation no longer in the table is gone now, not after a grace period.
        self.series.nat_info.retain_set_since(now);
    }

    fn fold_paths(&mut self, summary: &Summary, now: Instant) {
        for path in paths::reports(summary, &self.pipeline.attributor) {
            if !self.admit(&path.workload, family::PATH_MTU, now) {
                continue;
            }
            for hop in path.hops {
                let labels = PathLabels {
                    workload: path.workload.clone(),
                    hop: hop.role,
                    interface: hop.interface,
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
            self.conntrack_last.remove(&netns);
            self.pipeline.attributor.forget(netns);
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

    /// Frees kernel entries of sockets, flows, drops and NAT leaks idle for a minute once
    /// their map is half full, so that a daemon that runs for months keeps per-flow detail. Their counts are
    /// already folded.
    fn free_idle_entries(&mut self, summary: &Summary, now: Instant) {
        let ebpf = &mut self.pipeline.probes.ebpf;
        let capacity = self.pipeline.probes.flow_capacity as usize;
        let changed: Vec<u64> = summary.retransmits.sockets.keys().copied().collect();
        self.evicted += free_idle::<u64, SocketState, _>(
            ebpf,
            ("RETRANSMIT_SOCKETS", capacity),
            &mut self.sockets_idle,
            &mut self.last.retransmits.sockets,
            &changed,
            now,
        );
        let changed: Vec<FlowKey> = summary.retransmits.flows.keys().copied().collect();
        self.evicted += free_idle::<FlowKey, FlowState, _>(
            ebpf,
            ("RETRANSMIT_FLOWS", capacity),
            &mut self.flows_idle,
            &mut self.last.retransmits.flows,
            &changed,
            now,
        );
        let changed: Vec<DropKey> = summary.drops.iter().filter_map(|d| d.key).collect();
        self.evicted += free_idle::<DropKey, u64, _>(
            ebpf,
            ("DROPS", galmanhae_common::drop::DROP_MAP_CAPACITY as usize),
            &mut self.drops_idle,
            &mut self.last.drops.flows,
            &changed,
            now,
        );
        let changed: Vec<LeakKey> = summary.leaks.keys().copied().collect();
        self.evicted += free_idle::<LeakKey, u64, _>(
            ebpf,
            ("LEAKS", galmanhae_common::leak::LEAK_MAP_CAPACITY as usize),
            &mut self.leaks_idle,
            &mut self.last.leaks,
            &changed,
            now,
        );
        self.evicted += self.free_closed_sockets();
    }

    /// Deletes the `TIME_LOST` entries of closed sockets, already folded: they never change
    /// again, and the map holds only sockets that may still lose time.
    fn free_closed_sockets(&mut self) -> u64 {
        let closed: Vec<u64> = self
            .last
            .time_lost
            .sockets
            .iter()
            .filter(|(_, s)| s.flags & galmanhae_common::stall::CLOSED != 0)
            .map(|(cookie, _)| *cookie)
            .collect();
        if closed.is_empty() {
            return 0;
        }
        for cookie in &closed {
            self.last.time_lost.sockets.remove(cookie);
        }
        let ebpf = &mut self.pipeline.probes.ebpf;
        match remove_keys::<u64, galmanhae_common::stall::SocketTime>(ebpf, "TIME_LOST", &closed) {
            Ok(n) => n as u64,
            Err(e) => {
                log::warn!("freeing closed sockets of TIME_LOST: {e}");
                0
            }
        }
    }
}

/// Records a pass of one kernel map (`changed`: its keys that counted, `last`: its last read),
/// then, once the map (name, capacity) is half full, deletes its keys idle for [`FLOW_IDLE`]
/// from the kernel and from `last`; returns how many were deleted.
fn free_idle<K: Copy + Eq + std::hash::Hash + aya::Pod, V: aya::Pod, T>(
    ebpf: &mut aya::Ebpf,
    (map, capacity): (&'static str, usize),
    idle: &mut IdleKeys<K>,
    last: &mut HashMap<K, T>,
    changed: &[K],
    now: Instant,
) -> u64 {
    idle.observe(last, changed, now);
    if last.len() * 2 < capacity {
        return 0;
    }
    let keys = idle.idle(now, FLOW_IDLE);
    if keys.is_empty() {
        return 0;
    }
    for key in &keys {
        last.remove(key);
        idle.forget(key);
    }
    match remove_keys::<K, V>(ebpf, map, &keys) {
        Ok(n) => {
            log::debug!("freed {n} idle entries of {map}");
            n as u64
        }
        Err(e) => {
            log::warn!("freeing idle entries of {map}: {e}");
            0
        }
    }
}

/// The server side of a flow: the remote `ip:port` when the workload is the client, the
/// remote's address alone when the workload serves (its peer's port is ephemeral: folded).
fn remote_label(key: &FlowKey, counters: &RetransmitCounters) -> String {
    let (local, remote) = endpoints(key);
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

    #[test]
    fn remote_is_the_server_side() {
        let none = RetransmitCounters::default();
        // The workload connected out: the remote's service port stays.
        assert_eq!(remote_label(&flow(41_000, 5432), &none), "198.19.0.2:5432");
        // The workload serves: the client's ephemeral port is folded.
        assert_eq!(remote_label(&flow(8080, 45_000), &none), "198.19.0.2");
        // Neither ephemeral: the lower port serves.
        assert_eq!(remote_label(&flow(9000, 5432), &none), "198.19.0.2:5432");
        // A SYN-ACK says the workload serves, whatever the ports.
        let mut synack = RetransmitCounters::default();
        synack.kinds[RetransmitKind::SynAck as usize] = 1;
        assert_eq!(remote_label(&flow(40_000, 50_000), &synack), "198.19.0.2");
    }
}
