//! The rtnetlink exchange: one request on a synchronous socket, every message of its answer
//! (a dump spans many datagrams), `NLMSG_ERROR` and a failed `NLMSG_DONE` turned into errors.

use std::{fs::File, io, os::fd::AsRawFd as _};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::PathError;

/// How often a dump is read again when the kernel flags it inconsistent (`NLM_F_DUMP_INTR`:
/// links or routes changed while it was being read).
const DUMP_ATTEMPTS: usize = 3;

/// How the kernel ends its answer.
#[derive(Clone, Copy, Debug)]
pub(super) enum Answer {
    /// `NLM_F_DUMP`: every object, then `NLMSG_DONE`.
    Dump,
    /// One object or none, then the acknowledgement `NLM_F_ACK` asks for.
    Acked,
}

/// An rtnetlink socket. It belongs to the network namespace of the thread that opened it,
/// whatever that thread does afterwards.
pub(super) struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub(super) fn open() -> Result<Self, PathError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(PathError::Socket)?;
        socket.bind_auto().map_err(PathError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(PathError::Socket)?;
        Ok(Self { socket, seq: 0 })
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
            let replies = self.exchange(message.clone(), answer, request)?;
            if !replies.interrupted {
                return Ok(replies.messages);
            }
        }
        Err(PathError::Interrupted { request })
    }

    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        answer: Answer,
        request: &'static str,
    ) -> Result<Replies, PathError> {
        self.seq = self.seq.wrapping_add(1);
        let mut packet = NetlinkMessage::from(message);
        packet.header.flags = NLM_F_REQUEST
            | match answer {
                Answer::Dump => NLM_F_DUMP,
                Answer::Acked => NLM_F_ACK,
            };
        packet.header.sequence_number = self.seq;
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        let io_error = |source| PathError::Io { request, source };
        self.socket.send(&bytes, 0).map_err(io_error)?;

        let mut replies = Replies::default();
        let mut datagram = Vec::new();
        while !replies.complete {
            self.receive(&mut datagram).map_err(io_error)?;
            replies.read(&datagram, self.seq, request)?;
        }
        Ok(replies)
    }

    /// Reads one whole datagram, however large: its size is peeked first, because a dump's
    /// datagrams grow past any fixed buffer and a short read would truncate them silently.
    fn receive(&self, datagram: &mut Vec<u8>) -> io::Result<()> {
        datagram.clear();
        let (size, _) = self
            .socket
            .recv_from(datagram, libc::MSG_PEEK | libc::MSG_TRUNC)?;
        datagram.clear();
        datagram.reserve(size);
        let (read, _) = self.socket.recv_from(datagram, 0)?;
        if read > datagram.len() {
            return Err(io::Error::other(format!(
                "netlink datagram truncated: {read} bytes, {} read",
                datagram.len()
            )));
        }
        Ok(())
    }
}

/// The answer to one request, as far as it has been read.
#[derive(Debug, Default)]
struct Replies {
    messages: Vec<RouteNetlinkMessage>,
    /// `NLMSG_DONE` or the acknowledgement arrived.
    complete: bool,
    /// The kernel flagged the dump inconsistent.
    interrupted: bool,
}

impl Replies {
    /// Takes in the messages of one datagram that answer request `seq`; leftovers of an
    /// earlier request that failed half-way are skipped.
    fn read(&mut self, datagram: &[u8], seq: u32, request: &'static str) -> Result<(), PathError> {
        let mut rest = datagram;
        while !rest.is_empty() {
            let header = NetlinkBuffer::new_checked(rest)
                .map_err(|source| PathError::Malformed { request, source })?;
            let length = header.length() as usize;
            let message = &rest[..length];
            rest = &rest[length.next_multiple_of(4).min(rest.len())..];
            if header.sequence_number() != seq {
                continue;
            }
            if header.flags() & NLM_F_DUMP_INTR != 0 {
                self.interrupted = true;
            }
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(message) {
                Ok(message) => match message.payload {
                    NetlinkPayload::InnerMessage(inner) => self.messages.push(inner),
                    NetlinkPayload::Done(done) if done.code < 0 => {
                        return Err(PathError::refused(request, done.code));
                    }
                    NetlinkPayload::Error(error) if error.code.is_some() => {
                        return Err(PathError::refused(request, error.raw_code()));
                    }
                    NetlinkPayload::Done(_) | NetlinkPayload::Error(_) => self.complete = true,
                    // NLMSG_NOOP, NLMSG_OVERRUN (unused by rtnetlink): nothing to take.
                    _ => {}
                },
                // One object this netlink-packet-route cannot decode (a newer kernel's
                // attribute): the rest of the answer is still worth having.
                Err(error) => {
                    log::warn!("{request}: skipped a reply that does not decode: {error}");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{DoneMessage, ErrorMessage, NLM_F_MULTIPART, NetlinkHeader};
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};

    use super::*;

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
        replies.read(&first, 7, "test").unwrap();
        assert!(!replies.complete);
        let second = [
            encode(NetlinkPayload::InnerMessage(link(3)), 7, NLM_F_MULTIPART),
            encode(done(0), 7, NLM_F_MULTIPART),
        ]
        .concat();
        replies.read(&second, 7, "test").unwrap();
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
        replies.read(&datagram, 7, "test").unwrap();
        assert!(replies.complete);
        assert_eq!(replies.messages, vec![link(2)]);
    }

    #[test]
    fn nlmsg_error_becomes_the_errno() {
        let mut replies = Replies::default();
        let err = replies
            .read(&encode(error(-libc::ENODEV), 1, 0), 1, "RTM_GETLINK")
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENODEV));
        let err = replies
            .read(&encode(error(-libc::EPERM), 1, 0), 1, "RTM_NEWNSID")
            .unwrap_err();
        assert!(matches!(err, PathError::Permission { .. }), "{err:?}");
        assert!(err.to_string().contains("CAP_NET_ADMIN"), "{err}");
    }

    #[test]
    fn a_failed_dump_ends_with_an_error_in_done() {
        let mut replies = Replies::default();
        let err = replies
            .read(&encode(done(-libc::EINVAL), 3, NLM_F_MULTIPART), 3, "test")
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
        replies.read(&datagram, 2, "test").unwrap();
        assert!(replies.complete && replies.interrupted);
    }

    #[test]
    fn a_truncated_datagram_is_an_error_not_a_panic() {
        let bytes = encode(NetlinkPayload::InnerMessage(link(1)), 1, 0);
        let mut replies = Replies::default();
        let err = replies
            .read(&bytes[..bytes.len() - 4], 1, "test")
            .unwrap_err();
        assert!(matches!(err, PathError::Malformed { .. }), "{err:?}");
        assert!(replies.read(&bytes[..8], 1, "test").is_err());
    }
}
