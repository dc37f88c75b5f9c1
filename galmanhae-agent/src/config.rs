//! Settings of `galmanhae run`. Precedence, highest first: a flag, its `GALMANHAE_*`
//! environment variable (both through clap), the TOML config file, the built-in default.
//! The contract is in `deploy/METRICS.md` ("Configuration").

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    attribute::docker::DEFAULT_SOCKET,
    cli::{
        FLOW_CAPACITY, KernelArgs, LOCATIONS, REMOTES, RunArgs, WORKLOADS, parse_findings_window,
        parse_grace_period,
    },
};

/// Where `/metrics` is served unless told otherwise: loopback (the metrics name containers
/// and remote addresses), port 9436 (see deploy/METRICS.md, "Listen address").
pub(crate) const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9436);

/// How far back `run`'s findings look unless told otherwise.
pub(crate) const DEFAULT_FINDINGS_WINDOW: Duration = Duration::from_secs(300);

/// Without `--log-level`, `GALMANHAE_LOG_LEVEL` or a config file saying otherwise.
pub(crate) const DEFAULT_LOG_LEVEL: log::LevelFilter = log::LevelFilter::Warn;

/// A config file that cannot be used. The message names the file and, from the TOML parser,
/// the line, column and key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Caps that keep every label bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_remotes_per_workload: u32,
    pub(crate) max_workloads: u32,
    pub(crate) max_drop_locations: u32,
    pub(crate) series_grace_period: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_remotes_per_workload: 20,
            max_workloads: 500,
            max_drop_locations: 50,
            series_grace_period: Duration::from_secs(300),
        }
    }
}

/// What the kernel side and attribution need; shared by `diagnose` and `run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KernelSettings {
    pub(crate) tracefs: Option<PathBuf>,
    pub(crate) docker_socket: PathBuf,
    pub(crate) flow_map_capacity: u32,
    /// Classic tracepoint programs even where the BTF ones load.
    pub(crate) classic_tracepoints: bool,
}

/// Everything `galmanhae run` needs, resolved.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Settings {
    pub(crate) listen: SocketAddr,
    pub(crate) log_level: log::LevelFilter,
    pub(crate) limits: Limits,
    /// The sliding window the daemon evaluates findings over.
    pub(crate) findings_window: Duration,
    pub(crate) kernel: KernelSettings,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    #[serde(default, deserialize_with = "level")]
    log_level: Option<log::LevelFilter>,
    #[serde(default, deserialize_with = "findings_window")]
    findings_window: Option<Duration>,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    kernel: FileKernel,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    #[serde(default, deserialize_with = "remotes")]
    max_remotes_per_workload: Option<u32>,
    #[serde(default, deserialize_with = "workloads")]
    max_workloads: Option<u32>,
    #[serde(default, deserialize_with = "locations")]
    max_drop_locations: Option<u32>,
    #[serde(default, deserialize_with = "grace")]
    series_grace_period: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKernel {
    tracefs: Option<PathBuf>,
    docker_socket: Option<PathBuf>,
    #[serde(default, deserialize_with = "flow_capacity")]
    flow_map_capacity: Option<u32>,
    classic_tracepoints: Option<bool>,
}

impl KernelArgs {
    /// Flags and environment over the file's `[kernel]` keys over the defaults.
    fn resolve(&self, file: FileKernel) -> KernelSettings {
        KernelSettings {
            tracefs: self.tracefs.clone().or(file.tracefs),
            docker_socket: self
                .docker_socket
                .clone()
                .or(file.docker_socket)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            flow_map_capacity: self
                .flow_map_capacity
                .or(file.flow_map_capacity)
                .unwrap_or(galmanhae_common::retransmit::FLOW_MAP_CAPACITY),
            classic_tracepoints: self.classic_tracepoints
                || file.classic_tracepoints.unwrap_or(false),
        }
    }

    /// Flags and environment over the defaults (`diagnose` reads no file).
    pub(crate) fn settings(&self) -> KernelSettings {
        self.resolve(FileKernel::default())
    }
}

impl Settings {
    /// Reads the config file if one was given, then applies flags and environment over it.
    pub(crate) fn resolve(
        args: &RunArgs,
        log_level: Option<log::LevelFilter>,
    ) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read(path)?,
            None => FileConfig::default(),
        };
        let defaults = Limits::default();
        let limits = Limits {
            max_remotes_per_workload: args
                .max_remotes_per_workload
                .or(file.limits.max_remotes_per_workload)
                .unwrap_or(defaults.max_remotes_per_workload),
            max_workloads: args
                .max_workloads
                .or(file.limits.max_workloads)
                .unwrap_or(defaults.max_workloads),
            max_drop_locations: args
                .max_drop_locations
                .or(file.limits.max_drop_locations)
                .unwrap_or(defaults.max_drop_locations),
            series_grace_period: args
                .series_grace_period
                .or(file.limits.series_grace_period)
                .unwrap_or(defaults.series_grace_period),
        };
        Ok(Self {
            listen: args.listen.or(file.listen).unwrap_or(DEFAULT_LISTEN),
            log_level: log_level.or(file.log_level).unwrap_or(DEFAULT_LOG_LEVEL),
            limits,
            findings_window: args
                .findings_window
                .or(file.findings_window)
                .unwrap_or(DEFAULT_FINDINGS_WINDOW),
            kernel: args.kernel.resolve(file.kernel),
        })
    }
}

