//! The system registers the arm64 guest reads: named by their `(op0, op1, CRn, CRm, op2)`
//! encoding, convertible to and from the `KVM_GET_ONE_REG` id the rest of vmfleet uses.

use super::asm::SysRegOperand;
use crate::guest::GuestError;
use std::fmt;

/// `KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG`: the fixed upper bits of every
/// 64-bit system-register id (`ARM64_SYS_REG`, kvm-semantics §1.1); the encoding fills the low
/// 16 bits.
pub const KVM_SYSREG_ID_BASE: u64 = 0x6030_0000_0013_0000;

/// A system register `MRS` can read: `op0` is 2 (debug) or 3 (everything else; `MRS` has a
/// single bit for op0, which is why 0 and 1 cannot be encoded), `op1` 0..=7, `CRn` and `CRm`
/// 0..=15, `op2` 0..=7. Only the constructors can make one, so every value is encodable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SysReg {
    /// `op0 << 14 | op1 << 11 | CRn << 7 | CRm << 3 | op2`, the same layout as the low 16 bits of
    /// the KVM id.
    encoding: u16,
}

impl SysReg {
    /// The register `S<op0>_<op1>_C<crn>_C<crm>_<op2>`, or why `MRS` cannot name it.
    pub fn new(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Result<SysReg, GuestError> {
        let fields = [("op0", op0, 3), ("op1", op1, 7), ("CRn", crn, 15)];
        let fields = fields
            .into_iter()
            .chain([("CRm", crm, 15), ("op2", op2, 7)]);
        for (name, value, max) in fields {
            if value > max {
                return Err(GuestError::NotAnMrsRegister {
                    register: format!("({op0}, {op1}, {crn}, {crm}, {op2})"),
                    why: format!("{name} is {value}, at most {max}"),
                });
            }
        }
        if op0 < 2 {
            return Err(GuestError::NotAnMrsRegister {
                register: format!("({op0}, {op1}, {crn}, {crm}, {op2})"),
                why: format!("op0 {op0} encodes instructions, not registers; MRS reads op0 2 or 3"),
            });
        }
        Ok(SysReg::known(op0, op1, crn, crm, op2))
    }

    /// The register a `KVM_{GET,SET}_ONE_REG` id names, if it is a 64-bit system register `MRS`
    /// can read.
    pub fn from_kvm_id(id: u64) -> Result<SysReg, GuestError> {
        if id & !0xffff != KVM_SYSREG_ID_BASE {
            return Err(GuestError::NotAnMrsRegister {
                register: format!("{id:#018x}"),
                why: format!(
                    "not a 64-bit system-register id (those are {KVM_SYSREG_ID_BASE:#018x} | \
                     encoding)"
                ),
            });
        }
        let encoding = (id & 0xffff) as u16;
        let field = |shift: u16, mask: u16| ((encoding >> shift) & mask) as u8;
        SysReg::new(
            field(14, 3),
            field(11, 7),
            field(7, 15),
            field(3, 15),
            field(0, 7),
        )
    }

    /// For constants: the caller guarantees the fields are in range and op0 is 2 or 3 (the
    /// catalog test checks every constant below against [`SysReg::new`]).
    const fn known(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> SysReg {
        SysReg {
            encoding: ((op0 as u16) << 14)
                | ((op1 as u16) << 11)
                | ((crn as u16) << 7)
                | ((crm as u16) << 3)
                | op2 as u16,
        }
    }

    /// The 16-bit encoding (`op0 << 14 | op1 << 11 | CRn << 7 | CRm << 3 | op2`).
    pub const fn encoding(self) -> u16 {
        self.encoding
    }

    /// The `KVM_GET_ONE_REG` id: [`KVM_SYSREG_ID_BASE`] | encoding.
    pub const fn kvm_id(self) -> u64 {
        KVM_SYSREG_ID_BASE | self.encoding as u64
    }

    /// `(op0, op1, CRn, CRm, op2)`.
    pub const fn fields(self) -> (u8, u8, u8, u8, u8) {
        let e = self.encoding;
        (
            (e >> 14) as u8 & 3,
            (e >> 11) as u8 & 7,
            (e >> 7) as u8 & 15,
            (e >> 3) as u8 & 15,
            e as u8 & 7,
        )
    }

    /// The operand of `MRS`.
    pub(crate) const fn operand(self) -> SysRegOperand {
        let (op0, op1, crn, crm, op2) = self.fields();
        super::asm::sysreg(op0, op1, crn, crm, op2)
    }

    /// The architectural name, for the registers in [`NAMED`].
    pub fn name(self) -> Option<&'static str> {
        NAMED
            .iter()
            .find(|(reg, _)| *reg == self)
            .map(|&(_, name)| name)
    }
}

/// The architectural name, or the generic `S<op0>_<op1>_C<n>_C<m>_<op2>` that assemblers accept.
impl fmt::Display for SysReg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => {
                let (op0, op1, crn, crm, op2) = self.fields();
                write!(f, "S{op0}_{op1}_C{crn}_C{crm}_{op2}")
            }
        }
    }
}

