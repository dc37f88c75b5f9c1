//! `tcp:tcp_retransmit_skb` and `tcp:tcp_retransmit_synack`: count per flow, in the kernel.
//!
//! Both run in softirq or timer context, where the current task is not the socket's owner, so
//! everything is read from the socket: its network namespace and its cgroup.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    macros::map,
    maps::{HashMap, PerCpuHashMap},
    programs::{BtfTracePointContext, TracePointContext},
};
use galmanhae_common::{
    health::HealthCounter,
    offsets::ABSENT,
    retransmit::{
        AF_INET, AF_INET6, FLOW_MAP_CAPACITY, FlowKey, FlowState, OVERFLOW_MAP_CAPACITY, OwnerKey,
        RetransmitCounters, RetransmitKind, SocketState,
    },
    v4_mapped,
};

use crate::{
    health,
    kernel::{
        Direct, Memory, Probe, low_32, offset, optional_arg, socket_cookie, tcp_sock, tp_field,
    },
    maps, stall,
};

/// Per-socket (by cookie) flow, counters and the state that counts segments exactly: the BTF
/// program's. Shared by the CPUs (a socket's retransmits run under its lock); not LRU: an LRU
/// would evict counts silently. The agent frees the entries of sockets idle for a minute.
#[map]
static RETRANSMIT_SOCKETS: HashMap<u64, SocketState> =
    HashMap::with_max_entries(FLOW_MAP_CAPACITY, 0);

/// The same per flow, for the classic tracepoint program (which has no socket cookie) and
/// SYN-ACKs (a request socket is not a full socket). Allocated on insert: it stays small
/// where the BTF program runs.
#[map]
static RETRANSMIT_FLOWS: HashMap<FlowKey, FlowState> =
    HashMap::with_max_entries(FLOW_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// Where a retransmit goes when `RETRANSMIT_FLOWS` is full: per namespace and cgroup, so
/// per-workload totals stay exact even when the flow detail is lost.
#[map]
static RETRANSMIT_OVERFLOW: PerCpuHashMap<OwnerKey, RetransmitCounters> =
    PerCpuHashMap::with_max_entries(OVERFLOW_MAP_CAPACITY, 0);

/// `include/net/tcp_states.h`
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
/// `enum tcp_ca_state` in `include/net/tcp.h`
const TCP_CA_OPEN: u8 = 0;
const TCP_CA_DISORDER: u8 = 1;
const TCP_CA_RECOVERY: u8 = 3;
const TCP_CA_LOSS: u8 = 4;
/// `include/uapi/asm-generic/errno-base.h`, `errno.h`
const EAGAIN: i32 = 11;
const ENOMEM: i32 = 12;
const EBUSY: i32 = 16;
const EINVAL: i32 = 22;
const EHOSTUNREACH: i32 = 113;

/// `tp_btf/tcp_retransmit_skb(sk, skb[, err])`: the socket and the packet themselves, read
/// with plain loads, counted per socket cookie. The flow is built from the socket (as the
/// tracepoint record would be) only at a socket's first retransmit: the pointer chases to its
/// namespace and cgroup and the hashing of a 56-byte key are not paid per event.
pub fn on_retransmit_skb_btf(ctx: &BtfTracePointContext) {
    let sk: u64 = ctx.arg(0);
    let skb: u64 = ctx.arg(1);
    // Since 6.17 (commit ad892e912b84): the tracepoint also fires for failed attempts.
    let err = optional_arg(ctx, 2, offset!(retransmit_skb.err) != ABSENT)
        .map_or(0, |e| low_32(e).cast_signed());
    let (cookie, tcp) = (socket_cookie(sk), tcp_sock(sk));
    let state = Direct::at::<u8>(sk, offset!(sock.state)).map(i32::from);
    let event = Event::read::<Direct>(tcp, skb, state, err);
    let state = match RETRANSMIT_SOCKETS.get_ptr_mut(cookie) {
        Some(socket) => {
            // SAFETY: the socket's entry; only this socket's events, serialised by its lock,
            // write it.
            let state = unsafe { &mut (*socket).state };
            event.count(state, sk);
            state
        }
        None => match first_retransmit(cookie, sk, &event) {
            Some(state) => state,
            None => return,
        },
    };
    if stall::kernel_counters() {
        timeouts(cookie, sk, tcp, &event, state);
    }
}

/// Kernel counters (6.7+): the timeouts since the socket's last retransmission, handed to
/// the time-lost accounting. One load per event; only a timeout's event does more.
#[inline(always)]
fn timeouts(cookie: u64, sk: u64, tcp: u64, event: &Event, state: &mut FlowState) {
    let Some(total) = Direct::at::<u16>(tcp, offset!(structs.tcp_total_rto)) else {
        return;
    };
    let total = u32::from(total);
    let delta = total.wrapping_sub(state.last_total_rto) & 0xffff;
    state.last_total_rto = total;
    if delta != 0 && matches!(event.kind, RetransmitKind::Rto | RetransmitKind::Syn) {
        stall::timeouts_counted(cookie, sk, tcp, delta);
    }
}

/// What a socket's entry is created from: zeros, from memory, not from the 512-byte stack.
// SAFETY: every field is an integer or an array of them: all zeros is a valid value.
static EMPTY_SOCKET: SocketState = unsafe { core::mem::zeroed() };

/// A socket's first retransmit: its entry is created, then its flow built in place. `None`
/// when the map is full (the event went to the overflow counters).
#[inline(always)]
fn first_retransmit(cookie: u64, sk: u64, event: &Event) -> Option<&'static mut FlowState> {
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the 160 bytes would be copied to the stack first"
    )]
    let created = RETRANSMIT_SOCKETS.insert(cookie, &EMPTY_SOCKET, u64::from(BPF_NOEXIST));
    let socket = match created {
        Ok(()) => RETRANSMIT_SOCKETS.get_ptr_mut(cookie),
        Err(_) => None,
    };
    let Some(socket) = socket else {
        health::bump(HealthCounter::FlowMapFull);
        overflow(&owner::<Direct>(sk), &|c| event.add(c, event.fallback));
        return None;
    };
    // SAFETY: the entry just created; only this socket's events write it.
    let socket = unsafe { &mut *socket };
    socket.flow = socket_flow_key::<Direct>(sk);
    event.count(&mut socket.state, sk);
    Some(&mut socket.state)
}

