//! galmanhae's agent: loads the kernel programs, attributes sockets to workloads, reports.
//!
//! Data flows one way: kernel maps (`kernel`) -> collectors (`collect`) -> attribution
//! (`attribute`) -> `pipeline` (every source, each at its own rate) -> `model`'s
//! evidence -> `findings` -> sinks (`report`, [`metrics`]) -> `commands` (wiring).
//! [`path`] reads the MTUs on a workload's path (its interface, veth, bridge, egress route).
//! `conntrack` reads the NAT table, its health and the MASQUERADE rules for `diagnose`.
//! Sinks: `report` (`diagnose`'s text and JSON), [`metrics`] (`run`'s Prometheus endpoint).
//! Everything but [`main`], [`path`] and [`metrics`]' families is `pub(crate)`.

pub(crate) mod addr;
pub(crate) mod attribute;
pub(crate) mod cli;
pub(crate) mod collect;
pub(crate) mod commands;
pub(crate) mod config;
pub(crate) mod conntrack;
pub(crate) mod findings;
pub(crate) mod kernel;
pub(crate) mod malloc;
pub mod metrics;
pub(crate) mod model;
pub(crate) mod netlink;
pub mod path;
pub(crate) mod pipeline;
pub(crate) mod report;
pub(crate) mod systemd;
pub(crate) mod timeline;

pub use commands::entry::main;
