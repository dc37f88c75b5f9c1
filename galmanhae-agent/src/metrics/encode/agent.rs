//! The agent's own health: its programs' run time, map fill, lost events, caps reached,
//! scrape time, hooks and collectors up, build.

use std::{collections::BTreeMap, time::Duration};

use galmanhae_common::{
    drop::{DROP_MAP_CAPACITY, DROP_OVERFLOW_CAPACITY},
    health::HealthCounter,
    leak::LEAK_MAP_CAPACITY,
    retransmit::OVERFLOW_MAP_CAPACITY,
    stall::TIME_LOST_CAPACITY,
};
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

use super::write::{gauge_value, infos};
use crate::{
    kernel::probes::{HookStatus, RunStats},
    metrics::{
        Exporter,
        health::{CollectorLabels, HookLabels, SourceState},
    },
};

#[derive(Clone, Debug, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

/// The agent's own health: programs, maps, losses, caps, scrape time, build.
pub(super) fn encode_self(
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
    encode_fill(&map_fill(exporter), encoder)?;
    encode_losses(exporter, programs, encoder)
}

/// Each kernel map: its name, entries in the last sample, capacity.
fn map_fill(exporter: &Exporter) -> [(&'static str, usize, u32); 7] {
    let probes = &exporter.passes.pipeline.probes;
    let sample = exporter.passes.last();
    [
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
    ]
}

/// `galmanhae_bpf_map_entries` and `galmanhae_bpf_map_capacity`.
fn encode_fill(
    maps: &[(&'static str, usize, u32)],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    {
        let mut family = encoder.encode_descriptor(
            "galmanhae_bpf_map_entries",
            "Entries in the kernel map",
            None,
            MetricType::Gauge,
        )?;
        for (map, entries, _) in maps {
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
        for (map, _, capacity) in maps {
            gauge_value(u64::from(*capacity)).encode(family.encode_family(&[("map", *map)])?)?;
        }
    }
    Ok(())
}

/// What the kernel side could not count, and the entries the agent freed.
fn encode_losses(
    exporter: &Exporter,
    programs: &BTreeMap<&'static str, RunStats>,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let sample = exporter.passes.last();
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
    encode_up(exporter, measured, encoder)?;
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

/// Whether each hook is attached and each collector worked.
fn encode_up(
    exporter: &Exporter,
    measured: bool,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let probes = &exporter.passes.pipeline.probes;
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
    Ok(())
}
