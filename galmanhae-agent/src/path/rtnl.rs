//! rtnetlink requests over the agent's shared netlink transport ([`crate::netlink`]), with
//! `NLMSG_ERROR` and a failed `NLMSG_DONE` turned into [`PathError`]s.

use std::{fs::File, io, os::fd::AsRawFd as _};

use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;

use super::PathError;
pub(super) use crate::netlink::Answer;
use crate::netlink::{self, Failure};

/// How often a dump is read again when the kernel flags it inconsistent (`NLM_F_DUMP_INTR`:
/// links or routes changed while it was being read).
const DUMP_ATTEMPTS: usize = 3;

/// An rtnetlink socket. It belongs to the network namespace of the thread that opened it,
/// whatever that thread does afterwards.
pub(super) struct Rtnl {
    socket: netlink::Socket,
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub(super) fn open() -> Result<Self, PathError> {
        Ok(Self {
            socket: netlink::Socket::open(NETLINK_ROUTE).map_err(PathError::Socket)?,
        })
    }

    /// A socket in the network namespace of `pid`, for what rtnetlink cannot ask across
    /// namespaces (routes). A short-lived thread joins the namespace: `setns(CLONE_NEWNET)`
    /// moves only the calling thread, so the rest of the agent stays where it is.
    pub(super) fn open_in_netns_of(pid: u32) -> Result<Self, PathError> {
        let netns =
            File::open(format!("/proc/{pid}/ns/net")).map_err(|e| PathError::netns(pid, e))?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: a valid namespace file descriptor; setns has no other precondition.
                    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(PathError::netns(pid, io::Error::last_os_error()));
                    }
                    Self::open()
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(PathError::netns(
                        pid,
                        io::Error::other("the thread that joined the namespace panicked"),
                    ))
                })
        })
    }

    /// Sends `message` and returns the kernel's answer; `request` names it in errors.
    pub(super) fn request(
        &mut self,
        message: &RouteNetlinkMessage,
        answer: Answer,
        request: &'static str,
    ) -> Result<Vec<RouteNetlinkMessage>, PathError> {
        for _ in 0..DUMP_ATTEMPTS {
            let replies = self
                .socket
                .request(message.clone(), answer)
                .map_err(|failure| from_failure(request, failure))?;
            if replies.undecodable > 0 {
                log::warn!(
                    "{request}: skipped {} replies that do not decode",
                    replies.undecodable
                );
            }
            if !replies.interrupted {
                return Ok(replies.messages);
            }
        }
        Err(PathError::Interrupted { request })
    }
}

