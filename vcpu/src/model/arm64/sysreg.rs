//! System-register encodings `(op0, op1, CRn, CRm, op2)`, their `KVM_{GET,SET}_ONE_REG` ids
//! (`ARM64_SYS_REG`) and their slot in the array `KVM_ARM_GET_REG_WRITABLE_MASKS` fills.

use super::catalog;
use super::reg_id;
use crate::hypervisor::abi::{
    COPROC_SYSREG, KVM_ARM_FEATURE_ID_RANGE_SIZE, KVM_REG_ARM64, KVM_REG_ARM64_SYSREG,
    KVM_REG_SIZE_MASK, KVM_REG_SIZE_U64,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Every system-register id is this plus the 16-bit encoding.
const SYSREG_ID_BASE: u64 = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG;

/// A system-register encoding. The fields are private so that every value is in range: `op0` 2
/// bits, `op1` 3, `CRn` 4, `CRm` 4, `op2` 3.
///
/// Orders by encoding (the order KVM lists system registers in). Serializes as its generic name
/// (`S3_0_C0_C4_0`), which is unambiguous and reads the same in every trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SysReg {
    op0: u8,
    op1: u8,
    crn: u8,
    crm: u8,
    op2: u8,
}

/// Why an encoding or an id is not a system register.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SysRegError {
    /// One of the five numbers does not fit its bit field.
    #[error("{part} = {value} does not fit a system-register encoding (at most {max})")]
    OutOfRange {
        /// `op0`, `op1`, `CRn`, `CRm` or `op2`.
        part: String,
        /// The value given.
        value: u32,
        /// The largest value the field holds.
        max: u32,
    },
    /// KVM's first check refuses the id as not arm64 (it would answer `EINVAL`).
    #[error(
        "register id {id:#018x} is not an arm64 register id: its upper 32 bits without the size \
         field are not KVM_REG_ARM64 (0x60000000)"
    )]
    NotArm64 {
        /// The id given.
        id: u64,
    },
    /// The id belongs to another register family.
    #[error(
        "register id {id:#018x} is not a system register: its coprocessor field is {coproc:#x}, \
         not KVM_REG_ARM64_SYSREG (0x13)"
    )]
    NotSysReg {
        /// The id given.
        id: u64,
        /// Its coprocessor field.
        coproc: u16,
    },
    /// System registers are 8 bytes; KVM does not find one by an id of another size.
    #[error(
        "register id {id:#018x} announces {size} bytes; system registers are 8 bytes \
         (KVM_REG_SIZE_U64)"
    )]
    WrongSize {
        /// The id given.
        id: u64,
        /// The size it announces.
        size: u64,
    },
    /// Bits between the coprocessor field and the encoding are set.
    #[error("register id {id:#018x} has bits set outside the system-register encoding")]
    StrayBits {
        /// The id given.
        id: u64,
    },
    /// A name that is neither in the catalog nor of the form `S<op0>_<op1>_C<n>_C<m>_<op2>`.
    #[error("`{name}` is not a system-register name")]
    UnknownName {
        /// The name given.
        name: String,
    },
}

impl SysReg {
    /// An encoding, checked field by field.
    pub fn new(op0: u32, op1: u32, crn: u32, crm: u32, op2: u32) -> Result<SysReg, SysRegError> {
        let check = |part: &str, value: u32, max: u32| {
            if value > max {
                Err(SysRegError::OutOfRange {
                    part: part.to_string(),
                    value,
                    max,
                })
            } else {
                // In range, so at most 15: fits a u8.
                Ok(value as u8)
            }
        };
        Ok(SysReg {
            op0: check("op0", op0, 3)?,
            op1: check("op1", op1, 7)?,
            crn: check("CRn", crn, 15)?,
            crm: check("CRm", crm, 15)?,
            op2: check("op2", op2, 7)?,
        })
    }

