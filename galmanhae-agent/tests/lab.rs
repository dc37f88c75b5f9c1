//! Root integration tests: real kernel hooks, a real dockerd, real iptables loss.
//!
//! Run by `cargo xtask test` (one at a time: one kernel, one lab). Without root they skip,
//! except with `CI=true`, where a missing capability is a failure.
#![expect(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use galmanhae_lab::{
    DB_HOST_PORT, DB_PORT, DB_V4, DB_V6, docker,
    fault::{self, Target},
    stream, traffic,
};
use serde_json::Value;

mod common;

use common::{
    GALMANHAE, Scenario, db_connections_closed, fails, flows, privileged, retrans_segs,
    stream_from, workload,
};

/// A running `galmanhae diagnose --json`, returned once its hooks are attached.
struct Diagnose {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Diagnose {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(GALMANHAE)
            .arg("diagnose")
            .arg("--json")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting galmanhae");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("galmanhae did not report its hooks attached within 30 s");
            eprintln!("[galmanhae] {line}");
            if line.contains("attached") {
                break;
            }
            assert!(!line.contains("error"), "galmanhae failed: {line}");
        }
        Self { child, stderr: rx }
    }

    /// Ends the window now, as Ctrl-C does, and returns the report: a window that holds all of
    /// a transfer, so counts can be compared with readings taken before and after it.
    fn stop(self) -> Value {
        // Still running: its report is not read yet.
        galmanhae_lab::signal(&self.child, libc::SIGINT).expect("SIGINT to galmanhae");
        self.report()
    }

    fn report(self) -> Value {
        let output = self
            .child
            .wait_with_output()
            .expect("waiting for galmanhae");
        for line in self.stderr.try_iter() {
            eprintln!("[galmanhae] {line}");
        }
        assert!(
            output.status.success(),
            "galmanhae diagnose failed: {}",
            output.status
        );
        let report: Value =
            serde_json::from_slice(&output.stdout).expect("stdout is one JSON document");
        assert_eq!(report["schema"], "galmanhae.diagnose/v1");
        report
    }
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn flow_segments(report: &Value, workload: &str) -> u64 {
    flows(report, workload)
        .iter()
        .map(|f| u64_of(&f["retransmitted_segments"]))
        .sum()
}

#[test]
fn lossy_container_is_named_and_counts_are_exact() {
    lossy_container_counts(&[], "tp_btf");
}

/// The classic tracepoint programs, the fallback where the BTF ones are refused, count the same.
#[test]
fn classic_tracepoints_count_exactly_too() {
    lossy_container_counts(&["--classic-tracepoints"], "tracepoint");
}

#[expect(
    clippy::unwrap_used,
    reason = "the body of two tests, which it fails with a message"
)]
fn lossy_container_counts(options: &[&str], hook_kind: &str) {
    if !privileged() {
        return;
    }
    let mut lab = Scenario::new();
    lab.container("t-lossy", &[]);
    lab.container("t-healthy", &[]);
    fault::loss(5.0, &Target::Container("t-lossy".to_owned())).expect("injecting loss");
    let (lossy_pid, healthy_pid) = (
        docker::pid("t-lossy").unwrap(),
        docker::pid("t-healthy").unwrap(),
    );
    let before = (retrans_segs(lossy_pid), retrans_segs(healthy_pid));

    let mut args = vec!["--duration", "60s", "--top", "1000"];
    args.extend_from_slice(options);
    let run = Diagnose::start(&args);
    let lossy = thread::spawn(|| stream_from("t-lossy", DB_V4, 20_000_000));
    stream_from("t-healthy", DB_V4, 20_000_000);
    lossy.join().expect("lossy stream");
    // The window must hold every drop the rule counts: none may come after the last reading.
    db_connections_closed();
    let report = run.stop();
    for hook in ["tcp:tcp_retransmit_skb", "skb:kfree_skb"] {
        let attached = report["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == hook)
            .unwrap_or_else(|| panic!("no hook {hook}: {:#}", report["hooks"]));
        assert_eq!(attached["status"], "attached", "{attached:#}");
        assert_eq!(attached["kind"], hook_kind, "{attached:#}");
    }
    let after = (retrans_segs(lossy_pid), retrans_segs(healthy_pid));

    let w = workload(&report, "t-lossy");
    assert_eq!(w["kind"], "container");
    assert_eq!(w["runtime"], "docker");
    assert_eq!(w["id"], docker::id("t-lossy").unwrap());
    let netns_retrans = u64_of(&w["retransmitted_segments"]);
    assert!(
        netns_retrans > 0,
        "the lossy container retransmitted nothing: {w:#}"
    );
    assert!(w["retransmit_ratio"].as_f64().unwrap() > 0.005, "{w:#}");
    // The kernel hook's per-flow counts add up to the namespace's own counter, exactly.
    assert_eq!(
        flow_segments(&report, "t-lossy"),
        netns_retrans,
        "{:#}",
        report["flows"]
    );
    // ... and that counter is what an independent read of /proc says for the same window.
    assert_eq!(after.0 - before.0, netns_retrans);
    let container_ip = docker::ip("t-lossy").unwrap();
    for f in flows(&report, "t-lossy") {
        assert!(
            f["local"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{container_ip}:")),
            "{f:#}"
        );
        assert_eq!(f["remote"], format!("{DB_V4}:{DB_PORT}"));
        assert_eq!(f["family"], "ipv4");
    }

    // The healthy container: its flows match its own (near zero) kernel count.
    let h = workload(&report, "t-healthy");
    let healthy_retrans = u64_of(&h["retransmitted_segments"]);
    assert_eq!(flow_segments(&report, "t-healthy"), healthy_retrans);
    assert_eq!(after.1 - before.1, healthy_retrans);
    assert!(
        h["retransmit_ratio"].as_f64().unwrap() < w["retransmit_ratio"].as_f64().unwrap() / 5.0,
        "healthy {h:#} vs lossy {w:#}"
    );
    // Listed first: workloads come ordered by ratio.
    assert_eq!(report["workloads"][0]["name"], "t-lossy");
    assert_eq!(report["health"]["lost"], 0);

    // Why: the host drops its packets, and the drop program counts exactly what the iptables
    // rule dropped in the same window (the rule was created empty, traffic ran only inside).
    let finding = finding(&report, "local_drops", "t-lossy");
    assert_eq!(finding["severity"], "high", "{finding:#}");
    let netfilter_drops: u64 = drops(&report, "t-lossy")
        .iter()
        .filter(|d| d["reason"] == "NETFILTER_DROP")
        .map(|d| u64_of(&d["packets"]))
        .sum();
    assert_eq!(
        netfilter_drops,
        fault::dropped_packets("iptables").unwrap(),
        "{:#}",
        report["drops"]
    );
    assert_no_findings(&report, "t-healthy");
}

/// The report's findings about `workload` with this id; panics if there is none.
fn finding<'a>(report: &'a Value, id: &str, workload: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["id"] == id && f["workload"] == workload)
        .unwrap_or_else(|| panic!("no {id} finding for {workload}: {:#}", report["findings"]))
}

