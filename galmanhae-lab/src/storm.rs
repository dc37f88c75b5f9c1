//! A retransmit storm: many TCP flows from several containers to the db, with loss injected on
//! each container's path, paced to a target rate of segments per second or unpaced.
//!
//! The containers have only busybox, so the senders run from the host: one process per
//! container (the caller re-executes itself into [`sender_main`]), which joins the container's
//! cgroup and network namespace before it creates a socket. Its sockets are then the
//! container's, as the kernel (and anything attributing by cgroup or netns) sees them.
//!
//! A storm runs in three steps, so that a measurement can be wrapped around exactly the
//! traffic: [`Storm::connect`] (flows established, nothing sent, no loss yet),
//! [`Storm::start`] (loss on, senders go), [`Storm::finish`] (senders read `tcp_info`; loss
//! off; every socket closed with a RST, so no orphaned retransmit outlives the window).

use std::{
    fmt,
    io::{self, BufRead as _, BufReader, Write as _},
    net::{SocketAddr, SocketAddrV4},
    os::fd::AsRawFd as _,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    cgroup, docker,
    fault::{self, Target},
    traffic::{enter_netns, tcp_info},
};

/// Unpaced senders write this much per call: enough for full-sized (GSO) segments.
pub const BULK_WRITE: usize = 64 * 1024;
/// The token bucket holds at most this many milliseconds of tokens: a stalled moment is
/// made up quickly, but not as one burst that would change the loss pattern.
const BURST_MS: f64 = 10.0;
/// The kernel's default `gso_max_segs`, for unpaced storms. Paced storms set 1: one segment
/// per skb. Otherwise writes queued behind a window that loss keeps small merge into
/// multi-segment skbs, and a retransmit event would carry several segments.
const GSO_MAX_SEGS: &str = "65535";
/// How long connecting a sender's flows may take (a lost SYN costs a second).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What to run.
#[derive(Clone, Debug, PartialEq)]
pub struct StormPlan {
    pub containers: Vec<String>,
    pub flows_per_container: u32,
    /// Segments per second over all flows; `None`: unpaced, as fast as the machine goes.
    pub segments_per_s: Option<f64>,
    /// Loss injected on each container's path to the db while the storm runs, in percent.
    pub loss_percent: f64,
    pub duration: Duration,
    pub remote: SocketAddrV4,
}

/// One sender process's instructions: its command line after the caller's own arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct SenderArgs {
    /// A process of the container: its cgroup and network namespace are joined.
    pub container_pid: u32,
    pub flows: u32,
    pub segments_per_s: Option<f64>,
    pub duration: Duration,
    pub remote: SocketAddrV4,
}

impl SenderArgs {
    /// `key=value` words, read back by [`SenderArgs::parse`].
    pub fn to_args(&self) -> Vec<String> {
        vec![
            format!("pid={}", self.container_pid),
            format!("flows={}", self.flows),
            format!(
                "rate={}",
                self.segments_per_s
                    .map_or_else(|| "max".to_owned(), |r| r.to_string())
            ),
            format!("seconds={}", self.duration.as_secs_f64()),
            format!("remote={}", self.remote),
        ]
    }

    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let value = |key: &str| -> anyhow::Result<&str> {
            field(args.iter().map(String::as_str), key)
                .with_context(|| format!("storm sender: missing {key}= in {args:?}"))
        };
        let rate = value("rate")?;
        Ok(Self {
            container_pid: value("pid")?.parse().context("pid=")?,
            flows: value("flows")?.parse().context("flows=")?,
            segments_per_s: if rate == "max" {
                None
            } else {
                Some(rate.parse().context("rate=")?)
            },
            duration: Duration::try_from_secs_f64(value("seconds")?.parse().context("seconds=")?)
                .context("seconds=")?,
            remote: value("remote")?.parse().context("remote=")?,
        })
    }
}

/// What a sender's flows did between go and close, from their `tcp_info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderOutcome {
    pub flows: u32,
    /// Flows the db reset during the storm (left out from then on).
    pub reset_flows: u32,
    /// `tcpi_bytes_acked`: the goodput.
    pub bytes_acked: u64,
    /// `tcpi_data_segs_out`: data segments sent, retransmits included.
    pub data_segments: u64,
    /// `tcpi_total_retrans`: segments retransmitted.
    pub retransmitted: u64,
    /// From go to the moment the flows were read, just before closing.
    pub elapsed: Duration,
}

