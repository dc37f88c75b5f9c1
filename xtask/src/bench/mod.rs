//! `cargo xtask bench`: galmanhae beside the tools users would reach for instead, one at a
//! time under the same retransmit storm in the lab (issue 5). Writes `BENCHMARKS.md` and
//! `BENCHMARKS.json`.
//!
//! Each run: the tool starts (and attaches), the storm's flows connect, the counters are read,
//! the storm runs for the window (the scraped tools are scraped every 5 s), the flows close
//! with a RST, the counters are read again, and the tool stops and gives its count.
#![expect(
    clippy::cast_precision_loss,
    reason = "measurements shown as floats: counts and nanoseconds far below 2^52"
)]

mod conntrack;
mod measure;
mod peers;
mod report;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use galmanhae_lab::{
    DB_PORT, DB_V4, Scenario, docker,
    snmp::{self, Snmp},
    storm::{SenderOutcome, Storm, StormPlan},
};

use self::{
    measure::BpfStats,
    peers::{Container, Peer, Running, Setup},
    report::{
        Accuracy, AlternativeCount, Calibration, ContainerCount, Cpu, HostCount, Level, Machine,
        ProgramRun, Render, Report, Run, StormResult, StormSettings,
    },
};
use crate::{
    agent_binary, build_agent_targets,
    setup::{self, BENCH_PACKAGES},
    workspace_root,
};
/// How often the scraped tools are scraped during the window (a busy Prometheus).
const SCRAPE_INTERVAL: Duration = Duration::from_secs(5);
/// Longer than `galmanhae run`'s minimum interval between the passes a scrape triggers.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(1100);
/// How long after the storm a tool is stopped.
const SETTLE: Duration = Duration::from_secs(1);
/// Calibration stops when the achieved rate is this close to the target.
const CALIBRATION_TOLERANCE: f64 = 0.08;
const CALIBRATION_ROUNDS: usize = 4;

#[derive(Args)]
pub struct BenchArgs {
    /// Only the 10k/s level, short windows (about a minute); writes to target/bench/.
    #[arg(long)]
    quick: bool,
    /// Only these peers (the baseline always runs).
    #[arg(long, value_enum, value_delimiter = ',')]
    peers: Vec<Peer>,
    /// Only these levels: 1k, 10k, max (default: all three; 10k with --quick).
    #[arg(long, value_delimiter = ',')]
    levels: Vec<String>,
    /// Seconds of storm per run (default 12; 6 with --quick, long enough for one scrape).
    /// The scraped tools are scraped every 5 s.
    #[arg(long)]
    window: Option<f64>,
    /// Loss injected on each storm container's path, in percent (high enough that the paced
    /// levels need no more segments than two cores can forward one per skb).
    #[arg(long, default_value_t = 20.0)]
    loss: f64,
    /// Storm containers.
    #[arg(long, default_value_t = 4)]
    containers: u32,
    /// Flows per container: many, because each flow recovers from the loss on its own timers
    /// (fewer flows make fewer retransmits per second, whatever the pacing).
    #[arg(long, default_value_t = 128)]
    flows: u32,
    /// Synthetic entries in the host's conntrack table for the table run (issue 13): the
    /// daemon and diagnose measured with and without them (default 250000; 0 skips it; with
    /// --quick it is skipped unless given).
    #[arg(long)]
    conntrack_entries: Option<u32>,
    /// Where BENCHMARKS.md and .json go (default: the repository root; target/bench with
    /// --quick).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A storm level: a target rate of retransmitted segments per second, or unpaced.
struct LevelSpec {
    name: &'static str,
    target: Option<f64>,
}

const LEVELS: [LevelSpec; 3] = [
    LevelSpec {
        name: "1k/s",
        target: Some(1_000.0),
    },
    LevelSpec {
        name: "10k/s",
        target: Some(10_000.0),
    },
    LevelSpec {
        name: "max",
        target: None,
    },
];

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    setup::run()?;
    check_tools()?;
    build_agent_targets(&["--bins", "--example", "render", "--example", "floor"])?;
    let galmanhae = agent_binary();
    let work = workspace_root().join("target/bench");
    let out = args.out.clone().unwrap_or_else(|| {
        if args.quick {
            work.clone()
        } else {
            workspace_root()
        }
    });
    // The last bench's files would mix with this one's.
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let window = args.window.unwrap_or(if args.quick { 6.0 } else { 12.0 });
    let peers: Vec<Peer> = Peer::ALL
        .into_iter()
        .filter(|p| p.is_baseline() || args.peers.is_empty() || args.peers.contains(p))
        .collect();
    let specs: Vec<&LevelSpec> = LEVELS
        .iter()
        .filter(|l| {
            let short = l.name.trim_end_matches("/s");
            if args.levels.is_empty() {
                !args.quick || short == "10k"
            } else {
                args.levels.iter().any(|wanted| wanted == short)
            }
        })
        .collect();
    if specs.is_empty() {
        bail!("--levels takes 1k, 10k and max");
    }