fn assert_no_findings(report: &Value, workload: &str) {
    let about: Vec<&Value> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["workload"] == workload)
        .collect();
    assert!(
        about.is_empty(),
        "{workload} should have no findings: {about:#?}"
    );
}

fn drops<'a>(report: &'a Value, workload: &str) -> Vec<&'a Value> {
    report["drops"]
        .as_array()
        .expect("drops")
        .iter()
        .filter(|d| d["workload"] == workload)
        .collect()
}

/// Runs a shell script in a container, giving up after `seconds`.
fn exec_for(container: &str, seconds: u32, script: &str) {
    let script = format!("timeout {seconds} sh -c '{script}' || true");
    docker::exec(container, &["sh", "-c", &script]).expect("docker exec");
}

/// A shell script run in a container, given up after some seconds.
type Job = (&'static str, u32, String);

/// A `diagnose` window of `duration` during which `culprit` and `control` run side by side.
fn diagnose_during(duration: &str, culprit: Job, control: &Job) -> Value {
    let run = Diagnose::start(&["--duration", duration, "--top", "1000"]);
    let background = thread::spawn(move || exec_for(culprit.0, culprit.1, &culprit.2));
    exec_for(control.0, control.1, &control.2);
    background.join().expect("the culprit's job");
    run.report()
}

/// Seconds of a flow's `time_lost` member `key`, summed over `workload`'s flows from `port`.
fn time_lost_of(report: &Value, workload: &str, port: u16, key: &str) -> f64 {
    flows(report, workload)
        .iter()
        .filter(|f| {
            f["local"]
                .as_str()
                .is_some_and(|l| l.ends_with(&format!(":{port}")))
        })
        .filter_map(|f| f["time_lost"][key].as_f64())
        .sum()
}

#[test]
fn a_black_hole_of_t_seconds_is_an_rto_stall_equal_to_the_sockets_own() {
    if !privileged() {
        return;
    }
    let mut lab = Scenario::new();
    lab.container("t-stall", &[]);
    lab.container("t-steady", &[]);
    let db = DB_V4.parse().expect("the db address");
    for black_hole in [3_u64, 8] {
        // Timeouts back off 0.2, 0.4, 0.8... s: the stall ends at the first one after the
        // black hole, at most about twice its length.
        let length = Duration::from_secs(2 + 2 * black_hole + 3);
        let run = Diagnose::start(&["--duration", "120s", "--top", "1000"]);
        let culprit = thread::spawn(move || stream::paced_stream("t-stall", db, DB_PORT, length));
        let control = thread::spawn(move || stream::paced_stream("t-steady", db, DB_PORT, length));
        thread::sleep(Duration::from_secs(2));
        fault::blackhole(&Target::Container("t-stall".to_owned())).expect("black hole");
        thread::sleep(Duration::from_secs(black_hole));
        fault::clear_all(false).expect("lifting the black hole");
        let culprit = culprit
            .join()
            .expect("culprit thread")
            .expect("culprit stream");
        let control = control
            .join()
            .expect("control thread")
            .expect("control stream");
        let report = run.stop();

        let stall = time_lost_of(&report, "t-stall", culprit.local_port, "rto_stall_seconds");
        let kernel = f64::from(culprit.total_rto_time_ms) / 1000.0;
        #[expect(clippy::cast_precision_loss, reason = "seconds")]
        let floor = 0.9 * black_hole as f64;
        assert!(
            (stall - kernel).abs() <= 0.05 && stall >= floor,
            "{black_hole} s black hole: galmanhae says {stall} s, tcp_info {kernel} s \
             ({culprit:?}); flows {:#}",
            report["flows"]
        );
        let recoveries = flows(&report, "t-stall")
            .iter()
            .filter_map(|f| f["time_lost"]["rto_recoveries"].as_u64())
            .sum::<u64>();
        assert_eq!(
            recoveries,
            u64::from(culprit.total_rto_recoveries),
            "{culprit:?}"
        );
        let steady = time_lost_of(&report, "t-steady", control.local_port, "rto_stall_seconds");
        assert_eq!(
            control.total_rto_time_ms, 0,
            "the control stalled: {control:?}"
        );
        assert!(
            steady.abs() < f64::EPSILON,
            "the control reports {steady} s"
        );
        // The timeline shows the black hole's seconds as stall seconds, adding up to the stall.
        let row = report["timeline"]["workloads"]
            .as_array()
            .expect("timeline rows")
            .iter()
            .find(|r| r["workload"] == "t-stall")
            .expect("a timeline row for t-stall");
        let per_second: Vec<f64> = row["stall_seconds"]
            .as_array()
            .expect("stall seconds")
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        let stalled = per_second.iter().filter(|s| **s > 0.5).count();
        let total: f64 = per_second.iter().sum();
        #[expect(clippy::cast_precision_loss, reason = "seconds")]
        let stalled_seconds = stalled as f64;
        assert!(
            (total - stall).abs() <= 0.05 && stalled_seconds >= floor - 1.0,
            "timeline {per_second:?} against a stall of {stall} s"
        );
        // High from 5 s or 4 timeouts in a row: 3 s hold 3 or 4 timeouts (0.2 + 0.4 + 0.8 + 1.6
        // s, or fewer from a larger RTO), so only the longer black hole is high for certain.
        let f = finding(&report, "rto_stalls", "t-stall");
        if stall >= 5.0 {
            assert_eq!(f["severity"], "high", "{f:#}");
        }
        assert_no_findings(&report, "t-steady");
        eprintln!("{black_hole} s black hole: {stall} s = tcp_info {kernel} s");
    }
}

/// A recovery that ended while its socket stays open stops counting when the kernel ends it,
/// not at the socket's close: the report is taken with the stream still open, seconds after
/// the black hole lifted (on 6.7+ no event marks that end; the agent's settling run does).
#[test]
fn a_recovery_that_ended_on_a_socket_still_open_stops_counting() {
    if !privileged() {
        return;
    }
    let mut lab = Scenario::new();
    lab.container("t-stall", &[]);
    let db = DB_V4.parse().expect("the db address");
    let run = Diagnose::start(&["--duration", "120s", "--top", "1000"]);
    let culprit = thread::spawn(move || {
        stream::paced_stream("t-stall", db, DB_PORT, Duration::from_secs(22))
    });
    thread::sleep(Duration::from_secs(2));
    fault::blackhole(&Target::Container("t-stall".to_owned())).expect("black hole");
    thread::sleep(Duration::from_secs(3));
    fault::clear_all(false).expect("lifting the black hole");
    // Backoff after a 3 s black hole retries at most 3.2 s after it lifts.
    thread::sleep(Duration::from_secs(8));
    let report = run.stop();
    let culprit = culprit
        .join()
        .expect("culprit thread")
        .expect("culprit stream");
    let stall = time_lost_of(&report, "t-stall", culprit.local_port, "rto_stall_seconds");
    let kernel = f64::from(culprit.total_rto_time_ms) / 1000.0;
    assert!(
        (stall - kernel).abs() <= 0.05 && kernel >= 2.7,
        "galmanhae says {stall} s, tcp_info {kernel} s at the stream's end ({culprit:?}); \
         flows {:#}",
        report["flows"]
    );
}

#[test]
fn syns_dropped_for_3_s_are_syn_retry_seconds_equal_to_the_connects_wait() {
    if !privileged() {
        return;
    }
    let mut lab = Scenario::new();
    lab.container("t-syn", &[]);
    lab.container("t-steady", &[]);
    let db = DB_V4.parse().expect("the db address");
    let run = Diagnose::start(&["--duration", "120s", "--top", "1000"]);
    fault::syn_blackhole(&Target::Container("t-syn".to_owned())).expect("SYN black hole");
    let culprit =
        thread::spawn(move || stream::timed_connect("t-syn", db, DB_PORT, Duration::from_secs(20)));
    thread::sleep(Duration::from_secs(3));
    fault::clear_all(false).expect("letting SYNs through");
    let (waited, port) = culprit.join().expect("thread").expect("the connect");
    let (_, steady_port) =
        stream::timed_connect("t-steady", db, DB_PORT, Duration::from_secs(5)).expect("control");
    thread::sleep(Duration::from_secs(1));
    let report = run.stop();
    let waited = waited.as_secs_f64();
    let syn = time_lost_of(&report, "t-syn", port, "syn_retry_seconds");
    // SYNs go at 0, 1, 3, 7 s: the first after the 3 s black hole gets through.
    assert!(
        (syn - waited).abs() <= 0.1 && waited >= 2.9,
        "galmanhae says {syn} s, connect() waited {waited} s; flows {:#}",
        report["flows"]
    );
    let steady = time_lost_of(&report, "t-steady", steady_port, "syn_retry_seconds");
    assert!(steady.abs() < f64::EPSILON, "the control waited {steady} s");
    eprintln!("SYNs dropped for 3 s: syn_retry_seconds {syn} s, connect() {waited} s");
}

#[test]
fn loss_at_the_remote_end_is_beyond_the_host() {
    if !privileged() {
        return;
    }
    let mut lab = Scenario::new();
    lab.container("t-remote", &[]);
    lab.container("t-healthy", &[]);
    // The db drops 5 % of what reaches port 5432; the control talks to 5433.
    fault::loss(5.0, &Target::Port(DB_PORT)).expect("injecting loss at the db");
    let report = diagnose_during(
        "10s",
        (
            "t-remote",
            20,
            format!("head -c 20000000 /dev/zero | nc -w 10 {DB_V4} {DB_PORT}"),
        ),
        &(
            "t-healthy",
            8,
            format!("head -c 2000000 /dev/zero | nc -w 5 {DB_V4} {DB_HOST_PORT}"),
        ),
    );
    // Beyond the host: what this host dropped of its packets is under a tenth of its
    // retransmits (a stray segment after a socket's close may be dropped here).
    let f = finding(&report, "loss_beyond_host", "t-remote");
    let evidence = f["evidence"].to_string();
    let count = |suffix: &str| -> Option<u64> {
        let at = evidence.find(suffix)?;
        evidence[..at].rsplit(['"', ' ']).next()?.parse().ok()
    };
    let (local, retransmitted) = (
        count(" of its packets dropped on this host"),
        count(" retransmitted segments of "),
    );
    assert!(
        matches!((local, retransmitted), (Some(l), Some(r)) if l * 10 < r),
        "{f:#}\ndrops: {:#?}",
        drops(&report, "t-remote")
    );
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| !(f["id"] == "local_drops" && f["workload"] == "t-remote")),
        "{:#}",
        report["findings"]
    );
    assert_no_findings(&report, "t-healthy");
}

