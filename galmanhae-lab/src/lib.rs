//! The incident lab on one machine: a real dockerd (bridge in 198.18.100.0/24), a `db` host in
//! its own network namespace (`198.19.0.2`, `2001:2:0:1::2`) reached across Docker's bridge and
//! MASQUERADE, containers streaming to it, and loss injected with iptables.
//!
//! Only `198.18.0.0/15` and `2001:2::/48` are used. [`down`] removes everything [`up`] created and
//! is safe to run at any time, also after a failed run.

pub mod cgroup;
mod cmd;
pub mod conntrack_fill;
pub mod ctr;
pub mod docker;
pub mod fault;
pub mod snmp;
pub mod storm;
pub mod stream;
pub mod traffic;

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::Path,
    process::Child,
    time::Duration,
};

use anyhow::{Context as _, bail};
pub use cmd::{run, spawn_detached};

/// Docker's bridge, given to dockerd as `--bip`.
pub const BRIDGE_IP: &str = "198.18.100.1/24";
pub const BRIDGE_V6: &str = "2001:2:0:100::/64";
/// The database host, in its own namespace, routed (not bridged) from the host.
pub const DB_NETNS: &str = "galmanhae-db";
pub const DB_V4: &str = "198.19.0.2";
pub const DB_V6: &str = "2001:2:0:1::2";
pub const HOST_ON_DB_LINK_V4: &str = "198.19.0.1";
pub const HOST_ON_DB_LINK_V6: &str = "2001:2:0:1::1";
/// Containers stream here.
pub const DB_PORT: u16 = 5432;
/// Host processes stream here, so a fault can target them alone.
pub const DB_HOST_PORT: u16 = 5433;
/// The db sinks' listen backlog: the bench's storm connects dozens of flows at once, which
/// overflow socat's default of 5 (dropped handshakes, then resets).
const SINK_BACKLOG: u32 = 1024;
/// The kernel's cap on a listen backlog.
const SOMAXCONN: &str = "/proc/sys/net/core/somaxconn";
pub const HOST_VETH: &str = "gmh-db-host";
pub const DB_VETH: &str = "gmh-db";
pub const IMAGE: &str = "galmanhae-lab/busybox:latest";
/// Every container the lab or a test creates carries this label.
pub const LABEL: &str = "galmanhae.lab=1";
/// The lab's state: dockerd's pid and log if the lab started it, the db servers' pid file.
pub const STATE_DIR: &str = "/run/galmanhae-lab";

/// The containers `up` starts: `app` (the incident's app) and `web` (a healthy control).
pub const LAB_CONTAINERS: [&str; 2] = ["app", "web"];

/// Brings the lab up; does nothing for the parts that are already up.
pub fn up() -> anyhow::Result<()> {
    infrastructure()?;
    for name in LAB_CONTAINERS {
        docker::ensure_streaming_container(name, DB_V4, DB_PORT)?;
    }
    Ok(())
}

/// dockerd, the image and the db namespace with its servers, without traffic: what tests
/// build their own scenarios on.
pub fn infrastructure() -> anyhow::Result<()> {
    std::fs::create_dir_all(STATE_DIR).with_context(|| format!("creating {STATE_DIR}"))?;
    docker::ensure_daemon()?;
    docker::ensure_image()?;
    ensure_db()
}

/// Removes everything the lab created; each step tolerates what is already gone.
pub fn down() -> anyhow::Result<()> {
    let mut errors = Vec::new();
    let mut step = |what: &str, result: anyhow::Result<()>| {
        if let Err(e) = result {
            errors.push(format!("{what}: {e:#}"));
        }
    };
    step("faults", fault::clear_all(true));
    step("containers", docker::remove_lab_containers());
    step("containerd containers", ctr::remove_all());
    step("image", docker::remove_image());
    step("db namespace", remove_db());
    step("dockerd", docker::stop_daemon_if_ours());
    let _ = std::fs::remove_dir_all(STATE_DIR);
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("lab down left things behind:\n  {}", errors.join("\n  "))
    }
}

