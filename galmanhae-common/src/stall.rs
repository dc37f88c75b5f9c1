//! Time lost to retransmission, per socket: RTO recoveries (entering `TCP_CA_Loss` to leaving
//! it) and handshakes that needed more than one SYN, filled by the `tcp:tcp_cong_state_set` and
//! `sock:inet_sock_set_state` programs.
//!
//! Times are `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`) stamps and durations in nanoseconds.
//!
//! On 6.7+ the kernel keeps its own RTO counters in `struct tcp_sock`, and `tcp_cong_state_set`
//! (which fires on every congestion-state change) is not attached: the retransmit program
//! starts a recovery at the timeout's retransmission, the kernel's `total_rto_time` gives its
//! length, and it ends where the kernel ends it (`rto_stamp` back to 0), seen at the next
//! timeout, at close, or by the `time_lost_recoveries` iterator before each reading.

use crate::retransmit::FlowKey;

/// Capacity of `TIME_LOST` (sockets that had an RTO or a SYN timeout).
pub const TIME_LOST_CAPACITY: u32 = 16_384;

/// Sockets one run of `time_lost_settle` takes: a raw tracepoint's most arguments
/// (`MAX_BPF_FUNC_ARGS`), which `BPF_PROG_TEST_RUN` hands it as its context.
pub const SETTLE_BATCH: usize = 12;

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
    /// The socket's kernel address, for `time_lost_settle` to read its counters; 0 where
    /// recoveries are timed from `tcp_cong_state_set`.
    pub socket: u64,
    pub recoveries: u32,
    /// Timeouts in the recovery in progress, and the most in any one recovery.
    pub timeouts: u32,
    pub max_timeouts: u32,
    /// SYN timeouts of the handshake.
    pub syn_timeouts: u32,
    pub flags: u32,
    /// The kernel's `total_rto_time` (ms) when the recovery in progress began (6.7+).
    pub rto_time_at_start: u32,
    /// Completed recoveries by duration, in the buckets of [`STALL_BUCKETS_MS`].
    pub stall_buckets: [u16; STALL_BUCKETS],
    /// The kernel's `total_rto_recoveries` at the last timeout seen (6.7+).
    pub kernel_recoveries: u16,
    pub padding: u16,
}

const _: () = assert!(size_of::<SocketTime>() == size_of::<FlowKey>() + 6 * 8 + 6 * 4 + 24);

crate::impl_pod!(SocketTime);
