//! `/metrics`, `/findings` and `/healthz` (axum). Rendering reads kernel maps and /proc, so it runs on the
//! blocking pool, never on the runtime's thread: at most [`RENDERS`] at a time (renders are
//! serialised on the pass lock anyway), and a scrape that cannot be served within
//! [`SCRAPE_TIMEOUT`] gets a 503 instead of a hanging connection.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{encoding::prometheus_text, registry::Registry};

use super::{
    encode,
    shared::{Asker, Shared},
};

/// Renders in flight at once; more scrapes wait for a slot.
const RENDERS: usize = 4;
/// The longest a scrape waits for a slot and its render (Prometheus's default timeout is 10 s).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// `Content-Type` of OpenMetrics 1.0 text.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    renders: Arc<tokio::sync::Semaphore>,
    /// `/healthz` fails when no pass completed for this long.
    stale_after: Duration,
}

pub(crate) fn router(shared: Arc<Shared>, registry: Registry, stale_after: Duration) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/findings", get(findings))
        .route("/healthz", get(healthz))
        .route("/", get(index))
        .with_state(App {
            shared,
            registry: Arc::new(registry),
            renders: Arc::new(tokio::sync::Semaphore::new(RENDERS)),
            stale_after,
        })
}

/// OpenMetrics when the scraper lists it (Prometheus does, first), else the classic format.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    let openmetrics = wants_openmetrics(&headers);
    let render = async {
        let slot = Arc::clone(&app.renders).acquire_owned().await;
        tokio::task::spawn_blocking(move || {
            // The slot is held until the render ends, even after its scrape gave up: stalled
            // renders cannot pile up on the blocking pool.
            let _slot = slot;
            let started = Instant::now();
            let mut body = String::with_capacity(64 * 1024);
            let result = encode::encode(&mut body, &app.registry, openmetrics);
            let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            app.shared.render_ns.store(took, Ordering::Relaxed);
            result.map(|()| body)
        })
        .await
    };
    let Ok(rendered) = tokio::time::timeout(SCRAPE_TIMEOUT, render).await else {
        log::warn!("a scrape was not served within {SCRAPE_TIMEOUT:?}");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the metrics could not be rendered in time: a collection pass is stuck (see the log)\n",
        )
            .into_response();
    };
    match rendered {
        Ok(Ok(body)) => {
            let content_type = if openmetrics {
                OPENMETRICS
            } else {
                prometheus_text::CONTENT_TYPE
            };
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Ok(Err(e)) => {
            log::error!("encoding the metrics: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed\n",
            )
                .into_response()
        }
        Err(e) => {
            log::error!("rendering the metrics: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the metrics failed\n",
            )
                .into_response()
        }
    }
}

/// The findings as of a pass run now (or within the last second), as JSON.
async fn findings(State(app): State<App>) -> Response {
    let render = async {
        let slot = Arc::clone(&app.renders).acquire_owned().await;
        let shared = Arc::clone(&app.shared);
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            shared.pass(Asker::Scrape).findings_json()
        })
        .await
    };
    match tokio::time::timeout(SCRAPE_TIMEOUT, render).await {
        Ok(Ok(Ok(body))) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Ok(Err(e))) => {
            log::error!("encoding the findings: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding the findings failed\n").into_response()
        }
        Ok(Err(e)) => {
            log::error!("evaluating the findings: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "evaluating the findings failed\n").into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the findings could not be evaluated in time: a collection pass is stuck (see the log)\n",
        )
            .into_response(),
    }
}

async fn healthz(State(app): State<App>) -> Response {
    // The outcome of the last pass, not the pass lock: a stalled pass shows as a 503.
    match app.shared.health().problem(Instant::now(), app.stale_after) {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn index() -> &'static str {
    "galmanhae: metrics at /metrics, findings at /findings, health at /healthz\n"
}
