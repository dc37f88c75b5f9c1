//! One module per signal; each turns kernel state into plain records.

pub mod drops;
pub mod maps;
pub mod nat_leaks;
pub mod netfilter;
pub mod netns_snmp;
pub mod retransmits;
pub mod time_lost;
