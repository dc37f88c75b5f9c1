//! Root test: the table, statistics and NAT audit read here against `conntrack` and procfs,
//! in a network namespace of the test's own (`gmh-ct-test-<pid>`, `198.18.250.0/24` and
//! `2001:2::/64` on its `lo`): TCP over IPv4 and IPv6, through DNAT and SNAT, and a UDP flow in
//! zone 7 whose ICMP error conntrack cannot match (it counts in `error`).
//!
//! Without root it skips, except with `CI=true`, where it fails.

use std::{
    collections::BTreeSet,
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use caps::{CapSet, Capability};

use super::*;

const A1: &str = "198.18.250.1";
const A2: &str = "198.18.250.2";
/// Reached only through DNAT.
const VIRTUAL: &str = "198.18.250.100";
const V6: &str = "2001:2::1";
/// UDP flows on top of the TCP ones: a table too large for one netlink datagram (~32 KiB).
const UDP_FLOWS: u64 = 400;
/// 3 plain TCP, 1 through DNAT, 1 through SNAT, 2 over IPv6, 1 UDP in zone 7, the UDP flows.
const ENTRIES: u64 = 8 + UDP_FLOWS;

/// `true` if the test can run; panics under CI when it cannot.
fn privileged() -> bool {
    galmanhae_lab::root_or_skip("netns, iptables, CAP_NET_ADMIN")
}

/// The test's namespace, deleted on drop, also when the test panics.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Self {
        let name = format!("gmh-ct-test-{}", std::process::id());
        galmanhae_lab::run("ip", &["netns", "add", &name]).unwrap();
        Self { name }
    }

    /// Runs a command in the namespace.
    fn exec(&self, command: &str) -> String {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend(command.split_whitespace());
        galmanhae_lab::run("ip", &args).unwrap()
    }

    /// Moves the calling thread (only it) into the namespace.
    fn enter(&self) {
        galmanhae_lab::traffic::enter_netns(format!("/run/netns/{}", self.name)).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = galmanhae_lab::run("ip", &["netns", "delete", &self.name]);
    }
}

/// What `conntrack -L` shows of an entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Shown {
    protocol: u8,
    orig: Tuple,
    reply: Tuple,
    state: Option<String>,
    unreplied: bool,
    assured: bool,
    mark: u32,
    zone: u16,
}

impl From<&Entry> for Shown {
    fn from(e: &Entry) -> Self {
        Self {
            protocol: e.protocol,
            orig: e.orig,
            reply: e.reply,
            state: e.tcp_state_name().map(str::to_owned),
            unreplied: e.status & IPS_SEEN_REPLY == 0,
            assured: e.status & IPS_ASSURED != 0,
            mark: e.mark,
            zone: e.zone,
        }
    }
}

/// Parses `conntrack -L` lines, with or without `-o extended`'s leading `ipv4 2`:
/// `tcp 6 431999 ESTABLISHED src=.. dst=.. sport=.. dport=.. src=.. ... [ASSURED] mark=0 use=1`.
fn parse_conntrack(output: &str) -> BTreeSet<Shown> {
    output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut words: Vec<&str> = line.split_whitespace().collect();
            if words[0].starts_with("ipv") {
                words.drain(..2);
            }
            let protocol = words[1].parse().unwrap();
            let state = (!words[3].contains('=') && !words[3].starts_with('['))
                .then(|| words[3].to_owned());
            let mut tuples: Vec<[Option<&str>; 4]> = Vec::new();
            let (mut mark, mut zone) = (0, 0);
            for (key, value) in words.iter().filter_map(|w| w.split_once('=')) {
                if key == "src" {
                    tuples.push([None; 4]);
                }
                let slot = ["src", "dst", "sport", "dport"]
                    .iter()
                    .position(|k| *k == key);
                match (slot, tuples.last_mut()) {
                    (Some(i), Some(t)) => t[i] = Some(value),
                    _ if key == "mark" => mark = value.parse().unwrap(),
                    _ if key == "zone" => zone = value.parse().unwrap(),
                    _ => {}
                }
            }
            let tuple = |t: &[Option<&str>; 4]| Tuple {
                src: t[0].unwrap().parse().unwrap(),
                dst: t[1].unwrap().parse().unwrap(),
                sport: t[2].map_or(0, |p| p.parse().unwrap()),
                dport: t[3].map_or(0, |p| p.parse().unwrap()),
            };
            assert_eq!(tuples.len(), 2, "{line}");
            Shown {
                protocol,
                orig: tuple(&tuples[0]),
                reply: tuple(&tuples[1]),
                state,
                unreplied: words.contains(&"[UNREPLIED]"),
                assured: words.contains(&"[ASSURED]"),
                mark,
                zone,
            }
        })
        .collect()
}

fn counters(s: &Stats) -> [u64; 10] {
    [
        s.found,
        s.invalid,
        s.insert,
        s.insert_failed,
        s.drop,
        s.early_drop,
        s.error,
        s.search_restart,
        s.clash_resolve,
        s.chaintoolong,
    ]
}

