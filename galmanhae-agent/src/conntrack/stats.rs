//! Conntrack health of a network namespace: the per-CPU counters, summed, and how full the
//! table is. From ctnetlink (needs `CAP_NET_ADMIN`) or procfs (readable by anyone), plus the
//! sysctls that size and loosen the tracker.

use std::path::PathBuf;

use netlink_packet_core::{DefaultNla, NLA_TYPE_MASK, Nla as _};
use netlink_packet_netfilter::conntrack::ConntrackMessage;

use super::{
    ConntrackError,
    entry::value,
    netlink::{self, IPCTNL_MSG_CT_GET_STATS, IPCTNL_MSG_CT_GET_STATS_CPU, Replies, Request},
};

/// `enum ctattr_stats_global`.
const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;
const CTA_STATS_GLOBAL_MAX_ENTRIES: u16 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StatsSource {
    Ctnetlink,
    Procfs,
}

impl StatsSource {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Ctnetlink => "ctnetlink",
            Self::Procfs => "procfs",
        }
    }
}

/// Counters summed over CPUs. The kernel keeps them per namespace and per CPU as u32s.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Stats {
    pub(crate) source: StatsSource,
    /// Entries in the namespace's table.
    pub(crate) entries: Option<u64>,
    /// `nf_conntrack_max`: one limit for all namespaces (read-only outside the initial one).
    pub(crate) max: Option<u64>,
    pub(crate) found: u64,
    /// Packets conntrack could not track (bad TCP flags or window, checksum, ...).
    pub(crate) invalid: u64,
    pub(crate) insert: u64,
    /// Inserts that lost a race with another CPU and were not resolved (the packet is dropped).
    pub(crate) insert_failed: u64,
    /// New connections dropped, most often because the table was full.
    pub(crate) drop: u64,
    pub(crate) early_drop: u64,
    /// ICMP errors that matched no connection, and other protocol errors.
    pub(crate) error: u64,
    pub(crate) search_restart: u64,
    /// Insert races resolved by reusing the other CPU's entry.
    pub(crate) clash_resolve: u64,
    /// Inserts refused because a hash chain was too long.
    pub(crate) chaintoolong: u64,
}

impl Stats {
    pub(crate) fn new(source: StatsSource) -> Self {
        Self {
            source,
            entries: None,
            max: None,
            found: 0,
            invalid: 0,
            insert: 0,
            insert_failed: 0,
            drop: 0,
            early_drop: 0,
            error: 0,
            search_restart: 0,
            clash_resolve: 0,
            chaintoolong: 0,
        }
    }

    /// The event counters by the names `galmanhae_conntrack_events_total{event}` uses.
    pub(crate) fn events(&self) -> [(&'static str, u64); 7] {
        [
            ("insert_failed", self.insert_failed),
            ("drop", self.drop),
            ("early_drop", self.early_drop),
            ("invalid", self.invalid),
            ("clash_resolve", self.clash_resolve),
            ("search_restart", self.search_restart),
            ("chaintoolong", self.chaintoolong),
        ]
    }

    /// The counters' growth since `earlier`; `entries` and `max` stay as they are now.
    #[must_use]
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        Self {
            source: self.source,
            entries: self.entries,
            max: self.max,
            found: self.found.saturating_sub(earlier.found),
            invalid: self.invalid.saturating_sub(earlier.invalid),
            insert: self.insert.saturating_sub(earlier.insert),
            insert_failed: self.insert_failed.saturating_sub(earlier.insert_failed),
            drop: self.drop.saturating_sub(earlier.drop),
            early_drop: self.early_drop.saturating_sub(earlier.early_drop),
            error: self.error.saturating_sub(earlier.error),
            search_restart: self.search_restart.saturating_sub(earlier.search_restart),
            clash_resolve: self.clash_resolve.saturating_sub(earlier.clash_resolve),
            chaintoolong: self.chaintoolong.saturating_sub(earlier.chaintoolong),
        }
    }

