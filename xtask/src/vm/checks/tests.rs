use serde_json::json;

use super::*;

fn snmp(n: u64) -> (String, i32) {
    (format!("Tcp: RetransSegs\nTcp: {n}\n"), 0)
}

fn loss_report() -> Value {
    json!({
        "hooks": [
            {"name": "tcp:tcp_retransmit_skb", "kind": "tp_btf", "status": "attached",
             "detail": "no `err` field (kernel < 6.17)"},
            {"name": "skb:kfree_skb", "kind": "tp_btf", "status": "attached", "detail": ""},
            {"name": "__nf_conntrack_confirm", "kind": "kprobe", "status": "attached",
             "detail": "", "runs": 2},
            {"name": "tc egress (uplinks)", "kind": "tc", "status": "attached",
             "detail": "untranslated sources from 198.18.100.0/24 leaving gmh-db-host"},
            {"name": "bpf_iter_task", "kind": "iter", "status": "attached", "detail": ""}
        ],
        "flows": [{"workload": "netns:app", "retransmitted_segments": 7}],
        "drops": [{"workload": "netns:app", "reason": "NETFILTER_DROP", "packets": 5}],
        "findings": [{"id": "local_drops", "workload": "netns:app"}]
    })
}

fn scenario_reports() -> [(&'static str, Value); 3] {
    [
        (
            "pmtu",
            json!({
                "duration_s": 8.0,
                "hooks": [{"name": "tcp:tcp_cong_state_set", "status": "attached", "detail": "x"}],
                "flows": [{"workload": "netns:app", "remote": "198.19.0.2:5432",
                           "time_lost": {"rto_stall_seconds": 5.2}}],
                "drops": [{"workload": "netns:app", "reason": "PKT_TOO_BIG", "packets": 9,
                           "icmp_too_big": 9}],
                "findings": [{"id": "path_mtu", "workload": "netns:app", "severity": "high"}]
            }),
        ),
        (
            "syn",
            json!({
                "flows": [{"workload": "netns:app", "remote": "198.19.0.2:5433",
                           "kinds": {"syn": 2},
                           "time_lost": {"syn_retry_seconds": 4.0, "syn_start_estimated": 0}},
                          {"workload": "netns:app", "remote": "198.19.0.2:5433",
                           "kinds": {"syn": 2},
                           "time_lost": {"syn_retry_seconds": 4.0, "syn_start_estimated": 0}}],
                "findings": [{"id": "syn_retransmits", "workload": "netns:app",
                              "flows": ["-> 198.19.0.2:5433"]}]
            }),
        ),
        (
            "conntrack",
            json!({
                "conntrack": [{"namespace": "host", "drop": 20, "early_drop": 0}],
                "findings": [{"id": "conntrack_full", "workload": "host", "severity": "high",
                              "flows": ["netns:app 198.18.100.2:40000 -> 198.19.0.2:5432"]}]
            }),
        ),
    ]
}

const METRICS: &str = "galmanhae_tcp_retransmit_segments_total{workload=\"netns:app\",remote=\"198.19.0.2:5432\"} 11\n\
galmanhae_hook_up{hook=\"tcp:tcp_retransmit_skb\",kind=\"tp_btf\",status=\"attached\",required=\"true\"} 1\n\
galmanhae_hook_up{hook=\"skb:kfree_skb\",kind=\"tp_btf\",status=\"attached\",required=\"true\"} 1\n\
galmanhae_hook_up{hook=\"tc egress (uplinks)\",kind=\"tc\",status=\"attached\",required=\"true\"} 1\n";

/// A guest run in which everything went as it should.
fn console_with(app_after: u64) -> Console {
    let mut c = Console {
        done: true,
        ..Console::default()
    };
    let mut put = |name: &str, body: &str| {
        c.sections.insert(name.into(), (body.to_owned(), 0));
    };
    for name in [
        "modprobe",
        "nat",
        "loss",
        "pmtu",
        "syn",
        "conntrack",
        "tc-after",
    ] {
        put(name, "");
    }
    put("tracepoint-format", "field:__u16 sport;\n");
    put("iptables-drops", "      5  100 DROP statistic\n");
    put("conntrack-count-before-loss", "0\n");
    put("conntrack-count-after-loss", "2\n");
    put("report-loss", &loss_report().to_string());
    for (name, report) in scenario_reports() {
        put(&format!("report-{name}"), &report.to_string());
    }
    put("metrics", METRICS);
    put("run-stderr", "SIGTERM: detaching and exiting\n");
    put("bpf-before", "");
    put(
        "bpf-during",
        "1: tracing  name tcp_rtx_skb_btf  tag a\n2: tracing  name kfree_skb_btf  tag b\n3: sched_cls  name nat_leak_egress  tag c\n",
    );
    put(
        "tc-during",
        "filter protocol all pref 49152 bpf nat_leak_egress direct-action\n",
    );
    put("bpf-after", "");
    put("qdisc-after", "qdisc noqueue 0: root refcnt 2\n");
    for (name, n) in [
        ("snmp-before-app", 10),
        ("snmp-after-app", app_after),
        ("snmp-before-web", 0),
        ("snmp-after-web", 0),
        ("run-snmp-before", 100),
        ("run-snmp-after", 111),
    ] {
        c.sections.insert(name.into(), snmp(n));
    }
    for scenario in SCENARIOS {
        c.facts
            .insert(format!("diagnose-exit-{scenario}"), "0".into());
    }
    c.facts.insert("run-exit".into(), "0".into());
    c
}

fn failed(c: &Console) -> Vec<(&'static str, String)> {
    run_all(c)
        .into_iter()
        .filter_map(|o| o.result.err().map(|e| (o.name, e)))
        .collect()
}

#[test]
fn a_matching_run_passes_every_check() {
    let c = console_with(17);
    assert_eq!(failed(&c), []);
    assert_eq!(run_all(&c).len(), 20);
}

#[test]
fn a_count_off_by_one_fails_its_check_by_name() {
    let failed = failed(&console_with(18));
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0].0, "app: flow segments = its RetransSegs");
    assert!(failed[0].1.contains("flows 7, RetransSegs grew by 8"));
}

