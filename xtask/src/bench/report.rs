//! The bench's results: one structure, written as `BENCHMARKS.json` and rendered as
//! `BENCHMARKS.md` (a table per measurement, a row per peer, a column per level), with the
//! goals of issue 5 evaluated from the same numbers.

use std::{fmt::Write as _, path::Path};

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

    /// Evaluates the goals of issue 5 from this run's numbers.
    pub fn evaluate_goals(&mut self) {
        let level = "10k/s";
        let mut goals = Vec::new();
        let daemon = self.run(level, Peer::Daemon);

        let hook = daemon.and_then(retransmit_hook);
        goals.push(goal(
            "Kernel cost per retransmit event (daemon's retransmit hook, 10k/s)",
            "≤ 100 ns (aim 50 ns)",
            hook.and_then(|p| p.ns_per_run).map(|ns| {
                (
                    format!(
                        "{ns:.0} ns/run ({}, {} runs)",
                        hook.map_or("", |p| p.name.as_str()),
                        hook.map_or(0, |p| p.runs)
                    ),
                    ns <= 100.0,
                )
            }),
        ));
        let daemon_cpu = self.cpu_percent(level, Peer::Daemon);
        goals.push(goal(
            "Daemon CPU at 10k retransmits/s",
            "≤ 1 % of one core",
            daemon_cpu.map(|c| (format!("{c:.2} % of a core"), c <= 1.0)),
        ));
        let rss = daemon.and_then(|r| r.peak_rss_kib);
        goals.push(goal(
            "Daemon RSS at 10k retransmits/s",
            "≤ 40 MB",
            rss.map(|kib| {
                let mb = kib as f64 / 1024.0;
                (format!("{mb:.1} MiB peak"), mb <= 40.0)
            }),
        ));
        goals.extend(self.cpu_ratio_goals(level, daemon_cpu));
        goals.push(goal(
            "Kernel time of the time-lost hooks (issue 14, daemon, 10k/s)",
            "≤ 10 % added to the other programs' total",
            daemon.and_then(time_lost_share).map(|(added, rest)| {
                let share = 100.0 * added / rest;
                (
                    format!("{added:.3} % of a core on {rest:.3} % before them: +{share:.1} %"),
                    share <= 10.0,
                )
            }),
        ));
        goals.push(self.exact_counts_goal());
        let render = self
            .render
            .iter()
            .find(|r| r.series == 10_000 && r.format == "prometheus");
        goals.push(goal(
            "/metrics render at 10k series",
            "≤ 10 ms",
            render.map(|r| {
                (
                    format!(
                        "{:.2} ms median, {:.2} ms max, {} bytes",
                        r.median_ms, r.max_ms, r.bytes
                    ),
                    r.median_ms <= 10.0,
                )
            }),
        ));
        goals.extend(self.throughput_goals());
        goals.extend(self.conntrack_goals());
        self.goals = goals;
    }

    /// The daemon's CPU against the per-event tracer, the capture and the one-liner.
    /// Issue 13: peak RSS with a huge conntrack table within 8 MiB of the empty table's.
    fn conntrack_goals(&self) -> Vec<Goal> {
        let Some(table) = &self.conntrack else {
            return Vec::new();
        };
        let (daemon, diagnose) = table.growth();
        let bound = i64::try_from(super::conntrack::RSS_BOUND_KIB).unwrap_or(i64::MAX);
        [("Daemon", daemon), ("diagnose", diagnose)]
            .into_iter()
            .map(|(who, grew)| {
                goal(
                    &format!(
                        "{who} peak RSS with {} more conntrack entries (issue 13)",
                        table.added
                    ),
                    "≤ 8 MiB above the table as it came",
                    Some((format!("{:+.1} MiB", grew as f64 / 1024.0), grew <= bound)),
                )
            })
            .collect()
    }

    fn cpu_ratio_goals(&self, level: &str, daemon_cpu: Option<f64>) -> Vec<Goal> {
        let mut goals = Vec::new();
        let ratio = |other: Option<f64>, at_least: f64, what: &str| {
            let (Some(daemon), Some(other)) = (daemon_cpu, other) else {
                return None;
            };
            // One clock tick over the window bounds a daemon that used none.
            let floor = daemon_cpu_floor(daemon, self.storm.window_s);
            Some((
                format!(
                    "{what} {other:.2} % vs daemon {daemon:.2} %: {:.0}x",
                    other / floor
                ),
                other / floor >= at_least,
            ))
        };
        goals.push(goal(
            "CPU vs the per-event tracer (bpftrace, one line per retransmit)",
            "≥ 10x less",
            ratio(
                self.cpu_percent(level, Peer::BpftraceEvents),
                10.0,
                "tracer",
            ),
        ));
        goals.push(goal(
            "CPU vs the packet capture (tcpdump + tshark's analysis)",
            "≥ 100x less",
            ratio(
                self.run(level, Peer::Tcpdump).and_then(capture_percent),
                100.0,
                "capture",
            ),
        ));
        goals.push(goal(
            "CPU vs the bpftrace in-kernel one-liner",
            "no more",
            self.cpu_percent(level, Peer::BpftraceCounts)
                .zip(daemon_cpu)
                .map(|(one_liner, daemon)| {
                    (
                        format!("one-liner {one_liner:.2} % vs daemon {daemon:.2} %"),
                        daemon <= one_liner,
                    )
                }),
        ));
        goals
    }

    fn throughput_goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        for level in ["10k/s", "max"] {
            let goodput = |peer| self.run(level, peer).and_then(Run::goodput);
            let noise = goodput(Peer::Baseline)
                .zip(goodput(Peer::BaselineAgain))
                .map_or(String::new(), |(a, b)| {
                    format!(
                        "; the two baselines differ by {:+.2} %",
                        (b / a - 1.0) * 100.0
                    )
                });
            goals.push(goal(
                &format!("Storm throughput with the daemon running ({level})"),
                "within 1 % of baseline (no more than 1 % below the mean of the baselines)",
                self.run(level, Peer::Daemon)
                    .and_then(|daemon| Some((daemon.goodput()?, self.baseline_goodput(daemon)?)))
                    .map(|(with, without)| {
                        let change = (with / without - 1.0) * 100.0;
                        (
                            format!("{with:.1} vs {without:.1} MB/s ({change:+.2} %){noise}"),
                            change >= -1.0,
                        )
                    }),
            ));
        }
        goals
    }

    /// galmanhae's counts exact at every level; what the others lost or could not see.
    fn exact_counts_goal(&self) -> Goal {
        let mut measured = Vec::new();
        let mut met = true;
        let mut any = false;
        for level in &self.levels {
            let mut parts = Vec::new();
            for run in &level.runs {
                let Some(accuracy) = &run.accuracy else {
                    if matches!(run.peer, Peer::Daemon | Peer::Diagnose) {
                        met = false;
                    }
                    continue;
                };
                let total = accuracy.retrans_segs_total();
                match run.peer {
                    Peer::Daemon | Peer::Diagnose => {
                        any = true;
                        met &= accuracy.exact() && accuracy.unit == "segments";
                        let counted = accuracy.counted_total().unwrap_or(0);
                        parts.push(format!(
                            "{} {:+} of {total} {}",
                            short(run.peer),
                            i128::from(counted) - i128::from(total),
                            accuracy.unit
                        ));
                    }
                    Peer::BpftraceEvents | Peer::Tcpdump => {
                        if let Some(lost) = accuracy.lost.filter(|&l| l > 0) {
                            parts.push(format!("{} lost {lost}", short(run.peer)));
                        }
                    }
                    Peer::NodeExporter => {
                        parts.push(format!("node_exporter sees 0 of {total}"));
                    }
                    _ => {}
                }
            }
            measured.push(format!("{}: {}", level.name, parts.join(", ")));
        }
        Goal {
            name: "Exact counts against RetransSegs at every rate".to_owned(),
            target: "galmanhae = RetransSegs per container".to_owned(),
            measured: measured.join("; "),
            status: if !any {
                "n/a"
            } else if met {
                "met"
            } else {
                "missed"
            },
        }
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let levels: Vec<&str> = self.levels.iter().map(|l| l.name.as_str()).collect();
        let _ = writeln!(
            md,
            "# Benchmarks\n\nGenerated by `cargo xtask bench{}` on {}; every number below comes \
             from this one run (`BENCHMARKS.json` has the same data and more detail).\n",
            if self.mode == "quick" { " --quick" } else { "" },
            self.date
        );
        self.write_setup(&mut md);
        self.write_goals(&mut md);
        self.write_storm(&mut md);
        self.write_cpu(&mut md, &levels);
        self.write_rss(&mut md, &levels);
        if let Some(table) = &self.conntrack {
            md.push_str(&table.markdown());
        }
        self.write_programs(&mut md, &levels);
        self.write_accuracy(&mut md, &levels);
        self.write_throughput(&mut md, &levels);
        self.write_render(&mut md);
        let _ = writeln!(md, "## Notes\n");
        for note in &self.notes {
            let _ = writeln!(md, "- {note}");
        }
        for level in &self.levels {
            for run in &level.runs {
                if let Some(error) = &run.error {
                    let _ = writeln!(md, "- {} / {}: **failed**: {error}", level.name, run.label);
                }
                for note in &run.notes {
                    let _ = writeln!(md, "- {} / {}: {note}", level.name, run.label);
                }
            }
        }
        md
    }

    fn write_setup(&self, md: &mut String) {
        let m = &self.machine;
        let s = &self.storm;
        let tools: Vec<String> = self
            .tools
            .iter()
            .map(|(t, v)| format!("{t} `{v}`"))
            .collect();
        let _ = writeln!(
            md,
            "## Setup\n\n- Machine: {}, {} cores, {:.0} GiB RAM; kernel {}\n- Tools: {}",
            m.cpu,
            m.cores,
            m.ram_gib,
            m.kernel,
            tools.join(", ")
        );
        let _ = writeln!(
            md,
            "- Storm: {} containers ({}) x {} flows to the db {}, {} % loss injected on each \
             container's path (iptables, host FORWARD). Paced levels: {}, `gso_max_segs 1` on \
             the containers' interface (one segment per skb, so one retransmit event is one \
             segment), a token bucket per container; the unpaced level writes {} KiB at a time \
             with GSO. Each run starts a fresh tool and fresh flows; the window is {} s of \
             storm. Flows close with a RST at the end, so no retransmit outlives the window.",
            s.containers.len(),
            s.containers.join(", "),
            s.flows_per_container,
            s.remote,
            s.loss_percent,
            s.paced_write,
            s.unpaced_write_bytes / 1024,
            s.window_s,
        );
        let _ = writeln!(
            md,
            "- CPU is user + system time of the tool's processes over the window, read from \
             the cgroup (v2) each tool runs in (`cpu.stat` `usage_usec`: every thread and \
             child, exited ones included; /proc/PID/stat gives the same in 10 ms ticks, \
             {:.2} % of a core per tick over this window, and is in the JSON as \
             `proc_stat_window_s`). Kernel time of BPF programs is apart \
             (`kernel.bpf_stats_enabled=1`, which itself adds two clock reads per run).\n",
            1.0 / s.window_s
        );
    }

    fn write_goals(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "## Goals (issues 5, 13 and 14)\n\n| Goal | Target | Measured | Status |\n|---|---|---|---|"
        );
        for g in &self.goals {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                g.name, g.target, g.measured, g.status
            );
        }
        md.push('\n');
    }

    fn write_storm(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "## Storm levels\n\n| Level | Target retransmits/s | Pacing (segments/s) | \
             Calibration (segments/s -> retransmits/s) | Achieved retransmits/s per run |\n\
             |---|---|---|---|---|"
        );
        for level in &self.levels {
            let achieved: Vec<String> = level
                .runs
                .iter()
                .filter_map(|r| {
                    r.storm
                        .as_ref()
                        .map(|s| format!("{} {:.0}", short(r.peer), s.retransmits_per_s))
                })
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                level.name,
                level
                    .target_retransmits_per_s
                    .map_or("as many as possible".to_owned(), |t| format!("{t:.0}")),
                level
                    .segments_per_s
                    .map_or("unpaced".to_owned(), |r| format!("{r:.0}")),
                if level.calibration.is_empty() {
                    "-".to_owned()
                } else {
                    level
                        .calibration
                        .iter()
                        .map(|c| format!("{:.0} -> {:.0}", c.segments_per_s, c.retransmits_per_s))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                achieved.join(", ")
            );
        }
        md.push('\n');
    }

    /// A section with a table of a row per peer and a cell per level.
    fn peer_table(
        &self,
        md: &mut String,
        (title, intro): (&str, &str),
        levels: &[&str],
        cell: impl Fn(&Run) -> String,
    ) {
        let _ = writeln!(md, "## {title}\n");
        if !intro.is_empty() {
            let _ = writeln!(md, "{intro}\n");
        }
        let _ = writeln!(md, "| Peer | {} |", levels.join(" | "));
        let _ = writeln!(md, "|---|{}", "---|".repeat(levels.len()));
        for peer in Peer::ALL {
            let cells: Vec<String> = self
                .levels
                .iter()
                .map(|l| {
                    l.run(peer).map_or_else(
                        || "not run".to_owned(),
                        |r| {
                            if r.error.is_some() && r.storm.is_none() {
                                "failed (see notes)".to_owned()
                            } else {
                                cell(r)
                            }
                        },
                    )
                })
                .collect();
            if cells.iter().all(|c| c == "not run") {
                continue;
            }
            let _ = writeln!(md, "| {peer} | {} |", cells.join(" | "));
        }
        md.push('\n');
    }

    fn write_cpu(&self, md: &mut String, levels: &[&str]) {
        let intro = "CPU of the tool's processes (user + system) over the storm window, in % of \
                     one core. In brackets: the kernel time of the BPF programs it loaded over \
                     the same window (apart: not process CPU), its start-up CPU (load, attach) \
                     and, for the capture, tcpdump's share and tshark's analysis afterwards, \
                     which the capture's percentage includes (tshark's CPU seconds over the \
                     window).";
        self.peer_table(md, ("CPU", intro), levels, |r| match &r.cpu {
            None => "-".to_owned(),
            Some(cpu) => {
                let mut cell =
                    format!("{:.2} %", capture_percent(r).unwrap_or(cpu.percent_of_core));
                let mut extra = Vec::new();
                if !r.programs.is_empty() {
                    let kernel: f64 = r.programs.iter().map(|p| p.percent_of_core).sum();
                    extra.push(format!("BPF {kernel:.2} %"));
                }
                extra.push(format!("start-up {:.2} s", cpu.startup_s));
                if let Some(a) = &cpu.analysis {
                    extra.push(format!(
                        "tcpdump {:.2} % + tshark {:.2} s",
                        cpu.percent_of_core, a.usage.cpu_s
                    ));
                }
                let _ = write!(cell, " ({})", extra.join(", "));
                cell
            }
        });
    }

    fn write_rss(&self, md: &mut String, levels: &[&str]) {
        let intro = "The largest `VmHWM` of the tool's processes, or its `wait4` maximum; \
                     tshark's for the capture's analysis in brackets.";
        self.peer_table(md, ("Peak RSS (MiB)", intro), levels, |r| {
            let mut cell = r
                .peak_rss_kib
                .map_or("-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
            if let Some(a) = r.cpu.as_ref().and_then(|c| c.analysis.as_ref()) {
                let _ = write!(
                    cell,
                    " (tshark {:.1})",
                    a.usage.peak_rss_kib as f64 / 1024.0
                );
            }
            cell
        });
    }

    fn write_programs(&self, md: &mut String, levels: &[&str]) {
        let _ = writeln!(
            md,
            "## Kernel time per BPF program\n\nPrograms each tool loaded, over the storm window: \
             ns per run (runs), and the kernel CPU they took in % of one core. tcpdump's classic \
             BPF filter is not listed by bpftool.\n\n| Peer | Program | Type | {} |\n|---|---|---|{}",
            levels.join(" | "),
            "---|".repeat(levels.len())
        );
        for peer in Peer::ALL {
            let mut names: Vec<(String, String)> = Vec::new();
            for level in &self.levels {
                for p in level.run(peer).into_iter().flat_map(|r| &r.programs) {
                    if !names.iter().any(|(n, k)| *n == p.name && *k == p.kind) {
                        names.push((p.name.clone(), p.kind.clone()));
                    }
                }
            }
            for (name, kind) in names {
                let cells: Vec<String> = self
                    .levels
                    .iter()
                    .map(|l| {
                        let programs: Vec<&ProgramRun> = l
                            .run(peer)
                            .into_iter()
                            .flat_map(|r| &r.programs)
                            .filter(|p| p.name == name && p.kind == kind)
                            .collect();
                        let runs: u64 = programs.iter().map(|p| p.runs).sum();
                        let time: u64 = programs.iter().map(|p| p.run_time_ns).sum();
                        let percent: f64 = programs.iter().map(|p| p.percent_of_core).sum();
                        if programs.is_empty() {
                            "-".to_owned()
                        } else if runs == 0 {
                            "0 runs".to_owned()
                        } else {
                            format!(
                                "{:.0} ns ({runs}), {percent:.3} %",
                                time as f64 / runs as f64
                            )
                        }
                    })
                    .collect();
                let _ = writeln!(md, "| {peer} | {name} | {kind} | {} |", cells.join(" | "));
            }
        }
        md.push('\n');
    }

    fn write_accuracy(&self, md: &mut String, levels: &[&str]) {
        let intro = "Each tool's count of the storm containers' retransmits against the \
                     kernel's `RetransSegs` of their namespaces over the same window: counted / \
                     `RetransSegs` (difference; the largest per-container difference), and the \
                     events the tool reports lost (diagnose: its lost counters and the runs the \
                     kernel skipped of its retransmit hooks; the daemon has no per-program \
                     skipped count, its total is in the notes; tcpdump: packets dropped by the \
                     kernel). Units differ: galmanhae counts segments (the \
                     daemon attempts where its segment family is absent), bpftrace events (one \
                     per tracepoint hit: one segment at the paced levels, a GSO skb of several \
                     at max), tshark frames (likewise). On this sub-millisecond path tshark \
                     marks part of the retransmissions as out of order instead (its threshold \
                     is 3 ms), so its cell also counts both marks, as segments of 1448 bytes.";
        self.peer_table(md, ("Accuracy", intro), levels, |r| {
            let Some(a) = &r.accuracy else {
                return "-".to_owned();
            };
            let total = a.retrans_segs_total();
            let mut cell = match a.counted_total() {
                Some(counted) => {
                    let worst = a
                        .containers
                        .iter()
                        .filter_map(|c| c.difference)
                        .max_by_key(|d| d.unsigned_abs())
                        .unwrap_or(0);
                    format!(
                        "{counted} / {total} {} ({:+}; worst {worst:+})",
                        a.unit,
                        i128::from(counted) - i128::from(total)
                    )
                }
                None => format!("none of {total}"),
            };
            if let Some(lost) = a.lost {
                let _ = write!(cell, ", lost {lost}");
            }
            if let Some(alt) = &a.alternative {
                let counted: u64 = alt.containers.iter().filter_map(|c| c.counted).sum();
                let _ = write!(
                    cell,
                    "; counting {}: {counted} / {total} {} ({:+})",
                    alt.what,
                    alt.unit,
                    i128::from(counted) - i128::from(total)
                );
            }
            if let Some(host) = &a.host {
                let _ = write!(
                    cell,
                    "; host namespace {} (its RetransSegs {})",
                    host.counted, host.retrans_segs
                );
            }
            cell
        });
    }

    fn write_throughput(&self, md: &mut String, levels: &[&str]) {
        let intro = "The storm's goodput (bytes acknowledged) and segments sent (`OutSegs`) \
                     with each tool running, against the mean of the two runs without a tool \
                     of the same level (the second baseline's own difference is the storm's \
                     noise).";
        self.peer_table(md, ("Storm throughput", intro), levels, |r| {
            let Some(s) = &r.storm else {
                return "-".to_owned();
            };
            let change = self
                .baseline_goodput(r)
                .filter(|_| r.peer != Peer::Baseline)
                .map_or(String::new(), |b| {
                    format!(" ({:+.2} %)", (s.goodput_mb_s / b - 1.0) * 100.0)
                });
            format!(
                "{:.1} MB/s{change}, {:.0} segments/s",
                s.goodput_mb_s, s.segments_per_s
            )
        });
    }

    /// The mean goodput of the baselines of `run`'s level; the first baseline's alone for the
    /// second, so that its difference is the noise.
    fn baseline_goodput(&self, run: &Run) -> Option<f64> {
        let level = self
            .levels
            .iter()
            .find(|l| l.runs.iter().any(|r| std::ptr::eq(r, run)))?;
        let goodput = |peer| level.run(peer).and_then(Run::goodput);
        let first = goodput(Peer::Baseline);
        match (run.peer, first, goodput(Peer::BaselineAgain)) {
            (Peer::BaselineAgain, first, _) => first,
            (_, Some(a), Some(b)) => Some(f64::midpoint(a, b)),
            (_, a, b) => a.or(b),
        }
    }

    fn write_render(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "## /metrics render\n\n`cargo run --release -p galmanhae-agent --example render`: \
             the daemon's exposition of N series (21 renders each).\n\n\
             | Series | Format | Median ms | Max ms | Bytes |\n|---|---|---|---|---|"
        );
        for r in &self.render {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.2} | {} |",
                r.series, r.format, r.median_ms, r.max_ms, r.bytes
            );
        }
        md.push('\n');
    }
}

