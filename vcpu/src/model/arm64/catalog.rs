//! The ID-space system registers vmfleet names: every feature-ID slot (op0 = 3, op1 = 0, CRn = 0,
//! CRm = 1..7, op2 = 0..7) and the identification and cache-description registers around them
//! (MIDR, MPIDR, REVIDR, CLIDR, AIDR, CTR).
//!
//! Slots the architecture has named carry that name; the others (`ID_UNALLOCATED` in KVM: RAZ,
//! listed by `KVM_GET_REG_LIST`, writable only to 0) carry their generic name, `S3_0_C0_C5_2`,
//! so that every slot has exactly one name and a trace never shows a bare number. Where the
//! semantics reference and the reference kernel log call a slot unallocated, it stays generic
//! here, even if newer architecture releases have since named it.
//!
//! Scope follows KVM (`is_vm_ftr_id_reg`): the feature-ID registers, CTR_EL0, MIDR_EL1,
//! REVIDR_EL1 and AIDR_EL1 hold one value per VM; MPIDR_EL1 and CLIDR_EL1 one per vCPU.

use super::suggest;
use super::sysreg::SysReg;
use serde::{Deserialize, Serialize};

/// Whether KVM keeps one value per VM or per vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// One value for the VM: a write through any vCPU is seen by all of them.
    Vm,
    /// One value per vCPU.
    Vcpu,
}

/// What a register tells the guest, which decides the rules that apply to writing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegisterRole {
    /// An architecturally named feature-ID register, judged by `arm64_check_features`.
    FeatureId,
    /// A feature-ID slot the architecture (as KVM knows it) has not allocated: RAZ, writable
    /// only to 0.
    Unallocated,
    /// CTR_EL0, cache type: a feature-ID register with its own set handler.
    CacheType,
    /// CLIDR_EL1, cache levels: per vCPU, its own set handler.
    CacheLevels,
    /// MIDR_EL1, REVIDR_EL1, AIDR_EL1: writable only with `KVM_CAP_ARM_WRITABLE_IMP_ID_REGS`.
    Implementation,
    /// MPIDR_EL1, the vCPU's affinity: stored as given, no checks.
    Affinity,
}

/// One named register of the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Register {
    /// The name (architectural, or generic for unallocated slots).
    pub name: &'static str,
    /// The encoding.
    pub reg: SysReg,
    /// One value per VM or per vCPU.
    pub scope: Scope,
    /// What it tells the guest.
    pub role: RegisterRole,
    /// A one-line description.
    pub description: &'static str,
}

impl Register {
    /// The `KVM_{GET,SET}_ONE_REG` id.
    pub const fn kvm_reg_id(&self) -> u64 {
        self.reg.kvm_reg_id()
    }
}

/// Declares one constant per register and the [`REGISTERS`] table from a single list, so that the
/// two can never disagree.
macro_rules! registers {
    ($( $name:ident = ($op0:literal, $op1:literal, $crn:literal, $crm:literal, $op2:literal),
        $scope:ident, $role:ident, $description:literal; )*) => {
        $(
            #[doc = concat!("`", stringify!($name), "`: ", $description, ".")]
            pub const $name: SysReg = SysReg::at($op0, $op1, $crn, $crm, $op2);
        )*

        /// Every catalogued register, in encoding order.
        pub static REGISTERS: &[Register] = &[
            $( Register {
                name: stringify!($name),
                reg: $name,
                scope: Scope::$scope,
                role: RegisterRole::$role,
                description: $description,
            }, )*
        ];
    };
}

