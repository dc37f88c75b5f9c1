//! The MTUs on a workload's path to a remote.

use std::net::IpAddr;

#[derive(Clone, Debug)]
pub(crate) struct Path {
    pub(crate) workload: String,
    pub(crate) remote: IpAddr,
    pub(crate) hops: Vec<Hop>,
    pub(crate) smallest_mtu: Option<u32>,
    /// (inner, egress) when the workload side allows larger packets than the egress.
    pub(crate) mismatch: Option<(u32, u32)>,
    pub(crate) notes: Vec<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct Hop {
    pub(crate) role: HopRole,
    pub(crate) interface: String,
    pub(crate) mtu: u32,
}

/// Where on the path an interface is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HopRole {
    Workload,
    HostVeth,
    Bridge,
    Egress,
}

impl HopRole {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Workload => "workload",
            Self::HostVeth => "host_veth",
            Self::Bridge => "bridge",
            Self::Egress => "egress",
        }
    }
}