fn goal(name: &str, target: &str, measured: Option<(String, bool)>) -> Goal {
    let (measured, status) = match measured {
        Some((text, true)) => (text, "met"),
        Some((text, false)) => (text, "missed"),
        None => ("not measured in this run".to_owned(), "n/a"),
    };
    Goal {
        name: name.to_owned(),
        target: target.to_owned(),
        measured,
        status,
    }
}

fn short(peer: Peer) -> &'static str {
    match peer {
        Peer::Baseline => "baseline",
        Peer::BaselineAgain => "baseline again",
        Peer::Daemon => "run",
        Peer::Diagnose => "diagnose",
        Peer::BpftraceCounts => "bpftrace-counts",
        Peer::BpftraceEvents => "bpftrace-events",
        Peer::Tcpdump => "capture",
        Peer::NodeExporter => "node_exporter",
    }
}

/// tcpdump over the window plus tshark's whole analysis, in % of a core over the window.
fn capture_percent(run: &Run) -> Option<f64> {
    let cpu = run.cpu.as_ref()?;
    let analysis = cpu.analysis.as_ref()?;
    let window = run.storm.as_ref()?.window_s;
    Some((cpu.window_s + analysis.usage.cpu_s) / window * 100.0)
}

/// A daemon that used no tick in the window used less than one: bound ratios with that.
fn daemon_cpu_floor(percent: f64, window_s: f64) -> f64 {
    percent.max(1.0 / window_s)
}

