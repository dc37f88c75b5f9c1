//! The local IP addresses of a network namespace, read through one of its processes:
//! `/proc/PID/net/fib_trie` (IPv4 `/32 host LOCAL` entries) and `/proc/PID/net/if_inet6`.
//! They name the owner of a packet dropped in the host namespace, where only addresses are
//! left to tell whose it was. Works for every runtime, not only Docker.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Non-loopback local addresses of `pid`'s namespace; empty if the process is gone.
pub(crate) fn local_addresses(pid: i32) -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/fib_trie")) {
        out.extend(parse_fib_trie(&text).into_iter().map(IpAddr::V4));
    }
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/if_inet6")) {
        out.extend(parse_if_inet6(&text).into_iter().map(IpAddr::V6));
    }
    out.retain(|a| !a.is_loopback());
    out.sort_unstable();
    out.dedup();
    out
}

/// `|-- 198.18.100.2` followed by `/32 host LOCAL`: an address of this namespace.
fn parse_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(address) = line.strip_prefix("|-- ") {
            last = address.parse().ok();
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(address) = last {
                out.push(address);
            }
        }
    }
    out
}

/// `fe800000000000000000000000000001 04 40 20 80 eth0`: 32 hex digits, then index, ...
fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|line| {
            let hex = line.split_whitespace().next()?;
            let bits = u128::from_str_radix(hex, 16).ok()?;
            let address = Ipv6Addr::from(bits);
            // Link-local addresses repeat across namespaces (fe80::/10): they name nobody.
            ((address.segments()[0] & 0xffc0) != 0xfe80).then_some(address)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_entries_of_the_fib_trie() {
        let trie = "Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 198.18.100.0/24 2 0 2
        |-- 198.18.100.0
           /24 link UNICAST
        |-- 198.18.100.2
           /32 host LOCAL
     |-- 198.18.100.255
        /32 link BROADCAST
Local:
        |-- 198.18.100.2
           /32 host LOCAL";
        assert_eq!(
            parse_fib_trie(trie),
            vec![Ipv4Addr::new(198, 18, 100, 2); 2]
        );
    }

    #[test]
    fn global_ipv6_addresses_only() {
        let text = "fe8000000000000000fc00fffe000001 04 40 20 80     eth0
20010002000001000000000000000002 04 40 00 80     eth0";
        assert_eq!(
            parse_if_inet6(text),
            vec!["2001:2:0:100::2".parse::<Ipv6Addr>().unwrap()]
        );
    }
}
