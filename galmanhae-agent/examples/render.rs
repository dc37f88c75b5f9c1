//! How long `/metrics` takes to render, and how large it is, at 1k, 10k and 50k series (a
//! benchmark, not a test): `cargo run --release -p galmanhae-agent --example render [N ...]`.
//!
//! The series are shaped like a busy host's: 20 remotes per workload, a few kinds each, plus
//! the workloads' segment counters. Prints one JSON object per size.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use galmanhae::metrics::{
    Families, Lifecycle as _, RetransmitLabels, WorkloadLabels, encode::render_families,
};

const KINDS: [&str; 3] = ["rto", "fast", "tlp"];

fn families(series: usize) -> Families {
    let mut families = Families::default();
    let now = Instant::now();
    let mut n = 0;
    let mut workload = 0;
    while n < series {
        let name = format!("app-{workload:05}");
        let labels = WorkloadLabels {
            workload: name.clone(),
            workload_kind: "container",
            container_id: format!("{workload:064x}"),
            runtime: "docker".to_owned(),
        };
        families.sent.add(labels.clone(), 1_000_000 + workload, now);
        families.retransmitted.add(labels, 1_000 + workload, now);
        n += 2;
        for remote in 0..20u64 {
            for kind in KINDS {
                if n >= series {
                    break;
                }
                let labels = RetransmitLabels {
                    workload: name.clone(),
                    remote: format!("198.18.{}.{}:5432", remote / 250, remote % 250 + 1),
                    kind,
                };
                families.retransmits.add(labels, 12_345 + remote, now);
                n += 1;
            }
        }
        workload += 1;
    }
    families.settle();
    families
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000, 50_000]
    } else {
        sizes
    };
    for size in sizes {
        let families = Arc::new(families(size));
        for openmetrics in [false, true] {
            let mut times: Vec<Duration> = Vec::new();
            let mut bytes = 0;
            for _ in 0..21 {
                let started = Instant::now();
                let body = match render_families(Arc::clone(&families), openmetrics) {
                    Ok(body) => body,
                    Err(e) => {
                        eprintln!("render failed: {e}");
                        std::process::exit(1);
                    }
                };
                times.push(started.elapsed());
                bytes = body.len();
            }
            times.sort_unstable();
            println!(
                "{{\"series\": {}, \"format\": \"{}\", \"median_ms\": {:.3}, \"max_ms\": {:.3}, \"bytes\": {bytes}}}",
                families.len(),
                if openmetrics {
                    "openmetrics"
                } else {
                    "prometheus"
                },
                times[times.len() / 2].as_secs_f64() * 1e3,
                times[times.len() - 1].as_secs_f64() * 1e3,
            );
        }
    }
}
