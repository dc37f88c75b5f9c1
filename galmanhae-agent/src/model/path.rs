//! The MTUs on a workload's path to a remote.

use std::net::IpAddr;

#[derive(Clone, Debug)]
pub(crate) struct Path {
    pub workload: String,
    pub remote: IpAddr,
    pub hops: Vec<Hop>,
    pub smallest_mtu: Option<u32>,
    /// (inner, egress) when the workload side allows larger packets than the egress.
    pub mismatch: Option<(u32, u32)>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct Hop {
    pub role: HopRole,
    pub interface: String,
    pub mtu: u32,
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
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Workload => "workload",
            Self::HostVeth => "host_veth",
            Self::Bridge => "bridge",
            Self::Egress => "egress",
        }
    }
}
