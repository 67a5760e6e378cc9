//! Which bits of the feature-ID registers a kernel lets userspace change.
//!
//! Kernels from 6.7 on say it themselves: with `KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES` (230)
//! reporting bit 0 (`KVM_ARM_FEATURE_ID_RANGE`), the VM ioctl `KVM_ARM_GET_REG_WRITABLE_MASKS`
//! fills 192 masks, one per feature-ID slot. Older kernels have neither, and treat the ID
//! registers as invariant except ID_AA64PFR0_EL1.CSV2/CSV3, which may be lowered (6.1 in the lab
//! refused every other change). For those, vmfleet assumes exactly that: it may miss a field a
//! 6.3–6.6 kernel would have accepted (PMUVer), never the other way round.

use crate::model::arm64::catalog;
use crate::model::arm64::sysreg::SysReg;
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::hypervisor::abi::{KVM_ARM_FEATURE_ID_RANGE_BIT, KVM_ARM_FEATURE_ID_RANGE_SIZE};

/// ID_AA64PFR0_EL1.CSV3 | CSV2: what kernels before writable ID registers let userspace lower.
pub const PRE_WRITABLE_PFR0_MASK: u64 = 0xFF00_0000_0000_0000;

/// Where a writable mask came from, for refusals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MaskSource {
    /// Reported by `KVM_ARM_GET_REG_WRITABLE_MASKS`.
    Reported,
    /// A kernel without writable ID registers: only ID_AA64PFR0_EL1.CSV2/CSV3.
    PreWritableIdRegisters,
}

impl fmt::Display for MaskSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MaskSource::Reported => "as KVM_ARM_GET_REG_WRITABLE_MASKS reported it",
            MaskSource::PreWritableIdRegisters => {
                "kernel without KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES: only \
                 ID_AA64PFR0_EL1.CSV2/CSV3 are writable"
            }
        })
    }
}

/// The writable masks of one VM's feature-ID registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WritableMasksRepr")]
pub enum WritableMasks {
    /// The 192 masks the kernel reported, indexed by `KVM_ARM_FEATURE_ID_RANGE_IDX`.
    Reported {
        /// Exactly 192 masks.
        masks: Vec<u64>,
    },
    /// A kernel that cannot report masks: the conservative pre-6.7 rule.
    PreWritableIdRegisters,
}

/// The serialized shape, checked on the way in.
#[derive(Deserialize)]
enum WritableMasksRepr {
    Reported { masks: Vec<u64> },
    PreWritableIdRegisters,
}

impl TryFrom<WritableMasksRepr> for WritableMasks {
    type Error = MaskError;
    fn try_from(repr: WritableMasksRepr) -> Result<Self, MaskError> {
        match repr {
            WritableMasksRepr::Reported { masks } => WritableMasks::from_reported(&masks),
            WritableMasksRepr::PreWritableIdRegisters => Ok(WritableMasks::PreWritableIdRegisters),
        }
    }
}

/// Why a set of masks cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MaskError {
    /// Not the 192 masks of `KVM_ARM_FEATURE_ID_RANGE_SIZE`.
    #[error(
        "KVM_ARM_GET_REG_WRITABLE_MASKS fills {KVM_ARM_FEATURE_ID_RANGE_SIZE} masks; {count} were \
         given"
    )]
    WrongCount {
        /// How many were given.
        count: usize,
    },
    /// The capability says the masks exist, but none were given.
    #[error(
        "KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES reports {ranges:#x}, so the kernel has writable \
         masks, but none were read"
    )]
    MissingMasks {
        /// The capability's value.
        ranges: u64,
    },
    /// Masks were given for a kernel whose capability says it has none.
    #[error(
        "masks were given, but KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES reports {ranges:#x}: this \
         kernel cannot have reported them"
    )]
    UnexpectedMasks {
        /// The capability's value.
        ranges: u64,
    },
}

impl WritableMasks {
    /// The masks `KVM_ARM_GET_REG_WRITABLE_MASKS` returned.
    pub fn from_reported(masks: &[u64]) -> Result<WritableMasks, MaskError> {
        if masks.len() != KVM_ARM_FEATURE_ID_RANGE_SIZE {
            return Err(MaskError::WrongCount { count: masks.len() });
        }
        Ok(WritableMasks::Reported {
            masks: masks.to_vec(),
        })
    }

