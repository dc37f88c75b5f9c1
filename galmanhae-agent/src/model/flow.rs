//! A flow that retransmitted or lost time, with its NAT side.

use std::net::SocketAddr;

use galmanhae_common::retransmit::{RetransmitCounters, RetransmitKind};

use super::TimeLostSeconds;
use crate::{attribute::Workload, attribute::nat::Binding, collect::time_lost::TimeLost};

#[derive(Clone, Debug)]
pub(crate) struct Flow {
    pub(crate) workload: Workload,
    /// The socket's family: an IPv6 socket may talk IPv4 (v4-mapped addresses).
    pub(crate) family: Family,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    /// The namespace of its socket.
    pub(crate) netns: u32,
    pub(crate) counters: RetransmitCounters,
    pub(crate) time_lost: TimeLost,
    /// How the flow leaves the host, if it is translated.
    pub(crate) nat: Option<Binding>,
}

impl Flow {
    /// Retransmits of one kind.
    pub(crate) fn kind(&self, kind: RetransmitKind) -> u64 {
        self.counters.kinds[kind as usize]
    }

    /// Average payload of a retransmitted segment, bytes.
    pub(crate) fn segment_bytes(&self) -> Option<u64> {
        (self.counters.segments > 0 && self.counters.bytes > 0)
            .then(|| self.counters.bytes / self.counters.segments)
    }

    pub(crate) fn lost(&self) -> TimeLostSeconds {
        TimeLostSeconds::from(&self.time_lost)
    }

    /// `local -> remote`, with the NAT side when there is one.
    pub(crate) fn describe(&self) -> String {
        match &self.nat {
            Some(nat) => format!(
                "{} -> {} (as {} -> {})",
                self.local, self.remote, nat.nat_local, nat.nat_remote
            ),
            None => format!("{} -> {}", self.local, self.remote),
        }
    }
}

/// The address family of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }
}