#[test]
fn syn_black_hole_gives_syn_retransmits() {
    if !privileged() {
        return;
    }
    let mut lab = Scenario::new();
    lab.container("t-syn", &[]);
    lab.container("t-healthy", &[]);
    fault::syn_blackhole(&Target::Port(DB_PORT)).expect("SYN black hole at the db");
    let report = diagnose_during(
        "8s",
        (
            "t-syn",
            5,
            format!(
                "echo a | nc -w 4 {DB_V4} {DB_PORT} & echo b | nc -w 4 {DB_V4} {DB_PORT}; wait"
            ),
        ),
        &(
            "t-healthy",
            5,
            format!("echo hello | nc -w 2 {DB_V4} {DB_HOST_PORT}"),
        ),
    );
    let f = finding(&report, "syn_retransmits", "t-syn");
    assert!(
        f["flows"]
            .to_string()
            .contains(&format!("{DB_V4}:{DB_PORT}")),
        "{f:#}"
    );
    let syns: u64 = flows(&report, "t-syn")
        .iter()
        .map(|f| u64_of(&f["kinds"]["syn"]))
        .sum();
    assert!(
        syns >= 4,
        "two connections, each at least 2 SYN retransmits in 4 s: {syns}"
    );
    assert_no_findings(&report, "t-healthy");
}

