//! One ctnetlink request and its replies, over the agent's shared netlink transport
//! ([`crate::netlink`]); `netlink-packet-netfilter` encodes and decodes the messages. The
//! message types are those of `enum cntl_msg_types` in
//! <https://github.com/torvalds/linux/blob/master/include/uapi/linux/netfilter/nfnetlink_conntrack.h>.

use std::io;

use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::ConntrackMessage,
};
use netlink_sys::protocols::NETLINK_NETFILTER;

use super::ConntrackError;
use crate::netlink::{self, Answer, Failure};

/// A dump of the table (the tests only: the agent looks entries up, see `lookup.rs`).
#[cfg(test)]
pub(super) const IPCTNL_MSG_CT_GET: u8 = 1;
pub(super) const IPCTNL_MSG_CT_GET_STATS_CPU: u8 = 4;
pub(super) const IPCTNL_MSG_CT_GET_STATS: u8 = 5;

/// `NFNETLINK_V0`, the only nfnetlink version.
const NFNETLINK_V0: u8 = 0;
/// Tries of a request that overflowed the socket (ENOBUFS), the later ones with a larger buffer.
const ATTEMPTS: u32 = 3;
/// Receive buffer of the retries (the kernel caps it at `net.core.rmem_max`).
const RETRY_RCVBUF: usize = 8 * 1024 * 1024;

/// What to ask the kernel for.
#[derive(Clone, Copy, Debug)]
pub(super) struct Request {
    pub(crate) message_type: u8,
    /// Every object (`NLM_F_DUMP`, multipart until `NLMSG_DONE`), or one answer and an ack.
    pub(crate) dump: bool,
    /// For error messages: "dumping the conntrack table", ...
    pub(crate) what: &'static str,
}

/// The ctnetlink replies to one request.
#[derive(Debug, Default)]
pub(super) struct Replies {
    pub(crate) messages: Vec<ConntrackMessage>,
    /// Messages the decoder rejected: counted and skipped, one bad entry must not hide the rest.
    pub(crate) undecodable: usize,
}

impl Replies {
    /// Keeps the ctnetlink messages of an answer; another subsystem's count as undecodable.
    fn take(&mut self, answer: netlink::Replies<NetfilterMessage>) {
        self.undecodable += answer.undecodable;
        for message in answer.messages {
            match message.inner {
                NetfilterMessageInner::Conntrack(ct) => self.messages.push(ct),
                other => {
                    log::debug!("skipping a message of another subsystem: {other:?}");
                    self.undecodable += 1;
                }
            }
        }
    }
}

/// Sends `request` (IPv4 and IPv6: `AF_UNSPEC`) in the calling thread's network namespace and
/// collects the replies, starting over with a larger buffer when the socket overflowed.
pub(super) fn request(request: Request) -> Result<Replies, ConntrackError> {
    let fail = |e: io::Error| from_io(request.what, e);
    let mut attempt = 1;
    loop {
        let mut socket = netlink::Socket::open(NETLINK_NETFILTER).map_err(fail)?;
        if attempt > 1 {
            socket.set_receive_buffer(RETRY_RCVBUF).map_err(fail)?;
        }
        let answer = if request.dump {
            Answer::Dump
        } else {
            Answer::Acked
        };
        match socket.request(message(request), answer) {
            Ok(answer) => {
                let mut replies = Replies::default();
                replies.take(answer);
                return Ok(replies);
            }
            Err(Failure::Overrun) if attempt < ATTEMPTS => {
                log::debug!(
                    "{}: netlink socket overflowed (ENOBUFS), retrying with a larger buffer",
                    request.what
                );
                attempt += 1;
            }
            Err(failure) => {
                return Err(match from_failure(request.what, failure) {
                    ConntrackError::Overrun { what, .. } => ConntrackError::Overrun {
                        what,
                        attempts: attempt,
                    },
                    error => error,
                });
            }
        }
    }
}

fn message(request: Request) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, NFNETLINK_V0, 0),
        ConntrackMessage::Other {
            message_type: request.message_type,
            attributes: Vec::new(),
        },
    )
}

/// What a transport failure means for conntrack.
pub(super) fn from_failure(what: &'static str, failure: Failure) -> ConntrackError {
    match failure {
        Failure::Io(e) if e.kind() == io::ErrorKind::WouldBlock => ConntrackError::Io {
            what: format!("{what}: no reply from the kernel"),
            source: e,
        },
        Failure::Io(e) => from_io(what, e),
        Failure::Refused(errno) => from_io(what, io::Error::from_raw_os_error(errno)),
        Failure::Malformed(e) => ConntrackError::Parse {
            what: what.to_owned(),
            reason: format!("malformed netlink message: {e}"),
        },
        Failure::Overrun => ConntrackError::Overrun { what, attempts: 1 },
    }
}

