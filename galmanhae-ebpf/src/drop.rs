//! `skb:kfree_skb`: count dropped packets per namespace, reason, location and flow.
//!
//! The namespace comes from the packet's device (else its socket), never from the current
//! task: drops happen in softirq context on behalf of whoever. The flow is parsed from the
//! IP header at `head + network_header`; a packet without one is counted with `family == 0`.

use aya_ebpf::{
    helpers::generated::bpf_probe_read_kernel,
    macros::map,
    maps::{HashMap, PerCpuHashMap},
    programs::{BtfTracePointContext, TracePointContext},
};
use galmanhae_common::{
    drop::{
        DROP_MAP_CAPACITY, DROP_OVERFLOW_CAPACITY, DropKey, DropSiteKey, SOCKET_RECEIVING,
        SOCKET_SENDING,
    },
    health::HealthCounter,
    offsets::ABSENT,
    retransmit::{AF_INET, AF_INET6},
};

use crate::{
    health,
    kernel::{Direct, Memory, Probe, at, low_32, offset, optional_arg, rdonly_cast, tp_field},
    maps, packet, stores,
};

/// Drops per namespace, reason, location and flow. A plain hash: an LRU would evict silently.
/// Shared by the CPUs, counted with the atomic add: a per-CPU value is one more cold line per
/// drop, and one value per CPU per key for the agent to read (64 on a 64-CPU host).
#[map]
static DROPS: HashMap<DropKey, u64> = HashMap::with_max_entries(DROP_MAP_CAPACITY, 0);

/// Drops per namespace, reason and location, when `DROPS` is full.
#[map]
static DROP_OVERFLOW: PerCpuHashMap<DropSiteKey, u64> =
    PerCpuHashMap::with_max_entries(DROP_OVERFLOW_CAPACITY, 0);

/// `network_header` when no header was set (`skb_reset_network_header` never ran).
const UNSET_HEADER: u16 = 0xffff;

/// `tp_btf/kfree_skb(skb, location[, reason[, rx_sk]])`: the packet's structs read with plain
/// loads.
pub fn on_kfree_skb_btf(ctx: &BtfTracePointContext) {
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason = optional_arg(ctx, 2, offset!(kfree_skb.reason) != ABSENT).map_or(0, low_32);
    let rx_sk = || optional_arg(ctx, 3, offset!(kfree_skb.rx_sk) != ABSENT).unwrap_or(0);
    on_drop::<Direct>(skb, location, reason, rx_sk);
}

/// `skb:kfree_skb` as a classic tracepoint, where `tp_btf` is refused: every read through
/// `bpf_probe_read_kernel`.
pub fn on_kfree_skb(ctx: &TracePointContext) {
    let Some(skb) = tp_field::<u64>(ctx, offset!(kfree_skb.skbaddr)) else {
        health::bump(HealthCounter::ReadError);
        return;
    };
    on_drop::<Probe>(
        skb,
        tp_field::<u64>(ctx, offset!(kfree_skb.location)).unwrap_or(0),
        // Before 5.17 there is no reason: 0 reads as "unknown".
        tp_field::<u32>(ctx, offset!(kfree_skb.reason)).unwrap_or(0),
        || tp_field::<u64>(ctx, offset!(kfree_skb.rx_sk)).unwrap_or(0),
    );
}

#[inline(always)]
fn on_drop<M: Memory>(skb: u64, location: u64, reason: u32, rx_sk: impl Fn() -> u64) {
    // The packet's own socket, else (TCP clears `skb->sk` on delivery) the receiving one.
    let sk = match M::at::<u64>(skb, offset!(structs.skb_sk)).unwrap_or(0) {
        0 => rx_sk(),
        sk => sk,
    };
    let mut key = core::mem::MaybeUninit::<DropKey>::uninit();
    stores::zero(key.as_mut_ptr());
    // SAFETY: zeroed above, and all zeros is a valid key.
    let key = unsafe { key.assume_init_mut() };
    key.netns = netns::<M>(skb, sk);
    key.reason = reason;
    key.location = location;
    parse_flow::<M>(skb, key);
    owning_socket::<M>(sk, key);
    conntrack_origin::<M>(skb, key);
    count(key);
}

/// The namespace of the packet's device, else of its socket; 0 when neither is set.
#[inline(always)]
fn netns<M: Memory>(skb: u64, sk: u64) -> u32 {
    let dev = M::at::<u64>(skb, offset!(structs.skb_dev)).unwrap_or(0);
    let net = if dev == 0 {
        M::at::<u64>(sk, offset!(structs.sock_net)).unwrap_or(0)
    } else {
        M::at::<u64>(dev, offset!(structs.net_device_net)).unwrap_or(0)
    };
    M::at::<u32>(net, offset!(structs.net_inum)).unwrap_or(0)
}

/// `TCP_TIME_WAIT` and `TCP_NEW_SYN_RECV`: a mini socket, without the full socket's cgroup.
const TCP_TIME_WAIT: u8 = 6;
const TCP_NEW_SYN_RECV: u8 = 12;

