//! The host's NAT, read at its own rates: the audit (MASQUERADE rules, a fork of
//! `iptables-save`) at start and then every minute, the leak watch on the uplinks it names,
//! and the translations of the flows a window follows, each looked up in the host's conntrack
//! table by its tuple. The table is never dumped: its size (millions of entries on a NAT
//! gateway) must not decide the agent's memory or CPU; the flows that retransmit, drop or lose
//! time (bounded by the maps' caps) do.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use hashbrown::HashMap;

use crate::{
    attribute::{
        Attributor,
        nat::{Binding, NatIndex},
    },
    collect::{
        nat_leaks,
        netfilter::{self, NatAudit},
    },
    conntrack::{ConntrackError, Lookups},
    kernel::probes::Probes,
    model::NatPair,
};

/// The audit runs this often in a long-running agent, not every pass.
const AUDIT_EVERY: Duration = Duration::from_secs(60);
/// A translation is checked again this often (a 4-tuple may come back with another port).
const RECHECK_FOUND: Duration = Duration::from_secs(300);
/// A flow without a translation is asked about again this often (its entry may come later).
const RECHECK_MISSING: Duration = Duration::from_secs(30);
/// What no window asked for in this long is forgotten.
const FORGET_UNUSED: Duration = Duration::from_secs(600);
/// Lookups per window at most (each a netlink round trip of a few microseconds); the rest
/// wait for the next window and are counted.
pub(crate) const MAX_LOOKUPS: usize = 4096;

/// A window with nothing to look up asks the table this often whether it answers (so a missing
/// `CAP_NET_ADMIN` is said also on a quiet host).
const PROBE_EVERY: Duration = Duration::from_secs(60);

/// A flow or packet as conntrack keys it: protocol, source, destination.
pub(crate) type NatKey = (u8, SocketAddr, SocketAddr);

/// What a lookup found for one key, and when.
#[derive(Clone, Copy, Debug)]
struct Cached {
    binding: Option<Binding>,
    checked: Instant,
    used: Instant,
}

pub(crate) struct NatSources {
    audit: NatAudit,
    audited: Instant,
    cache: HashMap<NatKey, Cached>,
    index: NatIndex,
    /// What `index` was built for: kept while the same flows want the same bindings.
    indexed: Vec<NatKey>,
    /// The last lookups' outcome: why the table could not be read.
    table_error: Option<String>,
    /// When the table was last asked for nothing in particular (see [`probe`]).
    probed: Option<Instant>,
    /// Lookups left for a later window because a window asked for more than [`MAX_LOOKUPS`].
    pub(crate) deferred: u64,
}

impl NatSources {
    /// Audits the host's NAT, then watches the uplinks for packets from the subnets it
    /// translates; a note when they cannot be watched. Runs before privileges are lowered.
    pub(crate) fn start(probes: &mut Probes) -> (Self, Option<String>) {
        let mut sources = Self {
            audit: NatAudit::default(),
            audited: Instant::now(),
            cache: HashMap::new(),
            index: NatIndex::default(),
            indexed: Vec::new(),
            table_error: None,
            probed: None,
            deferred: 0,
        };
        let note = sources.audit_and_watch(probes, true);
        (sources, note)
    }

    /// Audits again when the last audit is a minute old (or `now`), and lets the leak watch
    /// follow subnets and uplinks that appeared or went.
    pub(crate) fn audit_and_watch(&mut self, probes: &mut Probes, now: bool) -> Option<String> {
        if now || self.audited.elapsed() >= AUDIT_EVERY {
            self.audit = netfilter::audit();
            self.audited = Instant::now();
        }
        nat_leaks::watch(probes, &self.audit)
    }