impl fmt::Display for SenderOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "result flows={} reset_flows={} bytes_acked={} data_segments={} retransmitted={} \
             elapsed_ns={}",
            self.flows,
            self.reset_flows,
            self.bytes_acked,
            self.data_segments,
            self.retransmitted,
            self.elapsed.as_nanos()
        )
    }
}

impl SenderOutcome {
    /// Reads what `Display` wrote.
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let fields = line
            .strip_prefix("result ")
            .with_context(|| format!("not a sender result: {line:?}"))?;
        let value = |key: &str| -> anyhow::Result<u64> {
            field(fields.split_whitespace(), key)
                .with_context(|| format!("no {key} in {line:?}"))?
                .parse()
                .with_context(|| format!("{key} in {line:?}"))
        };
        Ok(Self {
            flows: u32::try_from(value("flows")?)?,
            reset_flows: u32::try_from(value("reset_flows")?)?,
            bytes_acked: value("bytes_acked")?,
            data_segments: value("data_segments")?,
            retransmitted: value("retransmitted")?,
            elapsed: Duration::from_nanos(value("elapsed_ns")?),
        })
    }
}

/// The value of the first `key=value` among `words`.
fn field<'a>(mut words: impl Iterator<Item = &'a str>, key: &str) -> Option<&'a str> {
    words.find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// A storm's sender processes; killed (and loss cleared) if dropped before [`Storm::finish`].
pub struct Storm {
    plan: StormPlan,
    senders: Vec<Running>,
    loss_on: bool,
}