    let started = Instant::now();
    on_interrupt_finish_cleanly();
    let (levels, containers, conntrack) = {
        let _stats = BpfStats::enable()?;
        let mut lab = Scenario::new()?;
        for n in 1..=args.containers {
            lab.container(&format!("storm-{n}"), &[])?;
        }
        let bench = Bench {
            galmanhae: galmanhae.clone(),
            work: work.clone(),
            containers: storm_containers(&lab.containers)?,
            flows: args.flows,
            loss: args.loss,
            window: Duration::from_secs_f64(window),
            calibration_window: Duration::from_secs_f64(if args.quick { 2.0 } else { 3.0 }),
            sender: std::env::current_exe().context("the xtask binary's path")?,
        };
        let levels: Vec<Level> = specs
            .iter()
            .map(|spec| bench.level(spec, &peers))
            .collect::<anyhow::Result<_>>()?;
        let table = table_run(args, &galmanhae, &lab.containers)?;
        (levels, lab.containers.clone(), table)
    };
    eprintln!(
        "xtask: bench: storms done in {:.0} s; rendering /metrics",
        started.elapsed().as_secs_f64()
    );
    let mut report = Report {
        schema: "galmanhae.bench/v1",
        mode: if args.quick { "quick" } else { "full" },
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: machine(),
        tools: tool_versions(&galmanhae),
        storm: StormSettings {
            containers,
            flows_per_container: args.flows,
            loss_percent: args.loss,
            window_s: window,
            remote: format!("{DB_V4}:{DB_PORT}"),
            paced_write: "one MSS-sized write per segment, TCP_NODELAY",
            unpaced_write_bytes: galmanhae_lab::storm::BULK_WRITE,
        },
        levels,
        conntrack,
        render: render()?,
        goals: Vec::new(),
        notes: base_notes(),
    };
    if window < SCRAPE_INTERVAL.as_secs_f64() {
        report.notes.push(format!(
            "The window ({window} s) is shorter than the scrape interval ({} s): galmanhae run \
             and node_exporter were scraped only at its ends, so their CPU holds no scrape.",
            SCRAPE_INTERVAL.as_secs()
        ));
    }
    report.evaluate_goals();
    std::fs::create_dir_all(&out)?;
    report.write(&out)
}

/// What every report says about how it was measured.
fn base_notes() -> Vec<String> {
    vec![
        "The machine has 2 cores: the storm's senders, the kernel's forwarding and the \
         tool share them, so throughput differences below a few % are within run-to-run \
         noise."
            .to_owned(),
        "Accuracy windows run from just before the storm starts to just after every flow \
         was closed with a RST; galmanhae run is scraped at both ends."
            .to_owned(),
    ]
}

/// The conntrack-table run (issue 13), with the first storm container's lossy stream.
fn table_run(
    args: &BenchArgs,
    galmanhae: &Path,
    containers: &[String],
) -> anyhow::Result<Option<conntrack::ConntrackTable>> {
    let entries = args
        .conntrack_entries
        .unwrap_or(if args.quick { 0 } else { 250_000 });
    match containers.first() {
        Some(first) if entries > 0 => conntrack::measure(galmanhae, first, entries).map(Some),
        _ => Ok(None),
    }
}

/// Set by SIGINT or SIGTERM: the bench stops after the current run, and its guards remove
/// the containers and faults and restore the sysctl (a default signal death would skip them).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn interrupted(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn on_interrupt_finish_cleanly() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let handler: extern "C" fn(libc::c_int) = interrupted;
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, handler as libc::sighandler_t) };
    }
}

