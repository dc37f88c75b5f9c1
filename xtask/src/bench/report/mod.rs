//! The bench's results: one structure, written as `BENCHMARKS.json` and rendered as
//! `BENCHMARKS.md` (a table per measurement, a row per peer, a column per level), with the
//! goals of issue 5 evaluated from the same numbers.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{
    measure::Rusage,
    peers::{Analysis, Peer},
};

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub mode: &'static str,
    pub date: String,
    pub machine: Machine,
    /// Tool name and the first line of its `--version`.
    pub tools: Vec<(String, String)>,
    pub storm: StormSettings,
    pub levels: Vec<Level>,
    /// The daemon and diagnose with a small and a huge host conntrack table (issue 13).
    pub conntrack: Option<super::conntrack::ConntrackTable>,
    pub render: Vec<Render>,
    pub goals: Vec<Goal>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub ram_gib: f64,
    pub kernel: String,
}

#[derive(Debug, Serialize)]
pub struct StormSettings {
    pub containers: Vec<String>,
    pub flows_per_container: u32,
    pub loss_percent: f64,
    pub window_s: f64,
    pub remote: String,
    /// Paced levels write one MSS-sized segment per write (`TCP_NODELAY`).
    pub paced_write: &'static str,
    pub unpaced_write_bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct Level {
    pub name: String,
    /// Retransmitted segments per second aimed at; `None` for the unpaced level.
    pub target_retransmits_per_s: Option<f64>,
    /// The pacing the calibration arrived at (segments per second over all flows).
    pub segments_per_s: Option<f64>,
    pub calibration: Vec<Calibration>,
    pub runs: Vec<Run>,
}

impl Level {
    /// The run of `peer` at this level.
    fn run(&self, peer: Peer) -> Option<&Run> {
        self.runs.iter().find(|r| r.peer == peer)
    }
}

#[derive(Debug, Serialize)]
pub struct Calibration {
    pub segments_per_s: f64,
    pub retransmits_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct Run {
    pub peer: Peer,
    pub label: String,
    /// What failed: the row keeps what was measured before.
    pub error: Option<String>,
    pub storm: Option<StormResult>,
    pub cpu: Option<Cpu>,
    /// Largest `VmHWM` of the tool's processes at the end of the window, or its `wait4` maximum.
    pub peak_rss_kib: Option<u64>,
    pub programs: Vec<ProgramRun>,
    pub accuracy: Option<Accuracy>,
    pub notes: Vec<String>,
}

impl Run {
    pub fn new(peer: Peer) -> Self {
        Self {
            peer,
            label: peer.to_string(),
            error: None,
            storm: None,
            cpu: None,
            peak_rss_kib: None,
            programs: Vec::new(),
            accuracy: None,
            notes: Vec::new(),
        }
    }

    /// The storm's goodput in this run, in MB/s.
    fn goodput(&self) -> Option<f64> {
        self.storm.as_ref().map(|s| s.goodput_mb_s)
    }
}

/// The storm's own numbers in this run.
#[derive(Debug, Serialize)]
pub struct StormResult {
    pub window_s: f64,
    /// `RetransSegs` of the storm's namespaces over the window, per second.
    pub retransmits_per_s: f64,
    /// `OutSegs` of the storm's namespaces over the window, per second.
    pub segments_per_s: f64,
    /// `tcpi_bytes_acked` of every flow over the window.
    pub goodput_mb_s: f64,
    pub reset_flows: u32,
}

#[derive(Debug, Serialize)]
pub struct Cpu {
    /// User + system time of the tool's processes over the storm window: `usage_usec` of
    /// the cgroup the tool runs in (every thread and child, exited ones included).
    pub window_s: f64,
    /// The same from utime + stime (+ cutime + cstime) in /proc/PID/stat of the tool's
    /// process tree, in 10 ms ticks.
    pub proc_stat_window_s: f64,
    pub percent_of_core: f64,
    /// From start until the storm began (loading, attaching, first scrape).
    pub startup_s: f64,
    /// Start to exit, from `wait4`.
    pub total: Option<Rusage>,
    /// tshark's analysis of the capture, after the storm.
    pub analysis: Option<Analysis>,
}

#[derive(Debug, Serialize)]
pub struct ProgramRun {
    pub id: u32,
    pub name: String,
    pub kind: String,
    pub runs: u64,
    pub run_time_ns: u64,
    pub ns_per_run: Option<f64>,
    pub percent_of_core: f64,
}

#[derive(Debug, Serialize)]
pub struct Accuracy {
    pub unit: &'static str,
    pub containers: Vec<ContainerCount>,
    /// Events the tool reports it lost.
    pub lost: Option<u64>,
    /// What a host-only tool counted in the host namespace, beside the host's `RetransSegs`.
    pub host: Option<HostCount>,
    /// Another reading of the tool's output (tshark: out-of-order frames too, as segments).
    pub alternative: Option<AlternativeCount>,
}

#[derive(Debug, Serialize)]
pub struct AlternativeCount {
    pub what: &'static str,
    pub unit: &'static str,
    pub containers: Vec<ContainerCount>,
}

#[derive(Debug, Serialize)]
pub struct ContainerCount {
    pub container: String,
    /// `None`: the tool has no per-container count.
    pub counted: Option<u64>,
    pub retrans_segs: u64,
    pub difference: Option<i64>,
}

impl ContainerCount {
    /// `counted` beside `retrans_segs`, with their difference.
    pub fn new(container: String, counted: Option<u64>, retrans_segs: u64) -> Self {
        Self {
            container,
            counted,
            retrans_segs,
            difference: counted.map(|n| {
                i64::try_from(i128::from(n) - i128::from(retrans_segs)).unwrap_or(i64::MAX)
            }),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct HostCount {
    pub counted: u64,
    pub retrans_segs: u64,
}

impl Accuracy {
    fn counted_total(&self) -> Option<u64> {
        self.containers.iter().map(|c| c.counted).sum()
    }

    fn retrans_segs_total(&self) -> u64 {
        self.containers.iter().map(|c| c.retrans_segs).sum()
    }

    /// Every container counted exactly.
    pub fn exact(&self) -> bool {
        self.containers.iter().all(|c| c.difference == Some(0))
    }
}

/// One line of the render example's output.
#[derive(Debug, Deserialize, Serialize)]
pub struct Render {
    pub series: u64,
    pub format: String,
    pub median_ms: f64,
    pub max_ms: f64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Goal {
    pub name: String,
    pub target: String,
    pub measured: String,
    /// met, missed, or n/a.
    pub status: &'static str,
}

impl Report {
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let json = dir.join("BENCHMARKS.json");
        let markdown = dir.join("BENCHMARKS.md");
        std::fs::write(&json, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", json.display()))?;
        std::fs::write(&markdown, self.markdown())
            .with_context(|| format!("writing {}", markdown.display()))?;
        eprintln!(
            "xtask: bench: wrote {} and {}",
            markdown.display(),
            json.display()
        );
        Ok(())
    }

    fn run(&self, level: &str, peer: Peer) -> Option<&Run> {
        self.levels.iter().find(|l| l.name == level)?.run(peer)
    }

    /// The CPU of `peer`'s tool at `level`, in % of a core.
    fn cpu_percent(&self, level: &str, peer: Peer) -> Option<f64> {
        Some(self.run(level, peer)?.cpu.as_ref()?.percent_of_core)
    }
}

mod cost_goals;
mod goals;
mod markdown;
#[cfg(test)]
mod tests;
