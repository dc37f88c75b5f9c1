//! `cargo xtask demo`: the incident reproduced and explained in one command.

use clap::Args;

use crate::{build_agent, setup, sh};

#[derive(Args)]
pub struct DemoArgs {
    /// How long galmanhae watches.
    #[arg(long, default_value = "20s")]
    duration: String,
    /// Loss injected on the `app` container's path to the db, in percent.
    #[arg(long, default_value_t = 5.0)]
    percent: f64,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    setup::run()?;
    let binary = build_agent()?;
    let result = (|| {
        galmanhae_lab::up()?;
        galmanhae_lab::fault::loss(
            args.percent,
            &galmanhae_lab::fault::Target::Container("app".to_owned()),
        )?;
        eprintln!(
            "xtask: lab is up; {}% of container `app`'s segments to the db are dropped, `web` is healthy",
            args.percent
        );
        sh(
            &binary.display().to_string(),
            &["diagnose", "--duration", &args.duration],
            &[],
        )
    })();
    let down = galmanhae_lab::down();
    result.and(down)
}
