//! `cargo xtask vm-test`: the agent on another kernel (default Debian 12's current 6.1 cloud
//! kernel, the incident's), booted under qemu (TCG: KVM guests hang on these machines) from an
//! initramfs with a lab without Docker. The guest prints; [`checks`] decides. Nothing is left on
//! the host but files under `target/xtask/vm`.

mod checks;
mod console;
mod daemon;
mod guest;
mod kernels;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::step::{Steps, format_duration};
use crate::{build_agent, setup, workspace_root};

/// Debian's metapackage for its current cloud kernel; `--kernel` names another package.
const DEFAULT_KERNEL_META: &str = "linux-image-cloud-amd64";

#[derive(Args, Default)]
pub struct VmTestArgs {
    /// A Debian kernel image package (e.g. linux-image-6.1.0-47-cloud-amd64-unsigned); default
    /// the one linux-image-cloud-amd64 depends on.
    #[arg(long)]
    kernel: Option<String>,
    /// Bytes each guest namespace sends to the db.
    #[arg(long, default_value_t = DEFAULT_BYTES)]
    bytes: u64,
}

const DEFAULT_BYTES: u64 = 4_000_000;

pub fn run(args: &VmTestArgs) -> anyhow::Result<()> {
    setup::run()?;
    let agent = build_agent()?;
    let steps = Steps::new("vm-test")?;
    let bytes = if args.bytes == 0 {
        DEFAULT_BYTES
    } else {
        args.bytes
    };
    let package = match &args.kernel {
        Some(p) => p.clone(),
        None => default_kernel()?,
    };
    let work = workspace_root().join("target/xtask/vm");
    let kernel = fetch_kernel(&steps, &work, &package)?;
    let release = kernel_release(&kernel)?;
    let root = work.join("root");
    let _ = std::fs::remove_dir_all(&root);
    let initrd = work.join("initrd.gz");
    guest::build(&root, &initrd, &kernel, &release, &agent, bytes)
        .context("building the guest's initramfs")?;
    let _ = std::fs::remove_dir_all(&root);
    let console = work.join("console.log");
    let started = std::time::Instant::now();
    boot(&kernel, &release, &initrd, &console)?;
    let text = std::fs::read_to_string(&console)?;
    let parsed = console::Console::parse(&text);
    let outcomes = checks::run_all(&parsed);
    report(
        &package,
        &parsed,
        &outcomes,
        &text,
        &console,
        started.elapsed(),
    )?;
    write_kernel_table(&parsed, &agent)
}

/// The README's kernel table: the guest's hooks from its report, and the host's from a
/// one-second `diagnose` (root only; without it the host's rows stay as they were).
fn write_kernel_table(console: &console::Console, agent: &Path) -> anyhow::Result<()> {
    let readme_path = workspace_root().join("README.md");
    let mut readme = std::fs::read_to_string(&readme_path)?;
    let guest: serde_json::Value =
        serde_json::from_str(console.section("report-loss").map_err(anyhow::Error::msg)?)?;
    let release = console.facts.get("kernel").map_or("?", String::as_str);
    readme = kernels::update(
        &readme,
        release,
        &kernels::rows(release, "vm-test (qemu)", &guest),
    );
    let host = Command::new(agent)
        .args(["diagnose", "--json", "--duration", "1s"])
        .output()
        .context("running the agent on the host")?;
    match serde_json::from_slice::<serde_json::Value>(&host.stdout) {
        Ok(report) if host.status.success() => {
            let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
            let host_release = host_release.trim();
            readme = kernels::update(
                &readme,
                host_release,
                &kernels::rows(host_release, "vm-test (host)", &report),
            );
        }
        _ => eprintln!(
            "xtask: vm-test: the host's row of the kernel table is unchanged: diagnose on the host failed: {}",
            String::from_utf8_lossy(&host.stderr).trim()
        ),
    }
    std::fs::write(&readme_path, readme)?;
    eprintln!("xtask: vm-test: README.md's kernel table written from this run");
    Ok(())
}

fn default_kernel() -> anyhow::Result<String> {
    let out = galmanhae_lab::run("apt-cache", &["depends", DEFAULT_KERNEL_META])?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .filter(|p| p.starts_with("linux-image-"))
        .map(str::to_owned)
        .with_context(|| format!("{DEFAULT_KERNEL_META} depends on no kernel image: {out}"))
}

