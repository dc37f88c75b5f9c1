//! Builds `galmanhae-ebpf` for the bpf target with aya-build (nightly + bpf-linker), as the
//! aya template does; the object lands in `OUT_DIR/galmanhae`.
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
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
