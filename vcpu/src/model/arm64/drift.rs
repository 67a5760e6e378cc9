//! What the kernel and the guest did with a planned arm64 CPU model: the arm64 counterpart of
//! [`crate::model::x86::drift`], pure rules over values the fleet read.
//!
//! Three views, each by register name:
//! - [`readback_drift`]: every accepted write whose register the kernel holds with another value
//!   than the planner predicted it would read back (`KVM_GET_ONE_REG` after `KVM_SET_ONE_REG`).
//! - [`check_guest_view`]: what the built-in guest read from inside (`MRS` of the ID registers,
//!   its SMCCC calls), compared with what the vCPU holds: the same values (the GIC fields KVM
//!   clears at the first run aside), the held PSCI version, and each gated hypercall service
//!   answered exactly when its bitmap bit offers it.
//! - [`digest`]: one number for the model registers a vCPU holds, so two vCPUs (or two runs) are
//!   compared at a glance.
//!
//! The guest's report is a `guests` type, which the model must not import: the fleet hands over
//! what the guest saw as plain values ([`SeenRegister`], [`SeenCall`]).

use super::firmware::FirmwareRegister;
use super::model::Arm64Plan;
use super::{SysReg, Verdict, fields, reg_id, smccc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One register the kernel holds with another value than the plan expected to read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadbackDrift {
    /// The register's name (`ID_AA64PFR0_EL1`).
    pub register: String,
    /// What the planner expected to read back after the write ([`Verdict::Accepted`]).
    pub expected: u64,
    /// What the kernel holds.
    pub held: u64,
}

/// Where what a vCPU `held` differs from what `plan` expected to read back: accepted writes only
/// (a refused or skipped write has no read-back to expect), in plan order; a register the vCPU
/// was not read for is not judged.
pub fn readback_drift(plan: &Arm64Plan, held: &BTreeMap<u64, u64>) -> Vec<ReadbackDrift> {
    plan.writes
        .iter()
        .filter_map(|write| {
            let Verdict::Accepted { readback } = write.verdict else {
                return None;
            };
            let now = *held.get(&write.reg_id)?;
            (now != readback).then(|| ReadbackDrift {
                register: write.register.to_string(),
                expected: readback,
                held: now,
            })
        })
        .collect()
}

/// What the guest's `MRS` of one register read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SeenRegister {
    /// The register's `KVM_GET_ONE_REG` id, so that it compares directly with what is held.
    pub id: u64,
    /// What the guest read.
    pub value: u64,
}

/// One SMCCC call the guest made and the first word of its answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SeenCall {
    /// The function id (`x0` on the way in).
    pub function_id: u32,
    /// `x0` on the way out: the version, the feature bits or an SMCCC return code.
    pub x0: u64,
    /// The call and its answer in words (`TRNG_VERSION -> 1.0`), for the mismatch line.
    pub description: String,
}

/// How the guest's view compares with what the vCPU holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestViewCheck {
    /// One line per register or call where the guest saw something other than the held model.
    pub mismatches: Vec<String>,
}

impl GuestViewCheck {
    /// The guest saw the model the vCPU holds.
    pub fn matches_held(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Judge what the guest saw against what its vCPU `held`: every ID register it read must be the
/// held value (the fields KVM may clear at the first run aside), `PSCI_VERSION` must answer the
/// held `KVM_REG_ARM_PSCI_VERSION`, and `TRNG_VERSION`, `VENDOR_HYP_KVM_FEATURES` and
/// `VENDOR_HYP_CALL_UID` must be supported exactly when bit 0 of their bitmap
/// (`KVM_REG_ARM_STD_BMAP`, `KVM_REG_ARM_VENDOR_HYP_BMAP`) is set. Registers and bitmaps that
/// were not read for the vCPU are not judged.
pub fn check_guest_view(
    registers: &[SeenRegister],
    calls: &[SeenCall],
    held: &BTreeMap<u64, u64>,
) -> GuestViewCheck {
    let mut mismatches = Vec::new();
    for seen in registers {
        let Some(&expected) = held.get(&seen.id) else {
            continue;
        };
        // KVM clears the GIC fields at the first run of a VM without a vGIC, so what the guest
        // reads there is not what was held before the run (kvm-semantics §2.10).
        let masked = SysReg::from_kvm_reg_id(seen.id).map_or(0, fields::first_run_mutable_mask);
        if seen.value & !masked != expected & !masked {
            mismatches.push(format!(
                "{}: the guest read {:#018x}, the kernel holds {expected:#018x}",
                reg_id::describe(seen.id),
                seen.value
            ));
        }
    }
    let bitmap = |r: FirmwareRegister| held.get(&r.id()).copied();
    let not_supported = smccc::NOT_SUPPORTED as u64;
    for call in calls {
        let expected_supported = match call.function_id {
            smccc::TRNG_VERSION => bitmap(FirmwareRegister::StdBitmap).map(|b| b & 1 != 0),
            smccc::VENDOR_HYP_KVM_FEATURES | smccc::VENDOR_HYP_CALL_UID => {
                bitmap(FirmwareRegister::VendorHypBitmap).map(|b| b & 1 != 0)
            }
            _ => None,
        };
        if let Some(supported) = expected_supported {
            let answered = call.x0 != not_supported;
            if supported != answered {
                mismatches.push(format!(
                    "{}: the model {} it, the guest was answered {}",
                    call.description,
                    if supported { "offers" } else { "hides" },
                    if answered {
                        "as supported"
                    } else {
                        "NOT_SUPPORTED"
                    }
                ));
            }
        }
        if call.function_id == smccc::PSCI_VERSION {
            if let Some(version) = bitmap(FirmwareRegister::PsciVersion) {
                if call.x0 != version {
                    mismatches.push(format!(
                        "PSCI_VERSION: the guest was answered {:#x}, the kernel holds {version:#x}",
                        call.x0
                    ));
                }
            }
        }
    }
    GuestViewCheck { mismatches }
}

/// A CRC-32 of the model registers a vCPU holds, each `(id, value)` little-endian in id order:
/// what `model` replies show per vCPU, as the x86 ones show
/// [`crate::hypervisor::cpuid::CpuidTable::digest`].
pub fn digest(held: &BTreeMap<u64, u64>) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for (id, value) in held {
        hasher.update(&id.to_le_bytes());
        hasher.update(&value.to_le_bytes());
    }
    hasher.finalize()
}

#[cfg(test)]
mod tests;