/// A socket closes (`inet_sock_set_state`, BTF): the segments of its retransmits since its
/// last counted event are added from its `total_retrans`. They are those of runs the kernel
/// skipped (a program run nested in another of its own on the same CPU): a later event of
/// the socket counts them through the same growth, but after its last one only this does.
#[inline(always)]
pub fn on_close(cookie: u64, sk: u64) {
    let Some(socket) = RETRANSMIT_SOCKETS.get_ptr_mut(cookie) else {
        return;
    };
    // SAFETY: the socket's entry; its close runs under its lock, as its retransmits do.
    let state = unsafe { &mut (*socket).state };
    if state.socket != sk {
        return;
    }
    let total = Direct::at::<u32>(tcp_sock(sk), offset!(structs.tcp_total_retrans));
    if let Some(segments) = segments_counted(state, sk, total) {
        state.counters.segments += segments;
    }
}

/// `tcp:tcp_retransmit_skb`, where `tp_btf` is not available: the same reads, each through
/// `bpf_probe_read_kernel`.
pub fn on_retransmit_skb(ctx: &TracePointContext) {
    let Some(sk) = tp_field::<u64>(ctx, offset!(retransmit_skb.skaddr)) else {
        health::bump(HealthCounter::ReadError);
        return;
    };
    // Since 6.17 (commit ad892e912b84) the tracepoint also fires for attempts that failed;
    // before, it fired only for sent ones and had no `err`.
    let err = tp_field::<i32>(ctx, offset!(retransmit_skb.err)).unwrap_or(0);
    // From the socket, as the BTF program does: fewer bytes on the 512-byte stack than
    // copying the record's addresses.
    let key = socket_flow_key::<Probe>(sk);
    let skb = tp_field::<u64>(ctx, offset!(retransmit_skb.skbaddr)).unwrap_or(0);
    let state = tp_field::<i32>(ctx, offset!(retransmit_skb.state));
    let event = Event::read::<Probe>(sk, skb, state, err);
    count(&key, &|flow: &mut FlowState| event.count(flow, sk), &|c| {
        event.add(c, event.fallback);
    });
}

/// One retransmit attempt, as read from the socket and the skb.
struct Event {
    segments: u64,
    bytes: u64,
    kind: RetransmitKind,
    err: i32,
    /// The socket's `tcp_sock.total_retrans`, `None` if it is not a TCP socket.
    total: Option<u32>,
    /// The segments to count for a socket not seen before: the skb's, unless the attempt
    /// failed before the kernel counted it.
    fallback: u64,
}

