//! galmanhae's agent: loads the kernel programs, attributes sockets to workloads, reports.
//!
//! Data flows one way: kernel maps ([`kernel`]) -> collectors ([`collect`]) -> attribution
//! ([`attribute`]) -> one snapshot per tick ([`pipeline`]) -> sinks ([`report`]).
//! [`conntrack`] reads the NAT table, its health and the MASQUERADE rules for `diagnose`.

pub mod attribute;
pub mod cli;
pub mod collect;
pub mod commands;
pub mod conntrack;
pub mod kernel;
pub mod pipeline;
pub mod report;
