//! `tcp:tcp_cong_state_set` and `sock:inet_sock_set_state`: the time a socket loses to
//! retransmission timeouts, per socket, in the kernel.
//!
//! Every RTO calls `tcp_enter_loss()`, which sets `TCP_CA_Loss`; the tracepoint fires before
//! the state is stored, so the socket still holds the previous one. A recovery runs from the
//! first timeout to the first change out of `TCP_CA_Loss`, or to the socket's close. A
//! timeout in `SYN_SENT` is the handshake's: it runs from the first SYN to established or
//! closed. Only sockets that time out get an entry: the cost follows the sockets in trouble.
//! <https://elixir.bootlin.com/linux/v6.18/source/net/ipv4/tcp_input.c> (`tcp_set_ca_state`)

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::HashMap,
    programs::{BtfTracePointContext, RawTracePointContext},
};
use galmanhae_common::{
    health::HealthCounter,
    offsets::ABSENT,
    stall::{
        CLOSED, IN_SYN, STALL_BUCKETS_MS, SYN_START_ESTIMATED, SocketTime, TIME_LOST_CAPACITY,
    },
};

use crate::{
    health,
    kernel::{Direct, Memory, Probe, offset, socket_cookie, tcp_sock},
    retransmit::{self, socket_flow_key},
};

#[map]
static TIME_LOST: HashMap<u64, SocketTime> =
    HashMap::with_max_entries(TIME_LOST_CAPACITY, BPF_F_NO_PREALLOC);

/// `include/net/tcp_states.h`
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: u8 = 2;
const TCP_CLOSE: i32 = 7;
/// `enum tcp_ca_state`
const TCP_CA_LOSS: u8 = 4;
/// `TCP_TIMEOUT_INIT`: the first SYN's timeout, when `retrans_stamp` cannot say.
const INITIAL_RTO_NS: u64 = 1_000_000_000;
/// A handshake older than this is not what `retrans_stamp` means (a wrapped or unset stamp).
const MAX_SYN_AGE_MS: u32 = 600_000;
const NS_PER_MS: u64 = 1_000_000;

/// What a socket's entry is created from (zeros, from memory, not the stack).
// SAFETY: every field is an integer or an array of them: all zeros is a valid value.
static EMPTY: SocketTime = unsafe { core::mem::zeroed() };

/// Sockets in an RTO recovery, counted per slot of a hash of their address. Most state
/// changes (Open, Disorder, Recovery, CWR) are of sockets in no recovery: an empty slot says
/// so with one load, without the helper call that reading the old state takes. A socket can
/// leave Loss for Open, Disorder or Recovery (`tcp_fastretrans_alert` falls through from Loss
/// when a retransmission is lost), so every change of a counted socket is looked at. Slots are
/// counters, not bits, so two sockets sharing one never hide each other; a count that stays
/// (an entry the agent freed mid-recovery) only costs that slot the helper call.
static mut IN_LOSS: [u64; LOSS_SLOTS] = [0; LOSS_SLOTS];
const LOSS_SLOTS: usize = 1024;

/// A socket's slot in [`IN_LOSS`], from its ports and remote address (plain loads: the
/// verifier allows no arithmetic on the socket pointer itself). They are set before the first
/// SYN leaves and never change after.
#[inline(always)]
fn loss_slot(sk: u64) -> Option<Slot> {
    let local = u32::from(Direct::at::<u16>(sk, offset!(sock.num)).unwrap_or(0));
    let remote = u32::from(Direct::at::<u16>(sk, offset!(sock.dport)).unwrap_or(0));
    let addr = Direct::at::<u32>(sk, offset!(sock.daddr)).unwrap_or(0);
    let hash = (local ^ (remote << 16) ^ addr ^ (addr >> 13)).wrapping_mul(0x9e37_79b1);
    let index = (hash >> 22) as usize & (LOSS_SLOTS - 1);
    let slots = &raw mut IN_LOSS;
    // SAFETY: an index below the length; a raw pointer, never a reference, since other CPUs
    // change the counters.
    (index < LOSS_SLOTS).then(|| Slot(unsafe { slots.cast::<u64>().add(index) }))
}

/// One counter of [`IN_LOSS`]. Changed with the BPF atomic add (`lock xadd`, every kernel):
/// two CPUs may count sockets of one slot at once.
#[derive(Clone, Copy)]
struct Slot(*mut u64);

