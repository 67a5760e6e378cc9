//! KVM's rules for writing the ID-space system registers before the VM has run (semantics
//! reference §2.5, §2.6), in the kernel's order: the custom set handler's own checks and rewrites,
//! then `arm64_check_features` against the limit and the writable mask.
//!
//! Each function returns the value the kernel then holds (a set handler may rewrite what it was
//! given, e.g. PMUVer 0xF becomes 0), or the refusal.

use super::masks::WritableMasks;
use super::refusal::{Arm64Refusal, Arm64Rule, RefusedField};
use crate::model::arm64::catalog;
use crate::model::arm64::features::VcpuFeature;
use crate::model::arm64::features::VcpuFeatureSet;
use crate::model::arm64::fields::{self, FieldCheck, FieldNote, FieldTable, IdField, SafeType};
use crate::model::arm64::host::{KernelProbe, KernelProbes, PmuImpDef};
use crate::model::arm64::sysreg::SysReg;

/// MIDR_EL1's writable bits with `KVM_CAP_ARM_WRITABLE_IMP_ID_REGS` (REVIDR/AIDR: all).
pub const MIDR_WRITABLE_MASK: u64 = 0xFFFF_FFFF;

/// CLIDR_EL1.LoUU (29:27), LoC (26:24), LoUIS (23:21).
const CLIDR_LOUU_SHIFT: u32 = 27;
const CLIDR_LOC_SHIFT: u32 = 24;
const CLIDR_LOUIS_SHIFT: u32 = 21;
/// CTR_EL0.IDC.
const CTR_IDC: u64 = 1 << 28;

fn refused_field(field: &IdField) -> RefusedField {
    RefusedField {
        name: field.name.to_string(),
        shift: field.shift,
        width: field.width,
    }
}

fn field_refusal(
    reg: SysReg,
    field: &IdField,
    requested: u64,
    limit: u64,
    rule: Arm64Rule,
) -> Arm64Refusal {
    Arm64Refusal::field(
        reg.kvm_reg_id(),
        refused_field(field),
        field.raw(requested),
        field.raw(limit),
        rule,
    )
}

/// A feature-ID register write (CTR_EL0 and the unallocated slots included), judged against the
/// host limit and the VM's writable masks, with nothing measured about the kernel (the rules that
/// changed between kernels are judged as the newer kernels do: [`KernelProbes::NOT_MEASURED`]).
/// Returns the value the kernel then holds.
pub fn check_feature_id_register(
    reg: SysReg,
    requested: u64,
    limit: u64,
    masks: &WritableMasks,
    features: VcpuFeatureSet,
) -> Result<u64, Arm64Refusal> {
    check_feature_id_register_probed(
        reg,
        requested,
        limit,
        masks,
        features,
        &KernelProbes::NOT_MEASURED,
    )
}

/// [`check_feature_id_register`] on a host whose kernel-specific rules were measured as `probes`
/// say.
pub fn check_feature_id_register_probed(
    reg: SysReg,
    requested: u64,
    limit: u64,
    masks: &WritableMasks,
    features: VcpuFeatureSet,
    probes: &KernelProbes,
) -> Result<u64, Arm64Refusal> {
    // Writing back what the register holds right after init always succeeds: the get-reg-list
    // selftest sets every register to the value it read.
    if requested == limit {
        return Ok(limit);
    }
    let table = fields::table_for(reg);
    if let Some(feature) = table.and_then(|t| t.read_as_zero_without)
        && !features.contains(feature)
    {
        // `requested != limit` and a RAZ register's limit is 0.
        return Err(Arm64Refusal::register(
            reg.kvm_reg_id(),
            requested,
            limit,
            Arm64Rule::ReadAsZero { unless: feature },
        )
        .with_hint(Some(format!("request the VCPU_INIT feature {feature}"))));
    }
    let effective = set_handler_rules(reg, requested, limit, features, probes, masks)?;
    check_features(
        reg,
        for_the_mask_check(reg, effective, limit, probes),
        limit,
        masks,
        table,
    )?;
    Ok(effective)
}

