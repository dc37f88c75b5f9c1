//! The body of the `galmanhae` binary: parse arguments, run a command, map errors to exit
//! codes.

use std::process::ExitCode;

use clap::Parser as _;

use crate::{
    cli::{Cli, Command, DiagnoseArgs},
    commands,
    config::{self, Settings},
};

/// What to run, with the daemon's settings resolved.
enum Job<'a> {
    Diagnose(&'a DiagnoseArgs),
    Run(Settings),
}

/// Runs the command line's command; the binary's `main`.
pub fn main() -> ExitCode {
    crate::malloc::configure();
    let cli = Cli::parse();
    // The daemon's settings (and log level) may come from its config file: read it first.
    let (level, job) = match &cli.command {
        Command::Run(args) => match Settings::resolve(args, cli.log_level) {
            Ok(settings) => (settings.log_level, Job::Run(settings)),
            Err(e) => {
                eprintln!("galmanhae: error: {e}");
                return ExitCode::from(2);
            }
        },
        Command::Diagnose(args) => (
            cli.log_level.unwrap_or(config::DEFAULT_LOG_LEVEL),
            Job::Diagnose(args),
        ),
    };
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
        match &job {
            Job::Diagnose(args) => commands::diagnose::run(args).await,
            Job::Run(settings) => commands::run::run(settings).await,
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
