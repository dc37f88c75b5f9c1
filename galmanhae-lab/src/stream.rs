//! A paced TCP stream from inside a container's network namespace, from a thread of this
//! process, so that its own `tcp_info` can be read: what the kernel says the socket lost to
//! RTO recoveries (`tcpi_total_rto_time`, Linux 6.7+), to compare the agent's figures with.

use std::{
    io::{self, Write as _},
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd as _,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{docker, traffic::enter_netns};

/// `struct tcp_info` (include/uapi/linux/tcp.h) up to `tcpi_total_rto_time`: 248 bytes.
const TCP_INFO_RTO_END: usize = 248;
const TOTAL_RTO: usize = 240;
const TOTAL_RTO_RECOVERIES: usize = 242;
const TOTAL_RTO_TIME: usize = 244;

/// The socket's RTO figures at the end of its stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtoInfo {
    pub total_rto: u16,
    pub total_rto_recoveries: u16,
    /// Milliseconds in RTO recovery, a running recovery included.
    pub total_rto_time_ms: u32,
    pub local_port: u16,
}

/// Streams `chunk` bytes every 50 ms from `container`'s namespace to `db:port` for `length`,
/// then reads the socket's [`RtoInfo`] and closes it.
pub fn paced_stream(
    container: &str,
    db: Ipv4Addr,
    port: u16,
    length: Duration,
) -> anyhow::Result<RtoInfo> {
    let pid = docker::pid(container)?;
    let target = SocketAddrV4::new(db, port);
    thread::scope(|scope| {
        scope
            .spawn(move || -> anyhow::Result<RtoInfo> {
                enter_netns(format!("/proc/{pid}/ns/net"))?;
                let mut socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                socket
                    .connect_timeout(&target.into(), Duration::from_secs(5))
                    .with_context(|| format!("connecting to {target} from {container}"))?;
                // A write blocked by a full send buffer during a stall must not end the stream.
                socket.set_write_timeout(Some(Duration::from_millis(200)))?;
                let chunk = [0u8; 4096];
                let end = Instant::now() + length;
                while Instant::now() < end {
                    match socket.write(&chunk) {
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) => {}
                        Err(e) => return Err(e).context("writing the stream"),
                    }
                    thread::sleep(Duration::from_millis(50));
                }
                let local_port = socket.local_addr()?.as_socket().map_or(0, |a| a.port());
                Ok(RtoInfo {
                    local_port,
                    ..rto_info(&socket)?
                })
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the stream's thread panicked")))
    })
}

/// Connects from `container`'s namespace to `db:port` once, waiting up to `timeout`; how long
/// `connect()` took (a lost SYN makes it wait for the kernel's retries) and the local port.
pub fn timed_connect(
    container: &str,
    db: Ipv4Addr,
    port: u16,
    timeout: Duration,
) -> anyhow::Result<(Duration, u16)> {
    let pid = docker::pid(container)?;
    let target = SocketAddrV4::new(db, port);
    thread::scope(|scope| {
        scope
            .spawn(move || -> anyhow::Result<(Duration, u16)> {
                enter_netns(format!("/proc/{pid}/ns/net"))?;
                let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                let started = Instant::now();
                socket
                    .connect_timeout(&target.into(), timeout)
                    .with_context(|| format!("connecting to {target} from {container}"))?;
                let took = started.elapsed();
                let port = socket.local_addr()?.as_socket().map_or(0, |a| a.port());
                Ok((took, port))
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the connect's thread panicked")))
    })
}

/// `tcpi_total_rto*` of `socket`.
pub fn rto_info(socket: &Socket) -> anyhow::Result<RtoInfo> {
    let mut info = MaybeUninit::<[u8; TCP_INFO_RTO_END]>::zeroed();
    let mut len = libc::socklen_t::try_from(TCP_INFO_RTO_END)?;
    // SAFETY: the buffer and its length match; the fd is open for the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("getsockopt(TCP_INFO)");
    }
    if usize::try_from(len)? < TCP_INFO_RTO_END {
        bail!("this kernel's tcp_info ({len} bytes) has no tcpi_total_rto_time (Linux 6.7+)");
    }
    // SAFETY: zeroed, then written by the kernel: initialised either way.
    let info = unsafe { info.assume_init() };
    let u16_at = |at: usize| u16::from_ne_bytes([info[at], info[at + 1]]);
    Ok(RtoInfo {
        total_rto: u16_at(TOTAL_RTO),
        total_rto_recoveries: u16_at(TOTAL_RTO_RECOVERIES),
        total_rto_time_ms: u32::from_ne_bytes([
            info[TOTAL_RTO_TIME],
            info[TOTAL_RTO_TIME + 1],
            info[TOTAL_RTO_TIME + 2],
            info[TOTAL_RTO_TIME + 3],
        ]),
        local_port: 0,
    })
}
