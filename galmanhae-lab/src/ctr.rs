//! Containers of plain containerd (`ctr`), outside Docker: no runtime API names them, their
//! cgroup is `/<namespace>/<id>` with any id, and their network namespace is their own
//! (loopback only).

use anyhow::{Context as _, bail};

use crate::{IMAGE, run};

/// The containerd namespace of the lab's containers.
pub const NAMESPACE: &str = "galmanhae-lab";
/// The lab image as containerd names it once imported from Docker.
const IMAGE_REF: &str = "docker.io/galmanhae-lab/busybox:latest";
/// Docker's own containerd (docker.io runs one), then a system containerd.
const SOCKETS: [&str; 2] = [
    "/var/run/docker/containerd/containerd.sock",
    "/run/containerd/containerd.sock",
];

fn address() -> anyhow::Result<&'static str> {
    SOCKETS
        .into_iter()
        .find(|s| std::path::Path::new(s).exists())
        .context("no containerd socket (dockerd runs one: `cargo xtask lab up`)")
}

fn ctr(args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["--address", address()?, "--namespace", NAMESPACE];
    all.extend_from_slice(args);
    run("ctr", &all)
}

/// Starts `name` running `command` from the lab image (imported from Docker's first).
pub fn start(name: &str, command: &[&str]) -> anyhow::Result<()> {
    if ctr(&["images", "check", &format!("name=={IMAGE_REF}")])
        .map_or(true, |listing| !listing.contains(IMAGE_REF))
    {
        let import = format!(
            "docker save {IMAGE} | ctr --address {} --namespace {NAMESPACE} images import -",
            address()?
        );
        run("sh", &["-c", &import]).context("importing the lab image into containerd")?;
    }
    let _ = remove(name);
    let mut args = vec!["run", "-d", IMAGE_REF, name];
    args.extend_from_slice(command);
    ctr(&args).with_context(|| format!("starting {name} with ctr"))?;
    Ok(())
}

/// Runs a command in the container and waits for it.
pub fn exec(name: &str, command: &[&str]) -> anyhow::Result<String> {
    let exec_id = format!("exec-{}", std::process::id());
    let mut args = vec!["task", "exec", "--exec-id", exec_id.as_str(), name];
    args.extend_from_slice(command);
    ctr(&args)
}

/// The host pid of the container's first process.
pub fn pid(name: &str) -> anyhow::Result<u32> {
    let listing = ctr(&["task", "ls"])?;
    for line in listing.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() == Some(&name) {
            return fields
                .get(1)
                .and_then(|p| p.parse().ok())
                .with_context(|| format!("pid of {name} in {line:?}"));
        }
    }
    bail!("{name} is not running: {listing}")
}

/// Kills and removes the container; nothing to do when it does not exist.
pub fn remove(name: &str) -> anyhow::Result<()> {
    let _ = ctr(&["task", "kill", "--signal", "SIGKILL", name]);
    let _ = ctr(&["task", "rm", "--force", name]);
    match ctr(&["containers", "rm", name]) {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("not found") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes every container and image of the lab's containerd namespace (none when containerd
/// is not running).
pub fn remove_all() -> anyhow::Result<()> {
    if address().is_err() || ctr(&["version"]).is_err() {
        return Ok(());
    }
    for name in ctr(&["containers", "ls", "--quiet"])?.split_whitespace() {
        remove(name)?;
    }
    if ctr(&["images", "ls", "--quiet"])?.contains(IMAGE_REF) {
        ctr(&["images", "rm", IMAGE_REF])?;
    }
    Ok(())
}
