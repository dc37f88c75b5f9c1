//! Where a filesystem type is mounted, from `/proc/self/mounts`.

use std::path::PathBuf;

/// The first mount point of `fstype` (`tracefs`, `bpf`, `cgroup2`, ...).
pub(crate) fn mount_point(fstype: &str) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let (_, target, kind) = (parts.next()?, parts.next()?, parts.next()?);
        (kind == fstype).then(|| PathBuf::from(target))
    })
}