/// Every tool a peer runs is installed; names the package of the missing ones.
fn check_tools() -> anyhow::Result<()> {
    let missing: Vec<String> = BENCH_PACKAGES
        .iter()
        .filter(|tool| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .map(|tool| format!("{tool} (apt-get install {tool})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the bench needs {}; `cargo xtask setup` installs them",
            missing.join(", ")
        );
    }
    Ok(())
}

struct Bench {
    galmanhae: PathBuf,
    work: PathBuf,
    containers: Vec<Container>,
    flows: u32,
    loss: f64,
    window: Duration,
    calibration_window: Duration,
    /// This binary, re-executed as `storm-sender`.
    sender: PathBuf,
}

impl Bench {
    fn level(&self, spec: &LevelSpec, peers: &[Peer]) -> anyhow::Result<Level> {
        let (segments_per_s, calibration) = match spec.target {
            Some(target) => {
                let (rate, steps) = self.calibrate(target)?;
                (Some(rate), steps)
            }
            None => (None, Vec::new()),
        };
        let mut runs = Vec::new();
        for &peer in peers {
            if INTERRUPTED.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            eprintln!("xtask: bench: {} / {peer}", spec.name);
            let run = self.run(peer, segments_per_s, self.window, spec.name);
            if let Some(error) = &run.error {
                eprintln!("xtask: bench: {} / {peer} failed: {error}", spec.name);
            }
            runs.push(run);
        }
        Ok(Level {
            name: spec.name.to_owned(),
            target_retransmits_per_s: spec.target,
            segments_per_s,
            calibration,
            runs,
        })
    }

    /// Short storms without a tool, adjusting the pacing until it makes `target`
    /// retransmits per second (each is about the loss share of the segments sent).
    fn calibrate(&self, target: f64) -> anyhow::Result<(f64, Vec<Calibration>)> {
        let mut rate = target / (self.loss / 100.0);
        let mut steps = Vec::new();
        for _ in 0..CALIBRATION_ROUNDS {
            let run = self.run(
                Peer::Baseline,
                Some(rate),
                self.calibration_window,
                "calibration",
            );
            let achieved = match (&run.error, &run.storm) {
                (None, Some(storm)) => storm.retransmits_per_s,
                (error, _) => bail!(
                    "calibration storm at {rate:.0} segments/s failed: {}",
                    error.as_deref().unwrap_or("no storm")
                ),
            };
            eprintln!(
                "xtask: bench: calibration: {rate:.0} segments/s made {achieved:.0} retransmits/s"
            );
            steps.push(Calibration {
                segments_per_s: rate,
                retransmits_per_s: achieved,
            });
            if achieved <= 0.0 {
                bail!("calibration: the storm made no retransmits at {rate:.0} segments/s");
            }
            if (achieved / target - 1.0).abs() <= CALIBRATION_TOLERANCE {
                break;
            }
            if let [.., previous, _] = steps.as_slice()
                && achieved < previous.retransmits_per_s * 1.05
            {
                // More pacing made no more retransmits: the machine is at its limit.
                eprintln!("xtask: bench: calibration: the storm is at this machine's limit");
                break;
            }
            rate *= (target / achieved).min(2.0);
        }
        Ok((rate, steps))
    }

    /// One tool under one storm; failures end up in the row. The tool's files go to
    /// target/bench/LEVEL/PEER.
    fn run(&self, peer: Peer, segments_per_s: Option<f64>, window: Duration, level: &str) -> Run {
        let mut run = Run::new(peer);
        let dir = self
            .work
            .join(level.trim_end_matches("/s"))
            .join(peer.slug());
        if let Err(e) = self.measure(&mut run, segments_per_s, window, &dir) {
            run.error = Some(format!("{e:#}"));
        }
        run
    }

    fn measure(
        &self,
        run: &mut Run,
        segments_per_s: Option<f64>,
        window: Duration,
        dir: &Path,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let setup = Setup {
            galmanhae: &self.galmanhae,
            dir,
            containers: &self.containers,
        };
        let programs_before = measure::programs()?;
        let mut tool = run.peer.start(&setup)?;
        let plan = StormPlan {
            containers: self.containers.iter().map(|c| c.name.clone()).collect(),
            flows_per_container: self.flows,
            segments_per_s,
            loss_percent: self.loss,
            duration: window,
            remote: format!("{DB_V4}:{DB_PORT}").parse()?,
        };
        let mut storm = Storm::connect(&plan, || {
            let mut command = Command::new(&self.sender);
            command.arg("storm-sender");
            command
        })?;
        let before = self.counters()?;
        tool.scrape()?;
        let usage_before = tool.pid().map(measure::tree_usage);
        let cpu_before = tool.cpu().transpose()?;
        let programs_start = measure::programs()?;
        let started = storm.start()?;
        scrape_during(&mut tool, started, window, &mut run.notes);
        let outcomes = storm.finish()?;
        let elapsed = started.elapsed();
        let usage_after = tool.pid().map(measure::tree_usage);
        let cpu_after = tool.cpu().transpose()?;
        let programs_end = measure::programs()?;
        let after = self.counters()?;
        if run.peer.scraped() {
            // A scrape runs a pass only if the last one is older than the agent's minimum pass
            // interval (1 s); the flows are closed, so waiting it out changes no count.
            std::thread::sleep(MIN_PASS_INTERVAL);
        }
        tool.scrape()?;
        if !run.peer.is_baseline() {
            // As a user would stop it, a moment after the storm: what the tool still has in
            // its buffers is counted.
            std::thread::sleep(SETTLE);
        }

        let growth = after.since(&before);
        run.storm = Some(storm_result(&outcomes, &growth, elapsed));
        run.programs = program_runs(&programs_before, &programs_start, &programs_end, elapsed);
        if let (Some(start), Some(end), Some(cpu_start), Some(cpu_end)) =
            (usage_before, usage_after, cpu_before, cpu_after)
        {
            let window_cpu = cpu_end.saturating_sub(cpu_start).as_secs_f64();
            run.cpu = Some(Cpu {
                window_s: window_cpu,
                proc_stat_window_s: end.cpu.saturating_sub(start.cpu).as_secs_f64(),
                percent_of_core: window_cpu / elapsed.as_secs_f64() * 100.0,
                startup_s: cpu_start.as_secs_f64(),
                total: None,
                analysis: None,
            });
            run.peak_rss_kib = Some(end.peak_rss_kib);
        }
        let stopped = tool.stop(&setup)?;
        run.notes.extend(stopped.notes);
        if let Some(cpu) = &mut run.cpu {
            cpu.total = stopped.total;
            cpu.analysis = stopped.analysis;
        }
        // `wait4`'s maximum includes what the child held before its exec, a copy of this
        // (much larger) process: only when the tool's own VmHWM was never read.
        if let Some(total) = stopped.total
            && run.peak_rss_kib.is_none()
        {
            run.peak_rss_kib = Some(total.peak_rss_kib);
        }
        if run.peer.counts() {
            run.accuracy = Some(accuracy(&stopped.counts, &self.containers, &growth));
        }
        Ok(())
    }

    /// `RetransSegs` and `OutSegs` of each storm container's namespace, and of the host's.
    fn counters(&self) -> anyhow::Result<Counters> {
        Ok(Counters {
            containers: self
                .containers
                .iter()
                .map(|c| Ok((c.name.clone(), snmp::read(c.pid)?)))
                .collect::<anyhow::Result<_>>()?,
            host: snmp::read(std::process::id())?,
        })
    }
}

struct Counters {
    containers: BTreeMap<String, Snmp>,
    host: Snmp,
}

impl Counters {
    /// What each counter grew by since `earlier`, a reading of the same namespaces.
    fn since(&self, earlier: &Self) -> Self {
        Self {
            containers: self
                .containers
                .iter()
                .map(|(name, now)| {
                    let then = earlier.containers.get(name).copied().unwrap_or_default();
                    (name.clone(), now.since(&then))
                })
                .collect(),
            host: self.host.since(&earlier.host),
        }
    }
}

/// Sleeps through the storm, scraping the scraped tools every [`SCRAPE_INTERVAL`].
fn scrape_during(tool: &mut Running, started: Instant, window: Duration, notes: &mut Vec<String>) {
    let mut next = SCRAPE_INTERVAL;
    loop {
        let now = started.elapsed();
        if now >= window || INTERRUPTED.load(Ordering::Relaxed) {
            return;
        }
        if next >= window {
            std::thread::sleep(window.saturating_sub(now));
            return;
        }
        std::thread::sleep(next.saturating_sub(now));
        if let Err(e) = tool.scrape() {
            notes.push(format!("a scrape during the storm failed: {e:#}"));
        }
        next += SCRAPE_INTERVAL;
    }
}

/// The storm's numbers from its senders and the counters' `growth` over the window.
fn storm_result(
    outcomes: &[(String, SenderOutcome)],
    growth: &Counters,
    elapsed: Duration,
) -> StormResult {
    let seconds = elapsed.as_secs_f64();
    let sum = |field: fn(&Snmp) -> u64| -> u64 { growth.containers.values().map(field).sum() };
    StormResult {
        window_s: seconds,
        retransmits_per_s: sum(|s| s.retrans_segs) as f64 / seconds,
        segments_per_s: sum(|s| s.out_segs) as f64 / seconds,
        goodput_mb_s: outcomes.iter().map(|(_, o)| o.bytes_acked).sum::<u64>() as f64
            / seconds
            / 1e6,
        reset_flows: outcomes.iter().map(|(_, o)| o.reset_flows).sum(),
    }
}

/// The programs the tool loaded (ids that were not there before it started), over the window.
fn program_runs(
    before_tool: &BTreeMap<u32, measure::Program>,
    start: &BTreeMap<u32, measure::Program>,
    end: &BTreeMap<u32, measure::Program>,
    elapsed: Duration,
) -> Vec<ProgramRun> {
    end.iter()
        .filter(|(id, _)| !before_tool.contains_key(id))
        .map(|(&id, p)| {
            let (runs0, time0) = start
                .get(&id)
                .map_or((0, 0), |s| (s.run_cnt, s.run_time_ns));
            let runs = p.run_cnt.saturating_sub(runs0);
            let time = p.run_time_ns.saturating_sub(time0);
            ProgramRun {
                id,
                name: p.name.clone(),
                kind: p.kind.clone(),
                runs,
                run_time_ns: time,
                ns_per_run: (runs > 0).then(|| time as f64 / runs as f64),
                percent_of_core: time as f64 / elapsed.as_nanos() as f64 * 100.0,
            }
        })
        .collect()
}

/// The tool's counts against the counters' `growth` over the window.
fn accuracy(counts: &peers::Counts, containers: &[Container], growth: &Counters) -> Accuracy {
    Accuracy {
        unit: counts.unit,
        containers: per_container(counts.per_container.as_ref(), containers, growth),
        lost: counts.lost,
        host: counts.host.map(|counted| HostCount {
            counted,
            retrans_segs: growth.host.retrans_segs,
        }),
        alternative: counts
            .alternative
            .as_ref()
            .map(|(what, unit, counted)| AlternativeCount {
                what,
                unit,
                containers: per_container(Some(counted), containers, growth),
            }),
    }
}

/// Each container's count (`None`: the tool cannot see containers) beside its `RetransSegs`.
fn per_container(
    counted: Option<&BTreeMap<String, u64>>,
    containers: &[Container],
    growth: &Counters,
) -> Vec<ContainerCount> {
    containers
        .iter()
        .map(|c| {
            let truth = growth.containers.get(&c.name).map_or(0, |s| s.retrans_segs);
            let counted = counted.map(|per| per.get(&c.name).copied().unwrap_or(0));
            ContainerCount::new(c.name.clone(), counted, truth)
        })
        .collect()
}

/// The storm containers as the tools name them: address, pid and network namespace.
fn storm_containers(names: &[String]) -> anyhow::Result<Vec<Container>> {
    names
        .iter()
        .map(|name| {
            let pid = docker::pid(name)?;
            let netns = Path::new(&format!("/proc/{pid}/ns/net"))
                .metadata()
                .with_context(|| format!("the network namespace of {name}"))?
                .ino();
            Ok(Container {
                name: name.clone(),
                ip: docker::ip(name)?
                    .parse::<Ipv4Addr>()
                    .with_context(|| format!("the address of {name}"))?,
                pid,
                netns,
            })
        })
        .collect()
}

/// The render example's JSON lines.
fn render() -> anyhow::Result<Vec<Render>> {
    let binary = workspace_root().join("target/release/examples/render");
    galmanhae_lab::run(&binary.display().to_string(), &[])?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("render output {l:?}")))
        .collect()
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpu: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned()),
        cores: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        ram_gib: mem_kib / 1024.0 / 1024.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

fn tool_versions(galmanhae: &Path) -> Vec<(String, String)> {
    let galmanhae = galmanhae.display().to_string();
    let commit = command_line(
        "git",
        &[
            "-C",
            &workspace_root().display().to_string(),
            "describe",
            "--always",
            "--dirty",
        ],
    );
    let mut tools = vec![(
        "galmanhae".to_owned(),
        format!("{} ({commit})", command_line(&galmanhae, &["--version"])),
    )];
    for tool in BENCH_PACKAGES {
        tools.push(((*tool).to_owned(), command_line(tool, &["--version"])));
    }
    tools
}

/// The first line a command prints (on stdout or stderr), or why there is none.
fn command_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) => {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        }
        Err(e) => format!("unavailable: {e}"),
    }
}
