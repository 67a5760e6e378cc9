//! Writes to the registers whose field tables came straight from the kernel's `cpufeature.c`
//! (the AArch32 ID registers and ID_AA64FPFR0_EL1), judged by the validator: per table at least
//! one accepted lowering and one refused raise, plus the type-specific cases (signed fields,
//! higher-safe SpecSEI, exact one-bit fields, bits without a kernel entry).
//!
//! Limits are the values the 6.12 reference kernel reports (`tests/data/arm64-kvm-6.12-cpu-max.log`)
//! and the masks the ones it reports: 0xFFFFFFFF for every AArch32 register, 0xF0000003 for
//! ID_AA64FPFR0_EL1.

use super::*;
use crate::hypervisor::abi::KVM_ARM_FEATURE_ID_RANGE_SIZE;
use crate::hypervisor::errno::Errno;
use crate::model::arm64::catalog::{self as c};

/// The writable masks of the 6.12 reference kernel for the registers tested here.
fn masks_6_12() -> WritableMasks {
    let mut masks = vec![0u64; KVM_ARM_FEATURE_ID_RANGE_SIZE];
    for (reg, _) in LIMITS_6_12 {
        let Some(index) = reg.feature_id_range_index() else {
            panic!("{reg:?} is a feature-ID register");
        };
        masks[index] = 0xFFFF_FFFF;
    }
    let fpfr0 = c::ID_AA64FPFR0_EL1.feature_id_range_index().unwrap();
    masks[fpfr0] = 0xF000_0003;
    WritableMasks::from_reported(&masks).unwrap()
}

/// The AArch32 registers' values right after the first `KVM_ARM_VCPU_INIT` on the 6.12 reference
/// kernel (which is the limit).
const LIMITS_6_12: [(SysReg, u64); 20] = [
    (c::ID_PFR0_EL1, 0x0102_0131),
    (c::ID_PFR1_EL1, 0x1001_1001),
    (c::ID_DFR0_EL1, 0x0000_000a),
    (c::ID_MMFR0_EL1, 0x1010_1105),
    (c::ID_MMFR1_EL1, 0x4000_0000),
    (c::ID_MMFR2_EL1, 0x0126_0000),
    (c::ID_MMFR3_EL1, 0x0212_2211),
    (c::ID_ISAR0_EL1, 0x0210_1110),
    (c::ID_ISAR1_EL1, 0x1311_2111),
    (c::ID_ISAR2_EL1, 0x2123_2042),
    (c::ID_ISAR3_EL1, 0x0111_2131),
    (c::ID_ISAR4_EL1, 0x0001_1142),
    (c::ID_ISAR5_EL1, 0x0101_1121),
    (c::ID_MMFR4_EL1, 0x2002_1110),
    (c::ID_ISAR6_EL1, 0x0111_1111),
    (c::MVFR0_EL1, 0x1011_0222),
    (c::MVFR1_EL1, 0x1321_1111),
    (c::MVFR2_EL1, 0x0000_0043),
    (c::ID_PFR2_EL1, 0x0000_0011),
    (c::ID_MMFR5_EL1, 0x0000_0002),
];

fn limit_of(reg: SysReg) -> u64 {
    LIMITS_6_12
        .iter()
        .find(|(r, _)| *r == reg)
        .map(|(_, limit)| *limit)
        .unwrap()
}

fn judge(reg: SysReg, value: u64, limit: u64) -> Result<u64, Arm64Refusal> {
    check_feature_id_register(reg, value, limit, &masks_6_12(), VcpuFeatureSet::EMPTY)
}

/// `limit` with field `name` of `reg` set to `raw`.
fn with(reg: SysReg, name: &str, limit: u64, raw: u64) -> u64 {
    fields::field_of(reg, name)
        .unwrap()
        .field()
        .with(limit, raw)
}

/// Setting field `name` of `reg` to `to` (from the 6.12 limit) is accepted and stored as asked.
fn accepts(reg: SysReg, name: &str, to: u64) {
    let limit = limit_of(reg);
    let value = with(reg, name, limit, to);
    assert_eq!(
        judge(reg, value, limit),
        Ok(value),
        "{}.{name} = {to:#x}",
        catalog::name_of(reg)
    );
}

