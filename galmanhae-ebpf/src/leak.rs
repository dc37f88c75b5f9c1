//! tc egress on the host's uplinks: count packets whose source is in a translated subnet (a
//! MASQUERADE rule's `-s`). After POSTROUTING every packet from such a subnet should carry the
//! host's address; one that does not was skipped by NAT because conntrack marked it INVALID.
//!
//! Only the source address is looked up per packet (one LPM trie lookup); the rest is parsed
//! for the few that match. Headers are read relative to the network header, so L3 uplinks
//! (`WireGuard`, tun) work as well as Ethernet ones.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, bpf_hdr_start_off::BPF_HDR_START_NET},
    helpers::generated::bpf_skb_load_bytes_relative,
    macros::map,
    maps::{LpmTrie, PerCpuHashMap, lpm_trie::Key},
    programs::TcContext,
};
use galmanhae_common::{
    health::HealthCounter,
    leak::{LEAK_MAP_CAPACITY, LeakKey, NATED_SUBNETS_CAPACITY},
};

use crate::{
    health, maps,
    packet::{self, PacketBytes},
};

/// Source prefixes that MASQUERADE translates (IPv6 or v4-mapped, filled by the agent).
#[map]
static NATED_SUBNETS: LpmTrie<[u8; 16], u8> =
    LpmTrie::with_max_entries(NATED_SUBNETS_CAPACITY, BPF_F_NO_PREALLOC);

/// Untranslated packets per uplink and flow.
#[map]
static LEAKS: PerCpuHashMap<LeakKey, u64> = PerCpuHashMap::with_max_entries(LEAK_MAP_CAPACITY, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const FULL_PREFIX: u32 = 128;

pub fn on_egress(ctx: &TcContext) {
    // SAFETY: the context's `__sk_buff` is valid for the program's run.
    let (protocol, ifindex) = unsafe { ((*ctx.skb.skb).protocol, (*ctx.skb.skb).ifindex) };
    // `__sk_buff.protocol` holds the big-endian ethertype in its low 16 bits.
    let version = match u16::from_be(u16::try_from(protocol & 0xffff).unwrap_or(0)) {
        ETH_P_IP => 4,
        ETH_P_IPV6 => 6,
        _ => return,
    };
    let packet = Packet(ctx);
    let Some(flow) = packet::ip_header(&packet, version) else {
        return;
    };
    if NATED_SUBNETS.get(Key::new(FULL_PREFIX, flow.src)).is_none() {
        return;
    }
    let (src_port, dst_port) = packet::ports(&packet, &flow);
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