fn ensure_db() -> anyhow::Result<()> {
    if !Path::new("/run/netns").join(DB_NETNS).exists() {
        run("ip", &["netns", "add", DB_NETNS])?;
    }
    if run("ip", &["link", "show", HOST_VETH]).is_err() {
        run(
            "ip",
            &[
                "link", "add", HOST_VETH, "type", "veth", "peer", "name", DB_VETH,
            ],
        )?;
        run("ip", &["link", "set", DB_VETH, "netns", DB_NETNS])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{HOST_ON_DB_LINK_V4}/24"),
                "dev",
                HOST_VETH,
            ],
        )?;
        run(
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &format!("{HOST_ON_DB_LINK_V6}/64"),
                "dev",
                HOST_VETH,
                "nodad",
            ],
        )?;
        run("ip", &["link", "set", HOST_VETH, "up"])?;
        let in_db = |args: &[&str]| {
            let mut full = vec!["netns", "exec", DB_NETNS, "ip"];
            full.extend_from_slice(args);
            run("ip", &full)
        };
        in_db(&["link", "set", "lo", "up"])?;
        in_db(&["addr", "add", &format!("{DB_V4}/24"), "dev", DB_VETH])?;
        in_db(&[
            "-6",
            "addr",
            "add",
            &format!("{DB_V6}/64"),
            "dev",
            DB_VETH,
            "nodad",
        ])?;
        in_db(&["link", "set", DB_VETH, "up"])?;
        in_db(&["route", "add", "default", "via", HOST_ON_DB_LINK_V4])?;
        in_db(&["-6", "route", "add", BRIDGE_V6, "via", HOST_ON_DB_LINK_V6])?;
    }
    run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    run("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"])?;
    ensure_db_servers()
}

/// `socat` sinks in the db namespace (IPv4 and IPv6), one per port. Sinks of an older lab
/// (socat's default backlog of 5) are replaced.
fn ensure_db_servers() -> anyhow::Result<()> {
    let wanted = sink_backlog(std::fs::read_to_string(SOMAXCONN).ok().as_deref());
    let listening = run("ip", &["netns", "exec", DB_NETNS, "ss", "-Htln"]).unwrap_or_default();
    if [DB_PORT, DB_HOST_PORT]
        .iter()
        .all(|&port| listen_backlog(&listening, port).is_some_and(|b| b >= wanted))
    {
        return Ok(());
    }
    kill_db_processes();
    for port in [DB_PORT, DB_HOST_PORT] {
        let listen = format!("TCP6-LISTEN:{port},ipv6only=0,fork,reuseaddr,backlog={SINK_BACKLOG}");
        spawn_detached(
            "ip",
            &[
                "netns",
                "exec",
                DB_NETNS,
                "socat",
                "-u",
                &listen,
                "OPEN:/dev/null",
            ],
            &Path::new(STATE_DIR).join(format!("db-{port}.log")),
        )?;
    }
    wait_for(Duration::from_secs(5), "the db servers to listen", || {
        run("ip", &["netns", "exec", DB_NETNS, "ss", "-Htln"]).is_ok_and(|out| {
            listen_backlog(&out, DB_HOST_PORT).is_some() && listen_backlog(&out, DB_PORT).is_some()
        })
    })
}

/// The backlog a sink asking for [`SINK_BACKLOG`] gets: the kernel caps it at somaxconn, and
/// a sink held against more would be replaced on every call.
fn sink_backlog(somaxconn: Option<&str>) -> u32 {
    somaxconn
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map_or(SINK_BACKLOG, |max| max.min(SINK_BACKLOG))
}

/// Kills every process in the db namespace (its sinks), best effort.
fn kill_db_processes() {
    let pids = run("ip", &["netns", "pids", DB_NETNS]).unwrap_or_default();
    for pid in pids.split_whitespace() {
        let _ = run("kill", &["-9", pid]);
    }
}

