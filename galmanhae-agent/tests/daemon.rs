//! Root integration tests of `galmanhae run`: a real Prometheus server (Debian's package, on
//! loopback) scrapes the daemon during a lab fault; shutdown, bad input, concurrent scrapes.
//!
//! Run by `cargo xtask test` (one at a time: one kernel, one lab). Without root they skip,
//! except with `CI=true`, where a missing capability is a failure.
#![expect(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

mod common;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{GALMANHAE, Scenario, describe, fails, privileged, retrans_segs, stream_from};
use galmanhae_lab::{
    DB_PORT, DB_V4,
    fault::{self, Target},
    free_loopback_address, stream,
};
use serde_json::Value;

/// Our programs' names, as `bpftool prog show` lists them.
const PROGRAMS: [&str; 10] = [
    "tcp_rtx_skb_btf",
    "tcp_cong_state_set",
    "time_lost_settle",
    "inet_sock_set_state",
    "kfree_skb_btf",
    "tcp_retransmit_skb",
    "tcp_retransmit_synack",
    "kfree_skb",
    "nat_leak_egress",
    "conntrack_confirm",
];

/// curl `url` with `extra_curl_args` (a header, or `--data-urlencode` for a POST); the HTTP
/// status (0 if there was no answer) and the body.
fn http_get(url: &str, extra_curl_args: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20"])
        .args(extra_curl_args)
        .arg(url)
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A running `galmanhae run`, killed if the test fails before it stops it.
struct Daemon {
    child: Option<Child>,
    url: String,
}

impl Daemon {
    fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let listen = free_loopback_address().expect("a free port").to_string();
        let child = Command::new(GALMANHAE)
            .args(["run", "--log-level", "info", "--listen", &listen])
            .args(extra)
            .env_remove("GALMANHAE_CONFIG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting galmanhae run");
        let mut daemon = Self {
            child: Some(child),
            url: format!("http://{listen}"),
        };
        let healthz = format!("{}/healthz", daemon.url);
        let mut exited = None;
        galmanhae_lab::wait_for(
            Duration::from_secs(30),
            "galmanhae run to be healthy",
            || {
                exited = daemon
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                exited.is_some() || http_get(&healthz, &[]).0 == 200
            },
        )
        .expect("galmanhae run serves /healthz");
        assert!(exited.is_none(), "galmanhae run exited: {exited:?}");
        daemon
    }

    fn metrics(&self) -> String {
        let (code, body) = http_get(&format!("{}/metrics", self.url), &[]);
        assert_eq!(code, 200, "GET /metrics: {body}");
        body
    }

    /// SIGTERM; the exit status and how long it took.
    fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let sent = Instant::now();
        galmanhae_lab::signal(&child, libc::SIGTERM).expect("SIGTERM");
        loop {
            if let Some(status) = child.try_wait().expect("waiting for galmanhae") {
                return (status, sent.elapsed());
            }
            assert!(
                sent.elapsed() < Duration::from_secs(10),
                "galmanhae run still running 10 s after SIGTERM"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A throwaway Prometheus on loopback scraping `target` every second; data in a temp dir.
struct Prometheus {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        Self::start_with_rules(target, None)
    }

    /// With `rules`, Prometheus evaluates that rule file every second.
    fn start_with_rules(target: &str, rules: Option<&std::path::Path>) -> Self {
        let dir = std::env::temp_dir().join(format!("galmanhae-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let rule_files = rules
            .map(|r| format!("rule_files:\n  - '{}'\n", r.display()))
            .unwrap_or_default();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rule_files}\
             scrape_configs:\n  - job_name: galmanhae\n    static_configs:\n      \
             - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("writing prometheus.yml");
        let address = free_loopback_address().expect("a free port");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("a log file");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus (Debian: apt-get install prometheus)");
        let prometheus = Self {
            child,
            url: format!("http://{address}"),
            dir,
        };
        galmanhae_lab::wait_for(Duration::from_secs(30), "prometheus to be ready", || {
            http_get(&format!("{}/-/ready", prometheus.url), &[]).0 == 200
        })
        .expect("prometheus starts");
        prometheus
    }

    /// An instant query's result vector, as (labels, value).
    fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let (_, body) = http_get(
            &format!("{}/api/v1/query", self.url),
            &["--data-urlencode", &format!("query={promql}")],
        );
        let answer: Value = serde_json::from_str(&body).expect("a JSON answer");
        assert_eq!(answer["status"], "success", "{promql}: {answer}");
        answer["data"]["result"]
            .as_array()
            .expect("a vector")
            .iter()
            .map(|sample| {
                let labels = sample["metric"]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let value = sample["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .expect("a value");
                (labels, value)
            })
            .collect()
    }

    /// How many alerting rules Prometheus has loaded.
    fn loaded_rules(&self) -> usize {
        let (_, body) = http_get(&format!("{}/api/v1/rules?type=alert", self.url), &[]);
        let answer: Value = serde_json::from_str(&body).unwrap_or_default();
        answer["data"]["groups"].as_array().map_or(0, |groups| {
            groups
                .iter()
                .filter_map(|g| g["rules"].as_array())
                .map(Vec::len)
                .sum()
        })
    }

    fn value_for(&self, promql: &str, workload: &str) -> Option<f64> {
        self.query(promql)
            .into_iter()
            .find(|(labels, _)| labels.get("workload").map(String::as_str) == Some(workload))
            .map(|(_, value)| value)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `bpftool -j ARGS` as JSON.
fn bpftool_json(args: &[&str]) -> Value {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let listing = galmanhae_lab::run("bpftool", &all).expect("bpftool");
    serde_json::from_str(&listing).expect("bpftool's JSON")
}

fn loaded_programs() -> Vec<String> {
    let listing = bpftool_json(&["prog", "show"]);
    let names: Vec<&str> = listing
        .as_array()
        .expect("a list of programs")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    // The kernel keeps 15 characters of a program's name.
    PROGRAMS
        .iter()
        .filter(|p| names.contains(&&p[..p.len().min(15)]))
        .map(|p| (*p).to_owned())
        .collect()
}

/// Every sample of an exposition as `name{labels}` -> value.
fn samples(exposition: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

const RATIO: &str = "sum by (workload) (rate(galmanhae_tcp_retransmitted_segments_total[20s])) \
                     / sum by (workload) (rate(galmanhae_tcp_sent_segments_total[20s]))";

#[test]
fn prometheus_sees_the_lossy_containers_ratio_and_not_the_healthy_ones() {
    if !privileged() {
        return;
    }
    let mut scenario = Scenario::new();
    scenario.container("t-lossy", &[]);
    // A tail-loss probe fires after 2 RTTs + 2 jiffies without an ACK: any 8 ms scheduling
    // stall of a busy 2-CPU CI machine makes one, real and counted by the kernel (the db then
    // drops TCP_OLD_SEQUENCE). Not this test's point, so the healthy container sends none.
    scenario.container("t-healthy", &["--sysctl", "net.ipv4.tcp_early_retrans=0"]);
    fault::loss(5.0, &Target::Container("t-lossy".to_owned())).expect("injecting loss");
    let daemon = Daemon::start(&[]);
    let prometheus = Prometheus::start(daemon.url.trim_start_matches("http://"));
    galmanhae_lab::wait_for(
        Duration::from_secs(20),
        "a first scrape of the containers",
        || {
            prometheus
                .query("galmanhae_tcp_sent_segments_total{workload=~\"t-lossy|t-healthy\"}")
                .len()
                == 2
        },
    )
    .expect("Prometheus has the containers' series before their traffic");

    // One after the other, the healthy first: it must not share the path with the lossy one.
    let healthy_pid = galmanhae_lab::docker::pid("t-healthy").expect("t-healthy's pid");
    let healthy_before = retrans_segs(healthy_pid);
    // Small, for the same reason: a bulk stream now and then has a spurious fast retransmit.
    stream_from("t-healthy", DB_V4, 50_000);
    let healthy_retransmitted = retrans_segs(healthy_pid) - healthy_before;
    stream_from("t-lossy", DB_V4, 20_000_000);
    // A few more scrapes so that the last counts are in Prometheus.
    thread::sleep(Duration::from_secs(4));

    let lossy = prometheus.value_for(RATIO, "t-lossy");
    let healthy = prometheus.value_for(RATIO, "t-healthy");
    eprintln!("retransmit ratio: t-lossy {lossy:?}, t-healthy {healthy:?}");
    let lossy = lossy.expect("a ratio for t-lossy");
    assert!(lossy > 0.0, "the lossy container's ratio is {lossy}");
    assert_eq!(
        healthy_retransmitted,
        0,
        "the kernel counted retransmits for the healthy container: the lab is not quiet: {:?} {:?}",
        prometheus.query("galmanhae_tcp_retransmits_total{workload=\"t-healthy\"}"),
        prometheus.query("galmanhae_skb_drops_total")
    );
    assert_eq!(healthy, Some(0.0), "the healthy container's ratio");

    // The kernel hooks name the server side and the kind.
    let remotes = prometheus
        .query("sum by (workload, remote) (galmanhae_tcp_retransmits_total{kind!=\"failed\"})");
    let to_db = format!("{DB_V4}:{DB_PORT}");
    assert!(
        remotes
            .iter()
            .any(|(l, v)| l["workload"] == "t-lossy" && l["remote"] == to_db && *v > 0.0),
        "no retransmits of t-lossy to {to_db}: {remotes:?}"
    );
    assert!(
        !remotes.iter().any(|(l, _)| l["workload"] == "t-healthy"),
        "t-healthy has retransmit series: {remotes:?}"
    );
    kernel_entries_are_served(&daemon);
    new_counters_start_at_zero(&prometheus);
    // Workload labels of the segment counters.
    let labels = prometheus.query("galmanhae_tcp_sent_segments_total{workload=\"t-lossy\"}");
    assert_eq!(labels.len(), 1, "{labels:?}");
    assert_eq!(labels[0].0["workload_kind"], "container");
    assert_eq!(labels[0].0["runtime"], "docker");
    assert_eq!(
        labels[0].0["container_id"],
        galmanhae_lab::docker::id("t-lossy").expect("the container id")
    );

    // Every dashboard and alert expression runs against this Prometheus and real data.
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let checks = Command::new("python3")
        .arg(deploy.join("checks.py"))
        .args(["promql", &prometheus.url])
        .output()
        .expect("running deploy/checks.py");
    assert!(
        checks.status.success(),
        "deploy PromQL: {}",
        describe(&checks)
    );

    // What the daemon serves is what METRICS.md documents.
    let contract = std::fs::read_to_string(deploy.join("METRICS.md")).expect("METRICS.md");
    for line in daemon.metrics().lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|l| l.split(' ').next())
        {
            assert!(
                contract.contains(&format!("`{name}")),
                "{name} is not in METRICS.md"
            );
        }
    }

    concurrent_scrapes_are_consistent(&daemon);
    drop(prometheus);

    let (status, took) = daemon.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    // Tracing programs are freed after an RCU grace period, a moment after their last link.
    let unloaded = galmanhae_lab::wait_for(Duration::from_secs(3), "programs to unload", || {
        loaded_programs().is_empty()
    });
    assert!(
        unloaded.is_ok(),
        "programs left loaded: {:?}",
        loaded_programs()
    );
}

/// The shipped alert rules, evaluated every second by a real Prometheus scraping the daemon:
/// none is even pending on a healthy lab with traffic for over a minute; then drops on one
/// container's path make its drop alert pending, and no alert names the control.
#[test]
fn shipped_alerts_stay_quiet_on_a_healthy_host_and_a_drop_fault_is_pending() {
    if !privileged() {
        return;
    }
    let mut scenario = Scenario::new();
    for name in ["t-drops", "t-control"] {
        // No tail-loss probes from scheduling stalls of a busy CI machine (see above).
        scenario.container(name, &["--sysctl", "net.ipv4.tcp_early_retrans=0"]);
    }
    let daemon = Daemon::start(&[]);
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/prometheus/galmanhae-alerts.yml")
        .canonicalize()
        .expect("deploy/prometheus/galmanhae-alerts.yml");
    let prometheus =
        Prometheus::start_with_rules(daemon.url.trim_start_matches("http://"), Some(&rules));
    let shipped = std::fs::read_to_string(&rules)
        .expect("the rule file")
        .matches("- alert: ")
        .count();
    galmanhae_lab::wait_for(Duration::from_secs(20), "the rules and a scrape", || {
        prometheus.loaded_rules() == shipped && !prometheus.query("galmanhae_hook_up").is_empty()
    })
    .expect("Prometheus loads every shipped rule and scrapes the daemon");

    let healthy_since = Instant::now();
    while healthy_since.elapsed() < Duration::from_secs(65) {
        stream_from("t-control", DB_V4, 200_000);
        stream_from("t-drops", DB_V4, 200_000);
        thread::sleep(Duration::from_secs(2));
    }
    let window = healthy_since.elapsed().as_secs();
    let alerts = prometheus.query(&format!("count_over_time(ALERTS[{window}s])"));
    assert!(
        alerts.is_empty(),
        "alerts on a healthy lab within {window} s: {alerts:?}; hooks {:?}, collectors {:?}",
        prometheus.query("galmanhae_hook_up"),
        prometheus.query("galmanhae_collector_up")
    );

    fault::loss(20.0, &Target::Container("t-drops".to_owned())).expect("injecting loss");
    let pending = "ALERTS{alertname=\"GalmanhaePacketDrops\",alertstate=\"pending\",\
                   workload=\"t-drops\",reason=\"NETFILTER_DROP\"}";
    let fault_since = Instant::now();
    // rate(...[5m]) divides a new series' increase by the whole 5 m: it passes 1/s once 300
    // drops are in, which a stream stalled in RTO backoff can take over a minute to reach.
    while prometheus.query(pending).is_empty() {
        assert!(
            fault_since.elapsed() < Duration::from_secs(150),
            "no pending drop alert for t-drops after 150 s: {:?}; drops {:?}",
            prometheus.query("ALERTS"),
            prometheus.query("galmanhae_skb_drops_total")
        );
        stream_from("t-drops", DB_V4, 2_000_000);
        stream_from("t-control", DB_V4, 200_000);
    }
    let control = prometheus.query("ALERTS{workload=\"t-control\"}");
    assert!(control.is_empty(), "alerts for the control: {control:?}");
}

/// Scrapes at once, while traffic runs: each is a complete exposition, and their states are
/// ordered (every counter of one is at most the same counter of the other).
fn concurrent_scrapes_are_consistent(daemon: &Daemon) {
    let traffic = thread::spawn(|| stream_from("t-lossy", DB_V4, 10_000_000));
    let url = format!("{}/metrics", daemon.url);
    let scrapes: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            thread::spawn(move || {
                let accept: &[&str] = if i % 2 == 0 {
                    &["-H", "Accept: application/openmetrics-text"]
                } else {
                    &[]
                };
                http_get(&url, accept)
            })
        })
        .collect();
    let bodies: Vec<(u16, String)> = scrapes
        .into_iter()
        .map(|s| s.join().expect("a scrape"))
        .collect();
    traffic.join().expect("the stream");
    let mut states = Vec::new();
    for (code, body) in &bodies {
        assert_eq!(*code, 200);
        assert!(body.contains("galmanhae_build_info{"), "incomplete: {body}");
        let openmetrics = body.ends_with("# EOF\n");
        let counters: BTreeMap<String, f64> = samples(body)
            .into_iter()
            .filter(|(series, _)| series.contains("_total") && !series.contains("_created"))
            .collect();
        states.push((openmetrics, counters));
    }
    assert!(states.iter().any(|(om, _)| *om) && states.iter().any(|(om, _)| !*om));
    for (_, a) in &states {
        for (_, b) in &states {
            let a_le_b = a.iter().all(|(k, v)| b.get(k).is_none_or(|w| v <= w));
            let b_le_a = b.iter().all(|(k, v)| a.get(k).is_none_or(|w| v <= w));
            assert!(a_le_b || b_le_a, "two scrapes saw interleaved states");
        }
    }
}

/// The BTF program counts per socket: its map's fill is served (unless the classic programs
/// ran instead, which count per flow).
fn kernel_entries_are_served(daemon: &Daemon) {
    let served = samples(&daemon.metrics());
    let entries = |map: &str| {
        let series = format!("galmanhae_bpf_map_entries{{map=\"{map}\"}}");
        *served
            .get(&series)
            .unwrap_or_else(|| panic!("{series} is not served"))
    };
    assert!(
        entries("retransmit_sockets") + entries("retransmit_flows") > 0.0,
        "no kernel entries for the lossy stream's sockets or flows"
    );
}

/// Retransmit series appeared with the daemon running: each was first scraped at zero, so that
/// `increase()` sees its first retransmits.
fn new_counters_start_at_zero(prometheus: &Prometheus) {
    let first = prometheus
        .query("min_over_time(galmanhae_tcp_retransmit_segments_total{workload=\"t-lossy\"}[10m])");
    assert!(
        !first.is_empty(),
        "no retransmit segment series for t-lossy"
    );
    assert!(
        first.iter().all(|(_, v)| *v == 0.0),
        "a new counter was first served with its count in it: {first:?}"
    );
}

/// The series of a workload, as the daemon serves them now.
fn series_of(daemon: &Daemon, workload: &str) -> BTreeMap<String, f64> {
    let label = format!("workload=\"{workload}\"");
    samples(&daemon.metrics())
        .into_iter()
        .filter(|(series, _)| series.contains(&label))
        .collect()
}

#[test]
fn time_lost_is_served_equal_to_the_sockets_own() {
    if !privileged() {
        return;
    }
    let mut scenario = Scenario::new();
    scenario.container("t-stall", &[]);
    let daemon = Daemon::start(&[]);
    let db = DB_V4.parse().expect("the db address");
    let culprit = thread::spawn(move || {
        stream::paced_stream("t-stall", db, DB_PORT, Duration::from_secs(10))
    });
    thread::sleep(Duration::from_secs(2));
    fault::blackhole(&Target::Container("t-stall".to_owned())).expect("black hole");
    thread::sleep(Duration::from_secs(3));
    fault::clear_all(false).expect("lifting the black hole");
    let culprit = culprit.join().expect("the stream").expect("the stream");
    let kernel = f64::from(culprit.total_rto_time_ms) / 1000.0;
    let stall = format!(
        "galmanhae_tcp_rto_stall_seconds_total{{workload=\"t-stall\",remote=\"{DB_V4}:{DB_PORT}\"}}"
    );
    let count = "galmanhae_tcp_rto_stall_duration_seconds_count{workload=\"t-stall\"}";
    let mut served = BTreeMap::new();
    // A new series is served at zero first, its count from the next pass on.
    let settled = galmanhae_lab::wait_for(Duration::from_secs(25), "t-stall's time lost", || {
        served = series_of(&daemon, "t-stall");
        served
            .get(&stall)
            .is_some_and(|v| (v - kernel).abs() <= 0.05)
            && served.get(count).copied() == Some(f64::from(culprit.total_rto_recoveries))
    });
    assert!(
        settled.is_ok() && kernel >= 2.7,
        "tcp_info {kernel} s over {} recoveries ({culprit:?}); served {served:#?}",
        culprit.total_rto_recoveries
    );
    eprintln!("served {:?} s = tcp_info {kernel} s", served.get(&stall));
}

/// The shortest grace period allowed: shorter than a scrape interval, series would flap.
const GRACE: Duration = Duration::from_secs(30);

#[test]
fn a_new_container_is_served_at_once_and_a_removed_one_after_the_grace_period() {
    if !privileged() {
        return;
    }
    let mut scenario = Scenario::new();
    let daemon = Daemon::start(&["--series-grace-period", "30s"]);

    // Started after the daemon: named (Docker API) and labelled in the first scrape's pass.
    scenario.container("t-late", &[]);
    let id = galmanhae_lab::docker::id("t-late").expect("the container id");
    let sent = format!(
        "galmanhae_tcp_sent_segments_total{{workload=\"t-late\",workload_kind=\"container\",\
         container_id=\"{id}\",runtime=\"docker\"}}"
    );
    let started = Instant::now();
    galmanhae_lab::wait_for(Duration::from_secs(5), "t-late's series", || {
        series_of(&daemon, "t-late").contains_key(&sent)
    })
    .expect("a new container's series within a scrape or two");
    eprintln!("t-late served {:?} after it started", started.elapsed());
    stream_from("t-late", DB_V4, 1_000_000);
    // A scrape within a second of the last pass serves that pass: the count follows.
    let mut before = BTreeMap::new();
    let counted = galmanhae_lab::wait_for(Duration::from_secs(5), "t-late's traffic", || {
        before = series_of(&daemon, "t-late");
        before.get(&sent).is_some_and(|v| *v > 0.0)
    });
    assert!(
        counted.is_ok(),
        "t-late's traffic is not counted: {before:?}"
    );

    // Removed: its series keep their last value for the grace period, then go.
    galmanhae_lab::docker::remove_container("t-late").expect("removing t-late");
    let removed = Instant::now();
    let kept = series_of(&daemon, "t-late");
    assert_eq!(
        kept.get(&sent),
        before.get(&sent),
        "t-late's series right after removal"
    );
    galmanhae_lab::wait_for(
        GRACE + Duration::from_secs(15),
        "t-late's series to expire",
        || series_of(&daemon, "t-late").is_empty(),
    )
    .expect("a removed container's series expire after the grace period");
    let gone = removed.elapsed();
    eprintln!("t-late's series went {gone:?} after its removal (grace {GRACE:?})");
    // The namespace was last seen by the scrape just before the removal.
    assert!(
        gone + Duration::from_secs(1) >= GRACE,
        "expired after {gone:?}"
    );

    // SIGTERM while scrapes keep coming: still a clean exit within 2 s.
    let url = format!("{}/metrics", daemon.url);
    let scrapers: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || while http_get(&url, &[]).0 == 200 {})
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let (status, took) = daemon.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        took < Duration::from_secs(2),
        "exit under scrapes took {took:?}"
    );
    for scraper in scrapers {
        scraper.join().expect("a scraper");
    }
}

