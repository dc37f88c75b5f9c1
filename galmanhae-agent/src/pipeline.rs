//! One snapshot per tick, shared by `diagnose` and `run`: kernel maps, then namespaces and
//! their segment counters. A [`Window`] turns two snapshots into per-workload deltas.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    time::{Duration, Instant},
};

use galmanhae_common::{
    drop::{DropKey, IPPROTO_TCP, SOCKET_RECEIVING, SOCKET_SENDING},
    retransmit::{FlowKey, RetransmitCounters},
};

use crate::{
    addr::{conntrack_source, endpoints, packet_endpoints},
    attribute::{
        Attributor, Workload,
        nat::{Binding, Direction, NatIndex},
        procfs,
    },
    collect::{
        drops::{self, DropSample},
        maps::counts_since,
        nat_leaks::{self, LeakSample},
        netns_snmp::{self, TcpSegments},
        retransmits::{self, ReadError, RetransmitSample},
        time_lost::{TimeLost, TimeLostSample},
    },
    kernel::probes::Probes,
};

/// Everything collected at one instant. Counters are cumulative.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub taken: Instant,
    pub retransmits: RetransmitSample,
    pub drops: DropSample,
    pub leaks: LeakSample,
    pub time_lost: TimeLostSample,
    pub netns_tcp: BTreeMap<u32, TcpSegments>,
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
        }
    }
}

/// The loaded programs and the attribution state.
pub struct Pipeline {
    pub probes: Probes,
    pub attributor: Attributor,
    /// Each process's network namespace at the last scan, and when all were last checked.
    namespaces: HashMap<i32, u32>,
    last_restat: Option<Instant>,
    /// The task iterator failed once (said in the log); /proc is read instead.
    task_iter_failed: bool,
}

/// Every process's namespace is checked again this often (see [`procfs::scan`]).
const RESTAT_EVERY: Duration = Duration::from_secs(10);

impl Pipeline {
    pub fn new(probes: Probes, attributor: Attributor) -> Self {
        Self {
            probes,
            attributor,
            namespaces: HashMap::new(),
            last_restat: None,
            task_iter_failed: false,
        }
    }

