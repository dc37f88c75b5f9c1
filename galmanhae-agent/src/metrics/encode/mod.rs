//! Encodes the series as Prometheus families (`prometheus-client` collector). Every scrape
//! first runs a pass over the maps, under the same lock as the encoding: concurrent scrapes
//! are serialised and each one sees a single consistent state (`Shared`).
//!
//! `folded.rs`: the families folded from the passes (and the MASQUERADE rules); `agent.rs`:
//! the agent's own health; `write.rs`: one family written from folded series.

mod agent;
mod folded;
mod write;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, registry::Registry};

use super::{
    Exporter, Families, Lifecycle as _,
    shared::{Asker, Shared},
};

/// A registry whose only collector is the exporter.
pub(crate) fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ExporterCollector(shared)));
    registry
}

#[derive(Debug)]
struct ExporterCollector(Arc<Shared>);

impl Collector for ExporterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut exporter = self.0.pass(Asker::Scrape);
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
    folded::encode_families(&exporter.series, encoder)?;
    folded::encode_rules(exporter, encoder)?;
    agent::encode_self(exporter, previous_render, encoder)
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
            folded::encode_families(&self.0, &mut encoder)
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
