//! A window: accumulates snapshots from a start and attributes what changed over it.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use hashbrown::HashMap;

use galmanhae_common::{
    drop::{IPPROTO_TCP, IPPROTO_UDP},
    retransmit::{FlowKey, RetransmitCounters},
};

use super::{
    Snapshot,
    drops::{DropTotals, attribute_drops, unowned},
    nat::NatKey,
};
use crate::{
    addr::{endpoints, packet_endpoints},
    attribute::{
        Attributor, Workload,
        nat::{Binding, NatIndex},
    },
    collect::{
        drops::DropSample, maps::counts_since, nat_leaks::LeakSample, netns_snmp::TcpSegments,
        retransmits::RetransmitSample, time_lost::TimeLost,
    },
    conntrack::Stats,
};

/// A workload's totals over a window.
#[derive(Clone, Debug)]
pub(crate) struct WorkloadTotals {
    pub(crate) workload: Workload,
    /// Delta of its namespace's `OutSegs`/`RetransSegs`.
    pub(crate) netns_tcp: TcpSegments,
    /// What the kernel hooks counted for its sockets (flows and overflow).
    pub(crate) hooked: RetransmitCounters,
    /// Time its sockets lost to RTO recoveries and timed-out handshakes.
    pub(crate) time_lost: TimeLost,
    /// Its namespace disappeared before the window ended: counters end at the last reading.
    pub(crate) vanished: bool,
    /// Its runtime no longer lists it (its sockets outlived it): the name is its last known.
    pub(crate) removed: bool,
}

/// One flow over a window, attributed.
#[derive(Clone, Debug)]
pub(crate) struct FlowTotals {
    pub(crate) workload: Workload,
    pub(crate) key: FlowKey,
    pub(crate) counters: RetransmitCounters,
    pub(crate) time_lost: TimeLost,
    /// How the flow leaves the host, if it is translated (conntrack, host namespace).
    pub(crate) nat: Option<Binding>,
}

/// The kernel's counts over a window: retransmits (per socket), per flow with the time lost,
/// and drops.
#[derive(Debug, Default)]
pub(crate) struct Deltas {
    pub(crate) retransmits: RetransmitSample,
    pub(crate) by_flow: HashMap<FlowKey, (RetransmitCounters, TimeLost)>,
    pub(crate) drops: DropSample,
}

/// Per-workload and per-flow results of a window.
#[derive(Clone, Debug, Default)]
pub(crate) struct Summary {
    pub(crate) duration: Duration,
    pub(crate) workloads: Vec<WorkloadTotals>,
    pub(crate) flows: Vec<FlowTotals>,
    /// Shared: a findings window's merge of passes copies pointers, not every drop again.
    pub(crate) drops: Vec<Arc<DropTotals>>,
    /// Untranslated packets that left through the uplinks.
    pub(crate) leaks: LeakSample,
    /// The kernel-side counters over the window: overflow per owner, health.
    pub(crate) retransmits: RetransmitSample,
    /// Entries in the flow map at the end (not a delta).
    pub(crate) flow_entries: usize,
    /// Conntrack per namespace: counters' growth, table fill at the end.
    pub(crate) conntrack: BTreeMap<u32, Stats>,
    /// Every namespace's cumulative segment counters at the end.
    pub(crate) segments: BTreeMap<u32, TcpSegments>,
}

/// Accumulates snapshots from a start; namespaces that vanish keep their last reading.
pub(crate) struct Window {
    start: Snapshot,
    latest: Snapshot,
    last_good_tcp: BTreeMap<u32, TcpSegments>,
    vanished: BTreeSet<u32>,
}

impl Window {
    pub(crate) fn new(start: Snapshot) -> Self {
        Self {
            last_good_tcp: start.netns_tcp.clone(),
            latest: start.clone(),
            start,
            vanished: BTreeSet::new(),
        }
    }