/// Whether KVM ignores a userspace write to `reg` and reads it as zero
/// (`kvm_sys_reg_set_user` returns 0 before any set handler, before or after the first run): the
/// AArch32 feature-ID registers are `REG_RAZ | REG_USER_WI` when the host has no AArch32 EL0
/// (`aa32_id_visibility`, `!kvm_supports_32bit_el0()`). `host_pfr0` is the host's
/// ID_AA64PFR0_EL1, whose EL0 = 1 (AArch64 only) says so; without it vmfleet assumes AArch32 EL0.
///
/// Only the registers with an AArch32 field table count (ID_PFR0..2, ID_DFR0, ID_MMFR0..5,
/// ID_ISAR0..6, MVFR0..2): ID_AFR0_EL1 and ID_DFR1_EL1 are hidden (RAZ, not WI) on the kernels
/// vmfleet knows.
pub fn aarch32_writes_ignored(reg: SysReg, host_pfr0: Option<u64>) -> bool {
    let aarch32 =
        reg.is_feature_id() && (1..=3).contains(&reg.crm()) && fields::table_for(reg).is_some();
    let aarch64_only = |pfr0: u64| {
        fields::field_of(catalog::ID_AA64PFR0_EL1, "EL0")
            .is_some_and(|el0| el0.field().raw(pfr0) == 1)
    };
    aarch32 && host_pfr0.is_some_and(aarch64_only)
}

/// What a register's custom set handler does before `set_id_reg`: rewrite some field values and
/// refuse some with `EINVAL`. It runs before the VM-has-run comparison too, so the lock applies it
/// as well. A rule only some kernels have ([`kernel_floor`], [`pmu_imp_def`]) applies as `probes`
/// measured it; `masks` says whether the kernel has writable ID registers (6.7 and later).
/// Returns the rewritten value.
pub fn set_handler_rules(
    reg: SysReg,
    requested: u64,
    limit: u64,
    features: VcpuFeatureSet,
    probes: &KernelProbes,
    masks: &WritableMasks,
) -> Result<u64, Arm64Refusal> {
    let Some(table) = fields::table_for(reg) else {
        return Ok(requested);
    };
    let mut value = requested;
    for field in table.fields {
        if field.has(FieldNote::ImpDefReadsAsNotImplemented) && field.raw(value) == field.max_raw()
        {
            if reg == catalog::ID_AA64DFR0_EL1 && field.raw(limit) != field.max_raw() {
                value = pmu_imp_def(field, value, limit, features, probes, masks)?;
            } else {
                value = field.with(value, 0);
            }
        }
        if field.has(FieldNote::MteFracAsyncRewrite) && mte_frac_async_applies(table, field, limit)
        {
            // The host's MTE fields are not readable by userspace; with MTE enabled for the VM
            // the limit carries them unchanged, so the limit stands in for them.
            if field.raw(value) == 0 {
                value = field.with(value, field.max_raw());
            }
        }
    }
    for field in table.fields {
        let raw = field.raw(value);
        if let Some((minimum, zero_allowed)) = field.minimum()
            && raw < minimum
            && !(zero_allowed && raw == 0)
        {
            if let Some(probe) = kernel_floor(reg, field) {
                let measured = match probe {
                    KernelProbe::ElFloor => probes.el_floor,
                    KernelProbe::DebugVerFloor => probes.debug_ver_floor,
                    KernelProbe::PmuImpDef => None,
                };
                match measured {
                    // Measured: this kernel accepts the value (6.12 for EL0/EL1).
                    Some(false) => continue,
                    enforced => {
                        return Err(field_refusal(
                            reg,
                            field,
                            value,
                            limit,
                            Arm64Rule::KernelFloor {
                                minimum,
                                measured: enforced.is_some(),
                                probe,
                            },
                        ));
                    }
                }
            }
            return Err(field_refusal(
                reg,
                field,
                value,
                limit,
                Arm64Rule::BelowMinimum {
                    minimum,
                    zero_allowed,
                },
            ));
        }
        for note in field.notes {
            if let FieldNote::NonzeroWithFeature(feature) = *note
                && features.contains(feature)
                && raw == 0
            {
                return Err(field_refusal(
                    reg,
                    field,
                    value,
                    limit,
                    Arm64Rule::ZeroWithFeature { feature },
                ));
            }
        }
    }
    Ok(value)
}

