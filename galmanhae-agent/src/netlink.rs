//! One netlink request and its whole answer, over a blocking socket: the transport under both
//! rtnetlink (`path/`: links, routes, namespace ids) and ctnetlink
//! (`conntrack/`: the table and its statistics). The callers are a synchronous
//! pipeline, so no tokio; each turns a [`Failure`] into its own error.
//!
//! An answer spans datagrams until `NLMSG_DONE` (a dump) or the acknowledgement `NLM_F_ACK`
//! asks for; a failure comes back as `NLMSG_ERROR`, or inside `NLMSG_DONE` when a dump failed
//! half-way. A message the decoder rejects is counted and skipped: one object a newer kernel
//! describes with unknown attributes must not hide the rest.

use std::{fmt::Debug, io, os::fd::AsRawFd as _, time::Duration};

use netlink_packet_core::{
    DecodeError, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
    NetlinkBuffer, NetlinkDeserializable, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::SocketAddr;

/// A kernel that stops answering must not hang the pipeline.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// How the kernel ends its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `NLM_F_DUMP`: every object, then `NLMSG_DONE`.
    Dump,
    /// One object or none, then the acknowledgement `NLM_F_ACK` asks for.
    Acked,
    /// One object, or an error: no acknowledgement. Half the datagrams of `Acked` for the
    /// lookups of a pass, which can be thousands.
    Reply,
}

/// Why a request got no complete answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The socket call failed (a receive timeout reads as `WouldBlock`).
    Io(io::Error),
    /// The kernel answered with this errno (positive).
    Refused(i32),
    /// A message that is not even a netlink message, or an end of answer that does not decode.
    Malformed(DecodeError),
    /// The socket's receive buffer overflowed (`NLMSG_OVERRUN`): messages were lost.
    Overrun,
}

/// The messages that answer one request, as far as they have been read.
#[derive(Debug)]
pub(crate) struct Replies<T> {
    pub(crate) messages: Vec<T>,
    /// Messages the decoder rejected.
    pub(crate) undecodable: usize,
    /// `NLMSG_DONE` or the acknowledgement arrived.
    pub(crate) complete: bool,
    /// Messages of the request read, decoded or not.
    pub(crate) matched: usize,
    /// The kernel flagged the dump inconsistent (`NLM_F_DUMP_INTR`: objects changed while it
    /// was read); asking again gives a consistent one.
    pub(crate) interrupted: bool,
}

impl<T> Default for Replies<T> {
    fn default() -> Self {
        Self {
            messages: Vec::new(),
            undecodable: 0,
            complete: false,
            matched: 0,
            interrupted: false,
        }
    }
}

impl<T: NetlinkDeserializable + Debug> Replies<T> {
    /// Takes in the messages of one datagram that answer request `seq`; leftovers of an
    /// earlier request on the same socket that failed half-way are skipped.
    pub(crate) fn read(&mut self, datagram: &[u8], seq: u32) -> Result<(), Failure> {
        let mut rest = datagram;
        while !rest.is_empty() {
            let header = NetlinkBuffer::new_checked(rest).map_err(Failure::Malformed)?;
            let (length, message_type) = (header.length() as usize, header.message_type());
            let (sequence, flags) = (header.sequence_number(), header.flags());
            let message = &rest[..length];
            // Messages are 4-byte aligned; the last one may come without its padding.
            rest = &rest[length.next_multiple_of(4).min(rest.len())..];
            if sequence != seq {
                continue;
            }
            self.matched += 1;
            if flags & NLM_F_DUMP_INTR != 0 {
                self.interrupted = true;
            }
            match NetlinkMessage::<T>::deserialize(message) {
                Ok(message) => match message.payload {
                    NetlinkPayload::InnerMessage(inner) => self.messages.push(inner),
                    NetlinkPayload::Done(done) if done.code < 0 => {
                        return Err(Failure::Refused(-done.code));
                    }
                    NetlinkPayload::Error(error) if error.code.is_some() => {
                        return Err(Failure::Refused(-error.raw_code()));
                    }
                    NetlinkPayload::Done(_) | NetlinkPayload::Error(_) => self.complete = true,
                    NetlinkPayload::Overrun(_) => return Err(Failure::Overrun),
                    _ => {}
                },
                Err(e) if matches!(message_type, NLMSG_DONE | NLMSG_ERROR) => {
                    return Err(Failure::Malformed(e));
                }
                Err(e) => {
                    log::debug!("skipping a netlink message the decoder rejected: {e}");
                    self.undecodable += 1;
                }
            }
        }
        Ok(())
    }
}

