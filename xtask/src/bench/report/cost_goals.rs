//! Issue 15's goals: galmanhae's kernel work against the one-liner's and the empty-program
//! floor, the daemon's footprint, the data path at full speed.

use super::{Goal, ProgramRun, Report, Run, goals::goal};
use crate::bench::peers::Peer;

/// The floor program of each galmanhae hook (see `galmanhae-agent/examples/floor.rs`).
const FLOORS: [(&str, &str); 4] = [
    ("tcp_rtx_skb_btf", "floor_rtx"),
    ("kfree_skb_btf", "floor_drop"),
    ("tcp_cong_state_set", "floor_cong"),
    ("nat_leak_egress", "floor_tc"),
];

impl Report {
    pub(super) fn cost_goals(&self) -> Vec<Goal> {
        let mut goals = vec![self.kernel_vs_one_liner()];
        goals.push(self.per_run_goal("tcp_rtx_skb_btf", "1k/s", 250.0));
        goals.push(self.per_run_goal("tcp_rtx_skb_btf", "10k/s", 150.0));
        for level in self.level_names() {
            goals.push(self.per_run_goal("kfree_skb_btf", &level, 250.0));
        }
        goals.push(self.egress_goal());
        let cpu = self.cpu_percent("10k/s", Peer::Daemon);
        goals.push(goal(
            "Daemon CPU at 10k retransmits/s (issue 15)",
            "≤ 0.15 % of one core",
            cpu.map(|c| (format!("{c:.2} % of a core"), c <= 0.15)),
        ));
        goals.push(self.daemon_rss_goal());
        goals.push(self.data_path_goal());
        goals
    }

    fn level_names(&self) -> Vec<String> {
        self.levels.iter().map(|l| l.name.clone()).collect()
    }

    /// Issue 15: every galmanhae program together against bpftrace's per-flow count.
    fn kernel_vs_one_liner(&self) -> Goal {
        let mut parts = Vec::new();
        let mut met = true;
        for level in self.level_names() {
            let total = |peer| self.run(&level, peer).map(|r| kernel_percent(&r.programs));
            if let (Some(ours), Some(theirs)) = (total(Peer::Daemon), total(Peer::BpftraceCounts)) {
                met &= ours <= theirs;
                parts.push(format!("{level}: {ours:.3} % vs {theirs:.3} %"));
            }
        }
        goal(
            "Kernel time of all the daemon's programs vs the bpftrace one-liner's (issue 15)",
            "no more, at every level",
            (!parts.is_empty()).then(|| (parts.join("; "), met)),
        )
    }

    /// A program's ns per run at `level` against `bound`, with its hook's floor.
    fn per_run_goal(&self, program: &str, level: &str, bound: f64) -> Goal {
        let measured = self
            .run(level, Peer::Daemon)
            .and_then(|r| find(r, program))
            .and_then(|p| p.ns_per_run)
            .map(|ns| {
                let floor = self.floor(level, program).map_or(String::new(), |f| {
                    format!(" (empty program there: {f:.0} ns)")
                });
                (format!("{ns:.0} ns/run{floor}"), ns <= bound)
            });
        goal(
            &format!("{program} per run at {level} (issue 15, daemon)"),
            &format!("≤ {bound:.0} ns"),
            measured,
        )
    }

    /// Issue 15: the egress program's cost above the empty program's, and at 1 Mpps.
    fn egress_goal(&self) -> Goal {
        let mut parts = Vec::new();
        let mut met = true;
        for level in self.level_names() {
            let ours = self
                .run(&level, Peer::Daemon)
                .and_then(|r| find(r, "nat_leak_egress"))
                .and_then(|p| p.ns_per_run);
            if let (Some(ours), Some(floor)) = (ours, self.floor(&level, "nat_leak_egress")) {
                met &= ours - floor <= 40.0;
                parts.push(format!(
                    "{level}: {ours:.0} vs {floor:.0} ns ({:+.0} ns); at 1 Mpps of egress \
                     {:.1} % of a core ({:.1} % for the empty program)",
                    ours - floor,
                    ours / 10.0,
                    floor / 10.0
                ));
            }
        }
        goal(
            "Egress per packet above the empty tc program (issue 15)",
            "≤ 40 ns, at every level",
            (!parts.is_empty()).then(|| (parts.join("; "), met)),
        )
    }

    /// Issue 15: the daemon's largest `VmHWM` over every run it made.
    fn daemon_rss_goal(&self) -> Goal {
        let storm = self
            .levels
            .iter()
            .filter_map(|l| l.runs.iter().find(|r| r.peer == Peer::Daemon)?.peak_rss_kib)
            .max();
        let table = self
            .conntrack
            .as_ref()
            .map(|t| t.runs[0].daemon_peak_rss_kib);
        let mib = |kib: u64| kib as f64 / 1024.0;
        let measured = storm.map(|storm| {
            let peak = storm.max(table.unwrap_or(0));
            let table = table.map_or(String::new(), |t| {
                format!(", {:.1} MiB beside one lossy stream", mib(t))
            });
            (
                format!("{:.1} MiB under the storm{table}", mib(storm)),
                mib(peak) <= 24.0,
            )
        });
        goal(
            "Daemon peak RSS, light load and under the storm (issue 15)",
            "≤ 24 MiB",
            measured,
        )
    }

    /// Issue 15: at full speed the daemon costs no more throughput than the run's own noise.
    fn data_path_goal(&self) -> Goal {
        let level = "max";
        let change = |peer| {
            let run = self.run(level, peer)?;
            Some((run.goodput()? / self.baseline_goodput(run)? - 1.0) * 100.0)
        };
        let goodput = |peer| self.run(level, peer).and_then(Run::goodput);
        let baselines = goodput(Peer::Baseline)
            .zip(goodput(Peer::BaselineAgain))
            .map(|(a, b)| (b / a - 1.0) * 100.0);
        let noise = [baselines, change(Peer::NodeExporter)]
            .into_iter()
            .flatten()
            .map(f64::abs)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let measured = change(Peer::Daemon).zip(noise).map(|(daemon, noise)| {
            (
                format!(
                    "{daemon:+.2} % with the daemon; noise {noise:.2} % (baselines {}, \
                     node_exporter {})",
                    baselines.map_or("-".to_owned(), |b| format!("{b:+.2} %")),
                    change(Peer::NodeExporter).map_or("-".to_owned(), |n| format!("{n:+.2} %"))
                ),
                daemon >= -noise,
            )
        });
        goal(
            "Storm throughput at max with the daemon (issue 15)",
            "within the run's noise (the baselines' difference, node_exporter's run)",
            measured,
        )
    }

    /// ns per run of the empty program on `program`'s hook at `level`.
    fn floor(&self, level: &str, program: &str) -> Option<f64> {
        let (_, floor) = FLOORS.iter().find(|(p, _)| *p == program)?;
        find(self.run(level, Peer::Floor)?, floor)?.ns_per_run
    }
}

fn find<'a>(run: &'a Run, program: &str) -> Option<&'a ProgramRun> {
    run.programs.iter().find(|p| p.name == program)
}

/// Kernel time of `programs`, in % of one core.
fn kernel_percent(programs: &[ProgramRun]) -> f64 {
    programs.iter().map(|p| p.percent_of_core).sum()
}
