//! Each pass's evidence folded into its families: segment counters, drops, NAT leaks,
//! conntrack, NAT bindings, path MTUs (retransmits: `retransmits.rs`).

use std::time::Instant;

use super::{
    ConntrackEventLabels, DropLabels, Exporter, LeakLabels, NamespaceLabels, NatLabels, PathLabels,
    WorkloadLabels, family, series::Admission,
};
use crate::{attribute::WorkloadKind, model::Evidence};

impl Exporter {
    /// Segment counters per namespace, the kernel's own: growth since the last reading, so
    /// that a namespace recreated under the same name continues its series.
    pub(super) fn fold_segments(&mut self, evidence: &Evidence, now: Instant) {
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

    pub(super) fn fold_drops(&mut self, evidence: &Evidence, now: Instant) {
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
                workload: drop.workload.name.to_string(),
                reason: drop.reason.name().to_owned(),
                location,
            };
            self.series.drops.add(labels, drop.packets, now);
        }
    }

    pub(super) fn fold_leaks(&mut self, evidence: &Evidence, now: Instant) {
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
    pub(super) fn fold_conntrack(&mut self, evidence: &Evidence, now: Instant) {
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
    pub(super) fn fold_nat(&mut self, evidence: &Evidence, now: Instant) {
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

    pub(super) fn fold_paths(&mut self, evidence: &Evidence, now: Instant) {
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
}
