//! What the kernel reported about one VM: the input of every judgement and of the planner.

use super::validate::WritableMasks;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The kernel's answers for one VM, gathered right after the first `KVM_ARM_VCPU_INIT` (and
/// `KVM_ARM_VCPU_FINALIZE` for an SVE vCPU), before vmfleet writes anything.
///
/// The values must be the untouched ones: KVM judges an ID-register write against the *limit*,
/// the value a register holds right after the first init, and a bitmap against its limit, which
/// a new VM holds. Values read after vmfleet's own writes would make every judgement relative to
/// the wrong baseline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    /// `KVM_GET_REG_LIST`, in the kernel's order.
    pub register_ids: Vec<u64>,
    /// `KVM_GET_ONE_REG` of the registers vmfleet reads, by id.
    pub values: BTreeMap<u64, u64>,
    /// What is writable in the feature-ID range.
    pub masks: WritableMasks,
    /// Whether `KVM_CAP_ARM_WRITABLE_IMP_ID_REGS` (239) was enabled on the VM before its vCPUs
    /// were created, which makes MIDR_EL1, REVIDR_EL1 and AIDR_EL1 writable.
    #[serde(default)]
    pub writable_imp_id_regs: bool,
    /// The kernel's own answers to probe writes, for the rules that changed between kernels
    /// with no capability to show it.
    #[serde(default)]
    pub probes: KernelProbes,
}

/// Set-handler rules that changed between kernel versions with no capability or mask to show
/// which one a host runs, measured by a probe write on a scratch VM (`None`: not measured).
///
/// vmfleet asks only when a plan needs the answer, so a fleet that never writes near such a rule
/// records no probe and replays as it always did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelProbes {
    /// Whether `set_id_aa64pfr0_el1` refuses ID_AA64PFR0_EL1.EL0 or .EL1 = 0 ("no AArch64 at a
    /// virtualisable EL", `EINVAL`): kernels after 6.12 do, 6.12 accepts the lowering (where the
    /// limit allows it). Measured by writing EL1 = 0 on a scratch VM.
    ///
    /// Not measured, vmfleet judges as the newer kernels do and says that it assumed so.
    #[serde(default)]
    pub el_floor: Option<bool>,
}

impl KernelProbes {
    /// Nothing measured.
    pub const NOT_MEASURED: KernelProbes = KernelProbes { el_floor: None };
}

impl HostView {
    /// Whether `KVM_GET_REG_LIST` has `id`: the kernel answers `ENOENT` for any other id.
    pub fn lists(&self, id: u64) -> bool {
        self.register_ids.contains(&id)
    }

    /// The value read for `id`, if it was read.
    pub fn value(&self, id: u64) -> Option<u64> {
        self.values.get(&id).copied()
    }
}
