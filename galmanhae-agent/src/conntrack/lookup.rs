//! One conntrack entry by its tuple (`IPCTNL_MSG_CT_GET` without `NLM_F_DUMP`): what the agent
//! asks for the flows it follows, instead of dumping a table that can hold millions of
//! entries (a NAT gateway, a busy Kubernetes node). One netlink socket serves every lookup of a
//! pass; the kernel answers each with the entry, or `ENOENT`. The kernel finds the entry by
//! its hash, which holds both of an entry's tuples: a tuple names its connection whether it is
//! the original direction (before NAT) or the reply (after it). Lookups are in conntrack zone 0.
//! <https://elixir.bootlin.com/linux/v6.18/source/net/netfilter/nf_conntrack_netlink.c>
//! (`ctnetlink_get_conntrack`)

use std::net::{IpAddr, SocketAddr};

use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::{ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Tuple as CtTuple},
};
use netlink_sys::protocols::NETLINK_NETFILTER;

use super::{ConntrackError, Entry, entry::entry, netlink::from_failure};
use crate::netlink::{self, Answer, Failure};

const WHAT: &str = "looking up a conntrack entry";

/// A ctnetlink socket in the calling thread's network namespace.
pub(crate) struct Lookups {
    socket: netlink::Socket,
}

impl Lookups {
    pub(crate) fn open() -> Result<Self, ConntrackError> {
        netlink::Socket::open(NETLINK_NETFILTER)
            .map(|socket| Self { socket })
            .map_err(|e| from_failure(WHAT, Failure::Io(e)))
    }

    /// The entry with a tuple `src -> dst`, in either direction; `None` when there is none.
    pub(crate) fn get(
        &mut self,
        protocol: u8,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Result<Option<Entry>, ConntrackError> {
        let Some(message) = request(protocol, src, dst) else {
            return Ok(None); // an IPv4 source with an IPv6 destination names no entry
        };
        match self.socket.request(message, Answer::Reply) {
            Ok(replies) => Ok(replies.messages.iter().find_map(|m| match &m.inner {
                NetfilterMessageInner::Conntrack(
                    ConntrackMessage::New(attributes) | ConntrackMessage::Get(attributes),
                ) => entry(attributes),
                _ => None,
            })),
            // ENOENT: no such entry. EINVAL: a tuple this protocol's entries cannot have (the
            // kernel parses ports only for the protocols that have them).
            Err(Failure::Refused(libc::ENOENT | libc::EINVAL)) => Ok(None),
            Err(failure) => Err(from_failure(WHAT, failure)),
        }
    }
}

/// The request for one tuple, in its address family; `None` when the two addresses differ in
/// family.
fn request(protocol: u8, src: SocketAddr, dst: SocketAddr) -> Option<NetfilterMessage> {
    let (src_ip, dst_ip) = (plain(src.ip()), plain(dst.ip()));
    let family = match (src_ip, dst_ip) {
        (IpAddr::V4(_), IpAddr::V4(_)) => NetfilterProtoFamily::IPv4,
        (IpAddr::V6(_), IpAddr::V6(_)) => NetfilterProtoFamily::IPv6,
        _ => return None,
    };
    let tuple = vec![
        CtTuple::Ip(vec![
            IPTuple::SourceAddress(src_ip),
            IPTuple::DestinationAddress(dst_ip),
        ]),
        CtTuple::Proto(vec![
            ProtoTuple::Protocol(protocol.into()),
            ProtoTuple::SourcePort(src.port()),
            ProtoTuple::DestinationPort(dst.port()),
        ]),
    ];
    Some(NetfilterMessage::new(
        NetfilterHeader::new(family, 0, 0),
        ConntrackMessage::Get(vec![ConntrackAttribute::CtaTupleOrig(tuple)]),
    ))
}

/// A v4-mapped IPv6 address as the IPv4 address conntrack keys it by.
fn plain(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};

    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn a_lookup_names_one_tuple_in_its_family() {
        let message = request(6, a("198.19.0.2:5432"), a("198.19.0.1:41000")).expect("one family");
        assert_eq!(message.header.family, NetfilterProtoFamily::IPv4);
        let NetfilterMessageInner::Conntrack(ConntrackMessage::Get(attributes)) = &message.inner
        else {
            panic!("not a GET: {message:?}");
        };
        let ConntrackAttribute::CtaTupleOrig(tuple) = &attributes[0] else {
            panic!("not a tuple: {attributes:?}");
        };
        assert!(tuple.contains(&CtTuple::Proto(vec![
            ProtoTuple::Protocol(6.into()),
            ProtoTuple::SourcePort(5432),
            ProtoTuple::DestinationPort(41000),
        ])));
        // Round trip through the wire format: what the kernel would parse.
        let mut wire = NetlinkMessage::from(message.clone());
        wire.finalize();
        let mut bytes = vec![0; wire.buffer_len()];
        wire.serialize(&mut bytes);
        let back = NetlinkMessage::<NetfilterMessage>::deserialize(&bytes).expect("decodes");
        assert_eq!(back.payload, NetlinkPayload::InnerMessage(message));
    }

    #[test]
    fn mapped_addresses_are_looked_up_as_ipv4_and_mixed_families_not_at_all() {
        let mapped = request(6, a("[::ffff:198.18.100.2]:41000"), a("198.19.0.2:5432"))
            .expect("mapped is IPv4");
        assert_eq!(mapped.header.family, NetfilterProtoFamily::IPv4);
        assert!(request(6, a("[2001:2::2]:1"), a("198.19.0.2:5432")).is_none());
        let v6 = request(6, a("[2001:2::2]:1"), a("[2001:2::3]:2")).expect("v6");
        assert_eq!(v6.header.family, NetfilterProtoFamily::IPv6);
    }
}
