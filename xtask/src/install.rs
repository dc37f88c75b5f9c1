//! `cargo xtask install`: the agent as a systemd service on this host, or staged into a
//! directory with `--root`; `--uninstall` takes it off again.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use clap::Args;

use crate::{agent_binary, build_agent, sh, workspace_root};

/// The service's user and group (the unit's `User=` and `Group=`).
const USER: &str = "galmanhae";
/// Unit name for systemctl.
const SERVICE: &str = "galmanhae.service";
/// Installed paths, relative to the root.
const BINARY: &str = "usr/local/bin/galmanhae";
const UNIT: &str = "etc/systemd/system/galmanhae.service";
const CONFIG_DIR: &str = "etc/galmanhae";
const CONFIG: &str = "etc/galmanhae/galmanhae.toml";
const DOC_DIR: &str = "usr/local/share/doc/galmanhae";
/// Sources in the repository.
const UNIT_SOURCE: &str = "deploy/systemd/galmanhae.service";
const CONFIG_SOURCE: &str = "deploy/galmanhae.toml";
/// The docs, as (source, name in `DOC_DIR`); the unit's `Documentation=` names README.md.
const DOCS: &[(&str, &str)] = &[
    ("deploy/README.md", "README.md"),
    ("deploy/METRICS.md", "METRICS.md"),
];

#[derive(Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one field per command-line switch, which clap checks against each other"
)]
pub struct InstallArgs {
    /// Stage the files into DIR instead of / (no user, no systemctl; no root needed).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Also `systemctl enable --now galmanhae` (needs systemd running).
    #[arg(long, conflicts_with_all = ["root", "uninstall"])]
    enable: bool,
    /// Install the existing target/release/galmanhae instead of building it.
    #[arg(long)]
    no_build: bool,
    /// Install this binary instead of target/release/galmanhae (implies --no-build).
    #[arg(long, value_name = "PATH", hide = true)]
    binary: Option<PathBuf>,
    /// Stop and disable the service, remove the binary, the unit and the docs; keep
    /// /etc/galmanhae.
    #[arg(long, conflicts_with_all = ["no_build", "binary"])]
    uninstall: bool,
    /// Add the galmanhae user to the `docker` group so that containers are named from the
    /// Docker API. That group is as good as root; without it they are named by short id.
    #[arg(long, conflicts_with_all = ["root", "uninstall"])]
    docker_names: bool,
}

/// Where the files go: this host (`/`, with the user and systemd steps) or a staging
/// directory (the files only).
struct Destination {
    root: PathBuf,
    host: bool,
}

impl Destination {
    fn new(root: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(root) = root {
            return Ok(Self {
                root: root.to_path_buf(),
                host: false,
            });
        }
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        ensure!(
            euid == 0,
            "installing into / needs root: run as root, or stage with --root DIR"
        );
        Ok(Self {
            root: PathBuf::from("/"),
            host: true,
        })
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// systemd is PID 1 on this host (what `sd_booted()` checks).
    fn systemd(&self) -> bool {
        self.host && Path::new("/run/systemd/system").is_dir()
    }
}

pub fn run(args: &InstallArgs) -> anyhow::Result<()> {
    let dest = Destination::new(args.root.as_deref())?;
    if args.uninstall {
        return uninstall(&dest);
    }
    if args.enable && !dest.systemd() {
        bail!("--enable needs systemd running (no /run/systemd/system here); nothing installed");
    }
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None if args.no_build => agent_binary(),
        None => build_agent()
            .context("building the agent (`cargo xtask setup` installs what building needs)")?,
    };
    ensure!(
        binary.is_file(),
        "no agent binary at {}: build it (cargo build --release -p galmanhae-agent) or drop --no-build",
        binary.display()
    );
    install_files(&dest, &binary)?;
    if dest.host {
        service_user()?;
        docker_group(args.docker_names)?;
        systemd_install(&dest, args.enable)?;
    } else {
        eprintln!(
            "xtask: staged into {}; no user created, systemd untouched",
            dest.root.display()
        );
    }
    Ok(())
}

fn install_files(dest: &Destination, binary: &Path) -> anyhow::Result<()> {
    let repo = workspace_root();
    replace(binary, &dest.path(BINARY), 0o755)?;
    replace(&repo.join(UNIT_SOURCE), &dest.path(UNIT), 0o644)?;
    for (source, name) in DOCS {
        replace(&repo.join(source), &dest.path(DOC_DIR).join(name), 0o644)?;
    }
    let config = dest.path(CONFIG);
    if copy_if_absent(&repo.join(CONFIG_SOURCE), &config, 0o644)? {
        eprintln!("xtask: installed {} (mode 0644)", config.display());
    } else {
        eprintln!(
            "xtask: kept {}: it is the operator's and never overwritten ({CONFIG_SOURCE} has the \
             current keys and defaults)",
            config.display()
        );
    }
    Ok(())
}