    /// An encoding from constants of the catalog. Out-of-range bits are masked off rather than
    /// checked (a `const fn` cannot return the error); a catalog test round-trips every constant.
    pub(crate) const fn at(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> SysReg {
        SysReg {
            op0: op0 & 0x3,
            op1: op1 & 0x7,
            crn: crn & 0xf,
            crm: crm & 0xf,
            op2: op2 & 0x7,
        }
    }

    /// `op0`.
    pub const fn op0(self) -> u8 {
        self.op0
    }
    /// `op1`.
    pub const fn op1(self) -> u8 {
        self.op1
    }
    /// `CRn`.
    pub const fn crn(self) -> u8 {
        self.crn
    }
    /// `CRm`.
    pub const fn crm(self) -> u8 {
        self.crm
    }
    /// `op2`.
    pub const fn op2(self) -> u8 {
        self.op2
    }

    /// The 16-bit encoding `op0<<14 | op1<<11 | CRn<<7 | CRm<<3 | op2`.
    pub const fn encoding(self) -> u16 {
        (self.op0 as u16) << 14
            | (self.op1 as u16) << 11
            | (self.crn as u16) << 7
            | (self.crm as u16) << 3
            | self.op2 as u16
    }

    /// The encoding of a 16-bit value (every value is one).
    pub const fn from_encoding(encoding: u16) -> SysReg {
        SysReg {
            op0: (encoding >> 14) as u8 & 0x3,
            op1: (encoding >> 11) as u8 & 0x7,
            crn: (encoding >> 7) as u8 & 0xf,
            crm: (encoding >> 3) as u8 & 0xf,
            op2: encoding as u8 & 0x7,
        }
    }

    /// The `KVM_{GET,SET}_ONE_REG` id (`ARM64_SYS_REG(op0, op1, crn, crm, op2)`).
    pub const fn kvm_reg_id(self) -> u64 {
        SYSREG_ID_BASE | self.encoding() as u64
    }

    /// The encoding an id names, or why it names none. Refuses exactly what KVM's
    /// `index_to_params` refuses: another architecture, another coprocessor, another size, or
    /// stray bits.
    pub fn from_kvm_reg_id(id: u64) -> Result<SysReg, SysRegError> {
        if !reg_id::is_arm64(id) {
            return Err(SysRegError::NotArm64 { id });
        }
        let coproc = reg_id::coproc(id);
        if coproc != COPROC_SYSREG {
            return Err(SysRegError::NotSysReg { id, coproc });
        }
        if id & KVM_REG_SIZE_MASK != KVM_REG_SIZE_U64 {
            return Err(SysRegError::WrongSize {
                id,
                size: reg_id::size_bytes(id),
            });
        }
        if id & !0xffff != SYSREG_ID_BASE {
            return Err(SysRegError::StrayBits { id });
        }
        Ok(SysReg::from_encoding(id as u16))
    }

    /// Whether KVM counts the register in the feature-ID range (`is_feature_id_reg`): op0 = 3,
    /// op1 ∈ {0, 1, 3}, CRn = 0, CRm < 8. These are the registers with a writable mask.
    pub const fn is_feature_id(self) -> bool {
        self.op0 == 3 && matches!(self.op1, 0 | 1 | 3) && self.crn == 0 && self.crm < 8
    }

    /// The index into the `KVM_ARM_GET_REG_WRITABLE_MASKS` array
    /// (`KVM_ARM_FEATURE_ID_RANGE_IDX`: op1 0/1/3 → 0/1/2, then `op1' * 64 + CRm * 8 + op2`), or
    /// `None` outside the feature-ID range.
    pub const fn feature_id_range_index(self) -> Option<usize> {
        if !self.is_feature_id() {
            return None;
        }
        let op1 = if self.op1 == 3 { 2 } else { self.op1 as usize };
        Some(op1 << 6 | (self.crm as usize) << 3 | self.op2 as usize)
    }

    /// The encoding whose mask sits at `index` of the writable-mask array (`None` past its end).
    pub const fn from_feature_id_range_index(index: usize) -> Option<SysReg> {
        if index >= KVM_ARM_FEATURE_ID_RANGE_SIZE {
            return None;
        }
        let op1 = match index >> 6 {
            0 => 0,
            1 => 1,
            _ => 3,
        };
        Some(SysReg::at(
            3,
            op1,
            0,
            ((index >> 3) & 7) as u8,
            (index & 7) as u8,
        ))
    }

    /// The architectural generic name, `S3_0_C0_C4_0`: what assemblers accept for any encoding.
    pub fn generic_name(self) -> String {
        format!(
            "S{}_{}_C{}_C{}_{}",
            self.op0, self.op1, self.crn, self.crm, self.op2
        )
    }

    /// Parse a generic name (`S3_0_C0_C4_0`, any case), checking every field's range.
    pub fn parse_generic_name(name: &str) -> Result<SysReg, SysRegError> {
        let unknown = || SysRegError::UnknownName {
            name: name.to_string(),
        };
        let upper = name.trim().to_ascii_uppercase();
        let rest = upper.strip_prefix('S').ok_or_else(unknown)?;
        let parts: Vec<&str> = rest.split('_').collect();
        let [op0, op1, crn, crm, op2] = parts.as_slice() else {
            return Err(unknown());
        };
        let number = |text: &str| text.parse::<u32>().map_err(|_| unknown());
        let cr = |text: &str| text.strip_prefix('C').ok_or_else(unknown).and_then(number);
        SysReg::new(number(op0)?, number(op1)?, cr(crn)?, cr(crm)?, number(op2)?)
    }
}

impl fmt::Display for SysReg {
    /// The catalog name where there is one (`ID_AA64PFR0_EL1`), else the generic name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&catalog::name_of(*self))
    }
}

impl Serialize for SysReg {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.generic_name())
    }
}

