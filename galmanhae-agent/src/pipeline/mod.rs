//! One engine for `diagnose` and `run`: every source, each at its own rate, into [`Evidence`].
//!
//! Every tick takes a [`Snapshot`] (kernel maps, namespaces, their segment counters and
//! conntrack statistics); a [`Window`] turns two snapshots into a [`Summary`]; the slower
//! sources ([`nat`]: the NAT table and audit; [`paths`]: path MTUs; names) are read when a
//! command asks; [`Pipeline::evidence`] joins them. [`housekeeping`] frees idle kernel
//! entries, [`passes`] is the daemon's sliding window.

mod drops;
mod evidence;
mod findings_window;
pub(crate) mod housekeeping;
mod leaks;
pub(crate) mod nat;
pub(crate) mod passes;
mod paths;
mod window;

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use self::nat::NatSources;
pub(crate) use self::window::{Summary, Window};
use crate::{
    attribute::{Attributor, procfs},
    collect::{
        drops::{self as drop_maps, DropSample},
        nat_leaks::{self, LeakSample},
        netfilter::{self, ConntrackSample},
        netns_snmp::{self, TcpSegments},
        retransmits::{self, ReadError, RetransmitSample},
        time_lost::TimeLostSample,
    },
    kernel::probes::Probes,
    model::{Namespace, Path},
};

/// Everything collected at one instant. Counters are cumulative.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub(crate) taken: Instant,
    pub(crate) retransmits: RetransmitSample,
    pub(crate) drops: DropSample,
    pub(crate) leaks: LeakSample,
    pub(crate) time_lost: TimeLostSample,
    pub(crate) netns_tcp: BTreeMap<u32, TcpSegments>,
    /// Conntrack statistics of every namespace that has a process.
    pub(crate) conntrack: ConntrackSample,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            taken: Instant::now(),
            retransmits: RetransmitSample::default(),
            drops: DropSample::default(),
            leaks: LeakSample::default(),
            time_lost: TimeLostSample::default(),
            netns_tcp: BTreeMap::new(),
            conntrack: ConntrackSample::default(),
        }
    }
}

/// The loaded programs, the attribution state and the slower sources.
pub(crate) struct Pipeline {
    pub(crate) probes: Probes,
    pub(crate) attributor: Attributor,
    /// Each process's network namespace at the last scan, and when all were last checked.
    namespaces: HashMap<i32, u32>,
    last_restat: Option<Instant>,
    /// The task iterator failed once (said in the log); /proc is read instead.
    task_iter_failed: bool,
    pub(crate) nat: NatSources,
}

/// Every process's namespace is checked again this often (see [`procfs::scan`]).
const RESTAT_EVERY: Duration = Duration::from_secs(10);

impl Pipeline {
    pub(crate) fn new(probes: Probes, attributor: Attributor, nat: NatSources) -> Self {
        Self {
            probes,
            attributor,
            namespaces: HashMap::new(),
            last_restat: None,
            task_iter_failed: false,
            nat,
        }
    }

    /// Reads the maps, then scans namespaces and reads their counters and conntrack.
    pub(crate) fn snapshot(&mut self) -> Result<Snapshot, ReadError> {
        let retransmits = retransmits::read(&self.probes.ebpf)?;
        let drops = drop_maps::read(&self.probes.ebpf)?;
        let leaks = nat_leaks::read(&self.probes.ebpf)?;
        let time_lost = TimeLostSample::read(&self.probes.ebpf, self.probes.recoveries.as_ref())?;
        let processes = self.processes();
        self.attributor.observe(&processes);
        Ok(Snapshot {
            taken: Instant::now(),
            retransmits,
            drops,
            leaks,
            time_lost,
            netns_tcp: netns_snmp::read_all(&processes),
            conntrack: netfilter::sample(&self.attributor),
        })
    }

    /// Every process's namespace: from the kernel's task list where the iterator is attached,
    /// else from /proc (which needs ptrace access to other users' processes).
    fn processes(&mut self) -> procfs::ProcessTable {
        if let Some(tasks) = &self.probes.tasks {
            match tasks.read() {
                Ok(tasks) => return procfs::from_tasks(&tasks),
                Err(e) if !self.task_iter_failed => {
                    self.task_iter_failed = true;
                    log::warn!("{e}; reading namespaces from /proc instead");
                }
                Err(_) => {}
            }
        }
        let restat = self
            .last_restat
            .is_none_or(|last| last.elapsed() >= RESTAT_EVERY);
        if restat {
            self.last_restat = Some(Instant::now());
        }
        procfs::scan(&mut self.namespaces, restat)
    }

    /// Attributes a window, its flows' NAT sides looked up first (those not known yet).
    pub(crate) fn summarize(&mut self, window: &Window) -> Summary {
        let deltas = window.deltas();
        self.nat
            .follow(&Window::nat_wanted(&deltas, self.attributor.host_netns()));
        window.summarize(deltas, &mut self.attributor, self.nat.index())
    }

    /// The MTUs on the path of each workload that retransmitted in `summary`.
    pub(crate) fn paths(&self, summary: &Summary) -> Vec<Path> {
        paths::read(summary, &self.attributor)
    }
}

/// How a namespace is named: `host`, its workload's name, or unknown (inode 0).
pub(crate) fn namespace(attributor: &mut Attributor, netns: u32) -> Namespace {
    if netns == 0 {
        Namespace::Unknown
    } else if Some(netns) == attributor.host_netns() {
        Namespace::Host
    } else {
        Namespace::Workload(attributor.workload(netns, 0).name.to_string())
    }
}
