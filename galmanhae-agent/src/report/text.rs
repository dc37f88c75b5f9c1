//! `diagnose` for people: a verdict line, hooks, workloads by retransmit ratio, top flows.

use std::fmt::Write as _;

use super::{DiagnoseReport, FlowReport, WorkloadReport};
use crate::kernel::probes::HookStatus;

pub fn render(report: &DiagnoseReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_report(&mut out, report);
    out
}

#[expect(
    clippy::too_many_lines,
    reason = "one section after the other, in reading order"
)]
fn write_report(out: &mut String, r: &DiagnoseReport) -> std::fmt::Result {
    writeln!(
        out,
        "galmanhae diagnose: {} (kernel {}), {:.0} s window",
        r.host.hostname, r.host.kernel, r.duration_s
    )?;
    writeln!(out, "{}", verdict(r))?;

    writeln!(out, "\nHooks")?;
    for h in &r.hooks {
        let status = match h.hook.status {
            HookStatus::Attached => "attached",
            HookStatus::Unavailable => "UNAVAILABLE",
            HookStatus::Failed => "FAILED",
        };
        let cost = match (h.runs, h.ns_per_run) {
            (Some(runs), Some(ns)) if runs > 0 => format!(" [{runs} runs, {ns:.0} ns/run]"),
            (Some(runs), _) => format!(" [{runs} runs]"),
            _ => String::new(),
        };
        writeln!(
            out,
            "  {:<11} {:<30} {:<12} {}{}",
            h.hook.kind, h.hook.name, status, h.hook.detail, cost
        )?;
    }

    writeln!(
        out,
        "\nWorkloads by retransmit ratio (segments of each network namespace)"
    )?;
    if r.workloads.is_empty() {
        writeln!(out, "  no TCP traffic seen")?;
    } else {
        writeln!(
            out,
            "  {:<24} {:<10} {:<11} {:>12} {:>12} {:>8}",
            "WORKLOAD", "KIND", "RUNTIME", "SENT SEGS", "RETRANS", "RATIO"
        )?;
        for w in &r.workloads {
            writeln!(
                out,
                "  {:<24} {:<10} {:<11} {:>12} {:>12} {:>7.2}%{}",
                truncate(&w.name, 24),
                w.kind,
                w.runtime,
                w.sent_segments,
                w.retransmitted_segments,
                w.retransmit_ratio * 100.0,
                workload_marks(w)
            )?;
        }
    }

    writeln!(out, "\nTop flows by retransmitted segments (kernel hook)")?;
    if r.flows.is_empty() {
        writeln!(out, "  no retransmits")?;
    } else {
        writeln!(
            out,
            "  {:<20} {:<48} {:>8} {:>8}  KINDS",
            "WORKLOAD", "LOCAL -> REMOTE", "RETRANS", "SEGS"
        )?;
        for f in &r.flows {
            writeln!(
                out,
                "  {:<20} {:<48} {:>8} {:>8}  {}",
                truncate(&f.workload, 20),
                format!("{} -> {}", f.local, f.remote),
                f.retransmits,
                f.retransmitted_segments,
                kinds(f)
            )?;
        }
    }

    if !r.drops.is_empty() {
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
    }

    for c in r
        .conntrack
        .iter()
        .filter(|c| c.stats.entries.unwrap_or(0) > 0 || c.stats.insert > 0)
    {
        writeln!(
            out,
            "\nConntrack {} ({}): {} of {} entries; window: insert +{}, insert_failed +{}, \
             drop +{}, early_drop +{}, invalid +{}, clash_resolve +{}",
            c.namespace,
            c.stats.source.as_str(),
            c.stats.entries.unwrap_or(0),
            c.stats.max.unwrap_or(0),
            c.stats.insert,
            c.stats.insert_failed,
            c.stats.drop,
            c.stats.early_drop,
            c.stats.invalid,
            c.stats.clash_resolve
        )?;
    }

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

    let h = &r.health;
    writeln!(
        out,
        "\nHealth: flow map {}/{} entries; {} retransmits counted per workload only (map full); \
         {} lost; {} read errors; {} drops counted per site only, {} drops lost",
        h.flow_map_entries,
        h.flow_map_capacity,
        h.flow_map_full,
        h.lost,
        h.read_errors,
        h.drop_map_full,
        h.drops_lost
    )?;
    for note in &r.notes {
        writeln!(out, "Note: {note}")?;
    }
    Ok(())
}

/// One line that says what matters most: the top finding, else the worst workload.
fn verdict(r: &DiagnoseReport) -> String {
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

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(width - 1).collect();
        t.push('~');
        t
    }
}
