//! The kernel's connection tracking: entries looked up by tuple, to join a container's
//! pre-NAT flow with the tuple it leaves the host with ([`Lookups`]); the health
//! counters of a network namespace ([`stats_netlink`], [`stats_procfs`], [`sysctls`]); and the
//! NAT rules that decide the translation ([`masquerade_rules`]).
//!
//! Conntrack is per network namespace and everything here reads the calling thread's: to
//! look into a container's, `setns(CLONE_NEWNET)` on a dedicated thread first. That is why
//! procfs is read through `/proc/thread-self`, not `/proc/self` (the main thread's namespace).

mod audit;
mod entry;
mod lookup;
mod netlink;
#[cfg(test)]
mod root_test;
mod stats;
// The dump: the agent looks flows up by tuple; the root test checks those lookups against
// it.
#[cfg(test)]
mod table;

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

pub(crate) use audit::{MasqueradeRule, masquerade_rules};
// Tests build audits and statistics with these.
#[cfg(test)]
pub(crate) use audit::{Backend, Family};
pub(crate) use lookup::Lookups;
#[cfg(test)]
pub(crate) use stats::StatsSource;
pub(crate) use stats::{Stats, Sysctls, stats_netlink, stats_procfs, sysctls};
#[cfg(test)]
use table::{dump, dump_table};

/// `IPS_*` status bits of an entry (`include/uapi/linux/netfilter/nf_conntrack_common.h`).
/// The bits below are only read by the tests that build and decode entries.
#[cfg(test)]
pub(crate) const IPS_SEEN_REPLY: u32 = 1 << 1;
#[cfg(test)]
pub(crate) const IPS_ASSURED: u32 = 1 << 2;
#[cfg(test)]
pub(crate) const IPS_CONFIRMED: u32 = 1 << 3;
pub(crate) const IPS_SRC_NAT: u32 = 1 << 4;
pub(crate) const IPS_DST_NAT: u32 = 1 << 5;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConntrackError {
    #[error(
        "{what} was refused (EPERM): ctnetlink needs CAP_NET_ADMIN in the namespace's user \
         namespace. Run galmanhae as root or grant it with the others (setcap replaces the \
         file's set): setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search,cap_net_admin+ep \
         $(command -v galmanhae); without it, use the procfs statistics"
    )]
    NotPermitted { what: &'static str },
    #[error("{what}: conntrack is not available in this kernel or network namespace: {reason}")]
    Unavailable { what: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Parse { what: String, reason: String },
    #[error(
        "{what}: the netlink socket overflowed (ENOBUFS) on all {attempts} attempts, the table \
         is too large or changing too fast to read in one pass; retry, or raise \
         net.core.rmem_max"
    )]
    Overrun { what: &'static str, attempts: u32 },
    #[error(
        "{tool} was not found: the NAT audit runs it to list the rules; install iptables \
         (Debian: apt-get install iptables)"
    )]
    ToolMissing { tool: &'static str },
    #[error("{tool} -t nat failed ({status}): {stderr}")]
    ToolFailed {
        tool: &'static str,
        status: String,
        stderr: String,
    },
}

/// One direction of a connection. Ports are 0 for protocols without ports (ICMP, GRE, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub(crate) struct Tuple {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) sport: u16,
    pub(crate) dport: u16,
}

impl Tuple {
    pub(crate) fn source(&self) -> SocketAddr {
        SocketAddr::new(self.src, self.sport)
    }

    pub(crate) fn destination(&self) -> SocketAddr {
        SocketAddr::new(self.dst, self.dport)
    }
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.source(), self.destination())
    }
}

/// One conntrack entry. `orig` is the flow as its sender wrote it; `reply` is what the peer
/// answers to, so it carries the translated addresses.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Entry {
    /// `IPPROTO_*`.
    pub(crate) protocol: u8,
    pub(crate) orig: Tuple,
    pub(crate) reply: Tuple,
    /// `IPS_*` bits.
    pub(crate) status: u32,
    /// `TCP_CONNTRACK_*`, for TCP.
    pub(crate) tcp_state: Option<u8>,
    pub(crate) timeout_s: Option<u32>,
    pub(crate) mark: u32,
    pub(crate) zone: u16,
}

impl Entry {
    pub(crate) fn is_src_nat(&self) -> bool {
        self.status & IPS_SRC_NAT != 0
    }

    pub(crate) fn is_dst_nat(&self) -> bool {
        self.status & IPS_DST_NAT != 0
    }

    /// The original sender's flow after translation: local = `reply.dst:reply.dport`, remote =
    /// `reply.src:reply.sport`. This is the socket pair the peer (and a capture on the wire)
    /// sees for a masqueraded container.
    pub(crate) fn translated(&self) -> (SocketAddr, SocketAddr) {
        (self.reply.destination(), self.reply.source())
    }

    /// The TCP state as `conntrack -L` prints it (the tests compare with it).
    #[cfg(test)]
    pub(crate) fn tcp_state_name(&self) -> Option<&'static str> {
        // enum tcp_conntrack, include/uapi/linux/netfilter/nf_conntrack_tcp.h
        const NAMES: [&str; 10] = [
            "NONE",
            "SYN_SENT",
            "SYN_RECV",
            "ESTABLISHED",
            "FIN_WAIT",
            "CLOSE_WAIT",
            "LAST_ACK",
            "TIME_WAIT",
            "CLOSE",
            "SYN_SENT2",
        ];
        self.tcp_state
            .map(|state| NAMES.get(usize::from(state)).copied().unwrap_or("UNKNOWN"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(orig: Tuple, reply: Tuple, status: u32) -> Entry {
        Entry {
            protocol: 6,
            orig,
            reply,
            status,
            tcp_state: Some(3),
            timeout_s: Some(431_999),
            mark: 0,
            zone: 0,
        }
    }

    #[test]
    fn displays_tuples_with_v6_in_brackets() {
        let v4 = Tuple {
            src: "198.18.100.2".parse().unwrap(),
            dst: "198.19.0.2".parse().unwrap(),
            sport: 41000,
            dport: 5432,
        };
        assert_eq!(v4.to_string(), "198.18.100.2:41000 -> 198.19.0.2:5432");
        let v6 = Tuple {
            src: "2001:2::2".parse().unwrap(),
            dst: "2001:2:0:1::2".parse().unwrap(),
            sport: 41000,
            dport: 5432,
        };
        assert_eq!(v6.to_string(), "[2001:2::2]:41000 -> [2001:2:0:1::2]:5432");
    }

    #[test]
    fn masqueraded_flow_translates_to_the_host_address() {
        // A container 198.18.100.2 talking to 198.19.0.2, masqueraded to the host's 198.19.0.1
        // with a remapped port.
        let e = entry(
            Tuple {
                src: "198.18.100.2".parse().unwrap(),
                dst: "198.19.0.2".parse().unwrap(),
                sport: 41000,
                dport: 5432,
            },
            Tuple {
                src: "198.19.0.2".parse().unwrap(),
                dst: "198.19.0.1".parse().unwrap(),
                sport: 5432,
                dport: 61000,
            },
            IPS_CONFIRMED | IPS_ASSURED | IPS_SEEN_REPLY | IPS_SRC_NAT,
        );
        assert!(e.is_src_nat());
        assert!(!e.is_dst_nat());
        let (local, remote) = e.translated();
        assert_eq!(
            (local.to_string(), remote.to_string()),
            ("198.19.0.1:61000".into(), "198.19.0.2:5432".into())
        );
        assert_eq!(e.tcp_state_name(), Some("ESTABLISHED"));
    }
}