/// Setting field `name` of `reg` to `to` is refused with EINVAL, naming register, field, value, limit and rule.
fn refuses(reg: SysReg, name: &str, to: u64, rule: Arm64Rule) -> Arm64Refusal {
    let limit = limit_of(reg);
    let value = with(reg, name, limit, to);
    let register = catalog::name_of(reg);
    let refusal = judge(reg, value, limit).unwrap_err();
    assert_eq!(refusal.rule, rule, "{register}.{name} = {to:#x}: {refusal}");
    assert_eq!(refusal.errno, Errno::EINVAL);
    let field = fields::field_of(reg, name).unwrap().field();
    assert_eq!(refusal.field.as_ref().map(|f| f.name.as_str()), Some(name));
    assert_eq!(
        (refusal.requested, refusal.limit),
        (to, field.raw(limit)),
        "{refusal}"
    );
    let text = refusal.to_string();
    assert!(
        text.starts_with(&format!("{register}.{name} (bits {})", field.bits())),
        "{text}"
    );
    assert!(text.contains(&format!("requested {to:#x}")), "{text}");
    refusal
}

#[test]
fn every_aarch32_register_and_fpfr0_has_a_table_without_untyped_fields() {
    for (reg, _) in LIMITS_6_12
        .iter()
        .copied()
        .chain([(c::ID_AA64FPFR0_EL1, 0)])
    {
        let table = fields::table_for(reg).unwrap();
        assert!(
            table.fields.iter().all(|f| f.check != FieldCheck::Untyped),
            "{}",
            table.register_name()
        );
        // The bits the table leaves out are RES0 in the kernel's sysreg description.
        let covered = table.fields.iter().fold(0u64, |m, f| m | f.mask());
        let expected: u64 = match catalog::name_of(reg).as_str() {
            "ID_ISAR0_EL1" | "ID_ISAR6_EL1" => 0x0FFF_FFFF,
            "ID_ISAR5_EL1" => 0xFF0F_FFFF,
            "MVFR2_EL1" | "ID_MMFR5_EL1" => 0x0000_00FF,
            "ID_PFR2_EL1" => 0x0000_0FFF,
            "ID_AA64FPFR0_EL1" => 0xFC00_8003,
            _ => 0xFFFF_FFFF,
        };
        assert_eq!(covered, expected, "{}", table.register_name());
    }
}

#[test]
fn every_aarch32_limit_is_accepted_as_it_is() {
    for (reg, limit) in LIMITS_6_12 {
        assert_eq!(judge(reg, limit, limit), Ok(limit));
    }
}

#[test]
fn processor_feature_registers() {
    accepts(c::ID_PFR0_EL1, "State1", 2);
    accepts(c::ID_PFR0_EL1, "CSV2", 0);
    refuses(c::ID_PFR0_EL1, "CSV2", 3, Arm64Rule::AboveLimit);
    refuses(c::ID_PFR0_EL1, "AMU", 1, Arm64Rule::NoKernelFeatureEntry);
    refuses(c::ID_PFR0_EL1, "RAS", 1, Arm64Rule::NoKernelFeatureEntry);
    accepts(c::ID_PFR1_EL1, "GIC", 0);
    accepts(c::ID_PFR1_EL1, "Virtualization", 0);
    refuses(c::ID_PFR1_EL1, "GenTimer", 2, Arm64Rule::AboveLimit);
    accepts(c::ID_PFR2_EL1, "SSBS", 0);
    refuses(c::ID_PFR2_EL1, "CSV3", 2, Arm64Rule::AboveLimit);
    refuses(
        c::ID_PFR2_EL1,
        "RAS_frac",
        1,
        Arm64Rule::NoKernelFeatureEntry,
    );
}

#[test]
fn debug_feature_register_0_judges_every_field() {
    // The fields that were judged as fixed at the limit until now.
    let limit = 0x0011_111a;
    let judge_dfr0 = |v| judge(c::ID_DFR0_EL1, v, limit);
    for (name, shift) in [
        ("MProfDbg", 20),
        ("MMapTrc", 16),
        ("CopTrc", 12),
        ("MMapDbg", 8),
        ("CopSDbg", 4),
    ] {
        let lowered = limit & !(0xF << shift);
        assert_eq!(judge_dfr0(lowered), Ok(lowered), "{name} lowered");
        let raised = lowered | 2 << shift;
        let refusal = judge_dfr0(raised).unwrap_err();
        assert_eq!(refusal.rule, Arm64Rule::AboveLimit, "{name} raised");
        assert_eq!(refusal.field.unwrap().name, name);
    }
    accepts(c::ID_DFR0_EL1, "CopDbg", 8);
    refuses(c::ID_DFR0_EL1, "MMapTrc", 1, Arm64Rule::AboveLimit);
    refuses(
        c::ID_DFR0_EL1,
        "TraceFilt",
        1,
        Arm64Rule::NoKernelFeatureEntry,
    );
    // The set handler's floor still comes first.
    refuses(
        c::ID_DFR0_EL1,
        "CopDbg",
        5,
        Arm64Rule::BelowMinimum {
            minimum: 6,
            zero_allowed: false,
        },
    );
}

