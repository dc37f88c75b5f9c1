//! Command-line interface (clap). Usage errors exit with code 2.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "galmanhae",
    version,
    about = "Which container retransmits, to where, how much, and why: eBPF, no packet capture"
)]
pub(crate) struct Cli {
    /// Log level: error, warn, info, debug, trace [default: warn, or the config file's].
    #[arg(long, global = true, env = "GALMANHAE_LOG_LEVEL")]
    pub(crate) log_level: Option<log::LevelFilter>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Watch for a while, then report workloads and flows by retransmissions.
    Diagnose(DiagnoseArgs),
    /// Run as a daemon: serve Prometheus metrics on /metrics, health on /healthz.
    Run(RunArgs),
}

/// `galmanhae run`. Unset options come from `--config`, else the defaults (deploy/METRICS.md).
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// TOML config file (example: deploy/galmanhae.toml). Flags and GALMANHAE_* override it.
    #[arg(long, env = "GALMANHAE_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// Address and port for /metrics and /healthz [default: 127.0.0.1:9436].
    #[arg(long, env = "GALMANHAE_LISTEN")]
    pub(crate) listen: Option<std::net::SocketAddr>,

    /// Remotes with their own retransmit series per workload, the heaviest by recent retransmits;
    /// the rest are `other` [default: 20].
    #[arg(long, env = "GALMANHAE_MAX_REMOTES_PER_WORKLOAD", value_parser = range(REMOTES))]
    pub(crate) max_remotes_per_workload: Option<u32>,

    /// Workloads with series; more are counted in `galmanhae_series_dropped_total` [default: 500].
    #[arg(long, env = "GALMANHAE_MAX_WORKLOADS", value_parser = range(WORKLOADS))]
    pub(crate) max_workloads: Option<u32>,

    /// Distinct drop locations (kernel functions), the heaviest by recent drops; the rest are
    /// `other` [default: 50].
    #[arg(long, env = "GALMANHAE_MAX_DROP_LOCATIONS", value_parser = range(LOCATIONS))]
    pub(crate) max_drop_locations: Option<u32>,

    /// How far back the findings look: a finding holds while its evidence is in this window
    /// [default: 5m].
    #[arg(long, env = "GALMANHAE_FINDINGS_WINDOW", value_parser = parse_findings_window)]
    pub(crate) findings_window: Option<Duration>,

    /// How long series of vanished workloads, remotes and namespaces stay [default: 5m].
    #[arg(long, env = "GALMANHAE_SERIES_GRACE_PERIOD", value_parser = parse_grace_period)]
    pub(crate) series_grace_period: Option<Duration>,

    #[command(flatten)]
    pub(crate) kernel: KernelArgs,
}

fn range(r: std::ops::RangeInclusive<u32>) -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(i64::from(*r.start())..=i64::from(*r.end()))
}

#[derive(Debug, clap::Args)]
pub(crate) struct DiagnoseArgs {
    /// How long to watch, e.g. 30s, 2m, 1m30s.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) duration: Duration,

    /// Print the report as one JSON document (schema galmanhae.diagnose/v1) on stdout.
    #[arg(long)]
    pub(crate) json: bool,

    /// How many flows to list.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) top: u32,

    #[command(flatten)]
    pub(crate) kernel: KernelArgs,
}

/// Options shared by every command that loads the programs.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct KernelArgs {
    /// Where tracefs is mounted (default: found in /proc/self/mounts, else mounted at
    /// /sys/kernel/tracing).
    #[arg(long, env = "GALMANHAE_TRACEFS")]
    pub(crate) tracefs: Option<PathBuf>,

    /// Docker Engine API socket, for container names [default: /var/run/docker.sock].
    #[arg(long, env = "GALMANHAE_DOCKER_SOCKET")]
    pub(crate) docker_socket: Option<PathBuf>,

    /// Capacity of the kernel's per-flow map; flows beyond it are counted per workload
    /// [default: 16384].
    #[arg(long, value_parser = range(FLOW_CAPACITY), env = "GALMANHAE_FLOW_MAP_CAPACITY")]
    pub(crate) flow_map_capacity: Option<u32>,

    /// Load the classic tracepoint programs (a helper call per kernel read) even where the
    /// BTF ones (plain loads, several times cheaper) load: for a kernel whose verifier
    /// misjudges the BTF ones, or to compare.
    #[arg(long, env = "GALMANHAE_CLASSIC_TRACEPOINTS")]
    pub(crate) classic_tracepoints: bool,
}

/// `30s`, `2m`, `1m30s`, `500ms`; at least 1 s, at most a day.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}); write it like 30s, 2m or 1m30s"))?;
    if duration < Duration::from_secs(1) {
        return Err(format!("`{text}` is too short: watch for at least 1s"));
    }
    if duration > Duration::from_secs(24 * 3600) {
        return Err(format!(
            "`{text}` is too long: at most 24h (use `galmanhae run` to watch forever)"
        ));
    }
    Ok(duration)
}

// Value checks shared with the config file (config.rs), so that a flag and a file reject the
// same values.

/// `1` to `1000` remotes per workload.
pub(crate) const REMOTES: std::ops::RangeInclusive<u32> = 1..=1000;
/// `1` to `100000` workloads.
pub(crate) const WORKLOADS: std::ops::RangeInclusive<u32> = 1..=100_000;
/// `1` to `10000` drop locations.
pub(crate) const LOCATIONS: std::ops::RangeInclusive<u32> = 1..=10_000;
/// The flow map: 16 to 4 Mi entries.
pub(crate) const FLOW_CAPACITY: std::ops::RangeInclusive<u32> = 16..=4_194_304;

/// A grace period: `30s` to `24h`.
pub(crate) fn parse_grace_period(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}); write it like 5m or 90s"))?;
    if !(Duration::from_secs(30)..=Duration::from_secs(24 * 3600)).contains(&duration) {
        return Err(format!("`{text}` is out of range: between 30s and 24h"));
    }
    Ok(duration)
}

/// A findings window: `10s` to `24h`.
pub(crate) fn parse_findings_window(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}); write it like 5m or 90s"))?;
    if !(Duration::from_secs(10)..=Duration::from_secs(24 * 3600)).contains(&duration) {
        return Err(format!("`{text}` is out of range: between 10s and 24h"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(
            parse_duration("abc")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(parse_duration("30").unwrap_err().contains("not a duration"));
        assert!(parse_duration("10ms").unwrap_err().contains("too short"));
        assert!(parse_duration("2d").unwrap_err().contains("too long"));
    }

    #[test]
    fn unknown_flag_is_a_usage_error() {
        let err = Cli::try_parse_from(["galmanhae", "diagnose", "--bogus"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
