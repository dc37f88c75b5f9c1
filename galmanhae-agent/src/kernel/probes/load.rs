//! Loading the object: what the kernel's BTF and tracefs say (offsets, formats, drop reason
//! names), the object loaded with them, then every tracing hook attached in turn.

use std::{collections::BTreeMap, os::fd::OwnedFd, path::Path};

use aya::{Ebpf, EbpfLoader};
use galmanhae_common::{
    drop::{DROP_MAP_CAPACITY, DROP_OVERFLOW_CAPACITY},
    offsets::{ABSENT, KernelOffsets},
    retransmit::{FLOW_MAP_CAPACITY, OVERFLOW_MAP_CAPACITY},
    stall::TIME_LOST_CAPACITY,
};

use super::{
    Probes, casts,
    conntrack::{CONNTRACK_CONFIRM, attach_conntrack_confirm},
    hook::Hook,
    time_lost::{CONG_STATE_SET, INET_SOCK_SET_STATE, attach_time_lost, time_lost_off},
    tracepoints::{Formats, KFREE_SKB, RETRANSMIT_SKB, RETRANSMIT_SYNACK, attach_all},
};
use crate::kernel::{
    btf::{self, AttachKind, KernelBtf},
    drop_reasons::DropReasons,
    kallsyms::Symbolizer,
    leak_watch::LeakWatch,
    prereq::Environment,
    settle::Settler,
    task_iter::{TASK_ITER_TYPE, TaskIter},
    tracefs::Format,
};

/// The object `build.rs` produced from `galmanhae-ebpf`.
pub(super) static PROGRAMS: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/galmanhae"));

#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
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

/// What the kernel's BTF and tracefs say, read before the object is loaded.
struct KernelFacts {
    offsets: KernelOffsets,
    /// The tracepoints' formats: which of them this kernel has, with which fields.
    formats: Formats,
    drop_reasons: DropReasons,
    /// Offset of `recursion_misses` in `struct bpf_prog_info`, when the kernel has it.
    recursion_misses_offset: Option<u32>,
    /// Whether `tcp_sock` has `total_rto_time` (6.7+).
    rto_counters: bool,
    /// The BTF id of the `bpf_rdonly_cast` kfunc (6.2+), see `casts.rs`.
    rdonly_cast: Option<u32>,
    /// The kernel's BTF as far as aya reads it, to load the BTF programs.
    attach_btf: Result<aya::Btf, String>,
    notes: Vec<String>,
}

impl Probes {
    pub(crate) fn load(env: &Environment, options: &LoadOptions) -> Result<Self, LoadError> {
        raise_memlock_limit();
        let KernelFacts {
            offsets,
            formats,
            drop_reasons,
            recursion_misses_offset,
            rto_counters,
            rdonly_cast,
            attach_btf,
            mut notes,
        } = read_kernel(env)?;
        let (mut ebpf, inlined) =
            load_object(&offsets, options.flow_capacity, rdonly_cast, &mut notes)?;
        let kernel = (attach_btf, rto_counters);
        let (mut hooks, iterators) =
            attach_hooks(&mut ebpf, formats, &drop_reasons, options, kernel);
        say_how_sockets_are_cast(&mut hooks, inlined);
        let stats = options
            .bpf_stats
            .then(|| enable_stats(&mut notes))
            .flatten();
        if offsets.structs.sock_cgroup == ABSENT {
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
            tasks: iterators.tasks,
            recoveries: iterators.recoveries,
        })
    }
}

/// The retransmit hook's detail says whether its socket casts are calls: the reason a
/// kernel before 6.2 pays more per retransmit.
fn say_how_sockets_are_cast(hooks: &mut [Hook], inlined: bool) {
    let Some(hook) = hooks
        .iter_mut()
        .find(|h| h.kind == "tp_btf" && h.name.ends_with(RETRANSMIT_SKB.name))
    else {
        return;
    };
    hook.detail.push_str(if inlined {
        "; socket casts inlined (bpf_rdonly_cast)"
    } else {
        "; socket casts are helper calls (no bpf_rdonly_cast before 6.2)"
    });
}

/// The offsets the programs read with, the tracefs formats and what else the kernel's BTF
/// says; the BTF is parsed once here and freed on return.
fn read_kernel(env: &Environment) -> Result<KernelFacts, LoadError> {
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
    let rto_counters = offsets.structs.tcp_rto_stamp != ABSENT;
    let rdonly_cast = btf
        .function_id("bpf_rdonly_cast")
        .filter(|_| offsets.structs.tcp_sock_type != 0);
    if rdonly_cast.is_none() {
        // The programs take a type id as "cast through the kfunc": none without it.
        let structs = &mut offsets.structs;
        (
            structs.iphdr_type,
            structs.udphdr_type,
            structs.nf_conn_type,
        ) = (0, 0, 0);
    }
    let attach_points = btf.attach_points(&attach_point_names());
    // Unmapped before aya parses its part.
    drop(btf);
    let attach_btf =
        aya::Btf::parse(&attach_points, aya::Endianness::default()).map_err(|e| e.to_string());
    drop(attach_points);
    if let Ok(fields) = &drops {
        offsets.kfree_skb = *fields;
    }
    if let Ok(fields) = &skb {
        offsets.retransmit_skb = *fields;
    }
    if let Ok(fields) = &synack {
        offsets.retransmit_synack = *fields;
    }
    Ok(KernelFacts {
        offsets,
        formats: (skb, synack, drops),
        drop_reasons,
        recursion_misses_offset,
        rto_counters,
        rdonly_cast,
        attach_btf,
        notes,
    })
}

