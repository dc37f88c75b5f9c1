//! The agent's own health as the alert contract sees it (`deploy/METRICS.md`, "Health"):
//! every hook and user-space source with whether it is required and what became of it. An
//! optional source, or one that is off by configuration or has nothing to watch, is told
//! apart from a broken one, so that no alert is pending on a healthy host.

use prometheus_client::encoding::EncodeLabelSet;

use crate::kernel::probes::{Hook, HookStatus};

/// What became of a user-space source on the last pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SourceState {
    Ok,
    /// It was asked and failed (the log says why).
    Failed,
    /// Not asked: off by configuration, or absent from this host by design (no Docker socket,
    /// no iptables tools, `kernel.bpf_stats_enabled=0`).
    Off,
}

impl SourceState {
    #[must_use]
    pub(crate) const fn worked(ok: bool) -> Self {
        if ok { Self::Ok } else { Self::Failed }
    }

    const fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Off => "off",
        }
    }
}

/// Every user-space source, and whether a core count or label is missing without it (the
/// optional ones only add names, locations or the programs' own cost).
pub(crate) const COLLECTORS: [(&str, bool); 8] = [
    ("maps", true),
    ("snmp", true),
    ("conntrack", true),
    ("nat_table", true),
    ("nat_rules", false),
    ("docker", false),
    ("kallsyms", false),
    ("bpf_stats", false),
];

fn required(collector: &str) -> bool {
    COLLECTORS
        .iter()
        .any(|(name, required)| *name == collector && *required)
}

const fn flag(required: bool) -> &'static str {
    if required { "true" } else { "false" }
}

/// `galmanhae_hook_up{hook, kind, status, required}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct HookLabels {
    pub(crate) hook: String,
    pub(crate) kind: &'static str,
    pub(crate) status: &'static str,
    pub(crate) required: &'static str,
}

impl HookLabels {
    #[must_use]
    pub(crate) fn of(hook: &Hook) -> Self {
        Self {
            hook: hook.name.clone(),
            kind: hook.kind,
            status: hook.status.label(),
            required: flag(hook.required && hook.status != HookStatus::Off),
        }
    }
}

/// `galmanhae_collector_up{collector, status, required}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct CollectorLabels {
    pub(crate) collector: &'static str,
    pub(crate) status: &'static str,
    pub(crate) required: &'static str,
}

impl CollectorLabels {
    #[must_use]
    pub(crate) fn of(collector: &'static str, state: SourceState) -> Self {
        Self {
            collector,
            status: state.label(),
            required: flag(required(collector)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(status: HookStatus, required: bool) -> Hook {
        Hook {
            name: "tc egress (uplinks)".to_owned(),
            kind: "tc",
            status,
            required,
            detail: String::new(),
            program: "nat_leak_egress",
        }
    }

    #[test]
    fn a_hook_that_is_off_is_never_required() {
        let off = HookLabels::of(&hook(HookStatus::Off, true));
        assert_eq!((off.status, off.required), ("off", "false"));
        let failed = HookLabels::of(&hook(HookStatus::Failed, true));
        assert_eq!((failed.status, failed.required), ("failed", "true"));
        let optional = HookLabels::of(&hook(HookStatus::Unavailable, false));
        assert_eq!(
            (optional.status, optional.required),
            ("unavailable", "false")
        );
    }

    #[test]
    fn the_core_sources_are_required_and_the_others_optional() {
        for core in ["maps", "snmp", "conntrack", "nat_table"] {
            assert_eq!(CollectorLabels::of(core, SourceState::Ok).required, "true");
        }
        for optional in ["nat_rules", "docker", "kallsyms", "bpf_stats"] {
            let labels = CollectorLabels::of(optional, SourceState::Off);
            assert_eq!((labels.required, labels.status), ("false", "off"));
        }
        assert_eq!(
            CollectorLabels::of("nonesuch", SourceState::Ok).required,
            "false"
        );
        assert_eq!(SourceState::worked(false).label(), "failed");
    }
}
