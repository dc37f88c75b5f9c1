//! Kernel text addresses to function names, from `/proc/kallsyms` (addresses are visible to
//! root; with `kptr_restrict` they read as zero and locations stay numeric).
//!
//! Each batch of addresses not seen before is named in one pass over the file, which keeps
//! only the names found: a table of every text symbol would hold ~5 MB for the agent's life,
//! for the few dozen places that drop packets. A read costs ~35 ms of kernel time (it formats
//! ~120k lines), once per pass that brings new drop locations; the set of places that drop is
//! small, so reads stop once they are all named. A read names modules loaded since the last.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
};

pub(crate) const KALLSYMS: &str = "/proc/kallsyms";

/// An address further than this above its nearest text symbol is in none we know.
const MAX_FUNCTION_SIZE: u64 = 1 << 20;

#[derive(Debug, Default)]
pub(crate) struct Symbolizer {
    /// `None` for an address kallsyms did not name.
    cache: HashMap<u64, Option<String>>,
}

impl Symbolizer {
    /// Names every address in `addresses` not seen before.
    pub(crate) fn learn(&mut self, addresses: impl IntoIterator<Item = u64>) {
        let mut new: Vec<u64> = addresses
            .into_iter()
            .filter(|address| !self.cache.contains_key(address))
            .collect();
        if new.is_empty() {
            return;
        }
        new.sort_unstable();
        new.dedup();
        let names = match std::fs::File::open(KALLSYMS) {
            Ok(file) => nearest_text_symbols(BufReader::new(file), &new),
            Err(e) => {
                log::debug!("{KALLSYMS}: {e}");
                vec![None; new.len()]
            }
        };
        self.cache.extend(new.into_iter().zip(names));
    }

    /// The function `address` is in, if kallsyms named it.
    pub(crate) fn resolved(&self, address: u64) -> Option<&str> {
        self.cache.get(&address).and_then(Option::as_deref)
    }
}

/// For each of `addresses` (sorted), the name of the nearest text (`t`, `T`) symbol at or
/// below it, if the address can be inside it. Of aliases (symbols at one address), the last
/// listed names it.
fn nearest_text_symbols(mut kallsyms: impl BufRead, addresses: &[u64]) -> Vec<Option<String>> {
    let mut nearest: Vec<Option<(u64, String)>> = vec![None; addresses.len()];
    let mut line = String::new();
    while matches!(kallsyms.read_line(&mut line), Ok(n) if n > 0) {
        if let Some((start, name)) = text_symbol(&line) {
            let first = addresses.partition_point(|address| *address < start);
            for (address, found) in addresses[first..].iter().zip(&mut nearest[first..]) {
                if address - start > MAX_FUNCTION_SIZE {
                    break;
                }
                match found {
                    // Each symbol below an address is nearer than the last (the file is sorted
                    // within vmlinux and each module): the name's buffer is reused.
                    Some((best, best_name)) if start >= *best => {
                        *best = start;
                        best_name.clear();
                        best_name.push_str(name);
                    }
                    Some(_) => {}
                    None => *found = Some((start, name.to_owned())),
                }
            }
        }
        line.clear();
    }
    nearest
        .into_iter()
        .map(|found| found.map(|(_, name)| name))
        .collect()
}

/// Start and name of a text symbol's line; `None` for other symbols and hidden addresses.
fn text_symbol(line: &str) -> Option<(u64, &str)> {
    let mut parts = line.split_whitespace();
    let (address, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
    if !matches!(kind, "t" | "T") {
        return None;
    }
    u64::from_str_radix(address, 16)
        .ok()
        .filter(|start| *start != 0)
        .map(|start| (start, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_text_symbol_below_each_address() {
        let kallsyms = "ffffffff81000000 T _stext
ffffffff81b00000 T ip_forward
ffffffff81a00000 t nf_hook_slow
ffffffff81a00400 D some_data
ffffffff81b00800 t ip_forward_finish [vmlinux]
ffffffff81c00000 t alias_one
ffffffff81c00000 t alias_two
0000000000000000 t hidden";
        let addresses = [
            0x10,
            0xffff_ffff_81a0_0123,
            0xffff_ffff_81b0_0000,
            0xffff_ffff_81b0_0900,
            0xffff_ffff_81c0_0010,
            // Far above the last symbol: in a module loaded later, not in alias_two.
            0xffff_ffff_c000_0000,
        ];
        let names = nearest_text_symbols(kallsyms.as_bytes(), &addresses);
        let names: Vec<Option<&str>> = names.iter().map(Option::as_deref).collect();
        assert_eq!(
            names,
            [
                None,
                Some("nf_hook_slow"),
                Some("ip_forward"),
                Some("ip_forward_finish"),
                Some("alias_two"),
                None
            ]
        );
    }
}
