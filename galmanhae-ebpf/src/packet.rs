//! IP and transport headers, parsed the same way for both packet programs whatever reads the
//! bytes: probe reads from `skb->head` in the drop tracepoint, `bpf_skb_load_bytes_relative`
//! in tc.

use galmanhae_common::{
    drop::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    retransmit::{AF_INET, AF_INET6},
    v4_mapped,
};

/// Bytes of a packet, at offsets from its network header.
pub trait PacketBytes {
    fn read<T: Copy>(&self, offset: u32) -> Option<T>;
}

/// A packet's flow. Addresses are IPv6 or v4-mapped; for ICMP the ports are type and code.
pub struct Flow {
    pub family: u16,
    pub protocol: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Offset of the transport header; `None` for a non-first IPv4 fragment, which has none.
    pub transport: Option<u32>,
}

const IP_OFFSET_MASK: u16 = 0x1fff;

/// The IP header of an IPv4 (`version` 4) or IPv6 (6) packet.
#[inline(always)]
pub fn ip_header(bytes: &impl PacketBytes, version: u8) -> Option<Flow> {
    match version {
        4 => Some(ipv4(&bytes.read::<[u8; 20]>(0)?)),
        6 => Some(ipv6(&bytes.read::<[u8; 40]>(0)?)),
        _ => None,
    }
}

/// `struct iphdr`: the flow from its protocol and addresses, and where the transport
/// header starts (none for a non-first fragment).
#[inline(always)]
pub fn ipv4(ip: &[u8; 20]) -> Flow {
    let first_fragment = u16::from_be_bytes([ip[6], ip[7]]) & IP_OFFSET_MASK == 0;
    Flow {
        family: AF_INET,
        protocol: ip[9],
        src: v4_mapped([ip[12], ip[13], ip[14], ip[15]]),
        dst: v4_mapped([ip[16], ip[17], ip[18], ip[19]]),
        transport: first_fragment.then(|| u32::from(ip[0] & 0x0f) * 4),
    }
}

/// `struct ipv6hdr`: the flow from its next header and addresses.
#[inline(always)]
pub fn ipv6(ip: &[u8; 40]) -> Flow {
    let mut flow = Flow {
        family: AF_INET6,
        protocol: ip[6],
        src: [0; 16],
        dst: [0; 16],
        // Extension headers are not walked: their "ports" read as whatever follows.
        transport: Some(40),
    };
    flow.src.copy_from_slice(&ip[8..24]);
    flow.dst.copy_from_slice(&ip[24..40]);
    flow
}

/// Source and destination port (TCP, UDP), or ICMP type and code; zeros otherwise.
#[inline(always)]
pub fn ports(bytes: &impl PacketBytes, flow: &Flow) -> (u16, u16) {
    let Some(transport) = flow.transport else {
        return (0, 0);
    };
    match flow.protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP | IPPROTO_ICMPV6 => bytes
            .read::<[u8; 4]>(transport)
            .map_or((0, 0), |p| ports_of(flow.protocol, p)),
        _ => (0, 0),
    }
}

/// Ports (or ICMP type and code) from the transport header's first four bytes.
#[inline(always)]
pub fn ports_of(protocol: u8, p: [u8; 4]) -> (u16, u16) {
    match protocol {
        IPPROTO_TCP | IPPROTO_UDP => (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => (u16::from(p[0]), u16::from(p[1])),
        _ => (0, 0),
    }
}

/// The TCP flags byte, 0 for anything else.
#[inline(always)]
pub fn tcp_flags(bytes: &impl PacketBytes, flow: &Flow) -> u8 {
    match flow.transport {
        Some(transport) if flow.protocol == IPPROTO_TCP => {
            bytes.read::<u8>(transport + 13).unwrap_or(0)
        }
        _ => 0,
    }
}
