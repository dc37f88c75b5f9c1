//! cgroup v2: where it is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid
//! host), a process's group in it, and moving a process into a group.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// The cgroup v2 mount point.
pub fn root() -> anyhow::Result<PathBuf> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    mount_of(&mountinfo).context("no cgroup2 file system is mounted")
}

/// The directory of `pid`'s cgroup v2 group.
pub fn of(pid: u32) -> anyhow::Result<PathBuf> {
    let membership = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("reading /proc/{pid}/cgroup"))?;
    let path = unified_path(&membership)
        .with_context(|| format!("process {pid} is in no cgroup v2 group: {membership:?}"))?;
    Ok(root()?.join(path.trim_start_matches('/')))
}

/// Moves process `pid` (all its threads) into the group at `dir`.
pub fn move_into(dir: &Path, pid: u32) -> anyhow::Result<()> {
    let procs = dir.join("cgroup.procs");
    fs::write(&procs, pid.to_string()).with_context(|| format!("writing {}", procs.display()))
}

/// The `0::PATH` line of `/proc/PID/cgroup`.
fn unified_path(membership: &str) -> Option<&str> {
    membership.lines().find_map(|l| l.strip_prefix("0::"))
}

/// Where the cgroup v2 hierarchy is mounted, from `/proc/self/mountinfo`.
fn mount_of(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        (fs.split_whitespace().next()? == "cgroup2")
            .then(|| mount.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_group_and_its_mount() {
        let membership = "4:memory:/docker/abc\n1:cpu:/docker/abc\n0::/docker/abc\n";
        assert_eq!(unified_path(membership), Some("/docker/abc"));
        assert_eq!(unified_path("4:memory:/\n"), None);
        let mountinfo = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:6 - cgroup cgroup rw,memory";
        assert_eq!(
            mount_of(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }
}
