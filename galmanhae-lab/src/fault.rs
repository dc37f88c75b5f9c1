//! Faults injected on the path to the db, one per cause galmanhae diagnoses: random loss with
//! iptables' statistic match (`sch_netem` is not built into these kernels), SYN black holes,
//! a smaller MTU on the host's egress with ICMP filtered, a tiny conntrack table, a huge one
//! ([`crate::conntrack_fill`]).
//!
//! Container faults act in the host's FORWARD path (DOCKER-USER, before MASQUERADE, so the
//! container's own address still matches): drops on this host. Port and all-traffic faults act
//! in the db namespace: the far end, standing for the network beyond the host.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::{DB_NETNS, DB_V4, DB_V6, HOST_VETH, STATE_DIR, docker, run};

/// The lab's own chain, in the host's filter table and in the db namespace's.
pub const CHAIN: &str = "GALMANHAE-LAB";
/// The lab's chain on the host's OUTPUT path (ICMP the host itself sends).
pub const OUTPUT_CHAIN: &str = "GALMANHAE-LAB-OUT";
/// The host egress MTU when no MTU fault is set.
const NORMAL_MTU: &str = "1500";
const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

/// Packet counter of the lab chain's rules (host side), for checking counts against.
pub fn dropped_packets(tool: &str) -> anyhow::Result<u64> {
    chain_drops(tool, CHAIN)
}

/// Packet counter of the DROP rules of the lab's chain in the host's OUTPUT.
pub fn output_dropped_packets(tool: &str) -> anyhow::Result<u64> {
    chain_drops(tool, OUTPUT_CHAIN)
}

