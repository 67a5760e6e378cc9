//! The pre-run lock's rules for arm64, as data: which registers are frozen once any vCPU of the
//! VM has entered `KVM_RUN`, and how a write to a frozen register is judged then.
//!
//! The kernel (6.7 and later) freezes the VM-wide ID registers and the hypercall bitmaps: a
//! changed value gets `EBUSY`, the identical value is accepted. It leaves PSCI_VERSION, the
//! workaround registers and MPIDR_EL1 writable (§1.6 and the reference log). vmfleet goes a
//! little further, because its promise is a CPU model that cannot change once the guest runs,
//! whatever the kernel: it also freezes the per-vCPU cache description (CLIDR_EL1, the CCSIDR
//! demux registers) and firmware registers it does not know, and it freezes ID registers on
//! kernels that do not (6.1 let CSV3 change after run). Identity and firmware versions stay
//! writable because the kernel allows it and VMMs rewrite them on every reset.

use super::id_regs;
use super::refusal::{Arm64Refusal, Arm64Rule};
use super::{Verdict, judge_before_run};
use crate::model::arm64::catalog::{self, RegisterRole};
use crate::model::arm64::features::VcpuFeatureSet;
use crate::model::arm64::firmware::{self, FirmwareId};
use crate::model::arm64::host::HostView;
use crate::model::arm64::reg_id::{self, RegClass};
use crate::model::arm64::validate::masks::WritableMasks;
use serde::{Deserialize, Serialize};

/// How the pre-run lock treats a register once the VM has run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LockClass {
    /// Part of the CPU model, frozen at the first run: a changed value is refused (`EBUSY`), the
    /// identical value is accepted.
    FrozenAtFirstRun,
    /// Part of the model but writable at any time, judged by the same rules as before the run.
    WritableAfterRun,
    /// Not part of the CPU model (core, SVE, timer and other system registers): the lock does not
    /// judge it.
    NotCpuModel,
}

/// The lock class of register `id`.
pub fn lock_class(id: u64) -> LockClass {
    match reg_id::classify(id) {
        RegClass::SysReg(reg) => match catalog::by_reg(reg).map(|r| r.role) {
            Some(RegisterRole::Affinity) => LockClass::WritableAfterRun,
            Some(_) => LockClass::FrozenAtFirstRun,
            // Anything else in the feature-ID range describes the CPU too.
            None if reg.is_feature_id() => LockClass::FrozenAtFirstRun,
            None => LockClass::NotCpuModel,
        },
        RegClass::Firmware { .. } => match firmware::classify(id) {
            Some(FirmwareId::Known(_)) => LockClass::WritableAfterRun,
            // A newer kernel's register: its rules are unknown, so it is treated like the model.
            _ => LockClass::FrozenAtFirstRun,
        },
        RegClass::FirmwareBitmap { .. } | RegClass::Demux => LockClass::FrozenAtFirstRun,
        RegClass::Core | RegClass::Sve | RegClass::OtherArm64 { .. } | RegClass::NotArm64 => {
            LockClass::NotCpuModel
        }
    }
}

/// Whether the kernel itself freezes `id` at the first run (so a lock refusal is also what the
/// kernel would answer), on a kernel with these masks.
fn kernel_freezes(id: u64, masks: &WritableMasks) -> bool {
    match reg_id::classify(id) {
        RegClass::FirmwareBitmap { .. } => true,
        RegClass::SysReg(reg) => match catalog::by_reg(reg).map(|r| r.role) {
            Some(RegisterRole::CacheLevels | RegisterRole::Affinity) => false,
            Some(RegisterRole::Implementation) => true,
            // The ID registers became VM-wide and frozen with writable ID registers (6.7), the
            // kernels that report writable masks.
            _ => matches!(masks, WritableMasks::Reported { .. }),
        },
        _ => false,
    }
}

