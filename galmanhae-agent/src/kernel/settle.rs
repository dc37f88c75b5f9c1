//! `time_lost_settle` (6.7+): where the kernel keeps its own RTO counters, recoveries are
//! timed from them and `tcp_cong_state_set` (every congestion-state change) is not attached.
//! A recovery then ends where the kernel ends it, which no event shows: before each reading
//! the agent runs this program (`BPF_PROG_TEST_RUN` of a raw tracepoint program that is never
//! attached) on the sockets it last saw in a recovery, and it ends those the kernel ended
//! (`galmanhae-ebpf/src/stall.rs`). The work follows the sockets in trouble: twelve per run.

use std::{io, os::fd::AsFd as _};

use aya::{
    Ebpf,
    programs::{ProgramFd, RawTracePoint},
};
use galmanhae_common::stall::SETTLE_BATCH;

use super::{
    iter::{bpf_call, fd_u32},
    probes::{Hook, HookStatus, error_chain},
};

/// The program's name in the object.
pub(crate) const SETTLE_PROGRAM: &str = "time_lost_settle";

/// `enum bpf_cmd` (stable ABI).
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
}

/// The loaded program.
#[derive(Debug)]
pub(crate) struct Settler {
    program: ProgramFd,
}

impl Settler {
    /// Loads the program, as a hook with its status.
    pub(crate) fn load(ebpf: &mut Ebpf) -> (Option<Self>, Hook) {
        let mut hook = Hook {
            name: SETTLE_PROGRAM.to_owned(),
            kind: "run",
            status: HookStatus::Attached,
            required: false,
            detail: "time lost: ends RTO recoveries where the kernel ended them (rto_stamp, \
                     total_rto_time), before each reading"
                .to_owned(),
            program: SETTLE_PROGRAM,
        };
        match Self::try_load(ebpf) {
            Ok(settler) => (Some(settler), hook),
            Err(e) => {
                hook.status = HookStatus::Failed;
                hook.detail = format!(
                    "time lost: a recovery that ended counts as running until the socket's next \
                     timeout or close: {}",
                    error_chain(e.as_ref())
                );
                (None, hook)
            }
        }
    }

    fn try_load(ebpf: &mut Ebpf) -> Result<Self, Box<dyn std::error::Error>> {
        let program: &mut RawTracePoint = ebpf
            .program_mut(SETTLE_PROGRAM)
            .ok_or("no time_lost_settle program in the object")?
            .try_into()?;
        program.load()?;
        let settler = Self {
            program: program.fd()?.try_clone()?,
        };
        // One run on no socket now: a kernel that cannot run it says so here, not at the first
        // reading.
        settler.run(&[0; SETTLE_BATCH])?;
        Ok(settler)
    }

    /// Ends the recoveries of these sockets (`TIME_LOST` keys) that the kernel ended.
    pub(crate) fn settle(&self, cookies: &[u64]) -> io::Result<()> {
        for batch in cookies.chunks(SETTLE_BATCH) {
            let mut args = [0u64; SETTLE_BATCH];
            args[..batch.len()].copy_from_slice(batch);
            self.run(&args)?;
        }
        Ok(())
    }

    fn run(&self, args: &[u64; SETTLE_BATCH]) -> io::Result<()> {
        let attr = TestRunAttr {
            prog_fd: fd_u32(self.program.as_fd())?,
            ctx_size_in: u32::try_from(size_of_val(args)).unwrap_or(0),
            ctx_in: args.as_ptr() as u64,
            ..TestRunAttr::default()
        };
        bpf_call(BPF_PROG_TEST_RUN, &attr).map(drop)
    }
}
