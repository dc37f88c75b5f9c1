//! Helpers shared by the root integration tests (`lab.rs`, `daemon.rs`): containers that are
//! removed whatever happens, and transfers that end only when every byte is acknowledged.
#![allow(
    dead_code,
    reason = "each test crate includes this module and uses part of it"
)]

use std::time::Duration;

use galmanhae_lab::{DB_PORT, docker, fault};

pub const GALMANHAE: &str = env!("CARGO_BIN_EXE_galmanhae");

/// `true` if the test can run; panics under CI when it cannot.
pub fn privileged() -> bool {
    galmanhae_lab::root_or_skip("CAP_BPF, CAP_PERFMON, Docker")
}

/// Test containers, removed (and faults cleared) when the test ends, whatever happens.
pub struct Scenario {
    pub containers: Vec<String>,
}

impl Scenario {
    pub fn new() -> Self {
        galmanhae_lab::infrastructure().expect("lab infrastructure (dockerd, db namespace)");
        fault::clear_all(false).expect("clearing old faults");
        // The lab's own streaming containers would only add load here.
        for name in galmanhae_lab::LAB_CONTAINERS {
            let _ = docker::remove_container(name);
        }
        Self {
            containers: Vec::new(),
        }
    }

    /// An idle container; traffic comes from `docker exec`.
    pub fn container(&mut self, name: &str, docker_args: &[&str]) {
        let _ = docker::remove_container(name);
        docker::start_container(name, &["sleep", "3600"], docker_args)
            .expect("starting a container");
        self.containers.push(name.to_owned());
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = fault::clear_all(false);
        for name in &self.containers {
            let _ = docker::remove_container(name);
        }
    }
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

/// `Tcp: RetransSegs` of a process's network namespace, read independently of galmanhae.
pub fn retrans_segs(pid: u32) -> u64 {
    galmanhae_lab::snmp::read(pid)
        .expect("reading snmp")
        .retrans_segs
}
