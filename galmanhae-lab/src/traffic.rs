//! Traffic that busybox in a container cannot make: a connect race from two containers at
//! the same instant, and malformed TCP segments. Threads join the container's network
//! namespace (`setns` acts on the calling thread only), so the packets leave the container
//! exactly as its own would: through its veth, Docker's bridge and MASQUERADE.

use std::{
    fs::File,
    io,
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd as _,
    path::Path,
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use socket2::{Domain, Protocol, Socket, Type};

use crate::docker;

/// First source port of the race: above the default `ip_local_port_range` (32768-60999), so
/// MASQUERADE finds it free on the host and keeps it.
const RACE_FIRST_PORT: u16 = 61_000;
/// A db port nobody listens on: the db answers every SYN with a RST, and no server forks.
pub const CLOSED_DB_PORT: u16 = 5439;

/// What the race did.
#[derive(Debug, Default)]
pub struct RaceOutcome {
    pub rounds: u16,
    /// Connections whose SYN had to be sent again (their first one was lost).
    pub syn_retransmitted: u32,
}

/// The SNAT port-collision race: in each round, one container per CPU connects from the same
/// source port to the same db address at the same instant. Both connections are new to the
/// host's conntrack, so MASQUERADE gives both the same translated tuple; the second to confirm
/// fails to insert (`insert_failed`) and its SYN is dropped, to be retransmitted a second
/// later. Without `--random-fully` nothing prevents it.
pub fn snat_race(containers: [&str; 2], db: Ipv4Addr, rounds: u16) -> anyhow::Result<RaceOutcome> {
    if rounds == 0 || u32::from(rounds) > u32::from(u16::MAX - RACE_FIRST_PORT) {
        bail!(
            "--rounds must be between 1 and {}",
            u16::MAX - RACE_FIRST_PORT
        );
    }
    let mut sides = Vec::with_capacity(2);
    for name in containers {
        let ip: Ipv4Addr = docker::ip(name)?
            .parse()
            .with_context(|| format!("address of container {name}"))?;
        sides.push((docker::pid(name)?, ip));
    }
    let arrived = AtomicU32::new(0);
    let failed = AtomicBool::new(false);
    let barrier = SpinBarrier {
        arrived: &arrived,
        parties: 2,
        failed: &failed,
    };
    let results = thread::scope(|scope| {
        let handles: Vec<_> = sides
            .iter()
            .enumerate()
            .map(|(cpu, &(pid, ip))| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let outcome = race_side(cpu, pid, ip, db, rounds, barrier);
                    if outcome.is_err() {
                        barrier.failed.store(true, Ordering::Release);
                    }
                    outcome
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a race thread panicked")))
            })
            .collect::<Vec<_>>()
    });
    let mut outcome = RaceOutcome {
        rounds,
        ..RaceOutcome::default()
    };
    for side in results {
        outcome.syn_retransmitted += side?;
    }
    Ok(outcome)
}

/// One container's half of the race, on `cpu`; returns how many of its SYNs were resent.
fn race_side(
    cpu: usize,
    pid: u32,
    ip: Ipv4Addr,
    db: Ipv4Addr,
    rounds: u16,
    barrier: &SpinBarrier<'_>,
) -> anyhow::Result<u32> {
    pin_to_cpu(cpu)?;
    enter_netns(netns_of(pid))?;
    let remote = SocketAddrV4::new(db, CLOSED_DB_PORT).into();
    let mut sockets = Vec::with_capacity(usize::from(rounds));
    for round in 0..rounds {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .context("creating a TCP socket")?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket
            .bind(&SocketAddrV4::new(ip, RACE_FIRST_PORT + round).into())
            .with_context(|| format!("binding {ip}:{}", RACE_FIRST_PORT + round))?;
        barrier.wait(u32::from(round))?;
        match socket.connect(&remote) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e).context("connecting"),
        }
        sockets.push(socket);
    }
    // A SYN lost to the clash is resent after the initial RTO (1 s).
    thread::sleep(Duration::from_millis(1500));
    Ok(sockets
        .iter()
        .filter(|s| tcp_info(s).is_ok_and(|i| i.total_retrans > 0))
        .count()
        .try_into()
        .unwrap_or(u32::MAX))
}

/// Sends `count` TCP segments with SYN and FIN both set from `container` to `db:port`.
/// Conntrack finds no valid state for them (INVALID), so NAT never sees them and they leave
/// the host with the container's bridge address: the `nat_leak` fault.
pub fn invalid_segments(
    container: &str,
    db: Ipv4Addr,
    port: u16,
    count: u32,
) -> anyhow::Result<()> {
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let pid = docker::pid(container)?;
    let source: Ipv4Addr = docker::ip(container)?
        .parse()
        .with_context(|| format!("address of container {container}"))?;
    thread::scope(|scope| {
        scope
            .spawn(move || -> anyhow::Result<()> {
                enter_netns(netns_of(pid))?;
                // The kernel writes the IP header; the TCP header is ours.
                let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP))
                    .context("creating a raw socket")?;
                let to = SocketAddrV4::new(db, 0).into();
                for n in 0..count {
                    let sport = RACE_FIRST_PORT.wrapping_add(u16::try_from(n % 4000)?);
                    let segment = syn_fin_segment(source, db, sport, port, n);
                    socket.send_to(&segment, &to).context("sending a segment")?;
                }
                Ok(())
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the sending thread panicked")))
    })
}

