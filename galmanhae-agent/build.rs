//! Builds `galmanhae-ebpf` for the bpf target with aya-build (the pinned nightly + bpf-linker),
//! as the aya template does; the object lands in `OUT_DIR/galmanhae`.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    // For galmanhae_build_info{commit}.
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".to_owned(), |c| c.trim().to_owned());
    println!("cargo:rustc-env=GALMANHAE_COMMIT={commit}");
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name == "galmanhae-ebpf")
        .ok_or_else(|| anyhow!("galmanhae-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("galmanhae-ebpf manifest has no parent directory"))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    // The pinned nightly, checked against bpf-linker's LLVM before a link that would fail
    // with `Invalid record`.
    println!(
        "cargo:rerun-if-env-changed={}",
        galmanhae_toolchain::TOOLCHAIN_ENV
    );
    let toolchain = galmanhae_toolchain::toolchain();
    let verdict = galmanhae_toolchain::check(&toolchain);
    if let Some(blocker) = verdict.blocker() {
        // One message, without the backtrace an error return would print.
        eprintln!("error: {blocker}");
        std::process::exit(1);
    }
    if let Some(warning) = verdict.warning() {
        println!("cargo:warning={warning}");
    }
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain))
}
