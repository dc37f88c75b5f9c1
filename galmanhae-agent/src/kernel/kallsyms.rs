//! Kernel text addresses to function names, from `/proc/kallsyms` (addresses are visible to
//! root; with `kptr_restrict` they read as zero and locations stay numeric).
//!
//! Reading the file costs ~40 ms of kernel time (it formats ~120k lines on every read), so it
//! is read once, at start-up, into a compact table of text symbols (~5 MB), instead of once
//! per new drop location: a storm that drops at new places would otherwise re-read it several
//! times a minute.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    time::{Duration, Instant},
};

pub(crate) const KALLSYMS: &str = "/proc/kallsyms";

/// An address further than this above its nearest text symbol is in none we know (a module
/// loaded after the table was read).
const MAX_FUNCTION_SIZE: u64 = 1 << 20;
/// A table this old is read again when an address falls outside it.
const REFRESH_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
pub(crate) struct Symbolizer {
    /// `None` for an address kallsyms did not name.
    cache: HashMap<u64, Option<String>>,
    table: Option<(TextSymbols, Instant)>,
}

impl Symbolizer {
    /// Names every address in `addresses` not seen before.
    pub(crate) fn learn(&mut self, addresses: impl IntoIterator<Item = u64>) {
        for address in addresses {
            if self.cache.contains_key(&address) {
                continue;
            }
            let mut name = self.lookup(address);
            if name.is_none() && self.table_is_stale() {
                self.table = None;
                name = self.lookup(address);
            }
            self.cache.insert(address, name);
        }
    }

    /// Reads the table now: at start-up, not at the first drop, whose pass would pay for it
    /// (about 60 ms of CPU, most of it the kernel formatting the file).
    pub(crate) fn preload(&mut self) {
        self.table();
    }

    /// The name of the function `address` is in, from the table.
    fn lookup(&mut self, address: u64) -> Option<String> {
        self.table()
            .and_then(|table| table.name(address))
            .map(str::to_owned)
    }

    /// Whether the table is old enough to be read again for an address outside it.
    fn table_is_stale(&self) -> bool {
        self.table
            .as_ref()
            .is_some_and(|(_, read)| read.elapsed() >= REFRESH_AFTER)
    }

    /// The table, read now if it was not yet.
    fn table(&mut self) -> Option<&TextSymbols> {
        if self.table.is_none() {
            match std::fs::File::open(KALLSYMS) {
                Ok(file) => {
                    let table = TextSymbols::read(BufReader::with_capacity(1 << 16, file));
                    self.table = Some((table, Instant::now()));
                }
                Err(e) => log::debug!("{KALLSYMS}: {e}"),
            }
        }
        self.table.as_ref().map(|(table, _)| table)
    }

    /// The function `address` is in, if kallsyms named it.
    pub(crate) fn resolved(&self, address: u64) -> Option<&str> {
        self.cache.get(&address).and_then(Option::as_deref)
    }
}

/// Text (`t`, `T`) symbols by start address, names in one arena.
#[derive(Debug, Default)]
struct TextSymbols {
    /// (start, where its name begins in `names` and ends), sorted by start.
    starts: Vec<(u64, u32, u32)>,
    names: String,
}

impl TextSymbols {
    /// Reads the table from kallsyms' text, one reused line buffer (no allocation per line).
    fn read(mut text: impl BufRead) -> Self {
        let mut table = Self::default();
        let mut line = String::new();
        while text.read_line(&mut line).is_ok_and(|n| n > 0) {
            table.add(&line);
            line.clear();
        }
        table.finish()
    }

    #[cfg(test)]
    fn parse<'a>(lines: impl Iterator<Item = &'a str>) -> Self {
        let mut table = Self::default();
        for line in lines {
            table.add(line);
        }
        table.finish()
    }

    /// One line of kallsyms: `ADDRESS KIND NAME [MODULE]`; text symbols are kept.
    fn add(&mut self, line: &str) {
        let mut parts = line.split_whitespace();
        let (Some(address), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if !matches!(kind, "t" | "T") {
            return;
        }
        match u64::from_str_radix(address, 16) {
            Ok(start) if start != 0 => {
                let offset = |names: &String| u32::try_from(names.len()).unwrap_or(u32::MAX);
                let begin = offset(&self.names);
                self.names.push_str(name);
                self.starts.push((start, begin, offset(&self.names)));
            }
            _ => {}
        }
    }

    fn finish(mut self) -> Self {
        // Stable: of symbols at the same address (aliases), the first listed stays first.
        self.starts.sort_by_key(|(start, _, _)| *start);
        self.starts.shrink_to_fit();
        self.names.shrink_to_fit();
        self
    }

    /// The nearest text symbol at or below `address`, if `address` can be inside it.
    fn name(&self, address: u64) -> Option<&str> {
        let index = self
            .starts
            .partition_point(|(start, _, _)| *start <= address);
        let (start, begin, end) = *self.starts.get(index.checked_sub(1)?)?;
        if address - start > MAX_FUNCTION_SIZE {
            return None;
        }
        self.names.get(begin as usize..end as usize)
    }
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
ffffffff81b00800 t ip_forward_finish [vmlinux]";
        let table = TextSymbols::parse(kallsyms.lines());
        assert_eq!(table.name(0xffff_ffff_81a0_0123), Some("nf_hook_slow"));
        assert_eq!(table.name(0xffff_ffff_81b0_0900), Some("ip_forward_finish"));
        assert_eq!(table.name(0xffff_ffff_81b0_0000), Some("ip_forward"));
        assert_eq!(table.name(0x10), None);
        // Far above the last symbol: in a module loaded later, not in ip_forward_finish.
        assert_eq!(table.name(0xffff_ffff_c000_0000), None);
    }
}
