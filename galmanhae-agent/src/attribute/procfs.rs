//! Which processes live in which network namespace, and what their cgroups are.

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::kernel::task_iter::Tasks;

/// The processes of one network namespace, lowest pid first.
#[derive(Clone, Debug, Default)]
pub(crate) struct NetnsProcesses {
    pub(crate) pids: Vec<i32>,
}

/// A scan of /proc.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProcessTable {
    /// The host's namespace: galmanhae's own. It runs on the host network (systemd unit,
    /// `DaemonSet` with `hostNetwork`); pid 1's namespace is not always the host's (sandboxes).
    pub(crate) host_netns: Option<u32>,
    pub(crate) netns: BTreeMap<u32, NetnsProcesses>,
}

/// Inode of a namespace file (`/proc/PID/ns/net`, a bind mount in /run/netns, ...).
pub(crate) fn ns_inode(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| u32::try_from(m.ino()).ok())
}

/// Lists every process's network namespace. Processes that exit mid-scan are skipped.
///
/// `known` (pid -> namespace, from the last scan, updated here) spares a `stat` per process
/// per pass, which is most of a pass's cost on a host with thousands of processes. A process
/// keeps its namespace unless it calls `setns`/`unshare` (`ip netns exec`): `restat` (every few
/// seconds) checks every process again.
pub(crate) fn scan(known: &mut HashMap<i32, u32>, restat: bool) -> ProcessTable {
    let mut table = ProcessTable {
        host_netns: ns_inode(Path::new("/proc/self/ns/net")),
        netns: BTreeMap::new(),
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return table;
    };
    let mut seen = HashMap::with_capacity(known.len());
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let netns = match known.get(&pid) {
            Some(netns) if !restat => Some(*netns),
            _ => ns_inode(&entry.path().join("ns/net")),
        };
        if let Some(netns) = netns {
            seen.insert(pid, netns);
            table.netns.entry(netns).or_default().pids.push(pid);
        }
    }
    *known = seen;
    for info in table.netns.values_mut() {
        info.pids.sort_unstable();
    }
    table
}

/// The same table from the kernel's task list (`iter/task`): no `/proc/PID/ns/net`, so no
/// ptrace access to other processes is needed.
pub(crate) fn from_tasks(tasks: &Tasks) -> ProcessTable {
    let mut table = ProcessTable {
        host_netns: ns_inode(Path::new("/proc/self/ns/net")),
        netns: BTreeMap::new(),
    };
    // BTreeMap order: each namespace's pids come out lowest first.
    for (pid, netns) in &tasks.netns {
        table.netns.entry(*netns).or_default().pids.push(*pid);
    }
    table
}

/// The cgroup paths of a process, one per hierarchy (v1 controllers and the v2 `0::` line).
pub(crate) fn cgroup_paths(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|text| {
            text.lines()
                .filter_map(|line| line.splitn(3, ':').nth(2).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A process's command name (`comm`), `None` once it has exited.
pub(crate) fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_owned())
        .filter(|c| !c.is_empty())
}

/// Names of namespaces that are bind-mounted (`ip netns add`, Docker sandboxes).
pub(crate) fn netns_names() -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for dir in ["/run/netns", "/var/run/docker/netns"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if let (Some(inode), Some(name)) = (ns_inode(&entry.path()), entry.file_name().to_str())
            {
                names.entry(inode).or_insert_with(|| name.to_owned());
            }
        }
    }
    names
}

/// Maps cgroup v2 ids (what `sk_cgrp_data` holds) to paths: the id is the inode of the
/// cgroup's directory in the cgroup2 mount.
#[derive(Debug, Default)]
pub(crate) struct CgroupResolver {
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    /// When the tree was last walked: an id no walk finds (a cgroup removed while its
    /// sockets live on) would otherwise cost a walk per socket.
    walked: Option<Instant>,
}

/// An unknown id walks the tree again at most this often (about once per pass).
const REWALK_EVERY: Duration = Duration::from_secs(1);

impl CgroupResolver {
    pub(crate) fn new() -> Self {
        Self {
            // `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` in hybrid mode.
            root: crate::kernel::mounts::mount_point("cgroup2"),
            paths: HashMap::new(),
            walked: None,
        }
    }

    /// The path (relative to the cgroup2 root, `/` for the root) of a cgroup id.
    pub(crate) fn path(&mut self, id: u64) -> Option<&str> {
        if id == 0 {
            return None;
        }
        if !self.paths.contains_key(&id)
            && self.walked.is_none_or(|at| at.elapsed() >= REWALK_EVERY)
        {
            self.rescan();
        }
        self.paths.get(&id).map(String::as_str)
    }

    fn rescan(&mut self) {
        let Some(root) = self.root.clone() else {
            return;
        };
        self.walked = Some(Instant::now());
        // Rebuilt whole: cgroups removed since the last scan are forgotten.
        self.paths.clear();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let relative = dir
                .strip_prefix(&root)
                .map_or_else(|_| "/".to_owned(), |p| format!("/{}", p.display()));
            self.paths.insert(meta.ino(), relative);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
    }
}
