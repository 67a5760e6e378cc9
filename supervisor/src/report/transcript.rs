//! The canonical transcript: the report in full, then every call per stream. A pure function of
//! the job's calls and answers (no times, no sequence numbers, no host addresses), so that a live
//! run and every replay of its trace print it byte for byte; `replay-tests` snapshots it.

use super::arm64::arm64_transcript;
use super::{AfterRunReport, JobReport, VmReport};
use recorder::render::TranscriptFold;
use recorder::{Event, HostFingerprint};
use std::fmt::Write as _;

/// Version of the transcript layout; bump it when the text changes shape.
pub const TRANSCRIPT_VERSION: u32 = 1;

/// The transcript: the report in full, then every call per stream.
pub fn transcript(report: &JobReport, host: &HostFingerprint, events: &[Event]) -> String {
    let mut out = transcript_head(report, host);
    push_calls(&mut out, &recorder::render_streams(events));
    out
}

/// [`transcript`] from the calls folded as they came ([`recorder::Recorder::folding`]): the same
/// text, without keeping every event.
pub fn transcript_folded(
    report: &JobReport,
    host: &HostFingerprint,
    calls: &TranscriptFold,
) -> String {
    // The calls' part renders on a thread of its own beside the report's: at the end of a
    // 1,000-VM replay the main thread renders both alone (2.2 and 0.6 MB of text).
    std::thread::scope(|scope| {
        let rendered = scope.spawn(|| calls.render());
        let mut out = transcript_head(report, host);
        let calls = rendered
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        push_calls(&mut out, &calls);
        out
    })
}

/// The transcript's last part, the calls (`render_streams`' text), after the rest in `out`.
fn push_calls(out: &mut String, calls: &str) {
    let _ = writeln!(out, "\n== calls");
    out.push_str(calls);
}

/// The transcript up to its calls: the header and the report in full.
fn transcript_head(report: &JobReport, host: &HostFingerprint) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "vmfleet transcript v{TRANSCRIPT_VERSION}");
    let _ = writeln!(out, "fleet: {} ({} VMs)", report.fleet, report.vms.len());
    let _ = writeln!(
        out,
        "host: {} {}, {} {} (family {} model {} stepping {}), microcode {}, KVM API {}",
        host.kernel_release,
        host.kvm_module.as_deref().unwrap_or("no-kvm-module"),
        host.cpu_vendor,
        host.cpu_model_name,
        host.cpu_family,
        host.cpu_model,
        host.cpu_stepping,
        host.microcode.as_deref().unwrap_or("unknown"),
        host.kvm_api_version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "unknown".into()),
    );
    for vm in &report.vms {
        let _ = writeln!(
            out,
            "\n== vm{} {}: {}, {} vCPU(s)",
            vm.id,
            vm.name,
            vm.state_label(),
            vm.vcpu_count
        );
        if !vm.requested_hidden.is_empty() {
            let _ = writeln!(
                out,
                "requested: host minus {}",
                vm.requested_hidden.join(", ")
            );
        }
        if let Some(verdict) = vm.template_verdict() {
            super::template_lines(&mut out, &verdict, "");
        }
        if let Some(arm64) = &vm.arm64 {
            arm64_transcript(&mut out, vm, arm64);
            continue;
        }
        x86_transcript(&mut out, vm);
        after_run_transcript(&mut out, &vm.after_run);
    }
    out
}

/// An x86 VM's vCPUs in the transcript: the table the kernel holds, its drift, the hidden
/// features the kernel did not honour, and what the guest saw.
fn x86_transcript(out: &mut String, vm: &VmReport) {
    for v in &vm.vcpus {
        let _ = writeln!(
            out,
            "vcpu{}: kernel holds {} entries (digest {:08x}); {}; {}",
            v.id,
            v.held.len(),
            v.held.digest(),
            v.exits_text(),
            v.end
        );
        for d in v.drift.iter() {
            let _ = writeln!(out, "  drift: {d}");
        }
        if !v.already_absent.is_empty() {
            let _ = writeln!(
                out,
                "  hidden, absent on this host anyway: {}",
                v.already_absent.join(", ")
            );
        }
        if !v.not_honoured.is_empty() {
            let _ = writeln!(
                out,
                "  hidden but NOT honoured by the kernel: {}",
                v.not_honoured.join(", ")
            );
        }
        match &v.guest {
            None => {
                let _ = writeln!(out, "  guest: did not report");
            }
            Some(g) => {
                let _ = writeln!(
                    out,
                    "  guest: {} pass(es){}; {}; {} runtime-managed difference(s)",
                    g.passes,
                    if g.passes_agree {
                        ", all alike".to_string()
                    } else {
                        format!(
                            ", PASSES DIFFER ({} differ from pass 0)",
                            g.differing_passes
                        )
                    },
                    if g.mismatches.is_empty() && g.unseen == 0 {
                        "matches the kernel's table".to_string()
                    } else {
                        format!(
                            "{} mismatch(es), {} entries unseen",
                            g.mismatches.len(),
                            g.unseen
                        )
                    },
                    g.runtime_differences
                );
                for m in &g.mismatches {
                    let _ = writeln!(out, "    mismatch: {m}");
                }
                if !g.hidden_but_visible.is_empty() {
                    let _ = writeln!(
                        out,
                        "    guest still sees hidden: {}",
                        g.hidden_but_visible.join(", ")
                    );
                }
            }
        }
    }
}

/// The after-run writes and how the lock judged them (both architectures).
pub(super) fn after_run_transcript(out: &mut String, after_run: &[AfterRunReport]) {
    for a in after_run {
        let _ = writeln!(
            out,
            "after run, vcpu{} {}: {} (expected {}){}",
            a.vcpu,
            a.action,
            a.outcome.label(),
            a.expected.label(),
            if a.expected == a.outcome {
                ""
            } else {
                "  <-- LOCK RULE VIOLATED"
            }
        );
        if let Some(m) = &a.message {
            for line in m.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        if let Some(c) = &a.cross_check {
            let _ = writeln!(
                out,
                "  cross-check: {}{}",
                c.answer,
                if c.agrees {
                    ""
                } else {
                    "  <-- DISAGREES WITH THE KERNEL"
                }
            );
        }
    }
}
