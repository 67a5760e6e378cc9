//! `vmfleet bench`'s report as a table for a terminal: the start figure per VM count (floor and
//! vmfleet side by side), the floor's steps, then every other figure against its target.

use super::{BenchReport, SCALE_VMS, START_TARGET_RATIO};
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
        "  {:>5}  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {:>9}",
        "VMs",
        "sup.cpuid",
        "create_vm",
        "memory",
        "create_vc",
        "cpuid",
        "load",
        "boot",
        "first_run",
        "teardown"
    );
    for row in &report.start {
        let p = &row.floor_phases;
        let _ = writeln!(
            out,
            "  {:>5}  {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {:>9.3}",
            row.vms,
            p.supported_cpuid_ms,
            p.create_vm_ms,
            p.guest_memory_ms,
            p.create_vcpu_ms,
            p.cpuid_ms,
            p.load_guest_ms,
            p.boot_state_ms,
            p.first_run_ms,
            p.teardown_ms
        );
    }
    let _ = writeln!(out);
    for (name, figure) in [
        (
            format!("scale ({SCALE_VMS} VMs x {} vCPUs)", report.vcpus_per_vm),
            &report.scale,
        ),
        (
            "supervisor memory per running VM".to_string(),
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
        let value = figure
            .value
            .map_or_else(|| "-".to_string(), |v| format!("{v:.1} {}", figure.unit));
        let _ = writeln!(
            out,
            "{name}: {value} (target {}): {}",
            figure.target, figure.verdict
        );
    }
    out
}
