//! The tools the bench runs beside the storm, one at a time: how each is started (and known to
//! be ready), stopped, and how its count of each container's retransmits is read.

use std::{
    collections::BTreeMap,
    fmt,
    fs::File,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use galmanhae_lab::free_loopback_address;
use serde::Serialize;

use super::measure::{self, Rusage, ToolCgroup};

/// How long a tool may take to attach or to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The storm writes MSS-sized segments; tshark's frames are split into segments of this size
/// (a GSO frame on the bridge holds several).
const MSS: u64 = 1448;

/// In-kernel count per flow and network namespace (the socket's, through a BTF cast), as
/// galmanhae keys it. Failed attempts (`err`, since 6.17; `RetransSegs` leaves them out) apart.
const BPFTRACE_COUNTS: &str = r#"BEGIN { printf("ready\n"); }
tracepoint:tcp:tcp_retransmit_skb {
  $netns = ((struct sock *)args->skaddr)->__sk_common.skc_net.net->ns.inum;
  if (args->err == 0) {
    @flows[$netns, ntop(args->saddr), args->sport, ntop(args->daddr), args->dport] = count();
  } else {
    @failed[$netns] = count();
  }
}"#;

/// One line per retransmit, as bcc's tcpretrans prints it (which cannot run here: the kernel
/// ships no headers).
const BPFTRACE_EVENTS: &str = r#"BEGIN { printf("ready\n"); }
tracepoint:tcp:tcp_retransmit_skb /args->err == 0/ {
  printf("%llu %d %s:%d R> %s:%d %d\n", nsecs, pid, ntop(args->saddr), args->sport,
         ntop(args->daddr), args->dport, args->state);
}"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// No tool: the storm alone.
    Baseline,
    /// `galmanhae run`, scraped every 5 s.
    Daemon,
    /// `galmanhae diagnose --json` for the whole storm.
    Diagnose,
    /// bpftrace counting per flow in the kernel.
    BpftraceCounts,
    /// bpftrace printing one line per retransmit.
    BpftraceEvents,
    /// tcpdump on docker0, then tshark's retransmission analysis.
    Tcpdump,
    /// Debian's prometheus-node-exporter, netstat collector only, scraped every 5 s.
    NodeExporter,
    /// No tool again, after the others: how much the storm varies by itself.
    #[value(skip)]
    BaselineAgain,
}

impl Peer {
    pub const ALL: [Self; 8] = [
        Self::Baseline,
        Self::Daemon,
        Self::Diagnose,
        Self::BpftraceCounts,
        Self::BpftraceEvents,
        Self::Tcpdump,
        Self::NodeExporter,
        Self::BaselineAgain,
    ];

    /// Runs no tool.
    pub fn is_baseline(self) -> bool {
        matches!(self, Self::Baseline | Self::BaselineAgain)
    }

    /// Scraped during the window like a Prometheus would.
    pub fn scraped(self) -> bool {
        matches!(self, Self::Daemon | Self::NodeExporter)
    }

    /// The peer's name in file and directory names (`bpftracecounts`).
    pub fn slug(self) -> String {
        format!("{self:?}").to_lowercase()
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Baseline => "none (baseline)",
            Self::BaselineAgain => "none (baseline, again after the tools)",
            Self::Daemon => "galmanhae run",
            Self::Diagnose => "galmanhae diagnose",
            Self::BpftraceCounts => "bpftrace, count per flow in kernel",
            Self::BpftraceEvents => "bpftrace, one line per retransmit",
            Self::Tcpdump => "tcpdump + tshark",
            Self::NodeExporter => "node_exporter (netstat)",
        })
    }
}

/// A storm container, as the tools name it.
#[derive(Clone, Debug)]
pub struct Container {
    pub name: String,
    pub ip: Ipv4Addr,
    pub pid: u32,
    /// Its network namespace's inode.
    pub netns: u64,
}

