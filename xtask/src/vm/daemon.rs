//! Checks on the guest's `galmanhae run`: it serves /metrics that count like the kernel, and a
//! SIGTERM ends it cleanly with nothing of it left in the kernel (programs, tc filters, the
//! clsact qdisc it added where there is no TCX).

use super::checks::{Outcome, metric, our_programs};
use super::console::{Console, retrans_segs};

pub(crate) fn checks(console: &Console) -> Vec<Outcome> {
    vec![
        Outcome {
            name: "run: exits 0 on SIGTERM",
            result: exits_cleanly(console),
        },
        Outcome {
            name: "run: /metrics app segments = its RetransSegs",
            result: segments_equal(console),
        },
        Outcome {
            name: "run: /metrics says the hooks are up",
            result: hooks_up(console),
        },
        Outcome {
            name: "run: nothing of it is left in the kernel after exit",
            result: nothing_left(console),
        },
    ]
}

fn exits_cleanly(console: &Console) -> Result<String, String> {
    let stderr = console.section("run-stderr")?;
    match console.facts.get("run-exit").map(String::as_str) {
        Some("0") if stderr.contains("SIGTERM") => Ok("exit 0 after SIGTERM".to_owned()),
        exit => Err(format!("exit {exit:?}: {}", stderr.trim())),
    }
}

fn segments_equal(console: &Console) -> Result<String, String> {
    let before = retrans_segs(console.section("run-snmp-before")?)?;
    let after = retrans_segs(console.section("run-snmp-after")?)?;
    let kernel = after.saturating_sub(before);
    let served = metric(
        console,
        "galmanhae_tcp_retransmit_segments_total",
        &["workload=\"netns:app\""],
    )?;
    #[expect(clippy::cast_precision_loss, reason = "segment counts far below 2^52")]
    let equal = (served - kernel as f64).abs() < 0.5;
    if !equal || kernel == 0 {
        return Err(format!("served {served}, RetransSegs grew by {kernel}"));
    }
    Ok(format!("{served} = {kernel}"))
}

fn hooks_up(console: &Console) -> Result<String, String> {
    let mut up = Vec::new();
    for hook in [
        "tcp:tcp_retransmit_skb",
        "skb:kfree_skb",
        "tc egress (uplinks)",
    ] {
        let label = format!("hook=\"{hook}\"");
        let labels = [label.as_str(), "required=\"true\"", "status=\"attached\""];
        let value = metric(console, "galmanhae_hook_up", &labels)?;
        if (value - 1.0).abs() > f64::EPSILON {
            return Err(format!(
                "galmanhae_hook_up{{{}}} is {value}",
                labels.join(",")
            ));
        }
        up.push(hook);
    }
    Ok(up.join(", "))
}

/// Programs of ours before (none), while running (some) and after (none); no tc filter on the
/// uplink and no clsact qdisc after.
fn nothing_left(console: &Console) -> Result<String, String> {
    let before = our_programs(console, "bpf-before")?;
    let during = our_programs(console, "bpf-during")?;
    let after = our_programs(console, "bpf-after")?;
    if !before.is_empty() || during.len() < 3 || !after.is_empty() {
        return Err(format!(
            "programs before {before:?}, while running {during:?}, after {after:?}"
        ));
    }
    let filters = console.section("tc-after")?.trim();
    if !filters.is_empty() {
        return Err(format!("tc filters left on gmh-db-host egress: {filters}"));
    }
    let qdiscs = console.section("qdisc-after")?;
    if qdiscs.contains("clsact") {
        return Err(format!(
            "a clsact qdisc is left on gmh-db-host: {}",
            qdiscs.trim()
        ));
    }
    let tc_during = console.section("tc-during")?;
    Ok(format!(
        "{} programs while running ({}), none after; {}",
        during.len(),
        during.join(" "),
        if tc_during.contains("nat_leak_egress") {
            "its tc filter and clsact qdisc removed"
        } else {
            "no tc filter either way (TCX)"
        }
    ))
}