#[test]
fn mtu_black_hole_is_path_mtu() {
    if !privileged() {
        return;
    }
    let mut lab = Scenario::new();
    lab.container("t-big", &[]);
    lab.container("t-small", &[]);
    // Egress 1400 while the containers keep 1500, and the ICMP that would say so is dropped.
    fault::mtu(1400, true).expect("MTU black hole");
    let report = diagnose_during(
        "10s",
        (
            "t-big",
            8,
            format!("head -c 2000000 /dev/zero | nc -w 7 {DB_V4} {DB_PORT}"),
        ),
        &(
            "t-small",
            5,
            format!("echo small | nc -w 2 {DB_V4} {DB_HOST_PORT}"),
        ),
    );
    let f = finding(&report, "path_mtu", "t-big");
    assert_eq!(f["severity"], "high", "{f:#}");
    let too_big: u64 = drops(&report, "t-big")
        .iter()
        .filter(|d| d["reason"] == "PKT_TOO_BIG")
        .map(|d| u64_of(&d["packets"]))
        .sum();
    assert!(too_big > 0, "{:#}", report["drops"]);
    let icmp: u64 = drops(&report, "t-big")
        .iter()
        .map(|d| u64_of(&d["icmp_too_big"]))
        .sum();
    assert!(
        icmp > 0,
        "the host's ICMP frag-needed were dropped: {:#}",
        report["drops"]
    );
    assert_no_findings(&report, "t-small");
}

