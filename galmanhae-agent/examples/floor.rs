//! The floor under every per-run figure of the bench (a benchmark tool, not a test): empty
//! programs on the hooks galmanhae uses, so that `kernel.bpf_stats_enabled` shows what a
//! program there costs before it does anything (the dispatch, the statistics' own two clock
//! reads). `cargo run --release -p galmanhae-agent --example floor`; prints `ready` once
//! attached and runs until killed.
//!
//! The BTF tracepoints are galmanhae's; the tc one goes on the egress of the interfaces that
//! galmanhae would call uplinks (up, not loopback, not a bridge or a bridge's port).

use std::{fs, path::Path, time::Duration};

use anyhow::Context as _;
use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{BtfTracePoint, SchedClassifier, TcAttachType},
};

static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/galmanhae"));

/// The BTF tracepoints galmanhae attaches to, with the empty program for each.
const TRACEPOINTS: [(&str, &str); 4] = [
    ("floor_rtx", "tcp_retransmit_skb"),
    ("floor_drop", "kfree_skb"),
    ("floor_cong", "tcp_cong_state_set"),
    ("floor_state", "inet_sock_set_state"),
];

fn main() -> anyhow::Result<()> {
    let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
    let mut ebpf = object()?;
    for (name, tracepoint) in TRACEPOINTS {
        let program: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} is missing from the object"))?
            .try_into()?;
        program.load(tracepoint, &btf)?;
        program
            .attach()
            .with_context(|| format!("attaching to {tracepoint}"))?;
    }
    let classifier: &mut SchedClassifier = ebpf
        .program_mut("floor_tc")
        .context("floor_tc is missing from the object")?
        .try_into()?;
    classifier.load()?;
    let uplinks = uplinks()?;
    for name in &uplinks {
        classifier
            .attach(name, TcAttachType::Egress)
            .with_context(|| format!("attaching to {name} egress (TCX, Linux 6.6+)"))?;
    }
    println!(
        "ready: {} tracepoints, tc egress on {}",
        TRACEPOINTS.len(),
        uplinks.join(", ")
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn object() -> anyhow::Result<Ebpf> {
    // Maps at their smallest: nothing is counted.
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    for map in [
        "RETRANSMIT_SOCKETS",
        "RETRANSMIT_FLOWS",
        "DROPS",
        "TIME_LOST",
        "LEAKS",
    ] {
        loader.map_max_entries(map, 1);
    }
    loader.load(PROGRAMS).context("loading the eBPF object")
}

/// Interfaces that are up, not loopback, not a bridge, not enslaved to one.
fn uplinks() -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir("/sys/class/net").context("listing /sys/class/net")? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let flags = fs::read_to_string(path.join("flags")).unwrap_or_default();
        let up = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0) & 1;
        let bridge_or_port =
            Path::new(&path.join("bridge")).exists() || Path::new(&path.join("master")).exists();
        if up == 1 && name != "lo" && !bridge_or_port {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}
