//! Gives back, once the programs are attached, every capability the rest of a run does not
//! use: loading, attaching, mounting and `BPF_ENABLE_STATS` are done, so `CAP_SYS_ADMIN`,
//! `CAP_PERFMON` and `CAP_SYS_RESOURCE` go, and everything else a root start holds.
//!
//! Started as root, the bounding set is lowered too, so that the tools the agent runs
//! (`iptables-save`) get no more than it keeps; started by the systemd unit, the ambient set
//! it was given shrinks to the same list.

use caps::{CapSet, Capability, CapsHashSet};

/// What a run uses after attach, and what for.
pub(crate) const KEPT: [(Capability, &str); 6] = [
    (
        Capability::CAP_BPF,
        "bpf() on the maps (refused without it where unprivileged BPF is off)",
    ),
    (
        Capability::CAP_NET_ADMIN,
        "ctnetlink (conntrack statistics and NAT table), nftables rules, the NAT-leak watch's tc \
         links",
    ),
    (
        Capability::CAP_SYS_PTRACE,
        "/proc/PID/ns/net of processes of other users or with more capabilities, only where \
         the task iterator (Linux 5.8+, BTF) is unavailable",
    ),
    (
        Capability::CAP_DAC_READ_SEARCH,
        "/proc/PID files of other users, /run/docker/netns, /var/log/pods",
    ),
    (
        Capability::CAP_SYSLOG,
        "real addresses in /proc/kallsyms (drop locations)",
    ),
    (
        Capability::CAP_NET_RAW,
        "iptables-legacy-save, only where legacy iptables tables exist",
    ),
];

/// The effective set before and after, as `/proc/PID/status` shows it (`CapEff`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub(crate) before: u64,
    pub(crate) after: u64,
}

/// What a run needs besides the capabilities every run keeps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Needs {
    /// Legacy iptables nat tables exist: `CAP_NET_RAW` for `iptables-legacy-save`.
    pub(crate) legacy_iptables: bool,
    /// No task iterator: `/proc/PID/ns/net` of other processes, behind a ptrace check.
    pub(crate) proc_namespaces: bool,
}

impl Needs {
    fn keeps(self, cap: Capability) -> bool {
        match cap {
            Capability::CAP_NET_RAW => self.legacy_iptables,
            Capability::CAP_SYS_PTRACE => self.proc_namespaces,
            _ => true,
        }
    }
}

/// Lowers the effective, permitted, inheritable, ambient and (with `CAP_SETPCAP`) bounding
/// sets to [`KEPT`], less what `needs` says this run can do without.
pub(crate) fn drop_unused(needs: Needs) -> Result<Dropped, caps::errors::CapsError> {
    let before = caps::read(None, CapSet::Effective)?;
    let keep: CapsHashSet = KEPT
        .iter()
        .map(|(cap, _)| *cap)
        .filter(|cap| needs.keeps(*cap))
        .collect();
    if before.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::read(None, CapSet::Bounding)?.difference(&keep) {
            caps::drop(None, CapSet::Bounding, *cap)?;
        }
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        let kept: CapsHashSet = caps::read(None, set)?
            .intersection(&keep)
            .copied()
            .collect();
        caps::set(None, set, &kept)?;
    }
    let after = caps::read(None, CapSet::Effective)?;
    Ok(Dropped {
        before: mask(&before),
        after: mask(&after),
    })
}

/// Whether the host has legacy iptables tables (the ones `iptables-legacy-save` reads).
#[must_use]
pub(crate) fn legacy_iptables() -> bool {
    ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"]
        .iter()
        .any(|path| {
            std::fs::read_to_string(path).is_ok_and(|names| names.lines().any(|n| n == "nat"))
        })
}

#[must_use]
pub(crate) fn mask(set: &CapsHashSet) -> u64 {
    set.iter().fold(0, |m, cap| m | cap.bitmask())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptrace_and_raw_sockets_are_kept_only_where_needed() {
        let with_iterator = Needs {
            legacy_iptables: false,
            proc_namespaces: false,
        };
        assert!(!with_iterator.keeps(Capability::CAP_SYS_PTRACE));
        assert!(!with_iterator.keeps(Capability::CAP_NET_RAW));
        assert!(with_iterator.keeps(Capability::CAP_BPF));
        let without = Needs {
            legacy_iptables: true,
            proc_namespaces: true,
        };
        assert!(without.keeps(Capability::CAP_SYS_PTRACE));
        assert!(without.keeps(Capability::CAP_NET_RAW));
    }

    #[test]
    fn never_keeps_what_only_loading_needs() {
        let kept: CapsHashSet = KEPT.iter().map(|(cap, _)| *cap).collect();
        for gone in [
            Capability::CAP_SYS_ADMIN,
            Capability::CAP_PERFMON,
            Capability::CAP_SYS_RESOURCE,
            Capability::CAP_SETPCAP,
            Capability::CAP_DAC_OVERRIDE,
        ] {
            assert!(!kept.contains(&gone), "{gone} is kept");
        }
        // CAP_NET_ADMIN is bit 12 and CAP_BPF bit 39, as /proc/PID/status counts them.
        let both: CapsHashSet = [Capability::CAP_NET_ADMIN, Capability::CAP_BPF].into();
        assert_eq!(mask(&both), (1 << 12) | (1 << 39));
    }
}
