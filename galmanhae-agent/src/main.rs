//! The `galmanhae` binary: parse arguments, run a command, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser as _;
use galmanhae::{
    cli::{Cli, Command},
    commands,
    config::Settings,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon's settings (and log level) may come from its config file: read it first.
    let settings = match &cli.command {
        Command::Run(args) => match Settings::resolve(args, cli.log_level) {
            Ok(settings) => Some(settings),
            Err(e) => {
                eprintln!("galmanhae: error: {e}");
                return ExitCode::from(2);
            }
        },
        Command::Diagnose(_) => None,
    };
    let level = settings
        .as_ref()
        .map_or(cli.log_level.unwrap_or(log::LevelFilter::Warn), |s| {
            s.log_level
        });
    env_logger::Builder::new()
        .filter_level(level)
        .format_target(false)
        .init();
    // Scrapes and passes run on the blocking pool, serialised on one lock: a few threads
    // are enough, and a scrape storm queues instead of starting hundreds.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("galmanhae: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match (&cli.command, &settings) {
            (Command::Diagnose(args), _) => commands::diagnose::run(args).await,
            (Command::Run(_), Some(settings)) => commands::run::run(settings).await,
            (Command::Run(_), None) => unreachable!("settings are resolved for run"),
        }
    });
    // A blocking task still running (a pass waiting on a slow source) does not hold up the
    // exit: what it would finish is not needed any more.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("galmanhae: error: {e:#}");
            commands::exit_code(&e)
        }
    }
}