impl<'de> Deserialize<'de> for SysReg {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        SysReg::parse_generic_name(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worked_example_of_the_reference_encodes_and_decodes() {
        let pfr0 = SysReg::new(3, 0, 0, 4, 0).unwrap();
        assert_eq!(pfr0.kvm_reg_id(), 0x6030_0000_0013_C020);
        assert_eq!(SysReg::from_kvm_reg_id(0x6030_0000_0013_C020), Ok(pfr0));
        assert_eq!(pfr0.generic_name(), "S3_0_C0_C4_0");
    }

    #[test]
    fn every_encoding_round_trips_through_its_id() {
        for encoding in 0..=u16::MAX {
            let reg = SysReg::from_encoding(encoding);
            assert_eq!(reg.encoding(), encoding);
            assert_eq!(SysReg::from_kvm_reg_id(reg.kvm_reg_id()), Ok(reg));
            assert_eq!(SysReg::parse_generic_name(&reg.generic_name()), Ok(reg));
        }
    }

    #[test]
    fn out_of_range_parts_are_refused_by_name() {
        let err = SysReg::new(4, 0, 0, 0, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "op0 = 4 does not fit a system-register encoding (at most 3)"
        );
        assert!(SysReg::new(3, 8, 0, 0, 0).is_err());
        assert!(SysReg::new(3, 0, 16, 0, 0).is_err());
        assert!(SysReg::new(3, 0, 0, 16, 0).is_err());
        assert!(SysReg::new(3, 0, 0, 0, 8).is_err());
        assert!(SysReg::parse_generic_name("S3_0_C0_C16_0").is_err());
        assert!(SysReg::parse_generic_name("S3_0_0_4_0").is_err());
        assert!(SysReg::parse_generic_name("ID_AA64PFR0_EL1").is_err());
    }

    #[test]
    fn non_sysreg_ids_are_refused_with_the_reason() {
        // A core register, a firmware register, a U32-sized sysreg id, stray bits, x86.
        assert_eq!(
            SysReg::from_kvm_reg_id(0x6030_0000_0010_0000),
            Err(SysRegError::NotSysReg {
                id: 0x6030_0000_0010_0000,
                coproc: 0x10
            })
        );
        assert!(matches!(
            SysReg::from_kvm_reg_id(0x6030_0000_0014_0000),
            Err(SysRegError::NotSysReg { coproc: 0x14, .. })
        ));
        assert_eq!(
            SysReg::from_kvm_reg_id(0x6020_0000_0013_C020),
            Err(SysRegError::WrongSize {
                id: 0x6020_0000_0013_C020,
                size: 4
            })
        );
        assert!(matches!(
            SysReg::from_kvm_reg_id(0x6030_0000_1013_C020),
            Err(SysRegError::StrayBits { .. })
        ));
        assert!(matches!(
            SysReg::from_kvm_reg_id(0x2030_0000_0013_C020),
            Err(SysRegError::NotArm64 { .. })
        ));
        let message = SysReg::from_kvm_reg_id(0x6030_0000_0016_0000)
            .unwrap_err()
            .to_string();
        assert!(message.contains("0x6030000000160000"), "{message}");
        assert!(message.contains("0x16"), "{message}");
    }

    #[test]
    fn writable_mask_indexes_follow_kvm_arm_feature_id_range_idx() {
        let idx = |op0, op1, crn, crm, op2| {
            SysReg::new(op0, op1, crn, crm, op2)
                .unwrap()
                .feature_id_range_index()
        };
        assert_eq!(idx(3, 0, 0, 0, 0), Some(0)); // MIDR_EL1
        assert_eq!(idx(3, 0, 0, 1, 2), Some(10)); // ID_DFR0_EL1
        assert_eq!(idx(3, 0, 0, 4, 0), Some(32)); // ID_AA64PFR0_EL1
        assert_eq!(idx(3, 0, 0, 6, 0), Some(48)); // ID_AA64ISAR0_EL1
        assert_eq!(idx(3, 0, 0, 7, 4), Some(60)); // ID_AA64MMFR4_EL1
        assert_eq!(idx(3, 1, 0, 0, 1), Some(65)); // CLIDR_EL1
        assert_eq!(idx(3, 1, 0, 0, 7), Some(71)); // AIDR_EL1
        assert_eq!(idx(3, 3, 0, 0, 1), Some(129)); // CTR_EL0
        assert_eq!(idx(3, 0, 1, 0, 0), None); // SCTLR_EL1: CRn 1
        assert_eq!(idx(3, 2, 0, 0, 0), None); // CSSELR_EL1: op1 2
        assert_eq!(idx(2, 0, 0, 0, 4), None); // a debug register: op0 2
        for index in 0..KVM_ARM_FEATURE_ID_RANGE_SIZE {
            let reg = SysReg::from_feature_id_range_index(index).unwrap();
            assert_eq!(reg.feature_id_range_index(), Some(index));
        }
        assert_eq!(SysReg::from_feature_id_range_index(192), None);
    }

    #[test]
    fn serializes_as_the_generic_name() {
        let reg = SysReg::new(3, 0, 0, 6, 0).unwrap();
        let json = serde_json::to_string(&reg).unwrap();
        assert_eq!(json, "\"S3_0_C0_C6_0\"");
        assert_eq!(serde_json::from_str::<SysReg>(&json).unwrap(), reg);
        assert!(serde_json::from_str::<SysReg>("\"S4_0_C0_C6_0\"").is_err());
        assert_eq!(reg.to_string(), "ID_AA64ISAR0_EL1");
    }
}
