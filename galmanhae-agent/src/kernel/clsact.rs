//! The clsact qdiscs the NAT-leak watch adds where the kernel has no TCX (before 6.6): a
//! netlink-attached classifier needs one, and a qdisc outlives the process that added it. On
//! exit the agent removes what it added, but only once no filter is left on it: a filter that
//! another tool attached after us keeps its qdisc.

use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{TcAttribute, TcHandle, TcHeader, TcMessage},
};
use netlink_sys::protocols::NETLINK_ROUTE;

use crate::netlink::{self, Answer, Failure};

/// Why the qdisc of an interface was left in place.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClsactError {
    #[error("rtnetlink: {0:?}")]
    Netlink(Failure),
    #[error("{0} filters of another tool remain on it")]
    InUse(usize),
}

/// Removes the clsact qdisc of `ifindex` when neither direction has a filter left.
pub(crate) fn remove_if_unused(ifindex: u32) -> Result<(), ClsactError> {
    let mut socket =
        netlink::Socket::open(NETLINK_ROUTE).map_err(|e| ClsactError::Netlink(Failure::Io(e)))?;
    let index = i32::try_from(ifindex).unwrap_or(i32::MAX);
    let mut filters = 0;
    for direction in [TcHandle::MIN_INGRESS, TcHandle::MIN_EGRESS] {
        let mut header = TcHeader {
            index,
            ..TcHeader::default()
        };
        header.parent = TcHandle {
            major: TcHandle::CLSACT.major,
            minor: direction,
        };
        let request = RouteNetlinkMessage::GetTrafficFilter(TcMessage::from_parts(header, vec![]));
        let replies = socket
            .request(request, Answer::Dump)
            .map_err(ClsactError::Netlink)?;
        filters += replies.messages.len() + replies.undecodable;
    }
    if filters > 0 {
        return Err(ClsactError::InUse(filters));
    }
    let header = TcHeader {
        index,
        handle: TcHandle {
            major: TcHandle::CLSACT.major,
            minor: 0,
        },
        parent: TcHandle::CLSACT,
        ..TcHeader::default()
    };
    let request = RouteNetlinkMessage::DelQueueDiscipline(TcMessage::from_parts(
        header,
        vec![TcAttribute::Kind("clsact".to_owned())],
    ));
    socket
        .request(request, Answer::Acked)
        .map_err(ClsactError::Netlink)?;
    Ok(())
}
