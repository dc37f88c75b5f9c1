use super::{counts::*, parse::*, *};

fn containers() -> Vec<Container> {
    ["storm-1", "storm-2"]
        .iter()
        .enumerate()
        .map(|(i, name)| Container {
            name: (*name).to_owned(),
            ip: Ipv4Addr::new(198, 18, 100, u8::try_from(i).unwrap() + 2),
            pid: 1,
            netns: 4_026_532_289 + u64::try_from(i).unwrap(),
        })
        .collect()
}

#[test]
fn parses_prometheus_text() {
    let text = "# HELP galmanhae_tcp_retransmits Retransmit attempts\n\
        # TYPE galmanhae_tcp_retransmits counter\n\
        galmanhae_tcp_retransmits_total{workload=\"storm-1\",remote=\"198.19.0.2:5432\",kind=\"fast\"} 120\n\
        galmanhae_tcp_retransmits_total{workload=\"we\\\"ird, name\",remote=\"x\",kind=\"rto\"} 3 1700000000\n\
        node_netstat_Tcp_RetransSegs 1.234e+06\n\
        garbage{\n";
    let samples = parse_samples(text);
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[0].label("workload"), Some("storm-1"));
    assert_eq!(samples[0].label("kind"), Some("fast"));
    assert!((samples[0].value - 120.0).abs() < f64::EPSILON);
    assert_eq!(samples[1].label("workload"), Some("we\"ird, name"));
    assert_eq!(samples[2].name, "node_netstat_Tcp_RetransSegs");
    assert!((samples[2].value - 1_234_000.0).abs() < f64::EPSILON);
}

#[test]
fn daemon_counts_prefer_segments_and_leave_out_failed_attempts() {
    let attempts = |n: u32| {
        format!(
            "galmanhae_tcp_retransmits_total{{workload=\"storm-1\",remote=\"r\",kind=\"fast\"}} {n}\n\
             galmanhae_tcp_retransmits_total{{workload=\"storm-1\",remote=\"r\",kind=\"failed\"}} {n}\n\
             galmanhae_lost_events_total{{reason=\"read_error\"}} 1\n\
             galmanhae_lost_events_total{{reason=\"overflow_map_full\"}} {n}\n\
             galmanhae_lost_events_total{{reason=\"program_skipped\"}} {n}\n"
        )
    };
    let counts = daemon_counts(
        &parse_samples(&attempts(10)),
        &parse_samples(&attempts(25)),
        &containers(),
    );
    assert_eq!(counts.unit, "attempts");
    let per = counts.per_container.unwrap();
    assert_eq!(per["storm-1"], 15);
    assert_eq!(per["storm-2"], 0);
    // overflow_map_full grew by 15; program_skipped is not per workload.
    assert_eq!(counts.lost, Some(15));
    let reasons = lost_by_reason(&parse_samples(&attempts(10)), &parse_samples(&attempts(25)));
    assert_eq!(reasons["program_skipped"], 15);
    assert_eq!(reasons["read_error"], 0);

    let segments = |n: u32| {
        format!(
            "galmanhae_tcp_retransmit_segments_total{{workload=\"storm-2\",remote=\"a\"}} {n}\n\
             galmanhae_tcp_retransmit_segments_total{{workload=\"storm-2\",remote=\"b\"}} 1\n"
        )
    };
    let counts = daemon_counts(
        &parse_samples(&segments(5)),
        &parse_samples(&segments(105)),
        &containers(),
    );
    assert_eq!(counts.unit, "segments");
    assert_eq!(counts.per_container.unwrap()["storm-2"], 100);
}

#[test]
fn diagnose_counts_sum_flows_per_workload() {
    let report = serde_json::json!({
        "flows": [
            {"workload": "storm-1", "retransmitted_segments": 7},
            {"workload": "storm-1", "retransmitted_segments": 5},
            {"workload": "storm-2", "retransmitted_segments": 1},
            {"workload": "host", "retransmitted_segments": 100},
        ],
        "health": {"lost": 2, "read_errors": 1},
        "hooks": [
            {"name": "tcp:tcp_retransmit_skb", "missed": 4},
            {"name": "skb:kfree_skb", "missed": 100},
            {"name": "tcp:tcp_retransmit_synack", "missed": null},
        ],
    });
    let counts = diagnose_counts(&report, &containers());
    let per = counts.per_container.unwrap();
    assert_eq!((per["storm-1"], per["storm-2"]), (12, 1));
    assert_eq!(counts.lost, Some(7));
}

#[test]
fn parses_bpftrace_maps() {
    let text = "Attaching 3 probes...\nready\n\n\n\
        @failed[4026532290]: 2\n\n\
        @flows[4026532289, 198.18.100.2, 48356, 198.19.0.2, 5432]: 220\n\
        @flows[4026532289, 198.18.100.2, 48376, 198.19.0.2, 5432]: 231\n\
        @flows[4026532290, 198.18.100.3, 40000, 198.19.0.2, 5432]: 9\n";
    let maps = parse_bpftrace_maps(text);
    assert_eq!(maps.flows["4026532289"], 451);
    assert_eq!(maps.flows["4026532290"], 9);
    assert_eq!(maps.failed["4026532290"], 2);
    let known = containers();
    let named = by_container(&maps.flows, |inode| {
        known
            .iter()
            .find(|c| c.netns.to_string() == inode)
            .map(|c| c.name.as_str())
    });
    assert_eq!(named["storm-1"], 451);
}

#[test]
fn parses_event_lines_and_lost_events() {
    let text = "ready\n\
        123456789 0 198.18.100.2:48356 R> 198.19.0.2:5432 1\n\
        123456790 0 198.18.100.2:48356 R> 198.19.0.2:5432 1\n\
        Lost 1234 events\n\
        123456791 17 198.18.100.3:40000 R> 198.19.0.2:5432 1\n\
        Lost 6 events\n";
    let lines = parse_event_lines(text);
    assert_eq!(lines.per_source["198.18.100.2"], 2);
    assert_eq!(lines.per_source["198.18.100.3"], 1);
    assert_eq!(lines.lost, 1240);
}

#[test]
fn parses_tcpdump_stats_and_tshark_fields() {
    let stderr = "tcpdump: listening on docker0, link-type EN10MB (Ethernet), snapshot length 96 bytes\n\
        1200 packets captured\n1300 packets received by filter\n100 packets dropped by kernel\n";
    assert_eq!(tcpdump_dropped(stderr), Some(100));
    assert_eq!(tcpdump_dropped("nothing"), None);
    let fields = "198.18.100.2\t1448\t1\n198.18.100.2\t4344\t1\n198.18.100.2\t65160\t\n\
                  198.18.100.3\t0\t1\n\t\t\n";
    let found = parse_tshark_fields(fields);
    assert_eq!(found.frames["198.18.100.2"], 2);
    assert_eq!(found.segments["198.18.100.2"], 4);
    assert_eq!(found.any_segments["198.18.100.2"], 49);
    assert_eq!(found.segments["198.18.100.3"], 1);
}