/// How a set handler's minimum is known to apply, when no capability shows which kernels have
/// it: the probe that measures it. `None` for the minimums every kernel vmfleet knows applies
/// (ID_DFR0_EL1's CopDbg and PerfMon, CTR_EL0's L1Ip: the AArch32 and cache handlers have not
/// changed since writable ID registers).
///
/// ID_AA64PFR0_EL1.EL0 and .EL1 (`EINVAL` for 0) arrived after 6.12 (`kernels::CHANGES`,
/// `HostSign::Probe("el_floor")`); ID_AA64DFR0_EL1.DebugVer's floor (below 6: `EINVAL`) holds on
/// every kernel vmfleet knows, and is measured all the same, so a kernel that differs is
/// followed rather than assumed.
pub fn kernel_floor(reg: SysReg, field: &IdField) -> Option<KernelProbe> {
    if reg == catalog::ID_AA64PFR0_EL1 && matches!(field.name, "EL0" | "EL1") {
        Some(KernelProbe::ElFloor)
    } else if reg == catalog::ID_AA64DFR0_EL1 && field.name == "DebugVer" {
        Some(KernelProbe::DebugVerFloor)
    } else {
        None
    }
}

/// ID_AA64DFR0_EL1.PMUVer = 0xF (IMPLEMENTATION DEFINED) where the limit is not 0xF, as this
/// host's kernel handles it ([`KernelProbes::pmu_imp_def`]): the value it then holds, or the
/// refusal.
///
/// - Stored as 0 (the 6.7 handler, measured, or assumed where the kernel reports writable
///   masks: every such kernel has it).
/// - Kept as 0xF (6.3–6.6, measured on a vCPU without a PMU): accepted on such a vCPU (the mask
///   check then leaves the field out, [`for_the_mask_check`]); a vCPU with a PMU needs a real
///   version there (the handler's "has a PMU" must match "PMUVer is a version"), so `EINVAL`.
/// - Refused (6.1, measured), or not measured on a kernel without writable masks: `EINVAL`, the
///   latter as vmfleet's cautious reading.
pub fn pmu_imp_def(
    field: &IdField,
    value: u64,
    limit: u64,
    features: VcpuFeatureSet,
    probes: &KernelProbes,
    masks: &WritableMasks,
) -> Result<u64, Arm64Refusal> {
    let refused = |measured: Option<PmuImpDef>| {
        field_refusal(
            catalog::ID_AA64DFR0_EL1,
            field,
            value,
            limit,
            Arm64Rule::PmuImpDef { measured },
        )
    };
    match probes.pmu_imp_def {
        Some(PmuImpDef::ReadsAsNotImplemented) => Ok(field.with(value, 0)),
        None if matches!(masks, WritableMasks::Reported { .. }) => Ok(field.with(value, 0)),
        None => Err(refused(None)),
        Some(PmuImpDef::Kept) if !features.contains(VcpuFeature::PmuV3) => Ok(value),
        Some(answer) => Err(refused(Some(answer))),
    }
}

/// The value the writable-mask check sees: what the kernel holds, except a PMUVer kept as 0xF by
/// the 6.3–6.6 handler ([`pmu_imp_def`]), which stores it beside the register and so is no
/// change to `set_id_reg`'s eyes.
fn for_the_mask_check(reg: SysReg, value: u64, limit: u64, probes: &KernelProbes) -> u64 {
    if reg != catalog::ID_AA64DFR0_EL1 || probes.pmu_imp_def != Some(PmuImpDef::Kept) {
        return value;
    }
    match fields::field_of(reg, "PMUVer").map(|f| f.field()) {
        Some(pmu) if pmu.raw(value) == pmu.max_raw() => pmu.with(value, pmu.raw(limit)),
        _ => value,
    }
}

