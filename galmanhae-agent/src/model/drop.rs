//! Dropped packets: where (a typed site), why (the kernel's reason as a value) and at which
//! kernel function.

use std::borrow::Cow;

use crate::attribute::Workload;

/// Packets of one workload dropped at one site for one reason at one location.
#[derive(Clone, Debug)]
pub(crate) struct Drop {
    pub(crate) workload: Workload,
    pub(crate) site: Site,
    /// The namespace the packets were dropped in.
    pub(crate) netns: u32,
    pub(crate) reason: DropReason,
    pub(crate) location: Location,
    pub(crate) packets: u64,
    /// Packets by direction (from the workload / to it), when known.
    pub(crate) egress: u64,
    pub(crate) ingress: u64,
    /// Of which TCP segments and UDP datagrams.
    pub(crate) tcp: u64,
    pub(crate) udp: u64,
    /// Of which ICMP "fragmentation needed" / `ICMPv6` "packet too big".
    pub(crate) icmp_too_big: u64,
    /// Up to five example packets, `src -> dst` with the protocol.
    pub(crate) examples: Vec<String>,
}

/// Where a packet was dropped, relative to the workload it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Site {
    /// The host's namespace.
    Host,
    /// The namespace of the workload the packet belongs to (named).
    Own(String),
    /// Another workload's namespace on this machine: it stands for the far end of the flow.
    Peer(String),
    /// A namespace the kernel did not name.
    Unknown,
}

impl Site {
    /// `host`, the namespace's workload, or `unknown namespace`.
    pub(crate) fn name(&self) -> &str {
        match self {
            Self::Host => "host",
            Self::Own(name) | Self::Peer(name) => name,
            Self::Unknown => "unknown namespace",
        }
    }

    /// On the workload's own side of its flows: the host or its own namespace.
    pub(crate) fn is_local(&self) -> bool {
        matches!(self, Self::Host | Self::Own(_))
    }
}

/// The kernel's name for a drop reason (`enum skb_drop_reason` without its prefix). The
/// numbers shift between kernels, so reasons are compared by name, through these constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DropReason(Cow<'static, str>);

impl DropReason {
    pub(crate) const NOT_SPECIFIED: Self = Self::named("NOT_SPECIFIED");
    pub(crate) const PKT_TOO_BIG: Self = Self::named("PKT_TOO_BIG");
    pub(crate) const NETFILTER_DROP: Self = Self::named("NETFILTER_DROP");
    pub(crate) const TC_EGRESS: Self = Self::named("TC_EGRESS");
    pub(crate) const IP_OUTNOROUTES: Self = Self::named("IP_OUTNOROUTES");
    pub(crate) const IP_INNOROUTES: Self = Self::named("IP_INNOROUTES");
    pub(crate) const SOCKET_RCVBUFF: Self = Self::named("SOCKET_RCVBUFF");
    pub(crate) const PROTO_MEM: Self = Self::named("PROTO_MEM");
    pub(crate) const SOCKET_BACKLOG: Self = Self::named("SOCKET_BACKLOG");
    pub(crate) const CPU_BACKLOG: Self = Self::named("CPU_BACKLOG");
    pub(crate) const SOCKET_CLOSE: Self = Self::named("SOCKET_CLOSE");

    /// Reasons that are TCP's own receive-side bookkeeping (duplicates, closed sockets), not
    /// lost packets.
    pub(crate) const TCP_BOOKKEEPING: [Self; 11] = [
        Self::named("TCP_OLD_DATA"),
        Self::named("TCP_OLD_SEQUENCE"),
        Self::named("TCP_OFOMERGE"),
        Self::named("TCP_OLD_ACK"),
        Self::named("TCP_TOO_OLD_ACK"),
        Self::named("TCP_CLOSE"),
        Self::named("TCP_RESET"),
        Self::SOCKET_CLOSE,
        Self::named("QUEUE_PURGE"),
        Self::named("NO_SOCKET"),
        Self::named("TCP_ZEROWINDOW"),
    ];

    const fn named(name: &'static str) -> Self {
        Self(Cow::Borrowed(name))
    }

    /// A reason by the name the running kernel gives it.
    pub(crate) fn new(name: String) -> Self {
        Self(Cow::Owned(name))
    }

    pub(crate) fn name(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_tcp_bookkeeping(&self) -> bool {
        Self::TCP_BOOKKEEPING.contains(self)
    }

    /// A queueing discipline or a tc program dropped it (`QDISC_*`, `FQ_*`, `TC_EGRESS`).
    pub(crate) fn is_queueing(&self) -> bool {
        self.0.starts_with("QDISC") || self.0.starts_with("FQ_") || *self == Self::TC_EGRESS
    }

    /// Neighbour resolution failed (`NEIGH_*`).
    pub(crate) fn is_neighbour(&self) -> bool {
        self.0.starts_with("NEIGH")
    }
}

/// The kernel function a packet was freed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) address: u64,
    /// Its name from kallsyms; `None` when it could not be read.
    pub(crate) function: Option<String>,
}

impl Location {
    /// The function, else the address in hex.
    pub(crate) fn name(&self) -> String {
        self.function
            .clone()
            .unwrap_or_else(|| format!("{:#x}", self.address))
    }

    /// Whether it is one of `functions`.
    pub(crate) fn is_any_of(&self, functions: &[&str]) -> bool {
        self.function
            .as_deref()
            .is_some_and(|f| functions.contains(&f))
    }

    /// Whether the function's name contains `part`.
    pub(crate) fn mentions(&self, part: &str) -> bool {
        self.function.as_deref().is_some_and(|f| f.contains(part))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_compare_by_name_and_classify() {
        assert_eq!(
            DropReason::new("PKT_TOO_BIG".to_owned()),
            DropReason::PKT_TOO_BIG
        );
        assert!(DropReason::new("TCP_OLD_DATA".to_owned()).is_tcp_bookkeeping());
        assert!(!DropReason::NETFILTER_DROP.is_tcp_bookkeeping());
        assert!(DropReason::new("QDISC_DROP".to_owned()).is_queueing());
        assert!(DropReason::new("FQ_DROP_FLOW_LIMIT".to_owned()).is_queueing());
        assert!(DropReason::TC_EGRESS.is_queueing());
        assert!(DropReason::new("NEIGH_FAILED".to_owned()).is_neighbour());
    }

    #[test]
    fn sites_on_the_workloads_side_are_local() {
        assert!(Site::Host.is_local());
        assert!(Site::Own("app".to_owned()).is_local());
        assert!(!Site::Peer("db".to_owned()).is_local());
        assert!(!Site::Unknown.is_local());
        assert_eq!(Site::Unknown.name(), "unknown namespace");
    }

    #[test]
    fn an_unnamed_location_shows_its_address() {
        let unnamed = Location {
            address: 0xffff_ffff_8100_0000,
            function: None,
        };
        assert_eq!(unnamed.name(), "0xffffffff81000000");
        assert!(!unnamed.mentions("nf_hook_slow"));
    }
}
