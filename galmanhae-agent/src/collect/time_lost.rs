//! Reads `TIME_LOST` (`galmanhae-ebpf/src/stall.rs`): per socket, the time its RTO
//! recoveries and timed-out handshake took; and turns two readings into a window's time lost
//! per flow, a recovery or handshake still running counted up to the reading.

use hashbrown::HashMap;

use aya::Ebpf;
use galmanhae_common::{
    retransmit::FlowKey,
    stall::{CLOSED, IN_SYN, STALL_BUCKETS, SYN_START_ESTIMATED, SocketTime},
};

use super::maps::{ReadError, read_hash};
use crate::kernel::settle::Settler;

const TIME_LOST: &str = "TIME_LOST";

/// `TIME_LOST` as read at `at` (`CLOCK_MONOTONIC` ns, the programs' clock).
#[derive(Clone, Debug, Default)]
pub(crate) struct TimeLostSample {
    pub(crate) sockets: HashMap<u64, SocketTime>,
    pub(crate) at: u64,
}

/// Time a flow (or a workload) lost in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TimeLost {
    /// In RTO recovery: from a timeout to the next change out of `TCP_CA_Loss`.
    pub(crate) rto_stall_ns: u64,
    /// The longest single recovery (at most `rto_stall_ns`).
    pub(crate) longest_rto_stall_ns: u64,
    /// Recoveries that ran in the window, a running one included.
    pub(crate) rto_recoveries: u64,
    /// The most timeouts in a row in one recovery.
    pub(crate) max_consecutive_timeouts: u32,
    /// From a timed-out handshake's first SYN to established or closed.
    pub(crate) syn_retry_ns: u64,
    pub(crate) syn_timeouts: u64,
    /// Handshakes whose first SYN time was assumed (one initial RTO before the first timeout).
    pub(crate) syn_estimated: u64,
    /// Recoveries that ended in the window, by duration (`STALL_BUCKETS_MS`), and their time.
    pub(crate) stall_buckets: [u64; STALL_BUCKETS],
    pub(crate) completed_stall_ns: u64,
}

impl TimeLost {
    pub(crate) fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// Adds `other`: totals sum, longest and most take the larger.
    pub(crate) fn add(&mut self, other: &Self) {
        self.rto_stall_ns += other.rto_stall_ns;
        self.longest_rto_stall_ns = self.longest_rto_stall_ns.max(other.longest_rto_stall_ns);
        self.rto_recoveries += other.rto_recoveries;
        self.max_consecutive_timeouts = self
            .max_consecutive_timeouts
            .max(other.max_consecutive_timeouts);
        self.syn_retry_ns += other.syn_retry_ns;
        self.syn_timeouts += other.syn_timeouts;
        self.syn_estimated += other.syn_estimated;
        for (mine, theirs) in self.stall_buckets.iter_mut().zip(other.stall_buckets) {
            *mine += theirs;
        }
        self.completed_stall_ns += other.completed_stall_ns;
    }
}

/// One socket's totals at a reading taken at `at`.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    stall: u64,
    running: u64,
    recoveries: u64,
    syn: u64,
    syn_timeouts: u64,
}

fn totals(s: &SocketTime, at: u64) -> Totals {
    let running_rto = s.loss_since != 0 && s.flags & IN_SYN == 0;
    let running = if running_rto {
        at.saturating_sub(s.loss_since)
    } else {
        0
    };
    let syn = match (s.syn_ns, s.syn_start) {
        (0, 0) => 0,
        (0, start) => at.saturating_sub(start),
        (done, _) => done,
    };
    Totals {
        stall: s.stall_ns + running,
        running,
        recoveries: u64::from(s.recoveries) + u64::from(running_rto),
        syn,
        syn_timeouts: u64::from(s.syn_timeouts),
    }
}

impl TimeLostSample {
    /// `settler`: where the kernel's counters time recoveries, the recoveries read as running
    /// are first ended where the kernel ended them, and the map read again (one batch read
    /// costs less than a lookup per socket in recovery).
    pub(crate) fn read(ebpf: &Ebpf, settler: Option<&Settler>) -> Result<Self, ReadError> {
        let mut sockets = read_hash(ebpf, TIME_LOST, |s: &SocketTime| *s)?;
        if let Some(settler) = settler
            && settle(settler, &sockets)
        {
            sockets = read_hash(ebpf, TIME_LOST, |s: &SocketTime| *s)?;
        }
        Ok(Self {
            sockets,
            at: monotonic_ns(),
        })
    }