/// A 20-byte TCP header with SYN|FIN and a correct checksum (so only the flags are invalid).
fn syn_fin_segment(source: Ipv4Addr, dest: Ipv4Addr, sport: u16, dport: u16, seq: u32) -> [u8; 20] {
    const SYN_FIN: u8 = 0x03;
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.wrapping_mul(7919).to_be_bytes());
    tcp[12] = 5 << 4; // data offset: 5 words
    tcp[13] = SYN_FIN;
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&source.octets());
    pseudo.extend_from_slice(&dest.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    tcp[16..18].copy_from_slice(&internet_checksum(&pseudo).to_be_bytes());
    tcp
}

/// RFC 1071 ones' complement sum.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0xffff)
}

/// Both threads leave the barrier of a round together; a failed peer ends the wait.
struct SpinBarrier<'a> {
    arrived: &'a AtomicU32,
    parties: u32,
    failed: &'a AtomicBool,
}

impl SpinBarrier<'_> {
    /// Spins rather than sleeps: a futex wake-up would put microseconds between the two,
    /// more than the race window.
    fn wait(&self, round: u32) -> anyhow::Result<()> {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        let target = self.parties * (round + 1);
        while self.arrived.load(Ordering::Acquire) < target {
            if self.failed.load(Ordering::Acquire) {
                bail!("the other side of the race failed");
            }
            std::hint::spin_loop();
        }
        Ok(())
    }
}

/// Moves the calling thread (only it) into the network namespace at `path`
/// (`/proc/PID/ns/net`, `/run/netns/NAME`).
pub fn enter_netns(path: impl AsRef<Path>) -> anyhow::Result<()> {
    let path = path.as_ref();
    let namespace = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a valid namespace fd; setns changes only this thread's network namespace.
    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("setns into {}", path.display()));
    }
    Ok(())
}

fn netns_of(pid: u32) -> String {
    format!("/proc/{pid}/ns/net")
}

fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: CPU_SET checks the index against the set's size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: a valid set of the size given, for the calling thread (pid 0).
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) } != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("pinning to CPU {cpu}"));
    }
    Ok(())
}

/// The part of the kernel's `struct tcp_info` (include/uapi/linux/tcp.h) up to
/// `tcpi_data_segs_out`; libc's copy ends at `tcpi_total_retrans`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct TcpInfo {
    head: [u8; 8],
    rto: u32,
    ato: u32,
    pub(crate) snd_mss: u32,
    rest_u32: [u32; 20],
    pub(crate) total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    pub(crate) bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    min_rtt: u32,
    data_segs_in: u32,
    pub(crate) data_segs_out: u32,
}

pub(crate) fn tcp_info(socket: &Socket) -> anyhow::Result<TcpInfo> {
    // SAFETY: TcpInfo is plain data; zeroed is valid.
    let mut info: TcpInfo = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut len = libc::socklen_t::try_from(size_of::<TcpInfo>())?;
    // SAFETY: the buffer and its length match; the fd is open for the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("getsockopt(TCP_INFO)");
    }
    if usize::try_from(len)? < size_of::<TcpInfo>() {
        bail!("this kernel's tcp_info is too short ({len} bytes) for tcpi_data_segs_out");
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_header_verifies_to_zero() {
        let segment = syn_fin_segment(
            Ipv4Addr::new(198, 18, 100, 2),
            Ipv4Addr::new(198, 19, 0, 2),
            61000,
            5432,
            1,
        );
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&[198, 18, 100, 2, 198, 19, 0, 2, 0, 6, 0, 20]);
        pseudo.extend_from_slice(&segment);
        // A correct checksum makes the sum over everything all ones.
        assert_eq!(internet_checksum(&pseudo), 0);
        assert_eq!(segment[13], 0x03);
    }

    #[test]
    fn tcp_info_layout_matches_the_kernel() {
        // include/uapi/linux/tcp.h: tcpi_bytes_acked at 120, tcpi_data_segs_out at 156.
        assert_eq!(std::mem::offset_of!(TcpInfo, total_retrans), 100);
        assert_eq!(std::mem::offset_of!(TcpInfo, bytes_acked), 120);
        assert_eq!(std::mem::offset_of!(TcpInfo, data_segs_out), 156);
    }
}
