//! Tests of `bench` (tests), kept beside it so the module itself stays short.

use super::*;
use std::io;
use std::path::Path;

#[test]
fn status_lines_are_parsed() {
    let status = "VmHWM:\t   5000 kB\nVmRSS:\t    2132 kB\n";
    assert_eq!(parse_status_bytes(status, "VmHWM:"), Some(5000 * 1024));
    assert_eq!(parse_status_bytes(status, "VmPeak:"), None);
}

#[test]
fn vm_rss_is_parsed() {
    let status = "Name:\tvmfleet\nVmPeak:\t  10000 kB\nVmRSS:\t    2132 kB\nRssAnon:\t 144 kB\n";
    assert_eq!(parse_vm_rss(status), Some(2132 * 1024));
    assert_eq!(parse_vm_rss("Name: x\n"), None);
    assert_eq!(parse_vm_rss("VmRSS: lots kB\n"), None);
    assert_eq!(parse_vm_rss("VmRSS: 12 MB\n"), None);
    assert_eq!(parse_vm_rss("VmRSS: 12\n"), None);
}

#[test]
fn recording_pairs_give_ratios_in_run_order() {
    let sample = |ms| StartSample {
        vms: 10,
        vcpus_per_vm: 2,
        elapsed: Duration::from_millis(ms),
    };
    let off = [sample(100), sample(200), sample(0), sample(50)];
    let on = [sample(110), sample(190), sample(5), sample(50)];
    let ratios = super::record::pair_ratios(&off, &on);
    assert_eq!(ratios.len(), 3, "{ratios:?}");
    for (got, want) in ratios.iter().zip([1.1, 0.95, 1.0]) {
        assert!((got - want).abs() < 1e-12, "{ratios:?}");
    }
    assert_eq!(
        super::record::pair_ratios(&off[..1], &on[..0]),
        Vec::<f64>::new()
    );
    assert_eq!(super::record::record_pairs(100, 5), 40);
    assert_eq!(super::record::record_pairs(1000, 5), 9);
    assert_eq!(super::record::record_pairs(100, 1), 8);
    assert_eq!(super::record::record_pairs(1000, 1), 1);
    assert_eq!(super::record::record_pairs(1000, 0), 1);
}

/// The median's 95% interval comes from the order statistics the binomial law gives (40 pairs:
/// the 14th and 27th of the sorted ratios), and spans everything when there are too few.
#[test]
fn the_median_interval_is_the_binomial_order_statistics() {
    use super::record::median_interval;
    let ratios: Vec<f64> = (1..=40).rev().map(f64::from).collect();
    assert_eq!(median_interval(&ratios), Some((14.0, 27.0)));
    let ratios: Vec<f64> = (1..=9).map(f64::from).collect();
    // P(B <= 1) = 10/512 <= 2.5% < P(B <= 2): the 2nd and 8th of 9.
    assert_eq!(median_interval(&ratios), Some((2.0, 8.0)));
    assert_eq!(median_interval(&[3.0, 1.0, 2.0]), Some((1.0, 3.0)));
    assert_eq!(median_interval(&[1.5]), Some((1.5, 1.5)));
    assert_eq!(median_interval(&[]), None);
    assert_eq!(median_interval(&[1.0, f64::NAN]), None);
}

/// A recorded start's accounted ratio is its time over that time less recording's work; work
/// that took the whole start makes it infinite.
#[test]
fn accounted_ratios_take_the_work_out_of_each_start() {
    let sample = |ms| StartSample {
        vms: 10,
        vcpus_per_vm: 2,
        elapsed: Duration::from_millis(ms),
    };
    let ratios = super::record::accounted_ratios(
        &[sample(100), sample(50), sample(20)],
        &[
            Duration::from_millis(2),
            Duration::ZERO,
            Duration::from_millis(20),
        ],
    );
    assert!((ratios[0] - 100.0 / 98.0).abs() < 1e-12, "{ratios:?}");
    assert_eq!(ratios[1], 1.0);
    assert_eq!(ratios[2], f64::INFINITY);
}

#[test]
fn cpu_times_are_parsed_and_compared() {
    let before = CpuTimes::parse("cpu  100 5 50 800 45 0 0 0 0 0\ncpu0 1 2 3 4 5\n").unwrap();
    assert_eq!(
        before,
        CpuTimes {
            idle: 845,
            total: 1000
        }
    );
    let after = CpuTimes::parse("cpu  150 5 100 880 45 0 0 0 0 0\n").unwrap();
    let idle = after.idle_share_since(&before).unwrap();
    assert!((idle - 80.0 / 180.0).abs() < 1e-9, "{idle}");
    assert_eq!(before.idle_share_since(&before), None, "no tick passed");
    assert_eq!(before.idle_share_since(&after), None, "times never go back");
    assert_eq!(CpuTimes::parse("cpu0 1 2 3 4\n"), None);
    assert_eq!(CpuTimes::parse("cpu  1 2 x 4\n"), None);
    assert_eq!(CpuTimes::parse("cpu  1 2 3\n"), None);
}