/// MTE2 with MTE_frac = NI on the host: the case where a requested ASYNC is stored as NI.
fn mte_frac_async_applies(table: &FieldTable, mte_frac: &IdField, limit: u64) -> bool {
    table
        .field("MTE")
        .is_some_and(|mte| mte.raw(limit) == 2 && mte_frac.raw(limit) == mte_frac.max_raw())
}

/// The safe value `arm64_ftr_safe_value` computes for a field moving from `limit` to `new`.
fn safe_value(safe: SafeType, safe_val: i64, new: i64, limit: i64) -> i64 {
    match safe {
        SafeType::Exact => safe_val,
        SafeType::LowerSafe => new.min(limit),
        SafeType::HigherSafe => new.max(limit),
        SafeType::HigherOrZeroSafe if new == 0 || limit == 0 => 0,
        SafeType::HigherOrZeroSafe => new.max(limit),
    }
}

/// `arm64_check_features`: every typed field wholly inside the writable mask may move as its type
/// allows; every other bit must equal the limit.
fn check_features(
    reg: SysReg,
    value: u64,
    limit: u64,
    masks: &WritableMasks,
    table: Option<&'static FieldTable>,
) -> Result<(), Arm64Refusal> {
    let mask = masks.mask_for(reg);
    let mut covered = 0u64;
    for field in table.map_or(&[][..], |t| t.fields) {
        let FieldCheck::Typed {
            safe,
            safe_value: safe_val,
        } = field.check
        else {
            continue;
        };
        if field.mask() & mask != field.mask() {
            continue;
        }
        covered |= field.mask();
        let (new, old) = (field.value(value), field.value(limit));
        if new == old || safe_value(safe, field.sign_extend(safe_val), new, old) == new {
            continue;
        }
        let rule = match safe {
            SafeType::LowerSafe => Arm64Rule::AboveLimit,
            SafeType::HigherSafe => Arm64Rule::BelowLimit,
            SafeType::Exact => Arm64Rule::ExactField {
                safe_value: safe_val,
            },
            SafeType::HigherOrZeroSafe => Arm64Rule::HigherOrZero,
        };
        let hint = field
            .feature()
            .map(|f| format!("the limit of this field depends on the VCPU_INIT feature {f}"));
        return Err(field_refusal(reg, field, value, limit, rule).with_hint(hint));
    }
    let stray = (value ^ limit) & !covered;
    if stray == 0 {
        return Ok(());
    }
    Err(explain_stray_bits(reg, value, limit, stray, masks, table))
}

/// The refusal for bits that had to equal the limit and do not, naming the highest field they hit.
fn explain_stray_bits(
    reg: SysReg,
    value: u64,
    limit: u64,
    stray: u64,
    masks: &WritableMasks,
    table: Option<&'static FieldTable>,
) -> Arm64Refusal {
    let mask = masks.mask_for(reg);
    // The highest changed bit names the field (callers pass a nonzero `stray`; 0 reads as bit 0).
    let top_bit = stray.checked_ilog2().unwrap_or(0);
    let Some(field) = table.and_then(|t| t.field_at_bit(top_bit)) else {
        let outside = stray & !mask;
        let rule = if outside != 0 {
            Arm64Rule::OutsideWritableMask {
                changed: outside,
                mask,
                source: masks.source(),
            }
        } else {
            Arm64Rule::UnmodelledBits { changed: stray }
        };
        return Arm64Refusal::register(reg.kvm_reg_id(), value, limit, rule);
    };
    let changed = stray & field.mask();
    let rule = if field.mask() & mask != field.mask() {
        Arm64Rule::OutsideWritableMask {
            changed,
            mask,
            source: masks.source(),
        }
    } else if field.check == FieldCheck::Untyped {
        Arm64Rule::UntypedField
    } else {
        Arm64Rule::NoKernelFeatureEntry
    };
    let mut refusal = field_refusal(reg, field, value, limit, rule).with_hint(note_hint(field));
    if field.has(FieldNote::IgnoredWhenEqualToHost) {
        refusal = refusal.conservatively();
    }
    refusal
}

