//! Developer tasks: `cargo xtask setup | lab | demo | test | lint | install | bench`.

mod bench;
mod demo;
mod install;
mod lab;
mod setup;
mod step;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building, the lab and the deploy checks need (apt packages, the pinned
    /// nightly with rust-src, bpf-linker for its LLVM); one line per step.
    Setup,
    /// The incident lab: dockerd, a db namespace behind Docker's NAT, faults.
    Lab(lab::LabArgs),
    /// Set up, build, bring the lab up with 5 % loss on `app`, diagnose, tear down.
    Demo(demo::DemoArgs),
    /// Set up, lint, check deploy/, then run unit tests and the root integration tests against
    /// the lab.
    Test(test::TestArgs),
    /// rustfmt and clippy (-D warnings) on every crate, the eBPF one included.
    Lint,
    /// Build the agent in release and install it as a systemd service (or stage it with --root).
    Install(install::InstallArgs),
    /// Overhead and accuracy of galmanhae beside the tools users would reach for instead,
    /// under a retransmit storm in the lab; writes BENCHMARKS.md and BENCHMARKS.json.
    Bench(bench::BenchArgs),
    /// The agent on another kernel (default Debian 12's 6.1) under qemu, with a lab without
    /// Docker; pass/fail per check, the guest's output on failure.
    VmTest(vm::VmTestArgs),
    /// One sender of the bench's storm (the bench starts it): joins a container, sends.
    #[command(hide = true)]
    StormSender {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::Lab(args) => lab::run(&args),
        Task::Demo(args) => demo::run(&args),
        Task::Test(args) => test::run(&args),
        Task::Lint => test::lint(),
        Task::Install(args) => install::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::VmTest(args) => vm::run(&args),
        Task::StormSender { args } => galmanhae_lab::storm::SenderArgs::parse(&args)
            .and_then(|args| galmanhae_lab::storm::sender_main(&args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a command with inherited output; fails on a non-zero exit.
fn sh(program: &str, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<()> {
    eprintln!("xtask: {program} {}", args.join(" "));
    let status = std::process::Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .map_err(|e| anyhow::anyhow!("running {program}: {e}"))?;
    anyhow::ensure!(
        status.success(),
        "`{program} {}` failed ({status})",
        args.join(" ")
    );
    Ok(())
}

/// Builds the agent in release; returns the binary's path.
fn build_agent() -> anyhow::Result<std::path::PathBuf> {
    build_agent_targets(&[])?;
    Ok(agent_binary())
}

/// `cargo build --release -p galmanhae-agent` with `targets` (e.g. `--example render`), on one
/// line, its output in `target/xtask/build.log`.
fn build_agent_targets(targets: &[&str]) -> anyhow::Result<()> {
    let manifest = manifest();
    let mut args = vec![
        "build",
        "--release",
        "--manifest-path",
        &manifest,
        "-p",
        "galmanhae-agent",
    ];
    args.extend_from_slice(targets);
    step::Steps::new("build")?.run(
        "building the agent and its eBPF programs (release)",
        &format!("programs with {}", galmanhae_toolchain::toolchain()),
        "cargo",
        &args,
        &[],
    )
}

/// Where `build_agent` leaves the binary.
fn agent_binary() -> std::path::PathBuf {
    workspace_root().join("target/release/galmanhae")
}

/// The workspace's `Cargo.toml`, for `cargo --manifest-path` (tasks may run from anywhere).
fn manifest() -> String {
    workspace_root().join("Cargo.toml").display().to_string()
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(
            || std::path::PathBuf::from("."),
            std::path::Path::to_path_buf,
        )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// A directory under the system temp dir, removed when dropped.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(test: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir =
                std::env::temp_dir().join(format!("xtask-{test}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }
}