#[test]
fn host_process_is_attributed_to_host() {
    if !privileged() {
        return;
    }
    let _lab = Scenario::new();
    fault::loss(5.0, &Target::Port(DB_HOST_PORT)).expect("injecting loss");
    let run = Diagnose::start(&["--duration", "8s", "--top", "1000"]);
    let script = format!("head -c 20000000 /dev/zero | busybox nc -w 10 {DB_V4} {DB_HOST_PORT}");
    let status = Command::new("sh")
        .args(["-c", &script])
        .status()
        .expect("host client");
    assert!(status.success());
    let report = run.report();

    let host = workload(&report, "host");
    assert_eq!(host["kind"], "host");
    assert_eq!(host["netns_shared"], true);
    let host_flows: Vec<_> = flows(&report, "host")
        .into_iter()
        .filter(|f| f["remote"] == format!("{DB_V4}:{DB_HOST_PORT}"))
        .collect();
    assert!(
        !host_flows.is_empty(),
        "no host flow to the db: {:#}",
        report["flows"]
    );
    assert!(
        host_flows
            .iter()
            .map(|f| u64_of(&f["retransmitted_segments"]))
            .sum::<u64>()
            > 0
    );
}

#[test]
fn ipv6_flows_are_reported() {
    if !privileged() {
        return;
    }
    let mut lab = Scenario::new();
    lab.container("t-v6", &[]);
    fault::loss(5.0, &Target::Container("t-v6".to_owned())).expect("injecting loss");
    let pid = docker::pid("t-v6").unwrap();
    let before = retrans_segs(pid);
    let run = Diagnose::start(&["--duration", "60s", "--top", "1000"]);
    stream_from("t-v6", DB_V6, 20_000_000);
    let report = run.stop();
    let after = retrans_segs(pid);

    let v6 = docker::ipv6("t-v6").unwrap();
    let flows = flows(&report, "t-v6");
    assert!(!flows.is_empty(), "{:#}", report["flows"]);
    for f in &flows {
        assert_eq!(f["family"], "ipv6");
        assert!(
            f["local"]
                .as_str()
                .unwrap()
                .starts_with(&format!("[{v6}]:")),
            "{f:#}"
        );
        assert_eq!(f["remote"], format!("[{DB_V6}]:{DB_PORT}"));
    }
    let segments: u64 = flows
        .iter()
        .map(|f| u64_of(&f["retransmitted_segments"]))
        .sum();
    assert!(segments > 0);
    assert_eq!(segments, after - before);
}

