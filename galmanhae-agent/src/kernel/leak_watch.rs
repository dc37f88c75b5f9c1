//! The NAT-leak watch: the tc egress program on each uplink and the translated subnets it
//! checks sources against. It follows the host: subnets and uplinks that appear later (an
//! agent started before Docker, a new network, an interface brought up) are added, those that
//! go are removed, each time the agent asks with the current lists.

use std::{collections::BTreeMap, fmt::Write as _};

use aya::{
    Ebpf,
    maps::lpm_trie::{Key, LpmTrie},
    programs::{SchedClassifier, TcAttachType, tc::SchedClassifierLinkId},
};
use galmanhae_common::leak::V4_MAPPED_PREFIX;
use ipnet::IpNet;

use super::probes::{Hook, HookStatus};

pub(crate) const NAT_LEAK_PROGRAM: &str = "nat_leak_egress";

/// The translated subnets and the uplinks (ifindex, name) the watch is asked to cover.
type Wanted = (Vec<IpNet>, Vec<(u32, String)>);

/// What is watched now, and what was last asked for.
#[derive(Debug, Default)]
pub(crate) struct LeakWatch {
    /// The last lists asked for: asking again with the same changes nothing (an uplink that
    /// failed to attach is not retried every pass).
    wanted: Option<Wanted>,
    subnets: Vec<IpNet>,
    links: BTreeMap<u32, (String, SchedClassifierLinkId)>,
    /// Interfaces (ifindex, name) where the agent added a clsact qdisc, removed on drop.
    pub(crate) added_clsact: Vec<(u32, String)>,
}

impl LeakWatch {
    /// The uplinks watched now, by ifindex.
    pub(crate) fn uplinks(&self) -> BTreeMap<u32, String> {
        self.links
            .iter()
            .map(|(ifindex, (name, _))| (*ifindex, name.clone()))
            .collect()
    }

    /// Makes the watch match `subnets` and `uplinks`; the hook that says what it is now, or
    /// `None` when they are what was asked for last time.
    pub(crate) fn update(
        &mut self,
        ebpf: &mut Ebpf,
        subnets: &[IpNet],
        uplinks: &[(u32, String)],
    ) -> Option<Hook> {
        let wanted = (subnets.to_vec(), uplinks.to_vec());
        if self.wanted.as_ref() == Some(&wanted) {
            return None;
        }
        self.wanted = Some(wanted);
        let mut hook = Hook {
            name: "tc egress (uplinks)".to_owned(),
            kind: "tc",
            status: HookStatus::Off,
            required: false,
            detail: String::new(),
            program: NAT_LEAK_PROGRAM,
        };
        let (subnets, uplinks): (&[IpNet], &[(u32, String)]) =
            if subnets.is_empty() || uplinks.is_empty() {
                hook.detail = if subnets.is_empty() {
                    "no MASQUERADE rule with a source subnet: nothing to leak".to_owned()
                } else {
                    "no uplink (an interface that is up, not a bridge or a bridge port)".to_owned()
                };
                (&[], &[])
            } else {
                hook.required = true;
                (subnets, uplinks)
            };
        let failures = match self.apply(ebpf, subnets, uplinks) {
            Ok(failures) => failures,
            Err(e) => {
                hook.status = HookStatus::Failed;
                hook.detail = super::probes::error_chain(e.as_ref());
                return Some(hook);
            }
        };
        if uplinks.is_empty() {
            return Some(hook);
        }
        let nets: Vec<String> = subnets.iter().map(ToString::to_string).collect();
        let names: Vec<String> = self.links.values().map(|(n, _)| n.clone()).collect();
        hook.status = if names.is_empty() {
            HookStatus::Failed
        } else {
            HookStatus::Attached
        };
        hook.detail = format!(
            "untranslated sources from {} leaving {}",
            nets.join(", "),
            if names.is_empty() {
                "no uplink".to_owned()
            } else {
                names.join(", ")
            }
        );
        if !self.added_clsact.is_empty() {
            hook.detail
                .push_str(" (no TCX before 6.6: a clsact qdisc added, removed on exit)");
        }
        for (name, error) in &failures {
            let _ = write!(hook.detail, "; {name}: {error}");
        }
        Some(hook)
    }

    /// Sets the subnets, then attaches to new uplinks and detaches from gone ones; the
    /// uplinks that failed (name, why).
    fn apply(
        &mut self,
        ebpf: &mut Ebpf,
        subnets: &[IpNet],
        uplinks: &[(u32, String)],
    ) -> Result<Vec<(String, String)>, Box<dyn std::error::Error>> {
        let mut trie: LpmTrie<_, [u8; 16], u8> = LpmTrie::try_from(
            ebpf.map_mut("NATED_SUBNETS")
                .ok_or("map NATED_SUBNETS is missing from the eBPF object")?,
        )?;
        // New ones first: a packet from a subnet that stays is never unchecked.
        for net in subnets.iter().filter(|n| !self.subnets.contains(n)) {
            trie.insert(&trie_key(net), 1, 0)?;
        }
        for net in self.subnets.iter().filter(|n| !subnets.contains(n)) {
            trie.remove(&trie_key(net))?;
        }
        self.subnets = subnets.to_vec();
        let program: &mut SchedClassifier = ebpf
            .program_mut(NAT_LEAK_PROGRAM)
            .ok_or("program nat_leak_egress is missing from the eBPF object")?
            .try_into()?;
        if program.fd().is_err() {
            program.load()?;
        }
        let gone: Vec<u32> = self
            .links
            .keys()
            .filter(|ifindex| !uplinks.iter().any(|(i, _)| i == *ifindex))
            .copied()
            .collect();
        for ifindex in gone {
            if let Some((name, link)) = self.links.remove(&ifindex) {
                // An interface that vanished took its link with it.
                if let Err(e) = program.detach(link) {
                    log::debug!("{name}: detaching the NAT-leak watch: {e}");
                }
                log::info!("{name}: no longer an uplink, not watched");
            }
        }
        let mut failures = Vec::new();
        for (ifindex, name) in uplinks {
            if self.links.contains_key(ifindex) {
                continue;
            }
            match attach(program, *ifindex, name, &mut self.added_clsact) {
                Ok(link) => {
                    self.links.insert(*ifindex, (name.clone(), link));
                }
                Err(e) => failures.push((name.clone(), super::probes::error_chain(&e))),
            }
        }
        Ok(failures)
    }
}

/// An interface can vanish between the dump and here: the error says so. Before 6.6 (no TCX)
/// a classifier needs a clsact qdisc: one is added where the first attach fails for want of
/// it (adding fails harmlessly where one exists).
fn attach(
    program: &mut SchedClassifier,
    ifindex: u32,
    name: &str,
    added_clsact: &mut Vec<(u32, String)>,
) -> Result<SchedClassifierLinkId, aya::programs::ProgramError> {
    program.attach(name, TcAttachType::Egress).or_else(|first| {
        if aya::programs::tc::qdisc_add_clsact(name).is_ok() {
            log::info!("{name}: added a clsact qdisc for the NAT-leak watch");
            added_clsact.push((ifindex, name.to_owned()));
            program.attach(name, TcAttachType::Egress)
        } else {
            Err(first)
        }
    })
}

fn trie_key(net: &IpNet) -> Key<[u8; 16]> {
    match net {
        IpNet::V4(v4) => Key::new(
            u32::from(v4.prefix_len()) + V4_MAPPED_PREFIX,
            v4.network().to_ipv6_mapped().octets(),
        ),
        IpNet::V6(v6) => Key::new(u32::from(v6.prefix_len()), v6.network().octets()),
    }
}
