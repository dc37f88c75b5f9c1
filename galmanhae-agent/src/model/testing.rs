//! Small builders of [`Evidence`] for unit tests: a workload, its flows, drops, conntrack,
//! each with the few numbers a test is about and plausible rest.

use std::net::SocketAddr;

use galmanhae_common::retransmit::{RetransmitCounters, RetransmitKind};

use super::{
    Conntrack, Drop, DropReason, Evidence, Family, Flow, Hop, HopRole, Leak, LeakOwner, Location,
    Namespace, Path, Site, WorkloadEvidence,
};
use crate::{
    attribute::{Workload, WorkloadKind},
    collect::{netns_snmp::TcpSegments, time_lost::TimeLost},
    conntrack::{Stats, StatsSource},
};

/// A container named `name` in its own namespace `netns`.
pub(crate) fn container(name: &str, netns: u32) -> Workload {
    Workload {
        kind: WorkloadKind::Container,
        runtime: "docker".into(),
        id: format!("{name}-id").into(),
        name: name.into(),
        image: None,
        netns,
        netns_shared: false,
    }
}

/// A workload that sent `sent` segments and retransmitted `retransmitted` of them.
pub(crate) fn workload(workload: &Workload, sent: u64, retransmitted: u64) -> WorkloadEvidence {
    WorkloadEvidence {
        workload: workload.clone(),
        segments: TcpSegments {
            out_segs: sent,
            retrans_segs: retransmitted,
        },
        hooked: RetransmitCounters::default(),
        time_lost: TimeLost::default(),
        vanished: false,
        removed: false,
    }
}

/// A flow of `workload` from 198.18.100.2:`port` to `remote`, with no retransmits yet.
pub(crate) fn flow(workload: &Workload, port: u16, remote: &str) -> Flow {
    Flow {
        workload: workload.clone(),
        family: Family::Ipv4,
        local: SocketAddr::from(([198, 18, 100, 2], port)),
        remote: remote.parse().expect("a socket address"),
        netns: workload.netns,
        counters: RetransmitCounters::default(),
        time_lost: TimeLost::default(),
        nat: None,
    }
}

/// `flow` with `n` more retransmits of `kind` (one segment each, `bytes` long).
pub(crate) fn retransmits(mut flow: Flow, kind: RetransmitKind, n: u64, bytes: u64) -> Flow {
    flow.counters.kinds[kind as usize] += n;
    flow.counters.retransmits += n;
    flow.counters.segments += n;
    flow.counters.bytes += n * bytes;
    flow
}

/// `n` TCP packets of `workload` dropped at `site` for `reason` in `function`.
pub(crate) fn dropped(
    workload: &Workload,
    site: Site,
    reason: &str,
    function: &str,
    n: u64,
) -> Drop {
    Drop {
        workload: workload.clone(),
        netns: match &site {
            Site::Host => 1,
            _ => workload.netns,
        },
        site,
        reason: DropReason::new(reason.to_owned()),
        location: Location {
            address: 0xffff_ffff_8100_0000,
            function: Some(function.to_owned()),
        },
        packets: n,
        egress: n,
        ingress: 0,
        tcp: n,
        udp: 0,
        icmp_too_big: 0,
        examples: vec![format!("tcp 198.18.100.2:41000 -> 198.19.0.2:5432 ({n})")],
    }
}

/// Three packets of `netns:web` in its own namespace, two of them TCP.
pub(crate) fn drop(reason: &str, function: &str) -> Drop {
    let web = Workload {
        kind: WorkloadKind::Netns,
        ..container("netns:web", 1)
    };
    Drop {
        packets: 3,
        egress: 0,
        ingress: 3,
        tcp: 2,
        ..dropped(&web, Site::Own("netns:web".to_owned()), reason, function, 3)
    }
}

/// Conntrack of `namespace` with `entries` of `max`, and no events.
pub(crate) fn conntrack(namespace: Namespace, entries: u64, max: u64) -> Conntrack {
    let mut stats = Stats::new(StatsSource::Ctnetlink);
    stats.entries = Some(entries);
    stats.max = Some(max);
    Conntrack {
        namespace,
        netns: 1,
        stats,
    }
}

/// `n` packets of `workload` out of `interface` untranslated.
pub(crate) fn leak(workload: &str, interface: &str, n: u64) -> Leak {
    Leak {
        owner: LeakOwner::Workload(workload.to_owned()),
        interface: interface.to_owned(),
        packets: n,
        examples: vec!["tcp 172.17.0.2:41000 -> 198.19.0.2:5432 flags ACK".to_owned()],
    }
}

/// `workload`'s path: its interface at `inner`, the egress at `egress`.
pub(crate) fn path(workload: &str, inner: u32, egress: u32) -> Path {
    Path {
        workload: workload.to_owned(),
        remote: "198.19.0.2".parse().expect("an address"),
        hops: vec![
            Hop {
                role: HopRole::Workload,
                interface: "eth0".to_owned(),
                mtu: inner,
            },
            Hop {
                role: HopRole::Egress,
                interface: "ens3".to_owned(),
                mtu: egress,
            },
        ],
        smallest_mtu: Some(inner.min(egress)),
        mismatch: (inner > egress).then_some((inner, egress)),
        notes: Vec::new(),
    }
}

/// Time lost to `stall_ms` of RTO recovery with `in_a_row` timeouts in a row.
pub(crate) fn stalled(stall_ms: u64, in_a_row: u32) -> TimeLost {
    TimeLost {
        rto_stall_ns: stall_ms * 1_000_000,
        longest_rto_stall_ns: stall_ms * 1_000_000,
        rto_recoveries: 1,
        max_consecutive_timeouts: in_a_row,
        ..TimeLost::default()
    }
}

/// Evidence of these workloads, flows and drops alone.
pub(crate) fn evidence(
    workloads: Vec<WorkloadEvidence>,
    flows: Vec<Flow>,
    drops: Vec<Drop>,
) -> Evidence {
    Evidence {
        workloads,
        flows,
        drops,
        ..Evidence::default()
    }
}

/// A MASQUERADE rule for `source` as Docker writes it, with or without `--random-fully`.
pub(crate) fn masquerade(source: &str, random_fully: bool) -> crate::conntrack::MasqueradeRule {
    crate::conntrack::MasqueradeRule {
        family: crate::conntrack::Family::V4,
        backend: crate::conntrack::Backend::Nft,
        chain: "POSTROUTING".to_owned(),
        rule: format!(
            "-A POSTROUTING -s {source} ! -o docker0 -j MASQUERADE{}",
            if random_fully { " --random-fully" } else { "" }
        ),
        source: Some(source.to_owned()),
        out_iface: Some("!docker0".to_owned()),
        random_fully,
    }
}