#[test]
fn a_hook_claiming_the_wrong_layout_fails() {
    let mut c = console_with(17);
    let mut r = loss_report();
    r["hooks"][0]["detail"] = "`err` field present".into();
    c.sections.insert("report-loss".into(), (r.to_string(), 0));
    let names: Vec<_> = failed(&c).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["the retransmit hook matches the tracepoint's layout"]
    );
}

#[test]
fn a_finding_for_the_healthy_namespace_fails() {
    let mut c = console_with(17);
    let (_, mut pmtu) = scenario_reports().into_iter().next().unwrap();
    pmtu["findings"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "path_mtu", "workload": "netns:web"}));
    c.sections
        .insert("report-pmtu".into(), (pmtu.to_string(), 0));
    let names: Vec<_> = failed(&c).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["pmtu: app has a high path_mtu, web none"]);
}

#[test]
fn a_program_left_loaded_after_exit_fails() {
    let mut c = console_with(17);
    c.sections.insert(
        "bpf-after".into(),
        ("3: sched_cls  name nat_leak_egress  tag c\n".into(), 0),
    );
    c.sections.insert(
        "qdisc-after".into(),
        ("qdisc clsact ffff: parent ffff:fff1\n".into(), 0),
    );
    let failed = failed(&c);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(
        failed[0].0,
        "run: nothing of it is left in the kernel after exit"
    );
}

#[test]
fn conntrack_runs_must_equal_new_entries() {
    let mut c = console_with(17);
    c.sections
        .insert("conntrack-count-after-loss".into(), ("3\n".into(), 0));
    let names: Vec<_> = failed(&c).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["the conntrack hook runs once per new entry"]);
}

#[test]
fn time_lost_from_the_kernels_counters_needs_the_settling_program() {
    let with_hooks = |hooks: Value| {
        let mut c = console_with(17);
        let (_, mut pmtu) = scenario_reports().into_iter().next().unwrap();
        pmtu["hooks"] = hooks;
        c.sections
            .insert("report-pmtu".into(), (pmtu.to_string(), 0));
        failed(&c).into_iter().map(|(n, _)| n).collect::<Vec<_>>()
    };
    let counters = json!([
        {"name": "tcp:tcp_cong_state_set", "status": "off", "detail": "x"},
        {"name": "time_lost_settle", "status": "attached", "detail": "y"}
    ]);
    assert_eq!(with_hooks(counters), Vec::<&str>::new());
    let unsettled = json!([
        {"name": "tcp:tcp_cong_state_set", "status": "off", "detail": "x"},
        {"name": "time_lost_settle", "status": "failed", "detail": "y"}
    ]);
    assert_eq!(with_hooks(unsettled).len(), 1);
}
