//! Loading and attaching the programs, with a status per hook: a hook the kernel lacks is
//! reported as unavailable and the others still run.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{BtfTracePoint, FEntry, KProbe, ProgramError, SchedClassifier, TracePoint},
};
use galmanhae_common::{
    drop::{DROP_MAP_CAPACITY, DROP_OVERFLOW_CAPACITY},
    offsets::{ABSENT, KernelOffsets, KfreeSkbFields, RetransmitSkbFields, RetransmitSynackFields},
    retransmit::{FLOW_MAP_CAPACITY, OVERFLOW_MAP_CAPACITY},
    stall::TIME_LOST_CAPACITY,
};
use ipnet::IpNet;

use super::drop_reasons::DropReasons;
use super::{
    btf::{self, KernelBtf},
    kallsyms::Symbolizer,
    leak_watch::{LeakWatch, NAT_LEAK_PROGRAM},
    prereq::Environment,
    prog_info,
    task_iter::TaskIter,
    tracefs::{Format, FormatError},
};

/// The object `build.rs` produced from `galmanhae-ebpf`.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/galmanhae"));

#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
}

/// One kernel hook and what became of it.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Hook {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) status: HookStatus,
    /// Whether a core count is missing without it (the retransmit, SYN-ACK and drop hooks,
    /// the NAT-leak watch where there is something to watch); an optional hook only adds
    /// precision or a field, and its absence is no fault of the host.
    pub(crate) required: bool,
    pub(crate) detail: String,
    /// The program's name in the object (and in `bpftool prog`).
    #[serde(skip)]
    pub(crate) program: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HookStatus {
    Attached,
    /// The kernel does not have it (or lacks a field it needs).
    Unavailable,
    /// It exists but loading or attaching failed.
    Failed,
    /// Not used here: turned off by configuration, or nothing for it to watch.
    Off,
}

impl HookStatus {
    /// The value of the `status` label.
    #[must_use]
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::Attached => "attached",
            Self::Unavailable => "unavailable",
            Self::Failed => "failed",
            Self::Off => "off",
        }
    }
}

/// What the kernel says of a program's runs, cumulative since it was loaded.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RunStats {
    pub(crate) runs: u64,
    pub(crate) run_time: std::time::Duration,
    /// Runs skipped because another tracing program was running on the CPU (`None` before
    /// Linux 5.12): events lost to every map.
    pub(crate) missed: Option<u64>,
}

impl RunStats {
    #[must_use]
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        Self {
            runs: self.runs.saturating_sub(earlier.runs),
            run_time: self.run_time.saturating_sub(earlier.run_time),
            missed: self
                .missed
                .zip(earlier.missed)
                .map(|(now, then)| now.saturating_sub(then)),
        }
    }
}

/// Options for [`Probes::load`].
#[derive(Clone, Debug)]
pub(crate) struct LoadOptions {
    /// Capacity of the per-flow map.
    pub(crate) flow_capacity: u32,
    /// Enable kernel run-time statistics (`BPF_ENABLE_STATS`) while loaded.
    pub(crate) bpf_stats: bool,
    /// Never the BTF tracepoint programs.
    pub(crate) classic_tracepoints: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            flow_capacity: FLOW_MAP_CAPACITY,
            bpf_stats: true,
            classic_tracepoints: false,
        }
    }
}

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
}

/// A tracepoint program of the object.
struct TracepointSpec {
    program: &'static str,
    category: &'static str,
    name: &'static str,
}

const RETRANSMIT_SKB: TracepointSpec = TracepointSpec {
    program: "tcp_retransmit_skb",
    category: "tcp",
    name: "tcp_retransmit_skb",
};
/// The BTF tracepoint program on `tcp_retransmit_skb` (the kernel keeps 15 characters of a
/// name: the three retransmit programs must differ in those).
const RETRANSMIT_SKB_BTF: &str = "tcp_rtx_skb_btf";
const KFREE_SKB_BTF: &str = "kfree_skb_btf";
const KFREE_SKB: TracepointSpec = TracepointSpec {
    program: "kfree_skb",
    category: "skb",
    name: "kfree_skb",
};
const RETRANSMIT_SYNACK: TracepointSpec = TracepointSpec {
    program: "tcp_retransmit_synack",
    category: "tcp",
    name: "tcp_retransmit_synack",
};

