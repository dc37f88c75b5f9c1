//! The exporter: a pass of the engine after another, each folded into the series.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use hashbrown::HashMap;

use super::{
    Families, Lifecycle as _,
    health::{COLLECTORS, SourceState},
    series::{Slots, TopK},
};
use crate::{
    collect::{netfilter::NatAudit, netns_snmp::TcpSegments, retransmits::ReadError},
    config::Limits,
    findings::Finding,
    pipeline::{
        Pipeline,
        passes::{Pass, Passes},
    },
};

/// Everything a scrape shows, updated by [`Exporter::collect`].
pub(crate) struct Exporter {
    pub(crate) passes: Passes,
    pub(super) limits: Limits,
    /// Last segment counters per namespace and when the namespace was last seen.
    pub(super) netns_tcp: HashMap<u32, (TcpSegments, Instant)>,
    /// The host's NAT audit as last read.
    pub(crate) nat_audit: NatAudit,
    /// The findings of the last pass, over the findings window.
    pub(super) findings: Vec<Finding>,

    pub(crate) series: Families,

    pub(super) workloads: Slots<String>,
    pub(super) remotes: HashMap<String, TopK<String>>,
    pub(super) locations: TopK<String>,
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
    pub(super) fn admit(&mut self, workload: &str, family: &'static str, now: Instant) -> bool {
        let admitted = self.workloads.admit(workload.to_owned(), now);
        if !admitted {
            *self.series_dropped.entry(family).or_default() += 1;
        }
        admitted
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
