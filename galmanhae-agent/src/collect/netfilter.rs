//! Conntrack per network namespace (health counters, NAT bindings) and the host's NAT audit.
//!
//! The host's namespace is read over ctnetlink (needs `CAP_NET_ADMIN`), with
//! `/proc/net/stat/nf_conntrack` as the fallback; other namespaces through a process in them
//! (`/proc/PID/net/stat/nf_conntrack`), which needs no `setns`.

use std::collections::BTreeMap;

use crate::{
    attribute::{
        Attributor,
        nat::{Binding, NatIndex},
    },
    conntrack::{self, ConntrackError, Stats},
    report::{ConntrackReport, NatAudit},
};

/// Conntrack counters of every namespace that has a process, at one instant.
#[derive(Clone, Debug, Default)]
pub struct ConntrackSample {
    pub netns: BTreeMap<u32, Stats>,
    /// Why a source was not available (shown once in the report).
    pub notes: Vec<String>,
}

pub fn sample(attributor: &Attributor) -> ConntrackSample {
    let mut out = ConntrackSample::default();
    let host = attributor.host_netns();
    if let Some(host) = host {
        match conntrack::stats_netlink().or_else(|e| {
            out.notes.push(format!(
                "conntrack over netlink: {e}; reading procfs instead"
            ));
            conntrack::stats_procfs(None)
        }) {
            Ok(stats) => {
                out.netns.insert(host, stats);
            }
            Err(e) => out
                .notes
                .push(format!("conntrack statistics unavailable: {e}")),
        }
    }
    for (netns, pid) in attributor.namespaces() {
        if Some(netns) == host {
            continue;
        }
        let Ok(pid) = u32::try_from(pid) else {
            continue;
        };
        // A namespace whose processes exited mid-scan simply has no reading.
        if let Ok(stats) = conntrack::stats_procfs(Some(pid)) {
            out.netns.insert(netns, stats);
        }
    }
    out
}

/// Per-namespace reports over a window: table fill at the end, counter growth since the start.
/// Namespaces whose conntrack is idle (no entries, no events) are left out.
pub fn reports(
    start: &ConntrackSample,
    end: &ConntrackSample,
    attributor: &mut Attributor,
) -> Vec<ConntrackReport> {
    let host = attributor.host_netns();
    let mut out = Vec::new();
    for (netns, now) in &end.netns {
        let delta = start
            .netns
            .get(netns)
            .map_or_else(|| now.clone(), |then| now.since(then));
        let busy = now.entries.unwrap_or(0) > 0
            || delta.insert_failed
                + delta.drop
                + delta.early_drop
                + delta.invalid
                + delta.clash_resolve
                > 0;
        if !busy {
            continue;
        }
        out.push(ConntrackReport {
            namespace: if Some(*netns) == host {
                "host".to_owned()
            } else {
                attributor.workload(*netns, 0).name
            },
            netns: *netns,
            stats: delta,
        });
    }
    out
}

/// The translated flows of the host's conntrack table.
pub fn nat_index() -> Result<NatIndex, ConntrackError> {
    let entries = conntrack::dump()?;
    Ok(NatIndex::new(
        entries
            .iter()
            .filter(|e| e.is_src_nat() || e.is_dst_nat())
            .map(|e| {
                let (nat_local, nat_remote) = e.translated();
                Binding {
                    protocol: e.protocol,
                    local: e.orig.source(),
                    remote: e.orig.destination(),
                    nat_local,
                    nat_remote,
                }
            }),
    ))
}

/// MASQUERADE rules and the conntrack sysctls that decide how NAT behaves under stress.
pub fn audit() -> NatAudit {
    let (masquerade, unavailable, no_tools) = match conntrack::masquerade_rules() {
        Ok(rules) => (rules, Vec::new(), false),
        Err(e) => {
            let no_tools = matches!(e, ConntrackError::ToolMissing { .. });
            (Vec::new(), vec![format!("MASQUERADE rules: {e}")], no_tools)
        }
    };
    NatAudit {
        masquerade,
        sysctls: conntrack::sysctls(),
        unavailable,
        no_tools,
    }
}