fn chain_drops(tool: &str, chain: &str) -> anyhow::Result<u64> {
    let out = run(tool, &["-L", chain, "-v", "-n", "-x"])?;
    Ok(out
        .lines()
        .skip(2)
        .filter(|l| l.contains("DROP"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum())
}

/// Drops every SYN of the target: a container's in the host (a local drop), a port's or all
/// in the db namespace (the remote end).
pub fn syn_blackhole(target: &Target) -> anyhow::Result<()> {
    drop_tcp(target, &["--syn"])
}

/// Drops every TCP segment of the target to the db: a black hole (cleared by `clear_all`).
pub fn blackhole(target: &Target) -> anyhow::Result<()> {
    drop_tcp(target, &[])
}

/// Lowers the host's egress MTU towards the db (containers keep 1500) and, with
/// `block_icmp`, drops the "fragmentation needed" messages the host sends back: a path MTU
/// black hole.
pub fn mtu(mtu: u32, block_icmp: bool) -> anyhow::Result<()> {
    if !(576..=9000).contains(&mtu) {
        bail!("--mtu must be between 576 and 9000, got {mtu}");
    }
    let mtu = mtu.to_string();
    run("ip", &["link", "set", HOST_VETH, "mtu", mtu.as_str()])?;
    if block_icmp {
        for (tool, icmp) in [
            (
                "iptables",
                ["-p", "icmp", "--icmp-type", "fragmentation-needed"],
            ),
            (
                "ip6tables",
                ["-p", "icmpv6", "--icmpv6-type", "packet-too-big"],
            ),
        ] {
            ensure_output_chain(tool)?;
            let mut rule = vec!["-A", OUTPUT_CHAIN];
            rule.extend_from_slice(&icmp);
            rule.extend_from_slice(&["-j", "DROP"]);
            run(tool, &rule)?;
        }
    }
    Ok(())
}

/// Shrinks the conntrack table to `entries` (the original size is restored by `clear_all`).
pub fn conntrack_max(entries: u64) -> anyhow::Result<()> {
    if entries == 0 {
        bail!("--entries must be at least 1: the kernel reads nf_conntrack_max=0 as no limit");
    }
    let saved = Path::new(STATE_DIR).join("nf_conntrack_max.orig");
    if !saved.exists() {
        std::fs::create_dir_all(STATE_DIR).with_context(|| format!("creating {STATE_DIR}"))?;
        let original = std::fs::read_to_string(CONNTRACK_MAX)
            .with_context(|| format!("reading {CONNTRACK_MAX}"))?;
        std::fs::write(&saved, original.trim()).context("saving nf_conntrack_max")?;
    }
    std::fs::write(CONNTRACK_MAX, entries.to_string())
        .with_context(|| format!("writing {CONNTRACK_MAX}"))
}

/// Raises the conntrack table to at least `entries` (restored by `clear_all`).
pub fn raise_conntrack_max(entries: u64) -> anyhow::Result<()> {
    let current: u64 = std::fs::read_to_string(CONNTRACK_MAX)
        .with_context(|| format!("reading {CONNTRACK_MAX}"))?
        .trim()
        .parse()
        .with_context(|| format!("parsing {CONNTRACK_MAX}"))?;
    if current >= entries {
        return Ok(());
    }
    conntrack_max(entries)
}

fn restore_conntrack_max() -> anyhow::Result<()> {
    let saved = Path::new(STATE_DIR).join("nf_conntrack_max.orig");
    if let Ok(original) = std::fs::read_to_string(&saved) {
        std::fs::write(CONNTRACK_MAX, original.trim())
            .with_context(|| format!("restoring {CONNTRACK_MAX}"))?;
        std::fs::remove_file(&saved).context("removing the saved nf_conntrack_max")?;
    }
    Ok(())
}

/// What loses packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Everything that reaches the db.
    All,
    /// One container's segments to the db.
    Container(String),
    /// Segments to one db port (the lab's host clients use `DB_HOST_PORT`).
    Port(u16),
    /// What the host namespace's own sockets send to the db, on the host's OUTPUT path
    /// (host processes, `--network host` containers).
    HostOutput,
}

/// Drops `percent` % of the target's segments on the way to the db.
pub fn loss(percent: f64, target: &Target) -> anyhow::Result<()> {
    if !(percent > 0.0 && percent < 100.0) {
        bail!("--percent must be between 0 and 100 (exclusive), got {percent}");
    }
    let probability = format!("{:.4}", percent / 100.0);
    drop_tcp(
        target,
        &[
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            probability.as_str(),
        ],
    )
}

/// Drops the target's TCP segments to the db that also match `matcher`.
fn drop_tcp(target: &Target, matcher: &[&str]) -> anyhow::Result<()> {
    match target {
        Target::Container(name) => {
            ensure_host_chains()?;
            let v4 = docker::ip(name)?;
            run(
                "iptables",
                &drop_rule(&["-s", &v4, "-d", DB_V4], None, matcher),
            )?;
            if let Ok(v6) = docker::ipv6(name) {
                run(
                    "ip6tables",
                    &drop_rule(&["-s", &v6, "-d", DB_V6], None, matcher),
                )?;
            }
        }
        Target::Port(port) => at_db(Some(&port.to_string()), matcher)?,
        Target::HostOutput => {
            for (tool, db) in [("iptables", DB_V4), ("ip6tables", DB_V6)] {
                ensure_output_chain(tool)?;
                let mut rule = drop_rule(&["-d", db], None, matcher);
                rule[1] = OUTPUT_CHAIN;
                run(tool, &rule)?;
            }
        }
        Target::All => at_db(None, matcher)?,
    }
    Ok(())
}

/// The same rule for IPv4 and IPv6, in the db namespace (the far end).
fn at_db(port: Option<&str>, matcher: &[&str]) -> anyhow::Result<()> {
    for tool in ["iptables", "ip6tables"] {
        ensure_db_chain(tool)?;
        in_db(tool, &drop_rule(&[], port, matcher))?;
    }
    Ok(())
}

/// `-A GALMANHAE-LAB [addresses] -p tcp [--dport port] [matcher] -j DROP`
fn drop_rule<'a>(
    addresses: &[&'a str],
    port: Option<&'a str>,
    matcher: &[&'a str],
) -> Vec<&'a str> {
    let mut rule = vec!["-A", CHAIN];
    rule.extend_from_slice(addresses);
    rule.extend_from_slice(&["-p", "tcp"]);
    if let Some(port) = port {
        rule.extend_from_slice(&["--dport", port]);
    }
    rule.extend_from_slice(matcher);
    rule.extend_from_slice(&["-j", "DROP"]);
    rule
}

/// Removes every fault. With `remove`, also the chains and the jumps to them.
pub fn clear_all(remove: bool) -> anyhow::Result<()> {
    crate::conntrack_fill::clear()?;
    restore_conntrack_max()?;
    if run("ip", &["link", "show", HOST_VETH]).is_ok() {
        run("ip", &["link", "set", HOST_VETH, "mtu", NORMAL_MTU])?;
    }
    for tool in ["iptables", "ip6tables"] {
        if run(tool, &["-S", OUTPUT_CHAIN]).is_ok() {
            run(tool, &["-F", OUTPUT_CHAIN])?;
            while run(tool, &["-D", "OUTPUT", "-j", OUTPUT_CHAIN]).is_ok() {}
            run(tool, &["-X", OUTPUT_CHAIN])?;
        }
        let parent = if tool == "iptables" {
            "DOCKER-USER"
        } else {
            "FORWARD"
        };
        if run(tool, &["-S", CHAIN]).is_ok() {
            run(tool, &["-F", CHAIN])?;
            if remove {
                while run(tool, &["-D", parent, "-j", CHAIN]).is_ok() {}
                run(tool, &["-X", CHAIN])?;
            }
        }
        if in_db(tool, &["-S", CHAIN]).is_ok() {
            in_db(tool, &["-F", CHAIN])?;
            if remove {
                while in_db(tool, &["-D", "INPUT", "-j", CHAIN]).is_ok() {}
                in_db(tool, &["-X", CHAIN])?;
            }
        }
    }
    Ok(())
}

fn ensure_host_chains() -> anyhow::Result<()> {
    // Docker creates DOCKER-USER for IPv4 and jumps to it first from FORWARD; for IPv6
    // (without --ip6tables) the lab hooks FORWARD itself.
    for (tool, parent) in [("iptables", "DOCKER-USER"), ("ip6tables", "FORWARD")] {
        if run(tool, &["-S", CHAIN]).is_err() {
            run(tool, &["-N", CHAIN])?;
        }
        if run(tool, &["-C", parent, "-j", CHAIN]).is_err() {
            run(tool, &["-I", parent, "1", "-j", CHAIN])?;
        }
    }
    Ok(())
}

/// The lab's chain at the top of the host's OUTPUT.
fn ensure_output_chain(tool: &str) -> anyhow::Result<()> {
    if run(tool, &["-S", OUTPUT_CHAIN]).is_err() {
        run(tool, &["-N", OUTPUT_CHAIN])?;
    }
    if run(tool, &["-C", "OUTPUT", "-j", OUTPUT_CHAIN]).is_err() {
        run(tool, &["-I", "OUTPUT", "1", "-j", OUTPUT_CHAIN])?;
    }
    Ok(())
}

fn ensure_db_chain(tool: &str) -> anyhow::Result<()> {
    if in_db(tool, &["-S", CHAIN]).is_err() {
        in_db(tool, &["-N", CHAIN])?;
    }
    if in_db(tool, &["-C", "INPUT", "-j", CHAIN]).is_err() {
        in_db(tool, &["-I", "INPUT", "1", "-j", CHAIN])?;
    }
    Ok(())
}

fn in_db(tool: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["netns", "exec", DB_NETNS, tool];
    full.extend_from_slice(args);
    run("ip", &full)
}