/// What a peer needs: the agent's binary, a directory for its files, the containers.
pub struct Setup<'a> {
    pub galmanhae: &'a Path,
    pub dir: &'a Path,
    pub containers: &'a [Container],
}

impl Setup<'_> {
    fn by_ip(&self, ip: &str) -> Option<&str> {
        self.containers
            .iter()
            .find(|c| c.ip.to_string() == ip)
            .map(|c| c.name.as_str())
    }

    fn by_netns(&self, inode: &str) -> Option<&str> {
        self.containers
            .iter()
            .find(|c| c.netns.to_string() == inode)
            .map(|c| c.name.as_str())
    }
}

/// A started tool; killed if dropped before [`Running::stop`].
pub struct Running {
    peer: Peer,
    child: Option<Child>,
    cgroup: Option<ToolCgroup>,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Where a scraped tool serves /metrics.
    http: Option<SocketAddr>,
    /// The first and the latest scrape, and how many there were.
    scrapes: (Option<String>, Option<String>, u32),
    pcap: Option<PathBuf>,
}

/// A tool's count of each container's retransmits, and what it says it lost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// segments, attempts, events or frames.
    pub unit: &'static str,
    /// By container name; `None`: the tool cannot tell containers apart.
    pub per_container: Option<BTreeMap<String, u64>>,
    /// Events the tool reports it lost (perf buffer, kernel capture drops, full maps).
    pub lost: Option<u64>,
    /// What it counted in the host's own namespace (`node_exporter`).
    pub host: Option<u64>,
    /// Another reading of the same output, per container: what it means and its unit.
    pub alternative: Option<(&'static str, &'static str, BTreeMap<String, u64>)>,
}

/// Tshark's analysis of the capture, after the storm.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Analysis {
    pub seconds: f64,
    pub usage: Rusage,
}

/// What a stopped tool left.
#[derive(Debug, Default)]
pub struct Stopped {
    pub counts: Counts,
    /// The tool's process from start to exit (`wait4`).
    pub total: Option<Rusage>,
    pub analysis: Option<Analysis>,
    pub notes: Vec<String>,
}

impl Peer {
    /// Starts the tool and returns once it counts (programs attached, capture open, HTTP up).
    pub fn start(self, setup: &Setup<'_>) -> anyhow::Result<Running> {
        let name = self.slug();
        let mut running = Running {
            peer: self,
            child: None,
            cgroup: None,
            stdout: setup.dir.join(format!("{name}.out")),
            stderr: setup.dir.join(format!("{name}.err")),
            http: None,
            scrapes: (None, None, 0),
            pcap: None,
        };
        let galmanhae = setup.galmanhae.display().to_string();
        match self {
            Self::Baseline | Self::BaselineAgain => return Ok(running),
            Peer::Daemon => {
                let address = free_loopback_address()?;
                running.spawn(
                    &galmanhae,
                    &[
                        "run",
                        "--log-level",
                        "warn",
                        "--listen",
                        &address.to_string(),
                    ],
                )?;
                running.http = Some(address);
                running.wait_ready(|_| measure::http_get(address, "/healthz").is_ok())?;
            }
            Peer::Diagnose => {
                running.spawn(
                    &galmanhae,
                    &[
                        "diagnose",
                        "--json",
                        "--duration",
                        "3600s",
                        "--top",
                        "100000",
                    ],
                )?;
                running.wait_ready(|r| read(&r.stderr).contains("attached"))?;
            }
            Peer::BpftraceCounts | Peer::BpftraceEvents => {
                let script = if self == Peer::BpftraceCounts {
                    BPFTRACE_COUNTS
                } else {
                    BPFTRACE_EVENTS
                };
                // Its stdout to the file, as `bpftrace ... > file` (with -o, bpftrace buffers
                // the file and the ready line stays unseen).
                running.spawn("bpftrace", &["-e", script])?;
                running.wait_ready(|r| read(&r.stdout).lines().any(|l| l == "ready"))?;
            }
            Peer::Tcpdump => {
                let pcap = setup.dir.join("storm.pcap");
                running.spawn(
                    "tcpdump",
                    &[
                        "-i",
                        "docker0",
                        "-n",
                        "-s",
                        "96",
                        "-w",
                        &pcap.display().to_string(),
                        "tcp port 5432",
                    ],
                )?;
                running.pcap = Some(pcap);
                running.wait_ready(|r| read(&r.stderr).contains("listening on"))?;
            }
            Peer::NodeExporter => {
                let address = free_loopback_address()?;
                running.spawn(
                    "prometheus-node-exporter",
                    &[
                        "--collector.disable-defaults",
                        "--collector.netstat",
                        &format!("--web.listen-address={address}"),
                    ],
                )?;
                running.http = Some(address);
                running.wait_ready(|_| measure::http_get(address, "/metrics").is_ok())?;
            }
        }
        Ok(running)
    }
}

