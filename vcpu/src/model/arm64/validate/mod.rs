//! KVM's acceptance rules for arm64 CPU-model writes, applied before the kernel sees a write, and
//! the rules of the pre-run lock.
//!
//! [`judge_before_run`] predicts the kernel's answer to one `KVM_SET_ONE_REG` on a VM that has not
//! run; [`judge_after_run`] gives the lock's answer once it has. Both are pure functions of the
//! register id, the value, what the kernel reported ([`HostView`]) and the VCPU_INIT features, and
//! both answer with a [`Verdict`].

pub mod firmware;
pub mod id_regs;
pub mod lock;
pub mod masks;
pub mod refusal;

pub use lock::{LockClass, judge_after_run, lock_class};
pub use masks::{MaskError, MaskSource, WritableMasks};
pub use refusal::{
    Arm64Refusal, Arm64Rule, FieldDifference, RefusedField, field_differences, register_changes,
};

use super::catalog::{self, RegisterRole};
use super::features::VcpuFeatureSet;
use super::firmware::{FirmwareFamily, FirmwareId, FirmwareRegister};
use super::host::HostView;
use super::reg_id::{self, RegClass};
use super::sysreg::SysReg;
use serde::{Deserialize, Serialize};
use std::fmt;

/// vmfleet's judgement of one write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The kernel accepts it; `readback` is what `KVM_GET_ONE_REG` shows right after (before the
    /// first run, which may still clear a vGIC-dependent field).
    Accepted {
        /// The value read back after the write.
        readback: u64,
    },
    /// The kernel (or the lock) refuses it.
    Refused(Arm64Refusal),
    /// vmfleet cannot predict the kernel's answer: the register is not one whose rules it models.
    Unjudged {
        /// Why vmfleet cannot predict it (shown in the plan's line for the write).
        why: String,
    },
}

impl Verdict {
    /// The refusal, if refused.
    pub fn refusal(&self) -> Option<&Arm64Refusal> {
        match self {
            Verdict::Refused(refusal) => Some(refusal),
            _ => None,
        }
    }

    /// Whether the write is predicted to succeed.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Verdict::Accepted { .. })
    }

    fn from_result(result: Result<u64, Arm64Refusal>) -> Verdict {
        match result {
            Ok(readback) => Verdict::Accepted { readback },
            Err(refusal) => Verdict::Refused(refusal),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accepted { readback } => write!(f, "accepted, reads back {readback:#018x}"),
            Verdict::Refused(refusal) => write!(f, "refused: {refusal}"),
            Verdict::Unjudged { why } => write!(f, "not judged: {why}"),
        }
    }
}

/// The kernel's answer, as vmfleet predicts it, to writing `requested` to register `id` of a VM
/// that has not run.
pub fn judge_before_run(
    id: u64,
    requested: u64,
    host: &HostView,
    features: VcpuFeatureSet,
) -> Verdict {
    let class = reg_id::classify(id);
    let name = reg_id::describe(id);
    if class == RegClass::NotArm64 {
        return Verdict::Refused(Arm64Refusal::register(
            id,
            requested,
            0,
            Arm64Rule::NotArm64Id,
        ));
    }
    if !host.lists(id) {
        return Verdict::Refused(Arm64Refusal::register(
            id,
            requested,
            0,
            Arm64Rule::NotListed,
        ));
    }
    let Some(host_value) = host.value(id) else {
        return Verdict::Unjudged {
            why: format!("no value of {name} was read from the host, so there is no limit"),
        };
    };
    match class {
        RegClass::SysReg(reg) => judge_sysreg(reg, requested, host_value, host, features),
        RegClass::Firmware { .. } | RegClass::FirmwareBitmap { .. } => {
            judge_firmware(id, requested, host_value, features)
        }
        _ => Verdict::Unjudged {
            why: format!("{name} is not part of the CPU model vmfleet judges"),
        },
    }
}

fn judge_sysreg(
    reg: SysReg,
    requested: u64,
    host_value: u64,
    host: &HostView,
    features: VcpuFeatureSet,
) -> Verdict {
    match catalog::by_reg(reg).map(|r| r.role) {
        // MPIDR_EL1 has no set handler: KVM stores what it is given.
        Some(RegisterRole::Affinity) => Verdict::Accepted {
            readback: requested,
        },
        Some(RegisterRole::Implementation) => Verdict::from_result(
            id_regs::check_implementation_id(reg, requested, host_value, host.writable_imp_id_regs),
        ),
        Some(RegisterRole::CacheLevels) => {
            let ctr = host.value(catalog::CTR_EL0.kvm_reg_id()).unwrap_or(0);
            Verdict::from_result(id_regs::check_clidr(
                requested,
                host_value,
                &host.masks,
                ctr,
            ))
        }
        // RAZ/WI: the kernel answers 0 and keeps reading 0, whatever was written.
        Some(RegisterRole::FeatureId)
            if id_regs::aarch32_writes_ignored(
                reg,
                host.value(catalog::ID_AA64PFR0_EL1.kvm_reg_id()),
            ) =>
        {
            Verdict::Accepted {
                readback: host_value,
            }
        }
        Some(RegisterRole::FeatureId | RegisterRole::Unallocated | RegisterRole::CacheType) => {
            Verdict::from_result(id_regs::check_feature_id_register_probed(
                reg,
                requested,
                host_value,
                &host.masks,
                features,
                &host.probes,
            ))
        }
        None if reg.is_feature_id() => {
            Verdict::from_result(id_regs::check_feature_id_register_probed(
                reg,
                requested,
                host_value,
                &host.masks,
                features,
                &host.probes,
            ))
        }
        None => Verdict::Unjudged {
            why: format!("{reg} is not part of the CPU model vmfleet judges"),
        },
    }
}

fn judge_firmware(id: u64, requested: u64, host_value: u64, features: VcpuFeatureSet) -> Verdict {
    let result = match super::firmware::classify(id) {
        Some(FirmwareId::Known(FirmwareRegister::PsciVersion)) => {
            firmware::check_psci_version(requested, host_value, features)
        }
        Some(FirmwareId::Known(
            register @ (FirmwareRegister::SmcccArchWorkaround1
            | FirmwareRegister::SmcccArchWorkaround3),
        )) => firmware::check_workaround_1_or_3(register, requested, host_value),
        Some(FirmwareId::Known(FirmwareRegister::SmcccArchWorkaround2)) => {
            firmware::check_workaround_2(requested, host_value)
        }
        Some(FirmwareId::Known(_))
        | Some(FirmwareId::Unknown {
            family: FirmwareFamily::Bitmap,
            ..
        }) => firmware::check_bitmap(id, requested, host_value),
        Some(FirmwareId::Unknown {
            family: FirmwareFamily::Firmware,
            ..
        })
        | None => {
            return Verdict::Unjudged {
                why: format!(
                    "{} is a firmware register vmfleet does not know the rules of",
                    reg_id::describe(id)
                ),
            };
        }
    };
    Verdict::from_result(result)
}