impl Event {
    /// `tcp`: the same socket as a `tcp_sock`, 0 if it is not one.
    #[inline(always)]
    fn read<M: Memory>(tcp: u64, skb: u64, state: Option<i32>, err: i32) -> Self {
        let segments =
            M::at::<u16>(skb, offset!(structs.skb_tcp_gso_segs)).map_or(1, |s| u64::from(s.max(1)));
        let kind = match state {
            Some(TCP_SYN_SENT) => RetransmitKind::Syn,
            Some(TCP_SYN_RECV) => RetransmitKind::SynAck,
            _ => match M::bits(tcp, offset!(structs.icsk_ca_state)) {
                Some(TCP_CA_LOSS) => RetransmitKind::Rto,
                Some(TCP_CA_RECOVERY) => RetransmitKind::Fast,
                Some(TCP_CA_OPEN | TCP_CA_DISORDER) => RetransmitKind::Tlp,
                _ => RetransmitKind::Other,
            },
        };
        Self {
            segments,
            bytes: M::at::<u32>(skb, offset!(structs.skb_len)).map_or(0, u64::from),
            kind,
            err,
            total: M::at::<u32>(tcp, offset!(structs.tcp_total_retrans)),
            fallback: if err == 0 || !failed_before_transmit(err) {
                segments
            } else {
                0
            },
        }
    }

    /// Counts the event into the state of its socket `sk` (exactly, from `total_retrans`).
    #[inline(always)]
    fn count(&self, flow: &mut FlowState, sk: u64) {
        let counted = segments_counted(flow, sk, self.total).unwrap_or(self.fallback);
        self.add(&mut flow.counters, counted);
    }

    /// Adds the event, with `counted` segments, to `c`.
    #[inline(always)]
    fn add(&self, c: &mut RetransmitCounters, counted: u64) {
        c.segments += counted;
        if self.err == 0 {
            c.retransmits += 1;
            c.bytes += self.bytes;
            c.kinds[self.kind as usize] += 1;
        } else {
            c.failed += 1;
            c.failed_segments += self.segments;
        }
    }
}

/// The segments this event added to `RetransSegs`: the growth of the socket's
/// `total_retrans` since its last event, which the kernel bumps by the same `segs` in the same
/// statement. The skb's own segment count can differ: the skb may be re-segmented or partly
/// acknowledged between the count and the tracepoint (seen here: 46 counted, 45 left).
/// `None` for the first event of a socket; records `total` for the next one.
#[inline(always)]
fn segments_counted(flow: &mut FlowState, sk: u64, total: Option<u32>) -> Option<u64> {
    let total = total?;
    // `socket` is set only here, with `total`: the same socket means its total was read.
    let counted = (sk != 0 && flow.socket == sk && total >= flow.last_total_retrans)
        .then(|| u64::from(total - flow.last_total_retrans));
    flow.socket = sk;
    flow.last_total_retrans = total;
    counted
}

/// The errors `__tcp_retransmit_skb` returns before it adds the segments to `RetransSegs`
/// (its `goto out` exits: still queued, nothing left to send, no window, no memory to split,
/// no route); any other error comes from `tcp_transmit_skb`, after the count.
/// <https://elixir.bootlin.com/linux/v6.18/source/net/ipv4/tcp_output.c> (`__tcp_retransmit_skb`).
/// Only the fallback of [`segments_counted`] needs this; there `-EHOSTUNREACH` from
/// `ip_queue_xmit` losing its route, after the count, is taken for an early exit.
#[inline(always)]
fn failed_before_transmit(err: i32) -> bool {
    matches!(-err, EBUSY | EINVAL | EAGAIN | ENOMEM | EHOSTUNREACH)
}

pub fn on_retransmit_synack(ctx: &TracePointContext) {
    let Some(sk) = tp_field::<u64>(ctx, offset!(retransmit_synack.skaddr)) else {
        health::bump(HealthCounter::ReadError);
        return;
    };
    let key = synack_flow_key(ctx, sk);
    // tcp_rtx_synack() fires this only when the SYN-ACK was sent, and adds one to RetransSegs.
    let add = |c: &mut RetransmitCounters| {
        c.retransmits += 1;
        c.segments += 1;
        c.kinds[RetransmitKind::SynAck as usize] += 1;
    };
    count(&key, &|flow: &mut FlowState| add(&mut flow.counters), &add);
}