impl Running {
    /// The tool's process, if it has one.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// CPU time of the tool's cgroup so far.
    pub fn cpu(&self) -> Option<anyhow::Result<Duration>> {
        self.cgroup.as_ref().map(ToolCgroup::cpu)
    }

    /// GET /metrics of a scraped tool (what a Prometheus would do); nothing for the others.
    pub fn scrape(&mut self) -> anyhow::Result<()> {
        let Some(address) = self.http else {
            return Ok(());
        };
        let body = measure::http_get(address, "/metrics")?;
        if self.scrapes.0.is_none() {
            self.scrapes.0 = Some(body);
        } else {
            self.scrapes.1 = Some(body);
        }
        self.scrapes.2 += 1;
        Ok(())
    }

    /// Stops the tool the way a user would (Ctrl-C, or SIGTERM for a service) and reads its
    /// counts.
    pub fn stop(mut self, setup: &Setup<'_>) -> anyhow::Result<Stopped> {
        let Some(mut child) = self.child.take() else {
            return Ok(Stopped::default());
        };
        let signal = if self.peer.scraped() {
            libc::SIGTERM
        } else {
            libc::SIGINT
        };
        galmanhae_lab::signal(&child, signal)
            .with_context(|| format!("signalling {}", self.peer))?;
        let (status, total) = measure::wait_rusage(&mut child)?;
        if !status.success() && signal_of(status) != Some(signal) {
            bail!("{} exited with {status}: {}", self.peer, tail(&self.stderr));
        }
        let mut stopped = Stopped {
            total: Some(total),
            ..Stopped::default()
        };
        match self.peer {
            Peer::Baseline | Peer::BaselineAgain => {}
            Peer::Daemon => {
                let (first, last) = self.first_and_last()?;
                stopped.counts = daemon_counts(&first, &last, setup.containers);
                let reasons: Vec<String> = lost_by_reason(&first, &last)
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(reason, n)| format!("{reason} +{n}"))
                    .collect();
                stopped.notes.push(format!(
                    "{} scrapes of /metrics; galmanhae_lost_events_total over the window: {}",
                    self.scrapes.2,
                    if reasons.is_empty() {
                        "none".to_owned()
                    } else {
                        reasons.join(", ")
                    }
                ));
            }
            Peer::Diagnose => {
                let report: serde_json::Value = serde_json::from_str(&read(&self.stdout))
                    .context("galmanhae diagnose --json printed no JSON")?;
                stopped.counts = diagnose_counts(&report, setup.containers);
            }
            Peer::BpftraceCounts => {
                let maps = parse_bpftrace_maps(&read(&self.stdout));
                let failed: u64 = maps.failed.values().sum();
                stopped.counts = Counts {
                    unit: "events",
                    per_container: Some(by_container(&maps.flows, |n| setup.by_netns(n))),
                    ..Counts::default()
                };
                stopped
                    .notes
                    .push(format!("{failed} failed attempts (err != 0) counted apart"));
            }
            Peer::BpftraceEvents => {
                let lines = parse_event_lines(&read(&self.stdout));
                stopped.counts = Counts {
                    unit: "events",
                    per_container: Some(by_container(&lines.per_source, |ip| setup.by_ip(ip))),
                    lost: Some(lines.lost),
                    ..Counts::default()
                };
            }
            Peer::Tcpdump => self.analyse_capture(setup, &mut stopped)?,
            Peer::NodeExporter => {
                let (first, last) = self.first_and_last()?;
                let value = |samples: &[Sample]| {
                    samples
                        .iter()
                        .find(|s| s.name == "node_netstat_Tcp_RetransSegs")
                        .map(|s| s.value)
                };
                let (before, after) = (value(&first), value(&last));
                stopped.counts = Counts {
                    unit: "segments",
                    host: Some(as_count(after.unwrap_or(0.0) - before.unwrap_or(0.0))),
                    ..Counts::default()
                };
                stopped.notes.push(format!(
                    "{} scrapes; node_netstat_Tcp_RetransSegs is the host namespace's only",
                    self.scrapes.2
                ));
            }
        }
        Ok(stopped)
    }

    /// tshark's retransmission analysis of the capture (removed afterwards), with the
    /// packets tcpdump says the kernel dropped.
    fn analyse_capture(&mut self, setup: &Setup<'_>, stopped: &mut Stopped) -> anyhow::Result<()> {
        let pcap = self.pcap.take().context("no capture file")?;
        let dropped = tcpdump_dropped(&read(&self.stderr));
        let size = std::fs::metadata(&pcap).map_or(0, |m| m.len());
        let analysed = tshark(&pcap, setup.dir);
        let _ = std::fs::remove_file(&pcap);
        let (retransmissions, analysis) = analysed?;
        stopped.analysis = Some(analysis);
        stopped.counts = Counts {
            unit: "frames",
            per_container: Some(by_container(&retransmissions.frames, |ip| setup.by_ip(ip))),
            lost: dropped,
            alternative: Some((
                "tcp.analysis.retransmission or tcp.analysis.out_of_order",
                "segments",
                by_container(&retransmissions.any_segments, |ip| setup.by_ip(ip)),
            )),
            ..Counts::default()
        };
        #[expect(clippy::cast_precision_loss, reason = "a file size for display")]
        let megabytes = size as f64 / 1e6;
        stopped.notes.push(format!(
            "capture {megabytes:.1} MB; the retransmission frames hold {} segments of {MSS} B",
            retransmissions.segments.values().sum::<u64>()
        ));
        Ok(())
    }

    fn spawn(&mut self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let child = Command::new(program)
            .args(args)
            .env_remove("GALMANHAE_CONFIG")
            .stdin(Stdio::null())
            .stdout(File::create(&self.stdout)?)
            .stderr(File::create(&self.stderr)?)
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let pid = child.id();
        self.child = Some(child);
        self.cgroup = Some(ToolCgroup::new(&self.peer.slug(), pid)?);
        Ok(())
    }

    fn wait_ready(&mut self, mut ready: impl FnMut(&Self) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ready(self) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("{} exited ({status}): {}", self.peer, tail(&self.stderr));
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after {READY_TIMEOUT:?}: {}",
                    self.peer,
                    tail(&self.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The samples of the first and the last scrape.
    fn first_and_last(&self) -> anyhow::Result<(Vec<Sample>, Vec<Sample>)> {
        match &self.scrapes {
            (Some(first), Some(last), _) => Ok((parse_samples(first), parse_samples(last))),
            _ => bail!("{} was not scraped before and after the storm", self.peer),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pcap) = &self.pcap {
            let _ = std::fs::remove_file(pcap);
        }
    }
}

fn signal_of(status: std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt as _;
    status.signal()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The end of a tool's stderr, for an error message.
fn tail(path: &Path) -> String {
    let text = read(path);
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

fn as_count(value: f64) -> u64 {
    // Counters are integers that Prometheus prints as floats.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a rounded, clamped counter delta"
    )]
    let count = value.round().max(0.0) as u64;
    count
}

/// Per container name, from counts per source address.
fn by_container<'a>(
    per_source: &BTreeMap<String, u64>,
    name_of: impl Fn(&str) -> Option<&'a str>,
) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (source, count) in per_source {
        if let Some(name) = name_of(source) {
            *counts.entry(name.to_owned()).or_default() += count;
        }
    }
    counts
}

