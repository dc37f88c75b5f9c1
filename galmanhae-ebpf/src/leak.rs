//! tc egress on the host's uplinks: count packets whose source is in a translated subnet (a
//! MASQUERADE rule's `-s`). After POSTROUTING every packet from such a subnet should carry the
//! host's address; one that does not was skipped by NAT because conntrack marked it INVALID.
//!
//! Per packet only the source address is read and compared with a short list of prefixes;
//! the rest is parsed for the few that match. On Ethernet uplinks the address is read in
//! place; on others (`WireGuard`, tun) relative to the network header, through a helper.

use aya_ebpf::{
    bindings::bpf_hdr_start_off::BPF_HDR_START_NET,
    helpers::generated::bpf_skb_load_bytes_relative,
    macros::map,
    maps::{Array, PerCpuHashMap},
    programs::TcContext,
};
use galmanhae_common::leak::{
    LEAK_MAP_CAPACITY, LeakKey, NATED_V4_SLOTS, NATED_V6_SLOTS, NatedSubnets,
};

use crate::{
    health, maps,
    packet::{self, PacketBytes},
};
use galmanhae_common::health::HealthCounter;

/// The translated source prefixes (one value, written whole by the agent). An array's lookup
/// is inlined by the verifier: no helper call per packet.
#[map]
static NATED_SUBNETS: Array<NatedSubnets> = Array::with_max_entries(1, 0);

/// Untranslated packets per uplink and flow.
#[map]
static LEAKS: PerCpuHashMap<LeakKey, u64> = PerCpuHashMap::with_max_entries(LEAK_MAP_CAPACITY, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// On an Ethernet uplink, tc egress sees the frame from its MAC header on.
const ETH_HLEN: usize = 14;
/// Where the source address starts in the IPv4 and IPv6 headers.
const V4_SOURCE: u32 = 12;
const V6_SOURCE: u32 = 8;

/// An Ethernet uplink: the source address read in place (direct packet access), compared
/// with the translated prefixes; only a match reads the rest. A header that is not in the
/// linear part of the packet is read as on any uplink.
pub fn on_ethernet_egress(ctx: &TcContext) {
    let Some(version) = ip_version(ctx) else {
        return;
    };
    let (data, end) = (ctx.data(), ctx.data_end());
    let (v4, v6) = (
        data + ETH_HLEN + V4_SOURCE as usize,
        data + ETH_HLEN + V6_SOURCE as usize,
    );
    let nated = match version {
        4 if v4 + 4 <= end => v4_nated(read::<u32>(v4)),
        6 if v6 + 16 <= end => v6_nated([read::<u64>(v6), read::<u64>(v6 + 8)]),
        _ => source_nated(ctx, version),
    };
    if nated {
        count_leak(ctx, version);
    }
}

/// Any uplink (an L3 device as well as Ethernet): the source read relative to the network
/// header, one helper call.
pub fn on_egress(ctx: &TcContext) {
    let Some(version) = ip_version(ctx) else {
        return;
    };
    if source_nated(ctx, version) {
        count_leak(ctx, version);
    }
}

/// Whether the source, read relative to the network header, lies in a translated prefix.
#[inline(always)]
fn source_nated(ctx: &TcContext, version: u8) -> bool {
    if version == 4 {
        load::<u32>(ctx, V4_SOURCE).is_some_and(v4_nated)
    } else {
        load::<[u64; 2]>(ctx, V6_SOURCE).is_some_and(v6_nated)
    }
}

/// 4 or 6 from the packet's ethertype (`__sk_buff.protocol`, big-endian in its low 16 bits).
#[inline(always)]
fn ip_version(ctx: &TcContext) -> Option<u8> {
    // SAFETY: the context's `__sk_buff` is valid for the program's run.
    let protocol = unsafe { (*ctx.skb.skb).protocol };
    match u16::from_be(u16::try_from(protocol & 0xffff).unwrap_or(0)) {
        ETH_P_IP => Some(4),
        ETH_P_IPV6 => Some(6),
        _ => None,
    }
}

/// A value in the packet at `at`, which the caller checked against `data_end`.
#[inline(always)]
fn read<T: Copy>(at: usize) -> T {
    // SAFETY: within the packet (checked by the caller, as the verifier requires); volatile
    // so that it stays one load of the width asked for.
    unsafe { core::ptr::read_volatile(at as *const T) }
}

/// Whether an IPv4 source (in packet byte order, read natively) lies in a translated prefix.
#[inline(always)]
fn v4_nated(source: u32) -> bool {
    let Some(subnets) = NATED_SUBNETS.get(0) else {
        return false;
    };
    let len = subnets.v4_len as usize;
    for prefix in subnets.v4.iter().take(NATED_V4_SLOTS.min(len)) {
        if source & prefix.mask == prefix.network {
            return true;
        }
    }
    false
}

/// The same for an IPv6 source, as two native halves.
#[inline(always)]
fn v6_nated(source: [u64; 2]) -> bool {
    let Some(subnets) = NATED_SUBNETS.get(0) else {
        return false;
    };
    let len = subnets.v6_len as usize;
    for prefix in subnets.v6.iter().take(NATED_V6_SLOTS.min(len)) {
        if source[0] & prefix.mask[0] == prefix.network[0]
            && source[1] & prefix.mask[1] == prefix.network[1]
        {
            return true;
        }
    }
    false
}

/// Counts an untranslated packet under its uplink and flow (read through the helper: rare).
fn count_leak(ctx: &TcContext, version: u8) {
    let packet = Packet(ctx);
    let Some(flow) = packet::ip_header(&packet, version) else {
        return;
    };
    let (src_port, dst_port) = packet::ports(&packet, &flow);
    // SAFETY: the context's `__sk_buff` is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let key = LeakKey {
        ifindex,
        family: flow.family,
        protocol: flow.protocol,
        tcp_flags: packet::tcp_flags(&packet, &flow),
        src_port,
        dst_port,
        padding: 0,
        src_addr: flow.src,
        dst_addr: flow.dst,
    };
    if !maps::update(&LEAKS, &key, &|n: &mut u64| *n += 1) {
        health::bump(HealthCounter::LeakMapFull);
    }
}

/// The packet in the tc context, read relative to its network header.
struct Packet<'a>(&'a TcContext);

impl PacketBytes for Packet<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: u32) -> Option<T> {
        load(self.0, offset)
    }
}

/// `T` read at `offset` from the network header.
#[inline(always)]
fn load<T: Copy>(ctx: &TcContext, offset: u32) -> Option<T> {
    let mut value = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes at most `size_of::<T>()` bytes into `value` and fails
    // (returning < 0) instead of reading out of the packet.
    let rc = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb.cast(),
            offset,
            value.as_mut_ptr().cast(),
            u32::try_from(size_of::<T>()).unwrap_or(0),
            BPF_HDR_START_NET,
        )
    };
    // SAFETY: fully written when the helper succeeds.
    (rc == 0).then(|| unsafe { value.assume_init() })
}
