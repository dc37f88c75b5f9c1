//! Per-CPU counters of what the programs could not do, so that nothing is lost silently.

/// Index into the `HEALTH` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthCounter {
    /// A retransmit whose flow did not fit in `RETRANSMIT_FLOWS`: it was counted in
    /// `RETRANSMIT_OVERFLOW` (per namespace) instead.
    FlowMapFull = 0,
    /// A retransmit that fit in neither map: lost.
    OverflowMapFull = 1,
    /// A kernel read (`bpf_probe_read_kernel`) failed; the event was counted with what was read.
    ReadError = 2,
    /// A drop whose flow did not fit in `DROPS`: counted per site in `DROP_OVERFLOW` instead.
    DropMapFull = 3,
    /// A drop that fit in neither drop map: lost.
    DropOverflowFull = 4,
    /// An untranslated packet whose flow did not fit in `LEAKS`: lost.
    LeakMapFull = 5,
    /// A socket's RTO or SYN timeout that did not fit in `TIME_LOST`: its time is lost.
    TimeMapFull = 6,
}

impl HealthCounter {
    pub const ALL: [Self; 7] = [
        Self::FlowMapFull,
        Self::OverflowMapFull,
        Self::ReadError,
        Self::DropMapFull,
        Self::DropOverflowFull,
        Self::LeakMapFull,
        Self::TimeMapFull,
    ];
    #[expect(clippy::cast_possible_truncation, reason = "a handful of counters")]
    pub const COUNT: u32 = Self::ALL.len() as u32;

    pub const fn name(self) -> &'static str {
        match self {
            Self::FlowMapFull => "flow_map_full",
            Self::OverflowMapFull => "overflow_map_full",
            Self::ReadError => "read_error",
            Self::DropMapFull => "drop_map_full",
            Self::DropOverflowFull => "drop_overflow_full",
            Self::LeakMapFull => "leak_map_full",
            Self::TimeMapFull => "time_map_full",
        }
    }
}