/// The daemon's hook-counted segments per workload between two scrapes; attempts where the
/// agent has no segment family.
fn daemon_counts(first: &[Sample], last: &[Sample], containers: &[Container]) -> Counts {
    let segments = "galmanhae_tcp_retransmit_segments_total";
    let (family, unit) = if last.iter().any(|s| s.name == segments) {
        (segments, "segments")
    } else {
        ("galmanhae_tcp_retransmits_total", "attempts")
    };
    let total = |samples: &[Sample], workload: &str| -> f64 {
        samples
            .iter()
            .filter(|s| s.name == family && s.label("workload") == Some(workload))
            .filter(|s| s.label("kind") != Some("failed"))
            .map(|s| s.value)
            .sum()
    };
    let skipped = lost_by_reason(first, last);
    Counts {
        unit,
        per_container: Some(
            containers
                .iter()
                .map(|c| {
                    let delta = total(last, &c.name) - total(first, &c.name);
                    (c.name.clone(), as_count(delta))
                })
                .collect(),
        ),
        // Retransmits the kernel side could not count per workload. `program_skipped` sums
        // every program's skipped runs (drops and leaks too): it is in the run's notes.
        lost: Some(
            ["overflow_map_full", "read_error"]
                .iter()
                .filter_map(|r| skipped.get(*r))
                .sum(),
        ),
        ..Counts::default()
    }
}

