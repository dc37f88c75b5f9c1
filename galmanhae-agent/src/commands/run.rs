//! `galmanhae run`: the diagnose engine running forever, its counters served to Prometheus
//! on `/metrics`. Exits 0 on SIGTERM or SIGINT with every program detached.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::Settings,
    metrics::{
        Exporter, encode, http,
        shared::{Asker, Shared},
    },
    systemd::{self, Notifier},
};

/// How often a full pass runs between scrapes: names, NAT table, path MTUs, vanished
/// containers. Scrapes run a light pass of their own.
const TICK: Duration = Duration::from_secs(10);
/// In-flight scrapes get this long after a signal; then the agent exits regardless.
const DRAIN: Duration = Duration::from_secs(1);
/// Then a timer pass in progress gets this long: exit stays under 2 s (what systemd and the
/// `DaemonSet`'s grace period can count on).
const PASS_WAIT: Duration = Duration::from_millis(500);

pub(crate) async fn run(settings: &Settings) -> anyhow::Result<()> {
    // Listen before loading anything: a port in use fails fast and leaves nothing behind.
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| listen_error(settings.listen, &e))?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;

    let started = super::start(&settings.kernel)?;
    let attached = started.pipeline.probes.attached();
    let hooks = started.pipeline.probes.hooks.len();
    let exporter = Exporter::new(
        started.pipeline,
        &started.notes,
        started.docker,
        (settings.limits, settings.findings_window),
    )
    .context("first reading of the maps")?;
    let every = systemd::watchdog_interval().map_or(TICK, |w| TICK.min(w / 2));
    let shared = Arc::new(Shared::new(exporter, every));
    let registry = encode::registry(Arc::clone(&shared));
    let app = http::router(Arc::clone(&shared), registry, TICK * 3);
    log::info!(
        "attached {attached}/{hooks} hooks; serving http://{}/metrics",
        settings.listen
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let mut server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            })
            .await
    });
    let notifier = Notifier::from_env();
    let ticker = tokio::spawn(collect_forever(
        Arc::clone(&shared),
        every,
        stop_rx,
        notifier.clone(),
    ));
    notifier.ready();

    tokio::select! {
        _ = terminate.recv() => log::info!("SIGTERM: detaching and exiting"),
        _ = interrupt.recv() => log::info!("SIGINT: detaching and exiting"),
    }
    notifier.stopping();
    let _ = stop_tx.send(true);
    match tokio::time::timeout(DRAIN, &mut server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => log::warn!("HTTP server: {e}"),
        Ok(Err(e)) => log::warn!("HTTP server task: {e}"),
        Err(_) => {
            log::info!("connections still open after {DRAIN:?}: closing them");
            server.abort();
        }
    }
    // The ticker finishes its pass (if one runs), then returns; the last reference to the
    // exporter goes with it, and with it the programs (aya detaches on drop). A pass stuck
    // on a slow source (the Docker API) is not waited for: the programs are links and perf
    // events held by file descriptors, which the kernel closes, and detaches, at exit.
    if tokio::time::timeout(PASS_WAIT, ticker).await.is_err() {
        log::info!("a collection pass still runs after {PASS_WAIT:?}: exiting without it");
    }
    drop(shared);
    log::debug!("collection stopped");
    Ok(())
}

/// A tick `every` [`TICK`] (more often if systemd's watchdog wants it), on the blocking
/// pool, until told to stop: a full pass unless scrapes keep the state fresh (see
/// [`crate::metrics::shared::plan`]). Each tick that finds the last pass healthy pets the
/// watchdog: a stuck or failing loop gets the agent restarted.
async fn collect_forever(
    shared: Arc<Shared>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    notifier: Notifier,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticks.tick() => {
                let shared = Arc::clone(&shared);
                let pass = tokio::task::spawn_blocking(move || {
                    drop(shared.pass(Asker::Timer));
                    shared.health().error.is_none()
                });
                match pass.await {
                    Ok(true) => notifier.alive(),
                    Ok(false) => {}
                    Err(e) => log::error!("collection pass: {e}"),
                }
            }
        }
    }
}

fn listen_error(address: std::net::SocketAddr, error: &std::io::Error) -> anyhow::Error {
    let hint = match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "another process has the port (see: ss -ltnp 'sport = {}'); stop it or choose \
             another address with --listen, GALMANHAE_LISTEN or `listen` in the config file",
            address.port()
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            "no interface of this host has that address; use 127.0.0.1, 0.0.0.0 or one of \
             the host's addresses"
                .to_owned()
        }
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need CAP_NET_BIND_SERVICE; choose a port above 1024".to_owned()
        }
        _ => "check --listen".to_owned(),
    };
    anyhow::anyhow!("cannot listen on {address}: {error}: {hint}")
}
