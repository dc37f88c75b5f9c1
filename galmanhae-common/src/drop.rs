//! Keys of the drop maps, filled by the `skb:kfree_skb` program.
//!
//! A drop is counted per network namespace, drop reason and kernel location, plus the packet's
//! flow where its headers can be parsed cheaply (IPv4/IPv6 with TCP, UDP or ICMP).

/// Default capacity of `DROPS`.
pub const DROP_MAP_CAPACITY: u32 = 8_192;
/// Capacity of `DROP_OVERFLOW` (one entry per namespace, reason and location).
pub const DROP_OVERFLOW_CAPACITY: u32 = 2_048;

/// One dropped packet's namespace, reason, location and flow.
///
/// Addresses are IPv6 or v4-mapped IPv6, ports in host byte order; for ICMP the "ports" are
/// the type and the code. A packet that could not be parsed has `family == 0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropKey {
    /// Inode of the namespace of the packet's device (else its socket).
    pub netns: u32,
    /// `enum skb_drop_reason` value (its name comes from the running kernel's BTF).
    pub reason: u32,
    /// Address of the function that dropped the packet (symbolised from `/proc/kallsyms`).
    pub location: u64,
    pub family: u16,
    /// `IPPROTO_*` of the transport header.
    pub protocol: u8,
    pub padding: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    /// Family of the packet's conntrack entry; 0 when it has none.
    pub ct_family: u16,
    /// The connection's source port before NAT (host order).
    pub ct_src_port: u16,
    /// 1 when the packet goes in the connection's reply direction.
    pub ct_reply: u8,
    /// Whether a local socket owns the packet, and which way: [`NO_SOCKET`],
    /// [`SOCKET_SENDING`] or [`SOCKET_RECEIVING`]. Such a drop is its socket's workload's.
    pub socket: u8,
    pub ct_padding: [u8; 2],
    /// The connection's source address before NAT (IPv6 or v4-mapped): after SNAT the packet
    /// carries the host's address, this still names the container.
    pub ct_src_addr: [u8; 16],
    /// The owning socket's cgroup id (0 without one, or without `sk_cgrp_data`).
    pub socket_cgroup: u64,
}

const _: () = assert!(size_of::<DropKey>() == 88);

/// No full local socket on the packet: it is attributed by its addresses.
pub const NO_SOCKET: u8 = 0;
/// The packet's source port is its socket's local port: the socket sent it.
pub const SOCKET_SENDING: u8 = 1;
/// The packet was on its way into the socket.
pub const SOCKET_RECEIVING: u8 = 2;

/// Where drops go when `DROPS` is full: without the flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropSiteKey {
    pub netns: u32,
    pub reason: u32,
    pub location: u64,
}

const _: () = assert!(size_of::<DropSiteKey>() == 16);

impl DropKey {
    pub const fn site(&self) -> DropSiteKey {
        DropSiteKey {
            netns: self.netns,
            reason: self.reason,
            location: self.location,
        }
    }
}

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

crate::impl_pod!(DropKey, DropSiteKey);
