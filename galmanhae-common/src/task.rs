//! Which process lives in which network namespace and cgroup, as the `iter/task` program
//! writes it: read from `struct task_struct` in the kernel, so the agent needs no
//! `CAP_SYS_PTRACE` for `/proc/PID/ns/net` (which the kernel puts behind a ptrace check).

/// `struct task_struct` and what it points to: the members the iterator reads.
/// <https://elixir.bootlin.com/linux/v6.18/source/include/linux/sched.h> (`struct task_struct`),
/// <https://elixir.bootlin.com/linux/v6.18/source/include/linux/nsproxy.h> (`struct nsproxy`),
/// <https://elixir.bootlin.com/linux/v6.18/source/include/linux/cgroup-defs.h> (`struct css_set`)
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `task_struct.pid` and `.tgid`: a thread group's leader has both equal.
    pub pid: u32,
    pub tgid: u32,
    /// `task_struct.nsproxy` (a `struct nsproxy *`, null once the task is exiting).
    pub nsproxy: u32,
    /// `nsproxy.net_ns` (a `struct net *`).
    pub nsproxy_net_ns: u32,
    /// `task_struct.cgroups` (a `struct css_set *`).
    pub cgroups: u32,
    /// `css_set.dfl_cgrp` (a `struct cgroup *`: the task's cgroup v2).
    pub css_set_dfl_cgrp: u32,
}

impl TaskOffsets {
    pub const UNRESOLVED: Self = Self {
        pid: crate::offsets::ABSENT,
        tgid: crate::offsets::ABSENT,
        nsproxy: crate::offsets::ABSENT,
        nsproxy_net_ns: crate::offsets::ABSENT,
        cgroups: crate::offsets::ABSENT,
        css_set_dfl_cgrp: crate::offsets::ABSENT,
    };
}

/// One process (thread-group leader), as the iterator writes it to its `seq_file`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskRecord {
    /// The process id in the initial pid namespace; in the [`READER`] record, the reading
    /// process's own, so the agent can tell whether those ids are the ones its /proc shows.
    pub tgid: u32,
    /// The inode of its network namespace (`ls -l /proc/PID/ns/net`); 0 in the [`READER`]
    /// record.
    pub netns: u32,
    /// Its cgroup v2 id (the cgroup directory's inode), 0 if unknown; [`READER`] marks the
    /// reader's record.
    pub cgroup_id: u64,
}

/// `cgroup_id` of the first record of a dump: the reader's own process id, not a task.
pub const READER: u64 = u64::MAX;

const _: () = assert!(size_of::<TaskRecord>() == 16);
const _: () = assert!(size_of::<TaskOffsets>() == 24);

crate::impl_pod!(TaskRecord);
