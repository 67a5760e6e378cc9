//! What a job reports: per VM and per vCPU, what the kernel did with the requested CPU model, what
//! the guest saw, and how the lock judged the after-run writes.
//!
//! Three renderings: the operator's table (`vmfleet run`), the machine's JSON ([`json`], schema
//! [`RUN_SCHEMA`]: `vmfleet run --json` and `vmfleet replay --json`), and the canonical
//! transcript, a text that is a pure function of the job's calls and answers — no times, no
//! sequence numbers, no host addresses — so that a live run and every replay of its trace produce
//! it byte for byte.

use recorder::{Event, HostFingerprint};
use serde::Serialize;
use std::fmt::Write as _;
use vcpu::VmId;
use vcpu::guests::{GuestReport, PassDifference};
use vcpu::model::x86::catalog::Feature;
use vcpu::model::x86::drift::{self, DriftReport, GuestSeen};
use vcpu::model::x86::{CpuidReg, CpuidTable};

/// Version of the transcript layout; bump it when the text changes shape.
pub const TRANSCRIPT_VERSION: u32 = 1;

/// The schema of `vmfleet run --json` and `vmfleet replay --json`
/// (`supervisor/schemas/run.v1.schema.json`). Bump the version when a field changes meaning or
/// goes away; adding a field is not a new version.
pub const RUN_SCHEMA: &str = "vmfleet.run.v1";

/// The report as `vmfleet run --json` prints it: the [`JobReport`] with its `schema`, and each
/// VM's `failed` verdict (the exit status's reason) spelled out. Serialize it with `serde_json`.
#[derive(Serialize)]
pub struct JobJson<'a> {
    pub schema: &'static str,
    pub fleet: &'a str,
    pub vms: Vec<VmJson<'a>>,
}

/// One VM of [`JobJson`].
#[derive(Serialize)]
pub struct VmJson<'a> {
    #[serde(flatten)]
    pub vm: &'a VmReport,
    /// Whether the VM failed: its state, a guest that saw something else than the kernel holds,
    /// or a lock judgement against the rule.
    pub failed: bool,
}

/// [`JobJson`] of `report`.
pub fn json(report: &JobReport) -> JobJson<'_> {
    JobJson {
        schema: RUN_SCHEMA,
        fleet: &report.fleet,
        vms: report
            .vms
            .iter()
            .map(|vm| VmJson {
                vm,
                failed: vm.failed(),
            })
            .collect(),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct JobReport {
    pub fleet: String,
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
    Failed(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct VmReport {
    pub id: u32,
    pub name: String,
    pub vcpu_count: u32,
    pub requested_hidden: Vec<String>,
    pub state: VmState,
    pub vcpus: Vec<VcpuReport>,
    pub after_run: Vec<AfterRunReport>,
    /// The arm64 model: what the kernel offered, each planned write and its verdicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arm64: Option<Arm64VmReport>,
}

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
    pub register: String,
    pub value: u64,
    /// Why it is written (which spec keys).
    pub reason: String,
    /// vmfleet's verdict before the kernel.
    pub verdict: String,
    /// Whether it reached the kernel (vmfleet sends only what it does not refuse).
    pub sent: bool,
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
    pub passes: u64,
    pub registers_read: usize,
    /// Each SMCCC call and its answer.
    pub calls: Vec<String>,
    pub passes_agree: bool,
    /// Where the guest saw something other than the model.
    pub mismatches: Vec<String>,
}

impl Arm64GuestSummary {
    pub fn consistent(&self) -> bool {
        self.mismatches.is_empty() && self.passes_agree
    }
}

impl VmReport {
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
        matches!(self.state, VmState::Failed(_))
            || self
                .vcpus
                .iter()
                .any(|v| v.guest.as_ref().is_some_and(|g| !g.consistent()))
            || self
                .vcpus
                .iter()
                .any(|v| v.arm64_guest.as_ref().is_some_and(|g| !g.consistent()))
            || self.after_run.iter().any(|a| a.expected != a.outcome)
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
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct VcpuReport {
    pub id: u32,
    /// Bits the kernel changed between the requested table and the read-back, by name: one line
    /// per register, as the transcript prints them.
    #[serde(skip)]
    pub drift: Vec<String>,
    /// The same changes as data, one per bit (or per multi-bit value, or per entry): JSON's
    /// `drift`.
    #[serde(rename = "drift")]
    pub drift_changes: Vec<DriftChange>,
    /// Requested-hidden features the kernel still holds as present.
    pub not_honoured: Vec<String>,
    /// Requested-hidden features the host never offered.
    pub already_absent: Vec<String>,
    pub guest: Option<GuestSummary>,
    /// What an arm64 guest saw (arm64 VMs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arm64_guest: Option<Arm64GuestSummary>,
    pub exits: u64,
    /// How the run ended, in full (the transcript's words).
    pub end: String,
    /// How the run ended, in a word (the table's).
    pub run_end: RunEnd,
    #[serde(skip)]
    pub held: CpuidTable,
    #[serde(skip)]
    pub hidden: Vec<&'static Feature>,
}

impl VcpuReport {
    /// Set the drift from the kernel's read-back: the transcript's lines and JSON's data.
    pub fn set_drift(&mut self, report: &DriftReport) {
        self.drift = report.lines();
        self.drift_changes = drift_changes(report);
    }
}

/// Why a CPUID bit or entry differs between the table vmfleet set and the one the kernel holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// The kernel changed the model (nested PVM rewrites leaves 0x1, 0x7, 0xD).
    KernelRewrote,
    /// A bit KVM recomputes from guest state (OSXSAVE, APIC, OSPKE, XSAVE sizes).
    TracksGuestState,
    /// A requested `(leaf, subleaf)` the kernel's table lacks.
    EntryMissing,
    /// A `(leaf, subleaf)` the kernel's table has that was not requested.
    EntryAdded,
}

/// One difference between the CPU model asked for and the one the kernel holds, as data: what
/// `ctl model` sends for either architecture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ModelDrift {
    /// x86: one CPUID bit (or value, or entry).
    X86(DriftChange),
    /// arm64: one register.
    Arm64(Arm64Drift),
}

/// One difference between the requested and the held CPUID table, as data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DriftChange {
    /// `7.0.ebx` (leaf.subleaf.register) or, for a whole entry, `7.0`.
    pub register: String,
    pub leaf: u32,
    pub subleaf: u32,
    /// `eax`, `ebx`, `ecx` or `edx`; `None` for a whole entry.
    pub reg: Option<&'static str>,
    /// The bit, for a one-bit change; `None` for a multi-bit value (a size, a count) or an entry.
    pub bit: Option<u8>,
    /// The bit's name in the feature catalog (`vmfleet host` lists them), if it has one.
    pub feature: Option<&'static str>,
    /// The bit (0 or 1) or, for a multi-bit value, the whole register as requested.
    pub from: Option<u32>,
    /// The bit or register as the kernel holds it.
    pub to: Option<u32>,
    pub kind: DriftKind,
}

