//! Keys, values and globals shared by the eBPF programs (`galmanhae-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of implicit padding, so both sides agree on
//! the layout byte for byte. Sizes are asserted at compile time.
#![no_std]

pub mod drop;
pub mod health;
pub mod leak;
pub mod offsets;
pub mod retransmit;
pub mod stall;
pub mod task;

/// An IPv4 address as the maps keep it: v4-mapped IPv6 (`::ffff:a.b.c.d`).
#[expect(
    clippy::inline_always,
    reason = "BPF: inlined into each program so no BPF-to-BPF calls are made"
)]
#[inline(always)]
#[must_use]
pub const fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// Marks a type as plain old data for aya (user space only).
macro_rules! impl_pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is #[repr(C)], Copy, has no padding and every bit pattern is valid.
            unsafe impl aya::Pod for $t {}
        )*
    };
}
pub(crate) use impl_pod;
