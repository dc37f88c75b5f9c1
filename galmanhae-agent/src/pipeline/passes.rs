//! The daemon's engine: a pass reads every source due, attributes what changed since the
//! last pass into [`Evidence`], keeps the kernel maps and attribution tidy, and keeps the
//! passes of the findings window: the evidence findings are evaluated on slides with it.

use std::time::{Duration, Instant};

use hashbrown::HashMap;

use super::{
    Pipeline, Snapshot, Summary, Window, findings_window::FindingsWindow,
    housekeeping::Housekeeping,
};
use crate::{
    collect::{netfilter::ConntrackSample, retransmits::ReadError},
    model::{Evidence, Path},
};

/// What one pass saw, and what became of the sources that are not always read.
#[derive(Debug)]
pub(crate) struct Pass {
    /// What changed since the last pass.
    pub(crate) evidence: Evidence,
    /// Everything since the start of the findings window (the passes that ended in it).
    pub(crate) window: Evidence,
    /// Whether the host's NAT table could be read; `None` when it was not due.
    pub(crate) nat_table: Option<bool>,
    /// Whether the host's conntrack statistics could be read.
    pub(crate) conntrack: bool,
    /// Whether the Docker API answered its last ask; `None` when it is not asked.
    pub(crate) docker: Option<bool>,
}

pub(crate) struct Passes {
    pub(crate) pipeline: Pipeline,
    /// The maps as of the last pass: the next pass counts from here.
    last: Snapshot,
    housekeeping: Housekeeping,
    /// When each namespace was last seen; one gone for `forget_after` is forgotten.
    seen: HashMap<u32, Instant>,
    forget_after: Duration,
    /// The paths as last read (on full passes).
    paths: Vec<Path>,
    /// The passes of the last findings window.
    window: FindingsWindow,
}

impl Passes {
    /// Takes the first snapshot: counting starts here.
    pub(crate) fn new(
        mut pipeline: Pipeline,
        forget_after: Duration,
        findings_window: Duration,
    ) -> Result<Self, ReadError> {
        let last = pipeline.snapshot()?;
        Ok(Self {
            pipeline,
            last,
            housekeeping: Housekeeping::default(),
            seen: HashMap::new(),
            forget_after,
            paths: Vec::new(),
            window: FindingsWindow::new(findings_window),
        })
    }

    /// What namespaces counted before the agent started: cumulative segment counters and
    /// conntrack statistics since each namespace's creation, and no flows.
    pub(crate) fn baseline(&mut self) -> Evidence {
        let mut start = self.last.clone();
        start.conntrack = ConntrackSample::default();
        let mut window = Window::new(start);
        window.update(self.last.clone());
        let now = Instant::now();
        for netns in self.last.netns_tcp.keys() {
            self.seen.insert(*netns, now);
        }
        let summary = self.pipeline.summarize(&window);
        self.pipeline.evidence(&summary)
    }

    /// One pass: read the maps, namespaces and conntrack, attribute what changed since the
    /// last pass. `full` also refreshes names, the NAT audit and table, and path MTUs. Fails,
    /// changing nothing, when the maps cannot be read.
    pub(crate) fn pass(&mut self, full: bool) -> Result<Pass, ReadError> {
        let now = Instant::now();
        let snapshot = self.pipeline.snapshot()?;
        // A new namespace is most likely a new container: name it before its first series.
        let new_namespace = snapshot
            .netns_tcp
            .keys()
            .any(|netns| !self.seen.contains_key(netns));
        if full || new_namespace {
            self.pipeline.attributor.refresh_names();
        }
        if full {
            self.refresh_audit();
        }
        let host = self.pipeline.attributor.host_netns();
        let conntrack = host.is_some_and(|h| snapshot.conntrack.netns.contains_key(&h));
        for note in &snapshot.conntrack.notes {
            log::debug!("{note}");
        }
        for netns in snapshot.netns_tcp.keys() {
            self.seen.insert(*netns, now);
        }

        let mut window = Window::new(std::mem::take(&mut self.last));
        window.update(snapshot);
        let summary = self.pipeline.summarize(&window);
        self.last = window.into_latest();
        let mut evidence = self.pipeline.evidence(&summary);
        let nat_table = full.then(|| self.pipeline.nat.table_error().is_none());
        if let Some(e) = self.pipeline.nat.table_error() {
            log::debug!("NAT table: {e}");
        }
        if nat_table == Some(true) {
            evidence.nat = Some(self.pipeline.nat.pairs(&mut self.pipeline.attributor));
        }
        self.housekeeping.free_idle(
            &mut self.pipeline.probes,
            &mut self.last,
            &summary,
            now,
            full,
        );
        let window = self.slide(summary, now, full);
        if full {
            evidence.paths.clone_from(&self.paths);
        }
        self.forget(now);
        Ok(Pass {
            evidence,
            window,
            nat_table,
            conntrack,
            docker: self.pipeline.attributor.docker_answered(),
        })
    }

    /// Adds a pass to the findings window, drops the passes that ended before it, and
    /// returns the window's evidence (paths read again on `full` passes, for the workloads
    /// that retransmitted in the window).
    fn slide(&mut self, summary: Summary, now: Instant, full: bool) -> Evidence {
        self.window.add(summary, now);
        let merged = self.window.summary();
        if full {
            self.paths = self.pipeline.paths(&merged);
        }
        let mut window = self.pipeline.evidence(&merged);
        window.paths.clone_from(&self.paths);
        window
    }

    /// The length of the findings window.
    pub(crate) fn findings_window(&self) -> Duration {
        self.window.length()
    }

    /// The maps as of the last pass.
    pub(crate) fn last(&self) -> &Snapshot {
        &self.last
    }

    /// Kernel map entries freed so far.
    pub(crate) fn evicted(&self) -> u64 {
        self.housekeeping.evicted
    }

    /// The audit (now and then) and the leak watch.
    fn refresh_audit(&mut self) {
        let nat = &mut self.pipeline.nat;
        if let Some(note) = nat.audit_and_watch(&mut self.pipeline.probes, false) {
            log::debug!("{note}");
        }
    }

    /// Forgets namespaces gone for longer than `forget_after` (a daemon would otherwise
    /// remember every container that ever ran).
    fn forget(&mut self, now: Instant) {
        let after = self.forget_after;
        let gone: Vec<u32> = self
            .seen
            .iter()
            .filter(|(_, seen)| now.saturating_duration_since(**seen) > after)
            .map(|(netns, _)| *netns)
            .collect();
        for netns in gone {
            self.seen.remove(&netns);
            self.pipeline.attributor.forget(netns);
        }
    }
}
