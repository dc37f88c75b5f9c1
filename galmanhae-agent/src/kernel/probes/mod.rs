//! Loading and attaching the programs, with a status per hook: a hook the kernel lacks is
//! reported as unavailable and the others still run.
//!
//! [`load`](Probes::load) (`load.rs`) reads what the kernel has and loads the object; the hooks
//! attach from `tracepoints.rs` (retransmits, drops: `tp_btf`, else classic), `conntrack.rs`
//! (the optional kprobe/fentry) and `time_lost.rs` (`tp_btf` only); `hook.rs` is what became
//! of each. The NAT-leak watch (tc) attaches later, when the uplinks are known.

mod casts;
mod conntrack;
mod hook;
mod load;
mod time_lost;
mod tracepoints;

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, OwnedFd},
};

use aya::{Ebpf, programs::SchedClassifier};
use ipnet::IpNet;

pub(in crate::kernel) use self::hook::error_chain;
pub(crate) use self::{
    hook::{Hook, HookStatus, RunStats},
    load::LoadOptions,
};
use super::{
    drop_reasons::DropReasons,
    kallsyms::Symbolizer,
    leak_watch::{LeakWatch, NAT_LEAK_OTHER, NAT_LEAK_PROGRAM, Uplink},
    prog_info,
    settle::Settler,
    task_iter::TaskIter,
};

/// The loaded programs and their maps. Dropping it detaches and unloads everything.
pub(crate) struct Probes {
    pub(crate) ebpf: Ebpf,
    pub(crate) hooks: Vec<Hook>,
    /// Notes on reduced precision (an optional struct member the kernel lacks, ...).
    pub(crate) notes: Vec<String>,
    pub(crate) flow_capacity: u32,
    /// Names of the drop reasons the drop program counts.
    pub(crate) drop_reasons: DropReasons,
    /// Names of the kernel functions that drop packets.
    pub(crate) symbols: Symbolizer,
    /// The uplinks the NAT-leak program watches, by ifindex (names kept for the report,
    /// also when an interface vanishes).
    pub(crate) uplinks: BTreeMap<u32, String>,
    /// Offset of `recursion_misses` in `struct bpf_prog_info`, when the kernel has it.
    recursion_misses_offset: Option<u32>,
    /// Holds `BPF_ENABLE_STATS` on while loaded (needs `CAP_SYS_ADMIN`).
    stats: Option<OwnedFd>,
    /// The NAT-leak watch's subnets and links.
    leak_watch: LeakWatch,
    /// Every process's namespace and cgroup from the kernel (`None`: from /proc instead).
    pub(crate) tasks: Option<TaskIter>,
    /// Ends the RTO recoveries the kernel ended, before `TIME_LOST` is read (6.7+).
    pub(crate) recoveries: Option<Settler>,
}

impl Probes {
    /// Makes the NAT-leak watch follow the host's translated subnets and uplinks (TCX:
    /// detached when the agent exits, whatever happens): its hook is added or replaced;
    /// whether anything changed.
    pub(crate) fn watch_uplinks(&mut self, subnets: &[IpNet], uplinks: &[Uplink]) -> bool {
        let Some(hook) = self.leak_watch.update(&mut self.ebpf, subnets, uplinks) else {
            return false;
        };
        self.uplinks = self.leak_watch.uplinks();
        match self
            .hooks
            .iter_mut()
            .find(|h| h.program == NAT_LEAK_PROGRAM)
        {
            Some(old) => {
                log::info!("NAT-leak watch: {}", hook.detail);
                *old = hook;
            }
            None => self.hooks.push(hook),
        }
        true
    }

    /// Whether the kernel measures the programs' run time: our `BPF_ENABLE_STATS` handle, or
    /// `kernel.bpf_stats_enabled=1` (the systemd unit sets it; the agent may lack the right).
    pub(crate) fn run_time_measured(&self) -> bool {
        self.stats.is_some()
            || std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
                .is_ok_and(|v| v.trim() == "1")
    }

    /// How many hooks are attached.
    pub(crate) fn attached(&self) -> usize {
        self.hooks
            .iter()
            .filter(|h| h.status == HookStatus::Attached)
            .count()
    }

    /// Kernel-side run count, total run time (zero without stats) and skipped runs of a hook's
    /// program, cumulative; `None` for a hook that is not attached.
    pub(crate) fn run_stats(&self, hook: &Hook) -> Option<RunStats> {
        if hook.status != HookStatus::Attached {
            return None;
        }
        let program = self.ebpf.program(hook.program)?;
        let info = program.info().ok()?;
        let missed = self.recursion_misses_offset.and_then(|offset| {
            let fd = program.fd().ok()?;
            prog_info::recursion_misses(fd.as_fd(), offset).ok()
        });
        Some(RunStats {
            runs: info.run_count(),
            run_time: info.run_time(),
            missed,
        })
    }
}

impl Drop for Probes {
    /// Detaches the NAT-leak watch first, then removes the clsact qdiscs it added.
    fn drop(&mut self) {
        if self.leak_watch.added_clsact.is_empty() {
            return;
        }
        for name in [NAT_LEAK_PROGRAM, NAT_LEAK_OTHER] {
            if let Some(program) = self.ebpf.program_mut(name) {
                let classifier: Result<&mut SchedClassifier, _> = program.try_into();
                if let Ok(classifier) = classifier {
                    let _ = classifier.unload();
                }
            }
        }
        for (ifindex, name) in &self.leak_watch.added_clsact {
            match super::clsact::remove_if_unused(*ifindex) {
                Ok(()) => log::info!("{name}: removed the clsact qdisc the agent added"),
                Err(e) => log::warn!("{name}: left the clsact qdisc the agent added: {e}"),
            }
        }
    }
}
