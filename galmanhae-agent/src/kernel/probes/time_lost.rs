//! The time-lost hooks: BTF tracepoints only (their records carry no socket state to read).
//! Without them every other count stands, only `time_lost` is missing.

use aya::{Ebpf, programs::ProgramError};

use super::{
    super::settle::Settler,
    hook::{Hook, HookStatus, error_chain},
    tracepoints::{TracepointSpec, load_btf_tracepoint},
};

pub(super) const CONG_STATE_SET: TracepointSpec = TracepointSpec {
    program: "tcp_cong_state_set",
    category: "tcp",
    name: "tcp_cong_state_set",
};
pub(super) const INET_SOCK_SET_STATE: TracepointSpec = TracepointSpec {
    program: "inet_sock_set_state",
    category: "sock",
    name: "inet_sock_set_state",
};

/// The time-lost hooks, each attached or unavailable with why, and the recovery iterator
/// where the kernel's own RTO counters (6.7+, `kernel_counters`) time recoveries: then
/// `tcp_cong_state_set`, which fires on every congestion-state change, is not attached.
pub(super) fn attach_time_lost(
    ebpf: &mut Ebpf,
    btf: Result<&aya::Btf, &String>,
    kernel_counters: bool,
) -> (Vec<Hook>, Option<Settler>) {
    let mut hooks = Vec::new();
    let mut recoveries = None;
    if kernel_counters {
        hooks.push(time_lost_hook(
            &CONG_STATE_SET,
            HookStatus::Off,
            "not needed: the kernel's own RTO counters (6.7+: total_rto, rto_stamp, \
             total_rto_time) time recoveries, read at each timeout's retransmission"
                .to_owned(),
        ));
        let (settler, hook) = Settler::load(ebpf);
        recoveries = settler;
        hooks.push(hook);
    } else {
        hooks.push(attach_one(
            ebpf,
            btf,
            &CONG_STATE_SET,
            "time lost: RTO recoveries timed from entering to leaving TCP_CA_Loss; no \
             total_rto_time in this kernel (before 6.7): event timestamps only"
                .to_owned(),
        ));
    }
    hooks.push(attach_one(
        ebpf,
        btf,
        &INET_SOCK_SET_STATE,
        "time lost: ends timed-out handshakes (established or closed) and recoveries at close; \
         completes a closing socket's retransmitted segments"
            .to_owned(),
    ));
    (hooks, recoveries)
}

fn attach_one(
    ebpf: &mut Ebpf,
    btf: Result<&aya::Btf, &String>,
    spec: &TracepointSpec,
    detail: String,
) -> Hook {
    let (status, detail) = match load_btf_tracepoint(ebpf, btf, spec.program, spec.name) {
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
}

/// The time-lost hooks as `--classic-tracepoints` leaves them: they exist only as `tp_btf`.
pub(super) fn time_lost_off() -> Vec<Hook> {
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

/// What a refused BTF tracepoint says of the kernel: one without the tracepoint (or without
/// BTF for aya) lacks the hook; one whose verifier or attach refused the program has it, and
/// the agent is at fault, which an operator should hear of.
fn refusal_status(error: &(dyn std::error::Error + 'static)) -> HookStatus {
    match error.downcast_ref::<ProgramError>() {
        Some(ProgramError::Btf(_)) | None => HookStatus::Unavailable,
        Some(_) => HookStatus::Failed,
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
