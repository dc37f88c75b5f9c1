//! What can go wrong reading a path over rtnetlink, and what to do about it.

use std::{io, net::IpAddr};

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error(
        "cannot open an rtnetlink socket ({0}): interfaces and routes are read over \
         NETLINK_ROUTE, which every Linux kernel has; is this Linux?"
    )]
    Socket(#[source] io::Error),
    #[error("netlink {request}: {source}")]
    Io {
        request: &'static str,
        source: io::Error,
    },
    #[error(
        "the kernel refused {request} ({source}): reading another namespace's interfaces and \
         assigning namespace ids needs CAP_NET_ADMIN; run galmanhae as root"
    )]
    Permission {
        request: &'static str,
        source: io::Error,
    },
    #[error("the kernel refused {request}: {source}")]
    Kernel {
        request: &'static str,
        source: io::Error,
    },
    #[error("netlink {request}: the kernel's answer is malformed: {source}")]
    Malformed {
        request: &'static str,
        source: netlink_packet_core::DecodeError,
    },
    #[error("netlink {request}: the answer lacks {missing}")]
    NoAnswer {
        request: &'static str,
        missing: &'static str,
    },
    #[error(
        "netlink {request}: interfaces or routes changed during each of several dumps; \
         ask again when the host is quieter"
    )]
    Interrupted { request: &'static str },
    #[error(
        "process {pid} has exited, so its network namespace cannot be looked up: pass a pid \
         that lives in the workload"
    )]
    NoProcess { pid: u32 },
    #[error(
        "no network namespace has id {nsid} (it was deleted, or the id belongs to another \
         namespace's view): look it up again with nsid_of_pid"
    )]
    NoNetns { nsid: i32 },
    #[error(
        "this kernel ignored IFLA_TARGET_NETNSID and answered with its own interfaces: reading \
         another namespace's interfaces by nsid needs Linux 4.20 or newer"
    )]
    TargetNetnsidIgnored,
    #[error("interface {ifindex} does not exist (any more): it was deleted while being read")]
    NoInterface { ifindex: u32 },
    #[error("no route to {dst} ({source}): check `ip route get {dst}`")]
    NoRoute { dst: IpAddr, source: io::Error },
    #[error(
        "cannot read or enter the network namespace of process {pid} ({source}): that needs \
         CAP_SYS_PTRACE to read it and CAP_SYS_ADMIN to enter it; run galmanhae as root"
    )]
    NetnsAccess { pid: u32, source: io::Error },
}

impl PathError {
    /// An `NLMSG_ERROR` (or failed `NLMSG_DONE`) code, negative as the kernel sends it.
    pub(super) fn refused(request: &'static str, code: i32) -> Self {
        let errno = code.saturating_abs();
        let source = io::Error::from_raw_os_error(errno);
        if errno == libc::EPERM || errno == libc::EACCES {
            Self::Permission { request, source }
        } else {
            Self::Kernel { request, source }
        }
    }

    /// Reading or entering `/proc/PID/ns/net` failed.
    pub(super) fn netns(pid: u32, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            Self::NoProcess { pid }
        } else {
            Self::NetnsAccess { pid, source }
        }
    }

    /// The errno of a refusal that has no variant of its own.
    pub(super) fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_do() {
        let err = PathError::refused("RTM_GETLINK", -libc::EINVAL);
        assert_eq!(err.errno(), Some(libc::EINVAL));
        assert!(
            PathError::NoProcess { pid: 7 }
                .to_string()
                .contains("exited")
        );
    }
}
