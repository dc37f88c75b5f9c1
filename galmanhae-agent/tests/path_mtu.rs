//! Root integration test of the `path` module against a topology it builds and removes
//! itself: a "container" namespace behind a bridge, and a dummy "uplink" with a smaller MTU
//! carrying the route to the remote. Nothing else on the host is touched and no packet is
//! sent (`198.18.0.0/15` only). Without root it skips, except with `CI=true`.
#![expect(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::{
    net::IpAddr,
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard, PoisonError},
    thread,
    time::{Duration, Instant},
};

use galmanhae::path::{self, PathError};
use galmanhae_lab::run;

/// Beyond the uplink: routed, never reached.
const REMOTE: &str = "198.18.252.9";

/// The tests build the same names (this process's pid): one at a time.
static TOPOLOGY: Mutex<()> = Mutex::new(());

/// The namespaces, links and processes of one test, removed in `Drop` even when it panics.
struct Topology {
    n: u32,
    namespaces: Vec<String>,
    links: Vec<String>,
    sleepers: Vec<Child>,
    /// Held until the topology is removed.
    _serial: MutexGuard<'static, ()>,
}

impl Topology {
    /// The host side: bridge `gmh-mtbr<n>` (1500) with 198.18.250.1/24, and uplink
    /// `gmh-mtup<n>` (1400; its veth peer `gmh-mtuq<n>` stands for the wire) with
    /// 198.18.251.1/24 and `2001:2:0:251::1/64`, the routes to 198.18.252.0/24 and
    /// `2001:2:0:252::/64`, and to 198.18.254.0/24 with a route MTU of 1300.
    /// `None` (skipped) without root, unless `CI=true`.
    fn host() -> Option<Self> {
        if !galmanhae_lab::root_or_skip("creating namespaces and interfaces") {
            return None;
        }
        let mut topology = Self {
            n: std::process::id(),
            namespaces: Vec::new(),
            links: Vec::new(),
            sleepers: Vec::new(),
            _serial: TOPOLOGY.lock().unwrap_or_else(PoisonError::into_inner),
        };
        let (bridge, uplink, wire) = (
            topology.name("gmh-mtbr"),
            topology.name("gmh-mtup"),
            topology.name("gmh-mtuq"),
        );
        // Leftovers of an earlier run of the same pid that was killed before its Drop.
        topology.links = vec![topology.name("gmh-mtc"), bridge.clone(), uplink.clone()];
        topology.namespaces = vec![topology.name("gmh-mtu-t"), topology.name("gmh-mtu-u")];
        topology.remove();
        topology.links.clear();
        topology.namespaces.clear();

        topology.link(&bridge, "mtu 1500 type bridge");
        ip(&format!("addr add 198.18.250.1/24 dev {bridge}"));
        ip(&format!("link set {bridge} up"));
        topology.link(
            &uplink,
            &format!("mtu 1400 type veth peer name {wire} mtu 1400"),
        );
        ip(&format!("addr add 198.18.251.1/24 dev {uplink}"));
        ip(&format!("link set {wire} up"));
        ip(&format!("link set {uplink} up"));
        ip(&format!(
            "route add 198.18.252.0/24 via 198.18.251.254 dev {uplink}"
        ));
        ip(&format!(
            "route add 198.18.254.0/24 via 198.18.251.254 dev {uplink} mtu 1300"
        ));
        ip(&format!("addr add 2001:2:0:251::1/64 dev {uplink} nodad"));
        ip(&format!(
            "-6 route add 2001:2:0:252::/64 via 2001:2:0:251::fe dev {uplink}"
        ));
        Some(topology)
    }

    /// A "container": namespace `gmh-mtu-t<n>` whose eth0 (198.18.250.2/24) is the peer of
    /// veth `gmh-mtc<n>` in the bridge. Returns the pid of a process in it.
    fn container(&mut self) -> u32 {
        let (netns, veth, bridge) = (
            self.name("gmh-mtu-t"),
            self.name("gmh-mtc"),
            self.name("gmh-mtbr"),
        );
        self.netns(&netns);
        self.link(
            &veth,
            &format!("mtu 1500 type veth peer name eth0 mtu 1500 netns {netns}"),
        );
        ip(&format!("link set {veth} master {bridge} up"));
        ip(&format!("-n {netns} addr add 198.18.250.2/24 dev eth0"));
        ip(&format!("-n {netns} link set eth0 up"));
        ip(&format!("-n {netns} route add default via 198.18.250.1"));
        self.sleeper(&netns)
    }