/// The full local socket of a process that owns the packet (a `--network host` container's,
/// a service's): its cgroup, and whether it sent the packet (its local port is the packet's
/// source) or was receiving it. A packet crossing into another namespace has lost its socket (veth scrubs
/// it), so only drops on the owner's own path are attributed this way.
#[inline(always)]
fn owning_socket<M: Memory>(sk: u64, key: &mut DropKey) {
    if sk == 0 {
        return;
    }
    let state = M::at::<u8>(sk, offset!(sock.state)).unwrap_or(TCP_TIME_WAIT);
    if state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV {
        return;
    }
    // The kernel's own sockets (ICMP errors, resets) speak for whoever the packet is about.
    if M::bits(sk, offset!(structs.sock_kern_sock)).unwrap_or(0) != 0 {
        return;
    }
    let local_port = M::at::<u16>(sk, offset!(sock.num)).unwrap_or(0);
    key.socket = if local_port == key.src_port {
        SOCKET_SENDING
    } else {
        SOCKET_RECEIVING
    };
    // Absent without CONFIG_SOCK_CGROUP_DATA: every read then gives 0.
    let cgroup = M::at::<u64>(sk, offset!(structs.sock_cgroup)).unwrap_or(0);
    let kernfs_node = M::at::<u64>(cgroup, offset!(structs.cgroup_kn)).unwrap_or(0);
    key.socket_cgroup = M::at::<u64>(kernfs_node, offset!(structs.kernfs_node_id)).unwrap_or(0);
}

/// Fills the flow fields from the IP and transport headers, where they are set. Written into
/// the key in place: a parsed copy would not fit the 512-byte stack beside it.
#[inline(always)]
fn parse_flow<M: Memory>(skb: u64, key: &mut DropKey) {
    let Some(head) = M::at::<u64>(skb, offset!(structs.skb_head)) else {
        return;
    };
    let network = match M::at::<u16>(skb, offset!(structs.skb_network_header)) {
        Some(n) if n != UNSET_HEADER => head + u64::from(n),
        _ => return,
    };
    if M::PLAIN_LOADS && offset!(structs.iphdr_type) != 0 && parse_ipv4_cast(network, key) {
        return;
    }
    // Past a short packet's end this reads the buffer's tail room: never used, as the
    // version and header length say where the headers end.
    let mut bytes = core::mem::MaybeUninit::<[u8; HEADERS]>::uninit();
    // SAFETY: the helper writes `HEADERS` bytes into `bytes` (zeros on failure) and checks the
    // source; not zeroed first, which would cost a `memset` call (see `stores`).
    let read = unsafe {
        bpf_probe_read_kernel(
            bytes.as_mut_ptr().cast(),
            HEADER_BYTES,
            network as *const core::ffi::c_void,
        )
    };
    if read != 0 {
        return;
    }
    // SAFETY: fully written by the helper.
    let bytes = unsafe { bytes.assume_init_ref() };
    let transport = match bytes[0] >> 4 {
        4 => {
            key.family = AF_INET;
            key.protocol = bytes[9];
            stores::v4_mapped_into(
                &mut key.src_addr,
                [bytes[12], bytes[13], bytes[14], bytes[15]],
            );
            stores::v4_mapped_into(
                &mut key.dst_addr,
                [bytes[16], bytes[17], bytes[18], bytes[19]],
            );
            // A non-first fragment has no transport header.
            if u16::from_be_bytes([bytes[6], bytes[7]]) & IP_OFFSET_MASK != 0 {
                return;
            }
            match bytes[0] & 0x0f {
                5 => four(bytes, 20),
                6 => four(bytes, 24),
                7 => four(bytes, 28),
                8 => four(bytes, 32),
                9 => four(bytes, 36),
                10 => four(bytes, 40),
                ihl => match at::<[u8; 4]>(network, u32::from(ihl) * 4) {
                    Some(ports) => ports,
                    None => return,
                },
            }
        }
        6 => {
            key.family = AF_INET6;
            key.protocol = bytes[6];
            key.src_addr.copy_from_slice(&bytes[8..24]);
            key.dst_addr.copy_from_slice(&bytes[24..40]);
            // Extension headers are not walked: their "ports" read as whatever follows.
            four(bytes, 40)
        }
        _ => return,
    };
    (key.src_port, key.dst_port) = packet::ports_of(key.protocol, transport);
}