#[test]
fn missing_tracepoint_is_unavailable_and_the_rest_works() {
    if !privileged() {
        return;
    }
    // A tracefs view where tcp_retransmit_synack does not exist, as on a kernel without it.
    let fake = std::env::temp_dir().join(format!("galmanhae-tracefs-{}", std::process::id()));
    let events = fake.join("events/tcp/tcp_retransmit_skb");
    std::fs::create_dir_all(&events).unwrap();
    let real = Command::new(GALMANHAE).arg("--version").output().unwrap();
    assert!(real.status.success());
    std::fs::copy(
        "/sys/kernel/tracing/events/tcp/tcp_retransmit_skb/format",
        events.join("format"),
    )
    .expect("tracefs is mounted (a diagnose run mounts it)");

    let mut lab = Scenario::new();
    lab.container("t-tp", &[]);
    fault::loss(5.0, &Target::Container("t-tp".to_owned())).unwrap();
    let run = Diagnose::start(&["--duration", "6s", "--tracefs", fake.to_str().unwrap()]);
    stream_from("t-tp", DB_V4, 10_000_000);
    let report = run.report();
    let _ = std::fs::remove_dir_all(&fake);

    let hook = |name: &str| {
        report["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .unwrap_or_else(|| panic!("hook {name} missing: {:#}", report["hooks"]))
            .clone()
    };
    let synack = hook("tcp:tcp_retransmit_synack");
    assert_eq!(synack["status"], "unavailable");
    assert!(
        synack["detail"]
            .as_str()
            .unwrap()
            .contains("not in this kernel"),
        "{synack:#}"
    );
    assert_eq!(hook("tcp:tcp_retransmit_skb")["status"], "attached");
    assert!(flow_segments(&report, "t-tp") > 0, "{report:#}");
}

#[test]
fn bad_input_is_rejected_clearly() {
    let usage = |args: &[&str], expected: &str| {
        let stderr = fails(args, 2);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    };
    usage(&["diagnose", "--bogus"], "unexpected argument '--bogus'");
    usage(&["diagnose", "--duration", "abc"], "is not a duration");
    usage(&["diagnose", "--duration", "0s"], "too short");
    usage(&["diagnose", "--top", "0"], "--top");
    usage(&["frobnicate"], "unrecognized subcommand");

    if !privileged() {
        return;
    }
    // Without privileges: say exactly what is missing, exit 77.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(GALMANHAE)
        .args(["diagnose", "--duration", "1s"])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{stderr}");
    assert!(
        stderr.contains("missing privileges: CAP_BPF, CAP_PERFMON"),
        "{stderr}"
    );
    assert!(stderr.contains("setcap"), "{stderr}");
}

#[test]
fn nat_side_of_a_flow_equals_conntrack() {
    if !privileged() {
        return;
    }
    let mut lab = Scenario::new();
    lab.container("t-nat", &[]);
    fault::loss(5.0, &Target::Container("t-nat".to_owned())).expect("injecting loss");
    let run = Diagnose::start(&["--duration", "8s", "--top", "1000"]);
    // Keep the connection open past the report so its conntrack entry is still there.
    let stream = thread::spawn(|| {
        exec_for(
            "t-nat",
            12,
            &format!("head -c 20000000 /dev/zero | nc -w 10 {DB_V4} {DB_PORT}"),
        );
    });
    let report = run.report();
    let ip = docker::ip("t-nat").unwrap();
    let listed = galmanhae_lab::run(
        "conntrack",
        &[
            "-L",
            "-p",
            "tcp",
            "--orig-src",
            ip.as_str(),
            "--orig-dst",
            DB_V4,
        ],
    )
    .expect("conntrack -L");
    stream.join().expect("stream");
    let lossy = flows(&report, "t-nat");
    assert!(!lossy.is_empty(), "{:#}", report["flows"]);
    for f in lossy {
        let sport = f["local"].as_str().unwrap().rsplit(':').next().unwrap();
        // tcp 6 431999 ESTABLISHED src=198.18.100.2 dst=198.19.0.2 sport=41000 dport=5432
        //   src=198.19.0.2 dst=198.19.0.1 sport=5432 dport=41000 [ASSURED] ...
        let line = listed
            .lines()
            .find(|l| l.contains(&format!(" sport={sport} dport={DB_PORT} ")))
            .unwrap_or_else(|| panic!("no conntrack entry for port {sport}: {listed}"));
        let field = |name: &str, nth: usize| {
            line.split_whitespace()
                .filter_map(|w| w.strip_prefix(&format!("{name}=")))
                .nth(nth)
                .unwrap()
                .to_owned()
        };
        // The reply direction, reversed, is how the flow leaves the host.
        let nat_local = format!("{}:{}", field("dst", 1), field("dport", 1));
        let nat_remote = format!("{}:{}", field("src", 1), field("sport", 1));
        assert_eq!(f["nat"]["local"], nat_local.as_str(), "{f:#}\n{line}");
        assert_eq!(f["nat"]["remote"], nat_remote.as_str(), "{f:#}\n{line}");
    }
}

#[test]
fn without_net_admin_conntrack_is_unavailable_and_diagnose_runs() {
    if !privileged() {
        return;
    }
    let output = Command::new("setpriv")
        .args([
            "--inh-caps=-net_admin",
            "--bounding-set=-net_admin",
            GALMANHAE,
            "diagnose",
            "--json",
            "--duration",
            "2s",
        ])
        .output()
        .expect("running galmanhae under setpriv");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    let notes = report["notes"].to_string();
    assert!(notes.contains("NAT translations unavailable"), "{notes}");
    assert!(notes.contains("reading procfs instead"), "{notes}");
    // Health counters still come, from procfs.
    assert!(
        report["conntrack"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["source"] == "procfs"),
        "{:#}",
        report["conntrack"]
    );
}

#[test]
fn attempts_refused_by_the_transmit_path_count_like_the_kernel() {
    if !privileged() {
        return;
    }
    let mut lab = Scenario::new();
    lab.container("t-eperm", &[]);
    // Loss on the host makes retransmits; of those, the ones dropped in the container's own
    // OUTPUT fail in tcp_transmit_skb with -EPERM, after the kernel added their segments to
    // RetransSegs. The OUTPUT rule goes with the container.
    let pid = docker::pid("t-eperm").unwrap();
    galmanhae_lab::run(
        "nsenter",
        &[
            "-t",
            &pid.to_string(),
            "-n",
            "iptables",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            DB_V4,
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.05",
            "-j",
            "DROP",
        ],
    )
    .expect("loss in the container's OUTPUT");
    fault::loss(5.0, &Target::Container("t-eperm".to_owned())).expect("injecting loss");
    let before = retrans_segs(pid);
    let run = Diagnose::start(&["--duration", "60s", "--top", "1000"]);
    stream_from("t-eperm", DB_V4, 20_000_000);
    let report = run.stop();
    let after = retrans_segs(pid);

    let w = workload(&report, "t-eperm");
    assert!(
        u64_of(&w["failed_attempts"]) > 0,
        "no failed attempts: {w:#}"
    );
    let netns_retrans = u64_of(&w["retransmitted_segments"]);
    assert_eq!(flow_segments(&report, "t-eperm"), netns_retrans, "{w:#}");
    assert_eq!(after - before, netns_retrans);
}

/// The report's conntrack record of the host namespace.
fn host_conntrack(report: &Value) -> &Value {
    report["conntrack"]
        .as_array()
        .expect("conntrack")
        .iter()
        .find(|c| c["namespace"] == "host")
        .expect("the host's conntrack")
}

/// Entries in the host's conntrack table now.
fn conntrack_count() -> u64 {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .expect("nf_conntrack_count")
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn tiny_conntrack_table_is_conntrack_full() {
    if !privileged() {
        return;
    }
    let mut lab = Scenario::new();
    lab.container("t-flood", &[]);
    lab.container("t-healthy", &[]);
    // The control's connection is set up (and assured) before the table shrinks, so it keeps
    // its entry; the culprit's new connections find no room.
    let control = thread::spawn(|| {
        exec_for(
            "t-healthy",
            14,
            &format!("while true; do echo x; sleep 1; done | nc {DB_V4} {DB_HOST_PORT}"),
        );
    });
    thread::sleep(Duration::from_secs(2));
    fault::conntrack_max(conntrack_count() + 3).expect("shrinking the conntrack table");
    let report = diagnose_during(
        "8s",
        (
            "t-flood",
            7,
            format!("for i in $(seq 30); do sleep 6 | nc -w 7 {DB_V4} {DB_PORT} & done; wait"),
        ),
        &("t-healthy", 1, "true".to_owned()),
    );
    control.join().expect("the control's stream");

    let f = finding(&report, "conntrack_full", "host");
    assert_eq!(f["severity"], "high", "{f:#}");
    assert_eq!(
        report["findings"][0]["id"], "conntrack_full",
        "the cause leads: {:#}",
        report["findings"]
    );
    assert!(f["flows"].to_string().contains("t-flood"), "{f:#}");
    assert!(!f["flows"].to_string().contains("t-healthy"), "{f:#}");
    let host = host_conntrack(&report);
    assert!(u64_of(&host["drop"]) > 0, "{host:#}");
    assert_no_findings(&report, "t-healthy");
}

/// The host conntrack's `insert_failed`, summed over CPUs (`conntrack -S`).
fn insert_failed() -> u64 {
    galmanhae_lab::run("conntrack", &["-S"])
        .expect("conntrack -S")
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("insert_failed="))
        .map(|n| n.parse::<u64>().expect("a number"))
        .sum()
}

#[test]
fn snat_port_race_is_snat_collision() {
    if !privileged() {
        return;
    }
    let mut lab = Scenario::new();
    lab.container("t-race-a", &[]);
    lab.container("t-race-b", &[]);
    lab.container("t-healthy", &[]);
    let before = insert_failed();
    let run = Diagnose::start(&["--duration", "6s", "--top", "1000"]);
    let outcome = traffic::snat_race(["t-race-a", "t-race-b"], DB_V4.parse().unwrap(), 200)
        .expect("the SNAT race");
    exec_for(
        "t-healthy",
        3,
        &format!("echo hello | nc -w 2 {DB_V4} {DB_HOST_PORT}"),
    );
    let report = run.report();
    let after = insert_failed();
    assert!(
        outcome.syn_retransmitted > 0,
        "no clash in 200 rounds: {outcome:?}"
    );

    let host = host_conntrack(&report);
    assert_eq!(u64_of(&host["insert_failed"]), after - before, "{host:#}");
    let f = finding(&report, "snat_collision", "host");
    assert_eq!(f["severity"], "high", "{f:#}");
    assert_eq!(
        report["findings"][0]["id"], "snat_collision",
        "the cause leads: {:#}",
        report["findings"]
    );
    assert!(
        f["evidence"].to_string().contains("without --random-fully"),
        "{f:#}"
    );
    assert!(f["flows"].to_string().contains("t-race-"), "{f:#}");
    // The lost SYNs carried the host's address; conntrack's original tuple names their owner.
    let lost: Vec<&Value> = ["t-race-a", "t-race-b"]
        .iter()
        .flat_map(|w| drops(&report, w))
        .filter(|d| d["dropped_in"] == "host")
        .collect();
    assert!(
        lost.iter()
            .any(|d| d["examples"].to_string().contains("SNAT of")),
        "{:#}",
        report["drops"]
    );
    assert_no_findings(&report, "t-healthy");
}

#[test]
fn invalid_segments_leave_untranslated_as_nat_leak() {
    const SENT: u32 = 50;
    if !privileged() {
        return;
    }
    let mut lab = Scenario::new();
    lab.container("t-leak", &[]);
    lab.container("t-healthy", &[]);
    let run = Diagnose::start(&["--duration", "5s", "--top", "1000"]);
    traffic::invalid_segments("t-leak", DB_V4.parse().unwrap(), DB_PORT, SENT)
        .expect("sending SYN|FIN segments");
    exec_for(
        "t-healthy",
        3,
        &format!("echo hello | nc -w 2 {DB_V4} {DB_HOST_PORT}"),
    );
    let report = run.report();

    let leaks: Vec<&Value> = report["leaks"]
        .as_array()
        .expect("leaks")
        .iter()
        .filter(|l| l["workload"] == "t-leak")
        .collect();
    assert_eq!(
        leaks.iter().map(|l| u64_of(&l["packets"])).sum::<u64>(),
        u64::from(SENT),
        "every segment sent left untranslated, through the db uplink: {:#}",
        report["leaks"]
    );
    assert!(
        leaks
            .iter()
            .all(|l| l["interface"] == galmanhae_lab::HOST_VETH),
        "{leaks:#?}"
    );
    assert!(leaks[0]["examples"].to_string().contains("FIN|SYN"));
    let f = finding(&report, "nat_leak", "t-leak");
    assert_eq!(f["severity"], "high", "{f:#}");
    assert!(
        report["leaks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["workload"] != "t-healthy"),
        "{:#}",
        report["leaks"]
    );
    assert_no_findings(&report, "t-healthy");
}

/// A veth pair in the host namespace that the test deletes itself; removed on drop too.
struct TemporaryLink(&'static str);

impl Drop for TemporaryLink {
    fn drop(&mut self) {
        let _ = galmanhae_lab::run("ip", &["link", "del", self.0]);
    }
}

#[test]
fn an_uplink_that_vanishes_is_reported_and_diagnose_runs() {
    if !privileged() {
        return;
    }
    let _lab = Scenario::new();
    let link = TemporaryLink("gmh-vanish");
    galmanhae_lab::run(
        "ip",
        &[
            "link",
            "add",
            link.0,
            "type",
            "veth",
            "peer",
            "name",
            "gmh-vanish-p",
        ],
    )
    .expect("creating a veth pair");
    galmanhae_lab::run("ip", &["link", "set", link.0, "up"]).expect("link up");
    let run = Diagnose::start(&["--duration", "4s"]);
    galmanhae_lab::run("ip", &["link", "del", link.0]).expect("deleting the uplink");
    let report = run.report();

    let tc = report["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .find(|h| h["kind"] == "tc")
        .expect("the tc hook");
    assert_eq!(tc["status"], "attached", "{tc:#}");
    assert!(tc["detail"].to_string().contains("gmh-vanish"), "{tc:#}");
    // The optional conntrack hook is probed and reported, never required.
    let confirm = report["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "__nf_conntrack_confirm")
        .expect("the optional conntrack hook is reported");
    assert!(
        confirm["status"] == "attached"
            || (confirm["status"] == "unavailable"
                && confirm["detail"].to_string().contains("kprobe: ")
                && confirm["detail"].to_string().contains("fentry: ")),
        "{confirm:#}"
    );
    assert!(
        report["notes"]
            .to_string()
            .contains("uplink gmh-vanish vanished"),
        "{:#}",
        report["notes"]
    );
}

/// A dockerd the lab did not start, without IPv6: stopped and its bridge removed on drop.
struct ForeignDockerd(u32);

impl ForeignDockerd {
    fn start() -> Self {
        galmanhae_lab::down().expect("lab down, so the foreign dockerd is the only one");
        let log = std::env::temp_dir().join("galmanhae-foreign-dockerd.log");
        let pid = galmanhae_lab::spawn_detached(
            "dockerd",
            &[
                "--bip",
                galmanhae_lab::BRIDGE_IP,
                "--pidfile",
                "/var/run/docker.pid",
            ],
            &log,
        )
        .expect("starting a dockerd without IPv6");
        let daemon = Self(pid);
        galmanhae_lab::wait_for(Duration::from_secs(60), "the foreign dockerd", || {
            galmanhae_lab::run("docker", &["version"]).is_ok()
        })
        .expect("the foreign dockerd answers");
        daemon
    }
}

impl Drop for ForeignDockerd {
    fn drop(&mut self) {
        let _ = docker::stop_daemon(&self.0.to_string());
    }
}

#[test]
fn a_foreign_dockerd_without_ipv6_is_refused_with_what_to_do() {
    if !privileged() {
        return;
    }
    let _daemon = ForeignDockerd::start();
    let error = format!(
        "{:#}",
        galmanhae_lab::infrastructure().expect_err("the lab must refuse a dockerd without IPv6")
    );
    eprintln!("the lab said: {error}");
    assert!(error.contains("already running"), "{error}");
    assert!(error.contains("no IPv6"), "{error}");
    assert!(error.contains("Cannot assign requested address"), "{error}");
    assert!(error.contains("--ipv6 --fixed-cidr-v6"), "{error}");
}