registers! {
    MIDR_EL1 = (3, 0, 0, 0, 0), Vm, Implementation, "Main ID Register";
    MPIDR_EL1 = (3, 0, 0, 0, 5), Vcpu, Affinity, "Multiprocessor Affinity Register";
    REVIDR_EL1 = (3, 0, 0, 0, 6), Vm, Implementation, "Revision ID Register";
    ID_PFR0_EL1 = (3, 0, 0, 1, 0), Vm, FeatureId, "AArch32 Processor Feature Register 0";
    ID_PFR1_EL1 = (3, 0, 0, 1, 1), Vm, FeatureId, "AArch32 Processor Feature Register 1";
    ID_DFR0_EL1 = (3, 0, 0, 1, 2), Vm, FeatureId, "AArch32 Debug Feature Register 0";
    ID_AFR0_EL1 = (3, 0, 0, 1, 3), Vm, FeatureId, "AArch32 Auxiliary Feature Register 0";
    ID_MMFR0_EL1 = (3, 0, 0, 1, 4), Vm, FeatureId, "AArch32 Memory Model Feature Register 0";
    ID_MMFR1_EL1 = (3, 0, 0, 1, 5), Vm, FeatureId, "AArch32 Memory Model Feature Register 1";
    ID_MMFR2_EL1 = (3, 0, 0, 1, 6), Vm, FeatureId, "AArch32 Memory Model Feature Register 2";
    ID_MMFR3_EL1 = (3, 0, 0, 1, 7), Vm, FeatureId, "AArch32 Memory Model Feature Register 3";
    ID_ISAR0_EL1 = (3, 0, 0, 2, 0), Vm, FeatureId, "AArch32 Instruction Set Attribute Register 0";
    ID_ISAR1_EL1 = (3, 0, 0, 2, 1), Vm, FeatureId, "AArch32 Instruction Set Attribute Register 1";
    ID_ISAR2_EL1 = (3, 0, 0, 2, 2), Vm, FeatureId, "AArch32 Instruction Set Attribute Register 2";
    ID_ISAR3_EL1 = (3, 0, 0, 2, 3), Vm, FeatureId, "AArch32 Instruction Set Attribute Register 3";
    ID_ISAR4_EL1 = (3, 0, 0, 2, 4), Vm, FeatureId, "AArch32 Instruction Set Attribute Register 4";
    ID_ISAR5_EL1 = (3, 0, 0, 2, 5), Vm, FeatureId, "AArch32 Instruction Set Attribute Register 5";
    ID_MMFR4_EL1 = (3, 0, 0, 2, 6), Vm, FeatureId, "AArch32 Memory Model Feature Register 4";
    ID_ISAR6_EL1 = (3, 0, 0, 2, 7), Vm, FeatureId, "AArch32 Instruction Set Attribute Register 6";
    MVFR0_EL1 = (3, 0, 0, 3, 0), Vm, FeatureId, "AArch32 Media and VFP Feature Register 0";
    MVFR1_EL1 = (3, 0, 0, 3, 1), Vm, FeatureId, "AArch32 Media and VFP Feature Register 1";
    MVFR2_EL1 = (3, 0, 0, 3, 2), Vm, FeatureId, "AArch32 Media and VFP Feature Register 2";
    S3_0_C0_C3_3 = (3, 0, 0, 3, 3), Vm, Unallocated, "unallocated feature-ID slot";
    ID_PFR2_EL1 = (3, 0, 0, 3, 4), Vm, FeatureId, "AArch32 Processor Feature Register 2";
    ID_DFR1_EL1 = (3, 0, 0, 3, 5), Vm, FeatureId, "AArch32 Debug Feature Register 1";
    ID_MMFR5_EL1 = (3, 0, 0, 3, 6), Vm, FeatureId, "AArch32 Memory Model Feature Register 5";
    S3_0_C0_C3_7 = (3, 0, 0, 3, 7), Vm, Unallocated, "unallocated feature-ID slot";
    ID_AA64PFR0_EL1 = (3, 0, 0, 4, 0), Vm, FeatureId, "AArch64 Processor Feature Register 0";
    ID_AA64PFR1_EL1 = (3, 0, 0, 4, 1), Vm, FeatureId, "AArch64 Processor Feature Register 1";
    ID_AA64PFR2_EL1 = (3, 0, 0, 4, 2), Vm, FeatureId, "AArch64 Processor Feature Register 2";
    S3_0_C0_C4_3 = (3, 0, 0, 4, 3), Vm, Unallocated, "unallocated feature-ID slot";
    ID_AA64ZFR0_EL1 = (3, 0, 0, 4, 4), Vm, FeatureId, "SVE Feature ID Register 0";
    ID_AA64SMFR0_EL1 = (3, 0, 0, 4, 5), Vm, FeatureId, "SME Feature ID Register 0";
    S3_0_C0_C4_6 = (3, 0, 0, 4, 6), Vm, Unallocated, "unallocated feature-ID slot";
    ID_AA64FPFR0_EL1 = (3, 0, 0, 4, 7), Vm, FeatureId, "AArch64 Floating-point Feature Register 0";
    ID_AA64DFR0_EL1 = (3, 0, 0, 5, 0), Vm, FeatureId, "AArch64 Debug Feature Register 0";
    ID_AA64DFR1_EL1 = (3, 0, 0, 5, 1), Vm, FeatureId, "AArch64 Debug Feature Register 1";
    S3_0_C0_C5_2 = (3, 0, 0, 5, 2), Vm, Unallocated, "unallocated feature-ID slot";
    S3_0_C0_C5_3 = (3, 0, 0, 5, 3), Vm, Unallocated, "unallocated feature-ID slot";
    ID_AA64AFR0_EL1 = (3, 0, 0, 5, 4), Vm, FeatureId, "AArch64 Auxiliary Feature Register 0";
    ID_AA64AFR1_EL1 = (3, 0, 0, 5, 5), Vm, FeatureId, "AArch64 Auxiliary Feature Register 1";
    S3_0_C0_C5_6 = (3, 0, 0, 5, 6), Vm, Unallocated, "unallocated feature-ID slot";
    S3_0_C0_C5_7 = (3, 0, 0, 5, 7), Vm, Unallocated, "unallocated feature-ID slot";
    ID_AA64ISAR0_EL1 = (3, 0, 0, 6, 0), Vm, FeatureId, "AArch64 Instruction Set Attribute Register 0";
    ID_AA64ISAR1_EL1 = (3, 0, 0, 6, 1), Vm, FeatureId, "AArch64 Instruction Set Attribute Register 1";
    ID_AA64ISAR2_EL1 = (3, 0, 0, 6, 2), Vm, FeatureId, "AArch64 Instruction Set Attribute Register 2";
    ID_AA64ISAR3_EL1 = (3, 0, 0, 6, 3), Vm, FeatureId, "AArch64 Instruction Set Attribute Register 3";
    S3_0_C0_C6_4 = (3, 0, 0, 6, 4), Vm, Unallocated, "unallocated feature-ID slot";
    S3_0_C0_C6_5 = (3, 0, 0, 6, 5), Vm, Unallocated, "unallocated feature-ID slot";
    S3_0_C0_C6_6 = (3, 0, 0, 6, 6), Vm, Unallocated, "unallocated feature-ID slot";
    S3_0_C0_C6_7 = (3, 0, 0, 6, 7), Vm, Unallocated, "unallocated feature-ID slot";
    ID_AA64MMFR0_EL1 = (3, 0, 0, 7, 0), Vm, FeatureId, "AArch64 Memory Model Feature Register 0";
    ID_AA64MMFR1_EL1 = (3, 0, 0, 7, 1), Vm, FeatureId, "AArch64 Memory Model Feature Register 1";
    ID_AA64MMFR2_EL1 = (3, 0, 0, 7, 2), Vm, FeatureId, "AArch64 Memory Model Feature Register 2";
    ID_AA64MMFR3_EL1 = (3, 0, 0, 7, 3), Vm, FeatureId, "AArch64 Memory Model Feature Register 3";
    ID_AA64MMFR4_EL1 = (3, 0, 0, 7, 4), Vm, FeatureId, "AArch64 Memory Model Feature Register 4";
    S3_0_C0_C7_5 = (3, 0, 0, 7, 5), Vm, Unallocated, "unallocated feature-ID slot";
    S3_0_C0_C7_6 = (3, 0, 0, 7, 6), Vm, Unallocated, "unallocated feature-ID slot";
    S3_0_C0_C7_7 = (3, 0, 0, 7, 7), Vm, Unallocated, "unallocated feature-ID slot";
    CLIDR_EL1 = (3, 1, 0, 0, 1), Vcpu, CacheLevels, "Cache Level ID Register";
    AIDR_EL1 = (3, 1, 0, 0, 7), Vm, Implementation, "Auxiliary ID Register";
    CTR_EL0 = (3, 3, 0, 0, 1), Vm, CacheType, "Cache Type Register";
}

