//! The arm64 parts of a report: what configuring an arm64 VM's model did (each planned register
//! write, vmfleet's verdict and the kernel's), what its guest saw, and how both read in the
//! operator's table and in the transcript. Apart from the x86 parts because an arm64 VM reports
//! a different model (registers and their writes, not a CPUID table).

use super::transcript::after_run_transcript;
use super::{DriftKind, VmReport};
use serde::Serialize;
use std::fmt::Write as _;

/// What configuring an arm64 VM's model did.
#[derive(Clone, Debug, Serialize)]
pub struct Arm64VmReport {
    /// The `KVM_ARM_VCPU_INIT` features.
    pub features: Vec<String>,
    /// Ids `KVM_GET_REG_LIST` gave.
    pub registers_listed: usize,
    /// Model registers read before any write (the limits).
    pub registers_read: usize,
    /// Where the writable masks came from.
    pub masks: String,
    /// Every planned write: vmfleet's verdict, and what happened.
    pub writes: Vec<Arm64WriteReport>,
    /// Registers the spec names that already hold what it asks.
    pub unchanged: Vec<String>,
    /// The unknown-register policy (`clear`, `keep-host`, `refuse`).
    pub unknown_policy: String,
    /// The unknown-register policy's decisions.
    pub unknown: Vec<String>,
    /// Where what the kernel holds differs from what vmfleet expected it to read back.
    pub drift: Vec<Arm64Drift>,
}

/// An arm64 register that holds something other than what vmfleet expected to read back after
/// its write (the transcript prints it as a line, JSON as data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Arm64Drift {
    /// The register's name (`ID_AA64PFR0_EL1`).
    pub register: String,
    /// What vmfleet expected to read back after the write.
    pub from: u64,
    /// What the kernel holds.
    pub to: u64,
    /// Always `kernel_rewrote` (the same spelling as x86 drift).
    pub kind: DriftKind,
}

impl std::fmt::Display for Arm64Drift {
    /// `ID_AA64PFR0_EL1: expected 0x… after the write, the kernel holds 0x…`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: expected {:#018x} after the write, the kernel holds {:#018x}",
            self.register, self.from, self.to
        )
    }
}

impl Arm64VmReport {
    /// A write vmfleet predicted accepted that the kernel refused (or the reverse).
    pub fn disagreements(&self) -> usize {
        self.writes.iter().filter(|w| !w.agrees).count()
    }
}

/// One planned arm64 register write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Arm64WriteReport {
    /// The register's name (`ID_AA64PFR0_EL1`).
    pub register: String,
    /// The value written.
    pub value: u64,
    /// Why it is written (which spec keys).
    pub reason: String,
    /// vmfleet's verdict before the kernel.
    pub verdict: String,
    /// Whether it reached the kernel (vmfleet sends only what it does not refuse).
    pub sent: bool,
    /// What happened to it (the kernel's answer, or vmfleet's refusal).
    pub outcome: String,
    /// vmfleet's verdict and the kernel's answer agree (for a refused write: on the scratch VM
    /// of a cross-check, when there was one).
    pub agrees: bool,
    /// The kernel's own verdict on a write vmfleet refused, from a scratch VM (`cross_check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_check: Option<String>,
}

/// What an arm64 guest saw, judged against its model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Arm64GuestSummary {
    /// Complete passes of the guest's probe.
    pub passes: u64,
    /// Model registers the guest read (each pass).
    pub registers_read: usize,
    /// Each SMCCC call and its answer.
    pub calls: Vec<String>,
    /// Whether every pass saw the same values.
    pub passes_agree: bool,
    /// Where the guest saw something other than the model.
    pub mismatches: Vec<String>,
}

impl Arm64GuestSummary {
    /// The guest saw its model, every pass alike.
    pub fn consistent(&self) -> bool {
        self.mismatches.is_empty() && self.passes_agree
    }
}

/// An arm64 VM's model writes in a word: how many went to the kernel, how many vmfleet refused,
/// and any the kernel held differently or answered otherwise than vmfleet predicted.
pub(super) fn arm64_writes_cell(arm64: &Arm64VmReport) -> String {
    let sent = arm64.writes.iter().filter(|w| w.sent).count();
    let refused = arm64.writes.len() - sent;
    let mut parts = vec![format!("{sent} written")];
    if refused > 0 {
        parts.push(format!("{refused} refused"));
    }
    if !arm64.drift.is_empty() {
        parts.push(format!("{} drifted", arm64.drift.len()));
    }
    if arm64.disagreements() > 0 {
        parts.push(format!("{} DISAGREE", arm64.disagreements()));
    }
    parts.join(", ")
}

/// An arm64 VM's part of the transcript: the model's configuration, then each vCPU's guest view.
pub(super) fn arm64_transcript(out: &mut String, vm: &VmReport, arm64: &Arm64VmReport) {
    let _ = writeln!(
        out,
        "arm64: features {}; {} registers listed, {} model registers read; writable masks: {}",
        if arm64.features.is_empty() {
            "none".to_string()
        } else {
            arm64.features.join(", ")
        },
        arm64.registers_listed,
        arm64.registers_read,
        arm64.masks
    );
    for w in &arm64.writes {
        let _ = writeln!(
            out,
            "write {} = {:#018x} ({}): vmfleet: {}; {}{}{}",
            w.register,
            w.value,
            w.reason,
            w.verdict,
            w.outcome,
            w.cross_check
                .as_ref()
                .map(|c| format!("; cross-check on a scratch VM: {c}"))
                .unwrap_or_default(),
            if w.agrees {
                ""
            } else {
                "  <-- VMFLEET AND THE KERNEL DISAGREE"
            }
        );
    }
    for u in &arm64.unchanged {
        let _ = writeln!(out, "unchanged: {u}");
    }
    if arm64.unknown.is_empty() {
        let _ = writeln!(
            out,
            "unknown registers (policy {}): the kernel listed none vmfleet does not know",
            arm64.unknown_policy
        );
    }
    for u in &arm64.unknown {
        let _ = writeln!(
            out,
            "unknown register (policy {}): {u}",
            arm64.unknown_policy
        );
    }
    for d in &arm64.drift {
        let _ = writeln!(out, "drift: {d}");
    }
    for v in &vm.vcpus {
        let _ = writeln!(out, "vcpu{}: {}; {}", v.id, v.exits_text(), v.end);
        match &v.arm64_guest {
            None => {
                let _ = writeln!(out, "  guest: did not report");
            }
            Some(g) => {
                let _ = writeln!(
                    out,
                    "  guest: {} pass(es){}; read {} registers; {}",
                    g.passes,
                    if g.passes_agree {
                        ", all alike"
                    } else {
                        ", PASSES DIFFER"
                    },
                    g.registers_read,
                    if g.mismatches.is_empty() {
                        "matches the model".to_string()
                    } else {
                        format!("{} mismatch(es)", g.mismatches.len())
                    }
                );
                for c in &g.calls {
                    let _ = writeln!(out, "    call {c}");
                }
                for m in &g.mismatches {
                    let _ = writeln!(out, "    mismatch: {m}");
                }
            }
        }
    }
    after_run_transcript(out, &vm.after_run);
}
