//! Faults injected on the path to the db: random loss with iptables' statistic match
//! (`sch_netem` is not built into these kernels).
//!
//! Container loss is dropped in the host's FORWARD path (DOCKER-USER, before MASQUERADE, so
//! the container's own address still matches); host and all-traffic loss in the db namespace.

use anyhow::bail;

use crate::{DB_NETNS, DB_V4, DB_V6, docker, run};

/// The lab's own chain, in the host's filter table and in the db namespace's.
pub const CHAIN: &str = "GALMANHAE-LAB";

/// What loses packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Everything that reaches the db.
    All,
    /// One container's segments to the db.
    Container(String),
    /// Segments to one db port (the lab's host clients use `DB_HOST_PORT`).
    Port(u16),
}

/// Drops `percent` % of the target's segments on the way to the db.
pub fn loss(percent: f64, target: &Target) -> anyhow::Result<()> {
    if !(percent > 0.0 && percent < 100.0) {
        bail!("--percent must be between 0 and 100 (exclusive), got {percent}");
    }
    let probability = format!("{:.4}", percent / 100.0);
    let random = [
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        probability.as_str(),
        "-j",
        "DROP",
    ];
    match target {
        Target::Container(name) => {
            ensure_host_chains()?;
            let v4 = docker::ip(name)?;
            let mut rule = vec!["-A", CHAIN, "-s", v4.as_str(), "-d", DB_V4, "-p", "tcp"];
            rule.extend_from_slice(&random);
            run("iptables", &rule)?;
            if let Ok(v6) = docker::ipv6(name) {
                let mut rule = vec!["-A", CHAIN, "-s", v6.as_str(), "-d", DB_V6, "-p", "tcp"];
                rule.extend_from_slice(&random);
                run("ip6tables", &rule)?;
            }
        }
        Target::Port(port) => {
            let port = port.to_string();
            for tool in ["iptables", "ip6tables"] {
                ensure_db_chain(tool)?;
                let mut rule = vec!["-A", CHAIN, "-p", "tcp", "--dport", port.as_str()];
                rule.extend_from_slice(&random);
                in_db(tool, &rule)?;
            }
        }
        Target::All => {
            for tool in ["iptables", "ip6tables"] {
                ensure_db_chain(tool)?;
                let mut rule = vec!["-A", CHAIN, "-p", "tcp"];
                rule.extend_from_slice(&random);
                in_db(tool, &rule)?;
            }
        }
    }
    Ok(())
}

/// Removes every fault. With `remove`, also the chains and the jumps to them.
pub fn clear_all(remove: bool) -> anyhow::Result<()> {
    for tool in ["iptables", "ip6tables"] {
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
