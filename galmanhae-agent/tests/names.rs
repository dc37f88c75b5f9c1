//! Root integration tests of who traffic belongs to: a container no runtime API names, a
//! container removed while its sockets live on, a Docker daemon that never answers, drops of
//! a host-network container's own packets.
//!
//! Run by `cargo xtask test` (one at a time: one kernel, one lab). Without root they skip,
//! except with `CI=true`, where a missing capability is a failure.
#![expect(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

mod common;

use std::{
    os::unix::net::UnixListener,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{GALMANHAE, Scenario, describe, flows, privileged, workload};
use galmanhae_lab::{
    DB_PORT, DB_V4, ctr, docker,
    fault::{self, Target},
    free_loopback_address,
};
use serde_json::Value;

/// `galmanhae diagnose --json` for `seconds` while `during` runs; the report.
fn diagnose_while(seconds: u32, during: impl FnOnce()) -> Value {
    let child = Command::new(GALMANHAE)
        .args(["diagnose", "--json", "--top", "1000", "--duration"])
        .arg(format!("{seconds}s"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting galmanhae diagnose");
    // Its hooks attach in well under a second; the window is long enough either way.
    thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    during();
    let took = started.elapsed();
    let output = child.wait_with_output().expect("waiting for diagnose");
    // What happens after the window is not in the report, but is in the kernel's counters.
    assert!(
        took + Duration::from_secs(3) < Duration::from_secs(seconds.into()),
        "the traffic took {took:?}, too close to the {seconds} s window's end"
    );
    assert!(output.status.success(), "diagnose: {}", describe(&output));
    serde_json::from_slice(&output.stdout).expect("one JSON document")
}

/// The entries of a report section (`workloads`, `flows`) whose `key` names no workload.
fn unnamed<'a>(report: &'a Value, section: &str, key: &str) -> Vec<&'a Value> {
    report[section]
        .as_array()
        .unwrap_or_else(|| panic!("no {section}"))
        .iter()
        .filter(|e| e[key].as_str().is_some_and(|n| n.starts_with("netns-")))
        .collect()
}

/// Removes the ctr container even when the test fails.
struct CtrContainer(&'static str);

impl Drop for CtrContainer {
    fn drop(&mut self) {
        let _ = ctr::remove(self.0);
    }
}

#[test]
fn a_ctr_container_is_named_from_its_cgroup() {
    if !privileged() {
        return;
    }
    // The scenario brings up dockerd, and with it containerd and the image.
    let _scenario = Scenario::new();
    let container = CtrContainer("t-ctr");
    ctr::start(container.0, &["sleep", "3600"]).expect("ctr run");
    let pid = ctr::pid(container.0).expect("its pid");
    let netns = std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("its namespace");
    assert_ne!(
        netns,
        std::fs::read_link("/proc/self/ns/net").expect("ours"),
        "a ctr container has a namespace of its own"
    );
    let report = diagnose_while(6, || {
        // Loopback traffic: its namespace has no other network.
        let script = "nc -l -p 5000 >/dev/null & sleep 0.3; \
                      head -c 3000000 /dev/zero | nc -w 2 127.0.0.1 5000; wait";
        ctr::exec(container.0, &["sh", "-c", script]).expect("loopback traffic");
    });
    let named = workload(&report, "t-ctr");
    assert_eq!(named["kind"], "netns", "{named:#}");
    assert!(
        named["sent_segments"].as_u64().is_some_and(|n| n > 0),
        "{named:#}"
    );
    // Namespaces with traffic in the window; a socket left retransmitting by an earlier test
    // in a namespace that is already gone sends nothing and has no process to name it by.
    let unnamed: Vec<&Value> = unnamed(&report, "workloads", "name")
        .into_iter()
        .filter(|w| w["sent_segments"].as_u64().is_some_and(|n| n > 0))
        .collect();
    assert!(
        unnamed.is_empty(),
        "namespaces without a name: {unnamed:#?}"
    );
}

#[test]
fn a_removed_containers_lingering_sockets_keep_its_name() {
    if !privileged() {
        return;
    }
    let mut scenario = Scenario::new();
    scenario.container("t-gone", &[]);
    let report = diagnose_while(12, || {
        let stream = thread::spawn(|| {
            let script = format!("head -c 50000000 /dev/zero | nc -w 30 {DB_V4} {DB_PORT}");
            let _ = docker::exec("t-gone", &["sh", "-c", &script]);
        });
        thread::sleep(Duration::from_secs(1));
        // Its unsent data keeps the socket retransmitting after its process is gone.
        fault::blackhole(&Target::Container("t-gone".to_owned())).expect("a black hole");
        thread::sleep(Duration::from_secs(2));
        docker::remove_container("t-gone").expect("docker rm -f");
        stream.join().expect("the stream");
        thread::sleep(Duration::from_secs(3));
    });
    let gone = workload(&report, "t-gone");
    assert_eq!(gone["removed"], true, "{gone:#}");
    assert_eq!(gone["vanished"], true, "{gone:#}");
    assert!(
        !flows(&report, "t-gone").is_empty(),
        "no flow of t-gone: {:#}",
        report["flows"]
    );
    let unnamed = unnamed(&report, "flows", "workload");
    assert!(unnamed.is_empty(), "flows without a name: {unnamed:#?}");
}

/// A Docker socket that accepts and never answers: scrapes still answer within a second,
/// also while a new container appears, and the docker source reads failed.
#[test]
fn a_docker_socket_that_never_answers_delays_no_scrape() {
    if !privileged() {
        return;
    }
    let mut scenario = Scenario::new();
    let dir = std::env::temp_dir().join(format!("galmanhae-hung-docker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let socket = dir.join("docker.sock");
    let listener = UnixListener::bind(&socket).expect("binding the socket");
    // Accepts every connection and keeps it open, silent.
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let listen = free_loopback_address().expect("a port").to_string();
    let mut daemon = Command::new(GALMANHAE)
        .args(["run", "--listen", &listen, "--docker-socket"])
        .arg(&socket)
        .env_remove("GALMANHAE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting galmanhae run");
    let url = format!("http://{listen}/metrics");
    let scrape = || {
        let started = Instant::now();
        let output = Command::new("curl")
            .args(["-sf", "--max-time", "5", &url])
            .output()
            .expect("curl");
        (output, started.elapsed())
    };
    let ready = galmanhae_lab::wait_for(Duration::from_secs(30), "the first scrape", || {
        scrape().0.status.success()
    });
    let mut slowest = Duration::ZERO;
    let mut last = String::new();
    if ready.is_ok() {
        scenario.container("t-new", &[]);
        for _ in 0..8 {
            let (output, took) = scrape();
            assert!(
                output.status.success(),
                "a scrape failed: {}",
                describe(&output)
            );
            slowest = slowest.max(took);
            last = String::from_utf8_lossy(&output.stdout).into_owned();
            thread::sleep(Duration::from_millis(500));
        }
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dir);
    ready.expect("the daemon serves /metrics with a hung Docker socket");
    assert!(
        slowest < Duration::from_secs(1),
        "slowest scrape {slowest:?}"
    );
    assert!(
        last.contains(
            r#"galmanhae_collector_up{collector="docker",status="failed",required="false"} 0"#
        ),
        "the docker source is not failed: {}",
        last.lines()
            .filter(|l| l.contains("collector_up"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Drops on the host's OUTPUT path of what a `--network host` container sends to the db are
/// that container's (by its socket), not the db's (the packets' destination): as many as the
/// rule's packet counter, none for the db or the host.
#[test]
fn drops_on_output_of_a_host_network_containers_packets_are_its_own() {
    if !privileged() {
        return;
    }
    let mut scenario = Scenario::new();
    scenario.container("t-hostnet", &["--network", "host"]);
    fault::loss(10.0, &Target::HostOutput).expect("loss on the host's OUTPUT");
    let before = fault::output_dropped_packets("iptables").expect("the rule's counter");
    let report = diagnose_while(20, || {
        let script = format!("head -c 3000000 /dev/zero | nc -w 5 {DB_V4} {DB_PORT}");
        docker::exec("t-hostnet", &["sh", "-c", &script]).expect("streaming to the db");
    });
    let dropped = fault::output_dropped_packets("iptables").expect("the rule's counter") - before;
    let drops: Vec<&Value> = report["drops"]
        .as_array()
        .expect("drops")
        .iter()
        .filter(|d| d["reason"] == "NETFILTER_DROP")
        .collect();
    let of = |name: &str| -> u64 {
        drops
            .iter()
            .filter(|d| d["workload"] == name)
            .filter_map(|d| d["packets"].as_u64())
            .sum()
    };
    assert!(dropped > 0, "the OUTPUT rule dropped nothing");
    assert_eq!(of("t-hostnet"), dropped, "{drops:#?}");
    let elsewhere: Vec<&&Value> = drops
        .iter()
        .filter(|d| d["workload"] != "t-hostnet")
        .collect();
    assert!(
        elsewhere.is_empty(),
        "drops blamed elsewhere: {elsewhere:#?}"
    );
    let hostnet = drops
        .iter()
        .find(|d| d["workload"] == "t-hostnet")
        .expect("a drop entry");
    assert_eq!(hostnet["dropped_in"], "host", "{hostnet:#}");
    assert!(
        hostnet["egress"].as_u64().is_some_and(|n| n > 0),
        "{hostnet:#}"
    );
}