/// `MIDR_EL1` (3, 0, 0, 0, 0).
pub const MIDR_EL1: SysReg = SysReg::known(3, 0, 0, 0, 0);
/// `MPIDR_EL1` (3, 0, 0, 0, 5).
pub const MPIDR_EL1: SysReg = SysReg::known(3, 0, 0, 0, 5);
/// `REVIDR_EL1` (3, 0, 0, 0, 6).
pub const REVIDR_EL1: SysReg = SysReg::known(3, 0, 0, 0, 6);
/// `ID_DFR0_EL1` (3, 0, 0, 1, 2), AArch32.
pub const ID_DFR0_EL1: SysReg = SysReg::known(3, 0, 0, 1, 2);
/// `ID_AA64PFR0_EL1` (3, 0, 0, 4, 0).
pub const ID_AA64PFR0_EL1: SysReg = SysReg::known(3, 0, 0, 4, 0);
/// `ID_AA64PFR1_EL1` (3, 0, 0, 4, 1).
pub const ID_AA64PFR1_EL1: SysReg = SysReg::known(3, 0, 0, 4, 1);
/// `ID_AA64PFR2_EL1` (3, 0, 0, 4, 2).
pub const ID_AA64PFR2_EL1: SysReg = SysReg::known(3, 0, 0, 4, 2);
/// `ID_AA64ZFR0_EL1` (3, 0, 0, 4, 4).
pub const ID_AA64ZFR0_EL1: SysReg = SysReg::known(3, 0, 0, 4, 4);
/// `ID_AA64SMFR0_EL1` (3, 0, 0, 4, 5).
pub const ID_AA64SMFR0_EL1: SysReg = SysReg::known(3, 0, 0, 4, 5);
/// `ID_AA64FPFR0_EL1` (3, 0, 0, 4, 7).
pub const ID_AA64FPFR0_EL1: SysReg = SysReg::known(3, 0, 0, 4, 7);
/// `ID_AA64DFR0_EL1` (3, 0, 0, 5, 0).
pub const ID_AA64DFR0_EL1: SysReg = SysReg::known(3, 0, 0, 5, 0);
/// `ID_AA64DFR1_EL1` (3, 0, 0, 5, 1).
pub const ID_AA64DFR1_EL1: SysReg = SysReg::known(3, 0, 0, 5, 1);
/// `ID_AA64AFR0_EL1` (3, 0, 0, 5, 4).
pub const ID_AA64AFR0_EL1: SysReg = SysReg::known(3, 0, 0, 5, 4);
/// `ID_AA64AFR1_EL1` (3, 0, 0, 5, 5).
pub const ID_AA64AFR1_EL1: SysReg = SysReg::known(3, 0, 0, 5, 5);
/// `ID_AA64ISAR0_EL1` (3, 0, 0, 6, 0).
pub const ID_AA64ISAR0_EL1: SysReg = SysReg::known(3, 0, 0, 6, 0);
/// `ID_AA64ISAR1_EL1` (3, 0, 0, 6, 1).
pub const ID_AA64ISAR1_EL1: SysReg = SysReg::known(3, 0, 0, 6, 1);
/// `ID_AA64ISAR2_EL1` (3, 0, 0, 6, 2).
pub const ID_AA64ISAR2_EL1: SysReg = SysReg::known(3, 0, 0, 6, 2);
/// `ID_AA64ISAR3_EL1` (3, 0, 0, 6, 3).
pub const ID_AA64ISAR3_EL1: SysReg = SysReg::known(3, 0, 0, 6, 3);
/// `ID_AA64MMFR0_EL1` (3, 0, 0, 7, 0).
pub const ID_AA64MMFR0_EL1: SysReg = SysReg::known(3, 0, 0, 7, 0);
/// `ID_AA64MMFR1_EL1` (3, 0, 0, 7, 1).
pub const ID_AA64MMFR1_EL1: SysReg = SysReg::known(3, 0, 0, 7, 1);
/// `ID_AA64MMFR2_EL1` (3, 0, 0, 7, 2).
pub const ID_AA64MMFR2_EL1: SysReg = SysReg::known(3, 0, 0, 7, 2);
/// `ID_AA64MMFR3_EL1` (3, 0, 0, 7, 3).
pub const ID_AA64MMFR3_EL1: SysReg = SysReg::known(3, 0, 0, 7, 3);
/// `ID_AA64MMFR4_EL1` (3, 0, 0, 7, 4).
pub const ID_AA64MMFR4_EL1: SysReg = SysReg::known(3, 0, 0, 7, 4);
/// `CLIDR_EL1` (3, 1, 0, 0, 1).
pub const CLIDR_EL1: SysReg = SysReg::known(3, 1, 0, 0, 1);
/// `AIDR_EL1` (3, 1, 0, 0, 7).
pub const AIDR_EL1: SysReg = SysReg::known(3, 1, 0, 0, 7);
/// `CTR_EL0` (3, 3, 0, 0, 1).
pub const CTR_EL0: SysReg = SysReg::known(3, 3, 0, 0, 1);

