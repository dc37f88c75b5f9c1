//! The checks made on one guest run. Pure: the guest only runs commands and prints; every
//! comparison happens here, against the guest kernel's own counters where there is one.

use serde_json::Value;

use super::console::{Console, programs, retrans_segs, rule_packets, sample};

/// The guest's scenarios, each observed by its own `galmanhae diagnose`.
pub(crate) const SCENARIOS: &[&str] = &["loss", "pmtu", "syn", "conntrack"];

/// The eBPF programs of the agent, as `bpftool` lists them.
const PROGRAMS: &[&str] = &[
    "tcp_rtx_skb_btf",
    "tcp_cong_state_set",
    "time_lost_settle",
    "inet_sock_set_state",
    "tcp_retransmit_skb",
    "tcp_retransmit_synack",
    "kfree_skb_btf",
    "kfree_skb",
    "nat_leak_egress",
    "conntrack_confirm_kprobe",
    "conntrack_confirm_fentry",
    "task_namespaces",
];

/// One check's outcome.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) name: &'static str,
    pub(crate) result: Result<String, String>,
}

fn check(name: &'static str, f: impl FnOnce() -> Result<String, String>) -> Outcome {
    Outcome { name, result: f() }
}

/// Every check on one guest run.
pub(crate) fn run_all(console: &Console) -> Vec<Outcome> {
    let mut outcomes = vec![
        check("guest ran to the end", || {
            console
                .done
                .then(|| "=== DONE".to_owned())
                .ok_or_else(|| "no === DONE".to_owned())
        }),
        check("the guest lab was set up", || lab_set_up(console)),
        check("diagnose exits 0 in every scenario", || {
            diagnose_exits(console)
        }),
    ];
    let report = |name: &str| {
        console
            .section(&format!("report-{name}"))
            .and_then(|r| serde_json::from_str::<Value>(r).map_err(|e| format!("report JSON: {e}")))
    };
    match report("loss") {
        Ok(r) => outcomes.extend(loss(console, &r)),
        Err(e) => outcomes.push(check("the loss report parses", || Err(e))),
    }
    outcomes.push(check("pmtu: app has a high path_mtu, web none", || {
        pmtu(&report("pmtu")?)
    }));
    outcomes.push(check("syn: app has syn_retransmits, web none", || {
        syn(&report("syn")?)
    }));
    outcomes.push(check(
        "time lost: app's black-holed stream stalls, its SYNs wait, web none",
        || time_lost(&report("pmtu")?, &report("syn")?),
    ));
    outcomes.push(check(
        "conntrack: the host's table is conntrack_full, app's flows",
        || conntrack_full(&report("conntrack")?),
    ));
    outcomes.extend(super::daemon::checks(console));
    outcomes
}

/// The hooks, exact counts and the finding of the first scenario (random loss, local drops).
fn loss(console: &Console, report: &Value) -> Vec<Outcome> {
    let mut outcomes = vec![
        check("the retransmit and drop hooks attach", || {
            hooks_attach(report)
        }),
        check("the NAT-leak watch attaches to the uplink", || {
            nat_leak_watch(report)
        }),
        check(
            "the task iterator attaches (no CAP_SYS_PTRACE kept)",
            || task_iterator(report),
        ),
        check(
            "the retransmit hook matches the tracepoint's layout",
            || retransmit_layout(report, console.section("tracepoint-format")?),
        ),
        check("the conntrack hook runs once per new entry", || {
            conntrack_hook(report, console)
        }),
    ];
    for (ns, name) in [
        ("app", "app: flow segments = its RetransSegs"),
        ("web", "web: flow segments = its RetransSegs"),
    ] {
        outcomes.push(check(name, || exact_retransmits(report, console, ns)));
    }
    outcomes.push(check(
        "app: its drops equal the iptables rule's counter",
        || drops_equal_rule(report, console.section("iptables-drops")?),
    ));
    outcomes.push(check("loss: app has local_drops, web none", || {
        let ids = findings_of(report, "netns:app", "local_drops")?;
        none_for(report, "netns:web")?;
        Ok(format!("app: {ids}"))
    }));
    outcomes
}