#[test]
fn memory_model_feature_registers() {
    accepts(c::ID_MMFR0_EL1, "VMSA", 4);
    refuses(c::ID_MMFR0_EL1, "VMSA", 6, Arm64Rule::AboveLimit);
    // InnerShr and OuterShr are signed: 0xF (-1) is below 1, 2 is above it.
    accepts(c::ID_MMFR0_EL1, "InnerShr", 0xF);
    accepts(c::ID_MMFR0_EL1, "OuterShr", 0xF);
    refuses(c::ID_MMFR0_EL1, "InnerShr", 2, Arm64Rule::AboveLimit);
    accepts(c::ID_MMFR1_EL1, "BPred", 3);
    refuses(c::ID_MMFR1_EL1, "L1HvdVA", 1, Arm64Rule::AboveLimit);
    accepts(c::ID_MMFR2_EL1, "UniTLB", 5);
    refuses(c::ID_MMFR2_EL1, "MemBarr", 3, Arm64Rule::AboveLimit);
    accepts(c::ID_MMFR3_EL1, "PAN", 1);
    refuses(c::ID_MMFR3_EL1, "PAN", 3, Arm64Rule::AboveLimit);
    accepts(c::ID_MMFR4_EL1, "HPDS", 1);
    refuses(c::ID_MMFR4_EL1, "EVT", 3, Arm64Rule::AboveLimit);
    accepts(c::ID_MMFR5_EL1, "ETS", 1);
    refuses(c::ID_MMFR5_EL1, "ETS", 3, Arm64Rule::AboveLimit);
    refuses(
        c::ID_MMFR5_EL1,
        "nTLBPA",
        1,
        Arm64Rule::NoKernelFeatureEntry,
    );
}

#[test]
fn mmfr4_spec_sei_is_higher_safe() {
    // The 6.12 limit has SpecSEI = 0: raising it is safe.
    accepts(c::ID_MMFR4_EL1, "SpecSEI", 1);
    // From a limit of 1, lowering it is not.
    let limit = limit_of(c::ID_MMFR4_EL1) | 1;
    let refusal = judge(c::ID_MMFR4_EL1, limit & !0xF, limit).unwrap_err();
    assert_eq!(refusal.rule, Arm64Rule::BelowLimit);
    assert_eq!(refusal.field.unwrap().name, "SpecSEI");
}

#[test]
fn instruction_set_attribute_registers() {
    accepts(c::ID_ISAR0_EL1, "Divide", 1);
    refuses(c::ID_ISAR0_EL1, "Divide", 3, Arm64Rule::AboveLimit);
    accepts(c::ID_ISAR1_EL1, "Interwork", 2);
    refuses(c::ID_ISAR1_EL1, "Jazelle", 2, Arm64Rule::AboveLimit);
    accepts(c::ID_ISAR2_EL1, "MemHint", 3);
    refuses(c::ID_ISAR2_EL1, "MultS", 4, Arm64Rule::AboveLimit);
    accepts(c::ID_ISAR3_EL1, "SIMD", 2);
    refuses(c::ID_ISAR3_EL1, "T32EE", 1, Arm64Rule::AboveLimit);
    accepts(c::ID_ISAR4_EL1, "WithShifts", 3);
    refuses(c::ID_ISAR4_EL1, "Barrier", 2, Arm64Rule::AboveLimit);
    accepts(c::ID_ISAR5_EL1, "AES", 1);
    refuses(c::ID_ISAR5_EL1, "RDM", 2, Arm64Rule::AboveLimit);
    refuses(c::ID_ISAR5_EL1, "VCMA", 1, Arm64Rule::NoKernelFeatureEntry);
    accepts(c::ID_ISAR6_EL1, "SB", 0);
    refuses(c::ID_ISAR6_EL1, "I8MM", 2, Arm64Rule::AboveLimit);
}

#[test]
fn media_and_vfp_feature_registers() {
    accepts(c::MVFR0_EL1, "FPDP", 1);
    refuses(c::MVFR0_EL1, "FPDP", 3, Arm64Rule::AboveLimit);
    accepts(c::MVFR1_EL1, "FPHP", 2);
    refuses(c::MVFR1_EL1, "FPHP", 4, Arm64Rule::AboveLimit);
    accepts(c::MVFR2_EL1, "FPMisc", 3);
    refuses(c::MVFR2_EL1, "SIMDMisc", 4, Arm64Rule::AboveLimit);
}

