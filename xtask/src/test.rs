//! `cargo xtask test`: lint, the deploy checks, unit tests, then the root integration tests
//! against the real lab.

use clap::Args;

use crate::{manifest, setup, sh, workspace_root};

#[derive(Args)]
pub struct TestArgs {
    /// Only the unit tests (no root, no lab).
    #[arg(long)]
    unit_only: bool,
    /// Extra arguments for the integration test binaries (e.g. a test name filter).
    #[arg(last = true)]
    filter: Vec<String>,
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    setup::run()?;
    lint()?;
    deploy_checks()?;
    let manifest = manifest();
    sh(
        "cargo",
        &[
            "test",
            "--manifest-path",
            &manifest,
            "--workspace",
            "--exclude",
            "galmanhae-ebpf",
            "--lib",
            "--bins",
        ],
        &[],
    )?;
    if args.unit_only {
        return Ok(());
    }
    // Integration tests share one kernel and one lab: one at a time. They need root; with
    // CI=true a missing capability fails them instead of skipping.
    let mut integration = vec![
        "test",
        "--manifest-path",
        &manifest,
        "-p",
        "galmanhae-agent",
        "--test",
        "lab",
        "--test",
        "path_mtu",
        "--test",
        "daemon",
        "--test",
        "names",
        "--",
        "--test-threads=1",
    ];
    integration.extend(args.filter.iter().map(String::as_str));
    let result = sh("cargo", &integration, &[("RUST_BACKTRACE", "1")]);
    let down = galmanhae_lab::down();
    result.and(down)?;
    // The older kernel production runs (Debian 12's 6.1), booted under qemu.
    crate::vm::run(&crate::vm::VmTestArgs::default())
}

/// `deploy/check.sh`: the unit, config, dashboard, manifests and alert rules with the real
/// tools, and every `PromQL` expression against a throwaway Prometheus on loopback. A missing
/// tool fails it, never skips it (setup installs them). Always the full run: an inherited
/// `PROMETHEUS_URL` would leave out the fixture data.
pub fn deploy_checks() -> anyhow::Result<()> {
    let script = workspace_root().join("deploy/check.sh");
    sh(
        "bash",
        &[&script.display().to_string()],
        &[("PROMETHEUS_URL", "")],
    )
}

/// `cargo fmt --check`, then clippy in two passes as the aya template does: the host crates,
/// then the eBPF crate for its own target (feature unification would build its panic handler
/// twice otherwise).
pub fn lint() -> anyhow::Result<()> {
    let manifest = manifest();
    let nightly = format!("+{}", galmanhae_toolchain::toolchain());
    sh(
        "cargo",
        &[
            "fmt",
            "--manifest-path",
            &manifest,
            "--all",
            "--",
            "--check",
        ],
        &[],
    )?;
    sh(
        "cargo",
        &[
            "clippy",
            "--manifest-path",
            &manifest,
            "--workspace",
            "--exclude",
            "galmanhae-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    sh(
        "cargo",
        &[
            &nightly,
            "clippy",
            "--manifest-path",
            &manifest,
            "-p",
            "galmanhae-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )
}
