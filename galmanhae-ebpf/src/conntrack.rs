//! Optional: `__nf_conntrack_confirm`, where a new connection enters the conntrack table.
//! kprobe or fentry, whichever the kernel allows (neither on these lab machines); the agent
//! probes both at start-up and reports which one, if any, is attached. Nothing depends on it:
//! it counts confirmations, which the `insert` statistic should show but on some kernels
//! stays 0.
//! <https://elixir.bootlin.com/linux/v6.18/source/net/netfilter/nf_conntrack_core.c>

use aya_ebpf::{macros::map, maps::PerCpuArray};

/// Calls of `__nf_conntrack_confirm`, in slot 0.
#[map]
static CONNTRACK_CONFIRMS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn on_confirm() {
    if let Some(slot) = CONNTRACK_CONFIRMS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; nothing else writes it while the program runs.
        unsafe { *slot += 1 };
    }
}
