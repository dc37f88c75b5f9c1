//! Installs everything a fresh Debian 12 machine of this kind lacks. Idempotent and quick
//! when everything is there.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

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

/// What `deploy/check.sh` runs: systemd-analyze (systemd), promtool and prometheus
/// (prometheus), Python 3 with `PyYAML` (python3-yaml), and curl for the throwaway
/// Prometheus's readiness.
const DEPLOY_CHECK_PACKAGES: &[&str] = &["systemd", "prometheus", "python3-yaml", "curl"];

/// The tools `cargo xtask bench` measures galmanhae against, and bpftool for the kernel-side
/// run time of every BPF program. Each package's command has the package's name: the bench
/// checks for and reports the versions of these commands.
pub(crate) const BENCH_PACKAGES: &[&str] = &[
    "bpftrace",
    "tcpdump",
    "tshark",
    "prometheus-node-exporter",
    "bpftool",
];

/// Packages whose maintainer scripts would start a service on a systemd host (Debian's
/// prometheus serves :9090 and scrapes from then on): installed with service starts refused.
/// prometheus-node-exporter likewise serves :9100. The package still enables its unit, so it
/// would start at the next boot.
const NO_START: &[&str] = &["prometheus", "prometheus-node-exporter"];

pub fn run() -> anyhow::Result<()> {
    let (held, plain): (Vec<&str>, Vec<&str>) = PACKAGES
        .iter()
        .chain(DEPLOY_CHECK_PACKAGES)
        .chain(BENCH_PACKAGES)
        .copied()
        .filter(|p| !installed(p))
        .partition(|p| NO_START.contains(p));
    if !plain.is_empty() || !held.is_empty() {
        sh("apt-get", &["update", "-q"], &[])?;
    }
    if !plain.is_empty() {
        apt_install(&plain)?;
    }
    if !held.is_empty() {
        let _no_starts = NoServiceStarts::new()?;
        apt_install(&held)?;
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

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(packages);
    sh("apt-get", &args, &[("DEBIAN_FRONTEND", "noninteractive")])
}

/// While it lives, package scripts may start no service: Debian's `policy-rc.d`, which
/// invoke-rc.d and deb-systemd-invoke ask first, answers 101 (refused). Puts back whatever
/// policy was there before (Docker's images ship one), or removes its own.
struct NoServiceStarts {
    path: PathBuf,
    previous: Option<(Vec<u8>, fs::Permissions)>,
}

impl NoServiceStarts {
    fn new() -> anyhow::Result<Self> {
        Self::at(Path::new("/usr/sbin/policy-rc.d"))
    }

    fn at(path: &Path) -> anyhow::Result<Self> {
        let read = || -> std::io::Result<_> {
            match fs::read(path) {
                Ok(contents) => Ok(Some((contents, fs::metadata(path)?.permissions()))),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        };
        let previous = read().with_context(|| format!("reading {}", path.display()))?;
        fs::write(
            path,
            "#!/bin/sh\n# cargo xtask setup: no service starts while it installs packages.\nexit 101\n",
        )
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o755)))
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            previous,
        })
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        let restored = match &self.previous {
            Some((contents, permissions)) => fs::write(&self.path, contents)
                .and_then(|()| fs::set_permissions(&self.path, permissions.clone())),
            None => fs::remove_file(&self.path),
        };
        if let Err(e) = restored {
            eprintln!(
                "xtask: warning: could not restore {}: {e}",
                self.path.display()
            );
        }
    }
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let home_bin = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(home_bin)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TempDir;

    fn refuses(path: &Path) -> bool {
        fs::read_to_string(path).unwrap().contains("exit 101")
            && fs::metadata(path).unwrap().permissions().mode() & 0o777 == 0o755
    }

    #[test]
    fn no_service_starts_removes_its_own_policy() {
        let tmp = TempDir::new("policy-absent");
        let path = tmp.0.join("policy-rc.d");
        let guard = NoServiceStarts::at(&path).unwrap();
        assert!(refuses(&path));
        drop(guard);
        assert!(!path.exists());
    }

    #[test]
    fn no_service_starts_puts_back_the_previous_policy() {
        let tmp = TempDir::new("policy-present");
        let path = tmp.0.join("policy-rc.d");
        fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        let guard = NoServiceStarts::at(&path).unwrap();
        assert!(refuses(&path));
        drop(guard);
        assert_eq!(fs::read_to_string(&path).unwrap(), "#!/bin/sh\nexit 0\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