impl Slot {
    #[inline(always)]
    fn add(self, delta: u64) {
        // SAFETY: a valid, aligned pointer into IN_LOSS; the result is unused, so LLVM emits
        // the plain atomic add that every BPF kernel has.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(self.0, delta) };
    }

    #[inline(always)]
    fn is_empty(self) -> bool {
        // SAFETY: as above; a torn read cannot happen for an aligned u64.
        unsafe { core::ptr::read_volatile(self.0) == 0 }
    }
}

/// `tp_btf/tcp_cong_state_set(sk, ca_state)`.
pub fn on_cong_state_set(ctx: &BtfTracePointContext) {
    let sk: u64 = ctx.arg(0);
    let new = (ctx.arg::<u64>(1) & 0xff) as u8;
    let Some(slot) = loss_slot(sk) else {
        return;
    };
    if new == TCP_CA_LOSS {
        let cookie = socket_cookie(sk);
        // SAFETY: no arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        timeout(cookie, sk, slot, now);
        return;
    }
    if slot.is_empty() {
        return;
    }
    if Direct::bits(tcp_sock(sk), offset!(structs.icsk_ca_state)) != Some(TCP_CA_LOSS) {
        return;
    }
    if let Some(entry) = TIME_LOST.get_ptr_mut(socket_cookie(sk)) {
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: this socket's entry; its state changes run under its lock.
        end_recovery(unsafe { &mut *entry }, now, slot);
    }
}

/// A retransmission timeout: the first of a recovery starts it (the entry, not the socket's
/// old state, says whether one is running).
#[inline(always)]
fn timeout(cookie: u64, sk: u64, slot: Slot, now: u64) {
    let Some(entry) = entry_for(cookie, sk) else {
        health::bump(HealthCounter::TimeMapFull);
        return;
    };
    // SAFETY: this socket's entry; its state changes run under its lock.
    let entry = unsafe { &mut *entry };
    let in_syn = Direct::at::<u8>(sk, offset!(sock.state)) == Some(TCP_SYN_SENT);
    if in_syn {
        entry.syn_timeouts += 1;
        if entry.syn_start == 0 {
            entry.syn_start = first_syn(tcp_sock(sk), now, &mut entry.flags);
        }
    }
    if entry.loss_since == 0 {
        entry.loss_since = now;
        entry.timeouts = 1;
        entry.flags = (entry.flags & !IN_SYN) | if in_syn { IN_SYN } else { 0 };
        slot.add(1);
    } else {
        entry.timeouts += 1;
    }
}

/// The socket's entry, created with its flow at its first timeout; `None` when the map is full.
#[inline(always)]
fn entry_for(cookie: u64, sk: u64) -> Option<*mut SocketTime> {
    if let Some(entry) = TIME_LOST.get_ptr_mut(cookie) {
        return Some(entry);
    }
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the entry would be copied to the stack first"
    )]
    let created = TIME_LOST.insert(cookie, &EMPTY, u64::from(BPF_NOEXIST));
    let entry = created.ok().and_then(|()| TIME_LOST.get_ptr_mut(cookie))?;
    // SAFETY: just created; only this socket writes it.
    unsafe { (*entry).flow = socket_flow_key::<Direct>(sk) };
    Some(entry)
}

/// When the handshake's first SYN left: `tcp_connect()` stamps it in `retrans_stamp`
/// (milliseconds of the same clock, 32 bits).
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "the kernel's stamp is the low 32 bits of the milliseconds"
)]
fn first_syn(tcp: u64, now: u64, flags: &mut u32) -> u64 {
    let now_ms = (now / NS_PER_MS) as u32;
    match Direct::at::<u32>(tcp, offset!(structs.tcp_retrans_stamp)) {
        Some(stamp) if stamp != 0 && now_ms.wrapping_sub(stamp) < MAX_SYN_AGE_MS => {
            now.saturating_sub(u64::from(now_ms.wrapping_sub(stamp)) * NS_PER_MS)
        }
        _ => {
            *flags |= SYN_START_ESTIMATED;
            now.saturating_sub(INITIAL_RTO_NS)
        }
    }
}

/// The recovery in progress ends now; a handshake's is counted as SYN time, not as a stall.
#[inline(always)]
fn end_recovery(entry: &mut SocketTime, now: u64, slot: Slot) {
    if entry.loss_since == 0 {
        return;
    }
    if !slot.is_empty() {
        slot.add(u64::MAX); // minus one
    }
    finish(entry, now.saturating_sub(entry.loss_since));
}

