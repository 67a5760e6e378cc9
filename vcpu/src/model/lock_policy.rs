//! The pre-run lock's policy, for both guest architectures: which CPU-model writes are held once
//! any vCPU of the VM has entered `KVM_RUN`, and how a write is judged identical to what the
//! kernel holds then. The runtime's lock (`runtime::handle`, under `runtime::lock`) asks it; no
//! caller chooses a rule.
//!
//! - x86: the CPU model is the CPUID table (`KVM_SET_CPUID2`), always held after the first run,
//!   and a rewrite is identical by KVM's own rule (`kvm_cpuid_check_equal`: same entries in the
//!   same order, runtime bits refreshed; [`crate::model::x86::kernel_identity_differences`]). A
//!   different table is refused as `EINVAL`, the kernel's class for this call.
//! - arm64: the CPU model is a set of registers (`KVM_SET_ONE_REG`), judged by register id through
//!   the arm64 model's lock classes ([`crate::model::arm64::lock_class`]): the ID registers, the
//!   cache description, hypercall bitmaps and unknown firmware registers are held and compared by
//!   value; identity and firmware versions stay writable, as in the kernel. A different value is
//!   refused as `EBUSY`, the class the newest kernels use.
//!
//! Pure rules over values, like the rest of the models: the verdict ([`Mismatch`]) is data, and
//! the runtime turns it into the refusal it reports.

use crate::hypervisor::cpuid::CpuidTable;
use crate::hypervisor::errno::Errno;
use crate::hypervisor::ids::GuestArch;
use crate::model::arm64::{self, LockClass};
use crate::model::x86;
use serde::{Deserialize, Serialize};

/// How the pre-run lock treats a register write once the VM has run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OneRegLockRule {
    /// VM-wide CPU model state: after the first run only the identical value is accepted.
    LockedAfterRun,
    /// Stays writable after the run, as in the kernel.
    AlwaysWritable,
}

/// How a write to a sealed VM differs from what the kernel holds: the policy's verdict on a
/// write it refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The errno class the kernel uses for the same refusal.
    pub errno: Errno,
    /// How the write differs from what the kernel holds, most relevant first.
    pub differences: Vec<String>,
    /// The same, as changes from what the kernel holds to what was asked (`WHAT OLD → NEW`).
    pub changes: Vec<String>,
}

/// The lock's rule for a `KVM_SET_ONE_REG` of register `id` on a guest of `arch`. x86 guests
/// have no CPU-model registers (their model is the CPUID table), so nothing is held there.
pub fn one_reg_rule(arch: GuestArch, id: u64) -> OneRegLockRule {
    match arch {
        GuestArch::X86_64 => OneRegLockRule::AlwaysWritable,
        GuestArch::Aarch64 => match arm64::lock_class(id) {
            LockClass::FrozenAtFirstRun => OneRegLockRule::LockedAfterRun,
            LockClass::WritableAfterRun | LockClass::NotCpuModel => OneRegLockRule::AlwaysWritable,
        },
    }
}

/// Whether register `id` of a guest of `arch` is CPU-model state (read into the host view, held
/// and compared), whether or not it stays writable after the run.
pub fn is_model_register(arch: GuestArch, id: u64) -> bool {
    match arch {
        GuestArch::X86_64 => false,
        GuestArch::Aarch64 => arm64::lock_class(id) != LockClass::NotCpuModel,
    }
}

/// A `KVM_SET_CPUID2` of `requested` to a sealed VM whose vCPU holds `held`: `None` when the
/// tables are identical by KVM's rule (the write goes on to the kernel).
pub fn judge_cpuid(held: &CpuidTable, requested: &CpuidTable) -> Option<Mismatch> {
    let differences = x86::kernel_identity_differences(held, requested);
    if differences.is_empty() {
        return None;
    }
    Some(Mismatch {
        errno: Errno::EINVAL,
        differences: differences.iter().map(ToString::to_string).collect(),
        changes: differences.iter().flat_map(|d| d.changes()).collect(),
    })
}

/// A `KVM_SET_ONE_REG` of `requested` to held register `id` of a sealed VM whose vCPU holds
/// `held`: `None` when the values are equal (the write goes on to the kernel).
pub fn judge_one_reg(id: u64, held: u64, requested: u64) -> Option<Mismatch> {
    if held == requested {
        return None;
    }
    Some(Mismatch {
        errno: Errno::EBUSY,
        differences: vec![format!("the kernel holds {held:#018x}")],
        changes: arm64::validate::register_changes(id, held, requested),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::cpuid::CpuidEntry;
    use crate::model::arm64::catalog::{ID_AA64PFR0_EL1, MPIDR_EL1};

    #[test]
    fn arm64_id_registers_are_held_and_identity_is_not() {
        let pfr0 = ID_AA64PFR0_EL1.kvm_reg_id();
        let mpidr = MPIDR_EL1.kvm_reg_id();
        let arm = GuestArch::Aarch64;
        assert_eq!(one_reg_rule(arm, pfr0), OneRegLockRule::LockedAfterRun);
        assert_eq!(one_reg_rule(arm, mpidr), OneRegLockRule::AlwaysWritable);
        assert!(is_model_register(arm, pfr0) && is_model_register(arm, mpidr));
        // PC, a core register: not the CPU model.
        assert!(!is_model_register(arm, 0x6030_0000_0010_0040));
        assert_eq!(
            one_reg_rule(GuestArch::X86_64, pfr0),
            OneRegLockRule::AlwaysWritable
        );
    }

    #[test]
    fn verdicts_carry_the_kernels_errno_class() {
        let pfr0 = ID_AA64PFR0_EL1.kvm_reg_id();
        assert_eq!(judge_one_reg(pfr0, 1, 1), None);
        let refused = judge_one_reg(pfr0, 1, 0).unwrap();
        assert_eq!(refused.errno, Errno::EBUSY);
        assert_eq!(refused.differences, ["the kernel holds 0x0000000000000001"]);

        let entry = CpuidEntry {
            function: 1,
            index: 0,
            flags: 0,
            eax: 0,
            ebx: 0,
            ecx: 1,
            edx: 0,
        };
        let held = CpuidTable::new(vec![entry]);
        assert_eq!(judge_cpuid(&held, &held), None);
        let mut changed = held.clone();
        changed.entries[0].ecx = 0;
        assert_eq!(judge_cpuid(&held, &changed).unwrap().errno, Errno::EINVAL);
    }
}
