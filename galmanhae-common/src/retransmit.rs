//! Keys and values of the retransmit maps, filled by the `tcp:tcp_retransmit_*` programs.

/// `AF_INET`, as in the kernel's `family` fields.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// Default capacity of `RETRANSMIT_SOCKETS` and `RETRANSMIT_FLOWS`; the agent may change it
/// before load.
pub const FLOW_MAP_CAPACITY: u32 = 16_384;
/// Capacity of `RETRANSMIT_OVERFLOW` (one entry per namespace and cgroup).
pub const OVERFLOW_MAP_CAPACITY: u32 = 4_096;

/// One TCP flow, as seen from its own socket.
///
/// Addresses are IPv6 or v4-mapped IPv6 (`::ffff:a.b.c.d`), ports in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Inode of the socket's network namespace.
    pub netns: u32,
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub padding: [u8; 6],
    /// cgroup v2 id of the socket's creator (`sk_cgrp_data`), 0 if unknown.
    pub cgroup_id: u64,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

const _: () = assert!(size_of::<FlowKey>() == 56);

/// Where overflowing flows are counted: per namespace and cgroup, without the tuple.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey {
    pub netns: u32,
    pub padding: u32,
    pub cgroup_id: u64,
}

const _: () = assert!(size_of::<OwnerKey>() == 16);

/// Why a segment was retransmitted, from the socket state and congestion state at the time.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetransmitKind {
    /// Congestion state `TCP_CA_Loss`: the retransmission timer fired.
    Rto = 0,
    /// `TCP_CA_Recovery`: duplicate ACKs or SACK triggered a fast retransmit.
    Fast = 1,
    /// `TCP_CA_Open`/`TCP_CA_Disorder` on an established socket: a tail-loss probe.
    Tlp = 2,
    /// Socket in `SYN_SENT`: the connection's SYN.
    Syn = 3,
    /// `tcp:tcp_retransmit_synack`, or a socket in `SYN_RECV`: the listener's SYN-ACK.
    SynAck = 4,
    /// Anything else (`TCP_CA_CWR`, state unknown).
    Other = 5,
}

impl RetransmitKind {
    pub const ALL: [Self; 6] = [
        Self::Rto,
        Self::Fast,
        Self::Tlp,
        Self::Syn,
        Self::SynAck,
        Self::Other,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub const fn name(self) -> &'static str {
        match self {
            Self::Rto => "rto",
            Self::Fast => "fast",
            Self::Tlp => "tlp",
            Self::Syn => "syn",
            Self::SynAck => "synack",
            Self::Other => "other",
        }
    }
}

/// Counters of one flow (per CPU in the kernel; the agent sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetransmitCounters {
    /// Retransmit events that were sent (`err == 0`).
    pub retransmits: u64,
    /// Segments the kernel added to `RetransSegs` (the growth of the socket's
    /// `total_retrans`): those of sent retransmits and of attempts that failed in
    /// transmission (see `failed`).
    pub segments: u64,
    /// Attempts that failed (`err != 0`, kernels >= 6.17): not retransmits. Those that failed
    /// before the segment was handed to IP are not in `RetransSegs` either; those the transmit
    /// path refused (a full qdisc: `-ENOBUFS`, a netfilter drop: `-EPERM`) are, and their
    /// segments are in `segments` too.
    pub failed: u64,
    /// Segments of failed attempts.
    pub failed_segments: u64,
    /// Payload bytes those segments carried (`skb->len`): against `segments`, the size of a
    /// retransmitted segment, to compare with the path MTU.
    pub bytes: u64,
    /// Sent retransmit events by [`RetransmitKind`].
    pub kinds: [u64; RetransmitKind::COUNT],
}

impl RetransmitCounters {
    /// Adds `other` into `self` (summing per-CPU values, or merging flows).
    pub fn add(&mut self, other: &Self) {
        self.retransmits += other.retransmits;
        self.segments += other.segments;
        self.failed += other.failed;
        self.failed_segments += other.failed_segments;
        self.bytes += other.bytes;
        for (mine, theirs) in self.kinds.iter_mut().zip(other.kinds.iter()) {
            *mine += theirs;
        }
    }

    /// `self - earlier`, saturating (a counter that went backwards is a new flow).
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let mut kinds = [0; RetransmitKind::COUNT];
        for (i, k) in kinds.iter_mut().enumerate() {
            *k = self.kinds[i].saturating_sub(earlier.kinds[i]);
        }
        Self {
            retransmits: self.retransmits.saturating_sub(earlier.retransmits),
            segments: self.segments.saturating_sub(earlier.segments),
            failed: self.failed.saturating_sub(earlier.failed),
            failed_segments: self.failed_segments.saturating_sub(earlier.failed_segments),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            kinds,
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

const _: () = assert!(size_of::<RetransmitCounters>() == 8 * (5 + RetransmitKind::COUNT));

/// A flow's entry in `RETRANSMIT_FLOWS`: its counters and what the next event needs to count
/// segments exactly. One entry for all CPUs: a socket's retransmits run under its lock, so
/// the events of one flow never race.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    pub counters: RetransmitCounters,
    /// The socket (its kernel address) of the last event, 0 if none yet: a new socket with the
    /// same tuple starts its `total_retrans` again.
    pub socket: u64,
    /// That socket's `tcp_sock.total_retrans` after the last event (read when `socket` was
    /// set).
    pub last_total_retrans: u32,
    /// That socket's `tcp_sock.total_rto` after the last event (6.7+; the BTF program's): its
    /// growth is a retransmission timeout, whose time `TIME_LOST` measures.
    pub last_total_rto: u32,
}

const _: () = assert!(size_of::<FlowState>() == size_of::<RetransmitCounters>() + 16);

/// An entry of `RETRANSMIT_SOCKETS`, keyed by the socket's cookie (unique for the boot, never
/// reused): the flow, built once at the socket's first retransmit, and its state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketState {
    pub flow: FlowKey,
    pub state: FlowState,
}

const _: () = assert!(size_of::<SocketState>() == size_of::<FlowKey>() + size_of::<FlowState>());

crate::impl_pod!(
    FlowKey,
    OwnerKey,
    RetransmitCounters,
    FlowState,
    SocketState
);