/// Turns an errno (from a socket call or an `NLMSG_ERROR`) into what it means for conntrack.
fn from_io(what: &'static str, error: io::Error) -> ConntrackError {
    match error.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => ConntrackError::NotPermitted { what },
        Some(libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT | libc::ENOENT) => {
            ConntrackError::Unavailable {
                what: what.to_owned(),
                reason: format!(
                    "{error}; ctnetlink needs CONFIG_NF_CONNTRACK and CONFIG_NF_CT_NETLINK \
                     (modprobe nf_conntrack_netlink where they are modules)"
                ),
            }
        }
        Some(libc::ENOBUFS) => ConntrackError::Overrun { what, attempts: 1 },
        _ => ConntrackError::Io {
            what: what.to_owned(),
            source: error,
        },
    }
}

#[cfg(test)]
pub(super) mod tests {
    use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer};

    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Progress {
        More,
        Done,
    }

    /// Takes one datagram of a reply to request 1 (what `request` sends on a fresh socket).
    fn absorb(
        datagram: &[u8],
        what: &'static str,
        replies: &mut Replies,
    ) -> Result<Progress, ConntrackError> {
        let mut answer = netlink::Replies::default();
        answer
            .read(datagram, 1)
            .map_err(|failure| from_failure(what, failure))?;
        let complete = answer.complete;
        replies.take(answer);
        Ok(if complete {
            Progress::Done
        } else {
            Progress::More
        })
    }

    /// A netlink message header: length, type, flags, sequence, port.
    pub(crate) fn nlmsg(message_type: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(16 + payload.len()).unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&length.to_ne_bytes());
        bytes.extend_from_slice(&message_type.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&1u32.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(payload);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes
    }

    fn error(code: i32) -> Vec<u8> {
        let mut payload = code.to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0; 16]);
        nlmsg(NLMSG_ERROR, 0, &payload)
    }

    /// The replies in captured datagrams, which must end the reply.
    pub(crate) fn replies(datagrams: &[&[u8]]) -> Replies {
        let mut replies = Replies::default();
        let progress: Vec<Progress> = datagrams
            .iter()
            .map(|d| absorb(d, "test", &mut replies).unwrap())
            .collect();
        assert_eq!(progress.last(), Some(&Progress::Done));
        replies
    }

    fn absorb_all(datagram: &[u8]) -> Result<(Progress, Replies), ConntrackError> {
        let mut replies = Replies::default();
        absorb(datagram, "test", &mut replies).map(|p| (p, replies))
    }

    #[test]
    fn request_is_an_unspec_ctnetlink_dump() {
        let request = Request {
            message_type: IPCTNL_MSG_CT_GET,
            dump: true,
            what: "test",
        };
        let bytes = netlink::encode(message(request), Answer::Dump, 1);
        // nlmsghdr (16) + nfgenmsg (4), no attributes.
        assert_eq!(bytes.len(), 20);
        let header = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
        // NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET
        assert_eq!(header.message_type(), 0x0101);
        assert_eq!(header.flags(), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(&bytes[16..], &[0, NFNETLINK_V0, 0, 0]);
    }

    #[test]
    fn errors_map_to_what_they_mean() {
        let err = absorb_all(&error(-libc::EPERM)).unwrap_err();
        assert!(matches!(err, ConntrackError::NotPermitted { .. }), "{err}");
        assert!(err.to_string().contains("CAP_NET_ADMIN"), "{err}");
        for errno in [libc::EOPNOTSUPP, libc::EPROTONOSUPPORT, libc::ENOENT] {
            let err = absorb_all(&error(-errno)).unwrap_err();
            assert!(matches!(err, ConntrackError::Unavailable { .. }), "{err}");
        }
        let err = absorb_all(&error(-libc::ENOBUFS)).unwrap_err();
        assert!(matches!(err, ConntrackError::Overrun { .. }), "{err}");
        let err = absorb_all(&error(-libc::EINVAL)).unwrap_err();
        assert!(matches!(err, ConntrackError::Io { .. }), "{err}");
    }

    #[test]
    fn ack_and_done_end_the_reply() {
        assert_eq!(absorb_all(&error(0)).unwrap().0, Progress::Done);
        let done = nlmsg(NLMSG_DONE, 2, &0i32.to_ne_bytes());
        assert_eq!(absorb_all(&done).unwrap().0, Progress::Done);
        let failed = nlmsg(NLMSG_DONE, 2, &(-libc::EPERM).to_ne_bytes());
        assert!(matches!(
            absorb_all(&failed).unwrap_err(),
            ConntrackError::NotPermitted { .. }
        ));
    }

    #[test]
    fn undecodable_messages_are_counted_not_fatal() {
        // A ctnetlink message whose attribute claims more bytes than there are.
        let mut bad = vec![2, 0, 0, 0];
        bad.extend_from_slice(&[0xff, 0x00, 0x01, 0x80]);
        let mut datagram = nlmsg(0x0101, 2, &bad);
        datagram.extend(nlmsg(0x0101, 2, &[2, 0, 0, 0]));
        let (progress, replies) = absorb_all(&datagram).unwrap();
        assert_eq!(progress, Progress::More);
        assert_eq!((replies.undecodable, replies.messages.len()), (1, 1));
    }

    #[test]
    fn truncated_datagram_is_an_error_not_a_panic() {
        let datagram = nlmsg(0x0101, 2, &[2, 0, 0, 0]);
        assert!(matches!(
            absorb_all(&datagram[..10]).unwrap_err(),
            ConntrackError::Parse { .. }
        ));
    }
}