/// Copies `source` to `dest` with `mode`, creating the directories: through a temporary file
/// beside `dest` renamed over it, so a running binary is replaced rather than written into
/// (ETXTBSY) and no reader sees half a file.
fn replace(source: &Path, dest: &Path, mode: u32) -> anyhow::Result<()> {
    let (dir, name) = split(dest)?;
    create_dirs(dir)?;
    let staged = dir.join(format!(".{name}.xtask-new"));
    fs::copy(source, &staged)
        .with_context(|| format!("copying {} to {}", source.display(), staged.display()))?;
    let moved = fs::set_permissions(&staged, fs::Permissions::from_mode(mode))
        .and_then(|()| fs::rename(&staged, dest));
    if moved.is_err() {
        fs::remove_file(&staged).ok();
    }
    moved.with_context(|| format!("installing {}", dest.display()))?;
    eprintln!("xtask: installed {} (mode {mode:04o})", dest.display());
    Ok(())
}

/// Copies `source` to `dest` with `mode` unless something (even a dangling link) is there
/// already; `false` then.
fn copy_if_absent(source: &Path, dest: &Path, mode: u32) -> anyhow::Result<bool> {
    let (dir, _) = split(dest)?;
    create_dirs(dir)?;
    let contents = fs::read(source).with_context(|| format!("reading {}", source.display()))?;
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dest)
    {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("creating {}", dest.display())),
    };
    // The umask may have taken bits from `mode`.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(&contents))
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(true)
}

fn split(path: &Path) -> anyhow::Result<(&Path, String)> {
    let dir = path.parent().context("an installed path has a directory")?;
    let name = path
        .file_name()
        .context("an installed path has a file name")?
        .to_string_lossy()
        .into_owned();
    Ok((dir, name))
}

