//! `diagnose` for people: a verdict line, then hooks, workloads by retransmit ratio, top flows,
//! drops, conntrack, NAT, path MTU, findings with advice, and health.

use std::fmt::Write as _;

use super::{DiagnoseReport, FlowReport, TimeLostSeconds, WorkloadReport, timeline::sparkline};
use crate::kernel::probes::HookStatus;

pub(crate) fn render(report: &DiagnoseReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_report(&mut out, report);
    printable(&out, &['\n'])
}

/// `text` with every control character but `keep` shown as `\u{..}`: names come from cgroup
/// paths and process names, which may hold terminal escapes; a report must not run them.
fn printable(text: &str, keep: &[char]) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && !keep.contains(&c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Where the sections go (writing to a `String` cannot fail).
type Out<'a> = &'a mut String;

/// One section after the other, in reading order.
fn write_report(out: Out<'_>, r: &DiagnoseReport) -> std::fmt::Result {
    writeln!(
        out,
        "galmanhae diagnose: {} (kernel {}), {:.0} s window",
        r.host.hostname, r.host.kernel, r.duration_s
    )?;
    writeln!(out, "{}", verdict(r))?;
    hooks(out, r)?;
    workloads(out, r)?;
    flows(out, r)?;
    timeline(out, r)?;
    drops(out, r)?;
    conntrack(out, r)?;
    nat(out, r)?;
    paths(out, r)?;
    findings(out, r)?;
    health(out, r)
}

fn hooks(out: Out<'_>, r: &DiagnoseReport) -> std::fmt::Result {
    writeln!(out, "\nHooks")?;
    for h in &r.hooks {
        let status = match h.hook.status {
            HookStatus::Attached => "attached",
            HookStatus::Unavailable => "UNAVAILABLE",
            HookStatus::Failed => "FAILED",
            HookStatus::Off => "off",
        };
        let missed = match h.missed {
            Some(missed) if missed > 0 => format!(", {missed} MISSED"),
            _ => String::new(),
        };
        let cost = match (h.runs, h.ns_per_run) {
            (Some(runs), Some(ns)) if runs > 0 => {
                format!(" [{runs} runs, {ns:.0} ns/run{missed}]")
            }
            (Some(runs), _) => format!(" [{runs} runs{missed}]"),
            _ => String::new(),
        };
        writeln!(
            out,
            "  {:<11} {:<30} {:<12} {}{}",
            h.hook.kind, h.hook.name, status, h.hook.detail, cost
        )?;
    }
    Ok(())
}

fn workloads(out: Out<'_>, r: &DiagnoseReport) -> std::fmt::Result {
    writeln!(
        out,
        "\nWorkloads by retransmit ratio (segments of each network namespace)"
    )?;
    if r.workloads.is_empty() {
        return writeln!(out, "  no TCP traffic seen");
    }
    writeln!(
        out,
        "  {:<24} {:<10} {:<11} {:>12} {:>12} {:>8} {:>10}",
        "WORKLOAD", "KIND", "RUNTIME", "SENT SEGS", "RETRANS", "RATIO", "TIME LOST"
    )?;
    for w in &r.workloads {
        writeln!(
            out,
            "  {:<24} {:<10} {:<11} {:>12} {:>12} {:>7.2}% {:>10}{}",
            truncate(&w.name, 24),
            w.kind,
            w.runtime,
            w.sent_segments,
            w.retransmitted_segments,
            w.retransmit_ratio * 100.0,
            time_lost_cell(&w.time_lost),
            workload_marks(w)
        )?;
    }
    Ok(())
}

fn flows(out: Out<'_>, r: &DiagnoseReport) -> std::fmt::Result {
    writeln!(out, "\nTop flows by retransmitted segments (kernel hook)")?;
    if r.flows.is_empty() {
        return writeln!(out, "  no retransmits");
    }
    writeln!(
        out,
        "  {:<20} {:<48} {:>8} {:>8} {:>10}  KINDS",
        "WORKLOAD", "LOCAL -> REMOTE", "RETRANS", "SEGS", "TIME LOST"
    )?;
    for f in &r.flows {
        writeln!(
            out,
            "  {:<20} {:<48} {:>8} {:>8} {:>10}  {}",
            truncate(&f.workload, 20),
            format!("{} -> {}", f.local, f.remote),
            f.retransmits,
            f.retransmitted_segments,
            time_lost_cell(&f.time_lost),
            kinds(f)
        )?;
    }
    Ok(())
}

/// A sparkline row of retransmits and one of stall seconds per workload, with the period of
/// bursts that repeat.
fn timeline(out: Out<'_>, r: &DiagnoseReport) -> std::fmt::Result {
    let t = &r.timeline;
    if t.workloads.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\nTimeline ({} s, one column per {} s; retransmits, then RTO-stall seconds)",
        t.seconds,
        t.seconds.div_ceil(60).max(1)
    )?;
    for row in &t.workloads {
        #[expect(clippy::cast_precision_loss, reason = "bar heights")]
        let retransmits: Vec<f64> = row.retransmits.iter().map(|n| *n as f64).collect();
        let period = row
            .period_s
            .map_or(String::new(), |p| format!("  bursts every {p:.0} s"));
        writeln!(
            out,
            "  {:<20} retrans |{}|{period}",
            truncate(&row.workload, 20),
            sparkline(&retransmits)
        )?;
        if row.stall_seconds.iter().any(|s| *s > 0.0) {
            writeln!(
                out,
                "  {:<20} stalled |{}|",
                "",
                sparkline(&row.stall_seconds)
            )?;
        }
    }
    Ok(())
}

