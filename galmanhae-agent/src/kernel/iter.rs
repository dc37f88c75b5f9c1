//! BPF iterators by hand: aya 0.14 hands out an iterator's output only once
//! (`IterLink::into_file` consumes the link), so the link is made here and kept, and each
//! reading opens a new output with `BPF_ITER_CREATE`. Both are commands of the stable `bpf()`
//! ABI.
//! <https://elixir.bootlin.com/linux/v6.18/source/include/uapi/linux/bpf.h> (`union bpf_attr`)

use std::{
    fs::File,
    io::{self, Read as _},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

/// `enum bpf_cmd` and `enum bpf_attach_type` values (stable ABI).
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;

/// The `link_create` member of `union bpf_attr`, without the per-type tail (zero for an
/// iterator that needs no target).
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    iter_info: u64,
    iter_info_len: u32,
    padding: u32,
}

/// The `iter_create` member of `union bpf_attr`.
#[repr(C)]
struct IterCreateAttr {
    link_fd: u32,
    flags: u32,
}

/// An attached iterator: each [`read`](Self::read) runs it once over what it iterates.
#[derive(Debug)]
pub(crate) struct IterLink(OwnedFd);

impl IterLink {
    /// Attaches a loaded iterator program.
    pub(crate) fn create(program: BorrowedFd<'_>) -> io::Result<Self> {
        let attr = LinkCreateAttr {
            prog_fd: fd_u32(program)?,
            target_fd: 0,
            attach_type: BPF_TRACE_ITER,
            flags: 0,
            iter_info: 0,
            iter_info_len: 0,
            padding: 0,
        };
        bpf(BPF_LINK_CREATE, &attr).map(Self)
    }

    /// One run of the iterator: what its program wrote, appended to `out`.
    pub(crate) fn read(&self, out: &mut Vec<u8>) -> io::Result<usize> {
        let attr = IterCreateAttr {
            link_fd: fd_u32(self.0.as_fd())?,
            flags: 0,
        };
        File::from(bpf(BPF_ITER_CREATE, &attr)?).read_to_end(out)
    }
}

pub(super) fn fd_u32(fd: BorrowedFd<'_>) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(io::Error::other)
}

/// A `bpf()` command that answers with a new file descriptor.
fn bpf<T>(command: libc::c_long, attr: &T) -> io::Result<OwnedFd> {
    let fd = bpf_call(command, attr)?;
    // SAFETY: a file descriptor the kernel just created for this process and nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A `bpf()` command; its non-negative answer.
pub(super) fn bpf_call<T>(command: libc::c_long, attr: &T) -> io::Result<i32> {
    // SAFETY: `attr` is a valid `union bpf_attr` prefix for `command`, `size_of::<T>()` bytes
    // long, and what it points to lives through the call; the kernel zero-extends the rest.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_ref(attr),
            size_of::<T>(),
        )
    };
    let fd = i32::try_from(rc).map_err(io::Error::other)?;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}
