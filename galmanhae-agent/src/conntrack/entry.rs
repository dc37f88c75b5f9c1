//! One conntrack entry decoded from a ctnetlink message's attributes (a lookup's answer, or
//! a dump's messages).
//!
//! `netlink-packet-netfilter` decodes the tuples, status, TCP state, timeout and mark; the
//! zone (`CTA_ZONE`, not decoded by the crate) is read here. Attribute layout:
//! <https://github.com/torvalds/linux/blob/master/include/uapi/linux/netfilter/nfnetlink_conntrack.h>.

use netlink_packet_core::{DefaultNla, NLA_TYPE_MASK, Nla as _};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Tuple as CtTuple,
};

use super::{Entry, Tuple};

/// `CTA_ZONE` of `enum ctattr_type`: a big-endian u16, sent only for a non-default zone.
const CTA_ZONE: u16 = 18;

/// An entry from a message's attributes; `None` when a tuple or the protocol is missing.
pub(super) fn entry(attributes: &[ConntrackAttribute]) -> Option<Entry> {
    let (mut orig, mut reply, mut status, mut tcp, mut timeout_s, mut mark, mut zone) =
        (None, None, 0, None, None, 0, 0);
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(t) => orig = tuple(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple(t),
            ConntrackAttribute::CtaStatus(bits) => status = bits.bits(),
            ConntrackAttribute::CtaProtoInfo(info) => tcp = tcp_state(info),
            ConntrackAttribute::CtaTimeout(seconds) => timeout_s = Some(*seconds),
            ConntrackAttribute::CtaMark(m) => mark = *m,
            ConntrackAttribute::Other(nla) if nla.kind() & NLA_TYPE_MASK == CTA_ZONE => {
                zone = u16::from_be_bytes(value(nla)?);
            }
            _ => {}
        }
    }
    let ((protocol, orig), (_, reply)) = (orig?, reply?);
    Some(Entry {
        protocol,
        orig,
        reply,
        status,
        tcp_state: tcp,
        timeout_s,
        mark,
        zone,
    })
}

/// `CTA_TUPLE_ORIG`/`CTA_TUPLE_REPLY`: the protocol number and the addresses and ports.
fn tuple(nested: &[CtTuple]) -> Option<(u8, Tuple)> {
    let (mut src, mut dst, mut protocol) = (None, None, None);
    let (mut sport, mut dport) = (0, 0);
    for part in nested {
        match part {
            CtTuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            CtTuple::Proto(protos) => {
                for proto in protos {
                    match proto {
                        ProtoTuple::Protocol(p) => protocol = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(p) => sport = *p,
                        ProtoTuple::DestinationPort(p) => dport = *p,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        protocol?,
        Tuple {
            src: src?,
            dst: dst?,
            sport,
            dport,
        },
    ))
}

fn tcp_state(info: &[ProtoInfo]) -> Option<u8> {
    info.iter().find_map(|i| match i {
        ProtoInfo::TCP(tcp) => tcp.iter().find_map(|t| match t {
            ProtoInfoTCP::State(state) => Some(*state),
            _ => None,
        }),
        _ => None,
    })
}

/// The value of an attribute the crate left undecoded, when it has exactly `N` bytes.
pub(super) fn value<const N: usize>(nla: &DefaultNla) -> Option<[u8; N]> {
    let mut bytes = [0; N];
    (nla.value_len() == N).then(|| nla.emit_value(&mut bytes))?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use netlink_packet_netfilter::conntrack::Protocol;

    use super::*;

    #[test]
    fn entry_without_reply_tuple_is_rejected() {
        let orig = CtTuple::Proto(vec![ProtoTuple::Protocol(Protocol::Tcp)]);
        let ip = CtTuple::Ip(vec![
            IPTuple::SourceAddress("198.18.0.1".parse().unwrap()),
            IPTuple::DestinationAddress("198.18.0.2".parse().unwrap()),
        ]);
        let full = vec![ip, orig];
        assert!(entry(&[ConntrackAttribute::CtaTupleOrig(full.clone())]).is_none());
        let both = [
            ConntrackAttribute::CtaTupleOrig(full.clone()),
            ConntrackAttribute::CtaTupleReply(full),
        ];
        let e = entry(&both).unwrap();
        assert_eq!((e.protocol, e.orig.sport, e.tcp_state), (6, 0, None));
    }
}