/// The daemon's `tcp_retransmit_skb` hook (BTF or classic tracepoint): the retransmit
/// program with the most runs.
/// The programs that time RTO recoveries and handshakes.
const TIME_LOST_PROGRAMS: [&str; 2] = ["tcp_cong_state_set", "inet_sock_set_state"];

/// Kernel time (% of a core) of the time-lost programs, and of every other program of the
/// same run: what the total was without them, on the same storm.
fn time_lost_share(run: &Run) -> Option<(f64, f64)> {
    let (added, rest): (Vec<&ProgramRun>, Vec<&ProgramRun>) = run
        .programs
        .iter()
        .partition(|p| TIME_LOST_PROGRAMS.contains(&p.name.as_str()));
    let sum = |programs: &[&ProgramRun]| programs.iter().map(|p| p.percent_of_core).sum::<f64>();
    (!added.is_empty() && sum(&rest) > 0.0).then(|| (sum(&added), sum(&rest)))
}

fn retransmit_hook(run: &Run) -> Option<&ProgramRun> {
    run.programs
        .iter()
        .filter(|p| {
            (p.name.contains("retransmit") || p.name.contains("rtx")) && !p.name.contains("synack")
        })
        .max_by_key(|p| p.runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(peer: Peer, goodput: f64, counted: Option<u64>, truth: u64) -> Run {
        let mut run = Run::new(peer);
        run.storm = Some(StormResult {
            window_s: 10.0,
            retransmits_per_s: 10_000.0,
            segments_per_s: 50_000.0,
            goodput_mb_s: goodput,
            reset_flows: 0,
        });
        if !peer.is_baseline() {
            run.cpu = Some(Cpu {
                window_s: 0.05,
                proc_stat_window_s: 0.05,
                percent_of_core: 0.5,
                startup_s: 0.1,
                total: None,
                analysis: None,
            });
            run.accuracy = Some(Accuracy {
                unit: "segments",
                containers: vec![ContainerCount::new("storm-1".to_owned(), counted, truth)],
                lost: Some(0),
                host: None,
                alternative: None,
            });
        }
        run
    }

    fn report(runs: Vec<Run>) -> Report {
        Report {
            schema: "galmanhae.bench/v1",
            mode: "quick",
            date: "today".to_owned(),
            machine: Machine {
                cpu: "x".to_owned(),
                cores: 2,
                ram_gib: 24.0,
                kernel: "6.18".to_owned(),
            },
            tools: Vec::new(),
            storm: StormSettings {
                containers: vec!["storm-1".to_owned()],
                flows_per_container: 1,
                loss_percent: 20.0,
                window_s: 10.0,
                remote: "198.19.0.2:5432".to_owned(),
                paced_write: "one MSS",
                unpaced_write_bytes: 65_536,
            },
            conntrack: None,
            levels: vec![Level {
                name: "10k/s".to_owned(),
                target_retransmits_per_s: Some(10_000.0),
                segments_per_s: Some(50_000.0),
                calibration: Vec::new(),
                runs,
            }],
            render: vec![Render {
                series: 10_000,
                format: "prometheus".to_owned(),
                median_ms: 1.2,
                max_ms: 1.8,
                bytes: 1_000_000,
            }],
            goals: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn status<'a>(report: &'a Report, name: &str) -> &'a str {
        report
            .goals
            .iter()
            .find(|g| g.name.starts_with(name))
            .unwrap()
            .status
    }

    #[test]
    fn goals_from_one_run() {
        let mut report = report(vec![
            run(Peer::Baseline, 100.0, None, 0),
            run(Peer::Daemon, 98.5, Some(1000), 1000),
            run(Peer::Diagnose, 100.0, Some(999), 1000),
            run(Peer::BaselineAgain, 96.0, None, 0),
        ]);
        report.evaluate_goals();
        // 98.5 against the mean of 100 and 96: +0.51 %.
        assert_eq!(
            status(&report, "Storm throughput with the daemon running (10k/s)"),
            "met"
        );
        assert_eq!(
            status(&report, "Storm throughput with the daemon running (max)"),
            "n/a"
        );
        // diagnose missed one segment.
        assert_eq!(status(&report, "Exact counts"), "missed");
        assert_eq!(status(&report, "Daemon CPU"), "met");
        assert_eq!(status(&report, "/metrics render"), "met");
        let markdown = report.markdown();
        assert!(markdown.contains("| galmanhae run | 98.5 MB/s (+0.51 %), 50000 segments/s |"));
        assert!(
            markdown
                .contains("| galmanhae diagnose | 999 / 1000 segments (-1; worst -1), lost 0 |")
        );
    }

    #[test]
    fn the_time_lost_hooks_are_weighed_against_the_other_programs() {
        let program = |name: &str, percent_of_core: f64| ProgramRun {
            id: 1,
            name: name.to_owned(),
            kind: "tracing".to_owned(),
            runs: 1,
            run_time_ns: 1,
            ns_per_run: Some(1.0),
            percent_of_core,
        };
        let mut daemon = run(Peer::Daemon, 100.0, Some(1000), 1000);
        daemon.programs = vec![
            program("tcp_rtx_skb_btf", 1.0),
            program("kfree_skb_btf", 1.0),
            program("tcp_cong_state_set", 0.15),
            program("inet_sock_set_state", 0.05),
        ];
        let (added, rest) = time_lost_share(&daemon).unwrap();
        assert!((added - 0.2).abs() < 1e-9 && (rest - 2.0).abs() < 1e-9);
        let mut report = report(vec![run(Peer::Baseline, 100.0, None, 0), daemon]);
        report.evaluate_goals();
        assert_eq!(status(&report, "Kernel time of the time-lost hooks"), "met");
        report.levels[0].runs[1].programs[2].percent_of_core = 0.2;
        report.evaluate_goals();
        assert_eq!(
            status(&report, "Kernel time of the time-lost hooks"),
            "missed"
        );
    }

    #[test]
    fn a_slower_storm_misses_the_throughput_goal() {
        let mut report = report(vec![
            run(Peer::Baseline, 100.0, None, 0),
            run(Peer::Daemon, 97.0, Some(10), 10),
            run(Peer::Diagnose, 100.0, Some(10), 10),
        ]);
        report.evaluate_goals();
        assert_eq!(
            status(&report, "Storm throughput with the daemon running (10k/s)"),
            "missed"
        );
        assert_eq!(status(&report, "Exact counts"), "met");
    }
}
