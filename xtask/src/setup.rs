//! Installs everything a fresh Debian 12 machine of this kind lacks. Idempotent and quick
//! when everything is there.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use galmanhae_toolchain as toolchain;

use crate::step::Steps;

/// The lab's tools.
const LAB_PACKAGES: &[&str] = &[
    "docker.io",
    "iproute2",
    "iptables",
    "busybox-static",
    "socat",
    "conntrack",
    // GNU time: the bench's peak RSS of a short-lived command (a child of a small process,
    // not of xtask, whose own RSS `wait4` would report).
    "time",
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

/// `cargo xtask vm-test`: qemu, the initramfs packer, and kmod's modprobe and depmod for the
/// guest kernel's modules.
const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "cpio",
    "kmod",
    "busybox-static",
    "iproute2",
    "bpftool",
];

/// Packages whose maintainer scripts would start a service on a systemd host (Debian's
/// prometheus serves :9090 and scrapes from then on): installed with service starts refused.
/// prometheus-node-exporter likewise serves :9100. The package still enables its unit, so it
/// would start at the next boot.
const NO_START: &[&str] = &["prometheus", "prometheus-node-exporter"];

/// Debian's LLVM of the pinned nightly, which bpf-linker links against.
fn llvm_packages() -> Vec<String> {
    let major = toolchain::LLVM_MAJOR;
    vec![
        format!("llvm-{major}-dev"),
        format!("libpolly-{major}-dev"),
        "zlib1g-dev".to_owned(),
        "libzstd-dev".to_owned(),
    ]
}

/// Installs what is missing, one line per step (the output in `target/xtask/setup.log`), then
/// checks that the pinned nightly's LLVM and bpf-linker's agree.
pub fn run() -> anyhow::Result<()> {
    let steps = Steps::new("setup")?;
    apt_packages(&steps)?;
    nightly(&steps)?;
    bpf_linker(&steps)?;
    let verdict = toolchain::check(&toolchain::toolchain());
    if let Some(blocker) = verdict.blocker() {
        anyhow::bail!("{blocker}");
    }
    if let Some(warning) = verdict.warning() {
        eprintln!("xtask: setup: warning: {warning}");
    }
    Ok(())
}

fn apt_packages(steps: &Steps) -> anyhow::Result<()> {
    let llvm = llvm_packages();
    let groups: [(&str, Vec<&str>); 5] = [
        (
            "bpf-linker's LLVM",
            llvm.iter().map(String::as_str).collect(),
        ),
        ("the lab", LAB_PACKAGES.to_vec()),
        ("the deploy checks", DEPLOY_CHECK_PACKAGES.to_vec()),
        ("the bench's peers", BENCH_PACKAGES.to_vec()),
        ("the VM test", VM_PACKAGES.to_vec()),
    ];
    let mut why = Vec::new();
    let mut missing = Vec::new();
    for (purpose, packages) in &groups {
        let absent: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
        if !absent.is_empty() {
            why.push(*purpose);
            missing.extend(absent);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let why = format!("for {}", why.join(", "));
    steps.run(
        "refreshing Debian's package lists",
        &why,
        "apt-get",
        &["update", "-q"],
        &[],
    )?;
    let (held, plain): (Vec<&str>, Vec<&str>) = missing.iter().partition(|p| NO_START.contains(p));
    if !plain.is_empty() {
        apt_install(steps, &plain, &why)?;
    }
    if !held.is_empty() {
        let _no_starts = NoServiceStarts::new()?;
        apt_install(steps, &held, "service starts refused while installing")?;
    }
    Ok(())
}

/// aya-build compiles the programs with the pinned nightly and -Z build-std=core (rust-src);
/// the lint runs that nightly's clippy on the eBPF crate.
fn nightly(steps: &Steps) -> anyhow::Result<()> {
    let nightly = toolchain::NIGHTLY;
    let installed = Command::new("rustup")
        .args([&format!("+{nightly}"), "component", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            let list = String::from_utf8_lossy(&o.stdout);
            o.status.success() && list.contains("rust-src") && list.contains("clippy")
        });
    if installed {
        return Ok(());
    }
    steps.run(
        &format!("installing the Rust toolchain {nightly} with rust-src and clippy"),
        &format!(
            "it builds the eBPF programs; LLVM {}",
            toolchain::LLVM_MAJOR
        ),
        "rustup",
        &[
            "toolchain",
            "install",
            nightly,
            "--profile",
            "minimal",
            "--component",
            "rust-src,clippy",
        ],
        &[],
    )
}

/// bpf-linker at the pinned version, built against the pinned nightly's LLVM; rebuilt when
/// the one installed is another version or was built for another LLVM.
fn bpf_linker(steps: &Steps) -> anyhow::Result<()> {
    let (version, llvm) = (toolchain::BPF_LINKER_VERSION, toolchain::LLVM_MAJOR);
    if let Some(found) = installed_bpf_linker() {
        if found.version.as_deref() == Some(version) && found.llvm.is_none_or(|m| m == llvm) {
            return Ok(());
        }
        steps.present(&format!(
            "bpf-linker {} (LLVM {}) is not the pinned {version} for LLVM {llvm}: rebuilding it",
            found.version.as_deref().unwrap_or("of unknown version"),
            found
                .llvm
                .map_or_else(|| "unknown".to_owned(), |m| m.to_string()),
        ));
    }
    let prefix = toolchain::llvm_prefix(llvm);
    let path = format!("{prefix}/bin:{}", std::env::var("PATH").unwrap_or_default());
    let feature = toolchain::bpf_linker_feature();
    steps.run(
        &format!("building bpf-linker {version} for LLVM {llvm}"),
        "it links the eBPF programs; about 3 minutes on 2 cores",
        "cargo",
        &[
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--version",
            version,
            "--no-default-features",
            "--features",
            &feature,
        ],
        &[("LLVM_PREFIX", &prefix), ("PATH", &path)],
    )
}

struct InstalledLinker {
    version: Option<String>,
    llvm: Option<u32>,
}

fn installed_bpf_linker() -> Option<InstalledLinker> {
    let path = toolchain::find_in_path("bpf-linker")?;
    let version = Command::new(&path)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let out = String::from_utf8_lossy(&o.stdout);
            out.split_whitespace().nth(1).map(str::to_owned)
        });
    let llvm = toolchain::linker_llvm_major(&path);
    Some(InstalledLinker { version, llvm })
}

fn apt_install(steps: &Steps, packages: &[&str], why: &str) -> anyhow::Result<()> {
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(packages);
    steps.run(
        &format!("installing {}", packages.join(" ")),
        why,
        "apt-get",
        &args,
        &[("DEBIAN_FRONTEND", "noninteractive")],
    )
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
