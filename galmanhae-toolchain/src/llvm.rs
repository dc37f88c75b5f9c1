//! Reading the two LLVM versions and deciding whether the programs can link.

use crate::{BPF_LINKER_VERSION, LLVM_MAJOR, NIGHTLY, TOOLCHAIN_ENV, bpf_linker_install_command};

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// rustc and bpf-linker use the same LLVM major.
    Agree { llvm: u32 },
    /// They differ: the link would fail with `Invalid record` (or worse, link wrongly).
    Mismatch(Mismatch),
    /// bpf-linker names no shared libLLVM (a static build): the link goes ahead unchecked.
    LinkerUnknown { toolchain: String, rustc_llvm: u32 },
    /// `rustc +TOOLCHAIN -vV` printed no LLVM version.
    RustcUnknown { toolchain: String },
    /// `rustc +TOOLCHAIN` did not run (the toolchain is not installed).
    ToolchainMissing { toolchain: String, detail: String },
    /// No bpf-linker on `PATH` or in `~/.cargo/bin`.
    LinkerMissing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub toolchain: String,
    pub rustc_llvm: u32,
    pub linker_llvm: u32,
}

/// The LLVM major in `rustc -vV`'s `LLVM version: 22.1.4` line.
pub fn rustc_llvm_major(verbose_version: &str) -> Option<u32> {
    verbose_version
        .lines()
        .find_map(|l| l.trim().strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
}

/// The LLVM major of the shared libLLVM a bpf-linker binary needs (`libLLVM.so.22.1`,
/// `libLLVM-17.so`), read from the NUL-separated names of its dynamic string table.
/// None when it names none (a static build) or more than one major.
pub fn bpf_linker_llvm_major(binary: &[u8]) -> Option<u32> {
    let mut majors = binary
        .split(|&b| b == 0)
        .filter_map(|name| name.strip_prefix(b"libLLVM"))
        .filter_map(|rest| {
            let rest = rest
                .strip_prefix(b".so.")
                .or_else(|| rest.strip_prefix(b"-"))?;
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
        });
    let first = majors.next()?;
    majors.all(|m| m == first).then_some(first)
}

/// The verdict on `toolchain`'s `rustc -vV` output and bpf-linker's LLVM major.
pub fn decide(toolchain: &str, rustc_verbose_version: &str, linker_llvm: Option<u32>) -> Verdict {
    let toolchain = toolchain.to_owned();
    let Some(rustc_llvm) = rustc_llvm_major(rustc_verbose_version) else {
        return Verdict::RustcUnknown { toolchain };
    };
    match linker_llvm {
        None => Verdict::LinkerUnknown {
            toolchain,
            rustc_llvm,
        },
        Some(linker_llvm) if linker_llvm == rustc_llvm => Verdict::Agree { llvm: rustc_llvm },
        Some(linker_llvm) => Verdict::Mismatch(Mismatch {
            toolchain,
            rustc_llvm,
            linker_llvm,
        }),
    }
}

impl Verdict {
    /// Why the programs cannot be built, and the command that fixes it; None when they can.
    pub fn blocker(&self) -> Option<String> {
        match self {
            Self::Agree { .. } | Self::LinkerUnknown { .. } => None,
            Self::Mismatch(m) => Some(m.to_string()),
            Self::RustcUnknown { toolchain } => Some(format!(
                "`rustc +{toolchain} -vV` printed no `LLVM version` line, so its LLVM cannot be \
                 matched with bpf-linker's; run `cargo xtask setup`"
            )),
            Self::ToolchainMissing { toolchain, detail } => Some(format!(
                "the eBPF programs are built with the toolchain {toolchain}, which does not run \
                 ({detail}); run `cargo xtask setup` (it installs {NIGHTLY} with rust-src)"
            )),
            Self::LinkerMissing => Some(format!(
                "bpf-linker is not installed (looked on PATH and in ~/.cargo/bin); run `cargo \
                 xtask setup` (it builds bpf-linker {BPF_LINKER_VERSION} for LLVM {LLVM_MAJOR})"
            )),
        }
    }

    /// A caveat to print when the build goes ahead unchecked.
    pub fn warning(&self) -> Option<String> {
        match self {
            Self::LinkerUnknown {
                toolchain,
                rustc_llvm,
            } => Some(format!(
                "bpf-linker links no shared libLLVM, so its LLVM cannot be read; rustc \
                 +{toolchain} has LLVM {rustc_llvm}. If the link fails with `Invalid record`, \
                 bpf-linker was built for another LLVM: {}",
                bpf_linker_install_command(*rustc_llvm)
            )),
            _ => None,
        }
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            toolchain,
            rustc_llvm,
            linker_llvm,
        } = self;
        write!(
            f,
            "LLVM mismatch: rustc +{toolchain} has LLVM {rustc_llvm}, bpf-linker was built \
             against LLVM {linker_llvm}; the eBPF programs would fail to link (`ERROR llvm: \
             Invalid record`). Fix: "
        )?;
        if toolchain != NIGHTLY {
            write!(
                f,
                "unset {TOOLCHAIN_ENV} to build with the pinned {NIGHTLY} (LLVM {LLVM_MAJOR}); \
                 or, to move to LLVM {rustc_llvm}, rebuild bpf-linker for it: {}",
                bpf_linker_install_command(*rustc_llvm)
            )
        } else if *linker_llvm != LLVM_MAJOR {
            write!(
                f,
                "`cargo xtask setup` (it rebuilds bpf-linker {BPF_LINKER_VERSION} with --features \
                 llvm-{LLVM_MAJOR}), or by hand: {}",
                bpf_linker_install_command(LLVM_MAJOR)
            )
        } else {
            write!(
                f,
                "the pin is inconsistent: galmanhae-toolchain's LLVM_MAJOR is {LLVM_MAJOR} but \
                 {NIGHTLY} has LLVM {rustc_llvm}; set LLVM_MAJOR to {rustc_llvm} and run `cargo \
                 xtask setup`"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_VV: &str = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\n\
        commit-hash: e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a\ncommit-date: 2026-05-19\n\
        host: x86_64-unknown-linux-gnu\nrelease: 1.97.0-nightly\nLLVM version: 22.1.4\n";
    const FLOATING_VV: &str = "rustc 1.101.0-nightly (3c2a5f1de 2026-10-29)\nbinary: rustc\n\
        host: x86_64-unknown-linux-gnu\nrelease: 1.101.0-nightly\nLLVM version: 23.1.4\n";

    fn dynstr(names: &[&str]) -> Vec<u8> {
        let mut bytes = b"\x7fELF junk\0".to_vec();
        for name in names {
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(0);
        }
        bytes
    }

    #[test]
    fn reads_rustc_llvm_major() {
        assert_eq!(rustc_llvm_major(PINNED_VV), Some(22));
        assert_eq!(rustc_llvm_major(FLOATING_VV), Some(23));
        assert_eq!(rustc_llvm_major("rustc 1.95.0\nrelease: 1.95.0\n"), None);
        assert_eq!(rustc_llvm_major("LLVM version: x.1\n"), None);
    }

    #[test]
    fn reads_the_linkers_libllvm_soname() {
        let debian = dynstr(&["libc.so.6", "libLLVM.so.22.1", "libzstd.so.1"]);
        assert_eq!(bpf_linker_llvm_major(&debian), Some(22));
        assert_eq!(bpf_linker_llvm_major(&dynstr(&["libLLVM-17.so"])), Some(17));
        assert_eq!(bpf_linker_llvm_major(&dynstr(&["libLLVM.so.23"])), Some(23));
    }

    #[test]
    fn a_static_or_ambiguous_linker_is_unknown() {
        assert_eq!(bpf_linker_llvm_major(&dynstr(&["libc.so.6"])), None);
        assert_eq!(bpf_linker_llvm_major(&dynstr(&["libLLVMSupport"])), None);
        let two = dynstr(&["libLLVM.so.22.1", "libLLVM-21.so"]);
        assert_eq!(bpf_linker_llvm_major(&two), None);
    }

    #[test]
    fn matching_majors_agree() {
        let verdict = decide(NIGHTLY, PINNED_VV, Some(22));
        assert_eq!(verdict, Verdict::Agree { llvm: 22 });
        assert_eq!(verdict.blocker(), None);
        assert_eq!(verdict.warning(), None);
    }

    #[test]
    fn the_floating_nightly_against_an_llvm_22_linker_names_both_and_the_fix() {
        let verdict = decide("nightly", FLOATING_VV, Some(22));
        let message = verdict.blocker().unwrap();
        assert!(message.contains("rustc +nightly has LLVM 23"), "{message}");
        assert!(
            message.contains("bpf-linker was built against LLVM 22"),
            "{message}"
        );
        assert!(message.contains("Invalid record"), "{message}");
        assert!(
            message.contains(&format!("unset {TOOLCHAIN_ENV}")),
            "{message}"
        );
        assert!(message.contains("--features llvm-23"), "{message}");
    }

    #[test]
    fn a_linker_for_another_llvm_is_rebuilt_by_setup() {
        let message = decide(NIGHTLY, PINNED_VV, Some(21)).blocker().unwrap();
        assert!(
            message.contains("LLVM 22, bpf-linker was built against LLVM 21"),
            "{message}"
        );
        assert!(message.contains("cargo xtask setup"), "{message}");
        assert!(message.contains("--features llvm-22"), "{message}");
    }

    #[test]
    fn a_pin_whose_llvm_major_is_stale_says_so() {
        let message = decide(NIGHTLY, FLOATING_VV, Some(LLVM_MAJOR))
            .blocker()
            .unwrap();
        assert!(message.contains("the pin is inconsistent"), "{message}");
        assert!(message.contains("set LLVM_MAJOR to 23"), "{message}");
    }

    #[test]
    fn an_unreadable_linker_warns_and_goes_ahead() {
        let verdict = decide(NIGHTLY, PINNED_VV, None);
        assert_eq!(verdict.blocker(), None);
        let warning = verdict.warning().unwrap();
        assert!(warning.contains("LLVM 22"), "{warning}");
        assert!(warning.contains("--features llvm-22"), "{warning}");
    }

    #[test]
    fn missing_tools_block_with_the_setup_command() {
        let verdict = decide(NIGHTLY, "error: toolchain not installed", Some(22));
        assert!(verdict.blocker().unwrap().contains("cargo xtask setup"));
        assert!(
            Verdict::LinkerMissing
                .blocker()
                .unwrap()
                .contains("bpf-linker 0.13.0 for LLVM 22")
        );
        let missing = Verdict::ToolchainMissing {
            toolchain: NIGHTLY.to_owned(),
            detail: "error: toolchain 'nightly-2026-05-20' is not installed".to_owned(),
        };
        assert!(missing.blocker().unwrap().contains("is not installed"));
    }
}
