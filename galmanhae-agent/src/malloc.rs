//! glibc malloc settings for a small, long-lived daemon.
//!
//! By default glibc keeps memory a process freed: each thread that allocates gets an arena of
//! its own (up to 8 per core), and freeing a large buffer raises the size below which buffers
//! come from the heap (up to 32 MB) and the free space the heap keeps (twice that). One start-up
//! buffer of a few MB then leaves every later pass's buffers in the heaps, and their pages in
//! RSS after they are freed.

/// Called first in `main`, before any thread: one arena, and fixed thresholds so that the
/// start-up's buffers of several MB (the kernel's symbol table, BTF) are mapped apart and
/// unmapped when freed, while a pass's buffers (up to 1 MiB) come from the heap and are
/// reused by the next pass instead of being mapped, faulted in and unmapped each time (a
/// fifth of the daemon's CPU under a storm with 128 KiB). The heap keeps up to 4 MiB free.
pub(crate) fn configure() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; no thread allocates concurrently yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 * 1024 * 1024);
    }
}

/// Returns the heap's free pages to the kernel, also those below the top of the heap that
/// trimming at `free` cannot reach: after start-up (not after each pass: the next one would
/// fault them in again).
pub(crate) fn release_free() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim is thread-safe and only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}
