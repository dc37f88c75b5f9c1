//! Kernel text addresses to function names, from `/proc/kallsyms` (addresses are visible to
//! root; with `kptr_restrict` they read as zero and locations stay numeric).
//!
//! The file has ~200k lines; rather than keep it in memory, each lookup of new addresses scans
//! it once and the answers are cached.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
};

pub const KALLSYMS: &str = "/proc/kallsyms";

#[derive(Debug, Default)]
pub struct Symbolizer {
    /// `None` for an address kallsyms did not name.
    cache: HashMap<u64, Option<String>>,
}

impl Symbolizer {
    /// Names every address in `addresses` not seen before (one scan of kallsyms for all).
    pub fn learn(&mut self, addresses: impl IntoIterator<Item = u64>) {
        let mut wanted: Vec<u64> = addresses
            .into_iter()
            .filter(|a| !self.cache.contains_key(a))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return;
        }
        let named = match std::fs::File::open(KALLSYMS) {
            Ok(file) => {
                nearest_symbols(BufReader::new(file).lines().map_while(Result::ok), &wanted)
            }
            Err(e) => {
                log::debug!("{KALLSYMS}: {e}");
                HashMap::new()
            }
        };
        for address in wanted {
            self.cache.insert(address, named.get(&address).cloned());
        }
    }

    /// The function containing `address` (after [`Self::learn`]), else the address in hex.
    pub fn name(&self, address: u64) -> String {
        self.resolved(address)
            .map_or_else(|| format!("{address:#x}"), str::to_owned)
    }

    /// The function containing `address`, if kallsyms named it (it shows no addresses without
    /// `CAP_SYSLOG`).
    pub fn resolved(&self, address: u64) -> Option<&str> {
        self.cache.get(&address).and_then(Option::as_deref)
    }
}

/// For each sorted address, the text symbol with the greatest start at or below it.
fn nearest_symbols(lines: impl Iterator<Item = String>, wanted: &[u64]) -> HashMap<u64, String> {
    let mut best: Vec<Option<(u64, String)>> = vec![None; wanted.len()];
    for line in lines {
        let mut parts = line.split_whitespace();
        let (Some(address), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !matches!(kind, "t" | "T") {
            continue;
        }
        let Ok(start) = u64::from_str_radix(address, 16) else {
            continue;
        };
        if start == 0 {
            continue;
        }
        // Addresses at or above `start`: those this symbol may contain.
        let first = wanted.partition_point(|w| *w < start);
        for (slot, _) in best.iter_mut().zip(wanted).skip(first) {
            if slot.as_ref().is_none_or(|(s, _)| start > *s) {
                *slot = Some((start, name.to_owned()));
            }
        }
    }
    wanted
        .iter()
        .zip(best)
        .filter_map(|(address, found)| found.map(|(_, name)| (*address, name)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_text_symbol_below_each_address() {
        let kallsyms = "ffffffff81000000 T _stext
ffffffff81a00000 t nf_hook_slow
ffffffff81a00400 D some_data
ffffffff81b00000 T ip_forward
ffffffff81b00800 t ip_forward_finish [vmlinux]";
        let wanted = [0xffff_ffff_81a0_0123, 0xffff_ffff_81b0_0900, 0x10];
        let named = nearest_symbols(kallsyms.lines().map(str::to_owned), &{
            let mut w = wanted;
            w.sort_unstable();
            w
        });
        assert_eq!(named[&0xffff_ffff_81a0_0123], "nf_hook_slow");
        assert_eq!(named[&0xffff_ffff_81b0_0900], "ip_forward_finish");
        assert!(!named.contains_key(&0x10));
    }
}