/// The growth of `galmanhae_lost_events_total` by reason between two scrapes.
fn lost_by_reason(first: &[Sample], last: &[Sample]) -> BTreeMap<String, u64> {
    let value = |samples: &[Sample], reason: &str| -> f64 {
        samples
            .iter()
            .filter(|s| {
                s.name == "galmanhae_lost_events_total" && s.label("reason") == Some(reason)
            })
            .map(|s| s.value)
            .sum()
    };
    last.iter()
        .filter(|s| s.name == "galmanhae_lost_events_total")
        .filter_map(|s| s.label("reason"))
        .map(|reason| {
            let delta = as_count(value(last, reason) - value(first, reason));
            (reason.to_owned(), delta)
        })
        .collect()
}

/// The hook's retransmitted segments summed over each workload's flows; lost: what the kernel
/// side could not count, and the runs the kernel skipped of the TCP retransmit hooks.
fn diagnose_counts(report: &serde_json::Value, containers: &[Container]) -> Counts {
    let flows = report["flows"].as_array().map_or(&[][..], Vec::as_slice);
    let health = &report["health"];
    Counts {
        unit: "segments",
        per_container: Some(
            containers
                .iter()
                .map(|c| {
                    let sum = flows
                        .iter()
                        .filter(|f| f["workload"] == c.name.as_str())
                        .filter_map(|f| f["retransmitted_segments"].as_u64())
                        .sum();
                    (c.name.clone(), sum)
                })
                .collect(),
        ),
        lost: Some(
            health["lost"].as_u64().unwrap_or(0)
                + health["read_errors"].as_u64().unwrap_or(0)
                + report["hooks"]
                    .as_array()
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .filter(|h| h["name"].as_str().is_some_and(|n| n.starts_with("tcp:")))
                    .filter_map(|h| h["missed"].as_u64())
                    .sum::<u64>(),
        ),
        ..Counts::default()
    }
}

