//! `parley-load` against a real server (in process, on the embedded SQLite default):
//! the figures the benchmarks report come out of a short run, the write path's with its
//! ratio to the ceiling measured in the same run on the same database, and without
//! errors, with the JSON report and the latency plot written.

use std::path::Path;

use clap::Parser as _;
use parley::auth::Argon2Hasher;
use parley::config::Switch;
use parley::startup::Server;
use serde_json::Value;
use tokio::process::Command;

/// Runs a scenario against `url` to completion; its JSON report.
async fn run(url: &str, dir: &Path, name: &str, args: &[&str]) -> Value {
    let json = dir.join(format!("{name}.json"));
    let plot = dir.join(format!("{name}.svg"));
    let pid = std::process::id().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_parley-load"))
        .args(args)
        .args(["--url", url, "--server-pid", &pid, "--idle-secs", "0"])
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&plot)
        .output()
        .await
        .expect("parley-load runs");
    assert!(
        output.status.success(),
        "parley-load {name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report written"))
            .expect("report is JSON");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(svg.contains("<svg"), "{name}: the plot is not SVG");
    report
}

fn figure(report: &Value, name: &str) -> f64 {
    report["figures"][name]["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("no figure {name} in {report}"))
}

#[tokio::test]
async fn the_load_tool_reports_throughput_latency_and_delivery_against_a_same_run_ceiling() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("parley.db");
    let mut config = parley::cli::Cli::try_parse_from(["parley"])
        .expect("defaults parse")
        .config;
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.data_dir = dir.path().to_path_buf();
    config.database_url = Some(format!("sqlite://{}?mode=rwc", database.display()).into());
    config.jwt_secret = Some(
        "load-test-secret-0123456789abcdef-0123456789"
            .to_owned()
            .into(),
    );
    config.log = "warn".to_owned();
    config.rate_limits = Switch::Off;
    let server = Server::build(config, Argon2Hasher::new().expect("hasher"))
        .await
        .expect("server builds");
    let url = format!("http://{}", server.local_addr().expect("bound"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let reports = tempfile::tempdir().expect("temp dir");
    let ceiling_db = format!("sqlite://{}", database.display());

    let send = run(
        &url,
        reports.path(),
        "send",
        &[
            "send",
            "--senders",
            "4",
            "--duration",
            "2",
            "--warmup",
            "0",
            "--ceiling-db",
            &ceiling_db,
            "--ceiling-secs",
            "1",
        ],
    )
    .await;
    assert!(figure(&send, "throughput") > 0.0, "{send}");
    assert!(figure(&send, "ceiling_tx_per_s") > 0.0, "{send}");
    let ratio = send["figures"]["throughput"]["ratio"].as_f64();
    assert!(
        ratio.is_some_and(|ratio| ratio > 0.0),
        "no ratio to the ceiling: {send}"
    );
    // The server's memory, read from its process while the load ran.
    for rss in ["rss_idle_before", "rss_peak", "rss_end", "rss_after_idle"] {
        assert!(figure(&send, rss) > 0.0, "{rss}: {send}");
    }
    assert!(
        send["rss"]
            .as_array()
            .is_some_and(|samples| !samples.is_empty()),
        "no RSS samples over time: {send}"
    );
    for percentile in ["send_p50", "send_p99", "send_p999"] {
        assert!(figure(&send, percentile) > 0.0, "{percentile}: {send}");
    }

    let fanout = run(
        &url,
        reports.path(),
        "fanout",
        &[
            "fanout",
            "--subscribers",
            "5",
            "--users",
            "2",
            "--interval-ms",
            "100",
            "--duration",
            "2",
            "--warmup",
            "0",
            "--compare-baseline",
        ],
    )
    .await;
    for percentile in ["delivery_p50", "delivery_p99", "delivery_p999"] {
        assert!(figure(&fanout, percentile) > 0.0, "{percentile}: {fanout}");
    }
    assert!(figure(&fanout, "baseline_delivery_p99") > 0.0, "{fanout}");
    // Reported whatever its value (RSS may even shrink while sockets open).
    figure(&fanout, "memory_per_socket");

    let _ = stop.send(());
    serving
        .await
        .expect("server task")
        .expect("server stops cleanly");
}
