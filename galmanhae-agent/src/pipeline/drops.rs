//! Who each dropped packet belonged to, and where it was dropped from their side.

use std::net::SocketAddr;

use galmanhae_common::drop::{
    DropKey, IPPROTO_ICMP, IPPROTO_ICMPV6, SOCKET_RECEIVING, SOCKET_SENDING,
};

use crate::{
    addr::{conntrack_source, packet_endpoints},
    attribute::{
        Attributor, Workload,
        nat::{Direction, NatIndex},
    },
    collect::drops::DropSample,
    model::{Namespace, Site},
};

/// Dropped packets of one workload at one site (namespace, reason, location), one flow.
#[derive(Clone, Debug)]
pub(crate) struct DropTotals {
    pub(crate) workload: Workload,
    /// Where the packet was dropped, seen from its workload.
    pub(crate) site: Site,
    pub(crate) netns: u32,
    pub(crate) reason: u32,
    pub(crate) location: u64,
    /// The packet's headers; `None` when counted per site only (map full).
    pub(crate) key: Option<DropKey>,
    /// Which way the packet was going, when its owner was found by address.
    pub(crate) direction: Option<Direction>,
    pub(crate) packets: u64,
}

/// Who each dropped packet belonged to. In a workload's own namespace, that workload; in the
/// host's, the workload whose address is on the packet (before NAT) or whose NAT binding the
/// packet matches (after NAT); else the host.
pub(super) fn attribute_drops(
    delta: &DropSample,
    attributor: &mut Attributor,
    nat: &NatIndex,
) -> Vec<DropTotals> {
    let host = attributor.host_netns();
    let mut out = Vec::with_capacity(delta.flows.len() + delta.overflow.len());
    for (key, packets) in &delta.flows {
        // Its socket's workload (in the host's namespace, by the socket's cgroup), else by
        // the packet's addresses.
        let (workload, owner) = if let Some(direction) = socket_direction(key) {
            let workload = attributor.workload(key.netns, key.socket_cgroup);
            (workload, Some((key.netns, direction)))
        } else {
            let owner = if Some(key.netns) == host {
                packet_owner(key, attributor, nat)
            } else {
                None
            };
            let netns = owner.map_or(key.netns, |(netns, _)| netns);
            (attributor.workload(netns, 0), owner)
        };
        out.push(DropTotals {
            site: site(attributor, key.netns, &workload),
            workload,
            netns: key.netns,
            reason: key.reason,
            location: key.location,
            key: Some(*key),
            direction: owner.map(|(_, direction)| direction),
            packets: *packets,
        });
    }
    for (site, packets) in &delta.overflow {
        let workload = attributor.workload(site.netns, 0);
        out.push(DropTotals {
            site: self::site(attributor, site.netns, &workload),
            workload,
            netns: site.netns,
            reason: site.reason,
            location: site.location,
            key: None,
            direction: None,
            packets: *packets,
        });
    }
    out
}

/// A dropped packet that neither a local socket nor its conntrack entry ties to a workload:
/// only its addresses can, maybe through a NAT binding.
pub(super) fn unowned(key: &DropKey) -> bool {
    socket_direction(key).is_none() && conntrack_source(key).is_none()
}

/// Which way a packet went relative to the local socket that owns it, if one does.
fn socket_direction(key: &DropKey) -> Option<Direction> {
    match key.socket {
        SOCKET_SENDING => Some(Direction::Egress),
        SOCKET_RECEIVING => Some(Direction::Ingress),
        _ => None,
    }
}

/// The namespace a packet seen in the host's belongs to, and which way it went: by the
/// pre-NAT source of its conntrack entry (exact, also for a tuple that lost an SNAT race),
/// else by its source or destination address (before NAT), else by the NAT binding it
/// matches (after NAT).
fn packet_owner(
    key: &DropKey,
    attributor: &Attributor,
    nat: &NatIndex,
) -> Option<(u32, Direction)> {
    let owner_of = |a: SocketAddr| attributor.netns_of_address(a.ip());
    if let Some((origin, reply)) = conntrack_source(key)
        && let Some(netns) = owner_of(origin)
    {
        let direction = if reply {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        return Some((netns, direction));
    }
    let (src, dst) = packet_endpoints(key)?;
    if let Some(netns) = owner_of(src) {
        return Some((netns, Direction::Egress));
    }
    if let Some(netns) = owner_of(dst) {
        return Some((netns, Direction::Ingress));
    }
    let (binding, direction) = nat.packet(key.protocol, src, dst)?;
    Some((owner_of(binding.local)?, direction))
}

/// Where a packet was dropped, seen from the workload it belongs to.
fn site(attributor: &mut Attributor, netns: u32, workload: &Workload) -> Site {
    match super::namespace(attributor, netns) {
        Namespace::Host => Site::Host,
        Namespace::Unknown => Site::Unknown,
        Namespace::Workload(name) if netns == workload.netns => Site::Own(name),
        Namespace::Workload(name) => Site::Peer(name),
    }
}

/// Example packets the report lists per group of drops.
pub(super) const EXAMPLES: usize = 5;

/// ICMP type 3 code 4 (RFC 1191) or `ICMPv6` type 2 (RFC 8201); the kernel map keeps the
/// type and code in the port fields.
pub(super) fn is_icmp_too_big(key: &DropKey) -> bool {
    match key.protocol {
        IPPROTO_ICMP => key.src_port == 3 && key.dst_port == 4,
        IPPROTO_ICMPV6 => key.src_port == 2,
        _ => false,
    }
}
