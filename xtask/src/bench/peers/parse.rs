//! The tools' own formats: Prometheus text, bpftrace maps and lines, tcpdump's statistics,
//! tshark's fields.

use std::{
    collections::BTreeMap,
    fs::File,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use super::{Analysis, MSS, read, tail};
use crate::bench::measure;

/// One sample of a Prometheus text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub(super) fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of a Prometheus text (0.0.4) body; comments and lines it cannot read are
/// skipped.
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_sample)
        .collect()
}

pub(super) fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = &inner[end + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// What bpftrace printed for its maps at exit.
#[derive(Debug, Default, PartialEq)]
pub(super) struct BpftraceMaps {
    /// `@flows[netns, saddr, sport, daddr, dport]`, summed per namespace inode.
    pub(super) flows: BTreeMap<String, u64>,
    /// `@failed[netns]`.
    pub(super) failed: BTreeMap<String, u64>,
}

pub(super) fn parse_bpftrace_maps(text: &str) -> BpftraceMaps {
    let mut maps = BpftraceMaps::default();
    for line in text.lines() {
        let Some((key, count)) = line.split_once("]: ") else {
            continue;
        };
        let Ok(count) = count.trim().parse::<u64>() else {
            continue;
        };
        let (map, key) = if let Some(key) = key.strip_prefix("@flows[") {
            (&mut maps.flows, key)
        } else if let Some(key) = key.strip_prefix("@failed[") {
            (&mut maps.failed, key)
        } else {
            continue;
        };
        let netns = key.split(", ").next().unwrap_or(key).to_owned();
        *map.entry(netns).or_default() += count;
    }
    maps
}

/// Lines per source address and the events bpftrace reports lost.
#[derive(Debug, Default, PartialEq)]
pub(super) struct EventLines {
    pub(super) per_source: BTreeMap<String, u64>,
    pub(super) lost: u64,
}

/// Reads `NSECS PID SADDR:SPORT R> DADDR:DPORT STATE` lines and bpftrace's `Lost N events`.
pub(super) fn parse_event_lines(text: &str) -> EventLines {
    let mut lines = EventLines::default();
    for line in text.lines() {
        if let Some(n) = line
            .strip_prefix("Lost ")
            .and_then(|l| l.strip_suffix(" events"))
        {
            lines.lost += n.trim().parse::<u64>().unwrap_or(0);
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(local), Some("R>")) = (words.nth(2), words.next()) else {
            continue;
        };
        if let Some((source, _)) = local.rsplit_once(':') {
            *lines.per_source.entry(source.to_owned()).or_default() += 1;
        }
    }
    lines
}

/// tcpdump's `N packets dropped by kernel`.
pub(super) fn tcpdump_dropped(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.strip_suffix(" packets dropped by kernel"))?
        .trim()
        .parse()
        .ok()
}

/// Per source address: the frames tshark marks as retransmissions and the segments they hold,
/// and the segments of every frame marked as a retransmission or as out of order. On a path
/// with a round trip below tshark's 3 ms out-of-order threshold part of the retransmissions
/// come out as out of order; the storm's senders never reorder, so both are retransmissions.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Retransmissions {
    pub(super) frames: BTreeMap<String, u64>,
    pub(super) segments: BTreeMap<String, u64>,
    pub(super) any_segments: BTreeMap<String, u64>,
}

/// `tshark -Y tcp.analysis.retransmission` over the capture, timed, with its rusage.
pub(super) fn tshark(pcap: &Path, dir: &Path) -> anyhow::Result<(Retransmissions, Analysis)> {
    let out = dir.join("tshark.out");
    let err = dir.join("tshark.err");
    let started = Instant::now();
    let mut child = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(pcap)
        .args([
            "-Y",
            "tcp.analysis.retransmission || tcp.analysis.out_of_order",
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "tcp.len",
            "-e",
            "tcp.analysis.retransmission",
        ])
        .stdin(Stdio::null())
        .stdout(File::create(&out)?)
        .stderr(File::create(&err)?)
        .spawn()
        .context("starting tshark")?;
    let (status, usage) = measure::wait_rusage(&mut child)?;
    if !status.success() {
        bail!("tshark failed ({status}): {}", tail(&err));
    }
    Ok((
        parse_tshark_fields(&read(&out)),
        Analysis {
            seconds: started.elapsed().as_secs_f64(),
            usage,
        },
    ))
}

/// `ip.src<TAB>tcp.len<TAB>1 if a retransmission` lines.
pub(super) fn parse_tshark_fields(text: &str) -> Retransmissions {
    let mut found = Retransmissions::default();
    for line in text.lines() {
        let mut fields = line.split('\t');
        let (Some(source), Some(len), retransmission) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if source.is_empty() {
            continue;
        }
        let segments = len.trim().parse::<u64>().unwrap_or(0).div_ceil(MSS).max(1);
        *found.any_segments.entry(source.to_owned()).or_default() += segments;
        if retransmission.is_some_and(|r| r.trim() == "1") {
            *found.frames.entry(source.to_owned()).or_default() += 1;
            *found.segments.entry(source.to_owned()).or_default() += segments;
        }
    }
    found
}
