//! Encodes the series as Prometheus families (`prometheus-client` collector). Every scrape
//! first runs a pass over the maps, under the same lock as the encoding: concurrent scrapes
//! are serialised and each one sees a single consistent state.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use galmanhae_common::{
    drop::{DROP_MAP_CAPACITY, DROP_OVERFLOW_CAPACITY},
    health::HealthCounter,
    leak::LEAK_MAP_CAPACITY,
    retransmit::OVERFLOW_MAP_CAPACITY,
    stall::{STALL_BUCKETS, STALL_BUCKETS_MS, TIME_LOST_CAPACITY},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use super::{
    Exporter, Families, Lifecycle as _, OnlyWorkload,
    health::{CollectorLabels, HookLabels, SourceState},
    series::Series,
};
use crate::kernel::probes::{HookStatus, RunStats};

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

/// A registry whose only collector is the exporter.
pub(crate) fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ExporterCollector(shared)));
    registry
}

#[derive(Debug)]
struct ExporterCollector(Arc<Shared>);

#[derive(Clone, Debug, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

#[derive(Clone, Debug, EncodeLabelSet)]
struct MasqueradeLabels {
    family: &'static str,
    backend: &'static str,
    chain: String,
    source: String,
    out_interface: String,
    random_fully: &'static str,
}

impl Collector for ExporterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut exporter = self.0.pass(false);
        exporter.series.mark_shown();
        let render = Duration::from_nanos(self.0.render_ns.load(Ordering::Relaxed));
        encode_exporter(&exporter, render, &mut encoder)
    }
}

fn encode_exporter(
    exporter: &Exporter,
    previous_render: Duration,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    encode_families(&exporter.series, encoder)?;
    encode_rules(exporter, encoder)?;
    encode_self(exporter, previous_render, encoder)
}

/// The folded families: TCP, drops, NAT, conntrack, path MTU.
fn encode_families(
    exporter: &Families,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    counters(
        encoder,
        "galmanhae_tcp_sent_segments",
        "TCP segments sent by the workload's network namespace (its Tcp: OutSegs)",
        &exporter.sent,
    )?;
    counters(
        encoder,
        "galmanhae_tcp_retransmitted_segments",
        "TCP segments retransmitted by the workload's network namespace (its Tcp: RetransSegs)",
        &exporter.retransmitted,
    )?;
    counters(
        encoder,
        "galmanhae_tcp_retransmits",
        "Retransmit attempts counted in the kernel, per server-side remote and kind",
        &exporter.retransmits,
    )?;
    counters(
        encoder,
        "galmanhae_tcp_retransmit_segments",
        "Retransmitted segments counted in the kernel, per server-side remote (sums to RetransSegs)",
        &exporter.retransmit_segments,
    )?;
    seconds(
        encoder,
        (
            "galmanhae_tcp_rto_stall",
            "Time the workload's sockets to the remote spent in RTO recovery (timeout to recovery or close)",
        ),
        &exporter.rto_stall,
    )?;
    seconds(
        encoder,
        (
            "galmanhae_tcp_syn_retry",
            "Time from the first SYN to established or closed, for handshakes that timed out",
        ),
        &exporter.syn_retry,
    )?;
    stall_histograms(encoder, exporter)?;
    counters(
        encoder,
        "galmanhae_skb_drops",
        "Packets the kernel dropped (skb:kfree_skb), by drop reason and kernel function",
        &exporter.drops,
    )?;
    counters(
        encoder,
        "galmanhae_nat_leaked_packets",
        "Packets that left through an uplink with a workload's untranslated address",
        &exporter.leaks,
    )?;
    gauges(
        encoder,
        "galmanhae_conntrack_entries",
        "Entries in the namespace's conntrack table",
        &exporter.conntrack_entries,
    )?;
    gauges(
        encoder,
        "galmanhae_conntrack_max",
        "Limit of the conntrack table (nf_conntrack_max)",
        &exporter.conntrack_max,
    )?;
    counters(
        encoder,
        "galmanhae_conntrack_events",
        "Conntrack statistics of the namespace, summed over CPUs",
        &exporter.conntrack_events,
    )?;
    infos(
        encoder,
        "galmanhae_nat",
        "A workload's address and the host address it is source-NATed to (conntrack)",
        exporter.nat_info.iter().map(|(labels, _)| labels),
    )?;
    gauges(
        encoder,
        "galmanhae_finding",
        "A finding of diagnose's rules that holds over the daemon's findings window (1)",
        &exporter.findings,
    )?;
    let bytes = Unit::Other("bytes".to_owned());
    series(
        encoder,
        (
            "galmanhae_path_mtu",
            "MTU of each hop on the workload's path out of the host",
            Some(&bytes),
        ),
        MetricType::Gauge,
        &exporter.path_mtu,
    )?;
    Ok(())
}