/// The changes of a drift report as data: one per changed bit, except where none of a
/// register's changed bits has a name and several changed (a count, a size, an id: one change of
/// the whole value), and one per missing or added entry. Mirrors [`DriftReport::lines`].
pub fn drift_changes(report: &DriftReport) -> Vec<DriftChange> {
    let mut out = Vec::new();
    for d in &report.changed {
        let kind = if d.runtime {
            DriftKind::TracksGuestState
        } else {
            DriftKind::KernelRewrote
        };
        let register = vcpu::model::x86::catalog::position(d.leaf, d.subleaf, d.reg);
        let bits: Vec<u8> = (0..32u8).filter(|b| d.bits & (1 << b) != 0).collect();
        let named = bits
            .iter()
            .any(|&b| vcpu::model::x86::catalog::at(d.leaf, d.subleaf, d.reg, b).is_some());
        if !named && bits.len() > 1 {
            out.push(DriftChange {
                register,
                leaf: d.leaf,
                subleaf: d.subleaf,
                reg: Some(d.reg.name()),
                bit: None,
                feature: None,
                from: Some(d.requested),
                to: Some(d.held),
                kind,
            });
            continue;
        }
        for bit in bits {
            out.push(DriftChange {
                register: register.clone(),
                leaf: d.leaf,
                subleaf: d.subleaf,
                reg: Some(d.reg.name()),
                bit: Some(bit),
                feature: vcpu::model::x86::catalog::at(d.leaf, d.subleaf, d.reg, bit)
                    .map(|f| f.name),
                from: Some((d.requested >> bit) & 1),
                to: Some((d.held >> bit) & 1),
                kind,
            });
        }
    }
    let entries = report
        .missing_entries
        .iter()
        .map(|k| (k, DriftKind::EntryMissing))
        .chain(
            report
                .added_entries
                .iter()
                .map(|k| (k, DriftKind::EntryAdded)),
        );
    for (&(leaf, subleaf), kind) in entries {
        let register =
            vcpu::model::x86::catalog::position(leaf, subleaf, vcpu::model::x86::CpuidReg::Eax);
        out.push(DriftChange {
            register: register
                .rsplit_once('.')
                .map_or(register.clone(), |(entry, _)| entry.to_string()),
            leaf,
            subleaf,
            reg: None,
            bit: None,
            feature: None,
            from: None,
            to: None,
            kind,
        });
    }
    out
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
}

impl RunEnd {
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
        }
    }
}