/// A netlink socket of one protocol. It belongs to the network namespace of the thread that
/// opened it, whatever that thread does afterwards.
pub(crate) struct Socket {
    socket: netlink_sys::Socket,
    seq: u32,
}

impl Socket {
    /// A socket of `protocol` (`NETLINK_ROUTE`, ...) in the calling thread's namespace.
    pub(crate) fn open(protocol: isize) -> io::Result<Self> {
        let mut socket = netlink_sys::Socket::new(protocol)?;
        set_recv_timeout(&socket)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { socket, seq: 0 })
    }

    /// A larger receive buffer (the kernel caps it at `net.core.rmem_max`), for big dumps.
    pub(crate) fn set_receive_buffer(&self, bytes: usize) -> io::Result<()> {
        self.socket.set_rx_buf_sz(bytes)
    }

    /// Sends `inner` and reads the whole answer.
    pub(crate) fn request<T>(&mut self, inner: T, answer: Answer) -> Result<Replies<T>, Failure>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug + Into<NetlinkPayload<T>>,
    {
        self.seq = self.seq.wrapping_add(1);
        let bytes = encode(inner, answer, self.seq);
        self.socket.send(&bytes, 0).map_err(Failure::Io)?;

        let mut replies = Replies::default();
        let mut datagram = Vec::new();
        let (one_reply, at_most) = match answer {
            Answer::Reply => (true, Some(SMALL_DATAGRAM)),
            Answer::Dump | Answer::Acked => (false, None),
        };
        while !(replies.complete || (one_reply && replies.matched > 0)) {
            self.receive(&mut datagram, at_most)?;
            replies.read(&datagram, self.seq)?;
        }
        Ok(replies)
    }

    /// Reads one whole datagram. `at_most`: a bound known in advance (the reply to a request
    /// for one object), read in one call; without one the size is peeked first, because a
    /// dump's datagrams grow past any fixed buffer and a short read would truncate them
    /// silently.
    fn receive(&self, datagram: &mut Vec<u8>, at_most: Option<usize>) -> Result<(), Failure> {
        datagram.clear();
        let size = match at_most {
            Some(bound) => bound,
            None => retrying(|| {
                self.socket
                    .recv_from(datagram, libc::MSG_PEEK | libc::MSG_TRUNC)
            })?,
        };
        datagram.clear();
        datagram.reserve(size);
        let read = retrying(|| self.socket.recv_from(datagram, libc::MSG_TRUNC))?;
        if read > datagram.len() {
            return Err(Failure::Io(io::Error::other(format!(
                "netlink datagram truncated: {read} bytes, {} read",
                datagram.len()
            ))));
        }
        Ok(())
    }
}

/// A receive, again while interrupted; the datagram's whole size (`MSG_TRUNC`).
fn retrying(
    mut receive: impl FnMut() -> io::Result<(usize, SocketAddr)>,
) -> Result<usize, Failure> {
    loop {
        match receive() {
            Ok((size, _)) => return Ok(size),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Err(Failure::Overrun),
            Err(e) => return Err(Failure::Io(e)),
        }
    }
}

/// The largest reply to a request for one object: a conntrack entry with every attribute is
/// under 1 KiB.
const SMALL_DATAGRAM: usize = 16 * 1024;

/// The request as it goes on the wire: `inner` with the header flags `answer` asks for.
pub(crate) fn encode<T>(inner: T, answer: Answer, seq: u32) -> Vec<u8>
where
    T: NetlinkSerializable + Into<NetlinkPayload<T>>,
{
    let mut message = NetlinkMessage::from(inner);
    message.header.flags = NLM_F_REQUEST
        | match answer {
            Answer::Dump => NLM_F_DUMP,
            Answer::Acked => NLM_F_ACK,
            Answer::Reply => 0,
        };
    message.header.sequence_number = seq;
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

fn set_recv_timeout(socket: &netlink_sys::Socket) -> io::Result<()> {
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