    /// A namespace `gmh-mtu-u<n>` that no veth links to the host: its default route leaves
    /// by `gmh-mtd<n>` (1450), whose veth peer `gmh-mtde<n>` is in the same namespace.
    /// Returns the pid of a process in it.
    fn isolated(&mut self) -> u32 {
        let (netns, uplink, wire) = (
            self.name("gmh-mtu-u"),
            self.name("gmh-mtd"),
            self.name("gmh-mtde"),
        );
        self.netns(&netns);
        ip(&format!(
            "-n {netns} link add {uplink} mtu 1450 type veth peer name {wire} mtu 1450"
        ));
        ip(&format!("-n {netns} addr add 198.18.253.2/24 dev {uplink}"));
        ip(&format!("-n {netns} link set {wire} up"));
        ip(&format!("-n {netns} link set {uplink} up"));
        ip(&format!("-n {netns} route add default via 198.18.253.1"));
        self.sleeper(&netns)
    }

    /// A process in `netns` (`ip netns exec` execs, so the child's pid is the sleeper's).
    fn sleeper(&mut self, netns: &str) -> u32 {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("starting sleep in the namespace");
        let pid = child.id();
        self.sleepers.push(child);
        let theirs = format!("/proc/{pid}/ns/net");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(&theirs).ok() == std::fs::read_link("/proc/self/ns/net").ok() {
            assert!(Instant::now() < deadline, "sleep never entered {netns}");
            thread::sleep(Duration::from_millis(20));
        }
        pid
    }

