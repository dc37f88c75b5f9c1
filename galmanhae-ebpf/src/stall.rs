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
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::HashMap,
    programs::BtfTracePointContext,
};
use galmanhae_common::{
    health::HealthCounter,
    stall::{
        CLOSED, IN_SYN, STALL_BUCKETS_MS, SYN_START_ESTIMATED, SocketTime, TIME_LOST_CAPACITY,
    },
};

use crate::{
    health,
    kernel::{Direct, Memory, offset, socket_cookie, tcp_sock},
    retransmit::socket_flow_key,
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
    if entry.flags & IN_SYN == 0 {
        let stall = now.saturating_sub(entry.loss_since);
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

/// `tp_btf/inet_sock_set_state(sk, oldstate, newstate)`: a handshake that timed out ends at
/// established or close; any recovery ends at close. Only sockets with an entry are touched.
pub fn on_inet_sock_set_state(ctx: &BtfTracePointContext) {
    let old = (ctx.arg::<u64>(1) & 0xffff_ffff) as i32;
    let new = (ctx.arg::<u64>(2) & 0xffff_ffff) as i32;
    let handshake_ends = old == i32::from(TCP_SYN_SENT) && new == TCP_ESTABLISHED;
    if !handshake_ends && new != TCP_CLOSE {
        return;
    }
    let sk: u64 = ctx.arg(0);
    let Some(entry) = TIME_LOST.get_ptr_mut(socket_cookie(sk)) else {
        return;
    };
    // SAFETY: this socket's entry; its state changes run under its lock.
    let entry = unsafe { &mut *entry };
    let now = unsafe { bpf_ktime_get_ns() };
    if entry.syn_start != 0 && entry.syn_ns == 0 {
        entry.syn_ns = now.saturating_sub(entry.syn_start).max(1);
    }
    if let Some(slot) = loss_slot(sk) {
        end_recovery(entry, now, slot);
    }
    if new == TCP_CLOSE {
        entry.flags |= CLOSED;
    }
}