#[test]
fn own_rss_is_readable() {
    let rss = rss_bytes().expect("/proc/self/status");
    assert!(rss > 0 && rss % 1024 == 0, "{rss}");
    let missing = rss_bytes_from(Path::new("/nonexistent/status")).unwrap_err();
    assert_eq!(missing.kind(), io::ErrorKind::NotFound);
}

#[test]
fn medians() {
    assert_eq!(median(&[]), None);
    assert_eq!(median(&[3.0]), Some(3.0));
    assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(median(&[1.0, f64::NAN]), None);
    let ms = Duration::from_millis;
    assert_eq!(median_duration(&[]), None);
    assert_eq!(median_duration(&[ms(9), ms(1), ms(5)]), Some(ms(5)));
    assert_eq!(median_duration(&[ms(4), ms(2)]), Some(ms(3)));
}

#[test]
fn stopwatch_laps_add_up() {
    let mut watch = Stopwatch::start();
    let a = watch.lap();
    std::thread::sleep(Duration::from_millis(2));
    let b = watch.lap();
    assert!(b >= Duration::from_millis(2));
    assert!(a + b <= watch.elapsed());
}

#[test]
fn samples_give_rates() {
    let sample = StartSample {
        vms: 10,
        vcpus_per_vm: 2,
        elapsed: Duration::from_millis(250),
    };
    assert_eq!(sample.vms_per_second(), 40.0);
    let side = StartSide::from_samples(&[
        sample,
        StartSample {
            elapsed: Duration::from_millis(500),
            ..sample
        },
        StartSample {
            elapsed: Duration::from_millis(100),
            ..sample
        },
    ])
    .unwrap();
    assert_eq!(side.vms_per_second, [40.0, 20.0, 100.0]);
    assert_eq!(side.median_vms_per_second, 40.0);
    assert_eq!(side.median_elapsed_ms, 250.0);
    assert_eq!((side.min_elapsed_ms, side.max_elapsed_ms), (100.0, 500.0));
    assert_eq!(StartSide::from_samples(&[]), None);
}

/// The vmfleet side measures a real start on KVM (skipped without it): one VM of two vCPUs
/// comes up, and the time is a real duration.
#[test]
fn the_vmfleet_side_measures_a_real_start() {
    if let Err(e) = vcpu::hypervisor::kvm::KvmHypervisor::open() {
        vcpu::skip::skipped(
            "the_vmfleet_side_measures_a_real_start",
            format!("/dev/kvm unusable: {e}"),
        );
        return;
    }
    let sample = vmfleet_start_to_first_exit(1, 2).expect("one VM starts");
    assert_eq!((sample.vms, sample.vcpus_per_vm), (1, 2));
    assert!(sample.elapsed > Duration::ZERO);
    assert!(vmfleet_stop_latency(2).expect("stops") < Duration::from_secs(10));
}

#[test]
fn options_are_checked() {
    assert!(BenchOptions::default().check().is_ok());
    for bad in [
        BenchOptions {
            counts: vec![],
            ..Default::default()
        },
        BenchOptions {
            counts: vec![10, 0],
            ..Default::default()
        },
        BenchOptions {
            counts: vec![MAX_COUNT + 1],
            ..Default::default()
        },
        BenchOptions {
            runs: 0,
            ..Default::default()
        },
        BenchOptions {
            shutdown_vms: 0,
            ..Default::default()
        },
        BenchOptions {
            control_only: true,
            start_only: true,
            ..Default::default()
        },
        BenchOptions {
            record_only: true,
            floor_only: true,
            ..Default::default()
        },
        BenchOptions {
            record_counts: vec![0],
            ..Default::default()
        },
        BenchOptions {
            scale_only: true,
            record_only: true,
            ..Default::default()
        },
        BenchOptions {
            scale_vms: 0,
            ..Default::default()
        },
        BenchOptions {
            trace_vms: MAX_COUNT + 1,
            ..Default::default()
        },
    ] {
        let error = bad.check().unwrap_err();
        assert!(matches!(error, BenchError::Options(_)), "{error}");
    }
}