/// The types aya looks the attach points of the BTF programs up by: `btf_trace_NAME` for
/// each `tp_btf` program, `bpf_iter_task`, the fentry program's function. A program missing
/// here finds no attach point and its hook is reported unavailable.
fn attach_point_names() -> Vec<(String, AttachKind)> {
    let tracepoints = [
        &RETRANSMIT_SKB,
        &KFREE_SKB,
        &CONG_STATE_SET,
        &INET_SOCK_SET_STATE,
    ];
    let mut names: Vec<(String, AttachKind)> = tracepoints
        .into_iter()
        .map(|spec| (format!("btf_trace_{}", spec.name), AttachKind::Typedef))
        .collect();
    names.push((format!("bpf_iter_{TASK_ITER_TYPE}"), AttachKind::Func));
    names.push((CONNTRACK_CONFIRM.to_owned(), AttachKind::Func));
    names
}

/// The object with the offsets as its global and the maps sized; its socket casts inlined
/// where the kernel has `bpf_rdonly_cast` (and whether they are).
fn load_object(
    offsets: &KernelOffsets,
    flow_capacity: u32,
    rdonly_cast: Option<u32>,
    notes: &mut Vec<String>,
) -> Result<(Ebpf, bool), LoadError> {
    log::debug!("kernel offsets: {offsets:?}");
    let patched = rdonly_cast.map(|kfunc| casts::rdonly_casts(PROGRAMS, kfunc));
    let object: &[u8] = match &patched {
        Some(Ok((object, count))) => {
            log::debug!("{count} casts through bpf_rdonly_cast");
            object.bytes()
        }
        Some(Err(e)) => {
            notes.push(format!("socket casts stay helper calls: {e}"));
            PROGRAMS
        }
        None => {
            log::info!(
                "no bpf_rdonly_cast kfunc (Linux 6.2+): socket casts are helper calls, a few \
                 tens of ns more per retransmit"
            );
            PROGRAMS
        }
    };
    let inlined = matches!(patched, Some(Ok(_)));
    let ebpf = loader_without_kernel_btf()
        // The programs carry no CO-RE relocations (offsets come as a global): aya needs no
        // kernel BTF to load them.
        .btf(None)
        .override_global("KERNEL_OFFSETS", offsets, true)
        .map_max_entries("RETRANSMIT_SOCKETS", flow_capacity)
        .map_max_entries("RETRANSMIT_FLOWS", flow_capacity)
        .map_max_entries("RETRANSMIT_OVERFLOW", OVERFLOW_MAP_CAPACITY)
        .map_max_entries("DROPS", DROP_MAP_CAPACITY)
        .map_max_entries("DROP_OVERFLOW", DROP_OVERFLOW_CAPACITY)
        .map_max_entries("TIME_LOST", TIME_LOST_CAPACITY)
        .load(object)?;
    Ok((ebpf, inlined))
}

/// An `EbpfLoader` that has not parsed the kernel's BTF. aya 0.14's `EbpfLoader::new()`
/// parses all of it (~20 MB of peak RSS, two thirds of the agent's) even when `.btf(None)`
/// discards it next (aya#1172, fixed after 0.14): with no file descriptor to spare, its read
/// of the file fails and the parse is skipped. Only while this is the process's only thread:
/// another could be opening a file meanwhile.
fn loader_without_kernel_btf<'a>() -> EbpfLoader<'a> {
    let only_thread = std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1);
    let mut saved = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscall with a valid pointer.
    if !only_thread || unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut saved) } != 0 {
        return EbpfLoader::new();
    }
    let no_files = libc::rlimit {
        rlim_cur: 0,
        rlim_max: saved.rlim_max,
    };
    // SAFETY: as above; lowering the soft limit needs no privilege.
    let lowered = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const no_files) } == 0;
    let loader = EbpfLoader::new();
    // SAFETY: as above; a soft limit up to the unchanged hard one is always allowed back.
    if lowered && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const saved) } != 0 {
        log::warn!(
            "setrlimit(RLIMIT_NOFILE) back to {}: {}",
            saved.rlim_cur,
            std::io::Error::last_os_error()
        );
    }
    loader
}

/// The iterators the agent runs each pass.
struct Iterators {
    tasks: Option<TaskIter>,
    recoveries: Option<Settler>,
}

/// Attaches every tracing hook (the tc one comes later, see [`Probes::watch_uplinks`]) and
/// the task iterator, each with its status.
fn attach_hooks(
    ebpf: &mut Ebpf,
    formats: Formats,
    drop_reasons: &DropReasons,
    options: &LoadOptions,
    (aya_btf, rto_counters): (Result<aya::Btf, String>, bool),
) -> (Vec<Hook>, Iterators) {
    let classic = "--classic-tracepoints asked for the classic ones".to_owned();
    let tp_btf = if options.classic_tracepoints {
        Err(&classic)
    } else {
        aya_btf.as_ref()
    };
    let mut hooks = attach_all(ebpf, tp_btf, formats, drop_reasons);
    hooks.push(attach_conntrack_confirm(ebpf, tp_btf));
    let recoveries = if options.classic_tracepoints {
        hooks.extend(time_lost_off());
        None
    } else {
        let (time_lost, recoveries) = attach_time_lost(ebpf, tp_btf, rto_counters);
        hooks.extend(time_lost);
        recoveries
    };
    let (tasks, task_hook) = TaskIter::attach(ebpf, aya_btf.as_ref());
    hooks.push(task_hook);
    (hooks, Iterators { tasks, recoveries })
}

/// Holds `BPF_ENABLE_STATS` on; a note when the kernel refuses (it needs `CAP_SYS_ADMIN`).
fn enable_stats(notes: &mut Vec<String>) -> Option<OwnedFd> {
    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => Some(fd),
        Err(e) => {
            notes.push(format!("kernel run-time statistics unavailable: {e}"));
            None
        }
    }
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
