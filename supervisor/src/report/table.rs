//! The operator's table: one row per VM, what `vmfleet run` prints (with colour on a terminal).
//! A summary in words; the transcript and JSON carry the detail.

use super::arm64::arm64_writes_cell;
use super::{Arm64GuestSummary, GuestSummary, JobReport, RunEnd, VmReport, VmState};
use std::fmt::Write as _;

/// The per-VM summary table printed by `vmfleet run`, without colour.
pub fn table(report: &JobReport) -> String {
    table_colored(report, false)
}

/// The per-VM summary table; with `color`, its state column is green for a VM that completed,
/// red for one that failed (ANSI codes added after padding, so columns stay aligned).
pub fn table_colored(report: &JobReport, color: bool) -> String {
    let header = [
        "VM",
        "state",
        "vCPUs",
        "exits",
        "guest end",
        "CPU-model drift",
        "hidden, not honoured",
        "guest saw",
        "lock checks",
    ];
    let rows: Vec<[String; 9]> = report
        .vms
        .iter()
        .map(|vm| {
            let exits: u64 = vm.vcpus.iter().map(|v| v.exits).sum();
            let drift_regs: usize = vm.vcpus.iter().map(|v| v.drift.len()).max().unwrap_or(0);
            let mut not_honoured: Vec<&str> = vm
                .vcpus
                .iter()
                .flat_map(|v| v.not_honoured.iter().map(String::as_str))
                .collect();
            not_honoured.sort_unstable();
            not_honoured.dedup();
            let guest = guest_cell(vm);
            let lock = if vm.after_run.is_empty() {
                "-".to_string()
            } else {
                let ok = vm
                    .after_run
                    .iter()
                    .filter(|a| a.expected == a.outcome)
                    .count();
                format!("{ok}/{} as expected", vm.after_run.len())
            };
            [
                vm.name.clone(),
                vm.state_label(),
                vm.vcpu_count.to_string(),
                exits.to_string(),
                run_end_cell(vm),
                match &vm.arm64 {
                    Some(arm64) => arm64_writes_cell(arm64),
                    None if drift_regs == 0 => "none".into(),
                    None => format!("{drift_regs} register(s) rewritten"),
                },
                if not_honoured.is_empty() {
                    "-".into()
                } else {
                    not_honoured.join(",")
                },
                guest,
                lock,
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut out, &header);
    for (row, vm) in rows.iter().zip(&report.vms) {
        let mut cells: Vec<String> = row.clone().into();
        if color {
            let code = match &vm.state {
                _ if vm.failed() => Some("31"),
                VmState::Completed => Some("32"),
                _ => None,
            };
            if let Some(code) = code {
                let w = widths[1];
                cells[1] = crate::term::paint(&format!("{:<w$}", cells[1]), code, true);
            }
        }
        let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
        line(&mut out, &cells);
    }
    // Templated VMs: whether the guest sees the template, and each bit the host changed.
    let verdicts: Vec<_> = report
        .vms
        .iter()
        .filter_map(|vm| vm.template_verdict().map(|v| (vm, v)))
        .collect();
    if !verdicts.is_empty() {
        out.push('\n');
    }
    for (vm, verdict) in verdicts {
        let _ = writeln!(out, "{}:", vm.name);
        super::template_lines(&mut out, &verdict, "  ");
    }
    out
}

/// How the vCPUs' runs ended: `halted` when they all did, else each way with how many vCPUs
/// ended so (`1 halted, 1 guest fault`), in vCPU order of first appearance.
fn run_end_cell(vm: &VmReport) -> String {
    let mut ends: Vec<(RunEnd, usize)> = Vec::new();
    for v in &vm.vcpus {
        match ends.iter_mut().find(|(end, _)| *end == v.run_end) {
            Some((_, n)) => *n += 1,
            None => ends.push((v.run_end, 1)),
        }
    }
    match ends.as_slice() {
        [] => "-".into(),
        [(end, _)] => end.label().into(),
        _ => ends
            .iter()
            .map(|(end, n)| format!("{n} {}", end.label()))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn guest_cell(vm: &VmReport) -> String {
    let arm64: Vec<&Arm64GuestSummary> = vm
        .vcpus
        .iter()
        .filter_map(|v| v.arm64_guest.as_ref())
        .collect();
    if !arm64.is_empty() {
        let bad = arm64.iter().filter(|g| !g.consistent()).count();
        return if bad == 0 {
            "= model".into()
        } else {
            format!("MISMATCH on {bad} vCPU(s)")
        };
    }
    let guests: Vec<&GuestSummary> = vm.vcpus.iter().filter_map(|v| v.guest.as_ref()).collect();
    if guests.is_empty() {
        return "-".into();
    }
    if guests.iter().all(|g| g.consistent()) {
        let visible: Vec<&str> = {
            let mut v: Vec<&str> = guests
                .iter()
                .flat_map(|g| g.hidden_but_visible.iter().map(String::as_str))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        if visible.is_empty() {
            "= kernel table".into()
        } else {
            format!("= kernel table (still sees {})", visible.join(","))
        }
    } else {
        let bad = guests.iter().filter(|g| !g.consistent()).count();
        format!("MISMATCH on {bad} vCPU(s)")
    }
}
