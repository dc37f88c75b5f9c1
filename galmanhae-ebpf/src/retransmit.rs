//! `tcp:tcp_retransmit_skb` and `tcp:tcp_retransmit_synack`: count per flow, in the kernel.
//!
//! Both run in softirq or timer context, where the current task is not the socket's owner, so
//! everything is read from the socket: its network namespace and its cgroup.

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuHashMap},
    programs::TracePointContext,
};
use galmanhae_common::{
    health::HealthCounter,
    retransmit::{
        AF_INET, AF_INET6, FLOW_MAP_CAPACITY, FlowKey, OVERFLOW_MAP_CAPACITY, OwnerKey,
        RetransmitCounters, RetransmitKind, SOCKET_MAP_CAPACITY,
    },
};

use crate::{
    health,
    kernel::{at, bits, offset, tp_field},
    maps,
};

/// Per-flow counters. A plain hash, not LRU: an LRU would evict counts without telling.
#[map]
static RETRANSMIT_FLOWS: PerCpuHashMap<FlowKey, RetransmitCounters> =
    PerCpuHashMap::with_max_entries(FLOW_MAP_CAPACITY, 0);

/// Where a retransmit goes when `RETRANSMIT_FLOWS` is full: per namespace and cgroup, so
/// per-workload totals stay exact even when the flow detail is lost.
#[map]
static RETRANSMIT_OVERFLOW: PerCpuHashMap<OwnerKey, RetransmitCounters> =
    PerCpuHashMap::with_max_entries(OVERFLOW_MAP_CAPACITY, 0);

/// Each socket's `tcp_sock.total_retrans` at its last retransmit event, keyed by the socket
/// and its ports (a freed socket's address can come back as another connection). LRU: an
/// evicted entry only costs that socket's next event the fallback of [`segments_counted`].
#[map]
static LAST_TOTAL_RETRANS: LruHashMap<[u64; 2], u32> =
    LruHashMap::with_max_entries(SOCKET_MAP_CAPACITY, 0);

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

pub fn on_retransmit_skb(ctx: &TracePointContext) {
    let Some(sk) = tp_field::<u64>(ctx, offset!(retransmit_skb.skaddr)) else {
        health::bump(HealthCounter::ReadError);
        return;
    };
    // Since 6.17 (commit ad892e912b84) the tracepoint also fires for attempts that failed;
    // before, it fired only for sent ones and had no `err`.
    let err = tp_field::<i32>(ctx, offset!(retransmit_skb.err)).unwrap_or(0);
    let key = flow_key(
        ctx,
        sk,
        offset!(retransmit_skb.family),
        offset!(retransmit_skb.sport),
        offset!(retransmit_skb.dport),
        offset!(retransmit_skb.saddr_v6),
        offset!(retransmit_skb.daddr_v6),
    );
    let skb = tp_field::<u64>(ctx, offset!(retransmit_skb.skbaddr)).unwrap_or(0);
    let segments =
        at::<u16>(skb, offset!(structs.skb_tcp_gso_segs)).map_or(1, |s| u64::from(s.max(1)));
    let bytes = at::<u32>(skb, offset!(structs.skb_len)).map_or(0, u64::from);
    let kind = match tp_field::<i32>(ctx, offset!(retransmit_skb.state)) {
        Some(TCP_SYN_SENT) => RetransmitKind::Syn,
        Some(TCP_SYN_RECV) => RetransmitKind::SynAck,
        _ => match bits(sk, offset!(structs.icsk_ca_state)) {
            Some(TCP_CA_LOSS) => RetransmitKind::Rto,
            Some(TCP_CA_RECOVERY) => RetransmitKind::Fast,
            Some(TCP_CA_OPEN | TCP_CA_DISORDER) => RetransmitKind::Tlp,
            _ => RetransmitKind::Other,
        },
    };
    let counted = segments_counted(sk, &key, segments, err);
    count(&key, |c| {
        c.segments += counted;
        if err == 0 {
            c.retransmits += 1;
            c.bytes += bytes;
            c.kinds[kind as usize] += 1;
        } else {
            c.failed += 1;
            c.failed_segments += segments;
        }
    });
}

