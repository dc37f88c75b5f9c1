//! The tracepoint hooks: each through its BTF program (`tp_btf`) where the kernel takes it,
//! else through the classic tracepoint program, with a status and why.

use std::fmt::Write as _;

use aya::{
    Ebpf,
    programs::{BtfTracePoint, ProgramError, TracePoint},
};
use galmanhae_common::offsets::{
    ABSENT, KfreeSkbFields, RetransmitSkbFields, RetransmitSynackFields,
};

use super::hook::{Hook, HookStatus, error_chain};
use crate::kernel::{drop_reasons::DropReasons, tracefs::FormatError};

/// A tracepoint program of the object.
pub(super) struct TracepointSpec {
    pub(super) program: &'static str,
    pub(super) category: &'static str,
    pub(super) name: &'static str,
}

pub(super) const RETRANSMIT_SKB: TracepointSpec = TracepointSpec {
    program: "tcp_retransmit_skb",
    category: "tcp",
    name: "tcp_retransmit_skb",
};
/// The BTF tracepoint program on `tcp_retransmit_skb` (the kernel keeps 15 characters of a
/// name: the three retransmit programs must differ in those).
const RETRANSMIT_SKB_BTF: &str = "tcp_rtx_skb_btf";
const KFREE_SKB_BTF: &str = "kfree_skb_btf";
pub(super) const KFREE_SKB: TracepointSpec = TracepointSpec {
    program: "kfree_skb",
    category: "skb",
    name: "kfree_skb",
};
pub(super) const RETRANSMIT_SYNACK: TracepointSpec = TracepointSpec {
    program: "tcp_retransmit_synack",
    category: "tcp",
    name: "tcp_retransmit_synack",
};

/// The tracefs formats of the three tracepoints, as this kernel has them.
pub(super) type Formats = (
    Result<RetransmitSkbFields, FormatError>,
    Result<RetransmitSynackFields, FormatError>,
    Result<KfreeSkbFields, FormatError>,
);

/// Attaches the tracepoint hooks (retransmits, SYN-ACK retransmits, drops), each with its
/// status; the tracefs formats say which of them this kernel has.
pub(super) fn attach_all(
    ebpf: &mut Ebpf,
    aya_btf: Result<&aya::Btf, &String>,
    (skb, synack, drops): Formats,
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
    ]
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
pub(super) fn load_btf_tracepoint(
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

fn attach(ebpf: &mut Ebpf, spec: &TracepointSpec) -> Result<(), ProgramError> {
    let program: &mut TracePoint = ebpf
        .program_mut(spec.program)
        .ok_or_else(|| ProgramError::UnexpectedProgramType)?
        .try_into()?;
    program.load()?;
    program.attach(spec.category, spec.name)?;
    Ok(())
}
