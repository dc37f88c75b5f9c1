use super::{goals::time_lost_share, *};

fn run(peer: Peer, goodput: f64, counted: Option<u64>, truth: u64) -> Run {
    let mut run = Run::new(peer);
    run.storm = Some(StormResult {
        window_s: 10.0,
        retransmits_per_s: 10_000.0,
        segments_per_s: 50_000.0,
        goodput_mb_s: goodput,
        reset_flows: 0,
    });
    if !peer.is_baseline() {
        run.cpu = Some(Cpu {
            window_s: 0.05,
            proc_stat_window_s: 0.05,
            percent_of_core: 0.5,
            startup_s: 0.1,
            total: None,
            analysis: None,
        });
        run.accuracy = Some(Accuracy {
            unit: "segments",
            containers: vec![ContainerCount::new("storm-1".to_owned(), counted, truth)],
            lost: Some(0),
            host: None,
            alternative: None,
        });
    }
    run
}

fn report(runs: Vec<Run>) -> Report {
    Report {
        schema: "galmanhae.bench/v1",
        mode: "quick",
        date: "today".to_owned(),
        machine: Machine {
            cpu: "x".to_owned(),
            cores: 2,
            ram_gib: 24.0,
            kernel: "6.18".to_owned(),
        },
        tools: Vec::new(),
        storm: StormSettings {
            containers: vec!["storm-1".to_owned()],
            flows_per_container: 1,
            loss_percent: 20.0,
            window_s: 10.0,
            remote: "198.19.0.2:5432".to_owned(),
            paced_write: "one MSS",
            unpaced_write_bytes: 65_536,
        },
        conntrack: None,
        levels: vec![Level {
            name: "10k/s".to_owned(),
            target_retransmits_per_s: Some(10_000.0),
            segments_per_s: Some(50_000.0),
            calibration: Vec::new(),
            runs,
        }],
        render: vec![Render {
            series: 10_000,
            format: "prometheus".to_owned(),
            median_ms: 1.2,
            max_ms: 1.8,
            bytes: 1_000_000,
        }],
        goals: Vec::new(),
        notes: Vec::new(),
    }
}

fn status<'a>(report: &'a Report, name: &str) -> &'a str {
    report
        .goals
        .iter()
        .find(|g| g.name.starts_with(name))
        .unwrap()
        .status
}

#[test]
fn goals_from_one_run() {
    let mut report = report(vec![
        run(Peer::Baseline, 100.0, None, 0),
        run(Peer::Daemon, 98.5, Some(1000), 1000),
        run(Peer::Diagnose, 100.0, Some(999), 1000),
        run(Peer::BaselineAgain, 96.0, None, 0),
    ]);
    report.evaluate_goals();
    // 98.5 against the mean of 100 and 96: +0.51 %.
    assert_eq!(
        status(&report, "Storm throughput with the daemon running (10k/s)"),
        "met"
    );
    assert_eq!(
        status(&report, "Storm throughput with the daemon running (max)"),
        "n/a"
    );
    // diagnose missed one segment.
    assert_eq!(status(&report, "Exact counts"), "missed");
    assert_eq!(status(&report, "Daemon CPU"), "met");
    assert_eq!(status(&report, "/metrics render"), "met");
    let markdown = report.markdown();
    assert!(markdown.contains("| galmanhae run | 98.5 MB/s (+0.51 %), 50000 segments/s |"));
    assert!(
        markdown.contains("| galmanhae diagnose | 999 / 1000 segments (-1; worst -1), lost 0 |")
    );
}

#[test]
fn the_time_lost_hooks_are_weighed_against_the_other_programs() {
    let program = |name: &str, percent_of_core: f64| ProgramRun {
        id: 1,
        name: name.to_owned(),
        kind: "tracing".to_owned(),
        runs: 1,
        run_time_ns: 1,
        ns_per_run: Some(1.0),
        percent_of_core,
    };
    let mut daemon = run(Peer::Daemon, 100.0, Some(1000), 1000);
    daemon.programs = vec![
        program("tcp_rtx_skb_btf", 1.0),
        program("kfree_skb_btf", 1.0),
        program("tcp_cong_state_set", 0.15),
        program("inet_sock_set_state", 0.05),
    ];
    let (added, rest) = time_lost_share(&daemon).unwrap();
    assert!((added - 0.2).abs() < 1e-9 && (rest - 2.0).abs() < 1e-9);
    let mut report = report(vec![run(Peer::Baseline, 100.0, None, 0), daemon]);
    report.evaluate_goals();
    assert_eq!(status(&report, "Kernel time of the time-lost hooks"), "met");
    report.levels[0].runs[1].programs[2].percent_of_core = 0.2;
    report.evaluate_goals();
    assert_eq!(
        status(&report, "Kernel time of the time-lost hooks"),
        "missed"
    );
}

#[test]
fn a_slower_storm_misses_the_throughput_goal() {
    let mut report = report(vec![
        run(Peer::Baseline, 100.0, None, 0),
        run(Peer::Daemon, 97.0, Some(10), 10),
        run(Peer::Diagnose, 100.0, Some(10), 10),
    ]);
    report.evaluate_goals();
    assert_eq!(
        status(&report, "Storm throughput with the daemon running (10k/s)"),
        "missed"
    );
    assert_eq!(status(&report, "Exact counts"), "met");
}

fn program(name: &str, ns_per_run: f64, percent_of_core: f64) -> ProgramRun {
    ProgramRun {
        id: 1,
        name: name.to_owned(),
        kind: "tracing".to_owned(),
        runs: 1000,
        run_time_ns: 1,
        ns_per_run: Some(ns_per_run),
        percent_of_core,
    }
}

#[test]
fn cost_goals_read_programs_against_the_floor_and_the_one_liner() {
    let mut daemon = run(Peer::Daemon, 60.0, Some(10), 10);
    daemon.programs = vec![
        program("tcp_rtx_skb_btf", 140.0, 0.2),
        program("kfree_skb_btf", 300.0, 0.3),
        program("nat_leak_egress", 95.0, 0.3),
    ];
    let mut floor = run(Peer::Floor, 60.0, None, 0);
    floor.programs = vec![program("floor_tc", 60.0, 0.1)];
    let mut one_liner = run(Peer::BpftraceCounts, 60.0, Some(10), 10);
    one_liner.programs = vec![program("tcp_retransmit_", 600.0, 0.9)];
    let mut report = report(vec![daemon, floor, one_liner]);
    report.evaluate_goals();
    assert_eq!(status(&report, "tcp_rtx_skb_btf per run at 10k/s"), "met");
    assert_eq!(status(&report, "kfree_skb_btf per run at 10k/s"), "missed");
    // 95 ns against the empty program's 60: 35 ns above it.
    assert_eq!(status(&report, "Egress per packet above"), "met");
    // 0.8 % against 0.9 %.
    assert_eq!(
        status(&report, "Kernel time of all the daemon's programs"),
        "met"
    );
    assert_eq!(status(&report, "tcp_rtx_skb_btf per run at 1k/s"), "n/a");
    let egress = report
        .goals
        .iter()
        .find(|g| g.name.starts_with("Egress"))
        .unwrap();
    assert!(
        egress.measured.contains("9.5 % of a core"),
        "{}",
        egress.measured
    );
}