/// The catalogued register with encoding `reg`.
pub fn by_reg(reg: SysReg) -> Option<&'static Register> {
    REGISTERS.iter().find(|r| r.reg == reg)
}

/// The catalogued register with `KVM_{GET,SET}_ONE_REG` id `id`.
pub fn by_id(id: u64) -> Option<&'static Register> {
    SysReg::from_kvm_reg_id(id).ok().and_then(by_reg)
}

/// The catalogued register called `name`: its name in any case (`-` read as `_`), or the generic
/// name of its encoding (`S3_0_C0_C4_0` finds `ID_AA64PFR0_EL1`).
pub fn by_name(name: &str) -> Option<&'static Register> {
    let wanted = suggest::normalise(name);
    REGISTERS
        .iter()
        .find(|r| r.name == wanted)
        .or_else(|| SysReg::parse_generic_name(&wanted).ok().and_then(by_reg))
}

/// The catalog name closest to `name`, for "unknown register … — did you mean …?".
pub fn suggest(name: &str) -> Option<&'static str> {
    suggest::closest(name, REGISTERS.iter().map(|r| r.name))
}

/// The catalog name of `reg`, or its generic name when the catalog does not have it.
pub fn name_of(reg: SysReg) -> String {
    by_reg(reg).map_or_else(|| reg.generic_name(), |r| r.name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_feature_id_slot_of_crm_1_to_7_is_catalogued_once() {
        for crm in 1..=7u32 {
            for op2 in 0..=7u32 {
                let reg = SysReg::new(3, 0, 0, crm, op2).unwrap();
                let matching = REGISTERS.iter().filter(|r| r.reg == reg).count();
                assert_eq!(matching, 1, "{}", reg.generic_name());
                assert_eq!(by_reg(reg).unwrap().scope, Scope::Vm);
            }
        }
        assert_eq!(REGISTERS.len(), 56 + 6);
    }

    #[test]
    fn names_are_unique_and_unallocated_slots_carry_their_generic_name() {
        let mut names = HashSet::new();
        let mut encodings = HashSet::new();
        for r in REGISTERS {
            assert!(names.insert(r.name), "duplicate name {}", r.name);
            assert!(encodings.insert(r.reg), "duplicate encoding {}", r.name);
            // The `at` constructor masks; a constant that needed masking would not round-trip.
            let checked = SysReg::new(
                r.reg.op0().into(),
                r.reg.op1().into(),
                r.reg.crn().into(),
                r.reg.crm().into(),
                r.reg.op2().into(),
            )
            .unwrap();
            assert_eq!(checked, r.reg);
            if r.role == RegisterRole::Unallocated {
                assert_eq!(r.name, r.reg.generic_name());
            } else {
                assert_ne!(r.name, r.reg.generic_name());
            }
        }
        assert!(
            REGISTERS.windows(2).all(|w| w[0].reg < w[1].reg),
            "the table is in encoding order"
        );
    }

    /// The ONE_REG ids of the semantics reference, §2.3.
    #[test]
    fn ids_match_the_reference_table() {
        let expected: &[(&str, u64)] = &[
            ("MIDR_EL1", 0x603000000013C000),
            ("MPIDR_EL1", 0x603000000013C005),
            ("REVIDR_EL1", 0x603000000013C006),
            ("ID_PFR0_EL1", 0x603000000013C008),
            ("ID_DFR0_EL1", 0x603000000013C00A),
            ("ID_MMFR5_EL1", 0x603000000013C01E),
            ("ID_AA64PFR0_EL1", 0x603000000013C020),
            ("ID_AA64PFR1_EL1", 0x603000000013C021),
            ("ID_AA64PFR2_EL1", 0x603000000013C022),
            ("ID_AA64ZFR0_EL1", 0x603000000013C024),
            ("ID_AA64SMFR0_EL1", 0x603000000013C025),
            ("ID_AA64FPFR0_EL1", 0x603000000013C027),
            ("ID_AA64DFR0_EL1", 0x603000000013C028),
            ("ID_AA64DFR1_EL1", 0x603000000013C029),
            ("ID_AA64AFR0_EL1", 0x603000000013C02C),
            ("ID_AA64AFR1_EL1", 0x603000000013C02D),
            ("ID_AA64ISAR0_EL1", 0x603000000013C030),
            ("ID_AA64ISAR1_EL1", 0x603000000013C031),
            ("ID_AA64ISAR2_EL1", 0x603000000013C032),
            ("ID_AA64ISAR3_EL1", 0x603000000013C033),
            ("ID_AA64MMFR0_EL1", 0x603000000013C038),
            ("ID_AA64MMFR1_EL1", 0x603000000013C039),
            ("ID_AA64MMFR2_EL1", 0x603000000013C03A),
            ("ID_AA64MMFR3_EL1", 0x603000000013C03B),
            ("ID_AA64MMFR4_EL1", 0x603000000013C03C),
            ("CLIDR_EL1", 0x603000000013C801),
            ("AIDR_EL1", 0x603000000013C807),
            ("CTR_EL0", 0x603000000013D801),
        ];
        for &(name, id) in expected {
            let register = by_name(name).unwrap_or_else(|| panic!("{name} is catalogued"));
            assert_eq!(register.kvm_reg_id(), id, "{name}");
            assert_eq!(by_id(id).map(|r| r.name), Some(name));
        }
        // The mask-array index of §2.3 for a few of them.
        assert_eq!(ID_AA64MMFR4_EL1.feature_id_range_index(), Some(60));
        assert_eq!(AIDR_EL1.feature_id_range_index(), Some(71));
    }

    #[test]
    fn lookup_by_name_ignores_case_and_accepts_generic_names() {
        assert_eq!(by_name("id_aa64isar0_el1").unwrap().reg, ID_AA64ISAR0_EL1);
        assert_eq!(by_name(" Ctr_El0 ").unwrap().reg, CTR_EL0);
        assert_eq!(by_name("s3_0_c0_c4_0").unwrap().name, "ID_AA64PFR0_EL1");
        assert_eq!(
            by_name("S3_0_C0_C5_2").unwrap().role,
            RegisterRole::Unallocated
        );
        assert_eq!(by_name("SCTLR_EL1"), None);
        assert_eq!(by_name("S3_0_C1_C0_0"), None, "SCTLR_EL1 is not catalogued");
        assert_eq!(suggest("ID_AA64ISR0_EL1"), Some("ID_AA64ISAR0_EL1"));
        assert_eq!(name_of(SysReg::new(3, 0, 1, 0, 0).unwrap()), "S3_0_C1_C0_0");
    }

    #[test]
    fn scopes_follow_kvm() {
        assert_eq!(by_reg(MPIDR_EL1).unwrap().scope, Scope::Vcpu);
        assert_eq!(by_reg(CLIDR_EL1).unwrap().scope, Scope::Vcpu);
        for reg in [MIDR_EL1, REVIDR_EL1, AIDR_EL1, CTR_EL0, ID_AA64PFR0_EL1] {
            assert_eq!(by_reg(reg).unwrap().scope, Scope::Vm);
        }
    }
}
