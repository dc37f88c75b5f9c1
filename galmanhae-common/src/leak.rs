//! Keys of the NAT-leak maps, filled by the tc egress program on the host's uplinks.
//!
//! A packet that leaves the host with a source address inside a MASQUERADE rule's subnet was
//! not translated: conntrack found no valid state for it (INVALID), so NAT never saw it.

/// Capacity of `LEAKS`.
pub const LEAK_MAP_CAPACITY: u32 = 1_024;
/// IPv4 and IPv6 MASQUERADE source prefixes the egress program compares each packet's source
/// with. A short list, scanned in order: cheaper per packet than a trie lookup (a helper call)
/// for the few subnets a host translates. Prefixes beyond these go unwatched, and the agent
/// says which.
pub const NATED_V4_SLOTS: usize = 32;
pub const NATED_V6_SLOTS: usize = 8;

/// An IPv4 prefix as the program compares it: `source & mask == network`, both in the
/// packet's byte order read as a native `u32` (`u32::from_ne_bytes(octets)`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefix4 {
    pub network: u32,
    pub mask: u32,
}

/// An IPv6 prefix, as two native `u64` halves of the address (see [`Prefix4`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefix6 {
    pub network: [u64; 2],
    pub mask: [u64; 2],
}

/// The single value of `NATED_SUBNETS`: the translated prefixes, the first `v4_len` and
/// `v6_len` of each array in use.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatedSubnets {
    pub v4_len: u32,
    pub v6_len: u32,
    pub v4: [Prefix4; NATED_V4_SLOTS],
    pub v6: [Prefix6; NATED_V6_SLOTS],
}

impl Default for NatedSubnets {
    fn default() -> Self {
        Self {
            v4_len: 0,
            v6_len: 0,
            v4: [Prefix4::default(); NATED_V4_SLOTS],
            v6: [Prefix6::default(); NATED_V6_SLOTS],
        }
    }
}

const _: () = assert!(size_of::<NatedSubnets>() == 8 + 8 * NATED_V4_SLOTS + 32 * NATED_V6_SLOTS);

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

crate::impl_pod!(LeakKey, Prefix4, Prefix6, NatedSubnets);
