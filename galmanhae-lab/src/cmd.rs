//! Running the host's tools (ip, iptables, docker, dockerd) with errors that say what failed.

use std::{
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Runs a command; its stdout on success, its stderr in the error otherwise.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("running {program} (is it installed? `cargo xtask setup` installs it)")
        })?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Starts a long-running process in its own session, output to `log`; returns its pid.
pub fn spawn_detached(program: &str, args: &[&str], log: &Path) -> anyhow::Result<u32> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = Command::new("setsid");
    command
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // A daemon must not keep what its starter inherited open: a `flock` around a lab command
    // would otherwise stay locked for as long as the db servers run.
    // SAFETY: close_range is async-signal-safe; it marks the child's descriptors
    // close-on-exec (std's own exec-error pipe already is).
    unsafe {
        command.pre_exec(|| {
            libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC.cast_signed());
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    Ok(child.id())
}