    /// Reads the maps, then scans namespaces and reads their counters.
    pub fn snapshot(&mut self) -> Result<Snapshot, ReadError> {
        let retransmits = retransmits::read(&self.probes.ebpf)?;
        let drops = drops::read(&self.probes.ebpf)?;
        let leaks = nat_leaks::read(&self.probes.ebpf)?;
        let time_lost = TimeLostSample::read(&self.probes.ebpf)?;
        let processes = self.processes();
        self.attributor.observe(&processes);
        Ok(Snapshot {
            taken: Instant::now(),
            retransmits,
            drops,
            leaks,
            time_lost,
            netns_tcp: netns_snmp::read_all(&processes),
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
}

/// A workload's totals over a window.
#[derive(Clone, Debug)]
pub struct WorkloadTotals {
    pub workload: Workload,
    /// Delta of its namespace's `OutSegs`/`RetransSegs`.
    pub netns_tcp: TcpSegments,
    /// What the kernel hooks counted for its sockets (flows and overflow).
    pub hooked: RetransmitCounters,
    /// Time its sockets lost to RTO recoveries and timed-out handshakes.
    pub time_lost: TimeLost,
    /// Its namespace disappeared before the window ended: counters end at the last reading.
    pub vanished: bool,
    /// Its runtime no longer lists it (its sockets outlived it): the name is its last known.
    pub removed: bool,
}

/// One flow over a window, attributed.
#[derive(Clone, Debug)]
pub struct FlowTotals {
    pub workload: Workload,
    pub key: FlowKey,
    pub counters: RetransmitCounters,
    pub time_lost: TimeLost,
    /// How the flow leaves the host, if it is translated (conntrack, host namespace).
    pub nat: Option<Binding>,
}

/// Dropped packets of one workload at one site (namespace, reason, location), one flow.
#[derive(Clone, Debug)]
pub struct DropTotals {
    pub workload: Workload,
    /// Where the packet was dropped: the namespace and who it belongs to (`host`, a workload).
    pub netns: u32,
    pub dropped_in: String,
    pub reason: u32,
    pub location: u64,
    /// The packet's headers; `None` when counted per site only (map full).
    pub key: Option<DropKey>,
    /// Which way the packet was going, when its owner was found by address.
    pub direction: Option<Direction>,
    pub packets: u64,
}

/// Per-workload and per-flow results of a window.
#[derive(Clone, Debug)]
pub struct Summary {
    pub duration: Duration,
    pub workloads: Vec<WorkloadTotals>,
    pub flows: Vec<FlowTotals>,
    pub drops: Vec<DropTotals>,
    /// Untranslated packets that left through the uplinks.
    pub leaks: LeakSample,
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

    /// The last snapshot, to start the next window from.
    pub fn into_latest(self) -> Snapshot {
        self.latest
    }

    /// Kernel-counted totals since the start (for progress lines).
    pub fn retransmits_so_far(&self) -> RetransmitCounters {
        self.latest
            .retransmits
            .since(&self.start.retransmits)
            .total()
    }

    /// Attributes every flow and namespace of the window.
    pub fn summarize(&self, attributor: &mut Attributor, nat: &NatIndex) -> Summary {
        let delta = self.latest.retransmits.since(&self.start.retransmits);
        let mut workloads: HashMap<Workload, WorkloadTotals> = HashMap::new();

        let mut by_flow: HashMap<FlowKey, (RetransmitCounters, TimeLost)> = delta
            .by_flow()
            .into_iter()
            .map(|(key, counters)| (key, (counters, TimeLost::default())))
            .collect();
        let time_lost = self.latest.time_lost.since(&self.start.time_lost);
        for (key, lost) in &time_lost {
            by_flow.entry(*key).or_default().1.add(lost);
        }
        let mut flows = Vec::with_capacity(by_flow.len());
        for (key, (counters, lost)) in &by_flow {
            let workload = attributor.workload(key.netns, key.cgroup_id);
            let entry = totals(&mut workloads, workload.clone());
            entry.hooked.add(counters);
            entry.time_lost.add(lost);
            let (local, remote) = endpoints(key);
            flows.push(FlowTotals {
                workload,
                key: *key,
                counters: *counters,
                time_lost: *lost,
                nat: nat.translate(IPPROTO_TCP, local, remote),
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

        for entry in workloads.values_mut() {
            entry.removed = attributor.removed(&entry.workload);
        }
        let drop_delta = self.latest.drops.since(&self.start.drops);
        let drops = attribute_drops(&drop_delta, attributor, nat);

        Summary {
            drops,
            leaks: counts_since(&self.latest.leaks, &self.start.leaks),
            duration: self
                .latest
                .taken
                .saturating_duration_since(self.start.taken),
            workloads: workloads.into_values().collect(),
            flows,
            flow_entries: self.latest.retransmits.entries(),
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
            time_lost: TimeLost::default(),
            vanished: false,
            removed: false,
        })
}

/// Who each dropped packet belonged to. In a workload's own namespace, that workload; in the
/// host's, the workload whose address is on the packet (before NAT) or whose NAT binding the
/// packet matches (after NAT); else the host.
fn attribute_drops(
    delta: &DropSample,
    attributor: &mut Attributor,
    nat: &NatIndex,
) -> Vec<DropTotals> {
    let host = attributor.host_netns();
    let mut out = Vec::with_capacity(delta.flows.len() + delta.overflow.len());
    for (key, packets) in &delta.flows {
        // Its socket's workload (in the host's namespace, by the socket's cgroup), else by
        // the packet's addresses.
        let (workload, owner) = if let Some(direction) = socket_direction(key) {
            let workload = attributor.workload(key.netns, key.socket_cgroup);
            (workload, Some((key.netns, direction)))
        } else {
            let owner = if Some(key.netns) == host {
                packet_owner(key, attributor, nat)
            } else {
                None
            };
            let netns = owner.map_or(key.netns, |(netns, _)| netns);
            (attributor.workload(netns, 0), owner)
        };
        out.push(DropTotals {
            workload,
            dropped_in: site_name(attributor, host, key.netns),
            netns: key.netns,
            reason: key.reason,
            location: key.location,
            key: Some(*key),
            direction: owner.map(|(_, direction)| direction),
            packets: *packets,
        });
    }
    for (site, packets) in &delta.overflow {
        out.push(DropTotals {
            workload: attributor.workload(site.netns, 0),
            dropped_in: site_name(attributor, host, site.netns),
            netns: site.netns,
            reason: site.reason,
            location: site.location,
            key: None,
            direction: None,
            packets: *packets,
        });
    }
    out
}

/// Which way a packet went relative to the local socket that owns it, if one does.
fn socket_direction(key: &DropKey) -> Option<Direction> {
    match key.socket {
        SOCKET_SENDING => Some(Direction::Egress),
        SOCKET_RECEIVING => Some(Direction::Ingress),
        _ => None,
    }
}

/// The namespace a packet seen in the host's belongs to, and which way it went: by the
/// pre-NAT source of its conntrack entry (exact, also for a tuple that lost an SNAT race),
/// else by its source or destination address (before NAT), else by the NAT binding it
/// matches (after NAT).
fn packet_owner(
    key: &DropKey,
    attributor: &Attributor,
    nat: &NatIndex,
) -> Option<(u32, Direction)> {
    let owner_of = |a: SocketAddr| attributor.netns_of_address(a.ip());
    if let Some((origin, reply)) = conntrack_source(key)
        && let Some(netns) = owner_of(origin)
    {
        let direction = if reply {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        return Some((netns, direction));
    }
    let (src, dst) = packet_endpoints(key)?;
    if let Some(netns) = owner_of(src) {
        return Some((netns, Direction::Egress));
    }
    if let Some(netns) = owner_of(dst) {
        return Some((netns, Direction::Ingress));
    }
    let (binding, direction) = nat.packet(key.protocol, src, dst)?;
    Some((owner_of(binding.local)?, direction))
}

fn site_name(attributor: &mut Attributor, host: Option<u32>, netns: u32) -> String {
    if netns == 0 {
        "unknown namespace".to_owned()
    } else if Some(netns) == host {
        "host".to_owned()
    } else {
        attributor.workload(netns, 0).name
    }
}
