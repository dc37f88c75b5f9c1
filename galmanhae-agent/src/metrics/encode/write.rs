//! One family written from folded series: counters, gauges, seconds, infos.

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

use crate::metrics::series::Series;

pub(super) fn gauge_value(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

/// One family of folded series: counters, or gauges (with an optional unit).
pub(super) fn series<L: EncodeLabelSet + std::hash::Hash + Eq>(
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
pub(super) fn seconds<L: EncodeLabelSet + std::hash::Hash + Eq>(
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

pub(super) fn counters<L: EncodeLabelSet + std::hash::Hash + Eq>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    folded: &Series<L>,
) -> Result<(), std::fmt::Error> {
    series(encoder, (name, help, None), MetricType::Counter, folded)
}

pub(super) fn gauges<L: EncodeLabelSet + std::hash::Hash + Eq>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    folded: &Series<L>,
) -> Result<(), std::fmt::Error> {
    series(encoder, (name, help, None), MetricType::Gauge, folded)
}

pub(super) fn infos<'a, L: EncodeLabelSet + 'a>(
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
