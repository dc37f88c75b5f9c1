//! Conntrack of one namespace over a window, and how namespaces are named.

use crate::conntrack::Stats;

/// A network namespace as the report names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Namespace {
    Host,
    /// A workload's namespace, by the workload's name.
    Workload(String),
    /// A namespace the kernel did not name (inode 0).
    Unknown,
}

impl Namespace {
    pub(crate) fn name(&self) -> &str {
        match self {
            Self::Host => "host",
            Self::Workload(name) => name,
            Self::Unknown => "unknown namespace",
        }
    }
}

/// Table fill at the end of the window, event counters' growth over it.
#[derive(Clone, Debug)]
pub(crate) struct Conntrack {
    pub(crate) namespace: Namespace,
    pub(crate) netns: u32,
    pub(crate) stats: Stats,
}

impl Conntrack {
    /// Worth showing: the table holds entries, or an event counter grew.
    pub(crate) fn busy(&self) -> bool {
        self.stats.entries.unwrap_or(0) > 0 || self.stats.events().iter().any(|(_, n)| *n > 0)
    }

    /// Entries over the limit; 0 when either is unknown.
    pub(crate) fn fill(&self) -> f64 {
        match (self.stats.entries, self.stats.max) {
            #[expect(clippy::cast_precision_loss, reason = "a fill ratio")]
            (Some(entries), Some(max)) if max > 0 => entries as f64 / max as f64,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::conntrack;

    #[test]
    fn a_namespace_is_busy_with_entries_or_any_event() {
        let idle = conntrack(Namespace::Host, 0, 1000);
        assert!(!idle.busy());
        assert!(conntrack(Namespace::Host, 1, 1000).busy());
        let mut restarts = idle.clone();
        restarts.stats.search_restart = 1;
        assert!(restarts.busy());
        let mut found = idle;
        // Lookups that found an entry are no event.
        found.stats.found = 9;
        assert!(!found.busy());
        assert!((conntrack(Namespace::Host, 900, 1000).fill() - 0.9).abs() < 1e-12);
        assert!(conntrack(Namespace::Host, 900, 0).fill().abs() < f64::EPSILON);
    }
}