    /// Looks up the translations of `wanted` (each flow or packet of a window, as its socket
    /// or the wire saw it) that are not known yet or are due a check, and indexes them.
    pub(crate) fn follow(&mut self, wanted: &[NatKey]) {
        let now = Instant::now();
        let looked_up = self.look_up(wanted, now);
        log::debug!(
            "NAT bindings: {} wanted, {:?} looked up",
            wanted.len(),
            looked_up
        );
        // No lookup changed a binding and the same flows want them: the index stands.
        let unchanged = matches!(looked_up, Ok(0)) && self.indexed == wanted;
        let asked = match looked_up {
            Ok(0)
                if self
                    .probed
                    .is_none_or(|t| now.saturating_duration_since(t) >= PROBE_EVERY) =>
            {
                self.probed = Some(now);
                Some(probe())
            }
            Ok(0) => None,
            Ok(_) => Some(Ok(())),
            Err(e) => Some(Err(e)),
        };
        if let Some(result) = asked {
            self.table_error = result.err().map(|e| e.to_string());
        }
        self.cache
            .retain(|_, c| now.saturating_duration_since(c.used) < FORGET_UNUSED);
        if unchanged {
            return;
        }
        let cache = &self.cache;
        self.index = NatIndex::new(wanted.iter().filter_map(|k| cache.get(k)?.binding));
        self.indexed = wanted.to_vec();
    }

    /// Looks up what is due; how many lookups reached the kernel.
    fn look_up(&mut self, wanted: &[NatKey], now: Instant) -> Result<usize, ConntrackError> {
        let mut lookups: Option<Lookups> = None;
        let mut done = 0;
        for key in wanted {
            if let Some(cached) = self.cache.get_mut(key) {
                cached.used = now;
                let every = if cached.binding.is_some() {
                    RECHECK_FOUND
                } else {
                    RECHECK_MISSING
                };
                if now.saturating_duration_since(cached.checked) < every {
                    continue;
                }
            }
            if done >= MAX_LOOKUPS {
                self.deferred += 1;
                continue;
            }
            let socket = match &mut lookups {
                Some(socket) => socket,
                None => lookups.insert(Lookups::open()?),
            };
            let binding = binding(socket, *key)?;
            done += 1;
            self.cache.insert(
                *key,
                Cached {
                    binding,
                    checked: now,
                    used: now,
                },
            );
        }
        Ok(done)
    }

    /// Why the last lookups failed (`None`: they worked, or none was needed).
    pub(crate) fn table_error(&self) -> Option<&str> {
        self.table_error.as_deref()
    }

    pub(crate) fn audit(&self) -> &NatAudit {
        &self.audit
    }

    pub(crate) fn index(&self) -> &NatIndex {
        &self.index
    }

    /// Each workload address the table translates, and what to.
    pub(crate) fn pairs(&self, attributor: &mut Attributor) -> Vec<NatPair> {
        let mut pairs: Vec<NatPair> = self
            .index
            .bindings()
            .filter(|b| b.local.ip() != b.nat_local.ip())
            .filter_map(|b| {
                let netns = attributor.netns_of_address(b.local.ip())?;
                Some(NatPair {
                    workload: attributor.workload(netns, 0).name.to_string(),
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

/// The translation of a flow or packet `src -> dst`: its entry has the tuple as it is (a
/// flow as its socket sees it, a packet before NAT going out or after it coming in) or
/// reversed (a packet after NAT going out, or before it coming in). `None` when the entry is
/// not translated or there is none.
fn binding(
    lookups: &mut Lookups,
    (protocol, src, dst): NatKey,
) -> Result<Option<Binding>, ConntrackError> {
    for (a, b) in [(src, dst), (dst, src)] {
        if let Some(entry) = lookups.get(protocol, a, b)? {
            return Ok(netfilter::binding(&entry));
        }
    }
    Ok(None)
}

/// One lookup of a tuple no connection has (unspecified addresses, port 0): `Ok` when the
/// table answers, the reason when it refuses (no `CAP_NET_ADMIN`, no ctnetlink).
fn probe() -> Result<(), ConntrackError> {
    let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
    Lookups::open()?.get(6, nowhere, nowhere).map(drop)
}
