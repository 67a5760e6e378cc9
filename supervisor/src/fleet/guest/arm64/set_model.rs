//! `vmfleet ctl set-model VM --set …` on an arm64 VM: the request's field and register writes,
//! made full-register values over what vCPU 0 holds (after the first run: what the kernel holds
//! now, read again), judged, written to every vCPU through the
//! lock, and read back into the held model the `model` view and the guest checks use.
//!
//! Before the first run every write is judged by the arm64 model against the host view the VM
//! was planned with (the planner's verdict, [`vcpu::model::arm64::model::judge`]); one refusal
//! refuses the whole request, before anything is written, so a request is all or nothing. After
//! the first run the lock judges each write (`judge_after_run`, through the handle): only a
//! write identical to what the VM holds passes, any change is refused with the kernel's errno
//! or `EBUSY`. A write vmfleet cannot judge (a newer kernel's firmware register) goes to the
//! kernel, which decides. Each write reaches every vCPU, MPIDR_EL1 and CLIDR_EL1 included
//! (per-vCPU registers get the same value). A write refused only because the EL0/EL1 floor was
//! not measured asks the kernel first (the fleet's probe, once per fleet) and is judged again.

use super::after_run::judged as judged_after_run;
use super::{Arm64Vm, Measure, Probing, measure_into};
use crate::fleet::error::ConfigureError;
use crate::report::Arm64WriteReport;
use std::sync::Arc;
use vcpu::model::arm64::model::Assignments;
use vcpu::model::arm64::model::judge;
use vcpu::model::arm64::{Arm64Refusal, Arm64Rule, Verdict, reg_id};
use vcpu::{HandleError, Seal, VcpuHandle, VmHandle};

/// What a refusal for want of capability 239 means for a VM that exists: the capability can only
/// be enabled before the VM's first vCPU.
fn explained(refusal: &Arm64Refusal) -> Arm64Refusal {
    if refusal.rule != Arm64Rule::ImplementationIdNotWritable {
        return refusal.clone();
    }
    refusal.clone().with_hint(Some(
        "this VM was created without KVM_CAP_ARM_WRITABLE_IMP_ID_REGS (239), which can only be \
         enabled before its first vCPU; vmfleet enables it when the VM's spec changes \
         MIDR_EL1, REVIDR_EL1 or AIDR_EL1 and the host offers it (Linux 6.15 and later)"
            .to_string(),
    ))
}

/// The planner's verdict on one write before the first run; a refusal only for want of a
/// kernel probe's measurement measures it (once per fleet) into the VM's host view and the
/// lock's, and judges again.
fn judged_measured(
    id: u64,
    value: u64,
    state: &mut Arm64Vm,
    measure: Measure<'_>,
    vm: &VmHandle,
) -> Result<Verdict, ConfigureError> {
    let verdict = judge(id, value, &state.host, state.features);
    let Some(probe) = verdict.refusal().and_then(|r| r.rule.unmeasured_probe()) else {
        return Ok(verdict);
    };
    if state.host.probes.is_measured(probe)
        || !measure_into(&[probe], measure, &mut state.host.probes)?
    {
        return Ok(verdict);
    }
    // The host's answer, for the lock too: after the run it judges by the same view.
    vm.learn_kernel_probes(&state.host.probes);
    Ok(judge(id, value, &state.host, state.features))
}

/// A lock refusal as the reply shows it and as the trace records it.
fn refused(vm: &str, e: &HandleError) -> Option<ConfigureError> {
    match &e.source {
        vcpu::CallError::Refused(refusal) => Some(ConfigureError::Refused {
            vm: vm.to_string(),
            shown: refusal.to_string(),
            recorded: refusal.recorded(),
        }),
        _ => None,
    }
}

/// Carry out `writes` on every vCPU of the VM called `name`; the report lines of the writes made.
pub(super) fn write(
    name: &str,
    vm: &VmHandle,
    vcpus: &[Arc<VcpuHandle>],
    state: &mut Arm64Vm,
    writes: &Assignments,
    measure: Measure<'_>,
) -> Result<Vec<Arm64WriteReport>, ConfigureError> {
    let sealed = matches!(vm.lock().state(), Seal::Sealed { .. });
    if sealed {
        // After the first run the kernel may hold other values than were read back before it
        // (KVM clears ID_AA64PFR0_EL1.GIC at the first run of a VM without a vGIC): the field
        // writes are made over what the kernel holds now, as a spec's after-run `set` is, so
        // rewriting a field with the value it holds is an identical rewrite.
        let ids: Vec<u64> = writes.writes(|_| 0).into_iter().map(|(id, _)| id).collect();
        for (vcpu, held) in vcpus.iter().zip(state.held.iter_mut()) {
            for &id in &ids {
                held.insert(id, vcpu.get_one_reg(id)?);
            }
        }
    }
    let held = |id: u64| {
        state
            .held
            .first()
            .and_then(|h| h.get(&id))
            .copied()
            .unwrap_or(0)
    };
    let values = writes.writes(held);
    let mut judged = Vec::with_capacity(values.len());
    for &(id, value) in &values {
        let verdict = match sealed {
            // The lock judges each write as it goes; one whose verdict waits for a kernel probe
            // has it measured and told to the lock first.
            true => {
                if let Some(vcpu) = vcpus.first() {
                    let held = state.held.first().and_then(|h| h.get(&id)).copied();
                    let probing = Probing { vm, measure };
                    judged_after_run::<ConfigureError>(
                        vcpu,
                        (id, value, held.unwrap_or(0)),
                        Some(&probing),
                    )?;
                }
                None
            }
            false => Some(match judged_measured(id, value, state, measure, vm)? {
                Verdict::Refused(refusal) => {
                    let refusal = explained(&refusal);
                    // One line, errno included: what the reply shows and the trace records.
                    return Err(ConfigureError::Refused {
                        vm: name.to_string(),
                        shown: refusal.to_string(),
                        recorded: refusal.to_string(),
                    });
                }
                verdict => verdict,
            }),
        };
        judged.push((id, value, verdict));
    }
    let mut reports = Vec::with_capacity(judged.len());
    for (id, value, verdict) in judged {
        for vcpu in vcpus {
            vcpu.set_one_reg(id, value)
                .map_err(|e| refused(name, &e).unwrap_or(ConfigureError::Call(e)))?;
        }
        for (vcpu, held) in vcpus.iter().zip(state.held.iter_mut()) {
            held.insert(id, vcpu.get_one_reg(id)?);
        }
        reports.push(Arm64WriteReport {
            register: reg_id::describe(id),
            value,
            reason: "ctl set-model".to_string(),
            verdict: match verdict {
                Some(verdict) => verdict.to_string(),
                None => "identical to what the VM holds (the lock's after-run rule)".to_string(),
            },
            sent: true,
            outcome: "written".to_string(),
            agrees: true,
            cross_check: None,
        });
    }
    Ok(reports)
}
