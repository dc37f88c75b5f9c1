//! Reading the running kernel's structures at offsets the agent resolved at start-up.

use aya_ebpf::{helpers::bpf_probe_read_kernel, programs::TracePointContext};
use galmanhae_common::offsets::{ABSENT, BitField, KernelOffsets};

/// Filled in by the agent before load (`EbpfLoader::set_global`), from tracefs and BTF.
#[unsafe(no_mangle)]
pub(crate) static KERNEL_OFFSETS: KernelOffsets = KernelOffsets::UNRESOLVED;

/// Reads one offset from the global; volatile so the compiler cannot fold the placeholder.
macro_rules! offset {
    ($($field:ident).+) => {
        // SAFETY: a plain read of a static the loader initialised.
        unsafe { core::ptr::read_volatile(&$crate::kernel::KERNEL_OFFSETS.$($field).+) }
    };
}
pub(crate) use offset;

/// A field of the tracepoint record at a run-time offset; `None` if absent or unreadable.
#[inline(always)]
pub fn tp_field<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset == ABSENT {
        return None;
    }
    // SAFETY: read_at goes through bpf_probe_read_kernel, which checks the address.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

/// A value at `base + offset` in kernel memory; `None` if absent, null or unreadable.
#[inline(always)]
pub fn at<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 || offset == ABSENT {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address and fails instead of faulting.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.ok()
}

/// A bitfield member of the struct at `base`.
#[inline(always)]
pub fn bits(base: u64, field: BitField) -> Option<u8> {
    at::<u8>(base, field.byte).map(|byte| (byte >> field.shift) & field.mask)
}