fn drops(out: Out<'_>, r: &DiagnoseReport) -> std::fmt::Result {
    if r.drops.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nDrops on this machine (skb:kfree_skb)")?;
    writeln!(
        out,
        "  {:<20} {:<20} {:<18} {:<26} {:>8}  EXAMPLE",
        "WORKLOAD", "DROPPED IN", "REASON", "LOCATION", "PACKETS"
    )?;
    for d in r.drops.iter().take(10) {
        writeln!(
            out,
            "  {:<20} {:<20} {:<18} {:<26} {:>8}  {}",
            truncate(&d.workload, 20),
            truncate(&d.dropped_in, 20),
            truncate(&d.reason, 18),
            truncate(&d.location, 26),
            d.packets,
            d.examples.first().map_or("", String::as_str)
        )?;
    }
    Ok(())
}

/// Namespaces whose table holds entries or whose counters moved in the window.
fn conntrack(out: Out<'_>, r: &DiagnoseReport) -> std::fmt::Result {
    for c in &r.conntrack {
        let s = &c.stats;
        writeln!(
            out,
            "\nConntrack {} ({}): {} of {} entries; window: insert_failed +{}, drop +{}, \
             early_drop +{}, invalid +{}, clash_resolve +{}, search_restart +{}",
            c.namespace,
            s.source.as_str(),
            s.entries.unwrap_or(0),
            s.max.unwrap_or(0),
            s.insert_failed,
            s.drop,
            s.early_drop,
            s.invalid,
            s.clash_resolve,
            s.search_restart
        )?;
    }
    Ok(())
}

/// The NAT audit and the packets that left untranslated.
fn nat(out: Out<'_>, r: &DiagnoseReport) -> std::fmt::Result {
    let a = &r.nat_audit;
    if a.masquerade.is_empty() && r.leaks.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nNAT")?;
    for m in &a.masquerade {
        writeln!(
            out,
            "  {}{}",
            m.rule,
            if m.random_fully {
                ""
            } else {
                "   <- no --random-fully"
            }
        )?;
    }
    let flag = |v: Option<bool>| v.map_or("?", |on| if on { "1" } else { "0" });
    writeln!(
        out,
        "  nf_conntrack_tcp_be_liberal={} tcp_loose={} tcp_timeout_established={}",
        flag(a.sysctls.tcp_be_liberal),
        flag(a.sysctls.tcp_loose),
        a.sysctls
            .tcp_timeout_established_s
            .map_or_else(|| "?".to_owned(), |s| format!("{s}s"))
    )?;
    for l in &r.leaks {
        writeln!(
            out,
            "  untranslated: {} packets of {} left through {}, e.g. {}",
            l.packets,
            l.workload,
            l.interface,
            l.examples.first().map_or("", String::as_str)
        )?;
    }
    Ok(())
}

