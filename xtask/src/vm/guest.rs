//! The guest's initramfs: busybox, the agent and the lab's tools with the libraries `ldd`
//! lists, the kernel modules the guest lab loads with their dependencies, and `/init`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// Modules the guest lab loads (the cloud kernel builds them as modules).
pub(crate) const MODULES: &[&str] = &[
    "veth",
    "bridge",
    "nf_conntrack",
    "nf_conntrack_netlink",
    "nf_nat",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "xt_statistic",
    "xt_MASQUERADE",
    "sch_ingress",
    "cls_bpf",
    "ip_tables",
    "xt_tcpudp",
];

/// busybox applets the init script uses.
const APPLETS: &[&str] = &[
    "sh", "mount", "mkdir", "cat", "echo", "sleep", "poweroff", "grep", "head", "modprobe", "kill",
    "timeout", "seq", "wget",
];

/// Host binaries the guest runs, copied with their libraries.
const BINARIES: &[(&str, &str)] = &[
    ("ip", "/bin/ip"),
    ("tc", "/sbin/tc"),
    ("bpftool", "/sbin/bpftool"),
    ("socat", "/bin/socat"),
    ("xtables-nft-multi", "/sbin/xtables-nft-multi"),
];

/// Builds `root` and packs it into `initrd`. `kernel` is the extracted kernel package.
pub(crate) fn build(
    root: &Path,
    initrd: &Path,
    kernel: &Path,
    release: &str,
    agent: &Path,
    bytes: u64,
) -> anyhow::Result<()> {
    for dir in ["bin", "sbin", "proc", "sys", "dev", "tmp", "run", "etc"] {
        fs::create_dir_all(root.join(dir))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("busybox not found: apt-get install busybox-static")?;
    fs::copy(busybox, root.join("bin/busybox"))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    // The kernel loads modules on demand (clsact's sch_ingress, cls_bpf) through /sbin/modprobe.
    std::os::unix::fs::symlink("../bin/busybox", root.join("sbin/modprobe"))?;
    copy_with_libraries(agent, &root.join("bin/galmanhae"), root)?;
    for (program, target) in BINARIES {
        let host = galmanhae_toolchain::find_in_path(program)
            .with_context(|| format!("{program} not found (cargo xtask setup installs it)"))?;
        copy_with_libraries(&host, &root.join(target.trim_start_matches('/')), root)?;
    }
    // The agent reads the NAT rules with iptables-save, as on a host.
    for name in ["iptables", "iptables-save", "ip6tables", "ip6tables-save"] {
        std::os::unix::fs::symlink("xtables-nft-multi", root.join("sbin").join(name))?;
    }
    copy_tree(
        Path::new("/usr/lib/x86_64-linux-gnu/xtables"),
        &root.join("usr/lib/x86_64-linux-gnu/xtables"),
    )?;
    copy_modules(kernel, root, release)?;
    fs::write(
        root.join("etc/vm-test.env"),
        format!(
            "export GUEST_MODULES='{}'\nexport GUEST_BYTES={bytes}\n",
            MODULES.join(" ")
        ),
    )?;
    let init = include_str!("init.sh").replacen(
        "mount -t proc proc /proc\n",
        "mount -t proc proc /proc\n. /etc/vm-test.env\n",
        1,
    );
    let init_path = root.join("init");
    fs::write(&init_path, init)?;
    fs::set_permissions(
        &init_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
            root.display(),
            initrd.display()
        ))
        .status()?;
    if !status.success() {
        bail!("packing the initramfs failed ({status})");
    }
    Ok(())
}

/// `from` at `to`, and every library `ldd` lists for it at the same path under `root`.
fn copy_with_libraries(from: &Path, to: &Path, root: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to.parent().context("a path with a parent")?)?;
    fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    let ldd = Command::new("ldd").arg(from).output()?;
    for library in libraries(&String::from_utf8_lossy(&ldd.stdout)) {
        let target = root.join(library.strip_prefix("/").unwrap_or(&library));
        if !target.exists() {
            fs::create_dir_all(target.parent().context("a library directory")?)?;
            fs::copy(&library, &target)
                .with_context(|| format!("copying {}", library.display()))?;
        }
    }
    Ok(())
}

/// The absolute paths in `ldd` output (`libc.so.6 => /lib/.../libc.so.6 (0x...)`, and the loader).
pub(crate) fn libraries(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        // Extensions are often symlinks to one another: copy what they point at.
        if entry.path().is_file() {
            fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// [`MODULES`] and what they depend on (host kmod's `--show-depends` over the package), then
/// `depmod` over the guest's tree so busybox modprobe finds them.
fn copy_modules(kernel: &Path, root: &Path, release: &str) -> anyhow::Result<()> {
    for module in MODULES {
        let out = Command::new("modprobe")
            .args(["-d"])
            .arg(kernel)
            .args(["-S", release, "--show-depends", module])
            .output()
            .context("running modprobe (kmod)")?;
        if !out.status.success() {
            bail!(
                "module {module} not in the package: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(path) = line.strip_prefix("insmod ").map(str::trim) else {
                continue;
            };
            let relative = Path::new(path)
                .strip_prefix(kernel)
                .unwrap_or(Path::new(path));
            let target = root.join(relative.strip_prefix("/").unwrap_or(relative));
            fs::create_dir_all(target.parent().context("a module directory")?)?;
            fs::copy(
                kernel.join(relative.strip_prefix("/").unwrap_or(relative)),
                &target,
            )
            .with_context(|| format!("copying module {}", relative.display()))?;
        }
    }
    let modules = format!("lib/modules/{release}");
    for file in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        let from = kernel.join(&modules).join(file);
        if from.exists() {
            fs::copy(from, root.join(&modules).join(file))?;
        }
    }
    let status = Command::new("depmod")
        .arg("-b")
        .arg(root)
        .arg(release)
        .status()?;
    if !status.success() {
        bail!("depmod over the guest's modules failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_paths_include_the_loader() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x1)\n\t/lib64/ld-linux-x86-64.so.2 (0x2)\n";
        assert_eq!(
            libraries(ldd),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }
}
