//! Reading the running kernel's structures at offsets the agent resolved at start-up.

use aya_ebpf::{
    EbpfContext as _,
    bindings::bpf_func_id::BPF_FUNC_skc_to_tcp_sock,
    helpers::{bpf_get_socket_cookie, generated::bpf_probe_read_kernel},
    programs::{BtfTracePointContext, TracePointContext},
};
use galmanhae_common::offsets::{ABSENT, BitField, KernelOffsets};

/// Filled in by the agent before load (`EbpfLoader::set_global`), from tracefs and BTF.
///
/// It lands in `.rodata`, which aya freezes read-only: the verifier then knows every offset
/// as a constant, which is what lets [`Direct`] loads through BTF pointers pass.
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

/// How a program reads kernel memory at run-time offsets.
pub trait Memory {
    /// Plain loads (a `tp_btf` program), where casts to BTF types may replace probes.
    const PLAIN_LOADS: bool;

    /// A value at `base + offset`; `None` if absent or null (or, for [`Probe`], unreadable).
    fn at<T: Copy>(base: u64, offset: u32) -> Option<T>;

    /// A 16-byte address member (`in6_addr`) at `base + offset`; zeros if unreadable. As four
    /// 32-bit loads, its alignment: what a [`Direct`] load may be.
    #[inline(always)]
    fn addr16(base: u64, offset: u32) -> [u8; 16] {
        let word = |i: u32| {
            Self::at::<u32>(base, offset + 4 * i)
                .unwrap_or(0)
                .to_ne_bytes()
        };
        let (a, b, c, d) = (word(0), word(1), word(2), word(3));
        [
            a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1],
            d[2], d[3],
        ]
    }

    /// A bitfield member of the struct at `base`.
    #[inline(always)]
    fn bits(base: u64, field: BitField) -> Option<u8> {
        Self::at::<u8>(base, field.byte).map(|byte| (byte >> field.shift) & field.mask)
    }
}

/// `bpf_probe_read_kernel`: any address, one helper call (tens of ns) per read. A read that
/// fails reads zeros (the helper clears its buffer), as a [`Direct`] load that faults does:
/// no branch per read, or the verifier explores every combination of them.
pub struct Probe;

impl Memory for Probe {
    const PLAIN_LOADS: bool = false;

    #[inline(always)]
    fn at<T: Copy>(base: u64, offset: u32) -> Option<T> {
        if base == 0 || offset == ABSENT {
            return None;
        }
        let mut value = core::mem::MaybeUninit::<T>::uninit();
        // SAFETY: the helper writes `size_of::<T>()` bytes into `value` (zeros on failure)
        // and checks the source address instead of faulting.
        unsafe {
            bpf_probe_read_kernel(
                value.as_mut_ptr().cast(),
                u32::try_from(size_of::<T>()).unwrap_or(0),
                (base + u64::from(offset)) as *const core::ffi::c_void,
            );
            Some(value.assume_init())
        }
    }

    /// One helper call for the whole address, not four.
    #[inline(always)]
    fn addr16(base: u64, offset: u32) -> [u8; 16] {
        Self::at::<[u8; 16]>(base, offset).unwrap_or([0; 16])
    }
}

/// A plain load through a BTF-typed pointer (the arguments of a `tp_btf` program and what
/// they point to). The verifier checks each load against the kernel's BTF, which needs the
/// offset to be a known constant (see [`KERNEL_OFFSETS`]), and makes it fault-safe
/// (`BPF_PROBE_MEM`, a fault reads 0): about one nanosecond instead of a helper call.
pub struct Direct;

impl Memory for Direct {
    const PLAIN_LOADS: bool = true;

    #[inline(always)]
    fn at<T: Copy>(base: u64, offset: u32) -> Option<T> {
        if base == 0 || offset == ABSENT {
            return None;
        }
        // SAFETY: the verifier accepts the load only at a member of the pointed-to type, and
        // the JIT turns it into a load that cannot fault. Volatile: one load, not split, not
        // merged or moved before the null check.
        Some(unsafe { core::ptr::read_volatile((base + u64::from(offset)) as *const T) })
    }
}

