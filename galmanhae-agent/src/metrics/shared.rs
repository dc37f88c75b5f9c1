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

/// Who asks for a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asker {
    /// A scrape of `/metrics` or `/findings`: it wants what is counted now.
    Scrape,
    /// The timer, every tick: it keeps the state fresh when nobody scrapes.
    Timer,
}

/// What a pass asked for now does: `None` serves the last pass as it is; `Some(full)` runs
/// one (`full`: names, NAT audit and table, path MTUs too). `since_pass` and `since_full`:
/// how long ago the last pass and the last full pass completed.
///
/// Scrapes run a pass, full once a tick has gone by since the last full one; the timer runs
/// a full pass only when no pass ran for most of a tick. Scraped every 5 s with a 10 s tick,
/// that is two passes per tick instead of three: the timer's pass repeated a scrape's reading
/// of a few seconds before.
pub(crate) fn plan(
    asker: Asker,
    since_pass: Duration,
    since_full: Option<Duration>,
    tick: Duration,
) -> Option<bool> {
    match asker {
        Asker::Scrape if since_pass < MIN_PASS_INTERVAL => None,
        // A second's slack: a scrape a moment before the tick does the full work.
        Asker::Scrape => Some(since_full.is_none_or(|d| d + MIN_PASS_INTERVAL >= tick)),
        Asker::Timer if since_pass < tick * 3 / 4 && since_full.is_some_and(|d| d < tick * 2) => {
            None
        }
        Asker::Timer => Some(true),
    }
}

/// What the HTTP handlers and the timer share.
#[derive(Debug)]
pub(crate) struct Shared {
    exporter: Mutex<Exporter>,
    /// How long the previous `/metrics` render took, in nanoseconds.
    pub(crate) render_ns: AtomicU64,
    /// The last pass's outcome: `/healthz` reads it without waiting for a pass in progress.
    health: Mutex<PassHealth>,
    /// When the last full pass completed.
    last_full: Mutex<Option<Instant>>,
    /// The timer's period.
    tick: Duration,
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
    /// `exporter` has just run its first, full, pass; the timer ticks every `tick`.
    pub(crate) fn new(exporter: Exporter, tick: Duration) -> Self {
        Self {
            exporter: Mutex::new(exporter),
            render_ns: AtomicU64::new(0),
            health: Mutex::new(PassHealth::default()),
            last_full: Mutex::new(Some(Instant::now())),
            tick,
        }
    }

    /// Runs a pass if [`plan`] says so and records its outcome; returns the exporter still
    /// locked, so that the caller sees that pass's state.
    pub(crate) fn pass(&self, asker: Asker) -> MutexGuard<'_, Exporter> {
        let mut exporter = lock(&self.exporter);
        let since_full = lock(&self.last_full).map(|at| at.elapsed());
        let Some(full) = plan(asker, self.health().at.elapsed(), since_full, self.tick) else {
            return exporter;
        };
        let started = Instant::now();
        let outcome = exporter.collect(full);
        log::debug!(
            "{} pass ({asker:?}): {:?}",
            if full { "full" } else { "light" },
            started.elapsed()
        );
        let mut health = lock(&self.health);
        match outcome {
            Ok(()) => {
                *health = PassHealth::default();
                if full {
                    *lock(&self.last_full) = Some(health.at);
                }
            }
            // When the last pass completed stays as it was.
            Err(e) => health.error = Some(e.to_string()),
        }
        exporter
    }

    pub(crate) fn health(&self) -> PassHealth {
        lock(&self.health).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_secs(10);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn scrapes_within_a_second_of_a_pass_are_served_that_pass() {
        assert_eq!(plan(Asker::Scrape, secs(0.5), Some(secs(0.5)), TICK), None);
    }

    #[test]
    fn a_scrape_does_the_full_work_once_a_tick_has_gone_by() {
        assert_eq!(
            plan(Asker::Scrape, secs(5.0), Some(secs(5.0)), TICK),
            Some(false)
        );
        assert_eq!(
            plan(Asker::Scrape, secs(5.0), Some(secs(9.2)), TICK),
            Some(true)
        );
        assert_eq!(plan(Asker::Scrape, secs(5.0), None, TICK), Some(true));
    }

    #[test]
    fn the_timer_leaves_the_pass_to_scrapes_that_keep_the_state_fresh() {
        assert_eq!(plan(Asker::Timer, secs(5.0), Some(secs(5.0)), TICK), None);
        assert_eq!(plan(Asker::Timer, secs(5.0), Some(secs(15.0)), TICK), None);
    }

    #[test]
    fn the_timer_runs_a_full_pass_when_nobody_scrapes() {
        assert_eq!(
            plan(Asker::Timer, secs(10.0), Some(secs(10.0)), TICK),
            Some(true)
        );
        assert_eq!(
            plan(Asker::Timer, secs(8.0), Some(secs(25.0)), TICK),
            Some(true)
        );
        // Scraped every 5 s, but no full pass for two ticks (their full passes failed).
        assert_eq!(
            plan(Asker::Timer, secs(2.0), Some(secs(20.0)), TICK),
            Some(true)
        );
        assert_eq!(plan(Asker::Timer, secs(2.0), None, TICK), Some(true));
    }
}