/// MTUs on each workload's path, shown where they differ or a finding may need them.
fn paths(out: Out<'_>, r: &DiagnoseReport) -> std::fmt::Result {
    let mismatched: Vec<_> = r.paths.iter().filter(|p| p.mismatch.is_some()).collect();
    if mismatched.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\nPath MTU (where the workload side is larger than the egress)"
    )?;
    for p in mismatched {
        let hops: Vec<String> = p
            .hops
            .iter()
            .map(|h| format!("{} {} {}", h.role, h.interface, h.mtu))
            .collect();
        writeln!(
            out,
            "  {} -> {}: {}",
            truncate(&p.workload, 20),
            p.remote,
            hops.join(" | ")
        )?;
    }
    Ok(())
}

fn findings(out: Out<'_>, r: &DiagnoseReport) -> std::fmt::Result {
    writeln!(out, "\nFindings")?;
    if r.findings.is_empty() {
        writeln!(out, "  none")?;
    }
    for (i, f) in r.findings.iter().enumerate() {
        writeln!(
            out,
            "  {}. [{}] {} ({}): {}",
            i + 1,
            f.severity.as_str(),
            f.id,
            f.workload,
            f.summary
        )?;
        for e in &f.evidence {
            writeln!(out, "       - {e}")?;
        }
        for flow in f.flows.iter().take(3) {
            writeln!(out, "       flow {flow}")?;
        }
        writeln!(out, "     Advice: {}", f.advice)?;
    }
    Ok(())
}

fn health(out: Out<'_>, r: &DiagnoseReport) -> std::fmt::Result {
    let h = &r.health;
    writeln!(
        out,
        "\nHealth: flow map {}/{} entries; {} retransmits counted per workload only (map full); \
         {} lost; {} read errors; {} drops counted per site only, {} drops lost; {} untranslated \
         packets lost",
        h.flow_map_entries,
        h.flow_map_capacity,
        h.flow_map_full,
        h.lost,
        h.read_errors,
        h.drop_map_full,
        h.drops_lost,
        h.leaks_lost
    )?;
    for note in &r.notes {
        writeln!(out, "Note: {note}")?;
    }
    Ok(())
}

/// Seconds lost, `-` for none.
fn time_lost_cell(t: &TimeLostSeconds) -> String {
    if t.seconds() > 0.0 {
        format!("{:.1} s", t.seconds())
    } else {
        "-".to_owned()
    }
}

/// What the workload that lost the most time lost, as the verdict's first sentence.
fn time_lead(r: &DiagnoseReport) -> Option<String> {
    let w = r
        .workloads
        .iter()
        .filter(|w| w.time_lost.seconds() > 0.0)
        .max_by(|a, b| a.time_lost.seconds().total_cmp(&b.time_lost.seconds()))?;
    let t = &w.time_lost;
    let remote = r
        .flows
        .iter()
        .filter(|f| f.workload == w.name)
        .max_by(|a, b| a.time_lost.seconds().total_cmp(&b.time_lost.seconds()))
        .map_or(String::new(), |f| format!(" on {}", f.remote));
    let mut parts = Vec::new();
    if t.rto_stall_seconds > 0.0 {
        parts.push(format!(
            "{:.1} s to RTO stalls{remote}, longest {:.1} s ({} timeouts in a row)",
            t.rto_stall_seconds, t.longest_rto_stall_seconds, t.max_consecutive_timeouts
        ));
    }
    if t.syn_retry_seconds > 0.0 {
        parts.push(format!(
            "{:.1} s to SYN retries ({} SYN timeouts)",
            t.syn_retry_seconds, t.syn_timeouts
        ));
    }
    let bursts = r
        .timeline
        .workloads
        .iter()
        .find(|row| row.workload == w.name)
        .and_then(|row| row.period_s)
        .map_or(String::new(), |p| format!(", in bursts every {p:.0} s"));
    Some(format!(
        "{} `{}` lost {} in this window{bursts}.",
        w.kind,
        w.name,
        parts.join(" and ")
    ))
}