/// The time-lost programs: BTF tracepoints only (their records carry no socket state to read).
const CONG_STATE_SET: TracepointSpec = TracepointSpec {
    program: "tcp_cong_state_set",
    category: "tcp",
    name: "tcp_cong_state_set",
};
const INET_SOCK_SET_STATE: TracepointSpec = TracepointSpec {
    program: "inet_sock_set_state",
    category: "sock",
    name: "inet_sock_set_state",
};

impl Probes {
    pub(crate) fn load(env: &Environment, options: &LoadOptions) -> Result<Self, LoadError> {
        raise_memlock_limit();
        let btf = KernelBtf::load(Path::new(btf::VMLINUX_BTF))?;
        let (structs, mut notes) = btf::struct_offsets(&btf)?;

        let mut offsets = KernelOffsets::UNRESOLVED;
        offsets.structs = structs;
        offsets.sock = btf::sock_offsets(&btf)?;
        offsets.task = btf::task_offsets(&btf).unwrap_or_else(|e| {
            notes.push(format!(
                "{e}: the task iterator is off, namespaces come from /proc/PID/ns/net"
            ));
            offsets.task
        });
        let skb = Format::read(&env.tracefs, RETRANSMIT_SKB.category, RETRANSMIT_SKB.name)
            .and_then(|f| f.retransmit_skb());
        let synack = Format::read(
            &env.tracefs,
            RETRANSMIT_SYNACK.category,
            RETRANSMIT_SYNACK.name,
        )
        .and_then(|f| f.retransmit_synack());
        let drop_format = Format::read(&env.tracefs, KFREE_SKB.category, KFREE_SKB.name);
        let drop_reasons = DropReasons::resolve(&btf, drop_format.as_ref().ok());
        let drops = drop_format.and_then(|f| f.kfree_skb());
        let recursion_misses_offset = btf.offset_of("bpf_prog_info", "recursion_misses").ok();
        let rto_counters = btf.offset_of("tcp_sock", "total_rto_time").is_ok();
        // Done with our parse before aya makes its own below.
        drop(btf);
        if let Ok(fields) = &drops {
            offsets.kfree_skb = *fields;
        }
        if let Ok(fields) = &skb {
            offsets.retransmit_skb = *fields;
        }
        if let Ok(fields) = &synack {
            offsets.retransmit_synack = *fields;
        }

        log::debug!("kernel offsets: {offsets:?}");
        let mut ebpf = EbpfLoader::new()
            // The programs carry no CO-RE relocations (offsets come as a global), so aya need
            // not parse the kernel's BTF for them (~30 MB at start-up).
            .btf(None)
            .override_global("KERNEL_OFFSETS", &offsets, true)
            .map_max_entries("RETRANSMIT_SOCKETS", options.flow_capacity)
            .map_max_entries("RETRANSMIT_FLOWS", options.flow_capacity)
            .map_max_entries("RETRANSMIT_OVERFLOW", OVERFLOW_MAP_CAPACITY)
            .map_max_entries("DROPS", DROP_MAP_CAPACITY)
            .map_max_entries("DROP_OVERFLOW", DROP_OVERFLOW_CAPACITY)
            .map_max_entries("TIME_LOST", TIME_LOST_CAPACITY)
            .load(PROGRAMS)?;

        // aya's own parse of the kernel's BTF (it needs it to load BTF-typed programs); about
        // 0.1 s and a few MB, freed on return.
        let aya_btf = aya::Btf::from_sys_fs().map_err(|e| e.to_string());
        let classic = "--classic-tracepoints asked for the classic ones".to_owned();
        let tp_btf = if options.classic_tracepoints {
            Err(&classic)
        } else {
            aya_btf.as_ref()
        };
        let mut hooks = attach_all(&mut ebpf, tp_btf, (skb, synack, drops), &drop_reasons);
        hooks.extend(if options.classic_tracepoints {
            time_lost_off()
        } else {
            attach_time_lost(&mut ebpf, tp_btf, rto_counters)
        });
        let (tasks, task_hook) = TaskIter::attach(&mut ebpf, aya_btf.as_ref());
        hooks.push(task_hook);

        let stats = if options.bpf_stats {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    notes.push(format!("kernel run-time statistics unavailable: {e}"));
                    None
                }
            }
        } else {
            None
        };
        if structs.sock_cgroup == ABSENT {
            notes.push(
                "no sk_cgrp_data (CONFIG_SOCK_CGROUP_DATA off): host-network sockets are \
                 attributed through /proc only"
                    .to_owned(),
            );
        }
        notes.dedup();
        Ok(Self {
            ebpf,
            hooks,
            notes,
            flow_capacity: options.flow_capacity,
            drop_reasons,
            symbols: Symbolizer::default(),
            uplinks: BTreeMap::new(),
            recursion_misses_offset,
            stats,
            leak_watch: LeakWatch::default(),
            tasks,
        })
    }

    /// Makes the NAT-leak watch follow the host's translated subnets and uplinks (TCX:
    /// detached when the agent exits, whatever happens): its hook is added or replaced;
    /// whether anything changed.
    pub(crate) fn watch_uplinks(&mut self, subnets: &[IpNet], uplinks: &[(u32, String)]) -> bool {
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
        if let Some(program) = self.ebpf.program_mut(NAT_LEAK_PROGRAM) {
            let classifier: Result<&mut SchedClassifier, _> = program.try_into();
            if let Ok(classifier) = classifier {
                let _ = classifier.unload();
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

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    spec: &TracepointSpec,
    format: Result<String, FormatError>,
) -> Hook {
    let mut hook = Hook {
        name: format!("{}:{}", spec.category, spec.name),
        kind: "tracepoint",
        status: HookStatus::Attached,
        required: true,
        detail: String::new(),
        program: spec.program,
    };
    match format {
        Err(e) => {
            hook.status = HookStatus::Unavailable;
            hook.detail = e.to_string();
        }
        Ok(detail) => match attach(ebpf, spec) {
            Ok(()) => hook.detail = detail,
            Err(e) => {
                hook.status = HookStatus::Failed;
                hook.detail = error_chain(&e);
            }
        },
    }
    hook
}

/// Attaches every tracing hook (the tc one comes later, see [`Probes::watch_uplinks`]), each
/// with its status; the tracefs formats say which of them this kernel has.
fn attach_all(
    ebpf: &mut Ebpf,
    aya_btf: Result<&aya::Btf, &String>,
    (skb, synack, drops): (
        Result<RetransmitSkbFields, FormatError>,
        Result<RetransmitSynackFields, FormatError>,
        Result<KfreeSkbFields, FormatError>,
    ),
    drop_reasons: &DropReasons,
) -> Vec<Hook> {
    let skb_detail = match &skb {
        Ok(f) if f.err == ABSENT => {
            "no `err` field (kernel < 6.17): only sent retransmits fire".to_owned()
        }
        Ok(_) => "`err` field present: failed attempts are counted apart".to_owned(),
        Err(_) => String::new(),
    };
    vec![
        attach_preferring_btf(
            ebpf,
            aya_btf,
            &RETRANSMIT_SKB,
            RETRANSMIT_SKB_BTF,
            skb.map(|_| skb_detail),
        ),
        attach_tracepoint(
            ebpf,
            &RETRANSMIT_SYNACK,
            synack.map(|_| "listener SYN-ACK retransmits".to_owned()),
        ),
        attach_preferring_btf(
            ebpf,
            aya_btf,
            &KFREE_SKB,
            KFREE_SKB_BTF,
            drops.map(|f| {
                if f.reason == ABSENT {
                    "no `reason` field (kernel < 5.17): drops are counted without a reason"
                        .to_owned()
                } else {
                    format!("reason names from {}", drop_reasons.source)
                }
            }),
        ),
        attach_conntrack_confirm(ebpf, aya_btf),
    ]
}

/// A tracepoint hook through its BTF program (`tp_btf`: plain loads instead of a helper call
/// per read, several times cheaper per event) when the kernel takes it, else through the
/// classic tracepoint program, with why in the hook's detail. The tracefs format must exist
/// either way: it says which arguments this kernel has.
fn attach_preferring_btf(
    ebpf: &mut Ebpf,
    btf: Result<&aya::Btf, &String>,
    spec: &TracepointSpec,
    btf_program: &'static str,
    format: Result<String, FormatError>,
) -> Hook {
    let Ok(detail) = format else {
        return attach_tracepoint(ebpf, spec, format);
    };
    match load_btf_tracepoint(ebpf, btf, btf_program, spec.name) {
        Ok(()) => Hook {
            name: format!("{}:{}", spec.category, spec.name),
            kind: "tp_btf",
            status: HookStatus::Attached,
            required: true,
            detail,
            program: btf_program,
        },
        Err(e) => {
            let mut hook = attach_tracepoint(ebpf, spec, Ok(detail));
            let _ = write!(
                hook.detail,
                "; as a classic tracepoint (tp_btf not used: {})",
                error_chain(e.as_ref())
            );
            hook
        }
    }
}

/// Loads `program` as a BTF tracepoint on the kernel function `name` and attaches it.
fn load_btf_tracepoint(
    ebpf: &mut Ebpf,
    btf: Result<&aya::Btf, &String>,
    program: &str,
    name: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let btf = btf.map_err(|e| format!("kernel BTF for aya: {e}"))?;
    let program: &mut BtfTracePoint = ebpf
        .program_mut(program)
        .ok_or("no tp_btf program in the object")?
        .try_into()?;
    program.load(name, btf)?;
    program.attach()?;
    Ok(())
}

/// What a refused BTF tracepoint says of the kernel: one without the tracepoint (or without
/// BTF for aya) lacks the hook; one whose verifier or attach refused the program has it, and
/// the agent is at fault, which an operator should hear of.
fn refusal_status(error: &(dyn std::error::Error + 'static)) -> HookStatus {
    match error.downcast_ref::<ProgramError>() {
        Some(ProgramError::Btf(_)) | None => HookStatus::Unavailable,
        Some(_) => HookStatus::Failed,
    }
}

/// The two time-lost hooks, each attached or unavailable with why: without them every other
/// count stands, only `time_lost` is missing.
fn attach_time_lost(
    ebpf: &mut Ebpf,
    btf: Result<&aya::Btf, &String>,
    rto_counters: bool,
) -> Vec<Hook> {
    let clock = if rto_counters {
        "the kernel's own total_rto_time (6.7+) agrees in the tests"
    } else {
        "no total_rto_time in this kernel (before 6.7): event timestamps only"
    };
    [
        (
            &CONG_STATE_SET,
            format!(
                "time lost: RTO recoveries timed from entering to leaving TCP_CA_Loss; {clock}"
            ),
        ),
        (
            &INET_SOCK_SET_STATE,
            "time lost: ends timed-out handshakes (established or closed) and recoveries at close"
                .to_owned(),
        ),
    ]
    .into_iter()
    .map(|(spec, detail)| {
        let attached = load_btf_tracepoint(ebpf, btf, spec.program, spec.name);
        let (status, detail) = match attached {
            Ok(()) => (HookStatus::Attached, detail),
            Err(e) => (
                refusal_status(e.as_ref()),
                format!(
                    "time lost is not measured: tp_btf refused: {}",
                    error_chain(e.as_ref())
                ),
            ),
        };
        time_lost_hook(spec, status, detail)
    })
    .collect()
}

/// The time-lost hooks as `--classic-tracepoints` leaves them: they exist only as `tp_btf`.
fn time_lost_off() -> Vec<Hook> {
    [&CONG_STATE_SET, &INET_SOCK_SET_STATE]
        .into_iter()
        .map(|spec| {
            let detail = "time lost is not measured: --classic-tracepoints (or \
                          kernel.classic_tracepoints) turns the tp_btf programs off"
                .to_owned();
            time_lost_hook(spec, HookStatus::Off, detail)
        })
        .collect()
}

fn time_lost_hook(spec: &TracepointSpec, status: HookStatus, detail: String) -> Hook {
    Hook {
        name: format!("{}:{}", spec.category, spec.name),
        kind: "tp_btf",
        status,
        required: false,
        detail,
        program: spec.program,
    }
}

/// The function the optional conntrack hook watches.
const CONNTRACK_CONFIRM: &str = "__nf_conntrack_confirm";

/// The optional conntrack hook: a kprobe, else an fentry program, else unavailable with both
/// reasons.
fn attach_conntrack_confirm(ebpf: &mut Ebpf, btf: Result<&aya::Btf, &String>) -> Hook {
    let mut hook = Hook {
        name: CONNTRACK_CONFIRM.to_owned(),
        kind: "kprobe",
        status: HookStatus::Attached,
        required: false,
        detail: "optional: counts new conntrack entries".to_owned(),
        program: "conntrack_confirm_kprobe",
    };
    let kprobe = (|| -> Result<(), Box<dyn std::error::Error>> {
        let program: &mut KProbe = ebpf
            .program_mut("conntrack_confirm_kprobe")
            .ok_or("no kprobe program in the object")?
            .try_into()?;
        program.load()?;
        program.attach(CONNTRACK_CONFIRM, 0)?;
        Ok(())
    })();
    let Err(kprobe_error) = kprobe else {
        return hook;
    };
    let fentry = (|| -> Result<(), Box<dyn std::error::Error>> {
        let btf = btf.map_err(|e| format!("kernel BTF for aya: {e}"))?;
        let program: &mut FEntry = ebpf
            .program_mut("conntrack_confirm_fentry")
            .ok_or("no fentry program in the object")?
            .try_into()?;
        program.load(CONNTRACK_CONFIRM, btf)?;
        program.attach()?;
        Ok(())
    })();
    match fentry {
        Ok(()) => {
            hook.kind = "fentry";
            hook.program = "conntrack_confirm_fentry";
        }
        Err(fentry_error) => {
            hook.kind = "kprobe|fentry";
            hook.status = HookStatus::Unavailable;
            hook.detail = format!(
                "optional, not needed (conntrack comes from ctnetlink/procfs): kprobe: {}; \
                 fentry: {}",
                error_chain(kprobe_error.as_ref()),
                error_chain(fentry_error.as_ref())
            );
        }
    }
    hook
}

fn attach(ebpf: &mut Ebpf, spec: &TracepointSpec) -> Result<(), ProgramError> {
    let program: &mut TracePoint = ebpf
        .program_mut(spec.program)
        .ok_or_else(|| ProgramError::UnexpectedProgramType)?
        .try_into()?;
    program.load()?;
    program.attach(spec.category, spec.name)?;
    Ok(())
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Kernels before 5.11 charge BPF maps to `RLIMIT_MEMLOCK`; later ones use memcg and ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer; failure only matters on old kernels.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) };
    if rc != 0 {
        log::debug!(
            "setrlimit(RLIMIT_MEMLOCK): {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_program_has_failed_a_missing_tracepoint_is_unavailable() {
        assert_eq!(refusal_status(&ProgramError::NotLoaded), HookStatus::Failed);
        let missing = ProgramError::Btf(aya::BtfError::UnknownBtfTypeName {
            type_name: "btf_trace_tcp_cong_state_set".to_owned(),
        });
        assert_eq!(refusal_status(&missing), HookStatus::Unavailable);
        let no_btf: Box<dyn std::error::Error> = "kernel BTF for aya: absent".into();
        assert_eq!(refusal_status(no_btf.as_ref()), HookStatus::Unavailable);
    }
}
