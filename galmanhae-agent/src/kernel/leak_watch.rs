//! The NAT-leak watch: the tc egress program on each uplink and the translated subnets it
//! checks sources against. It follows the host: subnets and uplinks that appear later (an
//! agent started before Docker, a new network, an interface brought up) are added, those that
//! go are removed, each time the agent asks with the current lists.

use std::{collections::BTreeMap, fmt::Write as _};

use aya::{
    Ebpf,
    maps::Array,
    programs::{SchedClassifier, TcAttachType, tc::SchedClassifierLinkId},
};
use galmanhae_common::leak::{NATED_V4_SLOTS, NATED_V6_SLOTS, NatedSubnets, Prefix4, Prefix6};
use ipnet::IpNet;

use super::probes::{Hook, HookStatus};

/// The program on Ethernet uplinks, which reads the source in place.
pub(crate) const NAT_LEAK_PROGRAM: &str = "nat_leak_egress";
/// The program on uplinks of other link types, which reads it through a helper.
pub(crate) const NAT_LEAK_OTHER: &str = "nat_leak_other";

/// An interface translated packets may leave through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Uplink {
    pub(crate) ifindex: u32,
    pub(crate) name: String,
    /// An Ethernet device (`ARPHRD_ETHER`): tc sees its frames from the MAC header on.
    pub(crate) ethernet: bool,
}

impl Uplink {
    fn program(&self) -> &'static str {
        if self.ethernet {
            NAT_LEAK_PROGRAM
        } else {
            NAT_LEAK_OTHER
        }
    }
}

/// The translated subnets and the uplinks the watch is asked to cover.
type Wanted = (Vec<IpNet>, Vec<Uplink>);

/// What is watched now, and what was last asked for.
#[derive(Debug, Default)]
pub(crate) struct LeakWatch {
    /// The last lists asked for: asking again with the same changes nothing (an uplink that
    /// failed to attach is not retried every pass).
    wanted: Option<Wanted>,
    /// Translated subnets beyond the program's slots, unwatched.
    unwatched: Vec<IpNet>,
    /// By ifindex: the name, the program attached and its link.
    links: BTreeMap<u32, (String, &'static str, SchedClassifierLinkId)>,
    /// Interfaces (ifindex, name) where the agent added a clsact qdisc, removed on drop.
    pub(crate) added_clsact: Vec<(u32, String)>,
}

impl LeakWatch {
    /// The uplinks watched now, by ifindex.
    pub(crate) fn uplinks(&self) -> BTreeMap<u32, String> {
        self.links
            .iter()
            .map(|(ifindex, (name, _, _))| (*ifindex, name.clone()))
            .collect()
    }

