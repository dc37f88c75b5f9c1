//! What the bench reads from the kernel: a process tree's CPU time and peak RSS (/proc), the
//! run time of each BPF program (`bpftool prog show` with `kernel.bpf_stats_enabled`), and the
//! rusage of a reaped child.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    mem::MaybeUninit,
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, ExitStatus},
    time::Duration,
};

use anyhow::{Context as _, bail};
use galmanhae_lab::cgroup;
use serde::Serialize;

/// The sysctl that makes the kernel count each BPF program's runs and run time.
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled=1` while it lives; the old value afterwards.
pub struct BpfStats {
    previous: String,
}

impl BpfStats {
    pub fn enable() -> anyhow::Result<Self> {
        let previous = fs::read_to_string(BPF_STATS)
            .with_context(|| format!("reading {BPF_STATS}"))?
            .trim()
            .to_owned();
        fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
        Ok(Self { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = fs::write(BPF_STATS, &self.previous) {
            eprintln!("xtask: warning: could not restore {BPF_STATS}: {e}");
        }
    }
}

/// A cgroup (v2) of its own for a tool: its `cpu.stat` counts every thread and child of the
/// tool, exited ones included, in microseconds (/proc/PID/stat counts in 10 ms ticks).
pub struct ToolCgroup {
    dir: PathBuf,
}

impl ToolCgroup {
    /// Creates the group and moves `pid` into it (processes it started before stay out).
    pub fn new(name: &str, pid: u32) -> anyhow::Result<Self> {
        let dir = cgroup::root()?.join("galmanhae-bench").join(name);
        if dir.exists() {
            // A group left by an earlier bench that was killed: empty, or it fails below.
            let _ = fs::remove_dir(&dir);
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let group = Self { dir };
        cgroup::move_into(&group.dir, pid)?;
        Ok(group)
    }

    /// `usage_usec` of the group's `cpu.stat`.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        let path = self.dir.join("cpu.stat");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        usage_usec(&text)
            .map(Duration::from_micros)
            .with_context(|| format!("no usage_usec in {}", path.display()))
    }
}

impl Drop for ToolCgroup {
    fn drop(&mut self) {
        // Empty once the tool has exited; so is the parent, unless another tool's group is in.
        let _ = fs::remove_dir(&self.dir);
        if let Some(parent) = self.dir.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

fn usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))?
        .trim()
        .parse()
        .ok()
}

/// CPU time and peak RSS of a process and its live descendants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeUsage {
    /// utime + stime + cutime + cstime summed over the tree: reaped children count through
    /// their parent's cutime/cstime, live ones through their own.
    pub cpu: Duration,
    /// The largest `VmHWM` of the tree's processes.
    pub peak_rss_kib: u64,
}

pub fn tree_usage(root: u32) -> TreeUsage {
    let ticks_per_s = clock_ticks();
    let mut usage = TreeUsage::default();
    for (pid, ticks) in tree(root) {
        if let Some(ticks) = ticks {
            usage.cpu += Duration::from_secs_f64(ticks as f64 / ticks_per_s as f64);
        }
        if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(hwm) = vm_hwm_kib(&status)
        {
            usage.peak_rss_kib = usage.peak_rss_kib.max(hwm);
        }
    }
    usage
}

/// `root` and every process below it, from the parent pid in each /proc/PID/stat, with the
/// [`cpu_ticks`] of that same read.
fn tree(root: u32) -> Vec<(u32, Option<u64>)> {
    // pid -> (parent pid, CPU ticks)
    let mut stats = BTreeMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat"))
                && let Some(ppid) = stat_field(&stat, 4).and_then(|p| p.parse::<u32>().ok())
            {
                stats.insert(pid, (ppid, cpu_ticks(&stat)));
            }
        }
    }
    let mut tree = vec![root];
    let mut next = 0;
    while let Some(&parent) = tree.get(next) {
        tree.extend(
            stats
                .iter()
                .filter(|&(_, &(ppid, _))| ppid == parent)
                .map(|(&pid, _)| pid),
        );
        next += 1;
    }
    tree.into_iter()
        .map(|pid| (pid, stats.get(&pid).and_then(|&(_, ticks)| ticks)))
        .collect()
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat; the command name may hold spaces
/// and parentheses, so fields are counted from the last `)`.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n.checked_sub(3)?)
}

/// utime + stime + cutime + cstime (fields 14-17), in clock ticks.
fn cpu_ticks(stat: &str) -> Option<u64> {
    (14..=17)
        .map(|n| stat_field(stat, n)?.parse::<u64>().ok())
        .sum()
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// CPU time and peak RSS of a child over its whole life, from `wait4` (its reaped children
/// included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rusage {
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
}

/// Reaps `child` with `wait4`, for its rusage (std's `wait` discards it).
pub fn wait_rusage(child: &mut Child) -> anyhow::Result<(ExitStatus, Rusage)> {
    use std::os::unix::process::ExitStatusExt as _;
    let pid = libc::pid_t::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is valid.
    let mut usage: libc::rusage = unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: waits for our own child, not reaped yet; both pointers are valid.
    if unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) } != pid {
        return Err(std::io::Error::last_os_error()).context("wait4");
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((
        ExitStatus::from_raw(status),
        Rusage {
            cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
            peak_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        },
    ))
}

/// One BPF program's kernel-side counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    pub name: String,
    pub kind: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// Every loaded BPF program by id.
pub fn programs() -> anyhow::Result<BTreeMap<u32, Program>> {
    parse_programs(&galmanhae_lab::run("bpftool", &["prog", "show", "--json"])?)
}

fn parse_programs(json: &str) -> anyhow::Result<BTreeMap<u32, Program>> {
    let list: Vec<serde_json::Value> =
        serde_json::from_str(json).context("bpftool prog show --json")?;
    list.iter()
        .map(|p| {
            let id = p["id"]
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .context("a program without an id")?;
            let text = |key: &str| p[key].as_str().unwrap_or_default().to_owned();
            Ok((
                id,
                Program {
                    name: text("name"),
                    kind: text("type"),
                    run_time_ns: p["run_time_ns"].as_u64().unwrap_or(0),
                    run_cnt: p["run_cnt"].as_u64().unwrap_or(0),
                },
            ))
        })
        .collect()
}

/// `GET path` over HTTP/1.0 (a complete body without chunked encoding); the body of a 200.
pub fn http_get(address: SocketAddr, path: &str) -> anyhow::Result<String> {
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("reading http://{address}{path}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("http://{address}{path}: no HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("http://{address}{path}: {status}");
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_command_name() {
        // A command name with a space and a parenthesis; utime 120, stime 30, cutime 5, cstime 1.
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 120 30 5 1 20 0 \
                    9 0 12345 100000000 2500 18446744073709551615";
        assert_eq!(stat_field(stat, 3), Some("S"));
        assert_eq!(stat_field(stat, 4), Some("1"));
        assert_eq!(cpu_ticks(stat), Some(156));
        assert_eq!(cpu_ticks("1 (x) S"), None);
    }

    #[test]
    fn reads_cgroup_cpu_usage() {
        let cpu_stat = "usage_usec 797278802\nuser_usec 170779097\nsystem_usec 626499705\n";
        assert_eq!(usage_usec(cpu_stat), Some(797_278_802));
        assert_eq!(usage_usec("user_usec 1\n"), None);
    }

    #[test]
    fn reads_vm_hwm() {
        let status =
            "Name:\tgalmanhae\nVmPeak:\t  300000 kB\nVmHWM:\t   23456 kB\nVmRSS:\t 20000 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(23_456));
        assert_eq!(vm_hwm_kib("Name:\tx\n"), None);
    }

    #[test]
    fn parses_bpftool_json() {
        let json = r#"[{"id":41,"type":"tracepoint","name":"tcp_retransmit_skb","tag":"ab",
            "gpl_compatible":true,"run_time_ns":123456,"run_cnt":1000,"loaded_at":1,"uid":0,
            "orphaned":false,"bytes_xlated":96,"jited":true},
            {"id":7,"type":"cgroup_skb","tag":"cd","gpl_compatible":true}]"#;
        let programs = parse_programs(json).unwrap();
        assert_eq!(
            programs[&41],
            Program {
                name: "tcp_retransmit_skb".to_owned(),
                kind: "tracepoint".to_owned(),
                run_time_ns: 123_456,
                run_cnt: 1000,
            }
        );
        // Without stats (or a name) the fields are empty, not an error.
        assert_eq!(programs[&7].run_cnt, 0);
        assert_eq!(programs[&7].name, "");
        assert!(parse_programs("not json").is_err());
    }
}
