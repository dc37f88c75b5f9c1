//! galmanhae's agent: loads the kernel programs, attributes sockets to workloads, reports.
//!
//! Data flows one way: kernel maps ([`kernel`]) -> collectors ([`collect`]) -> attribution
//! ([`attribute`]) -> one snapshot per tick ([`pipeline`]) -> [`findings`] -> sinks ([`report`]).
//! [`path`] reads the MTUs on a workload's path (its interface, veth, bridge, egress route).
//! [`conntrack`] reads the NAT table, its health and the MASQUERADE rules for `diagnose`.

pub mod addr;
pub mod attribute;
pub mod cli;
pub mod collect;
pub mod commands;
pub mod conntrack;
pub mod findings;
pub mod kernel;
pub mod netlink;
pub mod path;
pub mod pipeline;
pub mod report;
