//! `vmfleet bench`'s report as a table for a terminal: the start figure per VM count (floor and
//! vmfleet side by side), the floor's steps, then every other figure against its target.

use super::{BenchReport, RECORD_TARGET_RATIO, START_TARGET_RATIO};
use std::fmt::Write as _;

/// The report as a table for a terminal.
pub fn table(report: &BenchReport) -> String {
    let mut out = String::new();
    let host = &report.host;
    let _ = writeln!(
        out,
        "vmfleet bench on {} ({} CPUs, kernel {}): {} vCPUs per VM, medians of at least {} run(s)",
        host.kvm_module.as_deref().unwrap_or("no KVM module"),
        host.cpus,
        host.kernel,
        report.vcpus_per_vm,
        report.runs
    );
    // Rows only for what was measured (--control-only and --record-only measure no start).
    if !report.start.is_empty() {
        let _ = writeln!(
            out,
            "\nstart: nothing -> first guest exit of every vCPU, floor and vmfleet with a thread per VM and per vCPU (target: vmfleet within {START_TARGET_RATIO}x of the floor)"
        );
        let _ = writeln!(
            out,
            "  {:>5}  {:>5}  {:>12}  {:>11}  {:>13}  {:>6}  verdict",
            "VMs", "runs", "floor VMs/s", "floor ms", "vmfleet VMs/s", "ratio"
        );
        for row in &report.start {
            let vmfleet = row.vmfleet.as_ref().map_or_else(
                || "-".to_string(),
                |s| format!("{:.1}", s.median_vms_per_second),
            );
            let ratio = row
                .ratio
                .map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"));
            let _ = writeln!(
                out,
                "  {:>5}  {:>5}  {:>12.1}  {:>11.2}  {:>13}  {:>6}  {}",
                row.vms,
                row.runs,
                row.floor.median_vms_per_second,
                row.floor.median_elapsed_ms,
                vmfleet,
                ratio,
                row.verdict
            );
        }
        let _ = writeln!(
            out,
            "\nfloor, median ms per step (summed over the VMs of a run):"
        );
        let _ = writeln!(
            out,
            "  {:>5}  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {:>9}",
            "VMs",
            "sup.cpuid",
            "create_vm",
            "memory",
            "create_vc",
            "cpuid",
            "threads",
            "load",
            "boot",
            "first_run",
            "teardown"
        );
        for row in &report.start {
            let p = &row.floor_phases;
            let _ = writeln!(
                out,
                "  {:>5}  {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {:>9.3}",
                row.vms,
                p.supported_cpuid_ms,
                p.create_vm_ms,
                p.guest_memory_ms,
                p.create_vcpu_ms,
                p.cpuid_ms,
                p.vcpu_threads_ms,
                p.load_guest_ms,
                p.boot_state_ms,
                p.first_run_ms,
                p.teardown_ms
            );
        }
    }
    if !report.record.is_empty() {
        let _ = writeln!(
            out,
            "\nrecording: vmfleet's start recorded to a trace vs not, in adjacent pairs after one warm-up pair; and recording's own work in each recorded start (target: within {RECORD_TARGET_RATIO}x by its own account, and the pairs' median's 95% interval reaching down to it)"
        );
        let _ = writeln!(
            out,
            "  {:>5}  {:>5}  {:>22}  {:>22}  {:>22}  {:>15}  {:>22}  {:>10}  verdict",
            "VMs",
            "pairs",
            "off ms (min-max)",
            "on ms (min-max)",
            "ratio (pairs min-max)",
            "95% interval",
            "accounted (work ms)",
            "trace B/VM"
        );
        for row in &report.record {
            let side = |s: &Option<super::StartSide>| {
                s.as_ref().map_or_else(
                    || "-".to_string(),
                    |s| {
                        format!(
                            "{:.1} ({:.1}-{:.1})",
                            s.median_elapsed_ms, s.min_elapsed_ms, s.max_elapsed_ms
                        )
                    },
                )
            };
            let _ = writeln!(
                out,
                "  {:>5}  {:>5}  {:>22}  {:>22}  {:>22}  {:>15}  {:>22}  {:>10}  {}",
                row.vms,
                row.runs,
                side(&row.off),
                side(&row.on),
                row.ratio.map_or_else(
                    || "-".to_string(),
                    |r| {
                        let lo = row
                            .pair_ratios
                            .iter()
                            .copied()
                            .fold(f64::INFINITY, f64::min);
                        let hi = row.pair_ratios.iter().copied().fold(0.0, f64::max);
                        format!("{r:.3}x ({lo:.2}-{hi:.2})")
                    }
                ),
                row.ratio_interval.map_or_else(
                    || "-".to_string(),
                    |[low, high]| format!("{low:.3}-{high:.3}")
                ),
                row.accounted_ratio.map_or_else(
                    || "-".to_string(),
                    |a| {
                        let work = super::measure::median(&row.recording_ms).unwrap_or(0.0);
                        format!("{a:.4}x ({work:.2})")
                    }
                ),
                row.trace_bytes_per_vm
                    .map_or_else(|| "-".to_string(), |b| format!("{b:.0}")),
                row.verdict
            );
        }
    }
    let trace = &report.trace;
    if trace.live_ms.is_some() {
        let _ = writeln!(
            out,
            "\ntrace of `vmfleet run --record` of {} VMs x {} vCPUs, replayed by `vmfleet replay`: \
             {} events, {} bytes; live {} ms, replay {} ms (median of {}: {}); run peak memory {} MiB",
            trace.vms,
            report.vcpus_per_vm,
            opt(trace.events.map(|e| e as f64), 0),
            opt(trace.trace_bytes.map(|e| e as f64), 0),
            opt(trace.live_ms, 1),
            opt(trace.replay_ms, 1),
            trace.replay_runs_ms.len(),
            trace
                .replay_runs_ms
                .iter()
                .map(|ms| format!("{ms:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            opt(trace.run_peak_memory_mib, 1),
        );
    }
    let _ = writeln!(out);
    for (name, figure) in [
        ("trace bytes per VM".to_string(), &trace.bytes_per_vm),
        (
            "replay events per second".to_string(),
            &trace.replay_events_per_second,
        ),
        ("replay time / live time".to_string(), &trace.replay_vs_live),
        ("replay peak memory".to_string(), &trace.replay_peak_memory),
        (
            format!(
                "trace growth per VM-hour beyond the record_exits budget (1 VM x {} vCPUs)",
                report.vcpus_per_vm
            ),
            &report.trace_growth,
        ),
        (
            format!(
                "scale ({} VMs x {} vCPUs)",
                report.scale_vms, report.vcpus_per_vm
            ),
            &report.scale,
        ),
        (
            format!("supervisor memory per running VM, {} VMs", report.scale_vms),
            &report.memory_per_vm,
        ),
        (
            "stop latency (spinning guest)".to_string(),
            &report.stop_latency,
        ),
        (
            format!(
                "SIGTERM to serve with {} running VMs x {} vCPUs -> process exited, trace whole",
                report.shutdown_vms, report.vcpus_per_vm
            ),
            &report.shutdown,
        ),
        (
            "pause answered after an abandoned wait".to_string(),
            &report.pause_after_abandoned_wait,
        ),
        (
            "baseline of fingerprints (parse, template, check each host; no KVM)".to_string(),
            &report.baseline,
        ),
    ] {
        let value = figure.value.map_or_else(
            || "-".to_string(),
            |v| format!("{} {}", significant(v), figure.unit),
        );
        let _ = writeln!(
            out,
            "{name}: {value} (target {}): {}",
            figure.target, figure.verdict
        );
    }
    out
}

/// `value` with `decimals` decimals, or `-`.
fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

/// `v` with one decimal, or more for a value below 1 (a ratio such as 0.004).
fn significant(v: f64) -> String {
    if v != 0.0 && v.abs() < 1.0 {
        format!("{v:.4}")
    } else {
        format!("{v:.1}")
    }
}
