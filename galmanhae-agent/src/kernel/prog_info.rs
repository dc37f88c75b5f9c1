//! `bpf_prog_info.recursion_misses` (Linux 5.12+), which aya does not expose: runs the kernel
//! skipped because another tracing program was already running on the same CPU (a tracepoint
//! program interrupted by a softirq whose tracepoint has a program too). Skipped runs are
//! events the maps never saw, so the report counts them as lost.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// `BPF_OBJ_GET_INFO_BY_FD` of `enum bpf_cmd` (include/uapi/linux/bpf.h): a syscall number of
/// the stable ABI, not a struct layout.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `info` member of `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The program's `recursion_misses`; `offset` is that member's offset in `struct
/// bpf_prog_info`, from the kernel's BTF. Only the bytes up to it are asked for.
pub(crate) fn recursion_misses(program: BorrowedFd<'_>, offset: u32) -> io::Result<u64> {
    let mut info = vec![0u8; offset as usize + size_of::<u64>()];
    let attr = InfoAttr {
        bpf_fd: u32::try_from(program.as_raw_fd()).map_err(io::Error::other)?,
        info_len: u32::try_from(info.len()).map_err(io::Error::other)?,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `attr` describes a writable buffer of `info_len` bytes that outlives the call;
    // the kernel writes at most that many.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw const attr,
            size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let field = &info[offset as usize..];
    Ok(u64::from_ne_bytes(
        field[..8].try_into().map_err(io::Error::other)?,
    ))
}