/// Started as root, the daemon keeps after attach only the capabilities it uses (no
/// `CAP_SYS_ADMIN`, `CAP_PERFMON`, ...), in every set, and still collects from every source.
#[test]
fn after_attach_the_daemon_keeps_only_the_capabilities_it_uses() {
    if !privileged() {
        return;
    }
    let _scenario = Scenario::new();
    let daemon = Daemon::start(&[]);
    let pid = daemon.child.as_ref().expect("running").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    let set = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:\t")))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    // CAP_DAC_READ_SEARCH 2, CAP_NET_ADMIN 12, CAP_SYSLOG 34, CAP_BPF 39; CAP_NET_RAW 13
    // only for iptables-legacy-save. No CAP_SYS_PTRACE (19): the task iterator reads every
    // process's namespace, not /proc/PID/ns/net.
    let legacy = ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"]
        .iter()
        .any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.lines().any(|n| n == "nat")));
    let expected =
        (1u64 << 2) | (1 << 12) | (1 << 34) | (1 << 39) | if legacy { 1 << 13 } else { 0 };
    eprintln!("CapEff after attach: {:016x}", set("CapEff"));
    for name in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(set(name), expected, "{name}: {:016x}", set(name));
    }
    assert_eq!(set("CapAmb"), 0);
    assert_eq!(set("CapInh"), 0);
    // What needs them still works: every required source and hook is up.
    let metrics = daemon.metrics();
    for line in metrics.lines().filter(|l| l.contains("required=\"true\"")) {
        assert!(line.ends_with(" 1"), "down after the drop: {line}");
    }
    let iterator = metrics
        .lines()
        .find(|l| l.starts_with("galmanhae_hook_up{") && l.contains("hook=\"bpf_iter_task\""))
        .unwrap_or_else(|| panic!("no task iterator hook in\n{metrics}"));
    assert!(
        iterator.contains("status=\"attached\"") && iterator.ends_with(" 1"),
        "{iterator}"
    );
}