/// The flow of a socket, from its `sock_common`: what the tracepoint record copies out.
#[inline(always)]
pub(crate) fn socket_flow_key<M: Memory>(sk: u64) -> FlowKey {
    let family = M::at::<u16>(sk, offset!(sock.family)).unwrap_or(0);
    let (local_addr, remote_addr) = if family == AF_INET6 {
        (
            v6::<M>(sk, offset!(sock.v6_rcv_saddr)),
            v6::<M>(sk, offset!(sock.v6_daddr)),
        )
    } else {
        (
            v4_mapped(
                M::at::<u32>(sk, offset!(sock.rcv_saddr))
                    .unwrap_or(0)
                    .to_ne_bytes(),
            ),
            v4_mapped(
                M::at::<u32>(sk, offset!(sock.daddr))
                    .unwrap_or(0)
                    .to_ne_bytes(),
            ),
        )
    };
    let owner = owner::<M>(sk);
    FlowKey {
        netns: owner.netns,
        family,
        local_port: M::at::<u16>(sk, offset!(sock.num)).unwrap_or(0),
        remote_port: u16::from_be(M::at::<u16>(sk, offset!(sock.dport)).unwrap_or(0)),
        padding: [0; 6],
        cgroup_id: owner.cgroup_id,
        local_addr,
        remote_addr,
    }
}

/// An `in6_addr` member; zeros when absent.
#[inline(always)]
fn v6<M: Memory>(base: u64, offset: u32) -> [u8; 16] {
    if offset == ABSENT {
        return [0; 16];
    }
    M::addr16(base, offset)
}

/// The flow of a `tcp:tcp_retransmit_synack` record.
#[inline(always)]
fn synack_flow_key(ctx: &TracePointContext, sk: u64) -> FlowKey {
    let local_addr = tp_field::<[u8; 16]>(ctx, offset!(retransmit_synack.saddr_v6));
    let remote_addr = tp_field::<[u8; 16]>(ctx, offset!(retransmit_synack.daddr_v6));
    let local_port = tp_field::<u16>(ctx, offset!(retransmit_synack.sport));
    let remote_port = tp_field::<u16>(ctx, offset!(retransmit_synack.dport));
    if local_addr.is_none()
        || remote_addr.is_none()
        || local_port.is_none()
        || remote_port.is_none()
    {
        health::bump(HealthCounter::ReadError);
    }
    let local_addr = local_addr.unwrap_or([0; 16]);
    let owner = owner::<Probe>(sk);
    FlowKey {
        netns: owner.netns,
        // Before 5.12 there is no `family`; the addresses are v4-mapped for IPv4 sockets.
        family: tp_field::<u16>(ctx, offset!(retransmit_synack.family)).unwrap_or_else(|| {
            if is_v4_mapped(&local_addr) {
                AF_INET
            } else {
                AF_INET6
            }
        }),
        local_port: local_port.unwrap_or(0),
        remote_port: remote_port.unwrap_or(0),
        padding: [0; 6],
        cgroup_id: owner.cgroup_id,
        local_addr,
        remote_addr: remote_addr.unwrap_or([0; 16]),
    }
}

/// The socket's network namespace inode and cgroup id.
#[inline(always)]
fn owner<M: Memory>(sk: u64) -> OwnerKey {
    let net = M::at::<u64>(sk, offset!(structs.sock_net)).unwrap_or(0);
    let netns = M::at::<u32>(net, offset!(structs.net_inum));
    if netns.is_none() {
        health::bump(HealthCounter::ReadError);
    }
    let cgroup = M::at::<u64>(sk, offset!(structs.sock_cgroup)).unwrap_or(0);
    let kernfs_node = M::at::<u64>(cgroup, offset!(structs.cgroup_kn)).unwrap_or(0);
    OwnerKey {
        netns: netns.unwrap_or(0),
        padding: 0,
        cgroup_id: M::at::<u64>(kernfs_node, offset!(structs.kernfs_node_id)).unwrap_or(0),
    }
}

#[inline(always)]
fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff
}

/// Applies `flow_update` to the flow's entry, creating it if needed; when the flow map is
/// full, `overflow_update` to the owner's overflow counters.
#[inline(always)]
fn count(
    key: &FlowKey,
    flow_update: &impl Fn(&mut FlowState),
    overflow_update: &impl Fn(&mut RetransmitCounters),
) {
    if maps::update(&RETRANSMIT_FLOWS, key, flow_update) {
        return;
    }
    health::bump(HealthCounter::FlowMapFull);
    let owner = OwnerKey {
        netns: key.netns,
        padding: 0,
        cgroup_id: key.cgroup_id,
    };
    overflow(&owner, overflow_update);
}

/// Counts per owner what did not fit in a flow or socket map; when that is full too, counts
/// the loss.
#[inline(always)]
fn overflow(owner: &OwnerKey, update: &impl Fn(&mut RetransmitCounters)) {
    if !maps::update(&RETRANSMIT_OVERFLOW, owner, update) {
        health::bump(HealthCounter::OverflowMapFull);
    }
}
