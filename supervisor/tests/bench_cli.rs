//! `vmfleet bench` as a user meets it: bad options are a clear error (status 2, no panic); on a
//! host with a usable /dev/kvm the floor is measured and reported (SKIPPED otherwise).

use std::process::{Command, Output};

fn vmfleet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmfleet"))
}

/// A JSON array of numbers, as numbers.
fn numbers(value: &serde_json::Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_f64().unwrap())
        .collect()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kvm_usable(test: &str) -> bool {
    match vcpu::hypervisor::kvm::floor::Floor::open() {
        Ok(_) => true,
        Err(e) => {
            vcpu::skip::skipped(test, e);
            false
        }
    }
}

#[test]
fn bad_options_are_clear_errors() {
    for (args, needle) in [
        (&["bench", "--counts", "0"][..], "--counts"),
        (&["bench", "--counts", "1,x"][..], "--counts"),
        (&["bench", "--counts", "1001"][..], "--counts"),
        (&["bench", "--runs", "0"][..], "--runs"),
    ] {
        let out = vmfleet().args(args).output().unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn the_floor_is_measured_and_reported() {
    if !kvm_usable("the_floor_is_measured_and_reported") {
        return;
    }
    let out = vmfleet()
        .args([
            "bench",
            "--floor-only",
            "--counts",
            "1,3",
            "--runs",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["vcpus_per_vm"], 2);
    let rows = report["start"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, vms) in rows.iter().zip([1, 3]) {
        assert_eq!(row["vms"], vms);
        assert!(row["floor"]["median_vms_per_second"].as_f64().unwrap() > 0.0);
        assert_eq!(row["verdict"]["status"], "skipped");
    }
    assert_eq!(report["stop_latency"]["verdict"]["status"], "skipped");
    // --plot: the start chart, an SVG document.
    let dir = std::env::temp_dir().join(format!("vmfleet-bench-cli-plot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = vmfleet()
        .args([
            "bench",
            "--floor-only",
            "--counts",
            "1,3",
            "--runs",
            "1",
            "--plot",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let svg = std::fs::read_to_string(dir.join("start.svg")).expect("start.svg");
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{svg}");
    assert!(svg.len() > 100, "{svg}");
    std::fs::remove_dir_all(&dir).unwrap();
    // The vmfleet side (a 500-VM fleet among others) is measured by `cargo xtask bench`, not
    // here: it takes minutes. `bench::tests` checks that it measures a real start.
}

/// `--control-only` measures the control-plane figures alone, on as few VMs as asked for
/// (`--shutdown-vms`): this checks they are measured and reported, not what they are (that is
/// the benchmark's job, with 1,000 VMs).
#[test]
fn the_control_figures_are_measured_on_a_small_fleet() {
    if !kvm_usable("the_control_figures_are_measured_on_a_small_fleet") {
        return;
    }
    let out = vmfleet()
        .args(["bench", "--control-only", "--shutdown-vms", "3", "--json"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        matches!(out.status.code(), Some(0 | 9)),
        "met or missed, never failed: {stdout}{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["start"].as_array().map(Vec::len), Some(0));
    assert_eq!(report["scale"]["verdict"]["status"], "skipped");
    assert_eq!(report["shutdown_vms"], 3);
    for figure in ["shutdown", "pause_after_abandoned_wait"] {
        let status = &report[figure]["verdict"]["status"];
        assert!(status == "met" || status == "missed", "{figure}: {report}");
        assert!(report[figure]["value"].as_f64().unwrap() > 0.0, "{figure}");
    }
    let table = vmfleet()
        .args(["bench", "--control-only", "--shutdown-vms", "2"])
        .output()
        .unwrap();
    let (stdout, _) = text(&table);
    assert!(
        stdout.contains(
            "SIGTERM to serve with 2 running VMs x 2 vCPUs -> process exited, trace whole"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("pause answered after an abandoned wait"),
        "{stdout}"
    );
}

/// `--record-only` measures the recording figure and the trace and replay figures on a small
/// fleet: their shape and that every value is positive, not whether a target is met (that is the
/// benchmark's job, with 100 and 1,000 VMs).
#[test]
fn the_recording_figures_are_measured_on_a_small_fleet() {
    if !kvm_usable("the_recording_figures_are_measured_on_a_small_fleet") {
        return;
    }
    let out = vmfleet()
        .args([
            "bench",
            "--record-only",
            "--record-counts",
            "100",
            "--trace-vms",
            "3",
            "--runs",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        matches!(out.status.code(), Some(0 | 9)),
        "met or missed, never failed: {stdout}{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["start"].as_array().map(Vec::len), Some(0));
    assert_eq!(report["scale"]["verdict"]["status"], "skipped");
    let rows = report["record"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["vms"], 100);
    for side in ["off", "on"] {
        let side = &row[side];
        assert!(side["median_elapsed_ms"].as_f64().unwrap() > 0.0, "{row}");
        assert!(
            side["min_elapsed_ms"].as_f64().unwrap() <= side["max_elapsed_ms"].as_f64().unwrap(),
            "{row}"
        );
    }
    assert!(row["ratio"].as_f64().unwrap() > 0.0, "{row}");
    // `--runs 1` at 100 VMs: 800 VMs per side, 8 pairs, each with its ratio; the figure is
    // their median.
    assert_eq!(row["runs"], 8, "{row}");
    let mut pairs: Vec<f64> = numbers(&row["pair_ratios"]);
    assert_eq!(pairs.len(), 8, "{row}");
    pairs.sort_by(f64::total_cmp);
    let median = (pairs[3] + pairs[4]) / 2.0;
    assert!(
        (row["ratio"].as_f64().unwrap() - median).abs() < 1e-9,
        "{row}"
    );
    // The median's interval holds it; every recorded start's work was measured, some of it,
    // and less than the start (the accounted ratio is finite and above 1).
    let interval = row["ratio_interval"].as_array().unwrap();
    let (low, high) = (interval[0].as_f64().unwrap(), interval[1].as_f64().unwrap());
    assert!(low <= median && median <= high, "{row}");
    let work: Vec<f64> = numbers(&row["recording_ms"]);
    assert_eq!(work.len(), 8, "{row}");
    assert!(work.iter().all(|&ms| ms > 0.0), "{row}");
    let accounted = row["accounted_ratio"].as_f64().unwrap();
    assert!(accounted > 1.0 && accounted.is_finite(), "{row}");
    assert!(row["trace_bytes_per_vm"].as_f64().unwrap() > 0.0, "{row}");
    let status = &row["verdict"]["status"];
    assert!(status == "met" || status == "missed", "{row}");
    let trace = &report["trace"];
    assert_eq!(trace["vms"], 3);
    for value in [
        "events",
        "trace_bytes",
        "live_ms",
        "replay_ms",
        "run_peak_memory_mib",
    ] {
        assert!(trace[value].as_f64().unwrap() > 0.0, "{value}: {trace}");
    }
    // The replay time is the median of every replay's.
    let runs: Vec<f64> = numbers(&trace["replay_runs_ms"]);
    assert_eq!(runs.len(), supervisor::bench::REPLAY_RUNS, "{trace}");
    assert!(runs.iter().all(|&ms| ms > 0.0), "{trace}");
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(
        trace["replay_ms"].as_f64(),
        Some(sorted[sorted.len() / 2]),
        "{trace}"
    );
    for figure in [
        "bytes_per_vm",
        "replay_events_per_second",
        "replay_vs_live",
        "replay_peak_memory",
    ] {
        let status = &trace[figure]["verdict"]["status"];
        assert!(status == "met" || status == "missed", "{figure}: {trace}");
        assert!(trace[figure]["value"].as_f64().unwrap() > 0.0, "{figure}");
    }
}
