//! The families folded from the passes, and the host's MASQUERADE rules.

use std::collections::BTreeMap;

use galmanhae_common::stall::{STALL_BUCKETS, STALL_BUCKETS_MS};
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet},
    metrics::MetricType,
    registry::Unit,
};

use super::write::{counters, gauges, infos, seconds, series};
use crate::metrics::{Exporter, Families, OnlyWorkload};

#[derive(Clone, Debug, EncodeLabelSet)]
struct MasqueradeLabels {
    family: &'static str,
    backend: &'static str,
    chain: String,
    source: String,
    out_interface: String,
    random_fully: &'static str,
}

/// The folded families: TCP, then drops, NAT, conntrack and path MTU.
pub(super) fn encode_families(
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
    encode_network(exporter, encoder)
}

/// Drops, NAT leaks, conntrack, NAT bindings, findings, path MTU.
fn encode_network(
    exporter: &Families,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
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
pub(super) fn encode_rules(
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
