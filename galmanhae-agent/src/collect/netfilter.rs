//! Conntrack per network namespace (health counters, NAT bindings) and the host's NAT audit.
//!
//! The host's namespace is read over ctnetlink (needs `CAP_NET_ADMIN`), with
//! `/proc/net/stat/nf_conntrack` as the fallback; other namespaces through a process in them
//! (`/proc/PID/net/stat/nf_conntrack`), which needs no `setns`.

use std::collections::BTreeMap;

use crate::{
    attribute::{Attributor, nat::Binding},
    conntrack::{self, ConntrackError, MasqueradeRule, Stats, Sysctls},
};

/// Conntrack counters of every namespace that has a process, at one instant.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConntrackSample {
    pub(crate) netns: BTreeMap<u32, Stats>,
    /// Why a source was not available (shown once in the report).
    pub(crate) notes: Vec<String>,
}

pub(crate) fn sample(attributor: &Attributor) -> ConntrackSample {
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

/// The translation an entry holds; `None` when it is not translated.
pub(crate) fn binding(entry: &conntrack::Entry) -> Option<Binding> {
    (entry.is_src_nat() || entry.is_dst_nat()).then(|| {
        let (nat_local, nat_remote) = entry.translated();
        Binding {
            protocol: entry.protocol,
            local: entry.orig.source(),
            remote: entry.orig.destination(),
            nat_local,
            nat_remote,
        }
    })
}

/// MASQUERADE rules and the conntrack sysctls that decide how NAT behaves under stress.
pub(crate) fn audit() -> NatAudit {
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

/// The host's NAT set-up, checked for known traps.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct NatAudit {
    /// MASQUERADE rules as `iptables-save` prints them, and whether they randomise ports fully.
    pub(crate) masquerade: Vec<MasqueradeRule>,
    /// `tcp_be_liberal`, `tcp_loose`, the established timeout, the table size.
    #[serde(flatten)]
    pub(crate) sysctls: Sysctls,
    /// Why part of the audit could not be done.
    pub(crate) unavailable: Vec<String>,
    /// The host has no iptables tools: nothing to audit, by design.
    #[serde(skip)]
    pub(crate) no_tools: bool,
}

impl NatAudit {
    /// The source prefixes MASQUERADE translates: a packet from one must not leave as is.
    pub(crate) fn translated_subnets(&self) -> Vec<ipnet::IpNet> {
        let mut nets: Vec<ipnet::IpNet> = self
            .masquerade
            .iter()
            .filter_map(MasqueradeRule::source_net)
            .collect();
        nets.sort_unstable();
        nets.dedup();
        nets
    }

    /// Whether a MASQUERADE rule translates packets from `addr` (a bridge address).
    pub(crate) fn masqueraded(&self, addr: std::net::IpAddr) -> bool {
        self.masquerade
            .iter()
            .filter_map(MasqueradeRule::source_net)
            .any(|net| net.contains(&addr))
    }
}
