//! One ctnetlink request and its replies over a blocking `NETLINK_NETFILTER` socket (the
//! caller is a synchronous pipeline). `netlink-packet-netfilter` encodes and decodes the
//! messages; the message types are those of `enum cntl_msg_types` in
//! <https://github.com/torvalds/linux/blob/master/include/uapi/linux/netfilter/nfnetlink_conntrack.h>.

use std::{io, os::fd::AsRawFd as _, time::Duration};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::ConntrackMessage,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use super::ConntrackError;

pub(super) const IPCTNL_MSG_CT_GET: u8 = 1;
pub(super) const IPCTNL_MSG_CT_GET_STATS_CPU: u8 = 4;
pub(super) const IPCTNL_MSG_CT_GET_STATS: u8 = 5;

/// `NFNETLINK_V0`, the only nfnetlink version.
const NFNETLINK_V0: u8 = 0;
/// Larger than any datagram: the kernel fills dump datagrams up to 32 KiB.
const RECV_BUFFER: usize = 64 * 1024;
/// Tries of a request that overflowed the socket (ENOBUFS), the later ones with a larger buffer.
const ATTEMPTS: u32 = 3;
/// Receive buffer of the retries (the kernel caps it at `net.core.rmem_max`).
const RETRY_RCVBUF: usize = 8 * 1024 * 1024;
/// A kernel that stops answering must not hang the pipeline.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// What to ask the kernel for.
#[derive(Clone, Copy, Debug)]
pub(super) struct Request {
    pub message_type: u8,
    /// Every object (`NLM_F_DUMP`, multipart until `NLMSG_DONE`), or one answer and an ack.
    pub dump: bool,
    /// For error messages: "dumping the conntrack table", ...
    pub what: &'static str,
}

/// The replies to one request.
#[derive(Debug, Default)]
pub(super) struct Replies {
    pub messages: Vec<ConntrackMessage>,
    /// Messages the decoder rejected: counted and skipped, one bad entry must not hide the rest.
    pub undecodable: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    More,
    Done,
}

/// Sends `request` (IPv4 and IPv6: `AF_UNSPEC`) in the calling thread's network namespace and
/// collects the replies, starting over when the socket overflowed.
pub(super) fn request(request: Request) -> Result<Replies, ConntrackError> {
    let mut attempt = 1;
    loop {
        match exchange(request, attempt) {
            Err(ConntrackError::Overrun { .. }) if attempt < ATTEMPTS => {
                log::debug!(
                    "{}: netlink socket overflowed (ENOBUFS), retrying with a larger buffer",
                    request.what
                );
                attempt += 1;
            }
            Err(ConntrackError::Overrun { what, .. }) => {
                return Err(ConntrackError::Overrun {
                    what,
                    attempts: attempt,
                });
            }
            result => return result,
        }
    }
}

fn exchange(request: Request, attempt: u32) -> Result<Replies, ConntrackError> {
    let fail = |e: io::Error| from_io(request.what, e);
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(fail)?;
    if attempt > 1 {
        socket.set_rx_buf_sz(RETRY_RCVBUF).map_err(fail)?;
    }
    set_recv_timeout(&socket).map_err(fail)?;
    socket.bind_auto().map_err(fail)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(fail)?;
    socket.send(&encode(request), 0).map_err(fail)?;

    let mut replies = Replies::default();
    let mut datagram = Vec::with_capacity(RECV_BUFFER);
    loop {
        datagram.clear();
        // MSG_TRUNC: the datagram's real size, to notice one that did not fit.
        let size = match socket.recv(&mut datagram, libc::MSG_TRUNC) {
            Ok(size) => size,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(ConntrackError::Io {
                    what: format!("{}: no reply from the kernel", request.what),
                    source: e,
                });
            }
            Err(e) => return Err(fail(e)),
        };
        if size > datagram.len() {
            return Err(ConntrackError::Parse {
                what: request.what.to_owned(),
                reason: format!(
                    "a {size}-byte netlink datagram did not fit the {RECV_BUFFER}-byte buffer"
                ),
            });
        }
        if absorb(&datagram, request.what, &mut replies)? == Progress::Done {
            return Ok(replies);
        }
    }
}

fn encode(request: Request) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | if request.dump { NLM_F_DUMP } else { NLM_F_ACK };
    header.sequence_number = 1;
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, NFNETLINK_V0, 0),
            ConntrackMessage::Other {
                message_type: request.message_type,
                attributes: Vec::new(),
            },
        )),
    );
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// Takes the messages of one datagram; says whether the reply is complete.
fn absorb(
    datagram: &[u8],
    what: &'static str,
    replies: &mut Replies,
) -> Result<Progress, ConntrackError> {
    let mut rest = datagram;
    while !rest.is_empty() {
        let (length, message_type) = NetlinkBuffer::new_checked(rest)
            .map(|b| (b.length() as usize, b.message_type()))
            .map_err(|e| ConntrackError::Parse {
                what: what.to_owned(),
                reason: format!("malformed netlink message: {e}"),
            })?;
        let (message, next) = rest.split_at(length);
        // Messages are 4-byte aligned; the last one may come without its padding.
        rest = next
            .get(length.next_multiple_of(4) - length..)
            .unwrap_or_default();

        match NetlinkMessage::<NetfilterMessage>::deserialize(message) {
            Ok(message) => match message.payload {
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::Conntrack(ct),
                    ..
                }) => replies.messages.push(ct),
                NetlinkPayload::InnerMessage(other) => {
                    log::debug!("{what}: skipping a message of another subsystem: {other:?}");
                    replies.undecodable += 1;
                }
                // A dump that failed half-way reports its errno here.
                NetlinkPayload::Done(done) if done.code < 0 => {
                    return Err(from_io(what, io::Error::from_raw_os_error(-done.code)));
                }
                NetlinkPayload::Done(_) => return Ok(Progress::Done),
                NetlinkPayload::Error(error) => {
                    return match error.code {
                        // The ack that ends a non-dump request.
                        None => Ok(Progress::Done),
                        Some(code) => Err(from_io(what, io::Error::from_raw_os_error(-code.get()))),
                    };
                }
                NetlinkPayload::Overrun(_) => {
                    return Err(ConntrackError::Overrun { what, attempts: 1 });
                }
                _ => {}
            },
            Err(e) if matches!(message_type, NLMSG_DONE | NLMSG_ERROR) => {
                return Err(ConntrackError::Parse {
                    what: what.to_owned(),
                    reason: format!("malformed end of reply: {e}"),
                });
            }
            Err(e) => {
                log::debug!("{what}: skipping a message the decoder rejected: {e}");
                replies.undecodable += 1;
            }
        }
    }
    Ok(Progress::More)
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

fn set_recv_timeout(socket: &Socket) -> io::Result<()> {
    let timeout = libc::timeval {
        tv_sec: libc::time_t::try_from(RECV_TIMEOUT.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: 0,
    };
    // SAFETY: a valid socket and a timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            libc::socklen_t::try_from(size_of::<libc::timeval>()).unwrap_or(libc::socklen_t::MAX),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A netlink message header: length, type, flags, sequence, port.
    pub fn nlmsg(message_type: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
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
    pub fn replies(datagrams: &[&[u8]]) -> Replies {
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
        let bytes = encode(Request {
            message_type: IPCTNL_MSG_CT_GET,
            dump: true,
            what: "test",
        });
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
