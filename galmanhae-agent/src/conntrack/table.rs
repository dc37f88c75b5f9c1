//! The conntrack table, dumped over ctnetlink (`IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`).
//!
//! `netlink-packet-netfilter` decodes the tuples, status, TCP state, timeout and mark; the
//! zone (`CTA_ZONE`, not decoded by the crate) is read here. Attribute layout:
//! <https://github.com/torvalds/linux/blob/master/include/uapi/linux/netfilter/nfnetlink_conntrack.h>.

use netlink_packet_core::{DefaultNla, NLA_TYPE_MASK, Nla as _};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple,
    Tuple as CtTuple,
};

use super::{
    ConntrackError, Entry, Tuple,
    netlink::{self, IPCTNL_MSG_CT_GET, Replies, Request},
};

/// `CTA_ZONE` of `enum ctattr_type`: a big-endian u16, sent only for a non-default zone.
const CTA_ZONE: u16 = 18;

/// A dump: the entries, and how many the decoder could not read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub entries: Vec<Entry>,
    /// Entries skipped: malformed, or missing a tuple.
    pub skipped: usize,
}

/// The conntrack table of the calling thread's network namespace, IPv4 and IPv6.
pub fn dump_table() -> Result<Table, ConntrackError> {
    netlink::request(Request {
        message_type: IPCTNL_MSG_CT_GET,
        dump: true,
        what: "dumping the conntrack table",
    })
    .map(|replies| table(&replies))
}

/// [`dump_table`]'s entries; skipped entries are logged.
pub fn dump() -> Result<Vec<Entry>, ConntrackError> {
    let table = dump_table()?;
    if table.skipped > 0 {
        log::warn!(
            "conntrack dump: skipped {} entries that could not be decoded",
            table.skipped
        );
    }
    Ok(table.entries)
}

fn table(replies: &Replies) -> Table {
    let mut table = Table {
        entries: Vec::with_capacity(replies.messages.len()),
        skipped: replies.undecodable,
    };
    for message in &replies.messages {
        match message {
            ConntrackMessage::Get(attributes) | ConntrackMessage::New(attributes) => {
                match entry(attributes) {
                    Some(entry) => table.entries.push(entry),
                    None => table.skipped += 1,
                }
            }
            _ => table.skipped += 1,
        }
    }
    table
}

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
    use crate::conntrack::{IPS_ASSURED, IPS_DST_NAT, IPS_SEEN_REPLY, IPS_SRC_NAT};

    /// A dump captured on this machine (6.18) in a test namespace: UDP in zone 7 with mark 42,
    /// TCP through DNAT, TCP over IPv6, ICMP echo, TCP through SNAT. `conntrack -L` showed:
    /// ```text
    /// udp 17 29 src=198.18.250.1 dst=198.18.250.2 sport=41000 dport=9999 [UNREPLIED]
    ///   src=198.18.250.2 dst=198.18.250.1 sport=9999 dport=41000 mark=42 zone=7
    /// tcp 6 431999 ESTABLISHED src=198.18.250.1 dst=198.18.250.100 sport=41000 dport=80
    ///   src=198.18.250.1 dst=198.18.250.1 sport=5432 dport=41000 [ASSURED] mark=0
    /// tcp 6 431999 ESTABLISHED src=2001:2::1 dst=2001:2::1 sport=41002 dport=5432
    ///   src=2001:2::1 dst=2001:2::1 sport=5432 dport=41002 [ASSURED] mark=0
    /// icmp 1 29 src=198.18.250.1 dst=198.18.250.2 type=8 code=0 id=4660
    ///   src=198.18.250.2 dst=198.18.250.1 type=0 code=0 id=4660 mark=0
    /// tcp 6 431999 ESTABLISHED src=198.18.250.1 dst=198.18.250.1 sport=41001 dport=5433
    ///   src=198.18.250.1 dst=198.18.250.2 sport=5433 dport=41001 [ASSURED] mark=0
    /// ```
    const DUMP: &[u8] = include_bytes!("testdata/dump.bin");
    const DUMP_DONE: &[u8] = include_bytes!("testdata/dump-done.bin");

    fn t(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
        Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport,
            dport,
        }
    }

    #[test]
    fn decodes_captured_dump() {
        let table = table(&netlink::tests::replies(&[DUMP, DUMP_DONE]));
        assert_eq!(table.skipped, 0);
        let e = &table.entries;
        assert_eq!(e.len(), 5, "{e:#?}");

        let summary: Vec<(u8, Tuple, Tuple, bool, bool)> = e
            .iter()
            .map(|e| (e.protocol, e.orig, e.reply, e.is_src_nat(), e.is_dst_nat()))
            .collect();
        let (a1, a2, a100) = ("198.18.250.1", "198.18.250.2", "198.18.250.100");
        assert_eq!(
            summary,
            [
                (
                    17,
                    t(a1, 41000, a2, 9999),
                    t(a2, 9999, a1, 41000),
                    false,
                    false
                ),
                (
                    6,
                    t(a1, 41000, a100, 80),
                    t(a1, 5432, a1, 41000),
                    false,
                    true
                ),
                (
                    6,
                    t("2001:2::1", 41002, "2001:2::1", 5432),
                    t("2001:2::1", 5432, "2001:2::1", 41002),
                    false,
                    false
                ),
                (1, t(a1, 0, a2, 0), t(a2, 0, a1, 0), false, false),
                (
                    6,
                    t(a1, 41001, a1, 5433),
                    t(a1, 5433, a2, 41001),
                    true,
                    false
                ),
            ]
        );

        assert_eq!((e[0].mark, e[0].zone, e[0].tcp_state), (42, 7, None));
        assert_eq!(e[0].status & IPS_SEEN_REPLY, 0, "UNREPLIED");
        assert!(e[0].timeout_s.is_some_and(|s| s <= 30));
        assert_eq!((e[1].mark, e[1].zone), (0, 0));
        assert_eq!(e[1].tcp_state_name(), Some("ESTABLISHED"));
        assert!(e[1].timeout_s.is_some_and(|s| s > 431_000));
        assert_eq!(e[1].status & IPS_ASSURED, IPS_ASSURED);
        assert_eq!(e[1].status & (IPS_SRC_NAT | IPS_DST_NAT), IPS_DST_NAT);
        // The SNAT-ed flow as the listener sees it.
        let (local, remote) = e[4].translated();
        assert_eq!(
            (local.to_string(), remote.to_string()),
            ("198.18.250.2:41001".into(), "198.18.250.1:5433".into())
        );
    }

    #[test]
    fn corrupt_entry_is_skipped_and_counted() {
        let mut dump = DUMP.to_vec();
        // The first message's first attribute (CTA_TUPLE_ORIG, after the 16-byte netlink and
        // 4-byte nfgenmsg headers) claims to run past the end of the message.
        dump[20] = 0xf0;
        let table = table(&netlink::tests::replies(&[&dump, DUMP_DONE]));
        assert_eq!((table.entries.len(), table.skipped), (4, 1));
        assert_eq!(table.entries[0].orig.dport, 80);
    }

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
