//! What the guest printed, read into sections and facts, and the kernel counters in them.

use std::collections::BTreeMap;

/// The guest's console, split at its `=== BEGIN name` / `=== END rc=N` and `=== FACT k=v` lines.
#[derive(Debug, Default)]
pub(crate) struct Console {
    pub(crate) sections: BTreeMap<String, (String, i32)>,
    pub(crate) facts: BTreeMap<String, String>,
    pub(crate) done: bool,
}

impl Console {
    pub(crate) fn parse(text: &str) -> Self {
        let mut console = Self::default();
        let mut open: Option<(String, String)> = None;
        // The console's first line carries the firmware's escape codes before the marker.
        let lines = text.lines().map(|l| l.trim_end_matches('\r')).map(|l| {
            match (l.contains('\u{1b}'), l.find("=== ")) {
                (true, Some(at)) => &l[at..],
                _ => l,
            }
        });
        for line in lines {
            if let Some((name, body)) = &mut open {
                if let Some(rc) = line.strip_prefix("=== END rc=") {
                    let rc = rc.trim().parse().unwrap_or(-1);
                    console
                        .sections
                        .insert(name.clone(), (std::mem::take(body), rc));
                    open = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            } else if let Some(name) = line.strip_prefix("=== BEGIN ") {
                open = Some((name.trim().to_owned(), String::new()));
            } else if let Some((k, v)) = line
                .strip_prefix("=== FACT ")
                .and_then(|f| f.split_once('='))
            {
                console.facts.insert(k.to_owned(), v.to_owned());
            } else if line.starts_with("=== DONE") {
                console.done = true;
            }
        }
        console
    }

    pub(crate) fn section(&self, name: &str) -> Result<&str, String> {
        self.sections
            .get(name)
            .map(|(body, _)| body.as_str())
            .ok_or_else(|| format!("the guest printed no `{name}` section"))
    }

    /// A section holding one number.
    pub(crate) fn number(&self, name: &str) -> Result<u64, String> {
        let body = self.section(name)?;
        body.trim()
            .parse()
            .map_err(|_| format!("`{name}` is not a number: {body:?}"))
    }
}

/// `Tcp: RetransSegs` from the two `Tcp:` lines of /proc/net/snmp.
pub(crate) fn retrans_segs(snmp: &str) -> Result<u64, String> {
    let mut lines = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (lines.next(), lines.next());
    let (Some(names), Some(values)) = (names, values) else {
        return Err(format!("no Tcp: header and values in {snmp:?}"));
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RetransSegs")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| format!("no RetransSegs in {snmp:?}"))
}

/// The `pkts` of the statistic DROP rule in `iptables -L FORWARD -v -x -n`.
pub(crate) fn rule_packets(listing: &str) -> Result<u64, String> {
    listing
        .lines()
        .find(|l| l.contains("DROP") && l.contains("statistic"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no statistic DROP rule in {listing:?}"))
}

/// The sum of the samples `name{labels}` in a Prometheus text exposition that have every label
/// of `labels` (`key="value"`); `None` when there is none.
pub(crate) fn sample(exposition: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut values = exposition.lines().filter_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (set, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|l| set.split(',').any(|s| s == *l))
            .then(|| value.split_whitespace().next()?.parse::<f64>().ok())?
    });
    let first = values.next()?;
    Some(values.fold(first, |sum, v| sum + v))
}

/// The programs `bpftool prog show` lists whose names start with one of `ours` (the kernel
/// keeps 15 characters of a name).
pub(crate) fn programs<'a>(listing: &'a str, ours: &[&str]) -> Vec<&'a str> {
    listing
        .lines()
        .filter_map(|l| l.split_once(" name ")?.1.split_whitespace().next())
        .filter(|name| {
            ours.iter()
                .any(|o| o.starts_with(name) || name.starts_with(o))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_sections_and_facts() {
        let text = "noise\r\n\u{1b}c\u{1b}[2J=== FACT kernel=6.1.0\n=== BEGIN a\nx\ny\n=== END rc=3\n=== BEGIN n\n 42\n=== END rc=0\n=== DONE\n";
        let c = Console::parse(text);
        assert_eq!(c.facts["kernel"], "6.1.0");
        assert_eq!(c.sections["a"], ("x\ny\n".to_owned(), 3));
        assert_eq!(c.number("n"), Ok(42));
        assert!(c.number("a").is_err());
        assert!(c.done);
        assert!(!Console::parse("=== BEGIN a\nunfinished").done);
    }

    #[test]
    fn reads_retrans_segs_and_rule_packets() {
        let snmp = "Tcp: RtoAlgorithm RtoMin OutSegs RetransSegs InErrs\nTcp: 1 200 1000 42 0\n";
        assert_eq!(retrans_segs(snmp), Ok(42));
        assert!(retrans_segs("Tcp: x\n").is_err());
        let listing = "Chain FORWARD (policy ACCEPT 0 packets, 0 bytes)\n    pkts      bytes target prot opt in out source destination\n      17     1234 DROP   0    --  *  *   198.18.100.2 0.0.0.0/0 statistic mode random probability 0.05000000000\n";
        assert_eq!(rule_packets(listing), Ok(17));
    }

    #[test]
    fn finds_a_sample_by_some_of_its_labels() {
        let text = "# HELP x y\nx_total{workload=\"netns:app\",kind=\"rto\"} 12\nx_total{workload=\"netns:web\"} 3\nup 1\n";
        assert_eq!(
            sample(text, "x_total", &["workload=\"netns:app\""]),
            Some(12.0)
        );
        assert_eq!(
            sample(text, "x_total", &["workload=\"netns:web\""]),
            Some(3.0)
        );
        assert_eq!(sample(text, "x_total", &[]), Some(15.0));
        assert_eq!(sample(text, "x_total", &["workload=\"db\""]), None);
        assert_eq!(sample(text, "up", &[]), Some(1.0));
    }

    #[test]
    fn names_our_programs_in_a_bpftool_listing() {
        let listing = "12: tracing  name tcp_rtx_skb_btf  tag ab  gpl\n\tloaded_at 2026\n13: tracepoint  name tcp_retransmit_  tag cd  gpl\n14: sched_cls  name other  tag ef\n";
        assert_eq!(
            programs(listing, &["tcp_rtx_skb_btf", "tcp_retransmit_skb"]),
            ["tcp_rtx_skb_btf", "tcp_retransmit_"]
        );
    }
}
