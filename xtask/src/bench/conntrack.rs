//! Issue 13's cost goal: what the agent uses does not follow the size of the host's conntrack
//! table. The daemon and diagnose run once with the table as it came and once with
//! `--conntrack-entries` synthetic entries (`cargo xtask lab fault conntrack-fill`), while a
//! lossy stream from a storm container gives them flows whose NAT side they look up.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use galmanhae_lab::{DB_PORT, DB_V4, conntrack_fill, docker, free_loopback_address};
use serde::Serialize;

use super::measure::{self, Rusage};

/// How long the daemon runs per table: three of its full passes (every 10 s).
const DAEMON_WINDOW: Duration = Duration::from_secs(30);
const FULL_PASS: Duration = Duration::from_secs(10);
/// How long diagnose watches per table.
const DIAGNOSE_WINDOW: &str = "5s";
const GNU_TIME: &str = "/usr/bin/time";
/// The goal: peak RSS with the big table at most this much above the empty table's.
pub const RSS_BOUND_KIB: u64 = 8 * 1024;

#[derive(Debug, Serialize)]
pub struct ConntrackTable {
    /// Synthetic entries asked for, and how many the table grew by.
    pub asked: u32,
    pub added: u64,
    /// The table as it came, then with the synthetic entries.
    pub runs: [TableRun; 2],
}

#[derive(Debug, Serialize)]
pub struct TableRun {
    /// `nf_conntrack_count` when the run started.
    pub table_entries: u64,
    pub daemon_peak_rss_kib: u64,
    /// The daemon's CPU over its window, per full pass (timer passes every 10 s).
    pub daemon_cpu_per_pass_ms: f64,
    pub diagnose: Rusage,
}

/// Both runs; `container` streams to the db through its lossy path meanwhile. The synthetic
/// entries are deleted before returning, also on failure.
pub fn measure(galmanhae: &Path, container: &str, entries: u32) -> anyhow::Result<ConntrackTable> {
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, container) = (Arc::clone(&stop), container.to_owned());
        thread::spawn(move || {
            let script = format!("head -c 2000000 /dev/zero | nc -w 3 {DB_V4} {DB_PORT}");
            while !stop.load(Ordering::Relaxed) {
                let _ = docker::exec(&container, &["sh", "-c", &script]);
            }
        })
    };
    let result = (|| {
        let empty = run(galmanhae)?;
        eprintln!("xtask: bench: conntrack table: filling {entries} entries");
        let added = conntrack_fill::fill(entries)?;
        let full = run(galmanhae);
        conntrack_fill::clear()?;
        Ok(ConntrackTable {
            asked: entries,
            added,
            runs: [empty, full?],
        })
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();
    let _ = conntrack_fill::clear();
    result
}

fn run(galmanhae: &Path) -> anyhow::Result<TableRun> {
    let table_entries = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .context("nf_conntrack_count")?
        .trim()
        .parse()
        .context("nf_conntrack_count")?;
    let (daemon_peak_rss_kib, daemon_cpu_per_pass_ms) = daemon(galmanhae)?;
    let diagnose = diagnose(galmanhae)?;
    Ok(TableRun {
        table_entries,
        daemon_peak_rss_kib,
        daemon_cpu_per_pass_ms,
        diagnose,
    })
}

/// diagnose's CPU and peak RSS over its life, from GNU time: `wait4` in this process would
/// count the copy of xtask the child was before its exec.
fn diagnose(galmanhae: &Path) -> anyhow::Result<Rusage> {
    let out = std::env::temp_dir().join(format!("galmanhae-bench-time-{}", std::process::id()));
    let status = Command::new(GNU_TIME)
        .args(["-f", "%M %U %S", "-o"])
        .arg(&out)
        .arg(galmanhae)
        .args(["diagnose", "--json", "--duration", DIAGNOSE_WINDOW])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {GNU_TIME} (apt-get install time)"))?;
    anyhow::ensure!(status.success(), "galmanhae diagnose: {status}");
    let text =
        std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let _ = std::fs::remove_file(&out);
    parse_time(&text).with_context(|| format!("GNU time's output: {text:?}"))
}

/// `%M %U %S`: max RSS in KiB, user and system seconds.
fn parse_time(text: &str) -> Option<Rusage> {
    let mut fields = text.split_whitespace();
    let peak_rss_kib = fields.next()?.parse().ok()?;
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some(Rusage {
        cpu_s: user + system,
        peak_rss_kib,
    })
}

/// The daemon's peak RSS and CPU per full pass over [`DAEMON_WINDOW`].
fn daemon(galmanhae: &Path) -> anyhow::Result<(u64, f64)> {
    let address = free_loopback_address()?;
    let child = Command::new(galmanhae)
        .args(["run", "--listen", &address.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting galmanhae run")?;
    let mut child = Killed(child);
    let ready = Instant::now();
    while measure::http_get(address, "/healthz").is_err() {
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(30),
            "galmanhae run never served /healthz"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let pid = child.0.id();
    let start = measure::tree_usage(pid);
    thread::sleep(DAEMON_WINDOW);
    let end = measure::tree_usage(pid);
    measure::http_get(address, "/metrics").context("scraping galmanhae run")?;
    let passes = DAEMON_WINDOW.as_secs_f64() / FULL_PASS.as_secs_f64();
    let cpu = end.cpu.saturating_sub(start.cpu).as_secs_f64();
    let _ = child.0.kill();
    let _ = child.0.wait();
    Ok((end.peak_rss_kib, cpu * 1000.0 / passes))
}

/// A child killed when dropped (a failed run leaves no daemon behind).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ConntrackTable {
    /// Peak RSS growth of the daemon and diagnose with the big table, KiB.
    pub fn growth(&self) -> (i64, i64) {
        let [empty, full] = &self.runs;
        let kib = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        (
            kib(full.daemon_peak_rss_kib) - kib(empty.daemon_peak_rss_kib),
            kib(full.diagnose.peak_rss_kib) - kib(empty.diagnose.peak_rss_kib),
        )
    }

    pub fn markdown(&self) -> String {
        let mut md = format!(
            "## Conntrack table (issue 13)\n\nThe daemon ({} s, three full passes) and diagnose \
             ({DIAGNOSE_WINDOW}) with the host's conntrack table as it came and with {} \
             synthetic entries added (`cargo xtask lab fault conntrack-fill`), a lossy stream \
             from a storm container giving them flows to look up. The table is never dumped: \
             each followed flow is looked up by its tuple.\n\n| Table entries | daemon peak RSS \
             | daemon CPU per full pass | diagnose peak RSS | diagnose CPU |\n|---|---|---|---|---|\n",
            DAEMON_WINDOW.as_secs(),
            self.added
        );
        for run in &self.runs {
            let _ = writeln!(
                md,
                "| {} | {:.1} MiB | {:.1} ms | {:.1} MiB | {:.2} s |",
                run.table_entries,
                run.daemon_peak_rss_kib as f64 / 1024.0,
                run.daemon_cpu_per_pass_ms,
                run.diagnose.peak_rss_kib as f64 / 1024.0,
                run.diagnose.cpu_s
            );
        }
        md.push('\n');
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnu_time_gives_peak_rss_and_cpu() {
        let usage = parse_time("31240 0.06 0.13\n").expect("three fields");
        assert_eq!(usage.peak_rss_kib, 31_240);
        assert!((usage.cpu_s - 0.19).abs() < 1e-9);
        assert!(parse_time("Command exited with non-zero status 1\n").is_none());
    }
}