/// An IPv4 packet's flow read with plain loads through casts to `struct iphdr` and `struct
/// udphdr` (6.2+, see [`rdonly_cast`]); `false` for any other packet, left to the probe.
#[inline(always)]
fn parse_ipv4_cast(network: u64, key: &mut DropKey) -> bool {
    let ip = rdonly_cast(network, offset!(structs.iphdr_type));
    // The wire format's offsets: version and header length, fragment offset, protocol,
    // addresses.
    let Some(first) = Direct::at::<u8>(ip, 0).filter(|b| b >> 4 == 4) else {
        return false;
    };
    key.family = AF_INET;
    key.protocol = Direct::at::<u8>(ip, 9).unwrap_or(0);
    let address = |at| Direct::at::<u32>(ip, at).unwrap_or(0).to_ne_bytes();
    stores::v4_mapped_into(&mut key.src_addr, address(12));
    stores::v4_mapped_into(&mut key.dst_addr, address(16));
    let fragment = Direct::at::<u16>(ip, 6).map_or(0, u16::from_be) & IP_OFFSET_MASK;
    if fragment == 0 {
        let l4 = rdonly_cast(
            network + u64::from(first & 0x0f) * 4,
            offset!(structs.udphdr_type),
        );
        let port = |at| Direct::at::<u16>(l4, at).unwrap_or(0).to_ne_bytes();
        let (source, dest) = (port(0), port(2));
        (key.src_port, key.dst_port) =
            packet::ports_of(key.protocol, [source[0], source[1], dest[0], dest[1]]);
    }
    true
}

/// The bytes read at once from the network header: an IPv6 header and its ports, or an IPv4
/// header with up to 20 bytes of options and its ports. One probe instead of one per header.
const HEADERS: usize = HEADER_BYTES as usize;
const HEADER_BYTES: u32 = 44;
const IP_OFFSET_MASK: u16 = 0x1fff;

/// Four bytes of `bytes` from `at`, a constant once inlined.
#[inline(always)]
fn four(bytes: &[u8; HEADERS], at: usize) -> [u8; 4] {
    [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]
}

/// `ctinfo` bits of `skb->_nfct` (`enum ip_conntrack_info`).
const NFCT_INFO_MASK: u64 = 7;
const IP_CT_IS_REPLY: u64 = 3;
const IP_CT_UNTRACKED: u64 = 7;

/// The original (pre-NAT) source of the packet's connection, when conntrack has one: after
/// SNAT the packet's own source is the host's address, this one names the workload.
#[inline(always)]
fn conntrack_origin<M: Memory>(skb: u64, key: &mut DropKey) {
    // `_nfct` is an integer to the verifier: what it points to is read through a cast or with
    // probes.
    let Some(nfct) = M::at::<u64>(skb, offset!(structs.skb_nfct)) else {
        return;
    };
    let info = nfct & NFCT_INFO_MASK;
    let ct = nfct & !NFCT_INFO_MASK;
    if ct == 0 || info == IP_CT_UNTRACKED {
        return;
    }
    let addr_at = offset!(structs.ct_orig_src_addr);
    let (addr, port, family) = if M::PLAIN_LOADS && offset!(structs.nf_conn_type) != 0 {
        // Plain loads through a cast to `struct nf_conn` (6.2+, conntrack built in).
        let ct = rdonly_cast(ct, offset!(structs.nf_conn_type));
        (
            Direct::addr16(ct, addr_at),
            Direct::at::<u16>(ct, offset!(structs.ct_orig_src_port)).unwrap_or(0),
            Direct::at::<u16>(ct, offset!(structs.ct_orig_l3num)).unwrap_or(0),
        )
    } else if offset!(structs.ct_orig_src_port) == addr_at + 16
        && offset!(structs.ct_orig_l3num) == addr_at + 18
    {
        // `struct nf_conntrack_man` as it has always been: address, port, family in one read.
        let Some(man) = at::<[u8; 20]>(ct, addr_at) else {
            return;
        };
        let mut addr = [0; 16];
        addr.copy_from_slice(&man[..16]);
        (
            addr,
            u16::from_ne_bytes([man[16], man[17]]),
            u16::from_ne_bytes([man[18], man[19]]),
        )
    } else {
        let (Some(addr), Some(family)) = (
            at::<[u8; 16]>(ct, addr_at),
            at::<u16>(ct, offset!(structs.ct_orig_l3num)),
        ) else {
            return;
        };
        (
            addr,
            at::<u16>(ct, offset!(structs.ct_orig_src_port)).unwrap_or(0),
            family,
        )
    };
    match family {
        AF_INET => {
            stores::v4_mapped_into(&mut key.ct_src_addr, [addr[0], addr[1], addr[2], addr[3]]);
        }
        AF_INET6 => key.ct_src_addr = addr,
        _ => return,
    }
    key.ct_family = family;
    key.ct_src_port = u16::from_be(port);
    key.ct_reply = u8::from(info >= IP_CT_IS_REPLY);
}

/// One more drop for `key`; per site when the flow map is full; counted as lost otherwise.
#[inline(always)]
fn count(key: &DropKey) {
    if maps::add_shared(&DROPS, key, 1) {
        return;
    }
    health::bump(HealthCounter::DropMapFull);
    let one_more = |n: &mut u64| *n += 1;
    if !maps::update(&DROP_OVERFLOW, &key.site(), &one_more) {
        health::bump(HealthCounter::DropOverflowFull);
    }
}
