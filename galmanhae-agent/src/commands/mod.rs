//! One file per subcommand.

pub(crate) mod diagnose;
pub(crate) mod entry;
pub(crate) mod run;

use std::process::ExitCode;

use anyhow::Context as _;

use crate::{
    attribute::Attributor,
    config::KernelSettings,
    kernel::{
        prereq::{self, Check, PrereqError},
        privileges,
        probes::{LoadOptions, Probes},
    },
    pipeline::{Pipeline, nat::NatSources},
};

/// The engine both commands run: programs attached, attribution ready.
pub(crate) struct Started {
    pub(crate) pipeline: Pipeline,
    /// What the prerequisite checks found (for the report).
    pub(crate) checks: Vec<Check>,
    /// Start-up notes (an uplink that could not be watched, ...).
    pub(crate) notes: Vec<String>,
    /// Whether the Docker API named the containers (`None`: not asked).
    pub(crate) docker: Option<bool>,
}

/// Checks the host, loads and attaches the programs, watches the uplinks for NAT leaks and
/// names the containers. Fails when no hook could be attached.
pub(crate) fn start(kernel: &KernelSettings) -> anyhow::Result<Started> {
    let env = prereq::prepare(kernel.tracefs.as_deref())?;
    let mut probes = Probes::load(
        &env,
        &LoadOptions {
            flow_capacity: kernel.flow_map_capacity,
            bpf_stats: true,
            classic_tracepoints: kernel.classic_tracepoints,
        },
    )
    .context("loading the eBPF programs")?;
    let mut notes = Vec::new();
    // The audit comes first: its MASQUERADE rules say which sources must not leave as is.
    let (nat, note) = NatSources::start(&mut probes);
    notes.extend(note);
    let attached = probes.attached();
    if attached == 0 {
        let reasons: Vec<String> = probes
            .hooks
            .iter()
            .map(|h| format!("  {}: {}", h.name, h.detail))
            .collect();
        return Err(NoHooks(reasons.join("\n")).into());
    }
    // Loading and attaching are done: what only they need goes.
    if probes.tasks.is_none() && !prereq::lacking(&[caps::Capability::CAP_SYS_PTRACE]).is_empty() {
        notes.push(
            "no task iterator and no CAP_SYS_PTRACE: the namespaces of other users' and more \
             privileged processes cannot be read, and their traffic is attributed to netns-INODE"
                .to_owned(),
        );
    }
    let needs = privileges::Needs {
        legacy_iptables: privileges::legacy_iptables(),
        proc_namespaces: probes.tasks.is_none(),
    };
    match privileges::drop_unused(needs) {
        Ok(dropped) => log::info!(
            "capabilities after attach: CapEff {:016x} (was {:016x})",
            dropped.after,
            dropped.before
        ),
        Err(e) => notes.push(format!("capabilities were not lowered after attach: {e}")),
    }
    let mut attributor = Attributor::new(&kernel.docker_socket);
    attributor.refresh_names();
    let docker = attributor.docker_answered();
    probes.symbols.preload();
    // What loading and attaching freed (parsed ELF, BTF lookups) leaves RSS now.
    crate::malloc::release_free();
    Ok(Started {
        pipeline: Pipeline::new(probes, attributor, nat),
        checks: env.checks,
        notes,
        docker,
    })
}

/// No retransmit hook could be attached: there is nothing to watch.
#[derive(Debug, thiserror::Error)]
#[error("no retransmit hook could be attached:\n{0}")]
pub(crate) struct NoHooks(pub(crate) String);

/// Exit codes beyond 0 (success) and 2 (usage, from clap, or a bad config file): 77 for
/// missing privileges, 69 for a missing kernel feature (`sysexits.h` `EX_NOPERM`,
/// `EX_UNAVAILABLE`), 1 for anything else.
pub(crate) fn exit_code(error: &anyhow::Error) -> ExitCode {
    for cause in error.chain() {
        if let Some(prereq) = cause.downcast_ref::<PrereqError>() {
            return match prereq {
                PrereqError::Privileges { .. } => ExitCode::from(77),
                PrereqError::NoBtf | PrereqError::NoTracefs { .. } => ExitCode::from(69),
            };
        }
        if cause.downcast_ref::<NoHooks>().is_some() {
            return ExitCode::from(69);
        }
    }
    ExitCode::FAILURE
}
