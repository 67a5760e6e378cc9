//! The x86 half of the guest seam: the CPU model (the spec's hidden features applied to the
//! host's supported CPUID table, written to every vCPU through the lock and read back, with its
//! drift), the probe guest (loaded with vCPU 0's held table, run by `runner::run_controlled`),
//! judging what the guest saw, the after-run writes (`hide`, `rewrite-identical`) and the
//! per-vCPU view `model` answers.

use super::shared::SharedModels;
use super::{VmParts, placement, refusal_text};
use crate::fleet::error::{AfterRunError, ConfigureError, StartError};
use crate::fleet::lifecycle::{ModelDrifts, VcpuModelView};
use crate::report::{AfterRunReport, GuestSummary, RunEnd, VcpuReport, Verdict, VmReport};
use crate::spec::AfterRun;
use std::sync::Arc;
use vcpu::guests::x86 as guest;
use vcpu::hypervisor::cpuid::CpuidTable;
use vcpu::model::x86::{catalog as features, drift};
use vcpu::runtime::runner::{self, Probe, ProbeOutcome, VcpuNotice};
use vcpu::{RunControl, VcpuHandle};

/// Why `set-model` with arm64 writes does not apply to an x86 VM (the reply puts the VM's name
/// in front).
pub(super) const SET_MODEL_REFUSED: &str = "set-model --set writes arm64 registers; an x86 \
     VM's model is changed with --hide";

/// Where guest memory starts, and the least there is of it.
pub(super) const MEMORY: (u64, u64) = (0, guest::MEMORY_SIZE);

/// The x86 state of one VM.
#[derive(Default)]
pub(in crate::fleet) struct X86Guest {
    /// Drift lines not worked out yet: (vCPU index, the table that was requested, interned).
    /// They are the costliest CPU work of configuring a VM, and nothing on the way to its first
    /// exit needs them, so they are worked out when first read ([`X86Guest::finish_drift`]), or
    /// found worked out by an earlier VM of the fleet with the same tables.
    pending_drift: Vec<(usize, Arc<CpuidTable>)>,
}

impl X86Guest {
    /// The spec's model, written to every vCPU. A lock refusal fails with its recorded words.
    pub(super) fn configure(&mut self, vm: VmParts<'_>) -> Result<(), ConfigureError> {
        let hide = vm.spec.cpu.hide.clone();
        self.apply_model(vm, &hide, false)
    }

    /// Write the model that hides `hide` to every vCPU, through the lock, and refresh the report.
    /// `identical_if_unchanged`: when `hide` is the current model, rewrite what the kernel holds
    /// (an identical write, which the lock allows after the first run) rather than rebuilding it
    /// from the supported table (which the host may have rewritten).
    pub(super) fn apply_model(
        &mut self,
        vm: VmParts<'_>,
        hide: &[String],
        identical_if_unchanged: bool,
    ) -> Result<(), ConfigureError> {
        let unchanged = identical_if_unchanged && hide == vm.spec.cpu.hide.as_slice();
        let supported = vm.supported.supported_cpuid()?;
        let model = vm.spec.cpu.model_hiding(hide);
        let mut reports = Vec::with_capacity(vm.vcpus.len());
        let mut pending = Vec::with_capacity(vm.vcpus.len());
        for (index, vcpu) in vm.vcpus.iter().enumerate() {
            let requested = model
                .build(&supported, index as u32, vm.spec.vcpus)
                .map_err(|source| ConfigureError::CpuModel {
                    vm: vm.vm.id(),
                    vcpu: vcpu.id(),
                    source,
                })?;
            let table = match (unchanged, vm.report.vcpus.get(index)) {
                (true, Some(current)) => &current.held,
                _ => &requested.table,
            };
            let write = vcpu.set_cpuid(table).map_err(|e| match &e.source {
                vcpu::CallError::Refused(refusal) => ConfigureError::Refused {
                    vm: vm.spec.name.clone(),
                    shown: refusal.to_string(),
                    recorded: refusal.recorded(),
                },
                _ => ConfigureError::Call(e),
            })?;
            let hidden = requested.hidden;
            let previous = vm.report.vcpus.get(index);
            pending.push((index, vm.shared.table(requested.table)));
            reports.push(VcpuReport {
                id: index as u32,
                drift: Arc::new([]),
                drift_changes: Arc::new([]),
                not_honoured: drift::not_honoured(&hidden, &write.held)
                    .iter()
                    .map(|f| f.name.to_string())
                    .collect(),
                already_absent: requested
                    .already_absent
                    .iter()
                    .map(|f| f.name.to_string())
                    .collect(),
                held: vm.shared.table(write.held),
                hidden,
                guest: previous.and_then(|p| p.guest.clone()),
                arm64_guest: None,
                exits: previous.map_or(0, |p| p.exits),
                exits_counted: previous.map_or(0, |p| p.exits_counted),
                run_end: previous.map_or(RunEnd::NotStarted, |p| p.run_end),
                end: previous.map_or_else(|| "not started".into(), |p| p.end.clone()),
            });
        }
        vm.report.vcpus = reports;
        self.pending_drift = pending;
        vm.report.requested_hidden = hide.to_vec();
        vm.spec.cpu.hide = hide.to_vec();
        Ok(())
    }