/// What a field's notes tell someone whose change of it was refused.
fn note_hint(field: &IdField) -> Option<String> {
    field.notes.iter().find_map(|note| match *note {
        FieldNote::DecidedByFeature(feature) => Some(format!(
            "the VCPU_INIT feature {feature} decides this field: request or drop the feature \
             instead"
        )),
        FieldNote::LimitFromVmCapability(capability) => {
            Some(format!("the VM capability {capability} decides this field"))
        }
        FieldNote::IgnoredWhenEqualToHost => Some(
            "KVM also accepts (and ignores) the host's own value of this field, which userspace \
             cannot read; vmfleet accepts only the limit"
                .to_string(),
        ),
        _ => None,
    })
}

/// MIDR_EL1, REVIDR_EL1, AIDR_EL1 (`set_imp_id_reg`): any change needs the VM capability, and
/// MIDR keeps its upper 32 bits at 0.
pub fn check_implementation_id(
    reg: SysReg,
    requested: u64,
    current: u64,
    writable_imp_id_regs: bool,
) -> Result<u64, Arm64Refusal> {
    if requested == current {
        return Ok(current);
    }
    let refusal = |rule| Arm64Refusal::register(reg.kvm_reg_id(), requested, current, rule);
    if !writable_imp_id_regs {
        return Err(refusal(Arm64Rule::ImplementationIdNotWritable));
    }
    let mask = if reg == catalog::MIDR_EL1 {
        MIDR_WRITABLE_MASK
    } else {
        u64::MAX
    };
    if requested & !mask != 0 {
        return Err(refusal(Arm64Rule::ImplementationIdMask { mask }));
    }
    Ok(requested)
}

/// CLIDR_EL1 (`set_clidr`): no reserved bits, and no claim that the caches need no maintenance
/// to the point of unification unless CTR_EL0.IDC says so.
///
/// `ctr_el0` is the CTR_EL0 value the claim is checked against. The reference does not say
/// whether the kernel uses the host's or the VM's CTR_EL0; the VM's can only have IDC lowered, so
/// passing the VM's is the cautious choice.
pub fn check_clidr(
    requested: u64,
    current: u64,
    masks: &WritableMasks,
    ctr_el0: u64,
) -> Result<u64, Arm64Refusal> {
    if requested == current {
        return Ok(current);
    }
    let reg = catalog::CLIDR_EL1;
    let refusal = |rule| Arm64Refusal::register(reg.kvm_reg_id(), requested, current, rule);
    let mask = match masks {
        WritableMasks::Reported { .. } => masks.mask_for(reg),
        // Before writable ID registers CLIDR_EL1 was invariant as far as vmfleet assumes.
        WritableMasks::PreWritableIdRegisters => {
            return Err(refusal(Arm64Rule::OutsideWritableMask {
                changed: requested ^ current,
                mask: 0,
                source: masks.source(),
            }));
        }
    };
    let reserved = requested & !mask;
    if reserved != 0 {
        return Err(refusal(Arm64Rule::ClidrReservedBits { bits: reserved }));
    }
    let level = |shift: u32| (requested >> shift) & 0x7;
    let claims_coherence = level(CLIDR_LOC_SHIFT) == 0
        || (level(CLIDR_LOUIS_SHIFT) == 0 && level(CLIDR_LOUU_SHIFT) == 0);
    if claims_coherence && ctr_el0 & CTR_IDC == 0 {
        return Err(refusal(Arm64Rule::ClidrClaimsCoherence));
    }
    Ok(requested)
}

