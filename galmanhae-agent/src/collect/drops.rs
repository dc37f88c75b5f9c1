//! Reads the drop maps the `skb:kfree_skb` program fills (`galmanhae-ebpf/src/drop.rs`); the
//! kernel names their reasons ([`crate::kernel::drop_reasons`]) and locations (kallsyms).

use aya::Ebpf;
use galmanhae_common::drop::{DropKey, DropSiteKey};

use super::maps::{Counts, ReadError, counts_since, read_counts, read_hash};

/// Cumulative drop counts since the programs were loaded.
#[derive(Clone, Debug, Default)]
pub(crate) struct DropSample {
    pub(crate) flows: Counts<DropKey>,
    /// Counted per site only, because `DROPS` was full.
    pub(crate) overflow: Counts<DropSiteKey>,
}

impl DropSample {
    #[must_use]
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        Self {
            flows: counts_since(&self.flows, &earlier.flows),
            overflow: counts_since(&self.overflow, &earlier.overflow),
        }
    }
}

pub(crate) fn read(ebpf: &Ebpf) -> Result<DropSample, ReadError> {
    Ok(DropSample {
        flows: read_hash(ebpf, "DROPS", |n: &u64| *n)?,
        overflow: read_counts(ebpf, "DROP_OVERFLOW")?,
    })
}

#[cfg(test)]
mod tests {
    use hashbrown::HashMap;

    use super::*;

    #[test]
    fn since_keeps_only_what_changed() {
        let key = DropSiteKey {
            netns: 1,
            reason: 12,
            location: 0xffff_ffff_8100_0000,
        };
        let before = DropSample {
            flows: HashMap::new(),
            overflow: HashMap::from([(key, 5)]),
        };
        let after = DropSample {
            flows: HashMap::new(),
            overflow: HashMap::from([(key, 9)]),
        };
        assert_eq!(after.since(&before).overflow.get(&key), Some(&4));
        assert!(before.since(&before).overflow.is_empty());
    }
}
