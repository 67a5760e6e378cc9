//! After-run writes on arm64: each judged against the lock's rule (the arm64 model's after-run
//! rule), and, with `cross_check`, each one the lock refused also sent to the kernel on a
//! scratch VM that has run, so the report shows the kernel's own answer beside vmfleet's.
//!
//! Why the scratch VM: the lock never lets a refused write reach a VM that runs a guest (that is
//! its promise), so the kernel's after-run answer can only be had on a VM that runs none. The
//! scratch VM is set up like the VM (same target and VCPU_INIT features, capability 239 if the VM
//! has it), given the VM's held value of each register the refused writes touch (before its run,
//! when the kernel takes any value it would take for the VM), then its one vCPU enters `KVM_RUN`
//! with a kick pending, so it returns `EINTR` before entering the guest, and the kernel has
//! marked the VM as run all the same. Each refused write then goes to the kernel; one it accepts
//! is undone. Its id is a kernel probe's ([`VmId::is_kernel_probe`]), whose lock never seals:
//! the point is to ask the kernel.
//!
//! The kernel agrees with the lock when it refuses with the same errno, or when it accepts a
//! change the lock refuses on purpose (a kernel that does not freeze the register, 6.1: the
//! refusal says vmfleet is stricter than the kernel there).

use super::{CrossCheck, KVM_ARM_VCPU_SVE, Measure, measure_into, refusal_text};
use crate::fleet::error::{AfterRunError, CrossCheckError, HostQueryError};
use crate::report::AfterRunReport;
use crate::report::Verdict as LockVerdict;
use crate::spec::AfterRun;
use vcpu::model::arm64::host::KernelProbes;
use vcpu::model::arm64::{VcpuFeature, VcpuFeatureSet};
use vcpu::model::lock_policy::Mismatch;
use vcpu::model::lock_policy::{self, STRICTER_THAN_KERNEL};
use vcpu::{
    Errno, GuestArch, HandleError, Reply, VcpuCall, VcpuHandle, VcpuId, VmCall, VmHandle, VmId,
};

/// A write the lock refused after the run, for the kernel to answer on a scratch VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::fleet) struct RefusedAfterRun {
    /// The register.
    pub id: u64,
    /// What the VM held.
    pub held: u64,
    /// What the write asked for.
    pub wanted: u64,
    /// The lock's errno.
    pub errno: Errno,
    /// Whether the lock said it is stricter than this kernel (a change the kernel would take).
    pub stricter: bool,
}

/// How an after-run verdict that waits for a kernel probe gets it: measured (once per fleet) and
/// told to the VM's lock, so the lock answers as this host's kernel does.
pub(in crate::fleet) struct Probing<'a> {
    /// The VM, whose lock learns the answer.
    pub vm: &'a VmHandle,
    /// How the fleet asks the host.
    pub measure: Measure<'a>,
}

/// The lock's verdict on writing `wanted` over `held` in register `id` of a VM that has run
/// ([`VcpuHandle::judge_after_run`]); one that waits for a kernel probe has it measured first
/// (once per fleet) and told to the VM's lock, when `probing` can, so the lock answers as this
/// host's kernel does. For after-run actions and for `set-model` on a VM that has run.
pub(super) fn judged<E: From<HandleError> + From<HostQueryError>>(
    vcpu: &VcpuHandle,
    (id, wanted, held): (u64, u64, u64),
    probing: Option<&Probing<'_>>,
) -> Result<Option<Mismatch>, E> {
    let verdict = vcpu.judge_after_run(id, wanted, held)?;
    let (Some(probing), Some(probe)) = (probing, verdict.as_ref().and_then(|m| m.unmeasured_probe))
    else {
        return Ok(verdict);
    };
    let mut probes = KernelProbes::NOT_MEASURED;
    if !measure_into(&[probe], probing.measure, &mut probes)? {
        return Ok(verdict);
    }
    probing.vm.learn_kernel_probes(&probes);
    Ok(vcpu.judge_after_run(id, wanted, held)?)
}