/// The recovery in progress ended after `stall` ns (a handshake's is SYN time, not a stall).
#[inline(always)]
fn finish(entry: &mut SocketTime, stall: u64) {
    if entry.flags & IN_SYN == 0 {
        entry.stall_ns += stall;
        entry.recoveries += 1;
        if stall > entry.longest_ns {
            entry.longest_ns = stall;
        }
        if entry.timeouts > entry.max_timeouts {
            entry.max_timeouts = entry.timeouts;
        }
        let bucket = STALL_BUCKETS_MS
            .iter()
            .take_while(|bound| stall > **bound * NS_PER_MS)
            .count();
        if let Some(count) = entry.stall_buckets.get_mut(bucket) {
            *count = count.saturating_add(1);
        }
    }
    entry.loss_since = 0;
    entry.timeouts = 0;
    entry.flags &= !IN_SYN;
}

/// Whether recoveries are timed with the kernel's own counters (6.7+, see the module doc).
#[inline(always)]
pub fn kernel_counters() -> bool {
    offset!(structs.tcp_rto_stamp) != ABSENT
}

/// A socket's RTO counters as the kernel keeps them (6.7+).
/// <https://elixir.bootlin.com/linux/v6.18/source/net/ipv4/tcp_timer.c> (`tcp_update_rto_stats`)
struct RtoCounters {
    recoveries: u16,
    time_ms: u32,
    stamp_ms: u32,
}

impl RtoCounters {
    #[inline(always)]
    fn read<M: Memory>(tcp: u64) -> Self {
        Self {
            recoveries: M::at::<u16>(tcp, offset!(structs.tcp_total_rto_recoveries)).unwrap_or(0),
            time_ms: M::at::<u32>(tcp, offset!(structs.tcp_total_rto_time)).unwrap_or(0),
            stamp_ms: M::at::<u32>(tcp, offset!(structs.tcp_rto_stamp)).unwrap_or(0),
        }
    }

    /// When the running recovery began, from the kernel's stamp (ms of the same clock).
    #[inline(always)]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the kernel's stamp is the low 32 bits of the milliseconds"
    )]
    fn began(&self, now: u64) -> u64 {
        let age = ((now / NS_PER_MS) as u32).wrapping_sub(self.stamp_ms);
        if self.stamp_ms == 0 || age >= MAX_SYN_AGE_MS {
            return now;
        }
        now.saturating_sub(u64::from(age) * NS_PER_MS)
    }
}

/// Kernel counters: `delta` timeouts of socket `sk`, seen at the retransmission that
/// followed them (`tcp_retransmit_timer` counts, then retransmits).
#[inline(always)]
pub fn timeouts_counted(cookie: u64, sk: u64, tcp: u64, delta: u32) {
    let Some(entry) = entry_for(cookie, sk) else {
        health::bump(HealthCounter::TimeMapFull);
        return;
    };
    // SAFETY: this socket's entry; its retransmissions run under its lock.
    let entry = unsafe { &mut *entry };
    let now = unsafe { bpf_ktime_get_ns() };
    let kernel = RtoCounters::read::<Direct>(tcp);
    let in_syn = Direct::at::<u8>(sk, offset!(sock.state)) == Some(TCP_SYN_SENT);
    if in_syn {
        entry.syn_timeouts += delta;
        if entry.syn_start == 0 {
            entry.syn_start = first_syn(tcp, now, &mut entry.flags);
        }
    }
    settle(entry, &kernel, now, false);
    if entry.loss_since == 0 {
        entry.loss_since = kernel.began(now);
        entry.timeouts = delta;
        entry.rto_time_at_start = kernel.time_ms;
        entry.flags = (entry.flags & !IN_SYN) | if in_syn { IN_SYN } else { 0 };
    } else {
        entry.timeouts += delta;
    }
    entry.kernel_recoveries = kernel.recoveries;
    entry.socket = sk;
}

/// Kernel counters: ends the data recovery in progress if the kernel ended it (its stamp
/// cleared, or a newer recovery counted), as long as the kernel added to `total_rto_time`;
/// `closing`: the socket closes now, so a recovery still running ends now.
#[inline(always)]
fn settle(entry: &mut SocketTime, kernel: &RtoCounters, now: u64, closing: bool) {
    if entry.loss_since == 0 || entry.flags & IN_SYN != 0 {
        return;
    }
    if kernel.stamp_ms == 0 || kernel.recoveries != entry.kernel_recoveries {
        let folded = kernel.time_ms.wrapping_sub(entry.rto_time_at_start);
        finish(entry, u64::from(folded) * NS_PER_MS);
    } else if closing {
        finish(entry, now.saturating_sub(entry.loss_since));
    }
}