/// The lab's own commands succeeded: otherwise the rest means nothing.
fn lab_set_up(console: &Console) -> Result<String, String> {
    let mut done = Vec::new();
    for name in ["modprobe", "nat", "loss", "pmtu", "syn", "conntrack"] {
        let (body, rc) = console
            .sections
            .get(name)
            .ok_or_else(|| format!("no `{name}` section"))?;
        if *rc != 0 || body.contains("failed") {
            return Err(format!("{name} (rc {rc}): {}", body.trim()));
        }
        done.push(name);
    }
    Ok(done.join(", "))
}

fn diagnose_exits(console: &Console) -> Result<String, String> {
    for scenario in SCENARIOS {
        let exit = console.facts.get(&format!("diagnose-exit-{scenario}"));
        if exit.map(String::as_str) != Some("0") {
            let stderr = console
                .section(&format!("diagnose-stderr-{scenario}"))
                .unwrap_or_default();
            return Err(format!("{scenario}: exit {exit:?}: {}", stderr.trim()));
        }
    }
    Ok(format!("{} runs", SCENARIOS.len()))
}

pub(crate) fn array<'a>(report: &'a Value, key: &str) -> Result<&'a Vec<Value>, String> {
    report[key]
        .as_array()
        .ok_or_else(|| format!("the report has no `{key}` array"))
}

fn hook<'a>(report: &'a Value, name: &str) -> Result<&'a Value, String> {
    array(report, "hooks")?
        .iter()
        .find(|h| h["name"] == name)
        .ok_or_else(|| format!("no hook {name}"))
}

fn hooks_attach(report: &Value) -> Result<String, String> {
    let mut seen = Vec::new();
    for name in ["tcp:tcp_retransmit_skb", "skb:kfree_skb"] {
        let h = hook(report, name)?;
        if h["status"] != "attached" {
            return Err(format!("{name}: {h}"));
        }
        seen.push(format!("{name} {}", h["kind"].as_str().unwrap_or("?")));
    }
    Ok(seen.join(", "))
}

/// The task iterator, which names namespaces without ptrace access (5.8+ with BTF).
fn task_iterator(report: &Value) -> Result<String, String> {
    let h = hook(report, "bpf_iter_task")?;
    match h["status"].as_str() {
        Some("attached") => Ok(h["detail"].as_str().unwrap_or_default().to_owned()),
        _ => Err(h.to_string()),
    }
}

/// The tc egress program on the db uplink (before 6.6 it needs a clsact qdisc, no TCX).
fn nat_leak_watch(report: &Value) -> Result<String, String> {
    let h = hook(report, "tc egress (uplinks)")?;
    match (h["status"].as_str(), h["detail"].as_str()) {
        (Some("attached"), Some(d)) if d.contains("gmh-db-host") => Ok(d.to_owned()),
        _ => Err(h.to_string()),
    }
}

/// Without an `err` field in the tracepoint, the hook must say so (only sent retransmits fire).
fn retransmit_layout(report: &Value, format: &str) -> Result<String, String> {
    let has_err = format.lines().any(|l| l.contains(" err;"));
    let detail = hook(report, "tcp:tcp_retransmit_skb")?["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let says_no_err = detail.contains("no `err` field");
    if has_err == says_no_err {
        return Err(format!(
            "tracepoint has err: {has_err}, hook says: {detail}"
        ));
    }
    Ok(format!(
        "err field {}: {detail}",
        if has_err { "present" } else { "absent" }
    ))
}

/// Where the optional `__nf_conntrack_confirm` hook attaches (kprobes on), its runs equal the
/// entries the host's table gained: the only namespace with conntrack in this scenario, and no
/// entry expires in its seconds.
fn conntrack_hook(report: &Value, console: &Console) -> Result<String, String> {
    let h = hook(report, "__nf_conntrack_confirm")?;
    if h["status"] != "attached" {
        return Ok(format!("not attached here: {}", h["detail"]));
    }
    let gained = console
        .number("conntrack-count-after-loss")?
        .saturating_sub(console.number("conntrack-count-before-loss")?);
    let runs = h["runs"].as_u64().ok_or_else(|| format!("no runs: {h}"))?;
    if runs != gained || gained == 0 {
        return Err(format!(
            "{} runs, the table gained {gained} entries",
            h["kind"]
        ));
    }
    Ok(format!("{} {runs} runs = {gained} new entries", h["kind"]))
}

fn exact_retransmits(report: &Value, console: &Console, ns: &str) -> Result<String, String> {
    let before = retrans_segs(console.section(&format!("snmp-before-{ns}"))?)?;
    let after = retrans_segs(console.section(&format!("snmp-after-{ns}"))?)?;
    let name = format!("netns:{ns}");
    let flows: u64 = array(report, "flows")?
        .iter()
        .filter(|f| f["workload"] == name.as_str())
        .filter_map(|f| f["retransmitted_segments"].as_u64())
        .sum();
    let kernel = after.saturating_sub(before);
    if flows != kernel {
        return Err(format!(
            "{name}: flows {flows}, RetransSegs grew by {kernel}"
        ));
    }
    if ns == "app" && kernel == 0 {
        return Err("app retransmitted nothing under 5 % loss".to_owned());
    }
    Ok(format!("{flows} = {kernel}"))
}

fn drops_of<'a>(report: &'a Value, workload: &str) -> Result<Vec<&'a Value>, String> {
    Ok(array(report, "drops")?
        .iter()
        .filter(|d| d["workload"] == workload)
        .collect())
}