/// Attempt one after-run write on an arm64 vCPU and judge it against the lock's rule (the arm64
/// model's after-run rule, [`VcpuHandle::judge_after_run`]): a value identical once the kernel's
/// set handlers have rewritten it is allowed, one they refuse is refused with their errno, a
/// changed frozen register is refused (`EBUSY` class), on every kernel; a rule no capability
/// shows is measured first (`probing`). `rewrite-identical` rewrites every model register of the
/// vCPU with what it holds. Returns the report and, when the lock refused a write, that write.
pub(in crate::fleet) fn try_after_run(
    vcpu: &VcpuHandle,
    action: &AfterRun,
    probing: Option<&Probing<'_>>,
) -> Result<(AfterRunReport, Option<RefusedAfterRun>), AfterRunError> {
    let writes: Vec<(u64, u64, u64)> = match action {
        AfterRun::SetField { field, value, .. } => {
            let id = field.register().kvm_reg_id();
            let held = vcpu.get_one_reg(id)?;
            let wanted = field.field().with(held, *value);
            vec![(id, wanted, held)]
        }
        AfterRun::RewriteIdentical { .. } => {
            let ids = match vcpu.plain_call(VcpuCall::GetRegList) {
                Ok(Reply::RegList(ids)) => ids,
                Ok(other) => {
                    return Err(AfterRunError::UnexpectedReply {
                        call: "GET_REG_LIST",
                        reply: other.to_string(),
                    });
                }
                Err(e) => return Err(e.into()),
            };
            let mut writes = Vec::new();
            for id in ids
                .into_iter()
                .filter(|&id| lock_policy::is_model_register(GuestArch::Aarch64, id))
            {
                let held = vcpu.get_one_reg(id)?;
                writes.push((id, held, held));
            }
            writes
        }
        AfterRun::Hide { .. } => {
            return Err(AfterRunError::OtherArch {
                action: "hide",
                arch: "x86",
            });
        }
    };
    let label = match action {
        AfterRun::SetField { field, value, .. } => format!("set {field} = {value:#x}"),
        _ => "rewrite identical".to_string(),
    };
    // What the lock will answer is the model's after-run rule: ask it, as the lock will.
    let mut refused = false;
    for &write in &writes {
        if judged::<AfterRunError>(vcpu, write, probing)?.is_some() {
            refused = true;
            break;
        }
    }
    let expected = if refused {
        LockVerdict::RefusedByLock
    } else {
        LockVerdict::Allowed
    };
    let mut outcome = LockVerdict::Allowed;
    let mut message = None;
    let mut refused_write = None;
    for (id, wanted, held) in writes {
        match vcpu.set_one_reg(id, wanted) {
            Ok(_) => {}
            Err(e) if e.is_lock_refusal() => {
                outcome = LockVerdict::RefusedByLock;
                // The refusal names the register and its fields itself.
                let text = refusal_text(&e);
                refused_write = e.errno().map(|errno| RefusedAfterRun {
                    id,
                    held,
                    wanted,
                    errno,
                    stricter: text.contains(STRICTER_THAN_KERNEL),
                });
                message = Some(text);
                break;
            }
            Err(e) => {
                outcome = LockVerdict::RefusedByKernel;
                message = Some(e.to_string());
                break;
            }
        }
    }
    let report = AfterRunReport {
        vcpu: vcpu.id().0,
        action: label,
        expected,
        outcome,
        message,
        cross_check: None,
    };
    Ok((report, refused_write))
}

/// How the after-run check's scratch VM is made like the VM.
pub(super) struct ScratchLike {
    /// The VM's `KVM_ARM_PREFERRED_TARGET`.
    pub target: u32,
    /// The VM's VCPU_INIT features.
    pub features: VcpuFeatureSet,
    /// Whether the VM enabled capability 239.
    pub writable_imp_id_regs: bool,
}