fn create_dirs(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// The system user and its group.
fn service_user() -> anyhow::Result<()> {
    if succeeds("getent", &["passwd", USER]) {
        eprintln!("xtask: user {USER} exists");
        return Ok(());
    }
    let mut args = vec![
        "--system",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
    ];
    // useradd creates the group with --user-group, and refuses to when it exists.
    if succeeds("getent", &["group", USER]) {
        args.extend(["--gid", USER]);
    } else {
        args.push("--user-group");
    }
    args.push(USER);
    sh("useradd", &args, &[])
}

/// What to do about the user's membership of `docker`, which container names need (the
/// Docker socket is root:docker 0660) and which is as good as root.
#[derive(Debug, PartialEq, Eq)]
enum DockerGroup {
    /// No `docker` group on this host: nothing to join.
    Absent { wanted: bool },
    /// `--docker-names`, not a member yet.
    Join,
    /// A member already (asked for now, or before by hand or by an older install).
    Member { wanted: bool },
    /// Not asked for, not a member.
    Skip,
}

impl DockerGroup {
    fn decide(wanted: bool, group_exists: bool, member: bool) -> Self {
        match (group_exists, member, wanted) {
            (false, _, _) => Self::Absent { wanted },
            (true, true, _) => Self::Member { wanted },
            (true, false, true) => Self::Join,
            (true, false, false) => Self::Skip,
        }
    }

    /// The one line that tells the operator where container names stand.
    fn message(&self) -> String {
        match self {
            Self::Absent { wanted: true } => {
                "no docker group here, so --docker-names has nothing to do: containers will be \
                 named by their short id"
                    .to_owned()
            }
            Self::Absent { wanted: false } => {
                "no docker group here: containers will be named by their short id".to_owned()
            }
            Self::Join => format!(
                "added {USER} to the docker group: container names from the Docker API, at the \
                 price of root-equivalent access through the Docker socket"
            ),
            Self::Member { wanted: true } => format!(
                "{USER} is in the docker group: container names from the Docker API (the Docker \
                 socket is root-equivalent access)"
            ),
            Self::Member { wanted: false } => format!(
                "{USER} is already in the docker group (container names, and root-equivalent \
                 access); left as it is, take it out with: gpasswd --delete {USER} docker"
            ),
            Self::Skip => format!(
                "containers will be named by their short id; for their names rerun with \
                 --docker-names (adds {USER} to the docker group, which is as good as root)"
            ),
        }
    }
}

/// Joins `docker` with `--docker-names`, and says where container names stand either way.
fn docker_group(wanted: bool) -> anyhow::Result<()> {
    let group_exists = succeeds("getent", &["group", "docker"]);
    let step = DockerGroup::decide(wanted, group_exists, group_exists && in_docker_group()?);
    if step == DockerGroup::Join {
        sh("usermod", &["--append", "--groups", "docker", USER], &[])?;
    }
    eprintln!("xtask: {}", step.message());
    Ok(())
}

/// Whether the service user is a member of `docker` (false if there is no such user).
fn in_docker_group() -> anyhow::Result<bool> {
    if !succeeds("getent", &["passwd", USER]) {
        return Ok(false);
    }
    Ok(galmanhae_lab::run("id", &["-nG", USER])?
        .split_whitespace()
        .any(|g| g == "docker"))
}

fn systemd_install(dest: &Destination, enable: bool) -> anyhow::Result<()> {
    if !dest.systemd() {
        eprintln!(
            "xtask: systemd is not running here (no /run/systemd/system), so nothing was started. \
             On a systemd host: systemctl daemon-reload && systemctl enable --now galmanhae; \
             under another supervisor run `/{BINARY} run --config /{CONFIG}` as user {USER} with \
             the capabilities the unit lists"
        );
        return Ok(());
    }
    sh("systemctl", &["daemon-reload"], &[])?;
    // A running agent picks up the new binary and unit; a stopped one stays stopped.
    sh("systemctl", &["try-restart", SERVICE], &[])?;
    if enable {
        sh("systemctl", &["enable", "--now", SERVICE], &[])?;
        eprintln!(
            "xtask: galmanhae is enabled and started; check it: systemctl status galmanhae; \
             journalctl -u galmanhae; curl -s 127.0.0.1:9436/metrics | head"
        );
    } else {
        eprintln!(
            "xtask: start it with: systemctl enable --now galmanhae (or rerun with --enable)"
        );
    }
    Ok(())
}

fn uninstall(dest: &Destination) -> anyhow::Result<()> {
    let unit = dest.path(UNIT);
    if dest.systemd() && unit.exists() {
        sh("systemctl", &["disable", "--now", SERVICE], &[])?;
    }
    let docs = dest.path(DOC_DIR);
    let files = [dest.path(BINARY), unit]
        .into_iter()
        .chain(DOCS.iter().map(|(_, name)| docs.join(name)));
    for file in files {
        match fs::remove_file(&file) {
            Ok(()) => eprintln!("xtask: removed {}", file.display()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                eprintln!("xtask: {} was not there", file.display());
            }
            Err(e) => return Err(e).with_context(|| format!("removing {}", file.display())),
        }
    }
    // Only if empty: anything else there is not ours.
    match fs::remove_dir(&docs) {
        Ok(()) => eprintln!("xtask: removed {}", docs.display()),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::DirectoryNotEmpty) => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", docs.display())),
    }
    if dest.systemd() {
        sh("systemctl", &["daemon-reload"], &[])?;
    }
    // The membership only served the agent, which is gone; the user itself is kept below.
    if dest.host && in_docker_group()? {
        sh("gpasswd", &["--delete", USER, "docker"], &[])?;
    }
    let config_dir = dest.path(CONFIG_DIR);
    if dest.host {
        eprintln!(
            "xtask: kept {dir} (the operator's config) and the user {USER}; remove them by hand \
             if they are not wanted (rm -r {dir}; userdel {USER})",
            dir = config_dir.display()
        );
    } else {
        eprintln!(
            "xtask: kept {} (the operator's config)",
            config_dir.display()
        );
    }
    Ok(())
}