    fn counter_mut(&mut self, counter: Counter) -> &mut u64 {
        match counter {
            Counter::Found => &mut self.found,
            Counter::Invalid => &mut self.invalid,
            Counter::Insert => &mut self.insert,
            Counter::InsertFailed => &mut self.insert_failed,
            Counter::Drop => &mut self.drop,
            Counter::EarlyDrop => &mut self.early_drop,
            Counter::Error => &mut self.error,
            Counter::SearchRestart => &mut self.search_restart,
            Counter::ClashResolve => &mut self.clash_resolve,
            Counter::ChainTooLong => &mut self.chaintoolong,
        }
    }
}

/// A per-CPU counter, named once for both sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counter {
    Found,
    Invalid,
    Insert,
    InsertFailed,
    Drop,
    EarlyDrop,
    Error,
    SearchRestart,
    ClashResolve,
    ChainTooLong,
}

impl Counter {
    /// From its attribute in `enum ctattr_stats_cpu`
    /// (<https://github.com/torvalds/linux/blob/master/include/uapi/linux/netfilter/nfnetlink_conntrack.h>);
    /// the obsolete ones (searched, new, ignore, delete, `delete_list`) are left out.
    fn from_attribute(kind: u16) -> Option<Self> {
        Some(match kind {
            2 => Self::Found,
            4 => Self::Invalid,
            8 => Self::Insert,
            9 => Self::InsertFailed,
            10 => Self::Drop,
            11 => Self::EarlyDrop,
            12 => Self::Error,
            13 => Self::SearchRestart,
            14 => Self::ClashResolve,
            15 => Self::ChainTooLong,
            _ => return None,
        })
    }

    /// From its column in `/proc/net/stat/nf_conntrack` (`ct_cpu_seq_show` in
    /// `net/netfilter/nf_conntrack_standalone.c`).
    fn from_column(name: &str) -> Option<Self> {
        Some(match name {
            "found" => Self::Found,
            "invalid" => Self::Invalid,
            "insert" => Self::Insert,
            "insert_failed" => Self::InsertFailed,
            "drop" => Self::Drop,
            "early_drop" => Self::EarlyDrop,
            "icmp_error" => Self::Error,
            "search_restart" => Self::SearchRestart,
            "clashres" => Self::ClashResolve,
            "chainlength" => Self::ChainTooLong,
            _ => return None,
        })
    }
}

/// The calling thread's namespace, over ctnetlink: the per-CPU counters
/// (`IPCTNL_MSG_CT_GET_STATS_CPU`, summed) and the table's fill (`IPCTNL_MSG_CT_GET_STATS`).
pub(crate) fn stats_netlink() -> Result<Stats, ConntrackError> {
    let per_cpu = netlink::request(Request {
        message_type: IPCTNL_MSG_CT_GET_STATS_CPU,
        dump: true,
        what: "reading conntrack statistics",
    })?;
    let global = netlink::request(Request {
        message_type: IPCTNL_MSG_CT_GET_STATS,
        dump: false,
        what: "reading the conntrack table size",
    })?;
    from_netlink(&per_cpu, &global)
}

fn from_netlink(per_cpu: &Replies, global: &Replies) -> Result<Stats, ConntrackError> {
    let invalid = |reason: String| ConntrackError::Parse {
        what: "reading conntrack statistics".to_owned(),
        reason,
    };
    // A CPU left out would under-count: no partial sums.
    if per_cpu.undecodable + global.undecodable > 0 {
        return Err(invalid(format!(
            "{} statistics messages could not be decoded",
            per_cpu.undecodable + global.undecodable
        )));
    }
    let u32_of = |nla: &DefaultNla| {
        value(nla)
            .map(|v| u64::from(u32::from_be_bytes(v)))
            .ok_or_else(|| invalid(format!("attribute {} is not a u32", nla.kind())))
    };

    let mut stats = Stats::new(StatsSource::Ctnetlink);
    for nla in attributes(per_cpu, IPCTNL_MSG_CT_GET_STATS_CPU) {
        if let Some(counter) = Counter::from_attribute(nla.kind() & NLA_TYPE_MASK) {
            *stats.counter_mut(counter) += u32_of(nla)?;
        }
    }
    for nla in attributes(global, IPCTNL_MSG_CT_GET_STATS) {
        match nla.kind() & NLA_TYPE_MASK {
            CTA_STATS_GLOBAL_ENTRIES => stats.entries = Some(u32_of(nla)?),
            CTA_STATS_GLOBAL_MAX_ENTRIES => stats.max = Some(u32_of(nla)?),
            _ => {}
        }
    }
    Ok(stats)
}