struct Running {
    container: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Storm {
    /// Starts one sender per container and returns once each has its flows established.
    /// `sender` makes the command that re-executes into [`sender_main`]; the sender's own
    /// arguments are appended to it.
    pub fn connect(plan: &StormPlan, sender: impl Fn() -> Command) -> anyhow::Result<Self> {
        if plan.containers.is_empty() || plan.flows_per_container == 0 {
            bail!("a storm needs at least one container and one flow");
        }
        let senders = f64::from(u32::try_from(plan.containers.len())?);
        let per_sender = plan.segments_per_s.map(|r| r / senders);
        let mut storm = Self {
            plan: plan.clone(),
            senders: Vec::new(),
            loss_on: false,
        };
        for container in &plan.containers {
            let container_pid = docker::pid(container)?;
            let segments = if plan.segments_per_s.is_some() {
                "1"
            } else {
                GSO_MAX_SEGS
            };
            // Before the flows connect: a socket takes the limit from its route at connect.
            crate::run(
                "nsenter",
                &[
                    "-t",
                    &container_pid.to_string(),
                    "-n",
                    "ip",
                    "link",
                    "set",
                    "dev",
                    "eth0",
                    "gso_max_segs",
                    segments,
                ],
            )
            .with_context(|| format!("setting gso_max_segs in {container}"))?;
            let args = SenderArgs {
                container_pid,
                flows: plan.flows_per_container,
                segments_per_s: per_sender,
                duration: plan.duration,
                remote: plan.remote,
            };
            let mut child = sender()
                .args(args.to_args())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting the storm sender for {container}"))?;
            let stdin = child.stdin.take();
            let stdout = child.stdout.take().context("sender stdout")?;
            storm.senders.push(Running {
                container: container.clone(),
                child,
                stdin,
                lines: lines_of(stdout),
            });
        }
        for sender in &storm.senders {
            let line = sender
                .lines
                .recv_timeout(CONNECT_TIMEOUT)
                .with_context(|| {
                    format!("the storm sender for {} did not connect", sender.container)
                })?;
            if line != "ready" {
                bail!("storm sender for {}: {line}", sender.container);
            }
        }
        Ok(storm)
    }

    /// Injects the loss and lets every sender go; returns when they were told.
    pub fn start(&mut self) -> anyhow::Result<Instant> {
        for container in &self.plan.containers {
            self.loss_on = true;
            fault::loss(
                self.plan.loss_percent,
                &Target::Container(container.clone()),
            )?;
        }
        let started = Instant::now();
        for sender in &mut self.senders {
            let stdin = sender.stdin.as_mut().context("sender stdin")?;
            stdin
                .write_all(b"go\n")
                .and_then(|()| stdin.flush())
                .with_context(|| format!("starting the storm sender for {}", sender.container))?;
        }
        Ok(started)
    }

    /// Waits for every sender's outcome, clears the loss, then has each close its flows with
    /// a RST and waits for it to exit.
    pub fn finish(mut self) -> anyhow::Result<Vec<(String, SenderOutcome)>> {
        let timeout = self.plan.duration + Duration::from_secs(30);
        let mut outcomes = Vec::new();
        for sender in &self.senders {
            let line = sender.lines.recv_timeout(timeout).with_context(|| {
                format!("the storm sender for {} did not report", sender.container)
            })?;
            let outcome = SenderOutcome::parse(&line)
                .with_context(|| format!("storm sender for {}", sender.container))?;
            outcomes.push((sender.container.clone(), outcome));
        }
        self.clear_loss()?;
        for sender in &mut self.senders {
            // The end of stdin tells the sender to close its flows.
            drop(sender.stdin.take());
        }
        for sender in &mut self.senders {
            let status = sender.child.wait().context("waiting for a storm sender")?;
            if !status.success() {
                bail!(
                    "the storm sender for {} failed ({status})",
                    sender.container
                );
            }
        }
        self.senders.clear();
        Ok(outcomes)
    }

    fn clear_loss(&mut self) -> anyhow::Result<()> {
        if std::mem::take(&mut self.loss_on) {
            fault::clear_all(false)?;
        }
        Ok(())
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        for sender in &mut self.senders {
            let _ = sender.child.kill();
            let _ = sender.child.wait();
        }
        let _ = self.clear_loss();
    }
}

/// The sender's stdout, line by line, on a channel (so waiting for it can time out).
fn lines_of(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A sender process: joins the container, connects its flows, says `ready`, waits for `go` on
/// stdin, sends for the duration, prints its [`SenderOutcome`], and at the end of stdin closes
/// every flow with a RST.
pub fn sender_main(args: &SenderArgs) -> anyhow::Result<()> {
    // The sender must not outlive the bench that started it.
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and nothing else.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // The agent attributes a socket by its cgroup and its network namespace.
    cgroup::move_into(&cgroup::of(args.container_pid)?, std::process::id())?;
    enter_netns(format!("/proc/{}/ns/net", args.container_pid))?;
    let flows = connect_all(args.remote, args.flows)?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "ready").and_then(|()| stdout.flush())?;
    let mut go = String::new();
    io::stdin().lock().read_line(&mut go)?;
    if go.trim() != "go" {
        bail!("storm sender: told {go:?}, not go");
    }
    let started = Instant::now();
    let mut flows = Flows::new(flows);
    match args.segments_per_s {
        Some(rate) => paced(&mut flows, rate, args.duration)?,
        None => unpaced(&mut flows, args.duration)?,
    }
    let mut outcome = SenderOutcome {
        flows: args.flows,
        reset_flows: u32::try_from(flows.reset.iter().filter(|&&r| r).count())?,
        elapsed: started.elapsed(),
        ..SenderOutcome::default()
    };
    for flow in &flows.sockets {
        let info = tcp_info(flow)?;
        outcome.bytes_acked += info.bytes_acked;
        outcome.data_segments += u64::from(info.data_segs_out);
        outcome.retransmitted += u64::from(info.total_retrans);
    }
    writeln!(stdout, "{outcome}").and_then(|()| stdout.flush())?;
    // Closed once the loss is off: a RST that the loss dropped would leave the db's side of
    // the flow open for good.
    let mut close = String::new();
    io::stdin().lock().read_line(&mut close)?;
    for flow in flows.sockets {
        // SO_LINGER 0: close sends a RST and drops the queue; nothing is retransmitted later.
        flow.set_linger(Some(Duration::ZERO))?;
        drop(flow);
    }
    Ok(())
}

/// Connects `count` flows at once (a sequential connect would wait out each lost SYN).
fn connect_all(remote: SocketAddrV4, count: u32) -> anyhow::Result<Vec<Socket>> {
    let to = SocketAddr::V4(remote).into();
    let mut flows = Vec::new();
    for _ in 0..count {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .context("creating a TCP socket")?;
        socket.set_nonblocking(true)?;
        // One write, one segment: the paced rate is a segment rate.
        socket.set_tcp_nodelay(true)?;
        match socket.connect(&to) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e).with_context(|| format!("connecting to {remote}")),
        }
        flows.push(socket);
    }
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut pending: Vec<usize> = (0..flows.len()).collect();
    while !pending.is_empty() {
        if Instant::now() > deadline {
            bail!(
                "{} of {count} flows to {remote} did not connect",
                pending.len()
            );
        }
        let ready = wait_writable(&flows, &pending, 100)?;
        for index in ready {
            if let Some(e) = flows[index].take_error()? {
                return Err(e).with_context(|| format!("connecting to {remote}"));
            }
            pending.retain(|&p| p != index);
        }
    }
    Ok(flows)
}