#[test]
fn matches_conntrack_tool_and_procfs_in_own_namespace() {
    if !privileged() {
        return;
    }
    let netns = Netns::create();
    for setup in [
        "ip link set lo up",
        "ip addr add 198.18.250.1/24 dev lo",
        "ip addr add 198.18.250.2/24 dev lo",
        "ip -6 addr add 2001:2::1/64 dev lo nodad",
        // Any rule using conntrack turns tracking on in the namespace.
        "iptables -A OUTPUT -m conntrack --ctstate NEW -j ACCEPT",
        "ip6tables -A OUTPUT -m conntrack --ctstate NEW -j ACCEPT",
        // UDP to 9999 is tracked in zone 7 with mark 42; the port-unreachable that answers it
        // is in zone 0, where conntrack finds no flow for it.
        "iptables -t raw -A OUTPUT -p udp --dport 9999 -j CT --zone 7",
        "iptables -t mangle -A OUTPUT -p udp --dport 9999 -j CONNMARK --set-mark 42",
        // For the audit only: no traffic comes from these sources.
        "iptables -t nat -A POSTROUTING -s 198.18.251.0/24 ! -o lo -j MASQUERADE --random-fully",
        "ip6tables -t nat -A POSTROUTING -s 2001:2:0:1::/64 -o lo -j MASQUERADE",
    ] {
        netns.exec(setup);
    }
    // The rest runs on a thread inside the namespace; `netns` outlives it and cleans up.
    thread::scope(|s| {
        s.spawn(|| in_namespace(&netns));
    });
}

