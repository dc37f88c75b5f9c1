//! What the HTTP handlers and the timer share: the exporter behind one lock, so that a pass
//! and the encoding of its state never interleave, and the last pass's health.

use std::{
    sync::{Mutex, MutexGuard, atomic::AtomicU64},
    time::{Duration, Instant},
};

use super::Exporter;

/// Scrapes within this long of a pass serve that pass: a scrape storm costs no more than
/// one pass a second.
const MIN_PASS_INTERVAL: Duration = Duration::from_secs(1);

/// What the HTTP handlers and the timer share.
#[derive(Debug)]
pub(crate) struct Shared {
    exporter: Mutex<Exporter>,
    /// How long the previous `/metrics` render took, in nanoseconds.
    pub(crate) render_ns: AtomicU64,
    /// The last pass's outcome: `/healthz` reads it without waiting for a pass in progress.
    health: Mutex<PassHealth>,
}

/// When the last pass completed, and why the last one failed if it did.
#[derive(Clone, Debug)]
pub(crate) struct PassHealth {
    at: Instant,
    pub(crate) error: Option<String>,
}

impl Default for PassHealth {
    /// A pass completed now.
    fn default() -> Self {
        Self {
            at: Instant::now(),
            error: None,
        }
    }
}

impl PassHealth {
    /// `None` while healthy; else why not.
    pub(crate) fn problem(&self, now: Instant, max_age: Duration) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(format!("the last collection failed: {e}"));
        }
        let age = now.saturating_duration_since(self.at);
        (age > max_age).then(|| format!("no collection for {}s", age.as_secs()))
    }
}

/// Locks, or takes the state a panicking holder left: it is still the best there is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(exporter: Exporter) -> Self {
        Self {
            exporter: Mutex::new(exporter),
            render_ns: AtomicU64::new(0),
            health: Mutex::new(PassHealth::default()),
        }
    }

    /// Runs a pass (`full`: the timer's) and records its outcome; returns the exporter still
    /// locked, so that the caller sees that pass's state. A light pass is skipped when one
    /// completed less than `MIN_PASS_INTERVAL` ago.
    pub(crate) fn pass(&self, full: bool) -> MutexGuard<'_, Exporter> {
        let mut exporter = lock(&self.exporter);
        if full || self.health().at.elapsed() >= MIN_PASS_INTERVAL {
            let outcome = exporter.collect(full);
            let mut health = lock(&self.health);
            match outcome {
                Ok(()) => *health = PassHealth::default(),
                // When the last pass completed stays as it was.
                Err(e) => health.error = Some(e.to_string()),
            }
        }
        exporter
    }

    pub(crate) fn health(&self) -> PassHealth {
        lock(&self.health).clone()
    }
}
