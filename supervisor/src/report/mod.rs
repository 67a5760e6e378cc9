//! What a job reports: per VM and per vCPU, what the kernel did with the requested CPU model, what
//! the guest saw, and how the lock judged the after-run writes.
//!
//! Three renderings: the operator's table (`vmfleet run`), the machine's JSON ([`json()`], schema
//! [`RUN_SCHEMA`]: `vmfleet run --json` and `vmfleet replay --json`), and the canonical
//! transcript, a text that is a pure function of the job's calls and answers — no times, no
//! sequence numbers, no host addresses — so that a live run and every replay of its trace produce
//! it byte for byte.
//!
//! The data model is here; each rendering and the arm64 parts have a module of their own:
//! `json` (the `--json` shape), `table` (the operator's table), `transcript` (the canonical
//! text), `changes` (drift as data), `guest` (what an x86 guest saw) and `arm64` (the arm64 model's
//! report, its table cell and transcript section).

use serde::Serialize;
use std::sync::Arc;
use vcpu::VmId;
use vcpu::hypervisor::cpuid::CpuidTable;
use vcpu::model::x86::catalog::Feature;
use vcpu::model::x86::drift::DriftReport;

mod arm64;
mod changes;
mod guest;
mod json;
mod table;
mod template;
mod transcript;

pub use arm64::{Arm64Drift, Arm64GuestSummary, Arm64VmReport, Arm64WriteReport};
pub use changes::{DriftChange, DriftKind, ModelDrift, drift_changes};
pub use guest::GuestSummary;
pub use json::{JobJson, RUN_SCHEMA, VmJson, json};
pub use table::{table, table_colored};
pub use template::{TemplateUse, TemplateVerdict, template_lines};
pub use transcript::{TRANSCRIPT_VERSION, transcript, transcript_folded};

/// What a job did: every VM of the fleet, in fleet order.
#[derive(Clone, Debug, Serialize)]
pub struct JobReport {
    /// The fleet's name.
    pub fleet: String,
    /// Every VM.
    pub vms: Vec<VmReport>,
}

impl JobReport {
    /// Whether any VM failed (the process exit status).
    pub fn any_failed(&self) -> bool {
        self.vms.iter().any(VmReport::failed)
    }
}

/// How a VM's life ended. In JSON: `{"status": "completed"}`, `{"status": "stopped"}` or
/// `{"status": "failed", "detail": "why"}` (the same shape as a bench verdict).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
pub enum VmState {
    /// Every guest ran to its end and halted.
    Completed,
    /// Stopped by request before its guests halted (not a failure).
    Stopped,
    /// Removed before it was started: no vCPU ever ran (not a failure).
    RemovedBeforeStart,
    /// It failed (why): to come up, to configure its model, or a vCPU's run.
    Failed(String),
    /// `run --model`: its CPU model was set up on the model of a host and it reached its first
    /// `KVM_RUN`, where the model stops (it runs no guests). Not a failure.
    AtFirstRun,
}

/// What one VM did: how its life ended, each vCPU's model and run, and the after-run writes.
#[derive(Clone, Debug, Serialize)]
pub struct VmReport {
    /// Its index in the fleet ([`VmId`]).
    pub id: u32,
    /// Its name.
    pub name: String,
    /// How many vCPUs it has.
    pub vcpu_count: u32,
    /// The features its spec hides (x86), catalog names.
    pub requested_hidden: Vec<String>,
    /// How its life ended.
    pub state: VmState,
    /// Each vCPU, in vCPU order.
    pub vcpus: Vec<VcpuReport>,
    /// Each after-run write and how the lock judged it.
    pub after_run: Vec<AfterRunReport>,
    /// The arm64 model: what the kernel offered, each planned write and its verdicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arm64: Option<Arm64VmReport>,
    /// The CPU template the model comes from (JSON: `template`, the verdict).
    #[serde(skip)]
    pub template: Option<TemplateUse>,
}

