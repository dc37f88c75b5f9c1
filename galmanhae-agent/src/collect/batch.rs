//! Reading a whole hash map in batches (`BPF_MAP_LOOKUP_BATCH`, 5.6+): one syscall per
//! few hundred entries, where iterating takes two per entry (`get_next_key`, then the lookup).
//! Under a storm the daemon reads a few thousand entries each pass: that was a tenth of its
//! CPU. aya 0.14 has no batch operations, so this is the raw syscall, as `task_iter.rs` does
//! for iterators. <https://elixir.bootlin.com/linux/v6.18/source/include/uapi/linux/bpf.h>

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// `BPF_MAP_LOOKUP_BATCH` in `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// The kernel's `ENOTSUPP` (not in libc): no batch operations for this map type.
const ENOTSUPP: i32 = 524;
/// Entries asked for per call; doubled when one hash bucket holds more (`ENOSPC`). Small
/// enough that the buffers stay below glibc's mmap threshold (128 KiB, see `malloc.rs`):
/// larger ones are mapped and faulted in again on every pass.
const FIRST_BATCH: u32 = 256;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry's key and value bytes, `key_size` and `value_size` each (a per-CPU map's value
/// is every possible CPU's, each rounded up to 8 bytes). `None` where the kernel has no batch
/// lookup (before 5.6, or not for this map): the caller iterates instead.
pub(crate) fn lookup_all(
    map: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
) -> Option<io::Result<(Vec<u8>, Vec<u8>)>> {
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    let mut count = FIRST_BATCH;
    // A hash map's batch token is a bucket index: a u32, kept in a u64.
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let filled = keys.len() / key_size.max(1);
        keys.resize((filled + count as usize) * key_size, 0);
        values.resize((filled + count as usize) * value_size, 0);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const token_in as u64 },
            out_batch: &raw mut token_out as u64,
            keys: keys[filled * key_size..].as_mut_ptr() as u64,
            values: values[filled * value_size..].as_mut_ptr() as u64,
            count,
            map_fd: u32::try_from(map.as_raw_fd()).unwrap_or(u32::MAX),
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at buffers of `count` keys and values, which the kernel fills
        // up to the count it writes back; the tokens are 8 bytes each.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let errno = (rc < 0).then(|| io::Error::last_os_error().raw_os_error().unwrap_or(0));
        // The count written back is what was filled, also with the end of the map (ENOENT).
        let got = match errno {
            None | Some(libc::ENOENT) => attr.count as usize,
            Some(_) => 0,
        };
        keys.truncate((filled + got) * key_size);
        values.truncate((filled + got) * value_size);
        match errno {
            None => {}
            Some(libc::ENOENT) => return Some(Ok((keys, values))),
            Some(libc::ENOSPC) if count < 1 << 20 => {
                count *= 2;
                continue;
            }
            Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP) if first => return None,
            Some(errno) => return Some(Err(io::Error::from_raw_os_error(errno))),
        }
        token_in = token_out;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd as _, FromRawFd as _, OwnedFd};

    use super::*;

    /// A hash map of `u32 -> u64` made with `BPF_MAP_CREATE` (root only: `None` otherwise).
    fn hash_map(entries: u32) -> Option<OwnedFd> {
        #[repr(C)]
        #[derive(Default)]
        struct CreateAttr {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            map_flags: u32,
        }
        let attr = CreateAttr {
            map_type: 1, // BPF_MAP_TYPE_HASH
            key_size: 4,
            value_size: 8,
            max_entries: entries,
            map_flags: 0,
        };
        // SAFETY: BPF_MAP_CREATE (0) with a valid attr prefix.
        let fd =
            unsafe { libc::syscall(libc::SYS_bpf, 0, &raw const attr, size_of::<CreateAttr>()) };
        // SAFETY: a new file descriptor we own.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap()) })
    }

    fn update(map: &OwnedFd, key: u32, value: u64) {
        #[repr(C)]
        struct ElemAttr {
            map_fd: u32,
            pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let attr = ElemAttr {
            map_fd: u32::try_from(map.as_raw_fd()).unwrap(),
            pad: 0,
            key: &raw const key as u64,
            value: &raw const value as u64,
            flags: 0,
        };
        // SAFETY: BPF_MAP_UPDATE_ELEM (2) with pointers to a key and a value of the map's sizes.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, 2, &raw const attr, size_of::<ElemAttr>()) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
    }

    #[test]
    fn every_entry_comes_back_once_across_batches() {
        let Some(map) = hash_map(5000) else {
            assert!(
                std::env::var("CI").is_err(),
                "BPF_MAP_CREATE refused under CI"
            );
            return;
        };
        for key in 0..3000u32 {
            update(&map, key, u64::from(key) * 7);
        }
        let (keys, values) = lookup_all(map.as_fd(), 4, 8)
            .expect("batch lookup")
            .unwrap();
        let mut read: Vec<(u32, u64)> = keys
            .chunks_exact(4)
            .zip(values.chunks_exact(8))
            .map(|(k, v)| {
                (
                    u32::from_ne_bytes(k.try_into().unwrap()),
                    u64::from_ne_bytes(v.try_into().unwrap()),
                )
            })
            .collect();
        read.sort_unstable();
        assert_eq!(read.len(), 3000);
        assert!(
            read.iter()
                .enumerate()
                .all(|(i, (k, v))| *k as usize == i && *v == u64::from(*k) * 7)
        );
    }

    #[test]
    fn an_empty_map_reads_empty() {
        let Some(map) = hash_map(16) else {
            assert!(
                std::env::var("CI").is_err(),
                "BPF_MAP_CREATE refused under CI"
            );
            return;
        };
        let (keys, values) = lookup_all(map.as_fd(), 4, 8)
            .expect("batch lookup")
            .unwrap();
        assert!(keys.is_empty() && values.is_empty());
    }
}