    /// Makes the watch match `subnets` and `uplinks`; the hook that says what it is now, or
    /// `None` when they are what was asked for last time.
    pub(crate) fn update(
        &mut self,
        ebpf: &mut Ebpf,
        subnets: &[IpNet],
        uplinks: &[Uplink],
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
        let (subnets, uplinks): (&[IpNet], &[Uplink]) = if subnets.is_empty() || uplinks.is_empty()
        {
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
        let names: Vec<String> = self.links.values().map(|(n, _, _)| n.clone()).collect();
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
        if !self.unwatched.is_empty() {
            let nets: Vec<String> = self.unwatched.iter().map(ToString::to_string).collect();
            let _ = write!(
                hook.detail,
                "; unwatched (more than {NATED_V4_SLOTS} IPv4 or {NATED_V6_SLOTS} IPv6 \
                 subnets): {}",
                nets.join(", ")
            );
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
        uplinks: &[Uplink],
    ) -> Result<Vec<(String, String)>, Box<dyn std::error::Error>> {
        let mut array: Array<_, NatedSubnets> = Array::try_from(
            ebpf.map_mut("NATED_SUBNETS")
                .ok_or("map NATED_SUBNETS is missing from the eBPF object")?,
        )?;
        let (value, unwatched) = nated_subnets(subnets);
        array.set(0, value, 0)?;
        self.unwatched = unwatched;
        let gone: Vec<u32> = self
            .links
            .iter()
            .filter(|(ifindex, (_, program, _))| {
                !uplinks
                    .iter()
                    .any(|u| u.ifindex == **ifindex && u.program() == *program)
            })
            .map(|(ifindex, _)| *ifindex)
            .collect();
        for ifindex in gone {
            if let Some((name, program, link)) = self.links.remove(&ifindex) {
                // An interface that vanished took its link with it.
                if let Err(e) = classifier(ebpf, program)?.detach(link) {
                    log::debug!("{name}: detaching the NAT-leak watch: {e}");
                }
                log::info!("{name}: no longer an uplink, not watched");
            }
        }
        let mut failures = Vec::new();
        for uplink in uplinks {
            if self.links.contains_key(&uplink.ifindex) {
                continue;
            }
            let program = classifier(ebpf, uplink.program())?;
            match attach(program, uplink, &mut self.added_clsact) {
                Ok(link) => {
                    self.links.insert(
                        uplink.ifindex,
                        (uplink.name.clone(), uplink.program(), link),
                    );
                }
                Err(e) => failures.push((uplink.name.clone(), super::probes::error_chain(&e))),
            }
        }
        Ok(failures)
    }
}

/// The classifier `name` of the object, loaded.
fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut SchedClassifier, Box<dyn std::error::Error>> {
    let program: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} is missing from the eBPF object"))?
        .try_into()?;
    if program.fd().is_err() {
        program.load()?;
    }
    Ok(program)
}

/// The prefixes as the program compares them, and those beyond its slots.
fn nated_subnets(subnets: &[IpNet]) -> (NatedSubnets, Vec<IpNet>) {
    let mut value = NatedSubnets::default();
    let mut unwatched = Vec::new();
    for net in subnets {
        match net {
            IpNet::V4(v4) => match value.v4.get_mut(value.v4_len as usize) {
                Some(slot) => {
                    let mask = u32::MAX
                        .checked_shl(32 - u32::from(v4.prefix_len()))
                        .unwrap_or(0);
                    *slot = Prefix4 {
                        network: u32::from_ne_bytes((v4.network().to_bits() & mask).to_be_bytes()),
                        mask: u32::from_ne_bytes(mask.to_be_bytes()),
                    };
                    value.v4_len += 1;
                }
                None => unwatched.push(*net),
            },
            IpNet::V6(v6) => match value.v6.get_mut(value.v6_len as usize) {
                Some(slot) => {
                    let mask = u128::MAX
                        .checked_shl(128 - u32::from(v6.prefix_len()))
                        .unwrap_or(0);
                    *slot = Prefix6 {
                        network: halves(v6.network().to_bits() & mask),
                        mask: halves(mask),
                    };
                    value.v6_len += 1;
                }
                None => unwatched.push(*net),
            },
        }
    }
    (value, unwatched)
}

/// A 128-bit value in packet byte order as two native `u64`s, as the program reads a source.
fn halves(bits: u128) -> [u64; 2] {
    let bytes = bits.to_be_bytes();
    let half = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
    [half(0), half(8)]
}

/// An interface can vanish between the dump and here: the error says so. Before 6.6 (no TCX)
/// a classifier needs a clsact qdisc: one is added where the first attach fails for want of
/// it (adding fails harmlessly where one exists).
fn attach(
    program: &mut SchedClassifier,
    uplink: &Uplink,
    added_clsact: &mut Vec<(u32, String)>,
) -> Result<SchedClassifierLinkId, aya::programs::ProgramError> {
    let (ifindex, name) = (uplink.ifindex, uplink.name.as_str());
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the program does: the source's bytes read natively, masked, compared.
    fn matches(value: &NatedSubnets, source: std::net::IpAddr) -> bool {
        match source {
            std::net::IpAddr::V4(v4) => {
                let source = u32::from_ne_bytes(v4.octets());
                value.v4[..value.v4_len as usize]
                    .iter()
                    .any(|p| source & p.mask == p.network)
            }
            std::net::IpAddr::V6(v6) => {
                let source = halves(v6.to_bits());
                value.v6[..value.v6_len as usize].iter().any(|p| {
                    source[0] & p.mask[0] == p.network[0] && source[1] & p.mask[1] == p.network[1]
                })
            }
        }
    }

    #[test]
    fn a_source_matches_exactly_the_prefixes_it_lies_in() {
        let nets: Vec<IpNet> = ["198.18.100.0/24", "198.19.0.0/16", "2001:2:0:100::/64"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        let (value, unwatched) = nated_subnets(&nets);
        assert!(unwatched.is_empty());
        assert_eq!((value.v4_len, value.v6_len), (2, 1));
        for (source, nated) in [
            ("198.18.100.2", true),
            ("198.18.101.2", false),
            ("198.19.255.255", true),
            ("198.20.0.1", false),
            ("2001:2:0:100::5", true),
            ("2001:2:0:101::5", false),
        ] {
            assert_eq!(matches(&value, source.parse().unwrap()), nated, "{source}");
        }
    }

    #[test]
    fn a_zero_length_prefix_matches_everything_and_host_routes_one_address() {
        let nets: Vec<IpNet> = ["0.0.0.0/0", "::/0"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        let (value, _) = nated_subnets(&nets);
        assert!(matches(&value, "203.0.113.9".parse().unwrap()));
        assert!(matches(&value, "2001:db8::1".parse().unwrap()));
        let (value, _) = nated_subnets(&["198.18.0.7/32".parse().unwrap()]);
        assert!(matches(&value, "198.18.0.7".parse().unwrap()));
        assert!(!matches(&value, "198.18.0.6".parse().unwrap()));
    }

    #[test]
    fn prefixes_beyond_the_slots_are_named_unwatched() {
        let nets: Vec<IpNet> = (0..NATED_V4_SLOTS + 2)
            .map(|i| format!("198.18.{i}.0/24").parse().unwrap())
            .collect();
        let (value, unwatched) = nated_subnets(&nets);
        assert_eq!(value.v4_len as usize, NATED_V4_SLOTS);
        assert_eq!(unwatched, nets[NATED_V4_SLOTS..]);
    }
}