    pub(crate) fn update(&mut self, snapshot: Snapshot) {
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

    pub(crate) fn latest(&self) -> &Snapshot {
        &self.latest
    }

    /// The last snapshot, to start the next window from.
    pub(crate) fn into_latest(self) -> Snapshot {
        self.latest
    }

    /// Kernel-counted totals since the start (for progress lines).
    pub(crate) fn retransmits_so_far(&self) -> RetransmitCounters {
        self.latest
            .retransmits
            .since(&self.start.retransmits)
            .total()
    }

    /// What the kernel counted over the window, computed once for the NAT lookups and the
    /// summary that follows them.
    pub(crate) fn deltas(&self) -> Deltas {
        let retransmits = self.latest.retransmits.since(&self.start.retransmits);
        let mut by_flow: HashMap<FlowKey, (RetransmitCounters, TimeLost)> = retransmits
            .by_flow()
            .into_iter()
            .map(|(key, counters)| (key, (counters, TimeLost::default())))
            .collect();
        for (key, lost) in &self.latest.time_lost.since(&self.start.time_lost) {
            by_flow.entry(*key).or_default().1.add(lost);
        }
        Deltas {
            retransmits,
            by_flow,
            drops: self.latest.drops.since(&self.start.drops),
        }
    }

    /// What the window's summary asks of the NAT table: each flow (as its socket sees it), and
    /// each packet dropped in the host's namespace (`host`) that neither a socket nor its
    /// conntrack entry ties to a workload.
    pub(crate) fn nat_wanted(deltas: &Deltas, host: Option<u32>) -> Vec<NatKey> {
        let mut wanted: Vec<NatKey> = deltas
            .by_flow
            .keys()
            .map(|key| {
                let (local, remote) = endpoints(key);
                (IPPROTO_TCP, local, remote)
            })
            .collect();
        wanted.extend(
            deltas
                .drops
                .flows
                .keys()
                .filter(|key| Some(key.netns) == host && unowned(key))
                // Only TCP and UDP: NAT bindings are looked up by ports.
                .filter(|key| matches!(key.protocol, IPPROTO_TCP | IPPROTO_UDP))
                .filter_map(|key| {
                    let (src, dst) = packet_endpoints(key)?;
                    Some((key.protocol, src, dst))
                }),
        );
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }

    /// Attributes every flow and namespace of the window.
    pub(crate) fn summarize(
        &self,
        deltas: Deltas,
        attributor: &mut Attributor,
        nat: &NatIndex,
    ) -> Summary {
        let Deltas {
            retransmits: delta,
            by_flow,
            drops,
        } = deltas;
        let mut workloads = WorkloadMap::default();
        let flows = Self::flows(&by_flow, &mut workloads, attributor, nat);
        for (owner, counters) in &delta.overflow {
            totals(
                &mut workloads,
                &attributor.workload(owner.netns, owner.cgroup_id),
            )
            .hooked
            .add(counters);
        }
        self.namespaces(&mut workloads, attributor);
        for entry in workloads.values_mut() {
            entry.removed = attributor.removed(&entry.workload);
        }
        Summary {
            drops: attribute_drops(&drops, attributor, nat)
                .into_iter()
                .map(Arc::new)
                .collect(),
            leaks: counts_since(&self.latest.leaks, &self.start.leaks),
            duration: self
                .latest
                .taken
                .saturating_duration_since(self.start.taken),
            workloads: workloads.into_values().collect(),
            flows,
            flow_entries: self.latest.retransmits.entries(),
            retransmits: delta,
            conntrack: self.conntrack(),
            segments: self.latest.netns_tcp.clone(),
        }
    }

    /// Every flow that retransmitted or lost time, added to its workload's totals.
    fn flows(
        by_flow: &HashMap<FlowKey, (RetransmitCounters, TimeLost)>,
        workloads: &mut WorkloadMap,
        attributor: &mut Attributor,
        nat: &NatIndex,
    ) -> Vec<FlowTotals> {
        let mut flows = Vec::with_capacity(by_flow.len());
        for (key, (counters, lost)) in by_flow {
            let workload = attributor.workload(key.netns, key.cgroup_id);
            let entry = totals(workloads, &workload);
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
        flows
    }

    /// Every namespace with traffic in the window, whether or not it retransmitted. A
    /// namespace first seen after the start is new: its counters started at zero.
    fn namespaces(&self, workloads: &mut WorkloadMap, attributor: &mut Attributor) {
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
            for owner in &owners {
                let entry = totals(workloads, owner);
                entry.netns_tcp = tcp;
                entry.vanished = self.vanished.contains(netns);
            }
        }
    }

    /// Conntrack of every namespace read at the end: growth since the start, or since its
    /// creation when it is new or its counters restarted (a new namespace reusing an inode).
    fn conntrack(&self) -> BTreeMap<u32, Stats> {
        self.latest
            .conntrack
            .netns
            .iter()
            .map(|(netns, now)| {
                let delta = match self.start.conntrack.netns.get(netns) {
                    Some(then) if now.insert >= then.insert => now.since(then),
                    _ => now.clone(),
                };
                (*netns, delta)
            })
            .collect()
    }
}

/// Totals per workload. `hashbrown`'s map: its `entry_ref` clones a workload only when it is
/// new, and its hasher is several times faster than `SipHash` on its strings.
type WorkloadMap = HashMap<Workload, WorkloadTotals>;

fn totals<'m>(map: &'m mut WorkloadMap, workload: &Workload) -> &'m mut WorkloadTotals {
    map.entry_ref(workload).or_insert_with(|| WorkloadTotals {
        workload: workload.clone(),
        netns_tcp: TcpSegments::default(),
        hooked: RetransmitCounters::default(),
        time_lost: TimeLost::default(),
        vanished: false,
        removed: false,
    })
}

