//! Namespace ids (`RTM_GETNSID`, `RTM_NEWNSID`): the number the calling thread's namespace
//! gives another one, which rtnetlink needs to read that namespace's interfaces.

use netlink_packet_route::{
    RouteNetlinkMessage,
    nsid::{NsidAttribute, NsidMessage},
};

use super::{
    PathError,
    rtnl::{Answer, Rtnl},
};

pub(super) fn nsid(rtnl: &mut Rtnl, pid: u32) -> Result<Option<i32>, PathError> {
    let mut request = NsidMessage::default();
    request.attributes.push(NsidAttribute::Pid(pid));
    let replies = rtnl
        .request(
            &RouteNetlinkMessage::GetNsId(request),
            Answer::Acked,
            "RTM_GETNSID",
        )
        .map_err(|error| no_process(error, pid))?;
    let nsid = replies
        .iter()
        .find_map(|reply| match reply {
            RouteNetlinkMessage::NewNsId(message) => {
                message
                    .attributes
                    .iter()
                    .find_map(|attribute| match attribute {
                        NsidAttribute::Id(nsid) => Some(*nsid),
                        _ => None,
                    })
            }
            _ => None,
        })
        .ok_or(PathError::NoAnswer {
            request: "RTM_GETNSID",
            missing: "NETNSA_NSID",
        })?;
    // NETNSA_NSID_NOT_ASSIGNED is -1.
    Ok((nsid >= 0).then_some(nsid))
}

pub(super) fn assign(rtnl: &mut Rtnl, pid: u32) -> Result<i32, PathError> {
    let mut request = NsidMessage::default();
    // NETNSA_NSID -1: the kernel picks the id.
    request.attributes = vec![NsidAttribute::Pid(pid), NsidAttribute::Id(-1)];
    match rtnl.request(
        &RouteNetlinkMessage::NewNsId(request),
        Answer::Acked,
        "RTM_NEWNSID",
    ) {
        // EEXIST: someone (a veth, `ip netns set`) assigned one meanwhile.
        Err(error) if error.errno() != Some(libc::EEXIST) => return Err(no_process(error, pid)),
        _ => {}
    }
    nsid(rtnl, pid)?.ok_or(PathError::NoAnswer {
        request: "RTM_NEWNSID",
        missing: "an id for the namespace after assigning one",
    })
}

/// `get_net_ns_by_pid()` answers ESRCH for a pid that is gone.
fn no_process(error: PathError, pid: u32) -> PathError {
    match error.errno() {
        Some(libc::ESRCH) => PathError::NoProcess { pid },
        _ => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_process_is_named() {
        assert!(matches!(
            no_process(PathError::refused("RTM_GETNSID", -libc::ESRCH), 7),
            PathError::NoProcess { pid: 7 }
        ));
    }
}
