//! The lab's dockerd, image and containers.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, bail};

use crate::{BRIDGE_IP, BRIDGE_V6, IMAGE, LABEL, STATE_DIR, run, spawn_detached, wait_for};

const DOCKERD_PID: &str = "/run/galmanhae-lab/dockerd.pid";

/// The default bridge's settings as `docker network inspect` prints them with this format:
/// `true|198.18.100.0/24,2001:2:0:100::/64,`.
const BRIDGE_FORMAT: &str = "{{.EnableIPv6}}|{{range .IPAM.Config}}{{.Subnet}},{{end}}";

/// Uses a running dockerd if its default bridge is what the lab needs (IPv4 and IPv6 subnets in
/// the lab's ranges); starts one otherwise. A daemon the lab did not start is never changed:
/// when it does not fit, the error says why and what to do, before any test runs.
pub fn ensure_daemon() -> anyhow::Result<()> {
    if run("docker", &["version", "--format", "{{.Server.Version}}"]).is_ok() {
        let bridge = run(
            "docker",
            &["network", "inspect", "bridge", "--format", BRIDGE_FORMAT],
        )
        .context("reading the running Docker daemon's default bridge")?;
        if let Some(problem) = bridge_problem(&bridge) {
            bail!(
                "a Docker daemon is already running and {problem}. Stop it and the lab starts \
                 its own (`systemctl stop docker.socket docker`, or end the dockerd process), \
                 or restart it with `--bip {BRIDGE_IP} --ipv6 --fixed-cidr-v6 {BRIDGE_V6}` (in \
                 /etc/docker/daemon.json: \"bip\", \"ipv6\": true, \"fixed-cidr-v6\")"
            );
        }
        return Ok(());
    }
    let log = Path::new(STATE_DIR).join("dockerd.log");
    let pid = spawn_detached(
        "dockerd",
        &[
            "--bip",
            BRIDGE_IP,
            "--ipv6",
            "--fixed-cidr-v6",
            BRIDGE_V6,
            "--pidfile",
            "/var/run/docker.pid",
        ],
        &log,
    )
    .context("starting dockerd (apt-get install docker.io, or `cargo xtask setup`)")?;
    std::fs::write(DOCKERD_PID, pid.to_string())?;
    wait_for(Duration::from_secs(60), "dockerd to answer", || {
        run("docker", &["version", "--format", "{{.Server.Version}}"]).is_ok()
    })
    .with_context(|| format!("dockerd did not come up; see {}", log.display()))
}

/// Stops dockerd if the lab started it, and waits until it has exited.
pub fn stop_daemon_if_ours() -> anyhow::Result<()> {
    let Ok(pid) = std::fs::read_to_string(DOCKERD_PID) else {
        return Ok(());
    };
    let _ = std::fs::remove_file(DOCKERD_PID);
    stop_daemon(pid.trim())
}

/// Stops the dockerd with `pid` (TERM, then KILL after 20 s) and removes the bridge it leaves
/// behind: for daemons the lab or a test started.
pub fn stop_daemon(pid: &str) -> anyhow::Result<()> {
    let _ = run("kill", &["-TERM", pid]);
    let proc_dir = format!("/proc/{pid}");
    let stopped = wait_for(Duration::from_secs(20), "dockerd to stop", || {
        !Path::new(&proc_dir).exists()
            || std::fs::read_to_string(format!("{proc_dir}/stat")).is_ok_and(|s| s.contains(") Z "))
    });
    if stopped.is_err() {
        let _ = run("kill", &["-KILL", pid]);
    }
    if run("ip", &["link", "show", "docker0"]).is_ok() {
        run("ip", &["link", "del", "docker0"])?;
    }
    Ok(())
}

/// Images cannot be pulled here: build one from Debian's static busybox.
pub fn ensure_image() -> anyhow::Result<()> {
    if run("docker", &["image", "inspect", IMAGE]).is_ok() {
        return Ok(());
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("busybox not found: apt-get install busybox-static")?;
    let root = Path::new(STATE_DIR).join("rootfs");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(busybox, bin.join("busybox"))?;
    for applet in [
        "sh", "nc", "head", "cat", "sleep", "ip", "dd", "timeout", "seq",
    ] {
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link)?;
        }
    }
    let tar = Path::new(STATE_DIR).join("rootfs.tar");
    run(
        "tar",
        &[
            "-C",
            &root.display().to_string(),
            "-cf",
            &tar.display().to_string(),
            ".",
        ],
    )?;
    run("docker", &["import", &tar.display().to_string(), IMAGE])?;
    let _ = std::fs::remove_file(tar);
    let _ = std::fs::remove_dir_all(root);
    Ok(())
}

pub fn remove_image() -> anyhow::Result<()> {
    if run("docker", &["version"]).is_ok() && run("docker", &["image", "inspect", IMAGE]).is_ok() {
        run("docker", &["image", "rm", "-f", IMAGE])?;
    }
    Ok(())
}

/// A labelled container that streams to `host:port` in a loop (the incident's app).
pub fn ensure_streaming_container(name: &str, host: &str, port: u16) -> anyhow::Result<()> {
    if run(
        "docker",
        &["inspect", "--format", "{{.State.Running}}", name],
    )
    .is_ok_and(|s| s.trim() == "true")
    {
        return Ok(());
    }
    let _ = run("docker", &["rm", "-f", name]);
    let script =
        format!("while :; do head -c 20000000 /dev/zero | nc -w 10 {host} {port}; sleep 0.5; done");
    start_container(name, &["sh", "-c", &script], &[])
}

/// Starts a labelled lab container running `command`.
pub fn start_container(name: &str, command: &[&str], docker_args: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["run", "-d", "--name", name, "--label", LABEL];
    args.extend_from_slice(docker_args);
    args.push(IMAGE);
    args.extend_from_slice(command);
    run("docker", &args)?;
    Ok(())
}

