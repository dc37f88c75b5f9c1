//! galmanhae's agent: loads the kernel programs, attributes sockets to workloads, reports.
//!
//! Data flows one way: kernel maps ([`kernel`]) -> collectors ([`collect`]) -> attribution
//! ([`attribute`]) -> [`pipeline`] (every source, each at its own rate) -> [`model`]'s
//! evidence -> [`findings`] -> sinks ([`report`], [`metrics`]) -> [`commands`] (wiring).
//! [`path`] reads the MTUs on a workload's path (its interface, veth, bridge, egress route).
//! [`conntrack`] reads the NAT table, its health and the MASQUERADE rules for `diagnose`.
//! Sinks: [`report`] (`diagnose`'s text and JSON), [`metrics`] (`run`'s Prometheus endpoint).

pub mod addr;
pub mod attribute;
pub mod cli;
pub mod collect;
pub mod commands;
pub mod config;
pub mod conntrack;
pub mod findings;
pub mod kernel;
pub mod metrics;
pub(crate) mod model;
pub mod netlink;
pub mod path;
pub mod pipeline;
pub mod report;
pub mod systemd;
pub mod timeline;
