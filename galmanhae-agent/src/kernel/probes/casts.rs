//! Socket casts without a helper call, where the kernel allows it.
//!
//! The programs read `struct tcp_sock` members of a socket they get as `struct sock *`, which
//! the verifier only allows through a cast: `bpf_skc_to_tcp_sock`, a helper call (tens of ns
//! each under the return-thunk mitigations), on every kernel with BTF. Since 6.2 the
//! `bpf_rdonly_cast(obj, btf_id)` kfunc does the same for reading, and the verifier inlines it
//! into a register move. aya 0.14 cannot relocate kfunc calls, so the programs call the helper
//! with the kfunc's two arguments (`galmanhae-ebpf/src/kernel.rs`, `tcp_sock`), and here, on a
//! kernel that has the kfunc, each such call in the object is rewritten into a call of it
//! before the object is loaded. The object is otherwise untouched: same size, same relocations.
//! <https://elixir.bootlin.com/linux/v6.18/source/kernel/bpf/verifier.c> (`fixup_kfunc_call`)

/// `BPF_FUNC_skc_to_tcp_sock` in `enum bpf_func_id` (a stable UAPI number).
/// <https://elixir.bootlin.com/linux/v6.18/source/include/uapi/linux/bpf.h>
const SKC_TO_TCP_SOCK: u32 = 137;
/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
/// `src_reg` of a call to a kernel function (`BPF_PSEUDO_KFUNC_CALL`).
const PSEUDO_KFUNC_CALL: u8 = 2;
/// `SHF_EXECINSTR`: a section of instructions.
const EXECUTABLE: u64 = 0x4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum CastError {
    #[error("the eBPF object is not a 64-bit little-endian ELF file")]
    NotElf,
    #[error("the eBPF object's section table lies outside the file")]
    Truncated,
}

/// A copy of the object, 8-byte aligned as the ELF parser wants it.
#[derive(Debug)]
pub(crate) struct Object {
    words: Vec<u64>,
    len: usize,
}

impl Object {
    fn copy_of(bytes: &[u8]) -> Self {
        let mut object = Self {
            words: vec![0; bytes.len().div_ceil(8)],
            len: bytes.len(),
        };
        object.bytes_mut().copy_from_slice(bytes);
        object
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: any bytes are valid u8s; `len` is within the words' memory.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and the words are borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast(), self.len) }
    }
}

/// The object with every `bpf_skc_to_tcp_sock` call turned into a call of the kfunc whose
/// vmlinux BTF id is `kfunc` (`bpf_rdonly_cast`), and how many calls that was.
pub(crate) fn rdonly_casts(object: &[u8], kfunc: u32) -> Result<(Object, usize), CastError> {
    let sections = executable_sections(object)?;
    let mut copy = Object::copy_of(object);
    let bytes = copy.bytes_mut();
    let mut patched = 0;
    for (start, end) in sections {
        for insn in bytes[start..end].chunks_exact_mut(8) {
            let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
            let helper_call = insn[0] == CALL && insn[1] >> 4 == 0;
            if helper_call && u32::try_from(imm) == Ok(SKC_TO_TCP_SOCK) {
                insn[1] = (PSEUDO_KFUNC_CALL << 4) | (insn[1] & 0x0f);
                insn[4..8].copy_from_slice(&kfunc.to_le_bytes());
                patched += 1;
            }
        }
    }
    Ok((copy, patched))
}

/// Byte ranges of the sections that hold instructions.
fn executable_sections(elf: &[u8]) -> Result<Vec<(usize, usize)>, CastError> {
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err(CastError::NotElf);
    }
    let table = u64_at(0x28).ok_or(CastError::Truncated)?;
    let entry = u16_at(0x3a).ok_or(CastError::Truncated)?;
    let count = u16_at(0x3c).ok_or(CastError::Truncated)?;
    let mut sections = Vec::new();
    for i in 0..u64::from(count) {
        let header =
            usize::try_from(table + i * u64::from(entry)).map_err(|_| CastError::Truncated)?;
        let flags = u64_at(header + 8).ok_or(CastError::Truncated)?;
        let offset = u64_at(header + 0x18).ok_or(CastError::Truncated)?;
        let size = u64_at(header + 0x20).ok_or(CastError::Truncated)?;
        if flags & EXECUTABLE == 0 || size == 0 {
            continue;
        }
        let start = usize::try_from(offset).map_err(|_| CastError::Truncated)?;
        let end = usize::try_from(offset + size).map_err(|_| CastError::Truncated)?;
        if end > elf.len() || size % 8 != 0 {
            return Err(CastError::Truncated);
        }
        sections.push((start, end));
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF header, one null section and one executable section holding `code`.
    fn elf_with(code: &[u8]) -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let code_at = 64;
        let table = code_at + code.len();
        elf[0x28..0x30].copy_from_slice(&(table as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&2u16.to_le_bytes());
        elf.extend_from_slice(code);
        elf.extend_from_slice(&[0; 64]);
        let mut section = [0u8; 64];
        section[8..16].copy_from_slice(&EXECUTABLE.to_le_bytes());
        section[0x18..0x20].copy_from_slice(&(code_at as u64).to_le_bytes());
        section[0x20..0x28].copy_from_slice(&(code.len() as u64).to_le_bytes());
        elf.extend_from_slice(&section);
        elf
    }

    fn insn(code: u8, regs: u8, imm: u32) -> [u8; 8] {
        let mut insn = [code, regs, 0, 0, 0, 0, 0, 0];
        insn[4..].copy_from_slice(&imm.to_le_bytes());
        insn
    }

    #[test]
    fn only_calls_of_the_cast_helper_become_kfunc_calls() {
        let cast = insn(CALL, 0, SKC_TO_TCP_SOCK);
        let other_helper = insn(CALL, 0, 14);
        let bpf_to_bpf = insn(CALL, 0x10, SKC_TO_TCP_SOCK);
        let mov = insn(0xb7, 0x01, SKC_TO_TCP_SOCK);
        let code = [cast, other_helper, bpf_to_bpf, mov, cast].concat();
        let elf = elf_with(&code);
        let (object, patched) = rdonly_casts(&elf, 52_000).unwrap();
        assert_eq!(patched, 2);
        let bytes = object.bytes();
        let kfunc = insn(CALL, PSEUDO_KFUNC_CALL << 4, 52_000);
        let expected = [kfunc, other_helper, bpf_to_bpf, mov, kfunc].concat();
        assert_eq!(&bytes[64..64 + code.len()], expected.as_slice());
        assert_eq!(&bytes[..64], &elf[..64]);
        assert_eq!(&bytes[64 + code.len()..], &elf[64 + code.len()..]);
    }

    #[test]
    fn not_an_elf_or_a_cut_one_is_refused() {
        assert_eq!(
            rdonly_casts(b"not an object", 1).unwrap_err(),
            CastError::NotElf
        );
        let elf = elf_with(&insn(CALL, 0, 1));
        assert_eq!(
            rdonly_casts(&elf[..elf.len() - 40], 1).unwrap_err(),
            CastError::Truncated
        );
    }

    #[test]
    fn the_programs_cast_sockets_through_the_helper() {
        let (_, patched) = rdonly_casts(super::super::load::PROGRAMS, 1).unwrap();
        // The retransmit program, the congestion-state one twice.
        assert!(patched >= 3, "{patched} casts");
    }
}
