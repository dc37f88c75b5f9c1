//! The optional conntrack hook: a kprobe, else an fentry program, else unavailable with both
//! reasons. Nothing depends on it (conntrack comes from ctnetlink and procfs).

use aya::{
    Ebpf,
    programs::{FEntry, KProbe},
};

use super::hook::{Hook, HookStatus, error_chain};

/// The function the optional conntrack hook watches.
pub(super) const CONNTRACK_CONFIRM: &str = "__nf_conntrack_confirm";

/// Attaches the hook as a kprobe, else as fentry; its status says which, or why neither.
pub(super) fn attach_conntrack_confirm(ebpf: &mut Ebpf, btf: Result<&aya::Btf, &String>) -> Hook {
    let mut hook = Hook {
        name: CONNTRACK_CONFIRM.to_owned(),
        kind: "kprobe",
        status: HookStatus::Attached,
        required: false,
        detail: "optional: counts new conntrack entries".to_owned(),
        program: "conntrack_confirm_kprobe",
    };
    let Err(kprobe_error) = attach_kprobe(ebpf) else {
        return hook;
    };
    match attach_fentry(ebpf, btf) {
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

fn attach_kprobe(ebpf: &mut Ebpf) -> Result<(), Box<dyn std::error::Error>> {
    let program: &mut KProbe = ebpf
        .program_mut("conntrack_confirm_kprobe")
        .ok_or("no kprobe program in the object")?
        .try_into()?;
    program.load()?;
    program.attach(CONNTRACK_CONFIRM, 0)?;
    Ok(())
}

fn attach_fentry(
    ebpf: &mut Ebpf,
    btf: Result<&aya::Btf, &String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let btf = btf.map_err(|e| format!("kernel BTF for aya: {e}"))?;
    let program: &mut FEntry = ebpf
        .program_mut("conntrack_confirm_fentry")
        .ok_or("no fentry program in the object")?
        .try_into()?;
    program.load(CONNTRACK_CONFIRM, btf)?;
    program.attach()?;
    Ok(())
}