/// A lab uplink: a veth pair in the host's namespace, both ends up, no address (it sends
/// nothing; not every kernel has the dummy driver), removed even on failure.
struct Uplink(&'static str);

impl Uplink {
    fn add(name: &'static str) -> Self {
        let peer = format!("{name}p");
        galmanhae_lab::run(
            "ip",
            &["link", "add", name, "type", "veth", "peer", "name", &peer],
        )
        .expect("ip link add");
        let uplink = Self(name);
        for end in [name, peer.as_str()] {
            galmanhae_lab::run("ip", &["link", "set", end, "up"]).expect("ip link set up");
        }
        uplink
    }
}

/// The links (TCX, 6.6+) of the NAT-leak program: one per watched uplink. bpftool names
/// neither the link type nor the interface of a TCX link in every version; the count is what
/// it always shows.
fn leak_watch_links() -> usize {
    let programs: Vec<u64> = bpftool_json(&["prog", "show"])
        .as_array()
        .expect("programs")
        .iter()
        .filter(|p| p["name"] == "nat_leak_egress")
        .filter_map(|p| p["id"].as_u64())
        .collect();
    bpftool_json(&["link", "show"])
        .as_array()
        .expect("links")
        .iter()
        .filter(|l| {
            l["prog_id"]
                .as_u64()
                .is_some_and(|id| programs.contains(&id))
        })
        .count()
}

impl Drop for Uplink {
    fn drop(&mut self) {
        let _ = galmanhae_lab::run("ip", &["link", "del", self.0]);
    }
}

/// The NAT-leak watch follows the host after start: an uplink that comes up later is watched
/// within a full pass, one that goes is detached, and the next is watched too.
#[test]
fn the_leak_watch_follows_uplinks_that_come_and_go() {
    if !privileged() {
        return;
    }
    let _scenario = Scenario::new();
    let daemon = Daemon::start(&[]);
    let before = leak_watch_links();
    assert!(before > 0, "the lab's uplink is not watched");
    let links_become = |n: usize, what: &str| {
        galmanhae_lab::wait_for(Duration::from_secs(30), what, || leak_watch_links() == n)
            .unwrap_or_else(|e| panic!("{e}: {} links, not {n}", leak_watch_links()));
    };
    let first = Uplink::add("gmh-up0");
    // Both ends of the pair are uplinks.
    links_become(before + 2, "gmh-up0 and its peer to be watched");
    drop(first);
    links_become(before, "the links of the gone pair to be detached");
    let _second = Uplink::add("gmh-up1");
    links_become(before + 2, "gmh-up1 and its peer to be watched");
    let hooks: Vec<String> = daemon
        .metrics()
        .lines()
        .filter(|l| l.starts_with("galmanhae_hook_up{hook=\"tc egress"))
        .map(str::to_owned)
        .collect();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert!(hooks[0].ends_with(" 1"), "{hooks:?}");
}

#[test]
fn systemd_hears_ready_and_the_watchdog() {
    if !privileged() {
        return;
    }
    // systemd's side of Type=notify and WatchdogSec=2s: a datagram socket.
    let socket = std::env::temp_dir().join(format!("galmanhae-notify-{}", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let systemd = std::os::unix::net::UnixDatagram::bind(&socket).expect("a notify socket");
    systemd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    let path = socket.to_str().expect("a UTF-8 temp path");
    let daemon = Daemon::start_with_env(
        &[],
        &[("NOTIFY_SOCKET", path), ("WATCHDOG_USEC", "2000000")],
    );
    let mut heard = Vec::new();
    let mut buffer = [0u8; 256];
    while heard
        .iter()
        .filter(|m: &&String| *m == "WATCHDOG=1")
        .count()
        < 2
    {
        let n = systemd.recv(&mut buffer).expect("a message from the agent");
        heard.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
    }
    assert!(heard[0].starts_with("READY=1"), "{heard:?}");
    let (status, _) = daemon.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let n = systemd.recv(&mut buffer).expect("a message from the agent");
    assert_eq!(&buffer[..n], b"STOPPING=1");
    std::fs::remove_file(&socket).expect("removing the notify socket");
}

/// A pod's log directory under /var/log/pods, removed (with /var/log/pods if the test made
/// it) when the test ends.
struct PodLogDir {
    made_root: bool,
    dir: PathBuf,
}

impl PodLogDir {
    fn new(namespace: &str, name: &str, uid: &str) -> Self {
        let root = PathBuf::from("/var/log/pods");
        let made_root = !root.exists();
        let dir = root.join(format!("{namespace}_{name}_{uid}"));
        std::fs::create_dir_all(&dir).expect("a pod log directory");
        Self { made_root, dir }
    }
}

impl Drop for PodLogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
        if self.made_root {
            let _ = std::fs::remove_dir("/var/log/pods");
        }
    }
}

#[test]
fn a_kubernetes_pod_is_named_by_namespace_and_name() {
    if !privileged() {
        return;
    }
    // What the kubelet makes: the pod's cgroup under kubepods (cgroupfs driver), its log
    // directory `<namespace>_<name>_<uid>`. A container placed in such a cgroup is a pod's.
    let uid = format!("5ca1ab1e-0000-4000-8000-{:012x}", std::process::id());
    let _logs = PodLogDir::new("lab", "checkout-0", &uid);
    let mut scenario = Scenario::new();
    let parent = format!("/kubepods/besteffort/pod{uid}");
    scenario.container("t-pod", &["--cgroup-parent", &parent]);
    let daemon = Daemon::start(&[]);
    let sent = format!(
        "galmanhae_tcp_sent_segments_total{{workload=\"lab/checkout-0\",workload_kind=\"pod\",\
         container_id=\"{uid}\",runtime=\"kubernetes\"}}"
    );
    let mut served = BTreeMap::new();
    let named = galmanhae_lab::wait_for(Duration::from_secs(5), "the pod's series", || {
        served = samples(&daemon.metrics());
        served.contains_key(&sent)
    });
    assert!(
        named.is_ok(),
        "no {sent}: {:?}",
        served
            .keys()
            .filter(|k| k.contains("sent_segments"))
            .collect::<Vec<_>>()
    );
    let (status, _) = daemon.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn bad_input_fails_clearly_before_loading_anything() {
    // A config file with an unknown key: exit 2, the file and line named.
    let dir = std::env::temp_dir().join(format!("galmanhae-bad-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let config = dir.join("galmanhae.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:9436\"\n[limits]\nmax_workload = 3\n",
    )
    .expect("writing the config");
    let stderr = fails(
        &[
            "run",
            "--config",
            config.to_str().expect("a UTF-8 temp path"),
        ],
        2,
    );
    assert!(
        stderr.contains("galmanhae.toml") && stderr.contains("line 3"),
        "{stderr}"
    );
    assert!(stderr.contains("max_workload"), "{stderr}");
    std::fs::remove_dir_all(&dir).expect("removing the temp dir");

    // A port in use: exit 1, the address named, nothing loaded.
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port");
    let address = taken.local_addr().expect("its address").to_string();
    let stderr = fails(&["run", "--listen", &address], 1);
    assert!(
        stderr.contains(&format!("cannot listen on {address}")) && stderr.contains("in use"),
        "{stderr}"
    );

    // A flag out of range: a usage error.
    fails(&["run", "--max-workloads", "0"], 2);
}

/// The `(id, workload)` of each finding in a JSON `findings` array, for `workloads` only.
fn finding_ids(
    findings: &Value,
    workloads: &[&str],
) -> std::collections::BTreeSet<(String, String)> {
    findings
        .as_array()
        .expect("a findings array")
        .iter()
        .filter_map(|f| {
            let workload = f["workload"].as_str()?;
            workloads.contains(&workload).then(|| {
                let id = f["id"].as_str().expect("an id").to_owned();
                (id, workload.to_owned())
            })
        })
        .collect()
}

/// `galmanhae diagnose --json` for `duration`, returned once its hooks are attached: wait for
/// its report with [`std::process::Child::wait_with_output`].
fn diagnose_attached(duration: &str) -> Child {
    use std::io::{BufRead as _, BufReader};
    let mut child = Command::new(GALMANHAE)
        .args([
            "diagnose",
            "--json",
            "--top",
            "1000",
            "--duration",
            duration,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting galmanhae diagnose");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[diagnose] {line}");
            if line.contains("attached") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("diagnose attached its hooks within 30 s");
    child
}

/// A drop rule on one container's path: within a pass the daemon holds a `local_drops`
/// finding for it and none for the control, `/findings` names the same findings as a
/// `diagnose --json` over the same traffic, and the finding's series goes once the drops have
/// left the findings window (and the grace period has passed).
#[test]
fn a_drop_rule_is_a_local_drops_finding_until_it_leaves_the_window() {
    if !privileged() {
        return;
    }
    let mut scenario = Scenario::new();
    for name in ["t-finding", "t-finding-ok"] {
        // No tail-loss probes from scheduling stalls of a busy CI machine (see above).
        scenario.container(name, &["--sysctl", "net.ipv4.tcp_early_retrans=0"]);
    }
    let window = Duration::from_secs(20);
    let daemon = Daemon::start(&["--findings-window", "20s", "--series-grace-period", "30s"]);
    fault::loss(20.0, &Target::Container("t-finding".to_owned())).expect("injecting loss");

    // The same traffic for both: diagnose watches 12 s, all of it within the daemon's window.
    let diagnose = diagnose_attached("12s");
    stream_from("t-finding", DB_V4, 2_000_000);
    stream_from("t-finding-ok", DB_V4, 200_000);
    let output = diagnose.wait_with_output().expect("diagnose's report");
    assert!(output.status.success(), "diagnose: {}", describe(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("the JSON report");

    // One pass (a scrape more than a second after the last pass runs one).
    thread::sleep(Duration::from_millis(1100));
    let findings_of = |workload: &str| -> Vec<(String, f64)> {
        samples(&daemon.metrics())
            .into_iter()
            .filter(|(series, _)| {
                series.starts_with("galmanhae_finding{")
                    && series.contains(&format!("workload=\"{workload}\""))
            })
            .collect()
    };
    let held = findings_of("t-finding");
    assert!(
        held.iter()
            .any(|(series, value)| series.contains("id=\"local_drops\"")
                && (*value - 1.0).abs() < 1e-9),
        "no local_drops finding for t-finding: {held:?}; drops {:?}",
        report["drops"]
    );
    let control = findings_of("t-finding-ok");
    assert!(control.is_empty(), "findings for the control: {control:?}");

    let (code, body) = http_get(&format!("{}/findings", daemon.url), &[]);
    assert_eq!(code, 200, "GET /findings: {body}");
    let served: Value = serde_json::from_str(&body).expect("/findings is JSON");
    assert_eq!(served["schema"], "galmanhae.findings/v1");
    assert_eq!(served["window_s"], window.as_secs());
    let ours = ["t-finding", "t-finding-ok"];
    assert_eq!(
        finding_ids(&served["findings"], &ours),
        finding_ids(&report["findings"], &ours),
        "/findings and diagnose --json over the same traffic"
    );

    // The drops stop; their finding holds while they are in the window, then for the grace
    // period, then its series goes.
    fault::clear_all(false).expect("lifting the drop rule");
    let cleared = Instant::now();
    let gone = galmanhae_lab::wait_for(
        window + GRACE + Duration::from_secs(30),
        "t-finding's finding to clear",
        || {
            stream_from("t-finding-ok", DB_V4, 100_000);
            findings_of("t-finding").is_empty()
        },
    );
    assert!(
        gone.is_ok(),
        "t-finding's findings still served {} s after the drops stopped: {:?}",
        cleared.elapsed().as_secs(),
        findings_of("t-finding")
    );
    assert!(
        cleared.elapsed() >= window,
        "the finding cleared after {:?}, before the drops left the {window:?} window",
        cleared.elapsed()
    );
}

/// The peak resident set of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"))
}

/// A host conntrack table of 200,000 entries (a NAT gateway's, a busy node's) costs the daemon
/// no memory: the flows it follows are looked up by their tuples, the table is never dumped.
/// Its peak RSS stays within 8 MiB of what it was with the table as it came, `/metrics`
/// answers in under 100 ms, and a retransmitting flow still has its NAT side.
#[test]
fn a_200000_entry_conntrack_table_costs_the_daemon_no_memory() {
    if !privileged() {
        return;
    }
    let mut scenario = Scenario::new();
    scenario.container("t-bigct", &[]);
    fault::loss(5.0, &Target::Container("t-bigct".to_owned())).expect("injecting loss");
    let daemon = Daemon::start(&[]);
    let pid = daemon.child.as_ref().expect("running").id();
    // Two full passes (every 10 s) with a retransmitting flow: names, paths, NAT lookups.
    let settle = |seconds: u64| -> Duration {
        let mut slowest = Duration::ZERO;
        let until = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < until {
            stream_from("t-bigct", DB_V4, 300_000);
            let asked = Instant::now();
            daemon.metrics();
            slowest = slowest.max(asked.elapsed());
            thread::sleep(Duration::from_millis(500));
        }
        slowest
    };
    settle(22);
    let empty = peak_rss_kib(pid);

    let grew = galmanhae_lab::conntrack_fill::fill(200_000).expect("filling the conntrack table");
    let slowest = settle(22);
    let full = peak_rss_kib(pid);
    eprintln!(
        "peak RSS {empty} KiB with the table as it came, {full} KiB with {grew} more entries; \
         slowest /metrics {slowest:?}"
    );
    assert!(grew >= 180_000, "the table grew by only {grew}");
    assert!(
        full <= empty + 8 * 1024,
        "peak RSS grew from {empty} KiB to {full} KiB with a {grew}-entry table"
    );
    assert!(
        slowest < Duration::from_millis(100),
        "/metrics took {slowest:?}"
    );
    // The NAT audit and bindings are served from full passes (every 10 s).
    let mut nat = Vec::new();
    let found = galmanhae_lab::wait_for(Duration::from_secs(25), "t-bigct's NAT binding", || {
        stream_from("t-bigct", DB_V4, 100_000);
        nat = samples(&daemon.metrics())
            .into_keys()
            .filter(|series| {
                series.starts_with("galmanhae_nat_info{") && series.contains("workload=\"t-bigct\"")
            })
            .collect();
        nat.len() == 1
    });
    assert!(
        found.is_ok(),
        "t-bigct's NAT bindings in the full table: {nat:?}"
    );
}
