//! Whose the untranslated packets counted on the uplinks were (`nat_leak`).

use std::{collections::BTreeMap, net::SocketAddr};

use galmanhae_common::{drop::IPPROTO_TCP, leak::LeakKey};

use crate::{
    addr::{self, ip},
    attribute::Attributor,
    collect::nat_leaks::LeakSample,
    model::{Leak, LeakOwner},
};

/// Untranslated packets per workload and uplink, with a few example flows each, most first.
pub(crate) fn attribute(
    delta: &LeakSample,
    attributor: &mut Attributor,
    uplinks: &BTreeMap<u32, String>,
) -> Vec<Leak> {
    let mut by_owner: BTreeMap<(String, String), Leak> = BTreeMap::new();
    let mut keys: Vec<(&LeakKey, &u64)> = delta.iter().collect();
    keys.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (key, packets) in keys {
        let source = ip(key.src_addr);
        let owner = attributor
            .netns_of_address(source)
            .map_or(LeakOwner::Unowned(source), |netns| {
                LeakOwner::Workload(attributor.workload(netns, 0).name.to_string())
            });
        let interface = uplinks
            .get(&key.ifindex)
            .cloned()
            .unwrap_or_else(|| format!("ifindex {}", key.ifindex));
        let leak = by_owner
            .entry((owner.to_string(), interface.clone()))
            .or_insert_with(|| Leak {
                owner,
                interface,
                packets: 0,
                examples: Vec::new(),
            });
        leak.packets += packets;
        if leak.examples.len() < 5 {
            leak.examples.push(describe(key));
        }
    }
    let mut out: Vec<Leak> = by_owner.into_values().collect();
    out.sort_by(|a, b| {
        b.packets
            .cmp(&a.packets)
            .then_with(|| a.owner.to_string().cmp(&b.owner.to_string()))
    });
    out
}

fn describe(key: &LeakKey) -> String {
    let packet = addr::describe(
        key.protocol,
        SocketAddr::new(ip(key.src_addr), key.src_port),
        SocketAddr::new(ip(key.dst_addr), key.dst_port),
    );
    if key.protocol == IPPROTO_TCP {
        format!("{packet} flags {}", tcp_flags(key.tcp_flags))
    } else {
        packet
    }
}

/// `SYN|FIN`-style names of the flags set.
fn tcp_flags(flags: u8) -> String {
    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    let set: Vec<&str> = NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| flags & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect();
    if set.is_empty() {
        "none".to_owned()
    } else {
        set.join("|")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_flags() {
        assert_eq!(tcp_flags(0x03), "FIN|SYN");
        assert_eq!(tcp_flags(0x12), "SYN|ACK");
        assert_eq!(tcp_flags(0), "none");
    }
}