fn read(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|message| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    })
}

/// The parser's message names the line and column, shows the line and what is wrong.
fn parse(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
}

fn bounded<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    range: &std::ops::RangeInclusive<u32>,
) -> Result<Option<u32>, D::Error> {
    let value = u32::deserialize(deserializer)?;
    if range.contains(&value) {
        Ok(Some(value))
    } else {
        Err(serde::de::Error::custom(format!(
            "{value} is out of range: between {} and {}",
            range.start(),
            range.end()
        )))
    }
}

fn remotes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    bounded(d, &REMOTES)
}

fn workloads<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    bounded(d, &WORKLOADS)
}

fn locations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    bounded(d, &LOCATIONS)
}

fn flow_capacity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    bounded(d, &FLOW_CAPACITY)
}

fn grace<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_grace_period(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn findings_window<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_findings_window(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn level<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<log::LevelFilter>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not a log level: error, warn, info, debug or trace"
        ))
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn run_args(argv: &[&str]) -> RunArgs {
        let mut full = vec!["galmanhae", "run"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Run(parsed) => parsed,
            Command::Diagnose(_) => unreachable!(),
        }
    }

    #[test]
    fn the_example_config_parses_to_the_defaults() {
        let text = include_str!("../../deploy/galmanhae.toml");
        let file = parse(text).unwrap();
        assert_eq!(file.listen, Some(DEFAULT_LISTEN));
        assert_eq!(
            file.limits.max_workloads,
            Some(Limits::default().max_workloads)
        );
        assert_eq!(
            file.limits.series_grace_period,
            Some(Limits::default().series_grace_period)
        );
        assert_eq!(file.findings_window, Some(DEFAULT_FINDINGS_WINDOW));
    }

    #[test]
    fn the_findings_window_is_a_flag_and_a_key() {
        assert_eq!(
            Settings::resolve(&run_args(&[]), None)
                .unwrap()
                .findings_window,
            DEFAULT_FINDINGS_WINDOW
        );
        let flagged = Settings::resolve(&run_args(&["--findings-window", "30s"]), None).unwrap();
        assert_eq!(flagged.findings_window, Duration::from_secs(30));
        let file = parse("findings_window = \"2m\"\n").unwrap();
        assert_eq!(file.findings_window, Some(Duration::from_secs(120)));
        let err = parse("findings_window = \"9s\"\n").unwrap_err();
        assert!(err.contains("between 10s and 24h"), "{err}");
        assert!(Cli::try_parse_from(["galmanhae", "run", "--findings-window", "2d"]).is_err());
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let err = parse("listen = \"127.0.0.1:9436\"\n\n[limits]\nmax_workload = 3\n").unwrap_err();
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("max_workload"), "{err}");

        let err = parse("[limits]\nseries_grace_period = \"5 fortnights\"\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("not a duration"), "{err}");

        let err = parse("listen = \"localhost\"\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");

        let err = parse("[kernel]\nflow_map_capacity = 3\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("out of range"),
            "{err}"
        );

        let err = parse("log_level = \"loud\"\n").unwrap_err();
        assert!(err.contains("not a log level"), "{err}");
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("galmanhae-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("galmanhae.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\nlog_level = \"debug\"\n[limits]\nmax_workloads = 7\n",
        )
        .unwrap();
        let config = path.to_str().unwrap();
        let from_file = Settings::resolve(&run_args(&["--config", config]), None).unwrap();
        assert_eq!(from_file.listen, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(from_file.log_level, log::LevelFilter::Debug);
        assert_eq!(from_file.limits.max_workloads, 7);
        assert_eq!(from_file.limits.max_remotes_per_workload, 20);

        let flagged = Settings::resolve(
            &run_args(&[
                "--config",
                config,
                "--listen",
                "127.0.0.1:1234",
                "--max-workloads",
                "9",
            ]),
            Some(log::LevelFilter::Error),
        )
        .unwrap();
        assert_eq!(flagged.listen, "127.0.0.1:1234".parse().unwrap());
        assert_eq!(flagged.limits.max_workloads, 9);
        assert_eq!(flagged.log_level, log::LevelFilter::Error);

        let missing = Settings::resolve(&run_args(&["--config", "/nonexistent/g.toml"]), None);
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/g.toml")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn defaults_without_a_file() {
        let settings = Settings::resolve(&run_args(&[]), None).unwrap();
        assert_eq!(settings.listen, DEFAULT_LISTEN);
        assert_eq!(settings.limits, Limits::default());
        assert_eq!(settings.kernel.docker_socket, PathBuf::from(DEFAULT_SOCKET));
    }
}
