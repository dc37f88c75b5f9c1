//! One module per signal; each turns kernel state into plain records.

mod batch;
pub(crate) mod drops;
pub(crate) mod maps;
pub(crate) mod nat_leaks;
pub(crate) mod netfilter;
pub(crate) mod netns_snmp;
pub(crate) mod retransmits;
pub(crate) mod time_lost;
