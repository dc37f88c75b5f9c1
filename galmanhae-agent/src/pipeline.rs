//! One snapshot per tick, shared by `diagnose` and `run`: kernel maps, then namespaces and
//! their segment counters. A [`Window`] turns two snapshots into per-workload deltas.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use galmanhae_common::retransmit::{FlowKey, RetransmitCounters};

use crate::{
    attribute::{Attributor, Workload, procfs},
    collect::{
        netns_snmp::{self, TcpSegments},
        retransmits::{self, ReadError, RetransmitSample},
    },
    kernel::probes::Probes,
};

/// Everything collected at one instant. Counters are cumulative.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub taken: Instant,
    pub retransmits: RetransmitSample,
    pub netns_tcp: BTreeMap<u32, TcpSegments>,
}

/// The loaded programs and the attribution state.
pub struct Pipeline {
    pub probes: Probes,
    pub attributor: Attributor,
}

impl Pipeline {
    pub fn new(probes: Probes, attributor: Attributor) -> Self {
        Self { probes, attributor }
    }

    /// Reads the maps, then scans namespaces and reads their counters.
    pub fn snapshot(&mut self) -> Result<Snapshot, ReadError> {
        let retransmits = retransmits::read(&self.probes.ebpf)?;
        let processes = procfs::scan();
        self.attributor.observe(&processes);
        Ok(Snapshot {
            taken: Instant::now(),
            retransmits,
            netns_tcp: netns_snmp::read_all(&processes),
        })
    }
}

/// A workload's totals over a window.
#[derive(Clone, Debug)]
pub struct WorkloadTotals {
    pub workload: Workload,
    /// Delta of its namespace's `OutSegs`/`RetransSegs`.
    pub netns_tcp: TcpSegments,
    /// What the kernel hooks counted for its sockets (flows and overflow).
    pub hooked: RetransmitCounters,
    /// Its namespace disappeared before the window ended: counters end at the last reading.
    pub vanished: bool,
}

/// One flow over a window, attributed.
#[derive(Clone, Debug)]
pub struct FlowTotals {
    pub workload: Workload,
    pub key: FlowKey,
    pub counters: RetransmitCounters,
}

/// Per-workload and per-flow results of a window.
#[derive(Clone, Debug)]
pub struct Summary {
    pub duration: Duration,
    pub workloads: Vec<WorkloadTotals>,
    pub flows: Vec<FlowTotals>,
    /// The kernel-side health counters over the window.
    pub retransmits: RetransmitSample,
    /// Entries in the flow map at the end (not a delta).
    pub flow_entries: usize,
}

/// Accumulates snapshots from a start; namespaces that vanish keep their last reading.
pub struct Window {
    start: Snapshot,
    latest: Snapshot,
    last_good_tcp: BTreeMap<u32, TcpSegments>,
    vanished: BTreeSet<u32>,
}

impl Window {
    pub fn new(start: Snapshot) -> Self {
        Self {
            last_good_tcp: start.netns_tcp.clone(),
            latest: start.clone(),
            start,
            vanished: BTreeSet::new(),
        }
    }

    pub fn update(&mut self, snapshot: Snapshot) {
        for netns in self.last_good_tcp.keys() {
            if !snapshot.netns_tcp.contains_key(netns) {
                self.vanished.insert(*netns);
            }
        }
        for (netns, tcp) in &snapshot.netns_tcp {
            self.last_good_tcp.insert(*netns, *tcp);
            self.vanished.remove(netns);
        }
        self.latest = snapshot;
    }

    pub fn latest(&self) -> &Snapshot {
        &self.latest
    }

    /// Kernel-counted totals since the start (for progress lines).
    pub fn retransmits_so_far(&self) -> RetransmitCounters {
        self.latest
            .retransmits
            .since(&self.start.retransmits)
            .total()
    }

    /// Attributes every flow and namespace of the window.
    pub fn summarize(&self, attributor: &mut Attributor) -> Summary {
        let delta = self.latest.retransmits.since(&self.start.retransmits);
        let mut workloads: HashMap<Workload, WorkloadTotals> = HashMap::new();

        let mut flows = Vec::with_capacity(delta.flows.len());
        for (key, counters) in &delta.flows {
            let workload = attributor.workload(key.netns, key.cgroup_id);
            totals(&mut workloads, workload.clone())
                .hooked
                .add(counters);
            flows.push(FlowTotals {
                workload,
                key: *key,
                counters: *counters,
            });
        }
        for (owner, counters) in &delta.overflow {
            totals(
                &mut workloads,
                attributor.workload(owner.netns, owner.cgroup_id),
            )
            .hooked
            .add(counters);
        }
        // Every namespace with traffic in the window, whether or not it retransmitted. A
        // namespace first seen after the start is new: its counters started at zero.
        for (netns, end) in &self.last_good_tcp {
            let begin = self.start.netns_tcp.get(netns).copied().unwrap_or_default();
            let tcp = end.since(&begin);
            let owners: Vec<Workload> = workloads
                .keys()
                .filter(|w| w.netns == *netns)
                .cloned()
                .collect();
            let owners = if owners.is_empty() {
                if tcp.out_segs == 0 {
                    continue;
                }
                vec![attributor.workload(*netns, 0)]
            } else {
                owners
            };
            for owner in owners {
                let entry = totals(&mut workloads, owner);
                entry.netns_tcp = tcp;
                entry.vanished = self.vanished.contains(netns);
            }
        }

        Summary {
            duration: self
                .latest
                .taken
                .saturating_duration_since(self.start.taken),
            workloads: workloads.into_values().collect(),
            flows,
            flow_entries: self.latest.retransmits.flows.len(),
            retransmits: delta,
        }
    }
}

fn totals(map: &mut HashMap<Workload, WorkloadTotals>, workload: Workload) -> &mut WorkloadTotals {
    map.entry(workload.clone())
        .or_insert_with(|| WorkloadTotals {
            workload,
            netns_tcp: TcpSegments::default(),
            hooked: RetransmitCounters::default(),
            vanished: false,
        })
}
