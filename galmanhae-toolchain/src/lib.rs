//! The toolchain that builds galmanhae's eBPF programs, named once.
//!
//! `galmanhae-agent/build.rs` builds the programs with [`NIGHTLY`], `cargo xtask setup` installs
//! it (with `rust-src`) and bpf-linker [`BPF_LINKER_VERSION`] for LLVM [`LLVM_MAJOR`], and both
//! run [`check`] first. rustc emits the programs as LLVM bitcode that bpf-linker reads with its
//! own LLVM; bitcode from a newer LLVM fails deep in the link with `ERROR llvm: Invalid record`,
//! so a mismatch is stopped before it with a message that names both versions.
//!
//! Moving the pin (README, development notes): pick a dated nightly whose
//! `rustc +nightly-YYYY-MM-DD -vV` prints an `LLVM version` that Debian packages as
//! `llvm-N-dev`, and set [`NIGHTLY`] and [`LLVM_MAJOR`] together; setup then rebuilds
//! bpf-linker with `--features llvm-N`.

mod llvm;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use llvm::{Mismatch, Verdict, bpf_linker_llvm_major, decide, rustc_llvm_major};

/// The dated nightly that compiles the programs (`-Z build-std=core`, needs `rust-src`).
/// rustc 1.97.0-nightly (2026-05-19) with LLVM 22.1.4.
pub const NIGHTLY: &str = "nightly-2026-05-20";

/// The LLVM major of [`NIGHTLY`]'s rustc, which bpf-linker must be built against.
pub const LLVM_MAJOR: u32 = 22;

/// bpf-linker, installed with `cargo install --locked --version`.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Overrides [`NIGHTLY`] for one build, to try a newer nightly before moving the pin.
pub const TOOLCHAIN_ENV: &str = "GALMANHAE_BPF_TOOLCHAIN";

/// The toolchain this build uses: [`TOOLCHAIN_ENV`] when set, else [`NIGHTLY`].
pub fn toolchain() -> String {
    std::env::var(TOOLCHAIN_ENV)
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| NIGHTLY.to_owned())
}

/// bpf-linker's cargo feature for [`LLVM_MAJOR`].
pub fn bpf_linker_feature() -> String {
    format!("llvm-{LLVM_MAJOR}")
}

/// Where Debian's `llvm-N-dev` puts LLVM `major`.
pub fn llvm_prefix(major: u32) -> String {
    format!("/usr/lib/llvm-{major}")
}

/// The command that installs bpf-linker for LLVM `major`, as a person would type it.
pub fn bpf_linker_install_command(major: u32) -> String {
    format!(
        "apt-get install -y llvm-{major}-dev libpolly-{major}-dev && \
         LLVM_PREFIX={prefix} PATH={prefix}/bin:$PATH cargo install bpf-linker --locked \
         --version {BPF_LINKER_VERSION} --no-default-features --features llvm-{major} --force",
        prefix = llvm_prefix(major)
    )
}

/// Compares `toolchain`'s LLVM with the bpf-linker on `PATH` (or in `~/.cargo/bin`).
pub fn check(toolchain: &str) -> Verdict {
    let rustc = Command::new("rustc")
        .arg(format!("+{toolchain}"))
        .arg("-vV")
        .output();
    let rustc = match rustc {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            return Verdict::ToolchainMissing {
                toolchain: toolchain.to_owned(),
                detail: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            };
        }
        Err(e) => {
            return Verdict::ToolchainMissing {
                toolchain: toolchain.to_owned(),
                detail: format!("running rustc: {e}"),
            };
        }
    };
    let Some(linker) = find_in_path("bpf-linker") else {
        return Verdict::LinkerMissing;
    };
    decide(toolchain, &rustc, linker_llvm_major(&linker))
}

/// The LLVM major the bpf-linker binary at `path` links (None when it cannot be told).
pub fn linker_llvm_major(path: &Path) -> Option<u32> {
    std::fs::read(path)
        .ok()
        .and_then(|binary| bpf_linker_llvm_major(&binary))
}

/// `program` on `PATH`, or in `~/.cargo/bin` where `cargo install` puts it.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home_bin = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(home_bin)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
