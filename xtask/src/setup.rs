//! Installs everything a fresh Debian 12 machine of this kind lacks. Idempotent and quick
//! when everything is there.

use std::process::Command;

use crate::sh;

/// Debian packages: LLVM 22 for bpf-linker (rustc's nightly LLVM), the lab's tools, and the
/// peers later benchmarks compare against.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "docker.io",
    "iproute2",
    "iptables",
    "busybox-static",
    "socat",
    "conntrack",
];

pub fn run() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if !missing.is_empty() {
        sh("apt-get", &["update", "-q"], &[])?;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(&missing);
        sh("apt-get", &args, &[("DEBIAN_FRONTEND", "noninteractive")])?;
    }
    // aya-build compiles the programs with the nightly toolchain and -Z build-std=core.
    let has_src = Command::new("rustup")
        .args(["+nightly", "component", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("rust-src")
        });
    if !has_src {
        sh(
            "rustup",
            &[
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ],
            &[],
        )?;
    }
    if which("bpf-linker").is_none() {
        // bpf-linker must link against the LLVM major version of the nightly's rustc (22).
        let path = format!(
            "/usr/lib/llvm-22/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        sh(
            "cargo",
            &[
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                "0.13.0",
                "--no-default-features",
                "--features",
                "llvm-22",
            ],
            &[("LLVM_PREFIX", "/usr/lib/llvm-22"), ("PATH", &path)],
        )?;
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    let home_bin = std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(home_bin)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