/// One sample of a Prometheus text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of a Prometheus text (0.0.4) body; comments and lines it cannot read are
/// skipped.
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_sample)
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = &inner[end + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// What bpftrace printed for its maps at exit.
#[derive(Debug, Default, PartialEq)]
struct BpftraceMaps {
    /// `@flows[netns, saddr, sport, daddr, dport]`, summed per namespace inode.
    flows: BTreeMap<String, u64>,
    /// `@failed[netns]`.
    failed: BTreeMap<String, u64>,
}

fn parse_bpftrace_maps(text: &str) -> BpftraceMaps {
    let mut maps = BpftraceMaps::default();
    for line in text.lines() {
        let Some((key, count)) = line.split_once("]: ") else {
            continue;
        };
        let Ok(count) = count.trim().parse::<u64>() else {
            continue;
        };
        let (map, key) = if let Some(key) = key.strip_prefix("@flows[") {
            (&mut maps.flows, key)
        } else if let Some(key) = key.strip_prefix("@failed[") {
            (&mut maps.failed, key)
        } else {
            continue;
        };
        let netns = key.split(", ").next().unwrap_or(key).to_owned();
        *map.entry(netns).or_default() += count;
    }
    maps
}

/// Lines per source address and the events bpftrace reports lost.
#[derive(Debug, Default, PartialEq)]
struct EventLines {
    per_source: BTreeMap<String, u64>,
    lost: u64,
}

/// Reads `NSECS PID SADDR:SPORT R> DADDR:DPORT STATE` lines and bpftrace's `Lost N events`.
fn parse_event_lines(text: &str) -> EventLines {
    let mut lines = EventLines::default();
    for line in text.lines() {
        if let Some(n) = line
            .strip_prefix("Lost ")
            .and_then(|l| l.strip_suffix(" events"))
        {
            lines.lost += n.trim().parse::<u64>().unwrap_or(0);
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(local), Some("R>")) = (words.nth(2), words.next()) else {
            continue;
        };
        if let Some((source, _)) = local.rsplit_once(':') {
            *lines.per_source.entry(source.to_owned()).or_default() += 1;
        }
    }
    lines
}

/// tcpdump's `N packets dropped by kernel`.
fn tcpdump_dropped(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.strip_suffix(" packets dropped by kernel"))?
        .trim()
        .parse()
        .ok()
}

/// Per source address: the frames tshark marks as retransmissions and the segments they hold,
/// and the segments of every frame marked as a retransmission or as out of order. On a path
/// with a round trip below tshark's 3 ms out-of-order threshold part of the retransmissions
/// come out as out of order; the storm's senders never reorder, so both are retransmissions.
#[derive(Debug, Default, PartialEq)]
struct Retransmissions {
    frames: BTreeMap<String, u64>,
    segments: BTreeMap<String, u64>,
    any_segments: BTreeMap<String, u64>,
}

/// `tshark -Y tcp.analysis.retransmission` over the capture, timed, with its rusage.
fn tshark(pcap: &Path, dir: &Path) -> anyhow::Result<(Retransmissions, Analysis)> {
    let out = dir.join("tshark.out");
    let err = dir.join("tshark.err");
    let started = Instant::now();
    let mut child = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(pcap)
        .args([
            "-Y",
            "tcp.analysis.retransmission || tcp.analysis.out_of_order",
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "tcp.len",
            "-e",
            "tcp.analysis.retransmission",
        ])
        .stdin(Stdio::null())
        .stdout(File::create(&out)?)
        .stderr(File::create(&err)?)
        .spawn()
        .context("starting tshark")?;
    let (status, usage) = measure::wait_rusage(&mut child)?;
    if !status.success() {
        bail!("tshark failed ({status}): {}", tail(&err));
    }
    Ok((
        parse_tshark_fields(&read(&out)),
        Analysis {
            seconds: started.elapsed().as_secs_f64(),
            usage,
        },
    ))
}