/// Runs a command in a container and waits for it.
pub fn exec(name: &str, command: &[&str]) -> anyhow::Result<String> {
    let mut args = vec!["exec", name];
    args.extend_from_slice(command);
    run("docker", &args)
}

pub fn remove_lab_containers() -> anyhow::Result<()> {
    if run("docker", &["version"]).is_err() {
        return Ok(());
    }
    let ids = run(
        "docker",
        &["ps", "-aq", "--filter", &format!("label={LABEL}")],
    )?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        run("docker", &args)?;
    }
    Ok(())
}

pub fn remove_container(name: &str) -> anyhow::Result<()> {
    run("docker", &["rm", "-f", name]).map(|_| ())
}

/// A container's IPv4 address on the bridge.
pub fn ip(name: &str) -> anyhow::Result<String> {
    inspect(name, "{{.NetworkSettings.IPAddress}}")
}

/// A container's IPv6 address on the bridge.
pub fn ipv6(name: &str) -> anyhow::Result<String> {
    inspect(name, "{{.NetworkSettings.GlobalIPv6Address}}")
}

/// The host pid of a container's first process.
pub fn pid(name: &str) -> anyhow::Result<u32> {
    inspect(name, "{{.State.Pid}}")?
        .parse()
        .with_context(|| format!("pid of container {name}"))
}

pub fn id(name: &str) -> anyhow::Result<String> {
    inspect(name, "{{.Id}}")
}

fn inspect(name: &str, format: &str) -> anyhow::Result<String> {
    let value = run("docker", &["inspect", "--format", format, name])?;
    let value = value.trim();
    if value.is_empty() {
        bail!("container {name} has no {format}");
    }
    Ok(value.to_owned())
}

/// What a running daemon's default bridge (as [`BRIDGE_FORMAT`] prints it) lacks for the lab:
/// an IPv4 subnet in `198.18.0.0/15`, and IPv6 with a subnet in `2001:2::/48` (without it every
/// IPv6 test fails late, with "Cannot assign requested address").
pub(crate) fn bridge_problem(inspect: &str) -> Option<String> {
    let (ipv6_enabled, subnets) = inspect.trim().split_once('|').unwrap_or(("", ""));
    let subnets: Vec<&str> = subnets.split(',').filter(|s| !s.is_empty()).collect();
    let shown = if subnets.is_empty() {
        "none".to_owned()
    } else {
        subnets.join(", ")
    };
    let (v6, v4): (Vec<&str>, Vec<&str>) = subnets.iter().partition(|s| s.contains(':'));
    if !v4.iter().any(|s| in_lab_v4(s)) {
        return Some(format!(
            "its default bridge's subnets ({shown}) are not in 198.18.0.0/15, the only IPv4 \
             range the lab uses"
        ));
    }
    if ipv6_enabled != "true" {
        return Some(format!(
            "its default bridge has no IPv6 (EnableIPv6={ipv6_enabled}, subnets {shown}), which \
             the lab's IPv6 tests need (they would fail with \"Cannot assign requested \
             address\")"
        ));
    }
    if !v6.iter().any(|s| in_lab_v6(s)) {
        return Some(format!(
            "its default bridge's IPv6 subnets ({shown}) are not in 2001:2::/48, the only IPv6 \
             range the lab uses"
        ));
    }
    None
}

/// `198.18.x.y/n` or `198.19.x.y/n` with n >= 15.
fn in_lab_v4(subnet: &str) -> bool {
    let Some((addr, len)) = subnet.split_once('/') else {
        return false;
    };
    let (Ok(addr), Ok(len)) = (addr.parse::<std::net::Ipv4Addr>(), len.parse::<u8>()) else {
        return false;
    };
    let [a, b, ..] = addr.octets();
    a == 198 && (b == 18 || b == 19) && (15..=32).contains(&len)
}

/// `2001:2:0:x::/n` with n >= 48.
fn in_lab_v6(subnet: &str) -> bool {
    let Some((addr, len)) = subnet.split_once('/') else {
        return false;
    };
    let (Ok(addr), Ok(len)) = (addr.parse::<std::net::Ipv6Addr>(), len.parse::<u8>()) else {
        return false;
    };
    let [a, b, c, ..] = addr.segments();
    (a, b, c) == (0x2001, 2, 0) && (48..=128).contains(&len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_labs_own_bridge_fits() {
        assert_eq!(
            bridge_problem("true|198.18.100.0/24,2001:2:0:100::/64,\n"),
            None
        );
    }

    #[test]
    fn a_bridge_without_ipv6_is_named_with_the_symptom() {
        let problem = bridge_problem("false|198.18.100.0/24,\n").unwrap();
        assert!(problem.contains("no IPv6"), "{problem}");
        assert!(problem.contains("EnableIPv6=false"), "{problem}");
        assert!(
            problem.contains("Cannot assign requested address"),
            "{problem}"
        );
    }

    #[test]
    fn subnets_outside_the_lab_ranges_are_refused() {
        let v4 = bridge_problem("true|172.17.0.0/16,2001:2:0:100::/64,").unwrap();
        assert!(v4.contains("not in 198.18.0.0/15"), "{v4}");
        let v6 = bridge_problem("true|198.18.100.0/24,fd00:1::/64,").unwrap();
        assert!(v6.contains("not in 2001:2::/48"), "{v6}");
        let wide = bridge_problem("true|198.0.0.0/8,2001:2:0:100::/64,").unwrap();
        assert!(wide.contains("not in 198.18.0.0/15"), "{wide}");
        assert!(bridge_problem("").unwrap().contains("(none)"));
    }
}