#[expect(clippy::too_many_lines, reason = "one scenario, checked step by step")]
fn in_namespace(netns: &Netns) {
    netns.enter();
    let plain = TcpListener::bind((A1, 0)).unwrap();
    let snat = TcpListener::bind((A1, 0)).unwrap();
    let v6 = TcpListener::bind((V6, 0)).unwrap();
    let (plain_port, snat_port) = (
        plain.local_addr().unwrap().port(),
        snat.local_addr().unwrap().port(),
    );
    netns.exec(&format!(
        "iptables -t nat -A OUTPUT -d {VIRTUAL} -p tcp --dport 80 -j DNAT --to-destination \
         {A1}:{plain_port}"
    ));
    netns.exec(&format!(
        "iptables -t nat -A POSTROUTING -d {A1} -p tcp --dport {snat_port} -j SNAT --to-source {A2}"
    ));

    // 3 plain, 1 DNAT, 1 SNAT, 2 IPv6: each accepted, so the handshake is through.
    let mut streams = Vec::new();
    let mut connect = |to: SocketAddr, listener: &TcpListener| {
        let client = TcpStream::connect(to).unwrap();
        let (server, peer) = listener.accept().unwrap();
        streams.push((client, server, peer));
    };
    for _ in 0..3 {
        connect(plain.local_addr().unwrap(), &plain);
    }
    connect(format!("{VIRTUAL}:80").parse().unwrap(), &plain);
    connect(snat.local_addr().unwrap(), &snat);
    for _ in 0..2 {
        connect(v6.local_addr().unwrap(), &v6);
    }
    let udp = UdpSocket::bind((A1, 0)).unwrap();
    udp.send_to(b"x", (A2, 9999)).unwrap();
    let sink = UdpSocket::bind((A1, 0)).unwrap();
    // Kept open: a closed socket's port may come back, and with it the same flow.
    let clients: Vec<UdpSocket> = (0..UDP_FLOWS)
        .map(|_| {
            let client = UdpSocket::bind((A1, 0)).unwrap();
            client.send_to(b"x", sink.local_addr().unwrap()).unwrap();
            client
        })
        .collect();
    // The port-unreachable goes through lo's backlog.
    thread::sleep(Duration::from_millis(200));

    // The table: the same entries as conntrack's own tool, NAT flags included.
    let table = dump_table().unwrap();
    assert_eq!(table.skipped, 0);
    let ours: BTreeSet<Shown> = table.entries.iter().map(Shown::from).collect();
    let tool = parse_conntrack(&netns.exec("conntrack -L -o extended"));
    assert_eq!(ours, tool);
    assert_eq!(u64::try_from(table.entries.len()).unwrap(), ENTRIES);
    for (flag, nat) in [
        ("--src-nat", Entry::is_src_nat as fn(&Entry) -> bool),
        ("--dst-nat", Entry::is_dst_nat),
    ] {
        let ours: BTreeSet<Shown> = table
            .entries
            .iter()
            .filter(|e| nat(e))
            .map(Shown::from)
            .collect();
        assert_eq!(
            ours,
            parse_conntrack(&netns.exec(&format!("conntrack -L {flag}")))
        );
        assert_eq!(ours.len(), 1, "{flag}");
    }
    let v6_entries = table
        .entries
        .iter()
        .filter(|e| e.orig.src.is_ipv6())
        .count();
    assert_eq!(v6_entries, 2);

    // translated(): what the server's socket sees.
    let by_client = |client: &TcpStream| {
        let local = client.local_addr().unwrap();
        table
            .entries
            .iter()
            .find(|e| e.protocol == 6 && e.orig.source() == local)
            .unwrap()
    };
    let (dnat_client, dnat_server, _) = &streams[3];
    let dnat = by_client(dnat_client);
    assert!(dnat.is_dst_nat() && !dnat.is_src_nat());
    assert_eq!(
        dnat.orig.destination(),
        format!("{VIRTUAL}:80").parse().unwrap()
    );
    assert_eq!(dnat.translated().1, dnat_server.local_addr().unwrap());
    let (snat_client, _, snat_peer) = &streams[4];
    let snat_entry = by_client(snat_client);
    assert!(snat_entry.is_src_nat() && !snat_entry.is_dst_nat());
    assert_eq!(snat_entry.translated().0, *snat_peer);
    assert_eq!(snat_peer.ip().to_string(), A2);
    let zoned = table.entries.iter().find(|e| e.zone != 0).unwrap();
    assert_eq!((zoned.zone, zoned.mark, zoned.orig.dport), (7, 42, 9999));

    // Lookups by tuple, what the agent does per flow instead of a dump: every entry of the
    // default zone, by either of its tuples, is the one `conntrack -L` shows; a tuple no
    // connection has is none.
    let mut lookups = Lookups::open().unwrap();
    for e in table.entries.iter().filter(|e| e.zone == 0) {
        let shown = Shown::from(e);
        for tuple in [e.orig, e.reply] {
            let found = lookups
                .get(e.protocol, tuple.source(), tuple.destination())
                .unwrap()
                .unwrap_or_else(|| panic!("{tuple} not found"));
            assert_eq!(Shown::from(&found), shown, "{tuple}");
        }
    }
    let (snat_orig, snat_reply) = (snat_entry.orig, snat_entry.reply);
    assert_eq!(
        lookups
            .get(6, snat_reply.source(), snat_reply.destination())
            .unwrap()
            .map(|e| e.translated().0),
        Some(*snat_peer)
    );
    let unknown = lookups
        .get(6, snat_orig.destination(), snat_orig.source())
        .unwrap();
    assert_eq!(unknown, None, "the reverse of a tuple names no entry");
    // ICMP and unknown protocols have no ports: such a tuple names nothing (the kernel refuses
    // it with EINVAL), and the lookups go on.
    for protocol in [1, 0] {
        let none = lookups.get(protocol, snat_orig.source(), snat_orig.destination());
        assert!(matches!(none, Ok(None)), "protocol {protocol}: {none:?}");
    }
    assert!(
        lookups
            .get(6, snat_reply.source(), snat_reply.destination())
            .unwrap()
            .is_some()
    );

    // Statistics: ctnetlink, this thread's procfs and a process's procfs agree.
    let mut sleeper = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let netlink = stats_netlink().unwrap();
    let procfs = stats_procfs(None).unwrap();
    let by_pid = stats_procfs(Some(sleeper.id()));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let by_pid = by_pid.unwrap();
    eprintln!("ctnetlink: {netlink:?}\nprocfs: {procfs:?}");
    assert_eq!(netlink.entries, Some(ENTRIES));
    assert_eq!(
        (procfs.entries, by_pid.entries),
        (Some(ENTRIES), Some(ENTRIES))
    );
    assert_eq!(counters(&netlink), counters(&procfs));
    assert_eq!(counters(&netlink), counters(&by_pid));
    assert!(netlink.error > 0, "the unmatched ICMP error is counted");
    let tool_errors: u64 = netns
        .exec("conntrack -S")
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("error="))
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert_eq!(netlink.error, tool_errors);
    assert_eq!(netlink.max, procfs.max);

    let sysctls = sysctls();
    assert_eq!(sysctls.count, Some(ENTRIES));
    assert_eq!(sysctls.max, netlink.max);
    assert!(sysctls.buckets.is_some() && sysctls.tcp_loose.is_some());

    // The audit sees this namespace's rules (iptables-save inherits the thread's namespace).
    let rules = masquerade_rules().unwrap();
    let summary: Vec<_> = rules
        .iter()
        .map(|r| {
            (
                r.family,
                r.source.as_deref(),
                r.out_iface.as_deref(),
                r.random_fully,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Family::V4, Some("198.18.251.0/24"), Some("!lo"), true),
            (Family::V6, Some("2001:2:0:1::/64"), Some("lo"), false),
        ]
    );

    // Without CAP_NET_ADMIN: ctnetlink says so, procfs still answers.
    thread::scope(|s| {
        s.spawn(|| {
            caps::drop(None, CapSet::Effective, Capability::CAP_NET_ADMIN).unwrap();
            let err = dump().unwrap_err();
            assert!(matches!(err, ConntrackError::NotPermitted { .. }), "{err}");
            assert!(matches!(
                stats_netlink().unwrap_err(),
                ConntrackError::NotPermitted { .. }
            ));
            assert_eq!(stats_procfs(None).unwrap().entries, Some(ENTRIES));
        });
    });
    drop((streams, clients));
}
