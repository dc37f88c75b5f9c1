//! The conntrack table, dumped over ctnetlink (`IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`). The
//! agent never dumps a table (it looks flows up by tuple, [`super::lookup`]): the root test
//! compares its lookups against a dump, and the decoding tests read a captured one.

use netlink_packet_netfilter::conntrack::ConntrackMessage;

use super::{
    ConntrackError, Entry,
    entry::entry,
    netlink::{self, IPCTNL_MSG_CT_GET, Replies, Request},
};

/// A dump: the entries, and how many the decoder could not read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Table {
    pub(crate) entries: Vec<Entry>,
    /// Entries skipped: malformed, or missing a tuple.
    pub(crate) skipped: usize,
}

/// The conntrack table of the calling thread's network namespace, IPv4 and IPv6.
pub(crate) fn dump_table() -> Result<Table, ConntrackError> {
    netlink::request(Request {
        message_type: IPCTNL_MSG_CT_GET,
        dump: true,
        what: "dumping the conntrack table",
    })
    .map(|replies| table(&replies))
}

/// [`dump_table`]'s entries; skipped entries are logged.
pub(crate) fn dump() -> Result<Vec<Entry>, ConntrackError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{IPS_ASSURED, IPS_DST_NAT, IPS_SEEN_REPLY, IPS_SRC_NAT, Tuple};

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
}
