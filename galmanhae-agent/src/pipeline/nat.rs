//! The host's NAT, read at its own rates: the audit (MASQUERADE rules, a fork of
//! `iptables-save`) at start and then every minute, the leak watch on the uplinks it names,
//! and the translations of the conntrack table when a command asks for them.

use std::time::{Duration, Instant};

use crate::{
    attribute::{Attributor, nat::NatIndex},
    collect::{
        nat_leaks,
        netfilter::{self, NatAudit},
    },
    conntrack::ConntrackError,
    kernel::probes::Probes,
    model::NatPair,
};

/// The audit runs this often in a long-running agent, not every pass.
const AUDIT_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct NatSources {
    audit: NatAudit,
    audited: Instant,
    index: NatIndex,
}

impl NatSources {
    /// Audits the host's NAT, then watches the uplinks for packets from the subnets it
    /// translates; a note when they cannot be watched. Runs before privileges are lowered.
    pub fn start(probes: &mut Probes) -> (Self, Option<String>) {
        let mut sources = Self {
            audit: NatAudit::default(),
            audited: Instant::now(),
            index: NatIndex::default(),
        };
        let note = sources.audit_and_watch(probes, true);
        (sources, note)
    }

    /// Audits again when the last audit is a minute old (or `now`), and lets the leak watch
    /// follow subnets and uplinks that appeared or went.
    pub fn audit_and_watch(&mut self, probes: &mut Probes, now: bool) -> Option<String> {
        if now || self.audited.elapsed() >= AUDIT_EVERY {
            self.audit = netfilter::audit();
            self.audited = Instant::now();
        }
        nat_leaks::watch(probes, &self.audit)
    }

    /// Reads the translations of the host's conntrack table; on failure the last ones stay.
    pub fn read_table(&mut self) -> Result<(), ConntrackError> {
        self.index = netfilter::nat_index()?;
        Ok(())
    }

    pub fn audit(&self) -> &NatAudit {
        &self.audit
    }

    pub fn index(&self) -> &NatIndex {
        &self.index
    }

    /// Each workload address the table translates, and what to.
    pub fn pairs(&self, attributor: &mut Attributor) -> Vec<NatPair> {
        let mut pairs: Vec<NatPair> = self
            .index
            .bindings()
            .filter(|b| b.local.ip() != b.nat_local.ip())
            .filter_map(|b| {
                let netns = attributor.netns_of_address(b.local.ip())?;
                Some(NatPair {
                    workload: attributor.workload(netns, 0).name,
                    source: b.local.ip(),
                    translated: b.nat_local.ip(),
                })
            })
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        pairs
    }
}