/// The registers [`SysReg::name`] knows, with their names.
pub const NAMED: [(SysReg, &str); 26] = [
    (MIDR_EL1, "MIDR_EL1"),
    (MPIDR_EL1, "MPIDR_EL1"),
    (REVIDR_EL1, "REVIDR_EL1"),
    (ID_DFR0_EL1, "ID_DFR0_EL1"),
    (ID_AA64PFR0_EL1, "ID_AA64PFR0_EL1"),
    (ID_AA64PFR1_EL1, "ID_AA64PFR1_EL1"),
    (ID_AA64PFR2_EL1, "ID_AA64PFR2_EL1"),
    (ID_AA64ZFR0_EL1, "ID_AA64ZFR0_EL1"),
    (ID_AA64SMFR0_EL1, "ID_AA64SMFR0_EL1"),
    (ID_AA64FPFR0_EL1, "ID_AA64FPFR0_EL1"),
    (ID_AA64DFR0_EL1, "ID_AA64DFR0_EL1"),
    (ID_AA64DFR1_EL1, "ID_AA64DFR1_EL1"),
    (ID_AA64AFR0_EL1, "ID_AA64AFR0_EL1"),
    (ID_AA64AFR1_EL1, "ID_AA64AFR1_EL1"),
    (ID_AA64ISAR0_EL1, "ID_AA64ISAR0_EL1"),
    (ID_AA64ISAR1_EL1, "ID_AA64ISAR1_EL1"),
    (ID_AA64ISAR2_EL1, "ID_AA64ISAR2_EL1"),
    (ID_AA64ISAR3_EL1, "ID_AA64ISAR3_EL1"),
    (ID_AA64MMFR0_EL1, "ID_AA64MMFR0_EL1"),
    (ID_AA64MMFR1_EL1, "ID_AA64MMFR1_EL1"),
    (ID_AA64MMFR2_EL1, "ID_AA64MMFR2_EL1"),
    (ID_AA64MMFR3_EL1, "ID_AA64MMFR3_EL1"),
    (ID_AA64MMFR4_EL1, "ID_AA64MMFR4_EL1"),
    (CLIDR_EL1, "CLIDR_EL1"),
    (AIDR_EL1, "AIDR_EL1"),
    (CTR_EL0, "CTR_EL0"),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids from kvm-semantics §2.3 (`ARM64_SYS_REG`), checked both ways.
    #[test]
    fn kvm_ids() {
        for (reg, id) in [
            (ID_AA64PFR0_EL1, 0x6030_0000_0013_c020),
            (ID_AA64ISAR0_EL1, 0x6030_0000_0013_c030),
            (ID_AA64MMFR2_EL1, 0x6030_0000_0013_c03a),
            (ID_DFR0_EL1, 0x6030_0000_0013_c00a),
            (MPIDR_EL1, 0x6030_0000_0013_c005),
            (CLIDR_EL1, 0x6030_0000_0013_c801),
            (AIDR_EL1, 0x6030_0000_0013_c807),
            (CTR_EL0, 0x6030_0000_0013_d801),
        ] {
            assert_eq!(reg.kvm_id(), id, "{reg}");
            assert_eq!(SysReg::from_kvm_id(id).unwrap(), reg, "{id:#x}");
        }
    }

    #[test]
    fn catalog_constants_are_valid_and_distinct() {
        for (i, &(reg, name)) in NAMED.iter().enumerate() {
            let (op0, op1, crn, crm, op2) = reg.fields();
            assert_eq!(SysReg::new(op0, op1, crn, crm, op2).unwrap(), reg, "{name}");
            assert_eq!(reg.to_string(), name);
            assert!(NAMED[..i].iter().all(|&(other, _)| other != reg), "{name}");
        }
    }

    #[test]
    fn unnamed_registers_use_the_generic_name() {
        let reg = SysReg::new(3, 0, 0, 4, 3).unwrap();
        assert_eq!(reg.to_string(), "S3_0_C0_C4_3");
        assert_eq!(reg.name(), None);
        assert_eq!(reg.kvm_id(), 0x6030_0000_0013_c023);
    }

    #[test]
    fn what_mrs_cannot_read_is_refused() {
        let why = |result: Result<SysReg, GuestError>| match result.unwrap_err() {
            GuestError::NotAnMrsRegister { why, .. } => why,
            other => panic!("{other}"),
        };
        assert!(why(SysReg::new(1, 0, 7, 5, 1)).contains("op0 1 encodes instructions"));
        assert!(why(SysReg::new(4, 0, 0, 0, 0)).contains("op0 is 4, at most 3"));
        assert!(why(SysReg::new(3, 8, 0, 0, 0)).contains("op1 is 8"));
        assert!(why(SysReg::new(3, 0, 16, 0, 0)).contains("CRn is 16"));
        assert!(why(SysReg::new(3, 0, 0, 16, 0)).contains("CRm is 16"));
        assert!(why(SysReg::new(3, 0, 0, 0, 8)).contains("op2 is 8"));
        // A core register, a firmware register, a 32-bit DEMUX id: not system registers.
        for id in [
            0x6030_0000_0010_0040,
            0x6030_0000_0014_0000,
            0x6020_0000_0011_0000,
        ] {
            let error = SysReg::from_kvm_id(id).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("not a 64-bit system-register id"),
                "{error}"
            );
        }
        // The right prefix with op0 0.
        let error = SysReg::from_kvm_id(KVM_SYSREG_ID_BASE | 0x0020).unwrap_err();
        assert!(error.to_string().contains("op0 0"), "{error}");
    }
}