/// The attributes of the replies of type `wanted` (the crate leaves stats messages undecoded).
fn attributes(replies: &Replies, wanted: u8) -> impl Iterator<Item = &DefaultNla> {
    replies
        .messages
        .iter()
        .filter_map(move |message| match message {
            ConntrackMessage::Other {
                message_type,
                attributes,
            } if *message_type == wanted => Some(attributes),
            _ => None,
        })
        .flatten()
}

/// From `/proc/<pid>/net/stat/nf_conntrack`, or the calling thread's own with `None`; `max`
/// from the calling thread's `nf_conntrack_max` (a global limit, read-only in other namespaces).
pub(crate) fn stats_procfs(pid: Option<u32>) -> Result<Stats, ConntrackError> {
    let process = pid.map_or_else(
        || PathBuf::from("/proc/thread-self"),
        |pid| PathBuf::from(format!("/proc/{pid}")),
    );
    let path = process.join("net/stat/nf_conntrack");
    let text = std::fs::read_to_string(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound && process.is_dir() {
            ConntrackError::Unavailable {
                what: format!("reading {}", path.display()),
                reason: "no such file (a kernel without CONFIG_NF_CONNTRACK_PROCFS); use \
                         the ctnetlink statistics"
                    .to_owned(),
            }
        } else {
            ConntrackError::Io {
                what: format!("reading {}", path.display()),
                source,
            }
        }
    })?;
    let mut stats = parse_procfs(&text).map_err(|reason| ConntrackError::Parse {
        what: format!("parsing {}", path.display()),
        reason,
    })?;
    stats.max = sysctl("max");
    Ok(stats)
}

/// What a column of the procfs file holds.
#[derive(Clone, Copy)]
enum Column {
    /// The namespace's entry count, the same on every CPU's line.
    Entries,
    Counter(Counter),
    /// Obsolete (`new`, `delete`, ...) or expectation counters.
    Ignored,
}

/// Parses the procfs statistics: a header naming the columns, then one line of hex values per
/// CPU. Driven by the header, since columns were renamed over kernel versions.
fn parse_procfs(text: &str) -> Result<Stats, String> {
    let mut lines = text.lines();
    let header = lines.next().ok_or("the file is empty")?;
    let columns: Vec<Column> = header
        .split_whitespace()
        .map(|name| match name {
            "entries" => Column::Entries,
            _ => Counter::from_column(name).map_or(Column::Ignored, Column::Counter),
        })
        .collect();
    if columns.iter().all(|c| matches!(c, Column::Ignored)) {
        return Err(format!("the first line names no known column: {header:?}"));
    }

    let mut stats = Stats::new(StatsSource::Procfs);
    let mut cpus = 0;
    for (n, line) in (2..).zip(lines) {
        let values: Vec<&str> = line.split_whitespace().collect();
        if values.is_empty() {
            continue;
        }
        if values.len() != columns.len() {
            return Err(format!(
                "line {n} has {} values for {} columns",
                values.len(),
                columns.len()
            ));
        }
        for (column, text) in columns.iter().zip(values) {
            let value = u64::from_str_radix(text, 16)
                .map_err(|e| format!("line {n}: {text:?} is not hexadecimal: {e}"))?;
            match column {
                Column::Entries => {
                    stats.entries.get_or_insert(value);
                }
                Column::Counter(counter) => *stats.counter_mut(*counter) += value,
                Column::Ignored => {}
            }
        }
        cpus += 1;
    }
    if cpus == 0 {
        return Err("no per-CPU lines".to_owned());
    }
    Ok(stats)
}

/// `net.netfilter.nf_conntrack_*` of the calling thread's namespace; `None` where absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Sysctls {
    pub(crate) max: Option<u64>,
    pub(crate) count: Option<u64>,
    pub(crate) buckets: Option<u64>,
    /// Out-of-window TCP packets are accepted instead of marked invalid.
    pub(crate) tcp_be_liberal: Option<bool>,
    /// Connections already established when tracking started are picked up mid-stream.
    pub(crate) tcp_loose: Option<bool>,
    pub(crate) tcp_timeout_established_s: Option<u64>,
}