/// The segments this event added to `RetransSegs`: the growth of the socket's
/// `total_retrans` since its last event, which the kernel bumps by the same `segs` in the same
/// statement. The skb's own segment count can differ: the skb may be re-segmented or partly
/// acknowledged between the count and the tracepoint (seen here: 46 counted, 45 left). For a
/// socket not seen before, the skb's count, unless the attempt failed before the count.
#[inline(always)]
fn segments_counted(sk: u64, key: &FlowKey, skb_segments: u64, err: i32) -> u64 {
    let fallback = if err == 0 || !failed_before_transmit(err) {
        skb_segments
    } else {
        0
    };
    let Some(total) = at::<u32>(sk, offset!(structs.tcp_total_retrans)) else {
        return fallback;
    };
    let socket = [
        sk,
        (u64::from(key.local_port) << 16) | u64::from(key.remote_port),
    ];
    // SAFETY: the map returns a valid pointer to the value; it is copied out at once.
    let last = LAST_TOTAL_RETRANS.get_ptr(socket).map(|p| unsafe { *p });
    let counted = match last {
        Some(last) if total >= last => u64::from(total - last),
        _ => fallback,
    };
    let _ = LAST_TOTAL_RETRANS.insert(socket, total, 0);
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
    let key = flow_key(
        ctx,
        sk,
        offset!(retransmit_synack.family),
        offset!(retransmit_synack.sport),
        offset!(retransmit_synack.dport),
        offset!(retransmit_synack.saddr_v6),
        offset!(retransmit_synack.daddr_v6),
    );
    // tcp_rtx_synack() fires this only when the SYN-ACK was sent, and adds one to RetransSegs.
    count(&key, |c| {
        c.retransmits += 1;
        c.segments += 1;
        c.kinds[RetransmitKind::SynAck as usize] += 1;
    });
}

#[inline(always)]
fn flow_key(
    ctx: &TracePointContext,
    sk: u64,
    family: u32,
    sport: u32,
    dport: u32,
    saddr_v6: u32,
    daddr_v6: u32,
) -> FlowKey {
    let local_addr = tp_field::<[u8; 16]>(ctx, saddr_v6);
    let remote_addr = tp_field::<[u8; 16]>(ctx, daddr_v6);
    let local_port = tp_field::<u16>(ctx, sport);
    let remote_port = tp_field::<u16>(ctx, dport);
    if local_addr.is_none()
        || remote_addr.is_none()
        || local_port.is_none()
        || remote_port.is_none()
    {
        health::bump(HealthCounter::ReadError);
    }
    let local_addr = local_addr.unwrap_or([0; 16]);
    let owner = owner(sk);
    FlowKey {
        netns: owner.netns,
        // Before 5.12 there is no `family`; the addresses are v4-mapped for IPv4 sockets.
        family: tp_field::<u16>(ctx, family).unwrap_or_else(|| {
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
fn owner(sk: u64) -> OwnerKey {
    let net = at::<u64>(sk, offset!(structs.sock_net)).unwrap_or(0);
    let netns = at::<u32>(net, offset!(structs.net_inum));
    if netns.is_none() {
        health::bump(HealthCounter::ReadError);
    }
    let cgroup = at::<u64>(sk, offset!(structs.sock_cgroup)).unwrap_or(0);
    let kernfs_node = at::<u64>(cgroup, offset!(structs.cgroup_kn)).unwrap_or(0);
    OwnerKey {
        netns: netns.unwrap_or(0),
        padding: 0,
        cgroup_id: at::<u64>(kernfs_node, offset!(structs.kernfs_node_id)).unwrap_or(0),
    }
}

#[inline(always)]
fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff
}

/// Applies `update` to the flow's counters, creating them if needed; when the flow map is
/// full, to the owner's overflow counters; when both are full, counts the loss.
#[inline(always)]
fn count(key: &FlowKey, update: impl Fn(&mut RetransmitCounters)) {
    if maps::update(&RETRANSMIT_FLOWS, key, &update) {
        return;
    }
    health::bump(HealthCounter::FlowMapFull);
    let owner = OwnerKey {
        netns: key.netns,
        padding: 0,
        cgroup_id: key.cgroup_id,
    };
    if !maps::update(&RETRANSMIT_OVERFLOW, &owner, &update) {
        health::bump(HealthCounter::OverflowMapFull);
    }
}