impl VmReport {
    /// The report of the VM `id` of `spec` before anything happened to it: completed, no vCPU.
    pub fn new(id: VmId, spec: &crate::spec::VmSpec) -> Self {
        VmReport {
            id: id.0,
            name: spec.name.clone(),
            vcpu_count: spec.vcpus,
            requested_hidden: spec.cpu.hide.clone(),
            state: VmState::Completed,
            vcpus: Vec::new(),
            after_run: Vec::new(),
            arm64: None,
            template: TemplateUse::of(spec),
        }
    }

    /// Record a failure unless an earlier one is already recorded (the first cause matters most).
    pub fn fail_if_ok(&mut self, why: String) {
        if !matches!(self.state, VmState::Failed(_)) {
            self.state = VmState::Failed(why);
        }
    }

    /// Failed: its lifecycle broke, the guest saw something other than what the kernel holds, or
    /// the lock judged a write differently from its rule.
    pub fn failed(&self) -> bool {
        // A VM stopped at its first run (`run --model`) ran no guest: there is no guest view to
        // judge, only its CPU model.
        let guests_ran = self.state != VmState::AtFirstRun;
        matches!(self.state, VmState::Failed(_))
            || guests_ran
                && self
                    .vcpus
                    .iter()
                    .any(|v| v.guest.as_ref().is_some_and(|g| !g.consistent()))
            || guests_ran
                && self
                    .vcpus
                    .iter()
                    .any(|v| v.arm64_guest.as_ref().is_some_and(|g| !g.consistent()))
            || self.after_run.iter().any(|a| {
                a.expected != a.outcome || a.cross_check.as_ref().is_some_and(|c| !c.agrees)
            })
            || self.arm64.as_ref().is_some_and(|a| a.disagreements() > 0)
    }

    fn state_label(&self) -> String {
        match &self.state {
            VmState::Failed(why) => format!("FAILED: {why}"),
            VmState::Completed if self.failed() => "FAILED: checks".into(),
            VmState::Completed => "completed".into(),
            VmState::Stopped if self.failed() => "FAILED: checks".into(),
            VmState::Stopped => "stopped".into(),
            VmState::RemovedBeforeStart if self.failed() => "FAILED: checks".into(),
            VmState::RemovedBeforeStart => "removed before start".into(),
            VmState::AtFirstRun if self.failed() => "FAILED: checks".into(),
            VmState::AtFirstRun => "at its first KVM_RUN (the model runs no guests)".into(),
        }
    }
}

/// What one vCPU did: the CPU model the kernel holds against the one requested, what the guest
/// saw, and how its run ended.
#[derive(Clone, Debug, Serialize)]
pub struct VcpuReport {
    /// Its index in the VM.
    pub id: u32,
    /// Bits the kernel changed between the requested table and the read-back, by name: one line
    /// per register, as the transcript prints them. Shared by every vCPU of the fleet with the
    /// same requested and held tables (the fleet works them out once).
    #[serde(skip)]
    pub drift: Arc<[String]>,
    /// The same changes as data, one per bit (or per multi-bit value, or per entry): JSON's
    /// `drift`. Shared like `drift`.
    #[serde(rename = "drift")]
    pub drift_changes: Arc<[DriftChange]>,
    /// Requested-hidden features the kernel still holds as present.
    pub not_honoured: Vec<String>,
    /// Requested-hidden features the host never offered.
    pub already_absent: Vec<String>,
    /// What an x86 guest saw (`None`: it did not report).
    pub guest: Option<GuestSummary>,
    /// What an arm64 guest saw (arm64 VMs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arm64_guest: Option<Arm64GuestSummary>,
    /// Guest exits the vCPU took.
    pub exits: u64,
    /// Of `exits`, those past the VM's `record_exits` budget: counted, not decoded.
    pub exits_counted: u64,
    /// How the run ended, in full (the transcript's words).
    pub end: String,
    /// How the run ended, in a word (the table's).
    pub run_end: RunEnd,
    /// The CPUID table the kernel holds (x86), read back after the write (the transcript
    /// prints its size and digest). One copy per fleet of each table held.
    #[serde(skip)]
    pub held: Arc<CpuidTable>,
    /// The catalog features the spec hides (x86), against which the guest's view is checked.
    #[serde(skip)]
    pub hidden: Vec<&'static Feature>,
}

