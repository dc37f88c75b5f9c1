//! A flow that retransmitted or lost time, with its NAT side.

use std::net::SocketAddr;

use galmanhae_common::retransmit::{RetransmitCounters, RetransmitKind};

use super::TimeLostSeconds;
use crate::{attribute::Workload, attribute::nat::Binding, collect::time_lost::TimeLost};

#[derive(Clone, Debug)]
pub(crate) struct Flow {
    pub workload: Workload,
    /// The socket's family: an IPv6 socket may talk IPv4 (v4-mapped addresses).
    pub family: Family,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The namespace of its socket.
    pub netns: u32,
    pub counters: RetransmitCounters,
    pub time_lost: TimeLost,
    /// How the flow leaves the host, if it is translated.
    pub nat: Option<Binding>,
}

impl Flow {
    /// Retransmits of one kind.
    pub fn kind(&self, kind: RetransmitKind) -> u64 {
        self.counters.kinds[kind as usize]
    }

    /// Average payload of a retransmitted segment, bytes.
    pub fn segment_bytes(&self) -> Option<u64> {
        (self.counters.segments > 0 && self.counters.bytes > 0)
            .then(|| self.counters.bytes / self.counters.segments)
    }

    pub fn lost(&self) -> TimeLostSeconds {
        TimeLostSeconds::from(&self.time_lost)
    }

    /// `local -> remote`, with the NAT side when there is one.
    pub fn describe(&self) -> String {
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
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }
}
