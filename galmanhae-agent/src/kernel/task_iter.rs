//! The `iter/task` program (Linux 5.8+): every process's network namespace and cgroup in one
//! read, from the kernel's own task list. `/proc/PID/ns/net` answers only with ptrace access
//! to the process (`CAP_SYS_PTRACE` for other users' and more privileged processes); the
//! iterator's output needs none, so with it the agent gives `CAP_SYS_PTRACE` back after attach.
//!
//! The link is kept (`iter.rs`); each pass reads a new dump.

use std::{collections::BTreeMap, io, os::fd::AsFd as _};

use aya::{Ebpf, programs::Iter};
use galmanhae_common::task::{READER, TaskRecord};

use super::{
    iter::IterLink,
    probes::{Hook, HookStatus, error_chain},
};

/// The program's name in the object.
pub(crate) const TASK_ITER_PROGRAM: &str = "task_namespaces";
/// What the program iterates (`bpf_iter_task`).
pub(crate) const TASK_ITER_TYPE: &str = "task";

/// The attached iterator.
#[derive(Debug)]
pub(crate) struct TaskIter {
    link: IterLink,
}

/// One dump: each process's namespace inode and cgroup id, by pid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tasks {
    pub(crate) netns: BTreeMap<i32, u32>,
    pub(crate) cgroup: BTreeMap<i32, u64>,
}

/// Why a dump cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DumpError {
    #[error("reading the task iterator: {0}")]
    Io(#[from] io::Error),
    #[error(
        "the task iterator's process ids are not this agent's (it runs in a pid namespace of \
         its own: it saw itself as {seen}, /proc says {own}); run it with the host's pid \
         namespace (hostPID)"
    )]
    OtherPidNamespace { seen: u32, own: u32 },
    #[error("the task iterator's output has no reader record (a torn read)")]
    NoReader,
}

impl TaskIter {
    /// Loads and attaches the program, as a hook with its status (optional: without it the
    /// agent reads `/proc/PID/ns/net` and keeps `CAP_SYS_PTRACE`).
    pub(crate) fn attach(ebpf: &mut Ebpf, btf: Result<&aya::Btf, &String>) -> (Option<Self>, Hook) {
        let mut hook = Hook {
            name: "bpf_iter_task".to_owned(),
            kind: "iter",
            status: HookStatus::Attached,
            required: false,
            detail: "processes' network namespaces and cgroups without CAP_SYS_PTRACE".to_owned(),
            program: TASK_ITER_PROGRAM,
        };
        match Self::load(ebpf, btf) {
            Ok(iter) => (Some(iter), hook),
            Err(e) => {
                hook.status = HookStatus::Unavailable;
                hook.detail = format!(
                    "optional: namespaces come from /proc/PID/ns/net instead, so CAP_SYS_PTRACE \
                     is kept: {}",
                    error_chain(e.as_ref())
                );
                (None, hook)
            }
        }
    }

    fn load(
        ebpf: &mut Ebpf,
        btf: Result<&aya::Btf, &String>,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let btf = btf.map_err(|e| format!("kernel BTF for aya: {e}"))?;
        let program: &mut Iter = ebpf
            .program_mut(TASK_ITER_PROGRAM)
            .ok_or("no iter/task program in the object")?
            .try_into()?;
        program.load(TASK_ITER_TYPE, btf)?;
        let link = IterLink::create(program.fd()?.as_fd())?;
        let iter = Self { link };
        // One dump now: a program the kernel runs but that reads nothing useful is refused here.
        let tasks = iter.read()?;
        if !tasks.netns.contains_key(&own_pid()) {
            return Err("the task iterator's dump does not list this process".into());
        }
        Ok(iter)
    }

    /// Every process's namespace and cgroup, now.
    pub(crate) fn read(&self) -> Result<Tasks, DumpError> {
        let mut bytes = Vec::with_capacity(64 * 1024);
        self.link.read(&mut bytes)?;
        parse(&bytes, own_pid())
    }
}

/// The records of a dump; the first must be the reader's own, with the pid /proc shows it.
fn parse(bytes: &[u8], own: i32) -> Result<Tasks, DumpError> {
    let mut records = bytes
        .chunks_exact(size_of::<TaskRecord>())
        .map(|chunk| TaskRecord {
            tgid: u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
            netns: u32::from_ne_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
            cgroup_id: u64::from_ne_bytes([
                chunk[8], chunk[9], chunk[10], chunk[11], chunk[12], chunk[13], chunk[14],
                chunk[15],
            ]),
        });
    let reader = records
        .next()
        .filter(|r| r.cgroup_id == READER)
        .ok_or(DumpError::NoReader)?;
    if i32::try_from(reader.tgid).ok() != Some(own) {
        return Err(DumpError::OtherPidNamespace {
            seen: reader.tgid,
            own: own.unsigned_abs(),
        });
    }
    let mut tasks = Tasks::default();
    for record in records {
        let Ok(pid) = i32::try_from(record.tgid) else {
            continue;
        };
        tasks.netns.insert(pid, record.netns);
        tasks.cgroup.insert(pid, record.cgroup_id);
    }
    Ok(tasks)
}

fn own_pid() -> i32 {
    i32::try_from(std::process::id()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(records: &[TaskRecord]) -> Vec<u8> {
        records
            .iter()
            .flat_map(|r| {
                let mut b = r.tgid.to_ne_bytes().to_vec();
                b.extend(r.netns.to_ne_bytes());
                b.extend(r.cgroup_id.to_ne_bytes());
                b
            })
            .collect()
    }

    fn record(tgid: u32, netns: u32, cgroup_id: u64) -> TaskRecord {
        TaskRecord {
            tgid,
            netns,
            cgroup_id,
        }
    }

    #[test]
    fn a_dump_maps_each_process_to_its_namespace_and_cgroup() {
        let dump = bytes(&[
            record(42, 0, READER),
            record(1, 4_026_531_840, 1),
            record(42, 4_026_531_840, 7),
            record(900, 4_026_532_999, 12_345),
        ]);
        let tasks = parse(&dump, 42).expect("a good dump");
        assert_eq!(tasks.netns.len(), 3);
        assert_eq!(tasks.netns[&900], 4_026_532_999);
        assert_eq!(tasks.cgroup[&900], 12_345);
    }

    #[test]
    fn ids_of_another_pid_namespace_are_refused_by_what_they_are() {
        let dump = bytes(&[record(4_711, 0, READER), record(1, 1, 1)]);
        let error = parse(&dump, 7).expect_err("not our pids");
        assert!(matches!(
            error,
            DumpError::OtherPidNamespace {
                seen: 4_711,
                own: 7
            }
        ));
        assert!(error.to_string().contains("hostPID"), "{error}");
        assert!(matches!(parse(&[], 7), Err(DumpError::NoReader)));
        let no_header = bytes(&[record(7, 1, 1)]);
        assert!(matches!(parse(&no_header, 7), Err(DumpError::NoReader)));
    }
}
