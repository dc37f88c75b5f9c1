//! The goals of the issues, evaluated from the report's own numbers: met, missed, or n/a.

use super::{Goal, ProgramRun, Report, Run, markdown::short};
use crate::bench::peers::Peer;

impl Report {
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
        goals.extend(self.cost_goals());
        self.goals = goals;
    }

    /// The daemon's CPU against the per-event tracer, the capture and the one-liner.
    /// Issue 13: peak RSS with a huge conntrack table within 8 MiB of the empty table's.
    fn conntrack_goals(&self) -> Vec<Goal> {
        let Some(table) = &self.conntrack else {
            return Vec::new();
        };
        let (daemon, diagnose) = table.growth();
        let bound = i64::try_from(crate::bench::conntrack::RSS_BOUND_KIB).unwrap_or(i64::MAX);
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
}

pub(super) fn goal(name: &str, target: &str, measured: Option<(String, bool)>) -> Goal {
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

/// tcpdump over the window plus tshark's whole analysis, in % of a core over the window.
pub(super) fn capture_percent(run: &Run) -> Option<f64> {
    let cpu = run.cpu.as_ref()?;
    let analysis = cpu.analysis.as_ref()?;
    let window = run.storm.as_ref()?.window_s;
    Some((cpu.window_s + analysis.usage.cpu_s) / window * 100.0)
}

/// A daemon that used no tick in the window used less than one: bound ratios with that.
pub(super) fn daemon_cpu_floor(percent: f64, window_s: f64) -> f64 {
    percent.max(1.0 / window_s)
}

/// The programs that time RTO recoveries and handshakes. On 6.7+ `tcp_cong_state_set` is not
/// loaded: the retransmit program notes each timeout (one 2-byte load per event, one map
/// update per timeout), a cost inside "the other programs" that no program name separates.
const TIME_LOST_PROGRAMS: [&str; 3] = [
    "tcp_cong_state_set",
    "inet_sock_set_state",
    "time_lost_settle",
];

/// Kernel time (% of a core) of the time-lost programs, and of every other program of the
/// same run: what the total was without them, on the same storm.
pub(super) fn time_lost_share(run: &Run) -> Option<(f64, f64)> {
    let (added, rest): (Vec<&ProgramRun>, Vec<&ProgramRun>) = run
        .programs
        .iter()
        .partition(|p| TIME_LOST_PROGRAMS.contains(&p.name.as_str()));
    let sum = |programs: &[&ProgramRun]| programs.iter().map(|p| p.percent_of_core).sum::<f64>();
    (!added.is_empty() && sum(&rest) > 0.0).then(|| (sum(&added), sum(&rest)))
}

/// The daemon's `tcp_retransmit_skb` hook (BTF or classic tracepoint): the retransmit
/// program with the most runs.
pub(super) fn retransmit_hook(run: &Run) -> Option<&ProgramRun> {
    run.programs
        .iter()
        .filter(|p| {
            (p.name.contains("retransmit") || p.name.contains("rtx")) && !p.name.contains("synack")
        })
        .max_by_key(|p| p.runs)
}
