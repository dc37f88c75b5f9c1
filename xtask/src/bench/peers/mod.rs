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

use self::{
    counts::{as_count, by_container, daemon_counts, diagnose_counts, lost_by_reason},
    parse::{
        Sample, parse_bpftrace_maps, parse_event_lines, parse_samples, tcpdump_dropped, tshark,
    },
};
use super::measure::{self, Rusage, ToolCgroup};

/// How long a tool may take to attach or to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The storm writes MSS-sized segments; tshark's frames are split into segments of this size
/// (a GSO frame on the bridge holds several).
pub(super) const MSS: u64 = 1448;

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
    /// Empty programs on galmanhae's hooks (`--example floor`): what any program there costs.
    Floor,
    /// No tool again, after the others: how much the storm varies by itself.
    #[value(skip)]
    BaselineAgain,
}

impl Peer {
    pub const ALL: [Self; 9] = [
        Self::Baseline,
        Self::Daemon,
        Self::Diagnose,
        Self::BpftraceCounts,
        Self::BpftraceEvents,
        Self::Tcpdump,
        Self::NodeExporter,
        Self::Floor,
        Self::BaselineAgain,
    ];

    /// Runs no tool.
    pub fn is_baseline(self) -> bool {
        matches!(self, Self::Baseline | Self::BaselineAgain)
    }

    /// Counts retransmits (the baselines and the floor count nothing).
    pub fn counts(self) -> bool {
        !self.is_baseline() && self != Self::Floor
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
            Self::Floor => "empty programs on the same hooks (floor)",
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
            Peer::Floor => {
                let floor = setup
                    .galmanhae
                    .parent()
                    .context("the agent's binary has no directory")?
                    .join("examples/floor");
                running.spawn(&floor.display().to_string(), &[])?;
                running.wait_ready(|r| read(&r.stdout).starts_with("ready"))?;
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
            Peer::Baseline | Peer::BaselineAgain | Peer::Floor => {}
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

pub(super) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The end of a tool's stderr, for an error message.
pub(super) fn tail(path: &Path) -> String {
    let text = read(path);
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

mod counts;
mod parse;
#[cfg(test)]
mod tests;
