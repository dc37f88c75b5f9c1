//! Time lost in seconds, rounded to the millisecond: the values findings reason about and
//! the report prints, so that both say the same.

use serde::Serialize;

use crate::collect::time_lost::TimeLost;

/// What retransmissions cost in time: RTO recoveries and timed-out handshakes (a running one
/// counted up to the end of the window).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub(crate) struct TimeLostSeconds {
    pub(crate) rto_stall_seconds: f64,
    pub(crate) longest_rto_stall_seconds: f64,
    pub(crate) rto_recoveries: u64,
    pub(crate) max_consecutive_timeouts: u32,
    pub(crate) syn_retry_seconds: f64,
    pub(crate) syn_timeouts: u64,
    /// Handshakes whose first SYN time was assumed one initial RTO before the first timeout.
    pub(crate) syn_start_estimated: u64,
}

impl From<&TimeLost> for TimeLostSeconds {
    #[expect(clippy::cast_precision_loss, reason = "nanoseconds as seconds")]
    fn from(t: &TimeLost) -> Self {
        let seconds = |ns: u64| (ns as f64 / 1e9 * 1000.0).round() / 1000.0;
        Self {
            rto_stall_seconds: seconds(t.rto_stall_ns),
            longest_rto_stall_seconds: seconds(t.longest_rto_stall_ns),
            rto_recoveries: t.rto_recoveries,
            max_consecutive_timeouts: t.max_consecutive_timeouts,
            syn_retry_seconds: seconds(t.syn_retry_ns),
            syn_timeouts: t.syn_timeouts,
            syn_start_estimated: t.syn_estimated,
        }
    }
}

impl TimeLostSeconds {
    /// Seconds lost in all, stalls and handshakes.
    pub(crate) fn seconds(&self) -> f64 {
        self.rto_stall_seconds + self.syn_retry_seconds
    }
}