impl Summary {
    /// One summary of consecutive windows, oldest first: counts add up; what is read at the
    /// end (flow map entries, table fill, segment counters) is the last window's.
    pub(crate) fn merge<'a>(parts: impl IntoIterator<Item = &'a Summary>) -> Summary {
        let mut out = Summary::default();
        let mut workloads = WorkloadMap::default();
        // By flow, then workload (one, unless the flow's owner was renamed in between):
        // nothing is cloned for a flow already seen.
        let mut flows: HashMap<FlowKey, Vec<FlowTotals>> = HashMap::new();
        let mut last = None;
        for part in parts {
            out.duration += part.duration;
            for w in &part.workloads {
                let total = totals(&mut workloads, &w.workload);
                total.netns_tcp.out_segs += w.netns_tcp.out_segs;
                total.netns_tcp.retrans_segs += w.netns_tcp.retrans_segs;
                total.hooked.add(&w.hooked);
                total.time_lost.add(&w.time_lost);
                total.vanished = w.vanished;
                total.removed = w.removed;
            }
            for f in &part.flows {
                let owners = flows.entry(f.key).or_default();
                if !owners.iter().any(|t| t.workload == f.workload) {
                    owners.push(FlowTotals {
                        counters: RetransmitCounters::default(),
                        time_lost: TimeLost::default(),
                        ..f.clone()
                    });
                }
                if let Some(total) = owners.iter_mut().find(|t| t.workload == f.workload) {
                    total.counters.add(&f.counters);
                    total.time_lost.add(&f.time_lost);
                    total.nat = f.nat.or(total.nat);
                }
            }
            out.drops.extend(part.drops.iter().cloned());
            for (key, packets) in &part.leaks {
                *out.leaks.entry(*key).or_default() += packets;
            }
            add_retransmits(&mut out.retransmits, &part.retransmits);
            for (netns, stats) in &part.conntrack {
                match out.conntrack.get_mut(netns) {
                    Some(total) => add_stats(total, stats),
                    None => {
                        out.conntrack.insert(*netns, stats.clone());
                    }
                }
            }
            last = Some(part);
        }
        if let Some(last) = last {
            out.flow_entries = last.flow_entries;
            out.segments.clone_from(&last.segments);
        }
        out.workloads = workloads.into_values().collect();
        out.flows = flows.into_values().flatten().collect();
        out
    }
}

/// Adds the overflow and health counters of a later window (flows are merged on their own).
fn add_retransmits(total: &mut RetransmitSample, later: &RetransmitSample) {
    for (owner, counters) in &later.overflow {
        total.overflow.entry(*owner).or_default().add(counters);
    }
    for (mine, theirs) in total.health.iter_mut().zip(later.health) {
        *mine += theirs;
    }
}

