//! What the guest printed, read into sections and facts, and the checks made on it. Pure: the
//! guest only runs commands; every comparison happens here.

use std::collections::BTreeMap;

use serde_json::Value;

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

    fn section(&self, name: &str) -> Result<&str, String> {
        self.sections
            .get(name)
            .map(|(body, _)| body.as_str())
            .ok_or_else(|| format!("the guest printed no `{name}` section"))
    }
}

/// One check's outcome.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) name: &'static str,
    pub(crate) result: Result<String, String>,
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

/// Every check on one guest run.
pub(crate) fn run_all(console: &Console) -> Vec<Outcome> {
    let report = console
        .section("report")
        .and_then(|r| serde_json::from_str::<Value>(r).map_err(|e| format!("report JSON: {e}")));
    let mut outcomes = vec![
        check("guest ran to the end", || {
            console
                .done
                .then(|| "=== DONE".to_owned())
                .ok_or_else(|| "no === DONE".to_owned())
        }),
        check("the guest lab was set up", || lab_set_up(console)),
        check("diagnose exits 0", || {
            match console.facts.get("diagnose-exit").map(String::as_str) {
                Some("0") => Ok("exit 0".to_owned()),
                other => Err(format!("exit {other:?}")),
            }
        }),
    ];
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            outcomes.push(Outcome {
                name: "the report parses",
                result: Err(e),
            });
            return outcomes;
        }
    };
    outcomes.push(check("the retransmit and drop hooks attach", || {
        hooks_attach(&report)
    }));
    outcomes.push(check("the NAT-leak watch attaches to the uplink", || {
        nat_leak_watch(&report)
    }));
    outcomes.push(check(
        "the retransmit hook matches the tracepoint's layout",
        || retransmit_layout(&report, console.section("tracepoint-format")?),
    ));
    for ns in ["app", "web"] {
        outcomes.push(check(
            if ns == "app" {
                "app: flow segments = its RetransSegs"
            } else {
                "web: flow segments = its RetransSegs"
            },
            || exact_retransmits(&report, console, ns),
        ));
    }
    outcomes.push(check(
        "app: its drops equal the iptables rule's counter",
        || drops_equal_rule(&report, console.section("iptables-drops")?),
    ));
    outcomes.push(check("app has local_drops, web no finding", || {
        findings(&report)
    }));
    outcomes
}