/// How many keys one run of `time_lost_settle` takes (the most arguments a raw tracepoint
/// has, `MAX_BPF_FUNC_ARGS`).
pub const SETTLE_BATCH: usize = galmanhae_common::stall::SETTLE_BATCH;

/// `time_lost_settle(cookie, ...)`: for each socket named (0: none), ends the recovery the
/// kernel ended since. The socket is read through the helper: it may be gone, and its cookie,
/// unique for the boot, says whether the memory is still that socket.
#[inline(always)]
pub fn on_settle(ctx: &RawTracePointContext) {
    let args = ctx.as_ptr().cast::<u64>();
    let now = unsafe { bpf_ktime_get_ns() };
    // One block per argument: the verifier takes context reads at constant offsets only.
    macro_rules! each_argument {
        ($($i:literal),+) => {
            $(
                // SAFETY: the context is the run's argument array, which the agent always
                // fills to SETTLE_BATCH slots (the kernel checks its size against the
                // furthest read).
                settle_socket(unsafe { core::ptr::read_volatile(args.add($i)) }, now);
            )+
        };
    }
    each_argument!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11);
}

const _: () = assert!(SETTLE_BATCH == 12);

#[inline(always)]
fn settle_socket(cookie: u64, now: u64) {
    if cookie == 0 {
        return;
    }
    if let Some(entry) = TIME_LOST.get_ptr_mut(cookie) {
        // SAFETY: the socket's entry; a settled entry is only ever moved to "ended", which
        // the socket's own events also check before they write.
        settle_entry(cookie, unsafe { &mut *entry }, now);
    }
}

#[inline(always)]
fn settle_entry(cookie: u64, entry: &mut SocketTime, now: u64) {
    let sk = entry.socket;
    if sk == 0 || entry.flags & CLOSED != 0 || entry.loss_since == 0 {
        return;
    }
    if Probe::at::<u64>(sk, offset!(sock.cookie)) != Some(cookie) {
        // Gone without a close seen: what ran, ran until now.
        let stall = if entry.flags & IN_SYN == 0 {
            now.saturating_sub(entry.loss_since)
        } else {
            0
        };
        finish(entry, stall);
        entry.flags |= CLOSED;
        return;
    }
    settle(entry, &RtoCounters::read::<Probe>(sk), now, false);
}

/// `tp_btf/inet_sock_set_state(sk, oldstate, newstate)`: a handshake that timed out ends at
/// established or close; any recovery ends at close, where the socket's retransmit count is
/// also completed. Only sockets with an entry are touched.
pub fn on_inet_sock_set_state(ctx: &BtfTracePointContext) {
    let old = (ctx.arg::<u64>(1) & 0xffff_ffff) as i32;
    let new = (ctx.arg::<u64>(2) & 0xffff_ffff) as i32;
    let handshake_ends = old == i32::from(TCP_SYN_SENT) && new == TCP_ESTABLISHED;
    if !handshake_ends && new != TCP_CLOSE {
        return;
    }
    let sk: u64 = ctx.arg(0);
    // Our programs give a socket its cookie at its first event: one without a cookie has no
    // entry in any of our maps.
    let Some(cookie) = Direct::at::<u64>(sk, offset!(sock.cookie)).filter(|c| *c != 0) else {
        return;
    };
    if new == TCP_CLOSE {
        retransmit::on_close(cookie, sk);
    }
    let Some(entry) = TIME_LOST.get_ptr_mut(cookie) else {
        return;
    };
    // SAFETY: this socket's entry; its state changes run under its lock.
    let entry = unsafe { &mut *entry };
    let now = unsafe { bpf_ktime_get_ns() };
    if entry.syn_start != 0 && entry.syn_ns == 0 {
        entry.syn_ns = now.saturating_sub(entry.syn_start).max(1);
    }
    if kernel_counters() {
        if entry.flags & IN_SYN != 0 {
            finish(entry, 0);
        } else {
            let kernel = RtoCounters::read::<Direct>(tcp_sock(sk));
            settle(entry, &kernel, now, new == TCP_CLOSE);
        }
    } else if let Some(slot) = loss_slot(sk) {
        end_recovery(entry, now, slot);
    }
    if new == TCP_CLOSE {
        entry.flags |= CLOSED;
    }
}
