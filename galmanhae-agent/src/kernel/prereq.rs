//! What galmanhae needs from the host, checked before anything is loaded: privileges, BTF,
//! tracefs and bpffs (mounted here when absent, as on a fresh Debian VM).

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use caps::{CapSet, Capability};

use super::{btf::VMLINUX_BTF, tracefs};

/// Where bpffs is normally mounted.
pub(crate) const BPFFS: &str = "/sys/fs/bpf";

#[derive(Debug, thiserror::Error)]
pub(crate) enum PrereqError {
    #[error(
        "missing privileges: {missing}. galmanhae loads eBPF tracepoint programs, which needs \
         root or CAP_BPF + CAP_PERFMON (plus CAP_DAC_READ_SEARCH to read tracefs and other \
         users' /proc files, CAP_NET_ADMIN for conntrack and the tc uplink watch). Run it \
         with sudo, or grant them all at once (setcap replaces the file's set): \
         setcap cap_bpf,cap_perfmon,cap_dac_read_search,cap_net_admin+ep \
         $(command -v galmanhae)"
    )]
    Privileges { missing: String },
    #[error(
        "kernel BTF is missing ({VMLINUX_BTF}): galmanhae resolves struct offsets from it and \
         needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
    #[error(
        "tracefs is not mounted at {path} and could not be mounted ({reason}); mount it with: \
         mount -t tracefs nodev {path}"
    )]
    NoTracefs { path: String, reason: String },
}

/// The outcome of one check, for the report.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) status: CheckStatus,
    pub(crate) detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CheckStatus {
    Ok,
    /// It was missing and galmanhae fixed it (mounted a filesystem).
    Fixed,
    /// Missing; galmanhae runs with less.
    Degraded,
}

/// Paths the rest of the agent uses, once the checks passed.
#[derive(Clone, Debug)]
pub(crate) struct Environment {
    pub(crate) tracefs: PathBuf,
    pub(crate) checks: Vec<Check>,
}

/// Checks privileges, BTF, tracefs and bpffs; mounts tracefs and bpffs where needed.
pub(crate) fn prepare(explicit_tracefs: Option<&Path>) -> Result<Environment, PrereqError> {
    let mut checks = Vec::new();
    check_privileges(&mut checks)?;

    if !Path::new(VMLINUX_BTF).is_file() {
        return Err(PrereqError::NoBtf);
    }
    checks.push(Check {
        name: "btf",
        status: CheckStatus::Ok,
        detail: VMLINUX_BTF.to_owned(),
    });

    let tracefs = tracefs::locate(explicit_tracefs);
    if tracefs.join("events").is_dir() {
        checks.push(Check {
            name: "tracefs",
            status: CheckStatus::Ok,
            detail: tracefs.display().to_string(),
        });
    } else if explicit_tracefs.is_some() {
        return Err(PrereqError::NoTracefs {
            path: tracefs.display().to_string(),
            reason: "the given --tracefs has no events/ directory".to_owned(),
        });
    } else {
        mount(&tracefs, "tracefs", "nodev").map_err(|reason| PrereqError::NoTracefs {
            path: tracefs.display().to_string(),
            reason,
        })?;
        checks.push(Check {
            name: "tracefs",
            status: CheckStatus::Fixed,
            detail: format!("mounted at {}", tracefs.display()),
        });
    }

    checks.push(bpffs_check());
    Ok(Environment { tracefs, checks })
}

fn check_privileges(checks: &mut Vec<Check>) -> Result<(), PrereqError> {
    let missing = lacking(&[Capability::CAP_BPF, Capability::CAP_PERFMON]);
    // Before 5.8 there is no CAP_BPF/CAP_PERFMON and CAP_SYS_ADMIN covers both.
    if !missing.is_empty() && !lacking(&[Capability::CAP_SYS_ADMIN]).is_empty() {
        return Err(PrereqError::Privileges {
            missing: missing.join(", "),
        });
    }
    // CAP_SYS_PTRACE matters only without the task iterator: said after attach.
    let weak = lacking(&[Capability::CAP_DAC_READ_SEARCH]);
    checks.push(if weak.is_empty() {
        Check {
            name: "privileges",
            status: CheckStatus::Ok,
            detail: "CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH".to_owned(),
        }
    } else {
        Check {
            name: "privileges",
            status: CheckStatus::Degraded,
            detail: format!(
                "without {}: tracefs and other users' /proc files cannot be read",
                weak.join(", ")
            ),
        }
    });
    Ok(())
}

/// The capabilities of `wanted` that this process does not have in its effective set.
pub(crate) fn lacking(wanted: &[Capability]) -> Vec<String> {
    wanted
        .iter()
        .filter(|cap| !caps::has_cap(None, CapSet::Effective, **cap).unwrap_or(false))
        .map(ToString::to_string)
        .collect()
}

fn bpffs_check() -> Check {
    let path = Path::new(BPFFS);
    if super::mounts::mount_point("bpf").is_some() {
        return Check {
            name: "bpffs",
            status: CheckStatus::Ok,
            detail: BPFFS.to_owned(),
        };
    }
    match mount(path, "bpf", "bpf") {
        Ok(()) => Check {
            name: "bpffs",
            status: CheckStatus::Fixed,
            detail: format!("mounted at {BPFFS}"),
        },
        // Nothing is pinned yet, so this only matters to other tools.
        Err(reason) => Check {
            name: "bpffs",
            status: CheckStatus::Degraded,
            detail: format!("not mounted and could not mount it: {reason}"),
        },
    }
}

fn mount(target: &Path, fstype: &str, source: &str) -> Result<(), String> {
    let c = |s: &str| CString::new(s).map_err(|e| e.to_string());
    let target_c = c(&target.display().to_string())?;
    let (fstype_c, source_c) = (c(fstype)?, c(source)?);
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}