#[test]
fn res0_bits_inside_the_mask_must_stay_at_the_limit() {
    for (reg, bit) in [
        (c::ID_ISAR0_EL1, 28),
        (c::ID_ISAR5_EL1, 20),
        (c::ID_ISAR6_EL1, 28),
        (c::MVFR2_EL1, 8),
    ] {
        let limit = limit_of(reg);
        let refusal = judge(reg, limit | 1 << bit, limit).unwrap_err();
        assert_eq!(
            refusal.rule,
            Arm64Rule::UnmodelledBits { changed: 1 << bit },
            "{}",
            catalog::name_of(reg)
        );
        assert_eq!(refusal.errno, Errno::EINVAL);
    }
}

#[test]
fn fpfr0_one_bit_fields_are_exact_with_safe_value_zero() {
    let reg = c::ID_AA64FPFR0_EL1;
    // On a host with every FP8 feature, each field may drop to 0 (not implemented).
    let all = 0xF000_0003u64;
    for bit in [31, 30, 29, 28, 1, 0] {
        let lowered = all & !(1 << bit);
        assert_eq!(judge(reg, lowered, all), Ok(lowered), "bit {bit}");
    }
    // On the 6.12 reference host (limit 0) none may be raised.
    let refusal = judge(reg, 1 << 31, 0).unwrap_err();
    assert_eq!(refusal.rule, Arm64Rule::ExactField { safe_value: 0 });
    assert_eq!(refusal.errno, Errno::EINVAL);
    let field = refusal.field.clone().unwrap();
    assert_eq!((field.name.as_str(), field.width), ("F8CVT", 1));
    assert_eq!((refusal.requested, refusal.limit), (1, 0));
    assert!(
        refusal
            .to_string()
            .starts_with("ID_AA64FPFR0_EL1.F8CVT (bits 31)"),
        "{refusal}"
    );
    // F8MM8 is outside the 6.12 mask: fixed at the limit there.
    let refusal = judge(reg, all | 1 << 27, all).unwrap_err();
    assert!(
        matches!(refusal.rule, Arm64Rule::OutsideWritableMask { .. }),
        "{refusal}"
    );
}

#[test]
fn aarch32_registers_are_raz_wi_on_an_aarch64_only_host() {
    use crate::model::arm64::host::HostView;
    use crate::model::arm64::validate::{Verdict, judge_before_run};
    use std::collections::BTreeMap;
    let pfr0 = c::ID_AA64PFR0_EL1.kvm_reg_id();
    let isar5 = c::ID_ISAR5_EL1.kvm_reg_id();
    let host = |el0: u64, isar5_value: u64| HostView {
        register_ids: vec![pfr0, isar5],
        values: BTreeMap::from([(pfr0, 0x1101_0010_2111_0220 | el0), (isar5, isar5_value)]),
        masks: masks_6_12(),
        writable_imp_id_regs: false,
        probes: Default::default(),
    };
    let features = VcpuFeatureSet::EMPTY;
    // EL0 = 1, AArch64 only: any value is accepted and the register keeps reading 0.
    let aarch64_only = host(1, 0);
    assert_eq!(
        judge_before_run(isar5, 0x0101_1121, &aarch64_only, features),
        Verdict::Accepted { readback: 0 }
    );
    assert!(aarch32_writes_ignored(c::ID_DFR0_EL1, Some(1)));
    // After the first run too: the write is ignored before the lock's rules, nothing changes.
    assert_eq!(
        crate::model::arm64::validate::judge_after_run(
            isar5,
            0x0101_1121,
            0,
            &aarch64_only,
            features
        ),
        Verdict::Accepted { readback: 0 }
    );
    // Not for AArch64 registers, nor for the hidden ID_DFR1_EL1, nor without the host's PFR0.
    assert!(!aarch32_writes_ignored(c::ID_AA64ISAR0_EL1, Some(1)));
    assert!(!aarch32_writes_ignored(c::ID_DFR1_EL1, Some(1)));
    assert!(!aarch32_writes_ignored(c::ID_ISAR5_EL1, None));
    // EL0 = 2, AArch32 too: the field tables judge.
    let aarch32 = host(2, 0x0101_1121);
    let verdict = judge_before_run(isar5, 0x0101_1131, &aarch32, features);
    assert_eq!(
        verdict.refusal().map(|r| r.rule.clone()),
        Some(Arm64Rule::AboveLimit)
    );
}
