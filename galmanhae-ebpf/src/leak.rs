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
    drop::{IPPROTO_TCP, IPPROTO_UDP},
    health::HealthCounter,
    leak::{LEAK_MAP_CAPACITY, LeakKey, NATED_SUBNETS_CAPACITY},
    retransmit::{AF_INET, AF_INET6},
    v4_mapped,
};

use crate::{health, maps};

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
    let protocol = unsafe { (*ctx.skb.skb).protocol };
    // `__sk_buff.protocol` holds the big-endian ethertype in its low 16 bits.
    let ethertype = u16::from_be(u16::try_from(protocol & 0xffff).unwrap_or(0));
    let mut key = LeakKey {
        ifindex: 0,
        family: 0,
        protocol: 0,
        tcp_flags: 0,
        src_port: 0,
        dst_port: 0,
        padding: 0,
        src_addr: [0; 16],
        dst_addr: [0; 16],
    };
    let transport = match ethertype {
        ETH_P_IP => {
            let Some(ip) = load::<[u8; 20]>(ctx, 0) else {
                return;
            };
            key.src_addr = v4_mapped([ip[12], ip[13], ip[14], ip[15]]);
            if NATED_SUBNETS
                .get(Key::new(FULL_PREFIX, key.src_addr))
                .is_none()
            {
                return;
            }
            key.family = AF_INET;
            key.protocol = ip[9];
            key.dst_addr = v4_mapped([ip[16], ip[17], ip[18], ip[19]]);
            u32::from(ip[0] & 0x0f) * 4
        }
        ETH_P_IPV6 => {
            let Some(ip) = load::<[u8; 40]>(ctx, 0) else {
                return;
            };
            key.src_addr.copy_from_slice(&ip[8..24]);
            if NATED_SUBNETS
                .get(Key::new(FULL_PREFIX, key.src_addr))
                .is_none()
            {
                return;
            }
            key.family = AF_INET6;
            key.protocol = ip[6];
            key.dst_addr.copy_from_slice(&ip[24..40]);
            40
        }
        _ => return,
    };
    // SAFETY: as above.
    key.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if matches!(key.protocol, IPPROTO_TCP | IPPROTO_UDP)
        && let Some(ports) = load::<[u8; 4]>(ctx, transport)
    {
        key.src_port = u16::from_be_bytes([ports[0], ports[1]]);
        key.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
        if key.protocol == IPPROTO_TCP {
            key.tcp_flags = load::<u8>(ctx, transport + 13).unwrap_or(0);
        }
    }
    if !maps::update(&LEAKS, &key, &|n: &mut u64| *n += 1) {
        health::bump(HealthCounter::LeakMapFull);
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