/// Send each of `refused` to the kernel on a scratch VM that has run (see the module's
/// comment): per write, the kernel's answer in words and whether it agrees with the lock.
pub(super) fn kernel_answers(
    cross: &CrossCheck<'_>,
    name: &str,
    like: &ScratchLike,
    refused: &[RefusedAfterRun],
) -> Result<Vec<(String, bool)>, CrossCheckError> {
    // A kernel probe's id (its lock never seals), apart from the pre-run cross-check's
    // `SCRATCH_VM_ID_BIT` one, so each has a trace stream of its own.
    let scratch = cross.scratch_vm(
        VmId(cross.vm.0 | VmId::KERNEL_PROBES),
        format!("{name}-after-run-check"),
    )?;
    let answers = answers_on(&scratch, like, refused);
    scratch
        .call(VmCall::Destroy)
        .map_err(CrossCheckError::Close)?;
    answers
}

fn answers_on(
    scratch: &VmHandle,
    like: &ScratchLike,
    refused: &[RefusedAfterRun],
) -> Result<Vec<(String, bool)>, CrossCheckError> {
    if like.writable_imp_id_regs {
        scratch
            .call(VmCall::EnableCap {
                cap: vcpu::hypervisor::abi::KVM_CAP_ARM_WRITABLE_IMP_ID_REGS,
                flags: 0,
                args: [0; 4],
            })
            .map_err(CrossCheckError::Call)?;
    }
    let vcpu = scratch
        .create_vcpu(VcpuId(0))
        .map_err(CrossCheckError::Call)?;
    let mut features = [0u32; 7];
    features[0] = like.features.bits();
    vcpu.plain_call(VcpuCall::ArmVcpuInit {
        target: like.target,
        features,
    })
    .map_err(CrossCheckError::Call)?;
    if like.features.contains(VcpuFeature::Sve) {
        vcpu.plain_call(VcpuCall::ArmVcpuFinalize {
            feature: KVM_ARM_VCPU_SVE,
        })
        .map_err(CrossCheckError::Call)?;
    }
    if like.features.contains(VcpuFeature::PmuV3) {
        vcpu.plain_call(VcpuCall::ArmPmuV3Init)
            .map_err(CrossCheckError::Call)?;
    }
    // Before the run: what the VM holds, register by register (each once).
    let mut given: Vec<u64> = Vec::new();
    for write in refused {
        if given.contains(&write.id) {
            continue;
        }
        given.push(write.id);
        if vcpu.get_one_reg(write.id).map_err(CrossCheckError::Call)? != write.held {
            vcpu.set_one_reg(write.id, write.held)
                .map_err(CrossCheckError::Call)?;
        }
    }
    // The run: kicked before it enters the guest (EINTR), which still marks the VM as run.
    vcpu.kicker().kick();
    vcpu.run().map_err(CrossCheckError::Call)?;
    let mut answers = Vec::with_capacity(refused.len());
    for write in refused {
        let answer = match vcpu.set_one_reg(write.id, write.wanted) {
            Ok(_) => {
                vcpu.set_one_reg(write.id, write.held)
                    .map_err(CrossCheckError::Undo)?;
                let words = if write.stricter {
                    "the kernel accepted it (after the run, on a scratch VM): vmfleet's lock is \
                     stricter here by design"
                } else {
                    "the kernel accepted it (after the run, on a scratch VM)"
                };
                (words.to_string(), write.stricter)
            }
            Err(e) => match e.errno() {
                Some(kernel) => (
                    format!("the kernel refused it too ({kernel}, after the run, on a scratch VM)"),
                    kernel == write.errno,
                ),
                None => return Err(CrossCheckError::Call(e)),
            },
        };
        answers.push(answer);
    }
    vcpu.plain_call(VcpuCall::Destroy)
        .map_err(CrossCheckError::Call)?;
    Ok(answers)
}