fn drops_equal_rule(report: &Value, listing: &str) -> Result<String, String> {
    let rule = rule_packets(listing)?;
    let counted: u64 = drops_of(report, "netns:app")?
        .iter()
        .filter(|d| d["reason"] == "NETFILTER_DROP")
        .filter_map(|d| d["packets"].as_u64())
        .sum();
    if counted != rule || rule == 0 {
        return Err(format!("NETFILTER_DROP {counted}, the rule dropped {rule}"));
    }
    Ok(format!(
        "{counted} = {rule} (reason named from the kernel's BTF)"
    ))
}

/// The finding `id` about `workload`; the ids of all its findings.
fn findings_of(report: &Value, workload: &str, id: &str) -> Result<String, String> {
    let about: Vec<&Value> = array(report, "findings")?
        .iter()
        .filter(|f| f["workload"] == workload)
        .collect();
    if !about.iter().any(|f| f["id"] == id) {
        return Err(format!("no {id} for {workload}: {about:?}"));
    }
    let ids: Vec<&str> = about.iter().filter_map(|f| f["id"].as_str()).collect();
    Ok(ids.join(", "))
}

fn finding<'a>(report: &'a Value, workload: &str, id: &str) -> Result<&'a Value, String> {
    findings_of(report, workload, id)?;
    array(report, "findings")?
        .iter()
        .find(|f| f["workload"] == workload && f["id"] == id)
        .ok_or_else(|| format!("no {id} for {workload}"))
}

fn none_for(report: &Value, workload: &str) -> Result<(), String> {
    let about: Vec<&Value> = array(report, "findings")?
        .iter()
        .filter(|f| f["workload"] == workload)
        .collect();
    if about.is_empty() {
        Ok(())
    } else {
        Err(format!("{workload} should have no finding: {about:?}"))
    }
}

/// Packets too big for the 1280 egress, dropped with `PKT_TOO_BIG`, and the host's ICMP about
/// them dropped too.
fn pmtu(report: &Value) -> Result<String, String> {
    let f = finding(report, "netns:app", "path_mtu")?;
    if f["severity"] != "high" {
        return Err(format!("severity {}: {f}", f["severity"]));
    }
    let drops = drops_of(report, "netns:app")?;
    let too_big: u64 = drops
        .iter()
        .filter(|d| d["reason"] == "PKT_TOO_BIG")
        .filter_map(|d| d["packets"].as_u64())
        .sum();
    let icmp: u64 = drops
        .iter()
        .filter_map(|d| d["icmp_too_big"].as_u64())
        .sum();
    if too_big == 0 || icmp == 0 {
        return Err(format!(
            "PKT_TOO_BIG {too_big}, ICMP dropped {icmp}: {drops:?}"
        ));
    }
    none_for(report, "netns:web")?;
    Ok(format!(
        "{too_big} PKT_TOO_BIG, {icmp} ICMP frag-needed dropped"
    ))
}