/// What the guest saw, against the table the kernel holds.
#[derive(Clone, Debug, Serialize)]
pub struct GuestSummary {
    pub passes: u64,
    /// Whether every pass saw the same values (a CPU model must not flicker).
    pub passes_agree: bool,
    /// How many passes saw something other than the first pass.
    pub differing_passes: u64,
    /// Differences with the held table (of the first pass), then one line per pass that differed
    /// from the first (the first few of them).
    pub mismatches: Vec<String>,
    pub unseen: usize,
    pub runtime_differences: usize,
    /// Requested-hidden features the guest still sees.
    pub hidden_but_visible: Vec<String>,
}

impl GuestSummary {
    /// Check the guest's first complete pass against the `held` table (and the `hidden`
    /// features), and every later pass against the first.
    pub fn from_report(
        held: &CpuidTable,
        report: &GuestReport,
        hidden: &[&'static Feature],
    ) -> Self {
        if report.passes == 0 {
            return GuestSummary {
                passes: 0,
                passes_agree: true,
                differing_passes: 0,
                mismatches: vec!["the guest reported nothing".into()],
                unseen: held.len(),
                runtime_differences: 0,
                hidden_but_visible: Vec::new(),
            };
        }
        let check = drift::check_guest_view(held, &report.first_pass, hidden);
        let mut mismatches = check.mismatches.clone();
        mismatches.extend(report.first_differences.iter().map(describe_difference));
        GuestSummary {
            passes: report.passes,
            passes_agree: report.passes_agree(),
            differing_passes: report.differing_passes,
            mismatches,
            unseen: check.unseen.len(),
            runtime_differences: check.runtime_differences,
            hidden_but_visible: check
                .hidden_but_visible
                .iter()
                .map(|f| f.name.to_string())
                .collect(),
        }
    }

    /// The guest saw exactly what the kernel holds (runtime bits aside), every pass alike.
    pub fn consistent(&self) -> bool {
        self.passes > 0 && self.passes_agree && self.mismatches.is_empty() && self.unseen == 0
    }
}

/// `pass 3 saw 0x7.0 ebx=0x00000001 where pass 0 saw ebx=0x00000000`: the registers of the first
/// point where a later pass differed from the first.
fn describe_difference(d: &PassDifference) -> String {
    let regs = |seen: &GuestSeen| {
        CpuidReg::ALL
            .iter()
            .filter(|&&reg| d.first.reg(reg) != d.seen.reg(reg))
            .map(|&reg| format!("{reg}={:#010x}", seen.reg(reg)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "pass {} saw {:#x}.{} {} where pass 0 saw {}",
        d.pass,
        d.seen.leaf,
        d.seen.subleaf,
        regs(&d.seen),
        regs(&d.first)
    )
}

/// How an after-run write was judged (JSON: `allowed`, `refused_by_lock`, `refused_by_kernel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allowed,
    RefusedByLock,
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

#[derive(Clone, Debug, Serialize)]
pub struct AfterRunReport {
    pub vcpu: u32,
    pub action: String,
    pub expected: Verdict,
    pub outcome: Verdict,
    pub message: Option<String>,
}

// ---- the operator's table -------------------------------------------------------------------

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
    out
}

/// An arm64 VM's model writes in a word: how many went to the kernel, how many vmfleet refused,
/// and any the kernel held differently or answered otherwise than vmfleet predicted.
fn arm64_writes_cell(arm64: &Arm64VmReport) -> String {
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

// ---- the canonical transcript -----------------------------------------------------------------

/// The transcript: the report in full, then every call per stream.
pub fn transcript(report: &JobReport, host: &HostFingerprint, events: &[Event]) -> String {
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
        if let Some(arm64) = &vm.arm64 {
            arm64_transcript(&mut out, vm, arm64);
            continue;
        }
        for v in &vm.vcpus {
            let _ = writeln!(
                out,
                "vcpu{}: kernel holds {} entries (digest {:08x}); {} exits; {}",
                v.id,
                v.held.len(),
                v.held.digest(),
                v.exits,
                v.end
            );
            for d in &v.drift {
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
        after_run_transcript(&mut out, &vm.after_run);
    }
    let _ = writeln!(out, "\n== calls");
    out.push_str(&recorder::render_streams(events));
    out
}

/// An arm64 VM's part of the transcript: the model's configuration, then each vCPU's guest view.
fn arm64_transcript(out: &mut String, vm: &VmReport, arm64: &Arm64VmReport) {
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
        let _ = writeln!(out, "vcpu{}: {} exits; {}", v.id, v.exits, v.end);
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

fn after_run_transcript(out: &mut String, after_run: &[AfterRunReport]) {
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
    }
}

#[cfg(test)]
mod tests;
