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
//!   cache description, hypercall bitmaps and unknown firmware registers are held; identity and
//!   firmware versions stay writable, as in the kernel. A write to a held register is judged by
//!   the arm64 model's after-run rule ([`crate::model::arm64::validate::judge_after_run`]), the
//!   one rule for it in vmfleet: the kernel's set handlers first (PMUVer 0xF reads as 0, a field
//!   below its floor is `EINVAL`, MIDR_EL1 without capability 239 is `EINVAL`), then the
//!   comparison with what the kernel holds. A write the kernel would refuse is refused with the
//!   kernel's errno; a real change is refused as `EBUSY`, the class the newest kernels use, on
//!   every kernel (flagged as vmfleet's rule where the kernel would take it); a write identical
//!   after the set handlers goes on to the kernel. Either refusal is the lock's: the kernel never
//!   sees the write, so a kernel that would accept what the model refuses cannot change a
//!   running VM's model.
//!
//! Pure rules over values, like the rest of the models: the verdict ([`Mismatch`]) is data, and
//! the runtime turns it into the refusal it reports.

use crate::hypervisor::cpuid::CpuidTable;
use crate::hypervisor::errno::Errno;
use crate::hypervisor::ids::GuestArch;
use crate::model::arm64::host::KernelProbe;
use crate::model::arm64::{self, Arm64Rule, HostView, LockClass, VcpuFeatureSet, Verdict};
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
    /// Whose rule it is, when not the kernel's: set when the lock refuses a change this kernel
    /// would accept ([`STRICTER_THAN_KERNEL`]).
    pub note: Option<String>,
    /// The kernel probe the verdict waits for: a rule judged without this host's measurement
    /// (arm64; [`crate::model::arm64::validate::Arm64Rule::unmeasured_probe`]). A caller that can
    /// measure it does, and asks again.
    pub unmeasured_probe: Option<KernelProbe>,
}

/// The note on a refusal of a change the kernel would accept after the first run (arm64 kernels
/// without `KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES`, such as 6.1, do not freeze the ID registers;
/// no kernel freezes the cache description): the lock is stricter than the kernel by design.
pub const STRICTER_THAN_KERNEL: &str =
    "vmfleet's rule, stricter than this kernel (it would accept the change after the first run)";

/// What the lock needs, besides the values, to judge an arm64 write after the first run as the
/// kernel would: what the kernel reported about the VM and its vCPUs' `KVM_ARM_VCPU_INIT`
/// features. The runtime is given it once the VM is configured
/// (`runtime::handle::VmHandle::set_arm64_lock_context`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arm64LockContext {
    /// The kernel's answers for the VM, read before vmfleet wrote anything.
    pub host: HostView,
    /// The vCPUs' `KVM_ARM_VCPU_INIT` features.
    pub features: VcpuFeatureSet,
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
        note: None,
        unmeasured_probe: None,
    })
}

/// A `KVM_SET_ONE_REG` of `requested` to held register `id` (one whose rule is
/// [`OneRegLockRule::LockedAfterRun`]) of a sealed arm64 VM whose vCPU holds `held`: `None` when
/// the write is identical to what the kernel holds once the kernel's set handlers have rewritten
/// it (the write goes on to the kernel), else the refusal with the kernel's errno.
///
/// This is [`crate::model::arm64::validate::judge_after_run`]'s answer, as the lock reports it.
/// A change the kernel refuses for the change alone is described as before (`the kernel holds
/// …`), with [`STRICTER_THAN_KERNEL`] when this kernel would take it; a write a set handler
/// refuses is described by the model's refusal (register, field, rule, errno).
pub fn judge_one_reg(
    id: u64,
    held: u64,
    requested: u64,
    context: &Arm64LockContext,
) -> Option<Mismatch> {
    let refusal = match arm64::validate::judge_after_run(
        id,
        requested,
        held,
        &context.host,
        context.features,
    ) {
        // A register the model does not hold (it has no lock class): the kernel decides.
        Verdict::Accepted { .. } | Verdict::Unjudged { .. } => return None,
        Verdict::Refused(refusal) => refusal,
    };
    let changes = arm64::validate::register_changes(id, held, requested);
    Some(match refusal.rule {
        Arm64Rule::ChangedAfterRun { kernel_enforces } => Mismatch {
            errno: refusal.errno,
            differences: vec![format!("the kernel holds {held:#018x}")],
            changes,
            note: (!kernel_enforces).then(|| STRICTER_THAN_KERNEL.to_string()),
            unmeasured_probe: None,
        },
        _ => Mismatch {
            errno: refusal.errno,
            differences: vec![refusal.to_string()],
            changes,
            note: None,
            unmeasured_probe: refusal.rule.unmeasured_probe(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::cpuid::CpuidEntry;
    use crate::model::arm64::WritableMasks;
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

    /// A VM whose kernel lists only ID_AA64PFR0_EL1, held at `held`, with the 6.7+ masks
    /// (`reported`: the kernel freezes ID registers) or 6.1's.
    fn context(held: u64, reported: bool) -> Arm64LockContext {
        let pfr0 = ID_AA64PFR0_EL1.kvm_reg_id();
        let masks = if reported {
            let mut masks = vec![0; crate::hypervisor::abi::KVM_ARM_FEATURE_ID_RANGE_SIZE];
            masks[32] = 0xFFFF_00F0_FF00_FFFF;
            WritableMasks::from_reported(&masks).unwrap()
        } else {
            WritableMasks::PreWritableIdRegisters
        };
        Arm64LockContext {
            host: HostView {
                register_ids: vec![pfr0],
                values: [(pfr0, held)].into(),
                masks,
                writable_imp_id_regs: false,
                probes: Default::default(),
            },
            features: VcpuFeatureSet::default(),
        }
    }

    #[test]
    fn verdicts_carry_the_kernels_errno_class() {
        let pfr0 = ID_AA64PFR0_EL1.kvm_reg_id();
        // EL0 = EL1 = 1 (AArch64 only), CSV3 = 1.
        let held = 1 << 60 | 0x11;
        let ctx = context(held, true);
        assert_eq!(judge_one_reg(pfr0, held, held, &ctx), None);
        let refused = judge_one_reg(pfr0, held, held & !(1 << 60), &ctx).unwrap();
        assert_eq!(refused.errno, Errno::EBUSY);
        assert_eq!(refused.differences, ["the kernel holds 0x1000000000000011"]);
        assert_eq!(refused.changes, ["ID_AA64PFR0_EL1.CSV3 1 → 0"]);
        assert_eq!(refused.note, None);
        // The same change on 6.1, which would take it: vmfleet's rule, and it says so.
        let old = judge_one_reg(pfr0, held, held & !(1 << 60), &context(held, false)).unwrap();
        assert_eq!(old.errno, Errno::EBUSY);
        assert_eq!(old.note.as_deref(), Some(STRICTER_THAN_KERNEL));
        // EL0 = 0: the set handler's floor comes first, with the kernel's errno.
        let el0 = judge_one_reg(pfr0, held, held & !0xF, &ctx).unwrap();
        assert_eq!(el0.errno, Errno::EINVAL);
        assert_eq!(el0.changes, ["ID_AA64PFR0_EL1.EL0 1 → 0"]);

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
