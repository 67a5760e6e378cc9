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
/// vmfleet asks only when a plan needs the answer (a write whose verdict depends on it), so a
/// fleet that never writes near such a rule records no probe and replays as it always did;
/// `vmfleet host --fingerprint` asks them all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelProbes {
    /// Whether `set_id_aa64pfr0_el1` refuses ID_AA64PFR0_EL1.EL0 or .EL1 = 0 ("no AArch64 at a
    /// virtualisable EL", `EINVAL`): kernels after 6.12 do, 6.12 accepts the lowering (where the
    /// limit allows it). Measured by writing EL1 = 0 on a scratch VM.
    ///
    /// Not measured, vmfleet judges as the newer kernels do and says that it assumed so.
    #[serde(default)]
    pub el_floor: Option<bool>,
    /// Whether `set_id_aa64dfr0_el1` refuses ID_AA64DFR0_EL1.DebugVer below 6 (Armv8 debug,
    /// `EINVAL`). Every kernel vmfleet knows does (with writable ID registers from 6.7: the
    /// floor; before: DebugVer is not writable at all). Measured by writing DebugVer = 5.
    ///
    /// Not measured, vmfleet assumes the floor and says so.
    #[serde(default)]
    pub debug_ver_floor: Option<bool>,
    /// What the kernel does with ID_AA64DFR0_EL1.PMUVer = 0xF (IMPLEMENTATION DEFINED) on a
    /// vCPU without a PMU, whose PMUVer reads 0. Measured by writing it.
    ///
    /// Not measured: on a kernel with writable masks, the 6.7 handler (0xF is stored as 0);
    /// without masks, vmfleet assumes the refusal (6.1) and says so.
    #[serde(default)]
    pub pmu_imp_def: Option<PmuImpDef>,
}

/// A kernel's answer to ID_AA64DFR0_EL1.PMUVer = 0xF on a vCPU without a PMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PmuImpDef {
    /// Accepted and stored as 0 (not implemented): the 6.7 `set_id_aa64dfr0_el1`.
    ReadsAsNotImplemented,
    /// Accepted and stored as 0xF: the 6.3–6.6 handler, which keeps an unimplemented PMU's
    /// version as written (and lets PMUVer change without writable ID registers).
    Kept,
    /// `EINVAL`: a kernel whose ID_AA64DFR0_EL1 is invariant (6.1).
    Refused,
}

impl PmuImpDef {
    /// The name the fingerprint uses.
    pub fn name(self) -> &'static str {
        match self {
            PmuImpDef::ReadsAsNotImplemented => "reads-as-not-implemented",
            PmuImpDef::Kept => "kept",
            PmuImpDef::Refused => "refused",
        }
    }

    /// The answer named `name` ([`PmuImpDef::name`]).
    pub fn from_name(name: &str) -> Option<PmuImpDef> {
        [
            PmuImpDef::ReadsAsNotImplemented,
            PmuImpDef::Kept,
            PmuImpDef::Refused,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }
}

/// One of the probes of [`KernelProbes`]: what the fleet asks for when a verdict depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelProbe {
    /// [`KernelProbes::el_floor`].
    ElFloor,
    /// [`KernelProbes::debug_ver_floor`].
    DebugVerFloor,
    /// [`KernelProbes::pmu_imp_def`].
    PmuImpDef,
}

impl KernelProbe {
    /// Every probe, in the order `host --fingerprint` asks them.
    pub const ALL: [KernelProbe; 3] = [
        KernelProbe::ElFloor,
        KernelProbe::DebugVerFloor,
        KernelProbe::PmuImpDef,
    ];

    /// The fingerprint's key for it (`arm64.kernel_probes.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            KernelProbe::ElFloor => "el_floor",
            KernelProbe::DebugVerFloor => "debug_ver_floor",
            KernelProbe::PmuImpDef => "pmu_imp_def",
        }
    }
}

impl KernelProbes {
    /// Nothing measured.
    pub const NOT_MEASURED: KernelProbes = KernelProbes {
        el_floor: None,
        debug_ver_floor: None,
        pmu_imp_def: None,
    };

    /// Take from `other` every answer this has not measured; an answer already measured stays
    /// (a host's kernel does not change its answer).
    pub fn fill_from(&mut self, other: &KernelProbes) {
        self.el_floor = self.el_floor.or(other.el_floor);
        self.debug_ver_floor = self.debug_ver_floor.or(other.debug_ver_floor);
        self.pmu_imp_def = self.pmu_imp_def.or(other.pmu_imp_def);
    }

    /// Whether `probe` was measured.
    pub fn is_measured(&self, probe: KernelProbe) -> bool {
        match probe {
            KernelProbe::ElFloor => self.el_floor.is_some(),
            KernelProbe::DebugVerFloor => self.debug_ver_floor.is_some(),
            KernelProbe::PmuImpDef => self.pmu_imp_def.is_some(),
        }
    }
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
