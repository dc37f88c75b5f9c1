//! TCP segment counters per network namespace (`/proc/<pid>/net/snmp`), the denominator of
//! the retransmit ratio. The kernel keeps them per namespace (`TCP_ADD_STATS(sock_net(sk),
//! ...)`), which is why the host's /proc/net/snmp never shows a container's retransmits.

use std::collections::BTreeMap;

use crate::attribute::procfs::ProcessTable;

/// `Tcp: OutSegs` and `Tcp: RetransSegs` of one namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TcpSegments {
    pub(crate) out_segs: u64,
    pub(crate) retrans_segs: u64,
}

impl TcpSegments {
    #[must_use]
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        Self {
            out_segs: self.out_segs.saturating_sub(earlier.out_segs),
            retrans_segs: self.retrans_segs.saturating_sub(earlier.retrans_segs),
        }
    }
}

/// Reads the counters of every namespace that has a process, trying the next process when
/// one exits between the scan and the read.
pub(crate) fn read_all(processes: &ProcessTable) -> BTreeMap<u32, TcpSegments> {
    processes
        .netns
        .iter()
        .filter_map(|(netns, info)| {
            info.pids.iter().find_map(|pid| {
                let snmp = procfs::process::Process::new(*pid).ok()?.snmp().ok()?;
                Some((
                    *netns,
                    TcpSegments {
                        out_segs: snmp.tcp_out_segs,
                        retrans_segs: snmp.tcp_retrans_segs,
                    },
                ))
            })
        })
        .collect()
}