/// The backlog of the socket listening on `port`, from `ss -Htln` (its Send-Q column).
fn listen_backlog(ss: &str, port: u16) -> Option<u32> {
    ss.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local = fields.get(3)?;
        local
            .ends_with(&format!(":{port}"))
            .then(|| fields.get(2)?.parse().ok())?
    })
}

fn remove_db() -> anyhow::Result<()> {
    if Path::new("/run/netns").join(DB_NETNS).exists() {
        kill_db_processes();
        run("ip", &["netns", "del", DB_NETNS])?;
    }
    // Deleting the namespace takes the veth pair with it, asynchronously: the host end may
    // still show and then be gone before `ip link del` reaches it.
    if run("ip", &["link", "show", HOST_VETH]).is_ok()
        && let Err(e) = run("ip", &["link", "del", HOST_VETH])
        && run("ip", &["link", "show", HOST_VETH]).is_ok()
    {
        return Err(e);
    }
    Ok(())
}

/// Containers of a test or the bench, idle (`sleep`): traffic comes from `docker exec` or
/// joins them. Removed, and every fault cleared, whatever happens.
pub struct Scenario {
    pub containers: Vec<String>,
}

impl Scenario {
    /// The lab's infrastructure, without old faults or the lab's own containers.
    pub fn new() -> anyhow::Result<Self> {
        infrastructure().context("lab infrastructure (dockerd, db namespace)")?;
        fault::clear_all(false).context("clearing old faults")?;
        // The lab's own streaming containers would add traffic of their own.
        for name in LAB_CONTAINERS {
            let _ = docker::remove_container(name);
        }
        Ok(Self {
            containers: Vec::new(),
        })
    }

    /// Starts an idle container (`docker_args` go to `docker run`), replacing one of that name.
    pub fn container(&mut self, name: &str, docker_args: &[&str]) -> anyhow::Result<()> {
        let _ = docker::remove_container(name);
        docker::start_container(name, &["sleep", "3600"], docker_args)
            .with_context(|| format!("starting container {name}"))?;
        self.containers.push(name.to_owned());
        Ok(())
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = fault::clear_all(false);
        for name in &self.containers {
            let _ = docker::remove_container(name);
        }
    }
}

/// Sends `sig` to `child`. The caller must not have waited for it yet: until then its pid
/// cannot be another process's.
pub fn signal(child: &Child, sig: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: kill takes no pointers; the pid is our unreaped child's (above).
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// An address on 127.0.0.1 whose port was free a moment ago (the kernel's pick, released at
/// once), for a server the caller starts.
pub fn free_loopback_address() -> anyhow::Result<SocketAddr> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .context("finding a free port on 127.0.0.1")
}

/// `true` when running as root. Otherwise the calling test is skipped with a message, except
/// with `CI=true`, where a root test that cannot run is a failure (it panics). `needs` says
/// what the test needs root for.
pub fn root_or_skip(needs: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: this test needs root ({needs})"
        );
        eprintln!("skipped: needs root ({needs}); set CI=true to make this a failure");
    }
    root
}

/// Polls `ready` every 100 ms until it holds or `timeout` passes.
pub fn wait_for(
    timeout: Duration,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listen_backlog_from_ss() {
        let ss = "LISTEN 0      5                  *:5433            *:*          \n\
                  LISTEN 0      1024               *:5432            *:*          \n";
        assert_eq!(listen_backlog(ss, 5432), Some(1024));
        assert_eq!(listen_backlog(ss, 5433), Some(5));
        assert_eq!(listen_backlog(ss, 5434), None);
    }

    #[test]
    fn the_sink_backlog_is_capped_at_somaxconn() {
        assert_eq!(sink_backlog(Some("4096\n")), SINK_BACKLOG);
        assert_eq!(sink_backlog(Some("512\n")), 512);
        assert_eq!(sink_backlog(None), SINK_BACKLOG);
    }
}