/// A field of the tracepoint record at a run-time offset; `None` if absent or unreadable.
#[inline(always)]
pub fn tp_field<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset == ABSENT {
        return None;
    }
    // SAFETY: read_at goes through bpf_probe_read_kernel, which checks the address.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

/// A value at `base + offset` in kernel memory through `bpf_probe_read_kernel`; `None` if absent,
/// null or unreadable. The drop program's packet and conntrack reads, which stop at the first
/// failure (with [`Probe`]'s zeros instead, LLVM's stack for `kfree_skb` outgrows 512 bytes).
#[inline(always)]
pub fn at<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 || offset == ABSENT {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address and fails instead of faulting.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.ok()
}

/// Argument `n` of a BTF tracepoint that only some kernels have; `present` must come from
/// [`KERNEL_OFFSETS`] so that the verifier, which sees it as a constant, never checks the read
/// on a kernel without the argument. A 32-bit argument is the low half of its slot.
#[inline(always)]
pub fn optional_arg(ctx: &BtfTracePointContext, n: usize, present: bool) -> Option<u64> {
    // SAFETY: the context is the tracepoint's argument array, which has argument `n` when
    // `present`. Volatile: the load must not be hoisted above the check.
    present.then(|| unsafe { core::ptr::read_volatile(ctx.as_ptr().cast::<u64>().add(n)) })
}

/// The low 32 bits of an argument slot (an `int` or an `enum`).
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "a 32-bit argument in a 64-bit slot"
)]
pub const fn low_32(slot: u64) -> u32 {
    slot as u32
}

/// The socket's cookie: read from `skc_cookie` once the kernel made one (a plain load), else
/// through the helper, which makes it (the first event of a socket pays the call).
#[inline(always)]
pub fn socket_cookie(sk: u64) -> u64 {
    match Direct::at::<u64>(sk, offset!(sock.cookie)) {
        Some(cookie) if cookie != 0 => cookie,
        // SAFETY: the helper takes any socket.
        _ => unsafe { bpf_get_socket_cookie(sk as *mut _) },
    }
}

/// The socket as a `struct tcp_sock` whose members plain loads may read; `sk` must be a full
/// TCP socket (every caller's hook fires only for those). Through the helper
/// `bpf_skc_to_tcp_sock` on every kernel, inlined where the kernel has `bpf_rdonly_cast`
/// (see [`rdonly_cast`]).
#[inline(always)]
pub fn tcp_sock(sk: u64) -> u64 {
    rdonly_cast(sk, offset!(structs.tcp_sock_type))
}

/// `bpf_rdonly_cast(address, btf_id)` (6.2+): `address` as a pointer to the vmlinux type
/// `btf_id`, which plain loads may read (fault-safe) at its members' offsets; the verifier
/// inlines it into a register move.
///
/// aya cannot relocate kfunc calls, so this is a call of the helper `bpf_skc_to_tcp_sock`
/// with the kfunc's two arguments (the helper ignores the second), which the agent rewrites
/// into the kfunc's call before load where the kernel has it (its `casts.rs`). Callers other
/// than [`tcp_sock`] must only call it where their type id is not 0, which the agent
/// guarantees only with the kfunc: elsewhere the verifier never sees the call.
#[inline(always)]
pub fn rdonly_cast(address: u64, btf_id: u32) -> u64 {
    // SAFETY: a helper's number as its function pointer, as aya-ebpf's own bindings do; it
    // takes a socket pointer and returns one (or null), the second register being unused.
    let cast: unsafe extern "C" fn(u64, u32) -> u64 =
        unsafe { core::mem::transmute(BPF_FUNC_skc_to_tcp_sock as usize) };
    // SAFETY: as above.
    unsafe { cast(address, btf_id) }
}