    /// Work out the drift lines still pending (see `pending_drift`), or take them from the
    /// fleet's `shared` when a VM before this one had the same tables.
    pub(super) fn finish_drift(&mut self, shared: &SharedModels, report: &mut VmReport) {
        for (index, requested) in std::mem::take(&mut self.pending_drift) {
            if let Some(vcpu) = report.vcpus.get_mut(index) {
                let drift = shared.drift(&requested, &vcpu.held);
                vcpu.drift = drift.lines;
                vcpu.drift_changes = drift.changes;
            }
        }
    }
}

/// What an x86 vCPU thread runs: the probe guest over these points.
#[derive(Clone, Debug)]
pub(in crate::fleet) struct Launch {
    points: Vec<(u32, u32)>,
    repeats: u32,
    exit_budget: Option<u64>,
    record_exits: Option<u64>,
    pub(super) pause_at_first_exit: bool,
}

impl Launch {
    pub(super) fn run(
        self,
        vcpu: &VcpuHandle,
        control: &RunControl,
        notify: &mut dyn FnMut(VcpuNotice),
    ) -> ProbeOutcome {
        let probe = Probe {
            points: &self.points,
            repeats: self.repeats,
            exit_budget: self.exit_budget,
            record_exits: self.record_exits,
            pause_at_first_exit: self.pause_at_first_exit,
        };
        runner::run_controlled(vcpu, &probe, control, notify)
    }
}

/// Load the x86 probe guest with vCPU 0's table, place every vCPU at its entry.
pub(super) fn load(vm: VmParts<'_>, pause_at_first_exit: bool) -> Result<Launch, StartError> {
    let points = vm
        .report
        .vcpus
        .first()
        .map(|v| v.held.probe_points())
        .unwrap_or_default();
    let repeats = vm.spec.probe_repeats;
    let program = guest::GuestProgram {
        points: &points,
        repeats,
        fault_after: vm.spec.fault_after_passes.unwrap_or(0),
    };
    vm.vm
        .with_memory(|mem| guest::load_with(mem, &program, placement(vm.hv)))
        .map_err(|e| StartError::Load(Arc::new(e)))?;
    for vcpu in vm.vcpus {
        vcpu.set_boot_state(guest::ENTRY)?;
    }
    // A finite guest gets a budget a little above what its passes need; a guest that repeats
    // forever runs until it is stopped.
    let exit_budget = exit_budget(&program);
    Ok(Launch {
        points,
        repeats,
        exit_budget,
        record_exits: vm.spec.record_exits,
        pause_at_first_exit,
    })
}