    /// Time lost per flow between `earlier` and `self`.
    pub(crate) fn since(&self, earlier: &Self) -> HashMap<FlowKey, TimeLost> {
        let mut flows: HashMap<FlowKey, TimeLost> = HashMap::new();
        for (cookie, socket) in &self.sockets {
            let now = totals(socket, self.at);
            let then = earlier
                .sockets
                .get(cookie)
                .map(|s| totals(s, earlier.at))
                .unwrap_or_default();
            let stall = now.stall.saturating_sub(then.stall);
            let lost = TimeLost {
                rto_stall_ns: stall,
                // The longest is kept for the socket's life: bounded by this window's stall.
                longest_rto_stall_ns: socket.longest_ns.max(now.running).min(stall),
                rto_recoveries: now.recoveries.saturating_sub(then.recoveries),
                max_consecutive_timeouts: if stall > 0 {
                    socket.max_timeouts.max(socket.timeouts)
                } else {
                    0
                },
                syn_retry_ns: now.syn.saturating_sub(then.syn),
                syn_timeouts: now.syn_timeouts.saturating_sub(then.syn_timeouts),
                syn_estimated: u64::from(
                    socket.flags & SYN_START_ESTIMATED != 0 && now.syn > then.syn,
                ),
                stall_buckets: buckets_since(socket, earlier.sockets.get(cookie)),
                completed_stall_ns: socket
                    .stall_ns
                    .saturating_sub(earlier.sockets.get(cookie).map_or(0, |s| s.stall_ns)),
            };
            if !lost.is_zero() {
                flows.entry(socket.flow).or_default().add(&lost);
            }
        }
        flows
    }
}

/// Runs the settler on the recoveries read as running; whether it ran (a failed run leaves
/// them running until the next reading, and says so).
fn settle(settler: &Settler, sockets: &HashMap<u64, SocketTime>) -> bool {
    let running: Vec<u64> = sockets
        .iter()
        .filter(|(_, s)| s.socket != 0 && s.loss_since != 0 && s.flags & (IN_SYN | CLOSED) == 0)
        .map(|(cookie, _)| *cookie)
        .collect();
    if running.is_empty() {
        return false;
    }
    match settler.settle(&running) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("time lost: ending the recoveries the kernel ended: {e}");
            false
        }
    }
}

/// Recoveries per bucket that ended between `then` and `now` (16-bit counters: wrapping).
fn buckets_since(now: &SocketTime, then: Option<&SocketTime>) -> [u64; STALL_BUCKETS] {
    let mut out = [0; STALL_BUCKETS];
    for (i, slot) in out.iter_mut().enumerate() {
        let before = then.map_or(0, |t| t.stall_buckets[i]);
        *slot = u64::from(now.stall_buckets[i].wrapping_sub(before));
    }
    out
}

/// `CLOCK_MONOTONIC`, as `bpf_ktime_get_ns()` reads it.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn sample(at: u64, sockets: &[(u64, SocketTime)]) -> TimeLostSample {
        TimeLostSample {
            sockets: sockets.iter().copied().collect(),
            at,
        }
    }

    fn flow(port: u16) -> FlowKey {
        FlowKey {
            local_port: port,
            ..FlowKey::default()
        }
    }

    #[test]
    fn a_running_recovery_counts_up_to_the_reading() {
        let running = SocketTime {
            flow: flow(1),
            loss_since: 10 * S,
            timeouts: 3,
            ..SocketTime::default()
        };
        let lost = sample(13 * S, &[(7, running)]).since(&TimeLostSample::default());
        let t = lost[&flow(1)];
        assert_eq!(t.rto_stall_ns, 3 * S);
        assert_eq!(t.longest_rto_stall_ns, 3 * S);
        assert_eq!(t.rto_recoveries, 1);
        assert_eq!(t.max_consecutive_timeouts, 3);
    }

    #[test]
    fn only_what_grew_in_the_window_counts() {
        let before = SocketTime {
            flow: flow(1),
            stall_ns: 5 * S,
            longest_ns: 5 * S,
            recoveries: 1,
            max_timeouts: 4,
            ..SocketTime::default()
        };
        let after = SocketTime {
            stall_ns: 5 * S + S / 2,
            recoveries: 2,
            ..before
        };
        let lost = sample(20 * S, &[(7, after)]).since(&sample(10 * S, &[(7, before)]));
        let t = lost[&flow(1)];
        assert_eq!(t.rto_stall_ns, S / 2);
        assert_eq!(
            t.longest_rto_stall_ns,
            S / 2,
            "bounded by the window's stall"
        );
        assert_eq!(t.rto_recoveries, 1);
        assert_eq!(t.completed_stall_ns, S / 2);
        // An idle socket in the window loses nothing and is not listed.
        assert!(
            sample(30 * S, &[(7, after)])
                .since(&sample(20 * S, &[(7, after)]))
                .is_empty()
        );
    }

    #[test]
    fn a_handshake_counts_as_syn_time_and_sockets_of_a_flow_add_up() {
        let done = SocketTime {
            flow: flow(2),
            syn_start: 4 * S,
            syn_ns: 3 * S,
            syn_timeouts: 2,
            ..SocketTime::default()
        };
        let waiting = SocketTime {
            flow: flow(2),
            syn_start: 9 * S,
            syn_timeouts: 1,
            loss_since: 10 * S,
            flags: IN_SYN | SYN_START_ESTIMATED,
            ..SocketTime::default()
        };
        let lost = sample(12 * S, &[(1, done), (2, waiting)]).since(&TimeLostSample::default());
        let t = lost[&flow(2)];
        assert_eq!(t.syn_retry_ns, 6 * S);
        assert_eq!(t.syn_timeouts, 3);
        assert_eq!(t.syn_estimated, 1);
        assert_eq!(t.rto_stall_ns, 0, "a SYN timeout is not an RTO stall");
    }
}