#[cfg(test)]
mod table_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::abi::KVM_ARM_FEATURE_ID_RANGE_SIZE;
    use crate::model::arm64::catalog::{
        CLIDR_EL1, CTR_EL0, ID_AA64DFR0_EL1, ID_AA64MMFR0_EL1, ID_AA64PFR1_EL1, ID_AA64ZFR0_EL1,
        ID_DFR0_EL1, MIDR_EL1, REVIDR_EL1,
    };
    use crate::model::arm64::features::VcpuFeature;

    fn all_writable() -> WritableMasks {
        WritableMasks::from_reported(&[u64::MAX; KVM_ARM_FEATURE_ID_RANGE_SIZE]).unwrap()
    }

    fn none() -> VcpuFeatureSet {
        VcpuFeatureSet::EMPTY
    }

    #[test]
    fn signed_lower_safe_accepts_not_implemented_and_refuses_raising_from_it() {
        // TGRAN4 limit 0 (IMP): 0xF (NI) is below it.
        let reg = ID_AA64MMFR0_EL1;
        assert_eq!(
            check_feature_id_register(reg, 0xF000_0000, 0, &all_writable(), none()),
            Ok(0xF000_0000)
        );
        // Limit 0xF (NI): 0 is above it.
        let err =
            check_feature_id_register(reg, 0, 0xF000_0000, &all_writable(), none()).unwrap_err();
        assert_eq!(err.rule, Arm64Rule::AboveLimit);
        assert_eq!(err.field.unwrap().name, "TGRAN4");
        assert_eq!((err.requested, err.limit), (0, 0xF));
    }

    #[test]
    fn exact_fields_accept_the_limit_or_the_safe_value_only() {
        // TGRAN4_2 (43:40) limit 3: 1 (its safe value) is accepted, 2 is not.
        let reg = ID_AA64MMFR0_EL1;
        let limit = 3u64 << 40;
        assert!(check_feature_id_register(reg, 1 << 40, limit, &all_writable(), none()).is_ok());
        let err =
            check_feature_id_register(reg, 2 << 40, limit, &all_writable(), none()).unwrap_err();
        assert_eq!(err.rule, Arm64Rule::ExactField { safe_value: 1 });
    }

    #[test]
    fn higher_or_zero_safe() {
        // CTR_EL0.CWG (27:24), with everything else at a plausible limit.
        let limit = 0xb444_c004u64;
        let with_cwg = |cwg: u64| (limit & !(0xF << 24)) | cwg << 24;
        let judge = |v| check_feature_id_register(CTR_EL0, v, limit, &all_writable(), none());
        assert!(judge(with_cwg(0)).is_ok(), "0 is always safe");
        assert!(judge(with_cwg(5)).is_ok(), "above a nonzero limit");
        assert_eq!(
            judge(with_cwg(3)).unwrap_err().rule,
            Arm64Rule::HigherOrZero
        );
        // With a limit of 0 only 0.
        let zero_limit = limit & !(0xF << 24);
        let err = check_feature_id_register(
            CTR_EL0,
            zero_limit | 4 << 24,
            zero_limit,
            &all_writable(),
            none(),
        )
        .unwrap_err();
        assert_eq!(err.rule, Arm64Rule::HigherOrZero);
    }

    #[test]
    fn ctr_l1ip_below_vipt_is_refused_by_the_set_handler() {
        let limit = 0xb444_c004u64; // L1Ip = 3 (PIPT)
        let vivt = limit & !(0x3 << 14) | 1 << 14;
        let err =
            check_feature_id_register(CTR_EL0, vivt, limit, &all_writable(), none()).unwrap_err();
        assert_eq!(
            err.rule,
            Arm64Rule::BelowMinimum {
                minimum: 2,
                zero_allowed: false
            }
        );
        let vipt = limit & !(0x3 << 14) | 2 << 14;
        assert!(check_feature_id_register(CTR_EL0, vipt, limit, &all_writable(), none()).is_ok());
    }

    #[test]
    fn pmuver_imp_def_is_stored_as_not_implemented_and_debugver_has_a_floor() {
        let limit = 0x0000_0000_1030_560a; // PMUVer 6, DebugVer 0xa
        let imp_def = (limit & !(0xF << 8)) | 0xF << 8;
        assert_eq!(
            check_feature_id_register(ID_AA64DFR0_EL1, imp_def, limit, &all_writable(), none()),
            Ok(limit & !(0xF << 8)),
            "0xF is rewritten to 0 before the check"
        );
        let debug_v5 = (limit & !0xF) | 5;
        let err =
            check_feature_id_register(ID_AA64DFR0_EL1, debug_v5, limit, &all_writable(), none())
                .unwrap_err();
        assert_eq!(err.field.as_ref().unwrap().name, "DebugVer");
        // Not measured on this host: the floor every known kernel has, as a cautious reading.
        assert_eq!(
            err.rule,
            Arm64Rule::KernelFloor {
                minimum: 6,
                measured: false,
                probe: KernelProbe::DebugVerFloor,
            }
        );
    }

    #[test]
    fn aarch32_perfmon_accepts_zero_and_pmuv3_but_not_one_or_two() {
        let limit = 0x0400_000a; // PerfMon 4, CopDbg 0xa
        let with = |perfmon: u64| (limit & !(0xF << 24)) | perfmon << 24;
        let judge = |v| check_feature_id_register(ID_DFR0_EL1, v, limit, &all_writable(), none());
        assert_eq!(judge(with(0)), Ok(with(0)));
        assert_eq!(judge(with(3)), Ok(with(3)));
        assert_eq!(judge(with(0xF)), Ok(with(0)), "IMP DEF becomes 0");
        assert!(matches!(
            judge(with(2)).unwrap_err().rule,
            Arm64Rule::BelowMinimum {
                minimum: 3,
                zero_allowed: true
            }
        ));
        assert_eq!(judge(with(5)).unwrap_err().rule, Arm64Rule::AboveLimit);
    }

    #[test]
    fn mte_frac_async_is_stored_as_not_implemented_on_mte2_hosts() {
        // MTE = 2, MTE_frac = 0xF in the limit; MTE_frac is outside the mask on real kernels.
        let limit = 0xFu64 << 40 | 2 << 8;
        let asked = 2u64 << 8;
        let mut masks = vec![0u64; KVM_ARM_FEATURE_ID_RANGE_SIZE];
        masks[33] = 0x0000_000f_0000_00ff;
        let masks = WritableMasks::from_reported(&masks).unwrap();
        assert_eq!(
            check_feature_id_register(ID_AA64PFR1_EL1, asked, limit, &masks, none()),
            Ok(limit)
        );
    }

    #[test]
    fn zfr0_reads_as_zero_without_sve() {
        let mask_all = all_writable();
        let err =
            check_feature_id_register(ID_AA64ZFR0_EL1, 0x1, 0, &mask_all, none()).unwrap_err();
        assert_eq!(
            err.rule,
            Arm64Rule::ReadAsZero {
                unless: VcpuFeature::Sve
            }
        );
        assert_eq!(
            check_feature_id_register(ID_AA64ZFR0_EL1, 0, 0, &mask_all, none()),
            Ok(0)
        );
        // With SVE the fields are ordinary lower-safe fields.
        let sve = VcpuFeatureSet::of(&[VcpuFeature::Sve]);
        let limit = 0x0110_1101_0021_0021;
        assert_eq!(
            check_feature_id_register(
                ID_AA64ZFR0_EL1,
                0x0110_1101_0021_0020,
                limit,
                &mask_all,
                sve
            ),
            Ok(0x0110_1101_0021_0020)
        );
    }

    #[test]
    fn el2_must_stay_set_for_nested_vcpus() {
        let reg = crate::model::arm64::catalog::ID_AA64PFR0_EL1;
        let limit = 0x1101_0010_2111_0222u64;
        let no_el2 = limit & !(0xF << 8);
        let nested = VcpuFeatureSet::of(&[VcpuFeature::HasEl2]);
        let err =
            check_feature_id_register(reg, no_el2, limit, &all_writable(), nested).unwrap_err();
        assert_eq!(
            err.rule,
            Arm64Rule::ZeroWithFeature {
                feature: VcpuFeature::HasEl2
            }
        );
        assert!(check_feature_id_register(reg, no_el2, limit, &all_writable(), none()).is_ok());
    }

    #[test]
    fn registers_without_a_table_accept_only_the_limit() {
        let reg = crate::model::arm64::catalog::ID_DFR1_EL1;
        let err = check_feature_id_register(reg, 0x0102_0130, 0x0102_0131, &all_writable(), none())
            .unwrap_err();
        assert_eq!(err.rule, Arm64Rule::UnmodelledBits { changed: 0x1 });
        assert!(err.conservative);
        assert!(err.to_string().contains("cautious"), "{err}");
    }

    #[test]
    fn implementation_ids_need_the_capability() {
        let err = check_implementation_id(MIDR_EL1, 0xf0511, 0xf0510, false).unwrap_err();
        assert_eq!(err.rule, Arm64Rule::ImplementationIdNotWritable);
        assert_eq!(err.errno, crate::hypervisor::errno::Errno::EINVAL);
        assert_eq!(
            check_implementation_id(MIDR_EL1, 0xf0510, 0xf0510, false),
            Ok(0xf0510)
        );
        assert_eq!(
            check_implementation_id(MIDR_EL1, 0xf0511, 0xf0510, true),
            Ok(0xf0511)
        );
        assert_eq!(
            check_implementation_id(MIDR_EL1, 1 << 32, 0xf0510, true)
                .unwrap_err()
                .rule,
            Arm64Rule::ImplementationIdMask { mask: 0xFFFF_FFFF }
        );
        assert_eq!(
            check_implementation_id(REVIDR_EL1, 1 << 40, 0, true),
            Ok(1 << 40)
        );
    }

    #[test]
    fn clidr_rules() {
        let mut masks = vec![0u64; KVM_ARM_FEATURE_ID_RANGE_SIZE];
        masks[CLIDR_EL1.feature_id_range_index().unwrap()] = 0x0000_7fff_ffff_ffff;
        let masks = WritableMasks::from_reported(&masks).unwrap();
        let current = 0x0100_0004u64; // LoC 1, unified L1... as the reference host reads it
        let ctr_with_idc = 0xb444_c004u64;
        let ctr_without_idc = ctr_with_idc & !CTR_IDC;
        // Adding an L2 unified cache (Ctype2 = 4), as the selftest does.
        let more = current | 4 << 3;
        assert_eq!(check_clidr(more, current, &masks, ctr_with_idc), Ok(more));
        assert_eq!(
            check_clidr(1 << 63, current, &masks, ctr_with_idc)
                .unwrap_err()
                .rule,
            Arm64Rule::ClidrReservedBits { bits: 1 << 63 }
        );
        // LoUIS = LoUU = 0 claims coherence: fine with IDC, refused without.
        assert_eq!(
            check_clidr(more, current, &masks, ctr_without_idc)
                .unwrap_err()
                .rule,
            Arm64Rule::ClidrClaimsCoherence
        );
        let with_louu = more | 1 << CLIDR_LOUU_SHIFT;
        assert_eq!(
            check_clidr(with_louu, current, &masks, ctr_without_idc),
            Ok(with_louu)
        );
        // LoC = 0 claims it too, whatever LoUU says.
        let no_loc = with_louu & !(0x7 << CLIDR_LOC_SHIFT);
        assert_eq!(
            check_clidr(no_loc, current, &masks, ctr_without_idc)
                .unwrap_err()
                .rule,
            Arm64Rule::ClidrClaimsCoherence
        );
        let pre = WritableMasks::PreWritableIdRegisters;
        assert!(check_clidr(more, current, &pre, ctr_with_idc).is_err());
    }
}
