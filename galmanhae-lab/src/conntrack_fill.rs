//! `conntrack-fill`: a host conntrack table as large as a NAT gateway's or a busy Kubernetes
//! node's, without the traffic. Synthetic TCP entries are created over ctnetlink
//! (`IPCTNL_MSG_CT_NEW`, many per datagram, no acks) in a zone of their own, so no real packet
//! ever matches them; `fault clear` deletes that zone and restores `nf_conntrack_max`.
//! Their tuples are in 198.18.200.0/21 -> 198.19.200.1:5432, addresses of the lab's range.
//! <https://elixir.bootlin.com/linux/v6.18/source/include/uapi/linux/netfilter/nfnetlink_conntrack.h>

use std::{io, net::Ipv4Addr, os::fd::AsRawFd as _};

use anyhow::{Context as _, bail};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The zone every synthetic entry is in.
pub const FILL_ZONE: u16 = 4711;
/// Seconds the entries live if nobody clears them.
const TIMEOUT_S: u32 = 3600;
/// Ports per source address: 1024..61024.
const PORTS: u32 = 60_000;
/// Room left for real connections above the filled table.
const HEADROOM: u64 = 65_536;

const NETLINK_NETFILTER: i32 = 12;
/// `AF_NETLINK` and `AF_INET`, as `sockaddr_nl` and `struct nfgenmsg` hold them.
const AF_NETLINK: libc::sa_family_t = 16;
const AF_INET: u8 = 2;
/// `(NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW`.
const CT_NEW: u16 = 1 << 8;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TIMEOUT: u16 = 7;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";

/// Adds `entries` entries to the host's table (raising `nf_conntrack_max` to hold them and
/// the real traffic); returns how many the table grew by.
pub fn fill(entries: u32) -> anyhow::Result<u64> {
    if entries == 0 || entries > 4 * PORTS * 256 {
        bail!("--entries must be between 1 and {}", 4 * PORTS * 256);
    }
    let before = count()?;
    crate::fault::raise_conntrack_max(before + u64::from(entries) + HEADROOM)?;
    let socket = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::RAW,
        Some(Protocol::from(NETLINK_NETFILTER)),
    )
    .context("a ctnetlink socket")?;
    // SAFETY: a zeroed sockaddr_nl (the kernel's own address, pid 0) of its true length.
    let kernel = unsafe {
        SockAddr::try_init(|storage, len| {
            let nl = storage.cast::<libc::sockaddr_nl>();
            (*nl).nl_family = AF_NETLINK;
            *len = libc::socklen_t::try_from(size_of::<libc::sockaddr_nl>()).unwrap_or(12);
            Ok(())
        })
    }
    .map(|((), addr)| addr)
    .context("the kernel's netlink address")?;
    let mut batch = Vec::with_capacity(64 * 1024);
    for i in 0..entries {
        batch.extend(message(i));
        if batch.len() > 60 * 1024 || i + 1 == entries {
            socket.send_to(&batch, &kernel).with_context(|| {
                format!("sending conntrack entries (fd {})", socket.as_raw_fd())
            })?;
            batch.clear();
        }
    }
    let grew = count()?.saturating_sub(before);
    if grew < u64::from(entries) * 9 / 10 {
        bail!(
            "the table grew by {grew}, not {entries}: {}",
            io::Error::last_os_error()
        );
    }
    Ok(grew)
}

/// Deletes the synthetic entries (`conntrack -D -w ZONE`); nothing to do when there are none.
pub fn clear() -> anyhow::Result<()> {
    // conntrack exits 1 when no entry matched: that is not a failure here.
    let _ = crate::run("conntrack", &["-D", "-w", &FILL_ZONE.to_string()]);
    Ok(())
}

fn count() -> anyhow::Result<u64> {
    std::fs::read_to_string(COUNT)
        .with_context(|| format!("reading {COUNT}"))?
        .trim()
        .parse()
        .with_context(|| format!("parsing {COUNT}"))
}

/// Entry `i`: 198.18.200.0 + i / PORTS, port 1024 + i % PORTS, to 198.19.200.1:5432.
fn message(i: u32) -> Vec<u8> {
    let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 200, 0)) + i / PORTS);
    let sport = u16::try_from(1024 + i % PORTS).unwrap_or(1024);
    let dst = Ipv4Addr::new(198, 19, 200, 1);
    let dport = 5432;
    let mut body = vec![AF_INET, 0, 0, 0]; // struct nfgenmsg
    nested(&mut body, CTA_TUPLE_ORIG, &tuple(src, dst, sport, dport));
    nested(&mut body, CTA_TUPLE_REPLY, &tuple(dst, src, dport, sport));
    attr(&mut body, CTA_TIMEOUT, &TIMEOUT_S.to_be_bytes());
    attr(&mut body, CTA_ZONE, &FILL_ZONE.to_be_bytes());
    let len = u32::try_from(16 + body.len()).unwrap_or(u32::MAX);
    let mut message = Vec::with_capacity(body.len() + 16);
    message.extend(len.to_ne_bytes());
    message.extend(CT_NEW.to_ne_bytes());
    message.extend((NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL).to_ne_bytes());
    message.extend(i.to_ne_bytes()); // sequence
    message.extend(0u32.to_ne_bytes()); // port id: the kernel fills it in
    message.extend(body);
    message
}

fn tuple(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut ip = Vec::new();
    attr(&mut ip, CTA_IP_V4_SRC, &src.octets());
    attr(&mut ip, CTA_IP_V4_DST, &dst.octets());
    let mut proto = Vec::new();
    attr(&mut proto, CTA_PROTO_NUM, &[6]);
    attr(&mut proto, CTA_PROTO_SRC_PORT, &sport.to_be_bytes());
    attr(&mut proto, CTA_PROTO_DST_PORT, &dport.to_be_bytes());
    let mut out = Vec::new();
    nested(&mut out, CTA_TUPLE_IP, &ip);
    nested(&mut out, CTA_TUPLE_PROTO, &proto);
    out
}

fn nested(out: &mut Vec<u8>, kind: u16, inner: &[u8]) {
    attr(out, kind | NLA_F_NESTED, inner);
}

/// One netlink attribute, padded to 4 bytes.
fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
    out.extend(len.to_ne_bytes());
    out.extend(kind.to_ne_bytes());
    out.extend(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_distinct_tuples_in_the_lab_range() {
        let first = message(0);
        let last = message(PORTS * 4 + 7);
        assert_eq!(first.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(first[..4].try_into().expect("4 bytes")) as usize,
            first.len()
        );
        assert_ne!(first, last);
        // 198.18.200.0 and 198.18.200.4 as the original source, big-endian on the wire.
        let src = |m: &[u8]| {
            m.windows(4)
                .position(|w| w[..3] == [198, 18, 200])
                .map(|p| m[p + 3])
        };
        assert_eq!(src(&first), Some(0));
        assert_eq!(src(&last), Some(4));
        assert!(fill(0).is_err());
    }
}
