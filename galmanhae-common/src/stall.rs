//! Time lost to retransmission, per socket: RTO recoveries (entering `TCP_CA_Loss` to leaving
//! it) and handshakes that needed more than one SYN, filled by the `tcp:tcp_cong_state_set` and
//! `sock:inet_sock_set_state` programs.
//!
//! Times are `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`) stamps and durations in nanoseconds.

use crate::retransmit::FlowKey;

/// Capacity of `TIME_LOST` (sockets that had an RTO or a SYN timeout).
pub const TIME_LOST_CAPACITY: u32 = 16_384;

/// `flags`: the socket reached `TCP_CLOSE`; its entry no longer changes.
pub const CLOSED: u32 = 1;
/// `flags`: the current recovery began in `SYN_SENT` (a SYN timeout, not data's).
pub const IN_SYN: u32 = 2;
/// `flags`: the first SYN's time was not in `tcp_sock.retrans_stamp`; the handshake is taken
/// to have started one initial RTO (1 s) before the first timeout.
pub const SYN_START_ESTIMATED: u32 = 4;

/// Upper bounds (ms) of the buckets completed recoveries are counted in; the last bucket,
/// past the final bound, is `+Inf`. From the 200 ms minimum RTO to a minute.
pub const STALL_BUCKETS_MS: [u64; 9] = [
    200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000,
];
/// [`STALL_BUCKETS_MS`] and `+Inf`.
pub const STALL_BUCKETS: usize = STALL_BUCKETS_MS.len() + 1;

/// An entry of `TIME_LOST`, keyed by the socket's cookie. One entry for all CPUs: a socket's
/// state changes run under its lock.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketTime {
    pub flow: FlowKey,
    /// When the recovery in progress began; 0 when none is.
    pub loss_since: u64,
    /// Completed RTO recoveries: their total and longest time.
    pub stall_ns: u64,
    pub longest_ns: u64,
    /// When the first SYN was sent, for a handshake that timed out; 0 if none did.
    pub syn_start: u64,
    /// From the first SYN to established or closed, once the handshake ended; 0 before.
    pub syn_ns: u64,
    pub recoveries: u32,
    /// Timeouts in the recovery in progress, and the most in any one recovery.
    pub timeouts: u32,
    pub max_timeouts: u32,
    /// SYN timeouts of the handshake.
    pub syn_timeouts: u32,
    pub flags: u32,
    pub padding: u32,
    /// Completed recoveries by duration, in the buckets of [`STALL_BUCKETS_MS`].
    pub stall_buckets: [u16; STALL_BUCKETS],
    pub padding2: [u16; 2],
}

const _: () = assert!(size_of::<SocketTime>() == size_of::<FlowKey>() + 5 * 8 + 6 * 4 + 24);

crate::impl_pod!(SocketTime);