impl VcpuReport {
    /// `N exits`, and when some were past the `record_exits` budget how many: the transcript's
    /// words for both arches.
    pub fn exits_text(&self) -> String {
        if self.exits_counted == 0 {
            return format!("{} exits", self.exits);
        }
        format!(
            "{} exits ({} beyond the record_exits budget: counted, not decoded)",
            self.exits, self.exits_counted
        )
    }

    /// Set the drift from the kernel's read-back: the transcript's lines and JSON's data.
    pub fn set_drift(&mut self, report: &DriftReport) {
        self.drift = report.lines().into();
        self.drift_changes = drift_changes(report).into();
    }
}

/// How a vCPU's run of the guest ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// The VM failed before the vCPU ran.
    NotStarted,
    /// The guest halted after its last pass.
    Halted,
    /// The guest crashed (a triple fault, or KVM could not go on).
    GuestFault,
    /// The guest's exits broke the report protocol.
    ProtocolError,
    /// A backend call failed.
    CallFailed,
    /// The exit budget ran out before the guest halted.
    ExitBudget,
    /// The vCPU's thread panicked.
    ThreadPanicked,
    /// The control plane stopped the vCPU.
    Stopped,
    /// The guest ended past its `record_exits` budget, where exits are counted, not decoded.
    EndedBeyondBudget,
}

impl RunEnd {
    /// The end in a word or two (the table's `guest end` column).
    pub fn label(self) -> &'static str {
        match self {
            RunEnd::NotStarted => "not started",
            RunEnd::Halted => "halted",
            RunEnd::GuestFault => "guest fault",
            RunEnd::ProtocolError => "protocol error",
            RunEnd::CallFailed => "call failed",
            RunEnd::ExitBudget => "exit budget",
            RunEnd::ThreadPanicked => "thread panicked",
            RunEnd::Stopped => "stopped",
            RunEnd::EndedBeyondBudget => "ended beyond budget",
        }
    }
}

/// How an after-run write was judged (JSON: `allowed`, `refused_by_lock`, `refused_by_kernel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The write went through.
    Allowed,
    /// vmfleet's pre-run lock refused it (the VM has run).
    RefusedByLock,
    /// The kernel refused it.
    RefusedByKernel,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::RefusedByLock => "refused by vmfleet lock",
            Verdict::RefusedByKernel => "refused by kernel",
        }
    }
}

/// One after-run write: what the lock's rule expects, and what happened.
#[derive(Clone, Debug, Serialize)]
pub struct AfterRunReport {
    /// The vCPU written.
    pub vcpu: u32,
    /// The action in words (`rewrite identical`, `hide avx2`, `set ID_AA64PFR0_EL1.CSV3 = 0x0`).
    pub action: String,
    /// The lock's rule: allowed if identical to what the kernel holds, else refused by the lock.
    pub expected: Verdict,
    /// What happened.
    pub outcome: Verdict,
    /// The refusal's text, for a refused write.
    pub message: Option<String>,
    /// With `cross_check`, for a write the lock refused: the kernel's own answer on a scratch
    /// VM that has run. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_check: Option<AfterRunCrossCheck>,
}

/// The kernel's answer to an after-run write the lock refused, asked on a scratch VM that has
/// run.
#[derive(Clone, Debug, Serialize)]
pub struct AfterRunCrossCheck {
    /// The kernel's answer in words.
    pub answer: String,
    /// Whether it agrees with the lock: the same errno, or a change the kernel takes where the
    /// lock is stricter than this kernel by design.
    pub agrees: bool,
}

#[cfg(test)]
mod tests;
