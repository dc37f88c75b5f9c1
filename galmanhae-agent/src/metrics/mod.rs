//! The Prometheus sink of `galmanhae run`: the diagnose pipeline run pass after pass, its
//! deltas folded into long-lived series. Families and labels are a contract:
//! `deploy/METRICS.md`.
//!
//! A pass runs on every scrape (the maps are read at scrape time) and on a timer (so that
//! vanished containers are seen, names refreshed, the NAT table and path MTUs read).
//!
//! `exporter.rs` runs the passes and expires what went; `fold.rs`, `retransmits.rs`,
//! `time_lost.rs` and `findings.rs` fold each pass's evidence into [`Families`] (the
//! series of every family, `families.rs`) under the label sets of `labels.rs`; `series.rs`
//! keeps series and caps their labels. [`encode`] encodes the series with
//! `prometheus-client`; `http.rs` serves them, `shared.rs` is what its handlers and the timer
//! share.

pub mod encode;
mod exporter;
mod families;
mod findings;
mod fold;
pub(crate) mod health;
pub(crate) mod http;
mod labels;
mod retransmits;
pub(crate) mod series;
pub(crate) mod shared;
mod time_lost;

pub(crate) use self::{
    exporter::Exporter,
    findings::FindingLabels,
    labels::{
        ConntrackEventLabels, DropLabels, LeakLabels, NamespaceLabels, NatLabels, OnlyWorkload,
        PathLabels, RemoteLabels, StallBucket, family,
    },
};
pub use self::{
    families::Families,
    labels::{RetransmitLabels, WorkloadLabels},
    series::Lifecycle,
};