/// The package downloaded (once) and extracted; its modules indexed for modprobe.
fn fetch_kernel(steps: &Steps, work: &Path, package: &str) -> anyhow::Result<PathBuf> {
    let cache = work.join("cache");
    std::fs::create_dir_all(&cache)?;
    let kernel = work.join(package);
    if kernel.join("boot").exists() {
        return Ok(kernel);
    }
    let deb = || {
        std::fs::read_dir(&cache)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&format!("{package}_"))
                        && Path::new(n).extension().is_some_and(|e| e == "deb")
                })
            })
    };
    if deb().is_none() {
        let cache = cache.display().to_string();
        steps.run(
            &format!("downloading {package}"),
            "the guest's kernel",
            "sh",
            &["-c", &format!("cd '{cache}' && apt-get download {package}")],
            &[],
        )?;
    }
    let deb = deb().context("apt-get download left no .deb")?;
    let target = kernel.display().to_string();
    steps.run(
        &format!("extracting {package}"),
        "vmlinuz and modules",
        "dpkg-deb",
        &["-x", &deb.display().to_string(), &target],
        &[],
    )?;
    let release = kernel_release(&kernel)?;
    steps.run(
        "indexing its modules",
        "depmod, for modprobe",
        "depmod",
        &["-b", &target, &release],
        &[],
    )?;
    Ok(kernel)
}

/// The one release under `lib/modules`.
fn kernel_release(kernel: &Path) -> anyhow::Result<String> {
    let dir = kernel.join("lib/modules");
    let mut releases: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    match (releases.pop(), releases.is_empty()) {
        (Some(r), true) => Ok(r),
        _ => bail!("expected one kernel release in {}", dir.display()),
    }
}

/// Boots the guest; its console goes to `console`. The guest powers off at its end.
fn boot(kernel: &Path, release: &str, initrd: &Path, console: &Path) -> anyhow::Result<()> {
    let vmlinuz = kernel.join(format!("boot/vmlinuz-{release}"));
    eprintln!(
        "xtask: vm-test: booting {release} under qemu (TCG), console in {}",
        console.display()
    );
    let out = std::fs::File::create(console)?;
    let status = Command::new("timeout")
        .args(["--kill-after=10", "600", "qemu-system-x86_64"])
        .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "2048"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .context("running qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    if !status.success() {
        bail!(
            "qemu ended with {status} (a timeout is 124); see {}",
            console.display()
        );
    }
    Ok(())
}

fn report(
    package: &str,
    console: &console::Console,
    outcomes: &[checks::Outcome],
    text: &str,
    log: &Path,
    took: std::time::Duration,
) -> anyhow::Result<()> {
    let release = console.facts.get("kernel").map_or("?", String::as_str);
    eprintln!(
        "xtask: vm-test: {package} (guest kernel {release}), {}",
        format_duration(took)
    );
    for o in outcomes {
        match &o.result {
            Ok(detail) => eprintln!("  PASS  {}: {detail}", o.name),
            Err(why) => eprintln!("  FAIL  {}: {why}", o.name),
        }
    }
    if let Some(hooks) = console
        .sections
        .get("report-loss")
        .and_then(|(r, _)| serde_json::from_str::<serde_json::Value>(r).ok())
        .and_then(|r| r["hooks"].as_array().cloned())
    {
        eprintln!("  hooks on {release}:");
        for h in hooks {
            let field = |k: &str| h[k].as_str().unwrap_or("?").to_owned();
            eprintln!(
                "    {:<8} {:<28} {:<12} {}",
                field("kind"),
                field("name"),
                field("status"),
                field("detail")
            );
        }
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| o.name)
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    eprintln!("--- the guest's output ---");
    for (name, (body, rc)) in &console.sections {
        if !name.starts_with("report-") && name != "metrics" {
            eprintln!("[{name}] rc={rc}\n{body}");
        }
    }
    if console.sections.is_empty() {
        eprintln!("{text}");
    }
    bail!(
        "vm-test failed on {release}: {}; the console is in {}",
        failed.join("; "),
        log.display()
    )
}
