//! The lab's dockerd, image and containers.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, bail};

use crate::{BRIDGE_IP, BRIDGE_V6, IMAGE, LABEL, STATE_DIR, run, spawn_detached, wait_for};

const DOCKERD_PID: &str = "/run/galmanhae-lab/dockerd.pid";

/// Uses a running dockerd if its bridge is in the lab range; starts one otherwise.
pub fn ensure_daemon() -> anyhow::Result<()> {
    if run("docker", &["version", "--format", "{{.Server.Version}}"]).is_ok() {
        let bridge = run("ip", &["-4", "-o", "addr", "show", "docker0"]).unwrap_or_default();
        if !bridge.contains("198.18.") && !bridge.contains("198.19.") {
            bail!(
                "a Docker daemon is already running and its bridge is not in 198.18.0.0/15 \
                 ({}); the lab only uses that range. Stop it, or restart it with --bip {BRIDGE_IP}",
                bridge.trim()
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
    let pid = pid.trim().to_owned();
    let _ = run("kill", &["-TERM", &pid]);
    let proc_dir = format!("/proc/{pid}");
    let stopped = wait_for(Duration::from_secs(20), "dockerd to stop", || {
        !Path::new(&proc_dir).exists()
            || std::fs::read_to_string(format!("{proc_dir}/stat")).is_ok_and(|s| s.contains(") Z "))
    });
    if stopped.is_err() {
        let _ = run("kill", &["-KILL", &pid]);
    }
    let _ = std::fs::remove_file(DOCKERD_PID);
    // dockerd leaves its bridge behind; the lab created it, so the lab removes it.
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