/// What a transport failure means for a path lookup.
fn from_failure(request: &'static str, failure: Failure) -> PathError {
    match failure {
        Failure::Io(source) => PathError::Io { request, source },
        Failure::Refused(errno) => PathError::refused(request, -errno),
        Failure::Malformed(source) => PathError::Malformed { request, source },
        Failure::Overrun => PathError::Io {
            request,
            source: io::Error::from_raw_os_error(libc::ENOBUFS),
        },
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{
        DoneMessage, ErrorMessage, NLM_F_DUMP_INTR, NLM_F_MULTIPART, NetlinkHeader, NetlinkMessage,
        NetlinkPayload,
    };
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};

    use super::*;

    type Replies = netlink::Replies<RouteNetlinkMessage>;

    /// One datagram of the answer to request `seq`, errors as the path module sees them.
    fn read(
        replies: &mut Replies,
        datagram: &[u8],
        seq: u32,
        request: &'static str,
    ) -> Result<(), PathError> {
        replies
            .read(datagram, seq)
            .map_err(|failure| from_failure(request, failure))
    }

    fn link(index: u32) -> RouteNetlinkMessage {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message
            .attributes
            .push(LinkAttribute::IfName(format!("gmh-test{index}")));
        RouteNetlinkMessage::NewLink(message)
    }

    fn encode(payload: NetlinkPayload<RouteNetlinkMessage>, seq: u32, flags: u16) -> Vec<u8> {
        let mut message = NetlinkMessage::new(NetlinkHeader::default(), payload);
        message.header.sequence_number = seq;
        message.header.flags = flags;
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    fn done(code: i32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut done = DoneMessage::default();
        done.code = code;
        NetlinkPayload::Done(done)
    }

    fn error(code: i32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(code);
        NetlinkPayload::Error(error)
    }

    #[test]
    fn a_dump_spans_datagrams_until_done() {
        let mut replies = Replies::default();
        let first = [
            encode(NetlinkPayload::InnerMessage(link(1)), 7, NLM_F_MULTIPART),
            encode(NetlinkPayload::InnerMessage(link(2)), 7, NLM_F_MULTIPART),
        ]
        .concat();
        read(&mut replies, &first, 7, "test").unwrap();
        assert!(!replies.complete);
        let second = [
            encode(NetlinkPayload::InnerMessage(link(3)), 7, NLM_F_MULTIPART),
            encode(done(0), 7, NLM_F_MULTIPART),
        ]
        .concat();
        read(&mut replies, &second, 7, "test").unwrap();
        assert!(replies.complete);
        assert!(!replies.interrupted);
        assert_eq!(replies.messages, vec![link(1), link(2), link(3)]);
    }

    #[test]
    fn other_requests_are_skipped() {
        let mut replies = Replies::default();
        let datagram = [
            encode(NetlinkPayload::InnerMessage(link(1)), 6, NLM_F_MULTIPART),
            encode(error(-libc::ENODEV), 6, 0),
            encode(NetlinkPayload::InnerMessage(link(2)), 7, 0),
            encode(error(0), 7, 0),
        ]
        .concat();
        read(&mut replies, &datagram, 7, "test").unwrap();
        assert!(replies.complete);
        assert_eq!(replies.messages, vec![link(2)]);
    }

    #[test]
    fn nlmsg_error_becomes_the_errno() {
        let mut replies = Replies::default();
        let err = read(
            &mut replies,
            &encode(error(-libc::ENODEV), 1, 0),
            1,
            "RTM_GETLINK",
        )
        .unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENODEV));
        let err = read(
            &mut replies,
            &encode(error(-libc::EPERM), 1, 0),
            1,
            "RTM_NEWNSID",
        )
        .unwrap_err();
        assert!(matches!(err, PathError::Permission { .. }), "{err:?}");
        assert!(err.to_string().contains("CAP_NET_ADMIN"), "{err}");
    }

    #[test]
    fn a_failed_dump_ends_with_an_error_in_done() {
        let mut replies = Replies::default();
        let err = read(
            &mut replies,
            &encode(done(-libc::EINVAL), 3, NLM_F_MULTIPART),
            3,
            "test",
        )
        .unwrap_err();
        assert_eq!(err.errno(), Some(libc::EINVAL));
    }

    #[test]
    fn an_inconsistent_dump_is_flagged() {
        let mut replies = Replies::default();
        let datagram = [
            encode(
                NetlinkPayload::InnerMessage(link(1)),
                2,
                NLM_F_MULTIPART | NLM_F_DUMP_INTR,
            ),
            encode(done(0), 2, NLM_F_MULTIPART | NLM_F_DUMP_INTR),
        ]
        .concat();
        read(&mut replies, &datagram, 2, "test").unwrap();
        assert!(replies.complete && replies.interrupted);
    }

    #[test]
    fn a_truncated_datagram_is_an_error_not_a_panic() {
        let bytes = encode(NetlinkPayload::InnerMessage(link(1)), 1, 0);
        let mut replies = Replies::default();
        let err = read(&mut replies, &bytes[..bytes.len() - 4], 1, "test").unwrap_err();
        assert!(matches!(err, PathError::Malformed { .. }), "{err:?}");
        assert!(read(&mut replies, &bytes[..8], 1, "test").is_err());
    }
}
