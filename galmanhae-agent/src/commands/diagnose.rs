//! `galmanhae diagnose`: attach, watch for `--duration` with live progress on stderr, then
//! print the report (text, or JSON on stdout with `--json`).

use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    cli::DiagnoseArgs,
    collect::nat_leaks,
    findings,
    kernel::probes::{Probes, RunStats},
    pipeline::{Pipeline, Window},
    report::{self, HookReport, ReportContext, timeline::TimelineReport},
    timeline::Timeline,
};

const TICK: Duration = Duration::from_secs(1);

pub(crate) async fn run(args: &DiagnoseArgs) -> anyhow::Result<()> {
    let super::Started {
        mut pipeline,
        checks,
        mut notes,
        ..
    } = super::start(&args.kernel.settings())?;
    let baseline_stats = hook_stats(&pipeline.probes);
    let mut window = Window::new(pipeline.snapshot().context("first snapshot")?);
    eprintln!(
        "galmanhae: attached {}/{} hooks; watching for {} (Ctrl-C to stop early)",
        pipeline.probes.attached(),
        pipeline.probes.hooks.len(),
        humantime::format_duration(args.duration)
    );

    let timeline = watch(&mut pipeline, &mut window, args.duration).await?;

    pipeline.attributor.refresh_names();
    notes.extend(pipeline.probes.notes.iter().cloned());
    notes.extend(
        nat_leaks::vanished(&pipeline.probes.uplinks)
            .into_iter()
            .map(|name| {
                format!(
                    "uplink {name} vanished during the window: its untranslated packets are \
                     counted until it went"
                )
            }),
    );
    let summary = pipeline.summarize(&window);
    if let Some(e) = pipeline.nat.table_error() {
        notes.push(format!(
            "NAT translations unavailable ({e}): flows show no NAT side"
        ));
    }
    if pipeline.nat.deferred > 0 {
        notes.push(format!(
            "{} flows were not looked up in the NAT table (more than {} in one window): they \
             show no NAT side",
            pipeline.nat.deferred,
            crate::pipeline::nat::MAX_LOOKUPS
        ));
    }
    notes.extend(window.latest().conntrack.notes.iter().cloned());
    let mut evidence = pipeline.evidence(&summary);
    evidence.paths = pipeline.paths(&summary);
    let findings = findings::evaluate(&evidence);
    let hooks = hook_reports(&pipeline.probes, &baseline_stats);
    notes.extend(pipeline.attributor.notes.iter().cloned());
    let mut report = report::build(
        &evidence,
        findings,
        ReportContext {
            prerequisites: checks,
            hooks,
            flow_capacity: pipeline.probes.flow_capacity,
            notes,
            top: args.top as usize,
        },
    );

    report.timeline = TimelineReport::new(
        timeline.by_name(|o| {
            pipeline
                .attributor
                .workload(o.netns, o.cgroup_id)
                .name
                .to_string()
        }),
        timeline.dropped,
    );
    let rendered = if args.json {
        report::json::render(&report).context("encoding the JSON report")?
    } else {
        report::text::render(&report)
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{rendered}").context("writing the report")?;
    Ok(())
}

/// Takes a snapshot every tick until `duration` is over or Ctrl-C, with live progress; the
/// window ends at a last snapshot. Returns the per-second timeline.
async fn watch(
    pipeline: &mut Pipeline,
    window: &mut Window,
    duration: Duration,
) -> anyhow::Result<Timeline> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let mut progress = Progress::new();
    let mut timeline = Timeline::default();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            _ = &mut ctrl_c => {
                eprintln!("\ngalmanhae: interrupted, reporting what was seen");
                break;
            }
            _ = ticks.tick() => {
                let snapshot = pipeline.snapshot().context("reading the maps")?;
                timeline.record(window.latest(), &snapshot);
                window.update(snapshot);
                progress.show(started.elapsed(), duration, window);
            }
        }
    }
    let last = pipeline.snapshot().context("last snapshot")?;
    timeline.record(window.latest(), &last);
    window.update(last);
    progress.finish();
    Ok(timeline)
}

/// Each hook with its kernel-side runs, cost and skipped runs over the window.
fn hook_reports(probes: &Probes, baseline: &[Option<RunStats>]) -> Vec<HookReport> {
    probes
        .hooks
        .iter()
        .zip(hook_stats(probes).iter().zip(baseline))
        .map(|(hook, (end, begin))| {
            let window = end.zip(*begin).map(|(end, begin)| end.since(&begin));
            HookReport {
                hook: hook.clone(),
                runs: window.map(|w| w.runs),
                ns_per_run: window.and_then(|w| {
                    #[expect(clippy::cast_precision_loss, reason = "an average for display")]
                    (w.runs > 0).then(|| w.run_time.as_nanos() as f64 / w.runs as f64)
                }),
                missed: window.and_then(|w| w.missed),
            }
        })
        .collect()
}

fn hook_stats(probes: &Probes) -> Vec<Option<RunStats>> {
    probes.hooks.iter().map(|h| probes.run_stats(h)).collect()
}

/// Live progress on stderr: one rewritten line on a terminal, a line every 5 s otherwise.
struct Progress {
    terminal: bool,
    last_line: Option<Instant>,
}

impl Progress {
    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            last_line: None,
        }
    }

    fn show(&mut self, elapsed: Duration, total: Duration, window: &Window) {
        let so_far = window.retransmits_so_far();
        let line = format!(
            "galmanhae: {:>4}s / {}s  retransmits {} (segments {}), failed attempts {}, flows {}",
            elapsed.as_secs(),
            total.as_secs(),
            so_far.retransmits,
            so_far.segments,
            so_far.failed,
            window.latest().retransmits.entries()
        );
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(stderr, "\r{line}");
            let _ = stderr.flush();
        } else if self
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            let _ = writeln!(stderr, "{line}");
            self.last_line = Some(Instant::now());
        }
    }

    fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}