/// Two connections to the black-holed port, 4 s each: at least 2 SYN retransmits each.
fn syn(report: &Value) -> Result<String, String> {
    let f = finding(report, "netns:app", "syn_retransmits")?;
    if !f["flows"].to_string().contains("198.19.0.2:5433") {
        return Err(format!("the finding does not name the port: {f}"));
    }
    let syns: u64 = array(report, "flows")?
        .iter()
        .filter(|f| f["workload"] == "netns:app")
        .filter_map(|f| f["kinds"]["syn"].as_u64())
        .sum();
    if syns < 4 {
        return Err(format!("{syns} SYN retransmits, expected at least 4"));
    }
    none_for(report, "netns:web")?;
    Ok(format!("{syns} SYN retransmits to 198.19.0.2:5433"))
}

/// Sum of `key` in the `time_lost` of `workload`'s flows whose remote ends in `remote`.
fn lost(report: &Value, workload: &str, remote: &str, key: &str) -> Result<f64, String> {
    Ok(array(report, "flows")?
        .iter()
        .filter(|f| f["workload"] == workload)
        .filter(|f| f["remote"].as_str().is_some_and(|r| r.ends_with(remote)))
        .filter_map(|f| f["time_lost"][key].as_f64())
        .sum())
}

/// Where the kernel keeps no RTO time (before 6.7) the stall comes from event timestamps
/// (`tcp_cong_state_set` attached); where it does, from its counters (that hook off, the
/// settling program loaded). The PMTU black hole stalls app's stream for most of its 6 s, and
/// each of its two connections to the SYN black hole waits its 4 s (from the first SYN, read
/// from `retrans_stamp`).
fn time_lost(pmtu: &Value, syn: &Value) -> Result<String, String> {
    let cong = hook(pmtu, "tcp:tcp_cong_state_set")?;
    let timed = if cong["status"] == "attached" {
        "event timestamps"
    } else {
        let settle = hook(pmtu, "time_lost_settle")?;
        if cong["status"] != "off" || settle["status"] != "attached" {
            return Err(format!("{cong} / {settle}"));
        }
        "the kernel's counters"
    };
    let stall = lost(pmtu, "netns:app", ":5432", "rto_stall_seconds")?;
    let window = pmtu["duration_s"].as_f64().unwrap_or(0.0);
    if !(3.0..=window).contains(&stall) {
        return Err(format!("app stalled {stall} s in a {window} s window"));
    }
    let waited = lost(syn, "netns:app", ":5433", "syn_retry_seconds")?;
    let estimated = lost(syn, "netns:app", ":5433", "syn_start_estimated")?;
    if !(7.0..=9.0).contains(&waited) || estimated > 0.0 {
        return Err(format!(
            "two 4 s handshakes waited {waited} s ({estimated} estimated)"
        ));
    }
    for (report, what) in [(pmtu, "pmtu"), (syn, "syn")] {
        let web = lost(report, "netns:web", "", "rto_stall_seconds")?
            + lost(report, "netns:web", "", "syn_retry_seconds")?;
        if web > 0.0 {
            return Err(format!("web lost {web} s in {what}"));
        }
    }
    Ok(format!(
        "stall {stall:.2} s of {window:.0} s, SYN waits {waited:.2} s; timed from {timed}"
    ))
}

fn conntrack_full(report: &Value) -> Result<String, String> {
    let f = finding(report, "host", "conntrack_full")?;
    let flows = f["flows"].to_string();
    if f["severity"] != "high" || !flows.contains("netns:app") || flows.contains("netns:web") {
        return Err(format!("{f}"));
    }
    none_for(report, "netns:web")?;
    let host = array(report, "conntrack")?
        .iter()
        .find(|c| c["namespace"] == "host")
        .ok_or("no host conntrack")?;
    Ok(format!(
        "drop +{}, early_drop +{}",
        host["drop"], host["early_drop"]
    ))
}

/// The loaded programs of ours in a `bpftool prog show` section.
pub(crate) fn our_programs<'a>(
    console: &'a Console,
    section: &str,
) -> Result<Vec<&'a str>, String> {
    Ok(programs(console.section(section)?, PROGRAMS))
}

/// The sum of a metric's samples in the `metrics` section.
pub(crate) fn metric(console: &Console, name: &str, labels: &[&str]) -> Result<f64, String> {
    sample(console.section("metrics")?, name, labels)
        .ok_or_else(|| format!("/metrics has no {name}{{{}}}", labels.join(",")))
}

#[cfg(test)]
mod tests;
