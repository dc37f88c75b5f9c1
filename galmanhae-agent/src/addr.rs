//! Addresses as the kernel maps store them (IPv6 or v4-mapped, ports in host order) to
//! socket addresses.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use galmanhae_common::{
    drop::{DropKey, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    retransmit::FlowKey,
};

/// An address as the kernel stores it: IPv4 ones come v4-mapped. A dual-stack IPv6 socket
/// talking IPv4 has v4-mapped addresses too; it is shown as IPv4, as conntrack shows it.
pub(crate) fn ip(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// Local and remote socket addresses of a flow.
pub(crate) fn endpoints(key: &FlowKey) -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::new(ip(key.local_addr), key.local_port),
        SocketAddr::new(ip(key.remote_addr), key.remote_port),
    )
}

/// Source and destination of a dropped packet; `None` if its headers were not parsed.
pub(crate) fn packet_endpoints(key: &DropKey) -> Option<(SocketAddr, SocketAddr)> {
    (key.family != 0).then(|| {
        (
            SocketAddr::new(ip(key.src_addr), key.src_port),
            SocketAddr::new(ip(key.dst_addr), key.dst_port),
        )
    })
}

/// A packet as one line: `tcp 198.18.100.2:41000 -> 198.19.0.2:5432`, or for ICMP (whose
/// "ports" the maps fill with type and code) `icmp 198.19.0.1 -> 198.18.100.2 type 3 code 4`.
pub(crate) fn describe(protocol: u8, src: SocketAddr, dst: SocketAddr) -> String {
    match protocol {
        IPPROTO_TCP => format!("tcp {src} -> {dst}"),
        IPPROTO_UDP => format!("udp {src} -> {dst}"),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => format!(
            "icmp {} -> {} type {} code {}",
            src.ip(),
            dst.ip(),
            src.port(),
            dst.port()
        ),
        other => format!("proto {other} {} -> {}", src.ip(), dst.ip()),
    }
}

/// The pre-NAT source of a dropped packet's connection, and whether the packet went in the
/// reply direction; `None` when it had no conntrack entry.
pub(crate) fn conntrack_source(key: &DropKey) -> Option<(SocketAddr, bool)> {
    (key.ct_family != 0).then(|| {
        (
            SocketAddr::new(ip(key.ct_src_addr), key.ct_src_port),
            key.ct_reply != 0,
        )
    })
}

#[cfg(test)]
mod tests {
    use galmanhae_common::retransmit::AF_INET;

    use super::*;

    fn key(family: u16, local: [u8; 16], remote: [u8; 16]) -> FlowKey {
        FlowKey {
            netns: 1,
            family,
            local_port: 41000,
            remote_port: 5432,
            padding: [0; 6],
            cgroup_id: 0,
            local_addr: local,
            remote_addr: remote,
        }
    }

    #[test]
    fn formats_v4_mapped_and_v6_endpoints() {
        let v4 = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_ipv6_mapped().octets();
        let (l, r) = endpoints(&key(AF_INET, v4([198, 18, 100, 2]), v4([198, 19, 0, 2])));
        assert_eq!(
            (l.to_string(), r.to_string()),
            ("198.18.100.2:41000".into(), "198.19.0.2:5432".into())
        );
        let a: Ipv6Addr = "2001:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:2::2".parse().unwrap();
        let (l, r) = endpoints(&key(10, a.octets(), b.octets()));
        assert_eq!(
            (l.to_string(), r.to_string()),
            ("[2001:2::1]:41000".into(), "[2001:2::2]:5432".into())
        );
    }
}