/// Of the `candidates`, those whose socket can take data now (waits up to `timeout_ms`).
fn wait_writable(
    flows: &[Socket],
    candidates: &[usize],
    timeout_ms: i32,
) -> io::Result<Vec<usize>> {
    let mut fds: Vec<libc::pollfd> = candidates
        .iter()
        .map(|&i| libc::pollfd {
            fd: flows[i].as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        })
        .collect();
    let count = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `fds` is a valid array of `count` pollfd structures.
    if unsafe { libc::poll(fds.as_mut_ptr(), count, timeout_ms) } < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(fds
        .iter()
        .zip(candidates)
        .filter(|(p, _)| p.revents != 0)
        .map(|(_, &i)| i)
        .collect())
}

/// The sender's flows, written round robin; a flow the db resets is left out from then on.
struct Flows {
    sockets: Vec<Socket>,
    reset: Vec<bool>,
    next: usize,
}

impl Flows {
    fn new(sockets: Vec<Socket>) -> Self {
        Self {
            reset: vec![false; sockets.len()],
            sockets,
            next: 0,
        }
    }

    /// One write to the next flow that takes data; `false` if none does now.
    fn write_next(&mut self, payload: &[u8]) -> anyhow::Result<bool> {
        for _ in 0..self.sockets.len() {
            let index = self.next;
            self.next = (self.next + 1) % self.sockets.len();
            if self.reset[index] {
                continue;
            }
            match self.sockets[index].send(payload) {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ) =>
                {
                    self.reset[index] = true;
                }
                Err(e) => return Err(e).context("sending on a storm flow"),
            }
        }
        if self.reset.iter().all(|&r| r) {
            bail!("the db reset every flow");
        }
        Ok(false)
    }

    /// Waits up to a millisecond for room in any flow.
    fn wait(&self) -> anyhow::Result<()> {
        let open: Vec<usize> = (0..self.sockets.len())
            .filter(|&i| !self.reset[i])
            .collect();
        wait_writable(&self.sockets, &open, 1)?;
        Ok(())
    }
}

/// A token bucket of `rate` segments per second: each token is one MSS-sized write to the
/// next flow (round robin) that has room for it.
fn paced(flows: &mut Flows, rate: f64, duration: Duration) -> anyhow::Result<()> {
    let mss = flows
        .sockets
        .first()
        .map(tcp_info)
        .transpose()?
        .map_or(1448, |i| usize::try_from(i.snd_mss).unwrap_or(1448));
    let payload = vec![0u8; mss];
    let burst = (rate * BURST_MS / 1000.0).max(1.0);
    let started = Instant::now();
    let mut last = started;
    let mut tokens = 0.0_f64;
    while started.elapsed() < duration {
        let now = Instant::now();
        tokens = (tokens + rate * now.duration_since(last).as_secs_f64()).min(burst);
        last = now;
        while tokens >= 1.0 {
            if !flows.write_next(&payload)? {
                // Every send buffer is full (loss stalls the flows): wait for room.
                flows.wait()?;
                break;
            }
            tokens -= 1.0;
        }
        thread::sleep(Duration::from_micros(500));
    }
    Ok(())
}

/// Writes as fast as the flows take it.
fn unpaced(flows: &mut Flows, duration: Duration) -> anyhow::Result<()> {
    let payload = vec![0u8; BULK_WRITE];
    let started = Instant::now();
    while started.elapsed() < duration {
        if !flows.write_next(&payload)? {
            flows.wait()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_args_round_trip() {
        let args = SenderArgs {
            container_pid: 4242,
            flows: 16,
            segments_per_s: Some(12_500.5),
            duration: Duration::from_millis(2500),
            remote: "198.19.0.2:5432".parse().unwrap(),
        };
        assert_eq!(SenderArgs::parse(&args.to_args()).unwrap(), args);
        let max = SenderArgs {
            segments_per_s: None,
            ..args
        };
        assert_eq!(SenderArgs::parse(&max.to_args()).unwrap(), max);
        assert!(SenderArgs::parse(&["pid=1".to_owned()]).is_err());
    }

    #[test]
    fn outcome_round_trip() {
        let outcome = SenderOutcome {
            flows: 8,
            reset_flows: 1,
            bytes_acked: 123_456_789,
            data_segments: 98_765,
            retransmitted: 4_321,
            elapsed: Duration::from_nanos(10_000_000_123),
        };
        assert_eq!(SenderOutcome::parse(&outcome.to_string()).unwrap(), outcome);
        assert!(SenderOutcome::parse("ready").is_err());
    }
}