    /// Ends the sleeper `pid` and waits until it is gone.
    fn stop(&mut self, pid: u32) {
        if let Some(index) = self.sleepers.iter().position(|child| child.id() == pid) {
            let mut child = self.sleepers.swap_remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn name(&self, prefix: &str) -> String {
        let name = format!("{prefix}{}", self.n);
        assert!(name.len() < 16, "{name} is longer than IFNAMSIZ allows");
        name
    }

    fn netns(&mut self, name: &str) {
        self.namespaces.push(name.to_owned());
        ip(&format!("netns add {name}"));
    }

    fn link(&mut self, name: &str, args: &str) {
        self.links.push(name.to_owned());
        ip(&format!("link add {name} {args}"));
    }

    fn remove(&mut self) {
        for mut child in self.sleepers.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for link in self.links.iter().rev() {
            let _ = run("ip", &["link", "del", link]);
        }
        for netns in &self.namespaces {
            let _ = run("ip", &["netns", "del", netns]);
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `ip` with whitespace-separated arguments (no name here has a space).
fn ip(args: &str) {
    let args: Vec<&str> = args.split_whitespace().collect();
    run("ip", &args).expect("building the test topology");
}

fn remote() -> IpAddr {
    REMOTE.parse().expect("REMOTE is an address")
}

#[test]
fn container_behind_a_bridge_with_a_smaller_uplink() {
    let Some(mut topology) = Topology::host() else {
        return;
    };
    let pid = topology.container();

    let path = path::workload_path(pid, remote());
    eprintln!("{path:#?}");
    assert!(path.notes.is_empty(), "{:?}", path.notes);
    let (inner, veth, bridge, egress) = (
        path.workload_if.as_ref().expect("workload interface"),
        path.host_veth.as_ref().expect("host veth"),
        path.bridge.as_ref().expect("bridge"),
        path.egress.as_ref().expect("egress"),
    );
    assert_eq!(
        (inner.name.as_str(), inner.mtu, inner.kind.as_deref()),
        ("eth0", 1500, Some("veth"))
    );
    assert_eq!(
        (veth.name.clone(), veth.mtu, veth.kind.as_deref(), veth.up),
        (topology.name("gmh-mtc"), 1500, Some("veth"), true)
    );
    assert_eq!(
        (bridge.name.clone(), bridge.mtu, bridge.kind.as_deref()),
        (topology.name("gmh-mtbr"), 1500, Some("bridge"))
    );
    assert_eq!(veth.master, Some(bridge.ifindex));
    assert_eq!(veth.peer_ifindex, Some(inner.ifindex));
    let nsid = path::nsid_of_pid(pid)
        .expect("RTM_GETNSID")
        .expect("a veth gives the namespace an nsid");
    assert_eq!(veth.link_netnsid, Some(nsid));
    assert_eq!(
        (egress.dev.clone(), egress.dev_mtu, egress.route_mtu),
        (topology.name("gmh-mtup"), 1400, None)
    );
    assert_eq!(egress.gateway, "198.18.251.254".parse().ok());
    assert_eq!(egress.prefsrc, "198.18.251.1".parse().ok());
    assert_eq!(path.smallest(), Some(1400));
    assert_eq!(path.mismatch(), Some((1500, 1400)));

    // A route's own MTU metric, and IPv6.
    let small = path::route_to("198.18.254.9".parse().expect("address")).expect("route");
    assert_eq!(
        (small.route_mtu, small.dev_mtu, small.mtu()),
        (Some(1300), 1400, 1300)
    );
    let v6 = path::route_to("2001:2:0:252::9".parse().expect("address")).expect("route");
    assert_eq!(
        (v6.dev.clone(), v6.mtu(), v6.gateway),
        (
            topology.name("gmh-mtup"),
            1400,
            "2001:2:0:251::fe".parse().ok()
        )
    );

    // The container's view, read by nsid: its own interfaces, none of the host's.
    let inside = path::links_in(nsid).expect("RTM_GETLINK with IFLA_TARGET_NETNSID");
    let mut names: Vec<&str> = inside.iter().map(|i| i.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["eth0", "lo"]);

    // The test process itself is on the host network: its interface is the egress.
    let host = path::workload_path(std::process::id(), remote());
    assert_eq!(
        host.workload_if.as_ref().map(|i| i.name.clone()),
        Some(topology.name("gmh-mtup"))
    );
    assert!(host.host_veth.is_none() && host.bridge.is_none());
    assert!(
        host.notes[0].contains("host's network namespace"),
        "{host:?}"
    );

    // The process exits: notes, not a panic; the host's egress is still known.
    topology.stop(pid);
    let gone = path::workload_path(pid, remote());
    eprintln!("{gone:#?}");
    assert!(gone.workload_if.is_none() && gone.host_veth.is_none());
    assert_eq!(gone.egress.map(|e| e.dev_mtu), Some(1400));
    assert!(
        gone.notes.iter().any(|n| n.contains("exited")),
        "{:?}",
        gone.notes
    );
    assert!(matches!(
        path::nsid_of_pid(pid),
        Err(PathError::NoProcess { .. })
    ));

    // The namespace goes too: its nsid no longer answers.
    topology.remove();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match path::links_in(nsid) {
            Err(error) => {
                eprintln!("links_in({nsid}) after the namespace was deleted: {error}");
                assert!(matches!(error, PathError::NoNetns { .. }), "{error:?}");
                break;
            }
            // The kernel frees a namespace asynchronously.
            Ok(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(links) => panic!("nsid {nsid} still answers: {links:?}"),
        }
    }
}

#[test]
fn a_namespace_without_veth_is_given_an_nsid() {
    let Some(mut topology) = Topology::host() else {
        return;
    };
    let pid = topology.isolated();
    assert_eq!(path::nsid_of_pid(pid).expect("RTM_GETNSID"), None);

    let path = path::workload_path(pid, remote());
    eprintln!("{path:#?}");
    let inner = path.workload_if.as_ref().expect("workload interface");
    assert_eq!(
        (inner.name.clone(), inner.mtu, inner.kind.as_deref()),
        (topology.name("gmh-mtd"), 1450, Some("veth"))
    );
    assert!(path.host_veth.is_none() && path.bridge.is_none());
    assert_eq!(
        path.egress.as_ref().map(|e| (e.dev.clone(), e.mtu())),
        Some((topology.name("gmh-mtup"), 1400))
    );
    assert_eq!(path.mismatch(), Some((1450, 1400)));
    assert!(
        path.notes.iter().any(|n| n.contains("assigned")),
        "{:?}",
        path.notes
    );
    assert!(path::nsid_of_pid(pid).expect("RTM_GETNSID").is_some());
}