    /// The masks of a kernel whose `KVM_CHECK_EXTENSION(KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES)`
    /// answered `ranges`, with the masks read if it has them.
    pub fn for_kernel(ranges: u64, reported: Option<&[u64]>) -> Result<WritableMasks, MaskError> {
        let has_masks = ranges & KVM_ARM_FEATURE_ID_RANGE_BIT != 0;
        match (has_masks, reported) {
            (true, Some(masks)) => WritableMasks::from_reported(masks),
            (true, None) => Err(MaskError::MissingMasks { ranges }),
            (false, None) => Ok(WritableMasks::PreWritableIdRegisters),
            (false, Some(_)) => Err(MaskError::UnexpectedMasks { ranges }),
        }
    }

    /// The writable mask of `reg` (0 outside the feature-ID range: nothing writable there).
    pub fn mask_for(&self, reg: SysReg) -> u64 {
        let Some(index) = reg.feature_id_range_index() else {
            return 0;
        };
        match self {
            WritableMasks::Reported { masks } => masks.get(index).copied().unwrap_or(0),
            WritableMasks::PreWritableIdRegisters if reg == catalog::ID_AA64PFR0_EL1 => {
                PRE_WRITABLE_PFR0_MASK
            }
            WritableMasks::PreWritableIdRegisters => 0,
        }
    }

    /// Where the masks came from.
    pub fn source(&self) -> MaskSource {
        match self {
            WritableMasks::Reported { .. } => MaskSource::Reported,
            WritableMasks::PreWritableIdRegisters => MaskSource::PreWritableIdRegisters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arm64::catalog::{CTR_EL0, ID_AA64ISAR0_EL1, ID_AA64PFR0_EL1, MPIDR_EL1};

    #[test]
    fn reported_masks_are_indexed_like_the_kernel() {
        let mut masks = vec![0u64; KVM_ARM_FEATURE_ID_RANGE_SIZE];
        masks[32] = 0xffff_00f0_0f00_ffff;
        masks[48] = 0xffff_ffff_ffff_fff0;
        masks[129] = 0x300f_000f;
        let masks = WritableMasks::from_reported(&masks).unwrap();
        assert_eq!(masks.mask_for(ID_AA64PFR0_EL1), 0xffff_00f0_0f00_ffff);
        assert_eq!(masks.mask_for(ID_AA64ISAR0_EL1), 0xffff_ffff_ffff_fff0);
        assert_eq!(masks.mask_for(CTR_EL0), 0x300f_000f);
        assert_eq!(masks.mask_for(MPIDR_EL1), 0);
        assert_eq!(masks.source(), MaskSource::Reported);
    }

    #[test]
    fn the_pre_writable_rule_opens_only_csv2_and_csv3() {
        let masks = WritableMasks::PreWritableIdRegisters;
        assert_eq!(masks.mask_for(ID_AA64PFR0_EL1), 0xFF00_0000_0000_0000);
        assert_eq!(masks.mask_for(ID_AA64ISAR0_EL1), 0);
        assert_eq!(masks.mask_for(CTR_EL0), 0);
    }

    #[test]
    fn the_capability_decides_which_masks_apply() {
        let masks = vec![0u64; KVM_ARM_FEATURE_ID_RANGE_SIZE];
        assert!(matches!(
            WritableMasks::for_kernel(1, Some(&masks)),
            Ok(WritableMasks::Reported { .. })
        ));
        assert_eq!(
            WritableMasks::for_kernel(0, None),
            Ok(WritableMasks::PreWritableIdRegisters)
        );
        assert_eq!(
            WritableMasks::for_kernel(1, None),
            Err(MaskError::MissingMasks { ranges: 1 })
        );
        assert_eq!(
            WritableMasks::for_kernel(0, Some(&masks)),
            Err(MaskError::UnexpectedMasks { ranges: 0 })
        );
        let err = WritableMasks::from_reported(&[0; 3]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "KVM_ARM_GET_REG_WRITABLE_MASKS fills 192 masks; 3 were given"
        );
    }

    #[test]
    fn deserializing_checks_the_count() {
        let good = WritableMasks::from_reported(&[7; KVM_ARM_FEATURE_ID_RANGE_SIZE]).unwrap();
        let json = serde_json::to_string(&good).unwrap();
        assert_eq!(serde_json::from_str::<WritableMasks>(&json).unwrap(), good);
        let bad = r#"{"Reported":{"masks":[1,2,3]}}"#;
        let err = serde_json::from_str::<WritableMasks>(bad).unwrap_err();
        assert!(err.to_string().contains("3 were given"), "{err}");
    }
}
