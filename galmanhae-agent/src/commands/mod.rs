//! One file per subcommand.

pub mod diagnose;

use std::process::ExitCode;

use crate::kernel::prereq::PrereqError;

/// No retransmit hook could be attached: there is nothing to watch.
#[derive(Debug, thiserror::Error)]
#[error("no retransmit hook could be attached:\n{0}")]
pub struct NoHooks(pub String);

/// Exit codes beyond 0 (success) and 2 (usage, from clap): 77 for missing privileges, 69 for
/// a missing kernel feature (`sysexits.h` `EX_NOPERM`, `EX_UNAVAILABLE`), 1 for anything else.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
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