/// The host's MASQUERADE rules.
fn encode_rules(
    exporter: &Exporter,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let masquerade: Vec<MasqueradeLabels> = exporter
        .nat_audit
        .masquerade
        .iter()
        .map(|rule| MasqueradeLabels {
            family: rule.family.as_str(),
            backend: rule.backend.as_str(),
            chain: rule.chain.clone(),
            source: rule.source.clone().unwrap_or_default(),
            out_interface: rule.out_iface.clone().unwrap_or_default(),
            random_fully: if rule.random_fully { "true" } else { "false" },
        })
        .collect();
    infos(
        encoder,
        "galmanhae_nat_masquerade",
        "A MASQUERADE rule of the host's nat table",
        masquerade.iter(),
    )
}

/// The agent's own health: programs, maps, losses, caps, scrape time, build.
fn encode_self(
    exporter: &Exporter,
    previous_render: Duration,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    // A sysctl read: once per scrape.
    let measured = exporter.passes.pipeline.probes.run_time_measured();
    let programs = encode_programs(exporter, measured, encoder)?;
    encode_maps(exporter, &programs, encoder)?;
    encode_status(exporter, measured, previous_render, encoder)
}

/// Per-program kernel run time and runs; returns the run statistics by program.
fn encode_programs(
    exporter: &Exporter,
    measured: bool,
    encoder: &mut DescriptorEncoder,
) -> Result<BTreeMap<&'static str, RunStats>, std::fmt::Error> {
    let probes = &exporter.passes.pipeline.probes;
    // One program may serve several hooks (the tc program on each uplink).
    let mut programs: BTreeMap<&'static str, RunStats> = BTreeMap::new();
    for hook in &probes.hooks {
        if let Some(stats) = probes.run_stats(hook) {
            programs.insert(hook.program, stats);
        }
    }
    if measured {
        let seconds = Unit::Seconds;
        let mut family = encoder.encode_descriptor(
            "galmanhae_bpf_program_run_time",
            "Kernel time spent in the program (bpf_prog_info.run_time_ns)",
            Some(&seconds),
            MetricType::Counter,
        )?;
        for (program, stats) in &programs {
            ConstCounter::new(stats.run_time.as_secs_f64())
                .encode(family.encode_family(&[("program", *program)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "galmanhae_bpf_program_runs",
            "Times the program ran (bpf_prog_info.run_cnt)",
            None,
            MetricType::Counter,
        )?;
        for (program, stats) in &programs {
            ConstCounter::new(stats.runs)
                .encode(family.encode_family(&[("program", *program)])?)?;
        }
    }
    Ok(programs)
}

/// Map fill, what the kernel side lost, and the entries the agent freed.
fn encode_maps(
    exporter: &Exporter,
    programs: &BTreeMap<&'static str, RunStats>,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let probes = &exporter.passes.pipeline.probes;
    let sample = exporter.passes.last();
    let maps: [(&str, usize, u32); 7] = [
        (
            "retransmit_sockets",
            sample.retransmits.sockets.len(),
            probes.flow_capacity,
        ),
        (
            "retransmit_flows",
            sample.retransmits.flows.len(),
            probes.flow_capacity,
        ),
        (
            "retransmit_overflow",
            sample.retransmits.overflow.len(),
            OVERFLOW_MAP_CAPACITY,
        ),
        ("drops", sample.drops.flows.len(), DROP_MAP_CAPACITY),
        (
            "drop_overflow",
            sample.drops.overflow.len(),
            DROP_OVERFLOW_CAPACITY,
        ),
        ("leaks", sample.leaks.len(), LEAK_MAP_CAPACITY),
        (
            "time_lost",
            sample.time_lost.sockets.len(),
            TIME_LOST_CAPACITY,
        ),
    ];
    {
        let mut family = encoder.encode_descriptor(
            "galmanhae_bpf_map_entries",
            "Entries in the kernel map",
            None,
            MetricType::Gauge,
        )?;
        for (map, entries, _) in &maps {
            gauge_value(*entries as u64).encode(family.encode_family(&[("map", *map)])?)?;
        }
    }
    {
        let mut family = encoder.encode_descriptor(
            "galmanhae_bpf_map_capacity",
            "Capacity of the kernel map (max_entries)",
            None,
            MetricType::Gauge,
        )?;
        for (map, _, capacity) in &maps {
            gauge_value(u64::from(*capacity)).encode(family.encode_family(&[("map", *map)])?)?;
        }
    }
    {
        let mut family = encoder.encode_descriptor(
            "galmanhae_lost_events",
            "Events the kernel side could not count in full, by reason",
            None,
            MetricType::Counter,
        )?;
        for counter in HealthCounter::ALL {
            let lost = sample.retransmits.health(counter);
            ConstCounter::new(lost).encode(family.encode_family(&[("reason", counter.name())])?)?;
        }
        let skipped: u64 = programs.values().filter_map(|s| s.missed).sum();
        ConstCounter::new(skipped)
            .encode(family.encode_family(&[("reason", "program_skipped")])?)?;
    }
    {
        let family = encoder.encode_descriptor(
            "galmanhae_flow_entries_freed",
            "Kernel map entries of idle flows freed to keep room (their counts were kept)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(exporter.passes.evicted()).encode(family)?;
    }
    Ok(())
}

/// Caps reached, scrape time, hooks and collectors up, build.
fn encode_status(
    exporter: &Exporter,
    measured: bool,
    previous_render: Duration,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let probes = &exporter.passes.pipeline.probes;
    {
        let mut family = encoder.encode_descriptor(
            "galmanhae_series_dropped",
            "Series not exported because a [limits] cap was reached (per collection pass)",
            None,
            MetricType::Counter,
        )?;
        for (name, count) in &exporter.series_dropped {
            ConstCounter::new(*count).encode(family.encode_family(&[("family", *name)])?)?;
        }
    }
    {
        let seconds = Unit::Seconds;
        let family = encoder.encode_descriptor(
            "galmanhae_scrape_duration",
            "How long the previous /metrics render took",
            Some(&seconds),
            MetricType::Gauge,
        )?;
        ConstGauge::new(previous_render.as_secs_f64()).encode(family)?;
    }
    {
        let mut family = encoder.encode_descriptor(
            "galmanhae_hook_up",
            "1 when the kernel hook is attached; status and required say what a 0 means",
            None,
            MetricType::Gauge,
        )?;
        for hook in &probes.hooks {
            let up = u64::from(hook.status == HookStatus::Attached);
            gauge_value(up).encode(family.encode_family(&HookLabels::of(hook))?)?;
        }
    }
    {
        let mut family = encoder.encode_descriptor(
            "galmanhae_collector_up",
            "1 when the user-space source worked on the last pass; status and required say \
             what a 0 means",
            None,
            MetricType::Gauge,
        )?;
        let bpf_stats = if measured {
            SourceState::Ok
        } else {
            SourceState::Off
        };
        let states = exporter.collectors.iter().map(|(c, s)| (*c, *s));
        for (collector, state) in states.chain([("bpf_stats", bpf_stats)]) {
            gauge_value(u64::from(state == SourceState::Ok))
                .encode(family.encode_family(&CollectorLabels::of(collector, state))?)?;
        }
    }
    infos(
        encoder,
        "galmanhae_build",
        "The agent's version and the commit it was built from",
        [BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
            commit: env!("GALMANHAE_COMMIT"),
        }]
        .iter(),
    )
}

fn gauge_value(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

/// One family of folded series: counters, or gauges (with an optional unit).
fn series<L: EncodeLabelSet + std::hash::Hash + Eq>(
    encoder: &mut DescriptorEncoder,
    (name, help, unit): (&str, &str, Option<&Unit>),
    metric_type: MetricType,
    series: &Series<L>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit, metric_type)?;
    for (labels, value) in series.iter() {
        let metric = family.encode_family(labels)?;
        if matches!(metric_type, MetricType::Counter) {
            ConstCounter::new(value).encode(metric)?;
        } else {
            gauge_value(value).encode(metric)?;
        }
    }
    Ok(())
}

/// Counters kept in nanoseconds, served in seconds.
fn seconds<L: EncodeLabelSet + std::hash::Hash + Eq>(
    encoder: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    folded: &Series<L>,
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Counter)?;
    for (labels, nanoseconds) in folded.iter() {
        #[expect(clippy::cast_precision_loss, reason = "seconds")]
        ConstCounter::new(nanoseconds as f64 / 1e9).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// `galmanhae_tcp_rto_stall_duration_seconds{workload}`: completed recoveries by duration.
fn stall_histograms(
    encoder: &mut DescriptorEncoder,
    exporter: &Families,
) -> Result<(), std::fmt::Error> {
    let mut workloads: BTreeMap<&str, [u64; STALL_BUCKETS]> = BTreeMap::new();
    for (labels, count) in exporter.stall_buckets.iter() {
        if let Some(slot) = workloads
            .entry(labels.workload.as_str())
            .or_default()
            .get_mut(labels.bucket)
        {
            *slot += count;
        }
    }
    let mut family = encoder.encode_descriptor(
        "galmanhae_tcp_rto_stall_duration",
        "Completed RTO recoveries of the workload's sockets, by how long each lasted",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for (workload, counts) in workloads {
        let labels = OnlyWorkload {
            workload: workload.to_owned(),
        };
        let sum = exporter.stall_sum.get(&labels).unwrap_or(0);
        #[expect(clippy::cast_precision_loss, reason = "seconds")]
        let buckets: Vec<(f64, u64)> = STALL_BUCKETS_MS
            .iter()
            .map(|ms| *ms as f64 / 1000.0)
            .chain([f64::MAX])
            .zip(counts)
            .collect();
        #[expect(clippy::cast_precision_loss, reason = "seconds")]
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                sum as f64 / 1e9,
                counts.iter().sum(),
                &buckets,
                None,
            )?;
    }
    Ok(())
}

fn counters<L: EncodeLabelSet + std::hash::Hash + Eq>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    folded: &Series<L>,
) -> Result<(), std::fmt::Error> {
    series(encoder, (name, help, None), MetricType::Counter, folded)
}

fn gauges<L: EncodeLabelSet + std::hash::Hash + Eq>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    folded: &Series<L>,
) -> Result<(), std::fmt::Error> {
    series(encoder, (name, help, None), MetricType::Gauge, folded)
}

fn infos<'a, L: EncodeLabelSet + 'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: impl Iterator<Item = &'a L>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Info)?;
    for labels in labels {
        family.encode_info(labels)?;
    }
    Ok(())
}

/// Renders `families` alone, as `/metrics` would (for the render benchmark,
/// `examples/render.rs`): Prometheus text, or OpenMetrics.
pub fn render_families(
    families: Arc<Families>,
    openmetrics: bool,
) -> Result<String, std::fmt::Error> {
    #[derive(Debug)]
    struct Only(Arc<Families>);
    impl Collector for Only {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_families(&self.0, &mut encoder)
        }
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Only(families)));
    let mut body = String::new();
    encode(&mut body, &registry, openmetrics)?;
    Ok(body)
}

/// The registry as OpenMetrics 1.0 text, or as Prometheus text 0.0.4.
pub(crate) fn encode(
    body: &mut String,
    registry: &Registry,
    openmetrics: bool,
) -> Result<(), std::fmt::Error> {
    if openmetrics {
        prometheus_client::encoding::text::encode(body, registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(body, registry)
    }
}
