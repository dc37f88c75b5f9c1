//! Stores that stay stores. LLVM merges runs of zero stores into `memset`, which the BPF
//! target compiles into a called subprogram that loops: a call and tens of instructions for
//! what a few stores do (seen in `bpftool prog dump xlated` of the drop program, four calls per
//! drop). Volatile stores are never merged.

use core::ptr::write_volatile;

/// Zeroes `value` with one 8-byte store per word; `T` is a whole number of 8-byte words and
/// 8-byte aligned (the BPF stack allows only aligned accesses).
#[inline(always)]
pub fn zero<T>(value: *mut T) {
    const { assert!(size_of::<T>().is_multiple_of(8) && align_of::<T>() == 8) };
    let words = value.cast::<u64>();
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: within `value`, aligned (asserted above).
        unsafe { write_volatile(words.add(i), 0) };
    }
}

/// Writes the IPv4 address `a` as v4-mapped IPv6 (`::ffff:a.b.c.d`) into `dst`, which must be
/// 4-byte aligned, with four 4-byte stores.
#[inline(always)]
#[expect(
    clippy::cast_ptr_alignment,
    reason = "every address member of the keys is 4-byte aligned (the caller's contract)"
)]
pub fn v4_mapped_into(dst: &mut [u8; 16], a: [u8; 4]) {
    let words = dst.as_mut_ptr().cast::<u32>();
    let prefix = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
    // SAFETY: four words within `dst`, aligned (the caller's contract).
    unsafe {
        write_volatile(words, 0);
        write_volatile(words.add(1), 0);
        write_volatile(words.add(2), prefix);
        write_volatile(words.add(3), u32::from_ne_bytes(a));
    }
}