fn report(verdict: Verdict) -> BenchReport {
    let side = StartSide {
        vms_per_second: vec![100.0],
        median_vms_per_second: 100.0,
        median_elapsed_ms: 10.0,
        min_elapsed_ms: 9.0,
        max_elapsed_ms: 11.0,
    };
    let skipped = Figure {
        value: None,
        unit: "ms",
        target: "<= 50 ms".into(),
        verdict: Verdict::Skipped,
    };
    BenchReport {
        host: BenchHost {
            kernel: "6.x".into(),
            kvm_module: Some("kvm_pvm".into()),
            cpus: 2,
        },
        vcpus_per_vm: 2,
        runs: 1,
        start: vec![StartRow {
            runs: 5,
            vms: 1,
            floor: side.clone(),
            floor_phases: PhaseMedians::default(),
            vmfleet: Some(side.clone()),
            ratio: Some(1.0),
            verdict: verdict.clone(),
        }],
        record: vec![RecordRow {
            vms: 100,
            runs: 10,
            off: Some(side.clone()),
            on: Some(side.clone()),
            ratio: Some(1.01),
            ratio_interval: Some([0.99, 1.03]),
            pair_ratios: vec![0.99, 1.01, 1.03],
            accounted_ratio: Some(1.004),
            recording_ms: vec![0.4, 0.5, 0.3],
            trace_bytes_per_vm: Some(4000.0),
            verdict,
        }],
        trace: super::record::trace_figures(1000, false),
        scale_vms: 1000,
        scale: skipped.clone(),
        memory_per_vm: skipped.clone(),
        stop_latency: skipped.clone(),
        shutdown_vms: 1000,
        shutdown: skipped.clone(),
        pause_after_abandoned_wait: skipped.clone(),
        baseline: skipped.clone(),
        trace_growth: skipped,
    }
}

#[test]
fn misses_and_failures_count_not_built_does_not() {
    assert!(!report(Verdict::Met).any_missed());
    assert!(!report(Verdict::NotBuilt("x".into())).any_missed());
    assert!(!report(Verdict::Skipped).any_missed());
    assert!(report(Verdict::Missed).any_missed());
    assert!(report(Verdict::Failed("x".into())).any_missed());
}

#[test]
fn the_table_names_every_figure() {
    let mut report_met = report(Verdict::Met);
    report_met.trace.live_ms = Some(1000.0);
    report_met.trace.replay_ms = Some(10.0);
    let text = table(&report_met);
    // Not measured: no trace line (its figures still say they were skipped).
    assert!(!table(&report(Verdict::Met)).contains("trace of"));
    for needle in [
        "kvm_pvm",
        "start: nothing -> first guest exit",
        "1.00x",
        "scale (1000 VMs x 2 vCPUs)",
        "supervisor memory per running VM",
        "stop latency",
        "SIGTERM to serve with 1000 running VMs x 2 vCPUs -> process exited, trace whole",
        "pause answered after an abandoned wait",
        "trace growth per VM-hour beyond the record_exits budget (1 VM x 2 vCPUs)",
        "skipped (not asked for)",
        "recording: vmfleet's start recorded to a trace vs not",
        "1.010x",
        "trace of `vmfleet run --record` of 1000 VMs x 2 vCPUs",
        "trace bytes per VM",
        "replay events per second",
        "replay time / live time",
        "replay peak memory",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in:\n{text}");
    }
    let json = serde_json::to_value(report(Verdict::NotBuilt("why".into()))).unwrap();
    assert_eq!(json["start"][0]["verdict"]["status"], "not_built");
    assert_eq!(json["start"][0]["verdict"]["detail"], "why");
}

#[test]
fn the_baseline_figure_settles_a_mixed_fleet_of_fingerprints() {
    // Fewer hosts than the figure's, in a debug build: the figure's work, not its time.
    let docs = super::baseline::documents(9).unwrap();
    assert_eq!(docs.len(), 9);
    assert_ne!(docs[0], docs[2], "the copies differ");
    let took = super::vmfleet_baseline(9).unwrap();
    assert!(took > std::time::Duration::ZERO);
}

#[test]
fn plot_writes_an_svg_chart_per_measured_group() {
    let dir = std::env::temp_dir().join(format!("vmfleet-bench-plot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = report(Verdict::Met);
    let written = plot(&report, &dir.join("charts")).expect("charts");
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // The trace was not measured: no replay chart.
    assert_eq!(names, ["start.svg", "record.svg"]);
    report.trace.live_ms = Some(1000.0);
    report.trace.replay_ms = Some(10.0);
    let written = plot(&report, &dir.join("charts")).expect("charts");
    assert_eq!(written.len(), 3);
    for path in &written {
        let svg = std::fs::read_to_string(path).unwrap();
        assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{}", path.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