/// The exits a guest running `program` needs, with room to spare for kicks: every pass is
/// `PASS_BEGIN`, six `OUT`s per point and `PASS_END`, and one final exit (`HLT` or the fault).
/// `None` (no budget) for a guest that repeats forever and never faults.
pub(super) fn exit_budget(program: &guest::GuestProgram<'_>) -> Option<u64> {
    let per_pass = 6 * program.points.len() as u64 + 2;
    program
        .passes()
        .map(|passes| u64::from(passes) * per_pass + 16)
}

/// What the probe guest saw, against the table the vCPU holds.
pub(super) fn judge(outcome: &ProbeOutcome, saw_nothing: bool, report: &mut VcpuReport) {
    report.guest = (!saw_nothing)
        .then(|| GuestSummary::from_report(&report.held, &outcome.report, &report.hidden));
}

/// Attempt one after-run write and judge it against the lock's rule.
pub(super) fn try_after_run(
    vcpu: &VcpuHandle,
    action: &AfterRun,
) -> Result<AfterRunReport, AfterRunError> {
    let held = vcpu.get_cpuid()?;
    let (label, table) = match action {
        AfterRun::SetField { .. } => {
            return Err(AfterRunError::OtherArch {
                action: "set",
                arch: "arm64",
            });
        }
        AfterRun::RewriteIdentical { .. } => ("rewrite identical".to_string(), held.clone()),
        AfterRun::Hide {
            features: names, ..
        } => {
            let mut table = held.clone();
            for name in names {
                if let Some(f) = features::by_name(name) {
                    if let Some(entry) = table.lookup_mut(f.leaf, f.subleaf) {
                        *entry.reg_mut(f.reg) &= !(1u32 << f.bit);
                    }
                }
            }
            (format!("hide {}", names.join(",")), table)
        }
    };
    // The lock's rule: a write identical to what the kernel holds is allowed, anything else is
    // refused. Hiding a feature the kernel already hides is identical, hence allowed.
    let expected = if table == held {
        Verdict::Allowed
    } else {
        Verdict::RefusedByLock
    };
    let (outcome, message) = match vcpu.set_cpuid(&table) {
        Ok(_) => (Verdict::Allowed, None),
        Err(e) if e.is_lock_refusal() => (Verdict::RefusedByLock, Some(refusal_text(&e))),
        Err(e) => (Verdict::RefusedByKernel, Some(e.to_string())),
    };
    Ok(AfterRunReport {
        vcpu: vcpu.id().0,
        action: label,
        expected,
        outcome,
        message,
        cross_check: None,
    })
}

/// What `model` answers about one x86 vCPU: its held table's size and digest, its drift.
pub(super) fn view(v: &VcpuReport) -> VcpuModelView {
    VcpuModelView {
        vcpu: v.id,
        entries: v.held.len(),
        digest: format!("{:08x}", v.held.digest()),
        drift: Arc::clone(&v.drift),
        drift_changes: ModelDrifts::X86(Arc::clone(&v.drift_changes)),
        not_honoured: v.not_honoured.clone(),
        already_absent: v.already_absent.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_budget_covers_the_passes_the_guest_runs() {
        let points = [(0, 0), (1, 0)];
        let program = |repeats, fault_after| guest::GuestProgram {
            points: &points,
            repeats,
            fault_after,
        };
        // 2 points: 14 exits a pass, plus room for the final exit and kicks.
        assert_eq!(exit_budget(&program(1, 0)), Some(14 + 16));
        assert_eq!(exit_budget(&program(3, 0)), Some(3 * 14 + 16));
        // A fault bounds a guest that would otherwise repeat forever, or cuts it short.
        assert_eq!(exit_budget(&program(0, 2)), Some(2 * 14 + 16));
        assert_eq!(exit_budget(&program(5, 2)), Some(2 * 14 + 16));
        // Forever without a fault: no budget.
        assert_eq!(exit_budget(&program(0, 0)), None);
    }
}