/// Runs a command quietly; `true` if it exits 0.
fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TempDir;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn staged(root: &Path, binary: &Path, uninstall: bool) -> InstallArgs {
        InstallArgs {
            root: Some(root.to_path_buf()),
            enable: false,
            no_build: true,
            binary: (!uninstall).then(|| binary.to_path_buf()),
            uninstall,
            docker_names: false,
        }
    }

    #[test]
    fn stages_keeps_the_operators_config_and_uninstalls() {
        let tmp = TempDir::new("stage");
        let root = tmp.0.join("root");
        let binary = tmp.0.join("galmanhae");
        fs::write(&binary, "#!/bin/sh\necho v1\n").unwrap();
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o600)).unwrap();
        let repo = workspace_root();

        run(&staged(&root, &binary, false)).unwrap();
        assert_eq!(
            fs::read(root.join(BINARY)).unwrap(),
            fs::read(&binary).unwrap()
        );
        assert_eq!(mode(&root.join(BINARY)), 0o755);
        let unit = root.join("etc/systemd/system/galmanhae.service");
        assert_eq!(
            fs::read(&unit).unwrap(),
            fs::read(repo.join(UNIT_SOURCE)).unwrap()
        );
        assert_eq!(mode(&unit), 0o644);
        let config = root.join("etc/galmanhae/galmanhae.toml");
        assert_eq!(
            fs::read(&config).unwrap(),
            fs::read(repo.join(CONFIG_SOURCE)).unwrap()
        );
        assert_eq!(mode(&config), 0o644);
        assert_eq!(mode(&root.join("etc/galmanhae")), 0o755);
        let docs = root.join("usr/local/share/doc/galmanhae");
        // The unit's Documentation= points at the installed README.
        let readme = docs.join("README.md");
        let unit_text = fs::read_to_string(&unit).unwrap();
        assert!(unit_text.contains(&format!("Documentation=file:///{DOC_DIR}/README.md")));
        assert_eq!(mode(&readme), 0o644);
        assert_eq!(mode(&docs.join("METRICS.md")), 0o644);
        let mut names: Vec<String> = fs::read_dir(&docs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["METRICS.md", "README.md"],
            "no temporary files left"
        );

        // The operator edits the config; a second install replaces the binary, not the config.
        let operators = "listen = \"0.0.0.0:9436\"\n";
        fs::write(&config, operators).unwrap();
        fs::write(&binary, "#!/bin/sh\necho v2\n").unwrap();
        run(&staged(&root, &binary, false)).unwrap();
        assert_eq!(fs::read_to_string(&config).unwrap(), operators);
        assert_eq!(
            fs::read(root.join(BINARY)).unwrap(),
            fs::read(&binary).unwrap()
        );
        assert_eq!(mode(&root.join(BINARY)), 0o755);

        run(&staged(&root, &binary, true)).unwrap();
        assert!(!root.join(BINARY).exists());
        assert!(!unit.exists());
        assert!(!docs.exists());
        assert_eq!(fs::read_to_string(&config).unwrap(), operators);
        // Uninstalling again finds nothing to remove and still succeeds.
        run(&staged(&root, &binary, true)).unwrap();
    }

    #[test]
    fn a_missing_binary_fails_before_anything_is_installed() {
        let tmp = TempDir::new("missing");
        let root = tmp.0.join("root");
        let err = run(&staged(&root, &tmp.0.join("absent"), false)).unwrap_err();
        assert!(format!("{err:#}").contains("no agent binary"), "{err:#}");
        assert!(!root.exists());
    }

    #[test]
    fn flags() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            crate::Cli::try_parse_from(["cargo xtask", "install"].iter().chain(args))
        };
        assert!(parse(&["--root", "/tmp/stage", "--binary", "/bin/true"]).is_ok());
        assert!(parse(&["--enable", "--no-build"]).is_ok());
        // Staging touches no service; uninstalling builds nothing.
        assert!(parse(&["--root", "/tmp/stage", "--enable"]).is_err());
        assert!(parse(&["--uninstall", "--enable"]).is_err());
        assert!(parse(&["--uninstall", "--no-build"]).is_err());
        // The docker group is opt-in, and only for a host install: staging creates no user.
        assert!(parse(&["--docker-names", "--enable"]).is_ok());
        assert!(parse(&["--root", "/tmp/stage", "--docker-names"]).is_err());
        assert!(parse(&["--uninstall", "--docker-names"]).is_err());
    }

    #[test]
    fn docker_group_is_opt_in() {
        use DockerGroup::*;
        // Never joined without --docker-names, and never without a docker group.
        assert_eq!(DockerGroup::decide(false, true, false), Skip);
        assert_eq!(DockerGroup::decide(true, true, false), Join);
        assert_eq!(
            DockerGroup::decide(true, false, false),
            Absent { wanted: true }
        );
        assert_eq!(
            DockerGroup::decide(false, false, false),
            Absent { wanted: false }
        );
        // An existing membership is reported, not silently kept nor silently removed.
        assert_eq!(
            DockerGroup::decide(false, true, true),
            Member { wanted: false }
        );
        assert_eq!(
            DockerGroup::decide(true, true, true),
            Member { wanted: true }
        );
        // Without the flag the operator hears how to opt in; with it, the price.
        assert!(Skip.message().contains("short id") && Skip.message().contains("--docker-names"));
        assert!(Join.message().contains("root-equivalent"));
        assert!(
            Member { wanted: false }
                .message()
                .contains("gpasswd --delete galmanhae docker")
        );
        for step in [
            Absent { wanted: true },
            Absent { wanted: false },
            Join,
            Member { wanted: true },
            Member { wanted: false },
            Skip,
        ] {
            assert!(!step.message().contains('\n'), "one line: {step:?}");
        }
    }
}