/// One line that says what matters most: time lost first when any was, then the top finding,
/// else the worst workload.
fn verdict(r: &DiagnoseReport) -> String {
    let verdict = finding_verdict(r);
    match time_lead(r) {
        Some(time) => format!(
            "Verdict: {time} {}",
            verdict.trim_start_matches("Verdict: ")
        ),
        None => verdict,
    }
}

fn finding_verdict(r: &DiagnoseReport) -> String {
    if let Some(f) = r.findings.first() {
        let more = match r.findings.len() {
            1 => String::new(),
            n => format!(" (+{} more findings)", n - 1),
        };
        return format!(
            "Verdict: [{}] {}: {}.{more}",
            f.severity.as_str(),
            f.id,
            f.summary
        );
    }
    let worst = r
        .workloads
        .iter()
        .filter(|w| w.retransmitted_segments > 0)
        .max_by(|a, b| a.retransmit_ratio.total_cmp(&b.retransmit_ratio));
    match worst {
        None => "Verdict: no TCP retransmissions in this window.".to_owned(),
        Some(w) => {
            let top_flow = r.flows.iter().find(|f| f.workload == w.name);
            let to = top_flow.map_or(String::new(), |f| format!(", mostly to {}", f.remote));
            format!(
                "Verdict: {} `{}` retransmits {:.2}% of its segments ({} of {}){}.",
                w.kind,
                w.name,
                w.retransmit_ratio * 100.0,
                w.retransmitted_segments,
                w.sent_segments,
                to
            )
        }
    }
}

fn workload_marks(w: &WorkloadReport) -> String {
    let mut marks = Vec::new();
    if w.netns_shared {
        marks.push("host netns: counters are the host's");
    }
    if w.vanished {
        marks.push("vanished mid-window");
    }
    if w.removed {
        marks.push("container removed: its last known name");
    }
    if marks.is_empty() {
        String::new()
    } else {
        format!("  ({})", marks.join("; "))
    }
}

fn kinds(f: &FlowReport) -> String {
    let k = &f.kinds;
    let parts: Vec<String> = [
        ("rto", k.rto),
        ("fast", k.fast),
        ("tlp", k.tlp),
        ("syn", k.syn),
        ("synack", k.synack),
        ("other", k.other),
        ("failed", k.failed),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(name, n)| format!("{name} {n}"))
    .collect();
    parts.join(", ")
}

/// A name in a column: on one line, at most `width` characters.
fn truncate(s: &str, width: usize) -> String {
    let s = printable(s, &[]);
    if s.chars().count() <= width {
        s
    } else {
        let mut t: String = s.chars().take(width - 1).collect();
        t.push('~');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_send_escapes_to_the_terminal() {
        let name = "evil\u{1b}]0;owned\u{7}\r\nfake";
        let column = truncate(name, 80);
        assert!(!column.chars().any(char::is_control), "{column}");
        assert_eq!(column, "evil\\u{1b}]0;owned\\u{7}\\u{d}\\u{a}fake");
        // The report keeps its own line breaks and nothing else.
        assert_eq!(printable("a\u{1b}[31m\nb", &['\n']), "a\\u{1b}[31m\nb");
        assert_eq!(truncate("storm-1", 20), "storm-1");
        assert_eq!(truncate("abcdef", 4), "abc~");
    }
}
