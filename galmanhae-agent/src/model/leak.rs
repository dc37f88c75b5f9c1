//! Packets that left the host with a workload's untranslated address.

use std::{fmt, net::IpAddr};

/// Untranslated packets of one owner through one uplink.
#[derive(Clone, Debug)]
pub(crate) struct Leak {
    pub(crate) owner: LeakOwner,
    pub(crate) interface: String,
    pub(crate) packets: u64,
    pub(crate) examples: Vec<String>,
}

/// Whose the untranslated source address is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum LeakOwner {
    Workload(String),
    /// A bridge address no namespace on this host has (any more).
    Unowned(IpAddr),
}

impl fmt::Display for LeakOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Workload(name) => f.write_str(name),
            Self::Unowned(address) => write!(f, "bridge address {address}"),
        }
    }
}