/// A write to register `id` once a vCPU of the VM has run. `held` is what the kernel holds now
/// (read back at that moment); `host` and `features` are the VM's, as before the run.
///
/// The checks that the kernel makes *before* its has-run comparison still apply and keep their
/// errno (an out-of-range bitmap stays `EINVAL`, a set handler's floor stays `EINVAL`, MIDR
/// without the capability stays `EINVAL`); a set handler's rewrites happen before the comparison
/// (writing PMUVer 0xF where the VM holds 0 is identical). On a kernel that does not freeze a
/// register (6.1's ID registers, CLIDR_EL1 on every kernel) the kernel's whole rule for the write
/// applies first, as before the run: what it refuses keeps its errno (6.1 answers a changed
/// ISAR0 with `EINVAL`). Then a changed value is refused with `EBUSY`: the kernel's own answer
/// where it freezes the register, vmfleet's stricter rule where it does not
/// ([`Arm64Rule::ChangedAfterRun`] says which).
///
/// This is the one after-run rule of vmfleet: the runtime's lock asks it through
/// [`crate::model::lock_policy::judge_one_reg`].
pub fn judge_after_run(
    id: u64,
    requested: u64,
    held: u64,
    host: &HostView,
    features: VcpuFeatureSet,
) -> Verdict {
    match lock_class(id) {
        LockClass::NotCpuModel => Verdict::Unjudged {
            why: format!(
                "{} is not part of the CPU model: the lock does not judge it",
                reg_id::describe(id)
            ),
        },
        LockClass::WritableAfterRun => judge_before_run(id, requested, host, features),
        LockClass::FrozenAtFirstRun => match frozen(id, requested, held, host, features) {
            Ok(readback) => Verdict::Accepted { readback },
            Err(refusal) => Verdict::Refused(refusal),
        },
    }
}

fn frozen(
    id: u64,
    requested: u64,
    held: u64,
    host: &HostView,
    features: VcpuFeatureSet,
) -> Result<u64, Arm64Refusal> {
    if !host.lists(id) {
        return Err(Arm64Refusal::register(
            id,
            requested,
            held,
            Arm64Rule::NotListed,
        ));
    }
    let effective = match reg_id::classify(id) {
        RegClass::FirmwareBitmap { .. } => {
            let host_value = host.value(id).unwrap_or(held);
            super::firmware::check_bitmap(id, requested, host_value)?
        }
        RegClass::SysReg(reg) => match catalog::by_reg(reg).map(|r| r.role) {
            // RAZ/WI on a host without AArch32 EL0: the kernel ignores the write before any other
            // check, after the first run as before it, and the register keeps reading what it held.
            Some(RegisterRole::FeatureId)
                if id_regs::aarch32_writes_ignored(
                    reg,
                    host.value(catalog::ID_AA64PFR0_EL1.kvm_reg_id()),
                ) =>
            {
                held
            }
            Some(RegisterRole::Implementation) => {
                // `set_imp_id_reg` checks identity, then the capability, then has-run.
                id_regs::check_implementation_id(reg, requested, held, host.writable_imp_id_regs)?
            }
            Some(RegisterRole::CacheLevels) => {
                // No kernel freezes CLIDR_EL1: its set handler judges every write.
                let ctr = host.value(catalog::CTR_EL0.kvm_reg_id()).unwrap_or(0);
                id_regs::check_clidr(requested, held, &host.masks, ctr)?
            }
            _ if !kernel_freezes(id, &host.masks) => {
                // A kernel that does not freeze ID registers (6.1) judges the write as before
                // the run: what it refuses is refused with its errno, what it would accept is
                // refused below as vmfleet's own rule.
                let limit = host.value(id).unwrap_or(held);
                id_regs::check_feature_id_register_probed(
                    reg,
                    requested,
                    limit,
                    &host.masks,
                    features,
                    &host.probes,
                )?
            }
            _ => {
                let limit = host.value(id).unwrap_or(held);
                id_regs::set_handler_rules(
                    reg,
                    requested,
                    limit,
                    features,
                    &host.probes,
                    &host.masks,
                )?
            }
        },
        _ => requested,
    };
    if effective == held {
        return Ok(held);
    }
    Err(Arm64Refusal::register(
        id,
        requested,
        held,
        Arm64Rule::ChangedAfterRun {
            kernel_enforces: kernel_freezes(id, &host.masks),
        },
    ))
}
