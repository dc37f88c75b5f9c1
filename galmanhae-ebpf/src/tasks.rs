//! `iter/task`: one [`TaskRecord`] per process (thread-group leader) with its network namespace
//! and cgroup, read from `struct task_struct`. The agent reads the dump each pass instead of
//! `stat`ing `/proc/PID/ns/net`, which the kernel allows only with ptrace access to the process.
//! <https://elixir.bootlin.com/linux/v6.18/source/kernel/bpf/task_iter.c>

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, generated::bpf_seq_write};
use galmanhae_common::task::{READER, TaskRecord};

use crate::kernel::{Memory as _, Probe, offset};

/// `struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; }`, and
/// `struct bpf_iter_meta { struct seq_file *seq; u64 session_id; u64 seq_num; }`: the
/// iterator's context, a fixed layout the verifier checks against BTF.
/// <https://elixir.bootlin.com/linux/v6.18/source/include/linux/bpf.h> (`struct bpf_iter_meta`)
#[repr(C)]
pub struct IterTaskContext {
    meta: *const IterMeta,
    task: u64,
}

#[repr(C)]
struct IterMeta {
    seq: *mut aya_ebpf::bindings::seq_file,
    session_id: u64,
    seq_num: u64,
}

#[inline(always)]
pub fn on_task(ctx: *const IterTaskContext) {
    // SAFETY: the verifier types both context loads (meta, task) and the `meta` members from
    // BTF; volatile keeps each a single load of the member it names.
    let (meta, task) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*ctx).meta),
            core::ptr::read_volatile(&raw const (*ctx).task),
        )
    };
    if meta.is_null() {
        return;
    }
    // SAFETY: as above; `meta` is a non-null BTF pointer.
    let (seq, seq_num) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*meta).seq),
            core::ptr::read_volatile(&raw const (*meta).seq_num),
        )
    };
    if seq_num == 0 {
        let reader = TaskRecord {
            tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
            netns: 0,
            cgroup_id: READER,
        };
        write(seq, &reader);
    }
    if task == 0 {
        return; // the call after the last task
    }
    if let Some(record) = record(task) {
        write(seq, &record);
    }
}

/// A thread-group leader's record; `None` for other threads and exiting tasks.
#[inline(always)]
fn record(task: u64) -> Option<TaskRecord> {
    let pid = Probe::at::<u32>(task, offset!(task.pid))?;
    let tgid = Probe::at::<u32>(task, offset!(task.tgid))?;
    if pid != tgid {
        return None;
    }
    let nsproxy = Probe::at::<u64>(task, offset!(task.nsproxy))?;
    let net = Probe::at::<u64>(nsproxy, offset!(task.nsproxy_net_ns))?;
    let netns = Probe::at::<u32>(net, offset!(structs.net_inum))?;
    let cgroup_id = Probe::at::<u64>(task, offset!(task.cgroups))
        .and_then(|css_set| Probe::at::<u64>(css_set, offset!(task.css_set_dfl_cgrp)))
        .and_then(|cgroup| Probe::at::<u64>(cgroup, offset!(structs.cgroup_kn)))
        .and_then(|kn| Probe::at::<u64>(kn, offset!(structs.kernfs_node_id)))
        .unwrap_or(0);
    (netns != 0).then_some(TaskRecord {
        tgid,
        netns,
        cgroup_id,
    })
}

/// 16 bytes (asserted in `galmanhae-common`).
#[expect(clippy::cast_possible_truncation, reason = "a 16-byte record")]
const RECORD_LEN: u32 = size_of::<TaskRecord>() as u32;

#[inline(always)]
fn write(seq: *mut aya_ebpf::bindings::seq_file, record: &TaskRecord) {
    // SAFETY: `seq` is the iterator's own seq_file; the helper copies `len` bytes from the
    // record on this program's stack. A full buffer (-E2BIG) makes the kernel run this task
    // again in the next read, so nothing is lost by ignoring the result.
    unsafe {
        bpf_seq_write(seq, core::ptr::from_ref(record).cast(), RECORD_LEN);
    }
}