pub(crate) fn sysctls() -> Sysctls {
    Sysctls {
        max: sysctl("max"),
        count: sysctl("count"),
        buckets: sysctl("buckets"),
        tcp_be_liberal: sysctl("tcp_be_liberal").map(|v| v != 0),
        tcp_loose: sysctl("tcp_loose").map(|v| v != 0),
        tcp_timeout_established_s: sysctl("tcp_timeout_established"),
    }
}

/// /proc/sys/net is resolved against the reading thread's namespace.
fn sysctl(name: &str) -> Option<u64> {
    let path = format!("/proc/sys/net/netfilter/nf_conntrack_{name}");
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::netlink::tests::replies;

    /// `/proc/net/stat/nf_conntrack` of this machine's host namespace (6.18, 2 CPUs).
    const PROCFS_6_18: &str = "\
entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
000000d2  00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000
000000d2  00000000 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000
";

    #[test]
    fn procfs_sums_cpus_and_takes_entries_once() {
        let stats = parse_procfs(PROCFS_6_18).unwrap();
        assert_eq!(stats.source, StatsSource::Procfs);
        assert_eq!(stats.entries, Some(0xd2));
        assert_eq!(stats.found, 3);
        assert_eq!(stats.max, None, "max is read from the sysctl");
    }

    #[test]
    fn procfs_values_are_hex_and_columns_follow_the_header() {
        // Columns reordered and renamed as on older kernels ("searched", "delete_list").
        let text = "entries searched found insert_failed icmp_error drop clashres chainlength\n\
                    0000000a 000000ff 00000010 00000001 0000000b 00000002 00000003 00000004\n\
                    0000000a 00000001 00000010 00000001 00000001 00000000 00000000 00000000\n";
        let stats = parse_procfs(text).unwrap();
        assert_eq!(stats.entries, Some(10));
        assert_eq!(
            (stats.found, stats.insert_failed, stats.error, stats.drop),
            (0x20, 2, 0xc, 2)
        );
        assert_eq!((stats.clash_resolve, stats.chaintoolong), (3, 4));
    }

    #[test]
    fn malformed_procfs_is_an_error() {
        assert!(parse_procfs("").is_err());
        assert!(parse_procfs("00000001 00000002\n").is_err(), "no header");
        let header_only = PROCFS_6_18.lines().next().unwrap();
        assert!(parse_procfs(header_only).is_err(), "no CPU lines");
        let short = format!("{header_only}\n00000001 00000002\n");
        assert!(parse_procfs(&short).unwrap_err().contains("line 2"));
        let not_hex = "entries found\n0000000g 00000000\n";
        assert!(parse_procfs(not_hex).unwrap_err().contains("hexadecimal"));
    }

    #[test]
    fn decodes_captured_netlink_stats() {
        // Captured in the namespace of table.rs's dump: 5 entries, two ICMP errors on CPU 0.
        let per_cpu = replies(&[
            include_bytes!("testdata/stats-cpu.bin"),
            include_bytes!("testdata/stats-cpu-done.bin"),
        ]);
        let global = replies(&[
            include_bytes!("testdata/stats.bin"),
            include_bytes!("testdata/stats-ack.bin"),
        ]);
        assert_eq!(per_cpu.messages.len(), 2, "one message per CPU");
        let stats = from_netlink(&per_cpu, &global).unwrap();
        assert_eq!(stats.source, StatsSource::Ctnetlink);
        assert_eq!((stats.entries, stats.max), (Some(5), Some(262_144)));
        assert_eq!(stats.error, 2);
        assert_eq!(
            stats.found + stats.invalid + stats.drop + stats.insert_failed,
            0
        );
    }

    #[test]
    fn since_is_a_saturating_delta_of_the_counters() {
        let mut earlier = Stats::new(StatsSource::Ctnetlink);
        earlier.drop = 10;
        earlier.invalid = 5;
        earlier.entries = Some(100);
        let mut now = earlier.clone();
        now.drop = 25;
        now.invalid = 2; // a counter that went back (CPU hot-unplug): no underflow
        now.entries = Some(90);
        let delta = now.since(&earlier);
        assert_eq!(
            (delta.drop, delta.invalid, delta.entries),
            (15, 0, Some(90))
        );
    }
}
