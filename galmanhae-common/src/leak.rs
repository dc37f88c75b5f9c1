//! Keys of the NAT-leak maps, filled by the tc egress program on the host's uplinks.
//!
//! A packet that leaves the host with a source address inside a MASQUERADE rule's subnet was
//! not translated: conntrack found no valid state for it (INVALID), so NAT never saw it.

/// Capacity of `LEAKS`.
pub const LEAK_MAP_CAPACITY: u32 = 1_024;
/// Capacity of `NATED_SUBNETS` (one entry per MASQUERADE source prefix).
pub const NATED_SUBNETS_CAPACITY: u32 = 256;
/// `NATED_SUBNETS` keys are IPv6 or v4-mapped IPv6: an IPv4 prefix length gains this much.
pub const V4_MAPPED_PREFIX: u32 = 96;

/// One untranslated packet's uplink and flow. Addresses are IPv6 or v4-mapped IPv6, ports in
/// host byte order (0 for protocols without ports).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeakKey {
    /// The uplink it left through.
    pub ifindex: u32,
    pub family: u16,
    /// `IPPROTO_*`.
    pub protocol: u8,
    /// TCP flags (FIN 0x01, SYN 0x02, RST 0x04, ...): what kind of segment slipped out.
    pub tcp_flags: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub padding: u32,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
}

const _: () = assert!(size_of::<LeakKey>() == 48);

crate::impl_pod!(LeakKey);