/// Adds a later window's event counters; the table fill is the later one's.
fn add_stats(total: &mut Stats, later: &Stats) {
    total.source = later.source;
    total.entries = later.entries;
    total.max = later.max;
    let counters = [
        (&mut total.found, later.found),
        (&mut total.invalid, later.invalid),
        (&mut total.insert, later.insert),
        (&mut total.insert_failed, later.insert_failed),
        (&mut total.drop, later.drop),
        (&mut total.early_drop, later.early_drop),
        (&mut total.error, later.error),
        (&mut total.search_restart, later.search_restart),
        (&mut total.clash_resolve, later.clash_resolve),
        (&mut total.chaintoolong, later.chaintoolong),
    ];
    for (mine, theirs) in counters {
        *mine += theirs;
    }
}

#[cfg(test)]
mod tests {
    use galmanhae_common::retransmit::{OwnerKey, RetransmitKind};

    use super::*;
    use crate::model::{Namespace, testing};

    fn part(seconds: u64, retransmits: u64, entries: u64, drops: u64) -> Summary {
        let app = testing::container("app", 2);
        let key = FlowKey {
            netns: 2,
            family: galmanhae_common::retransmit::AF_INET,
            local_port: 41_000,
            remote_port: 5432,
            padding: [0; 6],
            cgroup_id: 0,
            local_addr: [0; 16],
            remote_addr: [0; 16],
        };
        let mut counters = RetransmitCounters::default();
        counters.kinds[RetransmitKind::Rto as usize] = retransmits;
        counters.retransmits = retransmits;
        let mut conntrack = testing::conntrack(Namespace::Host, entries, 1000).stats;
        conntrack.drop = drops;
        let mut overflow = HashMap::new();
        overflow.insert(
            OwnerKey {
                netns: 2,
                padding: 0,
                cgroup_id: 0,
            },
            counters,
        );
        Summary {
            duration: Duration::from_secs(seconds),
            workloads: vec![WorkloadTotals {
                workload: app.clone(),
                netns_tcp: TcpSegments {
                    out_segs: 100,
                    retrans_segs: retransmits,
                },
                hooked: counters,
                time_lost: TimeLost::default(),
                vanished: false,
                removed: false,
            }],
            flows: vec![FlowTotals {
                workload: app,
                key,
                counters,
                time_lost: TimeLost::default(),
                nat: None,
            }],
            retransmits: RetransmitSample {
                overflow,
                ..RetransmitSample::default()
            },
            flow_entries: usize::try_from(entries).unwrap_or(0),
            conntrack: BTreeMap::from([(1, conntrack)]),
            ..Summary::default()
        }
    }

    #[test]
    fn merged_windows_add_counts_and_keep_the_last_readings() {
        let merged = Summary::merge(&[part(10, 2, 50, 1), part(5, 3, 70, 0)]);
        assert_eq!(merged.duration, Duration::from_secs(15));
        assert_eq!(merged.workloads.len(), 1);
        let w = &merged.workloads[0];
        assert_eq!((w.netns_tcp.out_segs, w.netns_tcp.retrans_segs), (200, 5));
        assert_eq!(w.hooked.retransmits, 5);
        assert_eq!(merged.flows.len(), 1, "one flow, counted twice");
        assert_eq!(merged.flows[0].counters.retransmits, 5);
        assert_eq!(
            merged
                .retransmits
                .overflow
                .values()
                .next()
                .map(|c| c.retransmits),
            Some(5)
        );
        assert_eq!(merged.flow_entries, 70);
        let ct = &merged.conntrack[&1];
        assert_eq!((ct.entries, ct.drop), (Some(70), 1));
    }

    #[test]
    fn nothing_merged_is_an_empty_window() {
        let merged = Summary::merge(&[]);
        assert!(merged.workloads.is_empty() && merged.flows.is_empty());
        assert_eq!(merged.duration, Duration::ZERO);
    }
}