/// `ip.src<TAB>tcp.len<TAB>1 if a retransmission` lines.
fn parse_tshark_fields(text: &str) -> Retransmissions {
    let mut found = Retransmissions::default();
    for line in text.lines() {
        let mut fields = line.split('\t');
        let (Some(source), Some(len), retransmission) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if source.is_empty() {
            continue;
        }
        let segments = len.trim().parse::<u64>().unwrap_or(0).div_ceil(MSS).max(1);
        *found.any_segments.entry(source.to_owned()).or_default() += segments;
        if retransmission.is_some_and(|r| r.trim() == "1") {
            *found.frames.entry(source.to_owned()).or_default() += 1;
            *found.segments.entry(source.to_owned()).or_default() += segments;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn containers() -> Vec<Container> {
        ["storm-1", "storm-2"]
            .iter()
            .enumerate()
            .map(|(i, name)| Container {
                name: (*name).to_owned(),
                ip: Ipv4Addr::new(198, 18, 100, u8::try_from(i).unwrap() + 2),
                pid: 1,
                netns: 4_026_532_289 + u64::try_from(i).unwrap(),
            })
            .collect()
    }

    #[test]
    fn parses_prometheus_text() {
        let text = "# HELP galmanhae_tcp_retransmits Retransmit attempts\n\
            # TYPE galmanhae_tcp_retransmits counter\n\
            galmanhae_tcp_retransmits_total{workload=\"storm-1\",remote=\"198.19.0.2:5432\",kind=\"fast\"} 120\n\
            galmanhae_tcp_retransmits_total{workload=\"we\\\"ird, name\",remote=\"x\",kind=\"rto\"} 3 1700000000\n\
            node_netstat_Tcp_RetransSegs 1.234e+06\n\
            garbage{\n";
        let samples = parse_samples(text);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].label("workload"), Some("storm-1"));
        assert_eq!(samples[0].label("kind"), Some("fast"));
        assert!((samples[0].value - 120.0).abs() < f64::EPSILON);
        assert_eq!(samples[1].label("workload"), Some("we\"ird, name"));
        assert_eq!(samples[2].name, "node_netstat_Tcp_RetransSegs");
        assert!((samples[2].value - 1_234_000.0).abs() < f64::EPSILON);
    }

    #[test]
    fn daemon_counts_prefer_segments_and_leave_out_failed_attempts() {
        let attempts = |n: u32| {
            format!(
                "galmanhae_tcp_retransmits_total{{workload=\"storm-1\",remote=\"r\",kind=\"fast\"}} {n}\n\
                 galmanhae_tcp_retransmits_total{{workload=\"storm-1\",remote=\"r\",kind=\"failed\"}} {n}\n\
                 galmanhae_lost_events_total{{reason=\"read_error\"}} 1\n\
                 galmanhae_lost_events_total{{reason=\"overflow_map_full\"}} {n}\n\
                 galmanhae_lost_events_total{{reason=\"program_skipped\"}} {n}\n"
            )
        };
        let counts = daemon_counts(
            &parse_samples(&attempts(10)),
            &parse_samples(&attempts(25)),
            &containers(),
        );
        assert_eq!(counts.unit, "attempts");
        let per = counts.per_container.unwrap();
        assert_eq!(per["storm-1"], 15);
        assert_eq!(per["storm-2"], 0);
        // overflow_map_full grew by 15; program_skipped is not per workload.
        assert_eq!(counts.lost, Some(15));
        let reasons = lost_by_reason(&parse_samples(&attempts(10)), &parse_samples(&attempts(25)));
        assert_eq!(reasons["program_skipped"], 15);
        assert_eq!(reasons["read_error"], 0);

        let segments = |n: u32| {
            format!(
                "galmanhae_tcp_retransmit_segments_total{{workload=\"storm-2\",remote=\"a\"}} {n}\n\
                 galmanhae_tcp_retransmit_segments_total{{workload=\"storm-2\",remote=\"b\"}} 1\n"
            )
        };
        let counts = daemon_counts(
            &parse_samples(&segments(5)),
            &parse_samples(&segments(105)),
            &containers(),
        );
        assert_eq!(counts.unit, "segments");
        assert_eq!(counts.per_container.unwrap()["storm-2"], 100);
    }

    #[test]
    fn diagnose_counts_sum_flows_per_workload() {
        let report = serde_json::json!({
            "flows": [
                {"workload": "storm-1", "retransmitted_segments": 7},
                {"workload": "storm-1", "retransmitted_segments": 5},
                {"workload": "storm-2", "retransmitted_segments": 1},
                {"workload": "host", "retransmitted_segments": 100},
            ],
            "health": {"lost": 2, "read_errors": 1},
            "hooks": [
                {"name": "tcp:tcp_retransmit_skb", "missed": 4},
                {"name": "skb:kfree_skb", "missed": 100},
                {"name": "tcp:tcp_retransmit_synack", "missed": null},
            ],
        });
        let counts = diagnose_counts(&report, &containers());
        let per = counts.per_container.unwrap();
        assert_eq!((per["storm-1"], per["storm-2"]), (12, 1));
        assert_eq!(counts.lost, Some(7));
    }

    #[test]
    fn parses_bpftrace_maps() {
        let text = "Attaching 3 probes...\nready\n\n\n\
            @failed[4026532290]: 2\n\n\
            @flows[4026532289, 198.18.100.2, 48356, 198.19.0.2, 5432]: 220\n\
            @flows[4026532289, 198.18.100.2, 48376, 198.19.0.2, 5432]: 231\n\
            @flows[4026532290, 198.18.100.3, 40000, 198.19.0.2, 5432]: 9\n";
        let maps = parse_bpftrace_maps(text);
        assert_eq!(maps.flows["4026532289"], 451);
        assert_eq!(maps.flows["4026532290"], 9);
        assert_eq!(maps.failed["4026532290"], 2);
        let known = containers();
        let named = by_container(&maps.flows, |inode| {
            known
                .iter()
                .find(|c| c.netns.to_string() == inode)
                .map(|c| c.name.as_str())
        });
        assert_eq!(named["storm-1"], 451);
    }

    #[test]
    fn parses_event_lines_and_lost_events() {
        let text = "ready\n\
            123456789 0 198.18.100.2:48356 R> 198.19.0.2:5432 1\n\
            123456790 0 198.18.100.2:48356 R> 198.19.0.2:5432 1\n\
            Lost 1234 events\n\
            123456791 17 198.18.100.3:40000 R> 198.19.0.2:5432 1\n\
            Lost 6 events\n";
        let lines = parse_event_lines(text);
        assert_eq!(lines.per_source["198.18.100.2"], 2);
        assert_eq!(lines.per_source["198.18.100.3"], 1);
        assert_eq!(lines.lost, 1240);
    }

    #[test]
    fn parses_tcpdump_stats_and_tshark_fields() {
        let stderr = "tcpdump: listening on docker0, link-type EN10MB (Ethernet), snapshot length 96 bytes\n\
            1200 packets captured\n1300 packets received by filter\n100 packets dropped by kernel\n";
        assert_eq!(tcpdump_dropped(stderr), Some(100));
        assert_eq!(tcpdump_dropped("nothing"), None);
        let fields = "198.18.100.2\t1448\t1\n198.18.100.2\t4344\t1\n198.18.100.2\t65160\t\n\
                      198.18.100.3\t0\t1\n\t\t\n";
        let found = parse_tshark_fields(fields);
        assert_eq!(found.frames["198.18.100.2"], 2);
        assert_eq!(found.segments["198.18.100.2"], 4);
        assert_eq!(found.any_segments["198.18.100.2"], 49);
        assert_eq!(found.segments["198.18.100.3"], 1);
    }
}
