//! Each tool's count of each storm container's retransmits, from what it printed or served.

use std::collections::BTreeMap;

use super::{Container, Counts, parse::Sample};

pub(super) fn as_count(value: f64) -> u64 {
    // Counters are integers that Prometheus prints as floats.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a rounded, clamped counter delta"
    )]
    let count = value.round().max(0.0) as u64;
    count
}

/// Per container name, from counts per source address.
pub(super) fn by_container<'a>(
    per_source: &BTreeMap<String, u64>,
    name_of: impl Fn(&str) -> Option<&'a str>,
) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (source, count) in per_source {
        if let Some(name) = name_of(source) {
            *counts.entry(name.to_owned()).or_default() += count;
        }
    }
    counts
}

/// The daemon's hook-counted segments per workload between two scrapes; attempts where the
/// agent has no segment family.
pub(super) fn daemon_counts(first: &[Sample], last: &[Sample], containers: &[Container]) -> Counts {
    let segments = "galmanhae_tcp_retransmit_segments_total";
    let (family, unit) = if last.iter().any(|s| s.name == segments) {
        (segments, "segments")
    } else {
        ("galmanhae_tcp_retransmits_total", "attempts")
    };
    let total = |samples: &[Sample], workload: &str| -> f64 {
        samples
            .iter()
            .filter(|s| s.name == family && s.label("workload") == Some(workload))
            .filter(|s| s.label("kind") != Some("failed"))
            .map(|s| s.value)
            .sum()
    };
    let skipped = lost_by_reason(first, last);
    Counts {
        unit,
        per_container: Some(
            containers
                .iter()
                .map(|c| {
                    let delta = total(last, &c.name) - total(first, &c.name);
                    (c.name.clone(), as_count(delta))
                })
                .collect(),
        ),
        // Retransmits the kernel side could not count per workload. `program_skipped` sums
        // every program's skipped runs (drops and leaks too): it is in the run's notes.
        lost: Some(
            ["overflow_map_full", "read_error"]
                .iter()
                .filter_map(|r| skipped.get(*r))
                .sum(),
        ),
        ..Counts::default()
    }
}

/// The growth of `galmanhae_lost_events_total` by reason between two scrapes.
pub(super) fn lost_by_reason(first: &[Sample], last: &[Sample]) -> BTreeMap<String, u64> {
    let value = |samples: &[Sample], reason: &str| -> f64 {
        samples
            .iter()
            .filter(|s| {
                s.name == "galmanhae_lost_events_total" && s.label("reason") == Some(reason)
            })
            .map(|s| s.value)
            .sum()
    };
    last.iter()
        .filter(|s| s.name == "galmanhae_lost_events_total")
        .filter_map(|s| s.label("reason"))
        .map(|reason| {
            let delta = as_count(value(last, reason) - value(first, reason));
            (reason.to_owned(), delta)
        })
        .collect()
}

/// The hook's retransmitted segments summed over each workload's flows; lost: what the kernel
/// side could not count, and the runs the kernel skipped of the TCP retransmit hooks.
pub(super) fn diagnose_counts(report: &serde_json::Value, containers: &[Container]) -> Counts {
    let flows = report["flows"].as_array().map_or(&[][..], Vec::as_slice);
    let health = &report["health"];
    Counts {
        unit: "segments",
        per_container: Some(
            containers
                .iter()
                .map(|c| {
                    let sum = flows
                        .iter()
                        .filter(|f| f["workload"] == c.name.as_str())
                        .filter_map(|f| f["retransmitted_segments"].as_u64())
                        .sum();
                    (c.name.clone(), sum)
                })
                .collect(),
        ),
        lost: Some(
            health["lost"].as_u64().unwrap_or(0)
                + health["read_errors"].as_u64().unwrap_or(0)
                + report["hooks"]
                    .as_array()
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .filter(|h| h["name"].as_str().is_some_and(|n| n.starts_with("tcp:")))
                    .filter_map(|h| h["missed"].as_u64())
                    .sum::<u64>(),
        ),
        ..Counts::default()
    }
}