/// The lab's own commands (modules, NAT, loss) succeeded: otherwise the rest means nothing.
fn lab_set_up(console: &Console) -> Result<String, String> {
    let mut done = Vec::new();
    for name in ["modprobe", "nat", "loss"] {
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

fn check(name: &'static str, f: impl FnOnce() -> Result<String, String>) -> Outcome {
    Outcome { name, result: f() }
}

fn array<'a>(report: &'a Value, key: &str) -> Result<&'a Vec<Value>, String> {
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

/// The `pkts` of the statistic DROP rule in `iptables -L FORWARD -v -x -n`.
pub(crate) fn rule_packets(listing: &str) -> Result<u64, String> {
    listing
        .lines()
        .find(|l| l.contains("DROP") && l.contains("statistic"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no statistic DROP rule in {listing:?}"))
}

fn drops_equal_rule(report: &Value, listing: &str) -> Result<String, String> {
    let rule = rule_packets(listing)?;
    let counted: u64 = array(report, "drops")?
        .iter()
        .filter(|d| d["workload"] == "netns:app" && d["reason"] == "NETFILTER_DROP")
        .filter_map(|d| d["packets"].as_u64())
        .sum();
    if counted != rule || rule == 0 {
        return Err(format!("NETFILTER_DROP {counted}, the rule dropped {rule}"));
    }
    Ok(format!("{counted} = {rule}"))
}

fn findings(report: &Value) -> Result<String, String> {
    let all = array(report, "findings")?;
    let about = |w: &str| {
        all.iter()
            .filter(|f| f["workload"] == w)
            .collect::<Vec<_>>()
    };
    let app = about("netns:app");
    if !app.iter().any(|f| f["id"] == "local_drops") {
        return Err(format!("no local_drops for netns:app: {app:?}"));
    }
    let web = about("netns:web");
    if !web.is_empty() {
        return Err(format!("netns:web should have none: {web:?}"));
    }
    let ids: Vec<&str> = app.iter().filter_map(|f| f["id"].as_str()).collect();
    Ok(format!("app: {}", ids.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str =
        "Tcp: RtoAlgorithm RtoMin OutSegs RetransSegs InErrs\nTcp: 1 200 1000 42 0\n";

    #[test]
    fn console_sections_and_facts() {
        let text = "noise\r\n\u{1b}c\u{1b}[2J=== FACT kernel=6.1.0\n=== BEGIN a\nx\ny\n=== END rc=3\n=== DONE\n";
        let c = Console::parse(text);
        assert_eq!(c.facts["kernel"], "6.1.0");
        assert_eq!(c.sections["a"], ("x\ny\n".to_owned(), 3));
        assert!(c.done);
        assert!(!Console::parse("=== BEGIN a\nunfinished").done);
    }

    #[test]
    fn reads_retrans_segs_and_rule_packets() {
        assert_eq!(retrans_segs(SNMP), Ok(42));
        assert!(retrans_segs("Tcp: x\n").is_err());
        let listing = "Chain FORWARD (policy ACCEPT 0 packets, 0 bytes)\n    pkts      bytes target prot opt in out source destination\n      17     1234 DROP   0    --  *  *   198.18.100.2 0.0.0.0/0 statistic mode random probability 0.05000000000\n";
        assert_eq!(rule_packets(listing), Ok(17));
    }

    fn console_with(app_after: u64, report: &Value) -> Console {
        let snmp = |n: u64| (format!("Tcp: RetransSegs\nTcp: {n}\n"), 0);
        let mut c = Console {
            done: true,
            ..Console::default()
        };
        c.facts.insert("diagnose-exit".into(), "0".into());
        for (name, n) in [
            ("snmp-before-app", 10),
            ("snmp-after-app", app_after),
            ("snmp-before-web", 0),
            ("snmp-after-web", 0),
        ] {
            c.sections.insert(name.into(), snmp(n));
        }
        for name in ["modprobe", "nat", "loss"] {
            c.sections.insert(name.into(), (String::new(), 0));
        }
        c.sections.insert(
            "tracepoint-format".into(),
            ("field:__u16 sport;\n".into(), 0),
        );
        c.sections.insert(
            "iptables-drops".into(),
            ("      5  100 DROP statistic\n".into(), 0),
        );
        c.sections.insert("report".into(), (report.to_string(), 0));
        c
    }

    fn report() -> Value {
        serde_json::json!({
            "hooks": [
                {"name": "tcp:tcp_retransmit_skb", "kind": "tp_btf", "status": "attached",
                 "detail": "no `err` field (kernel < 6.17)"},
                {"name": "skb:kfree_skb", "kind": "tp_btf", "status": "attached", "detail": ""},
                {"name": "tc egress (uplinks)", "kind": "tc", "status": "attached",
                 "detail": "untranslated sources from 198.18.100.0/24 leaving gmh-db-host"}
            ],
            "flows": [{"workload": "netns:app", "retransmitted_segments": 7}],
            "drops": [{"workload": "netns:app", "reason": "NETFILTER_DROP", "packets": 5}],
            "findings": [{"id": "local_drops", "workload": "netns:app"}]
        })
    }

    #[test]
    fn a_matching_run_passes_every_check() {
        let outcomes = run_all(&console_with(17, &report()));
        let failed: Vec<_> = outcomes.iter().filter(|o| o.result.is_err()).collect();
        assert!(failed.is_empty(), "{failed:#?}");
        assert_eq!(outcomes.len(), 10);
    }

    #[test]
    fn a_count_off_by_one_fails_its_check_by_name() {
        let outcomes = run_all(&console_with(18, &report()));
        let failed: Vec<_> = outcomes.iter().filter(|o| o.result.is_err()).collect();
        assert_eq!(failed.len(), 1, "{failed:#?}");
        assert_eq!(failed[0].name, "app: flow segments = its RetransSegs");
        assert!(
            failed[0]
                .result
                .as_ref()
                .unwrap_err()
                .contains("flows 7, RetransSegs grew by 8")
        );
    }

    #[test]
    fn a_hook_claiming_the_wrong_layout_fails() {
        let mut r = report();
        r["hooks"][0]["detail"] = "`err` field present".into();
        let outcomes = run_all(&console_with(17, &r));
        let failed: Vec<_> = outcomes
            .iter()
            .filter(|o| o.result.is_err())
            .map(|o| o.name)
            .collect();
        assert_eq!(
            failed,
            ["the retransmit hook matches the tracepoint's layout"]
        );
    }
}
