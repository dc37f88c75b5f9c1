//! Helpers shared by the root integration tests (`lab.rs`, `daemon.rs`, `names.rs`):
//! containers that are removed whatever happens, transfers that end only when every byte is
//! acknowledged, runs of the binary that must fail, and lookups in a `diagnose --json` report.
#![allow(
    dead_code,
    reason = "each test crate includes this module and uses part of it"
)]

use std::{
    process::{Command, Output},
    time::Duration,
};

use galmanhae_lab::{DB_PORT, docker};
use serde_json::Value;

pub const GALMANHAE: &str = env!("CARGO_BIN_EXE_galmanhae");

/// `true` if the test can run; panics under CI when it cannot.
pub fn privileged() -> bool {
    galmanhae_lab::root_or_skip("CAP_BPF, CAP_PERFMON, Docker")
}

/// Test containers, removed (and faults cleared) when the test ends, whatever happens.
pub struct Scenario(galmanhae_lab::Scenario);

impl Scenario {
    pub fn new() -> Self {
        Self(galmanhae_lab::Scenario::new().expect("the lab scenario"))
    }

    /// An idle container; traffic comes from `docker exec`.
    pub fn container(&mut self, name: &str, docker_args: &[&str]) {
        self.0
            .container(name, docker_args)
            .expect("starting a container");
    }
}

/// Runs the binary with `args`, which must exit with `code`; its stderr.
pub fn fails(args: &[&str], code: i32) -> String {
    let output = Command::new(GALMANHAE)
        .args(args)
        .output()
        .expect("running galmanhae");
    assert_eq!(
        output.status.code(),
        Some(code),
        "{args:?}: {}",
        describe(&output)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A finished process's status and output, for an assertion's message.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Streams `bytes` from a container to the db and waits until the transfer is done: not only
/// `nc` gone, but every byte acknowledged (an orphaned socket still sends and retransmits its
/// queue and its FIN after `nc` exits).
pub fn stream_from(container: &str, host: &str, bytes: u64) {
    let script = format!("head -c {bytes} /dev/zero | nc -w 10 {host} {DB_PORT}");
    docker::exec(container, &["sh", "-c", &script]).expect("streaming to the db");
    let pid = docker::pid(container)
        .expect("the container's pid")
        .to_string();
    galmanhae_lab::wait_for(
        Duration::from_secs(20),
        "the stream to be acknowledged",
        || {
            galmanhae_lab::run(
                "nsenter",
                &[
                    "-t",
                    &pid,
                    "-n",
                    "ss",
                    "-Htn",
                    "state",
                    "syn-sent",
                    "state",
                    "established",
                    "state",
                    "fin-wait-1",
                    "state",
                    "closing",
                    "state",
                    "last-ack",
                ],
            )
            .is_ok_and(|sockets| sockets.trim().is_empty())
        },
    )
    .expect("the stream's sockets settle");
}

/// Waits until no connection to the db's port is closing on its side: called once the clients'
/// FINs are acknowledged, it waits for the db's own FIN and the ACK of it (a lost last ACK
/// re-sends the FIN), after which no segment of those connections crosses the host again, so a
/// fault rule's counter read afterwards matches a reading taken now. (The lab's db may hold
/// established connections of earlier tests: those do not count.)
pub fn db_connections_closed() {
    let port = format!(":{DB_PORT}");
    let mut args = vec!["netns", "exec", galmanhae_lab::DB_NETNS, "ss", "-Htn"];
    for state in [
        "fin-wait-1",
        "fin-wait-2",
        "close-wait",
        "last-ack",
        "closing",
    ] {
        args.extend(["state", state]);
    }
    args.extend(["sport", "=", &port]);
    galmanhae_lab::wait_for(
        Duration::from_secs(20),
        "the db's connections to close",
        || galmanhae_lab::run("ip", &args).is_ok_and(|sockets| sockets.trim().is_empty()),
    )
    .expect("the db's side of the streams closes");
}

/// `Tcp: RetransSegs` of a process's network namespace, read independently of galmanhae.
pub fn retrans_segs(pid: u32) -> u64 {
    galmanhae_lab::snmp::read(pid)
        .expect("reading snmp")
        .retrans_segs
}

/// The report's workload named `name`; fails the test when there is none.
pub fn workload<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["workloads"]
        .as_array()
        .expect("workloads")
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("workload {name} missing from {:#}", report["workloads"]))
}

/// The report's flows of `workload`.
pub fn flows<'a>(report: &'a Value, workload: &str) -> Vec<&'a Value> {
    report["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .filter(|f| f["workload"] == workload)
        .collect()
}
