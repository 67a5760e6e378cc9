//! The field tables, transcribed from the semantics reference §2.7 (which read them from the
//! kernel's `arm64_ftr_bits` tables, KVM's overrides and the custom set handlers), and, for the
//! registers the reference does not list (the AArch32 ones in `aarch32.rs`, ID_AA64FPFR0_EL1
//! here), from the kernel's `arch/arm64/kernel/cpufeature.c` directly.
//!
//! Conventions: fields run from the highest bits down, as in the kernel; 4 bits and unsigned
//! unless built otherwise; `safe_value` is only given where [`SafeType::Exact`] uses it (a
//! lower-safe check never looks at it). No field is [`FieldCheck::Untyped`]: every field has
//! either the kernel's type or [`FieldCheck::NoKernelEntry`] (the kernel has no entry, so the
//! limit is kept), so no writable bit is refused for want of a table (`vcpu/tests/
//! arm64_newer_kernels.rs` checks it against the 6.12 masks and the newer kernels' ones).

mod aarch32;

use super::{FieldCheck, FieldNote, FieldTable, IdField, SafeType};
use crate::model::arm64::catalog;
use crate::model::arm64::features::VcpuFeature;

const fn field(name: &'static str, shift: u8, check: FieldCheck) -> IdField {
    IdField {
        name,
        shift,
        width: 4,
        signed: false,
        check,
        notes: &[],
    }
}

/// Unsigned, 4 bits, `FTR_LOWER_SAFE`: the common case.
const fn lower(name: &'static str, shift: u8) -> IdField {
    field(
        name,
        shift,
        FieldCheck::Typed {
            safe: SafeType::LowerSafe,
            safe_value: 0,
        },
    )
}

/// Signed, 4 bits, `FTR_LOWER_SAFE`: 0xF (-1) is "not implemented" and always below the limit.
const fn signed_lower(name: &'static str, shift: u8) -> IdField {
    lower(name, shift).signed()
}

const fn higher(name: &'static str, shift: u8) -> IdField {
    field(
        name,
        shift,
        FieldCheck::Typed {
            safe: SafeType::HigherSafe,
            safe_value: 0,
        },
    )
}

const fn higher_or_zero(name: &'static str, shift: u8) -> IdField {
    field(
        name,
        shift,
        FieldCheck::Typed {
            safe: SafeType::HigherOrZeroSafe,
            safe_value: 0,
        },
    )
}

const fn exact(name: &'static str, shift: u8, safe_value: u64) -> IdField {
    field(
        name,
        shift,
        FieldCheck::Typed {
            safe: SafeType::Exact,
            safe_value,
        },
    )
}

/// Bits the kernel has no `arm64_ftr_bits` entry for.
const fn no_entry(name: &'static str, shift: u8) -> IdField {
    field(name, shift, FieldCheck::NoKernelEntry)
}

impl IdField {
    const fn signed(self) -> IdField {
        IdField {
            signed: true,
            ..self
        }
    }

    const fn width(self, width: u8) -> IdField {
        IdField { width, ..self }
    }

    const fn notes(self, notes: &'static [FieldNote]) -> IdField {
        IdField { notes, ..self }
    }
}

use FieldNote::*;
use VcpuFeature::*;

static ID_AA64PFR0: &[IdField] = &[
    lower("CSV3", 60),
    lower("CSV2", 56),
    no_entry("RME", 52),
    lower("DIT", 48),
    lower("AMU", 44),
    lower("MPAM", 40).notes(&[IgnoredWhenEqualToHost]),
    lower("SEL2", 36),
    lower("SVE", 32).notes(&[DecidedByFeature(Sve)]),
    lower("RAS", 28),
    lower("GIC", 24).notes(&[ClearedAtFirstRunWithoutVgic, ForcedToVgic]),
    signed_lower("AdvSIMD", 20),
    signed_lower("FP", 16),
    lower("EL3", 12),
    lower("EL2", 8).notes(&[NonzeroWithFeature(HasEl2)]),
    // The limit is 2 (AArch32 EL1) with el1-32bit on a host that has it.
    lower("EL1", 4).notes(&[Minimum {
        value: 1,
        zero_allowed: false,
    }]),
    lower("EL0", 0).notes(&[Minimum {
        value: 1,
        zero_allowed: false,
    }]),
];

static ID_AA64PFR1: &[IdField] = &[
    no_entry("PFAR", 60),
    lower("DF2", 56),
    no_entry("MTEX", 52),
    no_entry("THE", 48),
    lower("GCS", 44),
    signed_lower("MTE_frac", 40).notes(&[MteFracAsyncRewrite]),
    no_entry("NMI", 36),
    no_entry("CSV2_frac", 32),
    no_entry("RNDR_trap", 28),
    lower("SME", 24),
    lower("MPAM_frac", 16).notes(&[IgnoredWhenEqualToHost]),
    lower("RAS_frac", 12),
    lower("MTE", 8).notes(&[LimitFromVmCapability("KVM_CAP_ARM_MTE")]),
    lower("SSBS", 4),
    lower("BT", 0),
];

static ID_AA64PFR2: &[IdField] = &[
    lower("FPMR", 32),
    lower("GCIE", 12).notes(&[ClearedAtFirstRunWithoutVgic, ForcedToVgic]),
    lower("MTEFAR", 8),
    lower("MTESTOREONLY", 4),
];

static ID_AA64ZFR0: &[IdField] = &[
    lower("F64MM", 56),
    lower("F32MM", 52),
    lower("F16MM", 48),
    lower("I8MM", 44),
    lower("SM4", 40),
    lower("SHA3", 32),
    lower("B16B16", 24),
    lower("BF16", 20),
    lower("BitPerm", 16),
    lower("EltPerm", 12),
    lower("AES", 4),
    lower("SVEver", 0),
];

/// `ftr_id_aa64smfr0`: every entry `FTR_EXACT` with safe value 0, so a field may keep the limit or
/// drop to 0. KVM on 6.12 does not expose SME (the register reads 0, its mask is 0); the table is
/// here so that a kernel whose mask opens the register judges writes by the kernel's types. LUT6
/// (2025) is left out: its bit is judged as having no entry, which refuses rather than accepts.
// Source: cpufeature.c `ftr_id_aa64smfr0` (FA64 … F32F32), the 2024 dpISA series' additions
// (LUTv2, F8F16, F8F32, SF8FMA, SF8DP4, SF8DP2), positions from `arch/arm64/tools/sysreg`.
static ID_AA64SMFR0: &[IdField] = &[
    exact("FA64", 63, 0).width(1),
    exact("LUTv2", 60, 0).width(1),
    exact("SMEver", 56, 0),
    exact("I16I64", 52, 0),
    exact("F64F64", 48, 0).width(1),
    exact("I16I32", 44, 0),
    exact("B16B16", 43, 0).width(1),
    exact("F16F16", 42, 0).width(1),
    exact("F8F16", 41, 0).width(1),
    exact("F8F32", 40, 0).width(1),
    exact("I8I32", 36, 0),
    exact("F16F32", 35, 0).width(1),
    exact("B16F32", 34, 0).width(1),
    exact("BI32I32", 33, 0).width(1),
    exact("F32F32", 32, 0).width(1),
    exact("SF8FMA", 30, 0).width(1),
    exact("SF8DP4", 29, 0).width(1),
    exact("SF8DP2", 28, 0).width(1),
];

/// `ftr_id_aa64fpfr0`: one-bit fields, all `FTR_EXACT` with safe value 0, so a field may keep the
/// limit or drop to 0 (not implemented). F8MM8/F8MM4 have entries since 6.14 and F16MM2 since the
/// 2025 dpISA series; on older kernels those bits have no entry and a limit of 0, which the same
/// exact-0 rule judges alike (only 0 is accepted). Bits 63:32, 25:16 and 14:2 are RES0.
// Source: cpufeature.c `ftr_id_aa64fpfr0` (not in the semantics reference); positions from
// `arch/arm64/tools/sysreg`. The 6.12 reference kernel reports the mask 0xF0000003 for it.
static ID_AA64FPFR0: &[IdField] = &[
    exact("F8CVT", 31, 0).width(1),
    exact("F8FMA", 30, 0).width(1),
    exact("F8DP4", 29, 0).width(1),
    exact("F8DP2", 28, 0).width(1),
    exact("F8MM8", 27, 0).width(1),
    exact("F8MM4", 26, 0).width(1),
    exact("F16MM2", 15, 0).width(1),
    exact("F8E4M3", 1, 0).width(1),
    exact("F8E5M2", 0, 0).width(1),
];

/// `ftr_id_aa64dfr0`. The kernel has entries for DoubleLock, PMSVer, CTX_CMPs, WRPs, BRPs, PMUVer
/// and DebugVer, and, with FEAT_HPMN0's cpucap (Colton Lewis, "arm64: cpufeature: Add cpucap for
/// HPMN0", which also adds HPMN0 to KVM's writable mask of this register), HPMN0 as
/// `FTR_NONSTRICT, FTR_LOWER_SAFE`. ExtTrcBuff, BRBE, MTPMU, TraceBuffer, TraceFilt, SEBEP, PMSS
/// and TraceVer have no entry: sanitisation makes them 0, and a write must keep the limit whether
/// or not a mask covers them.
// Source: torvalds/linux arch/arm64/kernel/cpufeature.c `ftr_id_aa64dfr0` (entries sorted by
// shift: DoubleLock, PMSVer, CTX_CMPs, WRPs, BRPs, PMUVer, DebugVer) and the 2026 HPMN0 patch
// (posted to kvm@vger.kernel.org), whose diff context shows HPMN0 added directly above DoubleLock,
// so no BRBE/MTPMU/TraceBuffer/TraceFilt entry in between, and which adds
// ID_AA64DFR0_EL1_HPMN0_MASK to KVM's writable mask in arch/arm64/kvm/sys_regs.c. (A 2023 BRBE
// series proposed a signed lower-safe BRBE entry; it is not in the tables read.) The 6.12
// reference kernel reports the mask 0x000000f000f00f0f (DoubleLock, WRPs, PMUVer, DebugVer).
static ID_AA64DFR0: &[IdField] = &[
    lower("HPMN0", 60),
    no_entry("ExtTrcBuff", 56),
    no_entry("BRBE", 52),
    no_entry("MTPMU", 48).signed(),
    no_entry("TraceBuffer", 44),
    no_entry("TraceFilt", 40),
    signed_lower("DoubleLock", 36),
    lower("PMSVer", 32),
    lower("CTX_CMPs", 28),
    no_entry("SEBEP", 24),
    lower("WRPs", 20),
    no_entry("PMSS", 16),
    lower("BRPs", 12),
    signed_lower("PMUVer", 8).notes(&[
        KvmJudgesLowerSafe,
        ImpDefReadsAsNotImplemented,
        LimitFromFeature(PmuV3),
    ]),
    no_entry("TraceVer", 4),
    lower("DebugVer", 0).notes(&[
        KvmJudgesLowerSafe,
        Minimum {
            value: 6,
            zero_allowed: false,
        },
    ]),
];

static ID_AA64ISAR0: &[IdField] = &[
    lower("RNDR", 60),
    lower("TLB", 56),
    lower("TS", 52),
    lower("FHM", 48),
    lower("DP", 44),
    lower("SM4", 40),
    lower("SM3", 36),
    lower("SHA3", 32),
    lower("RDM", 28),
    // Withdrawn; the newest kernels dropped its entry (older ones had it lower-safe). The limit is
    // 0 either way.
    no_entry("TME", 24),
    lower("ATOMIC", 20),
    lower("CRC32", 16),
    lower("SHA2", 12),
    lower("SHA1", 8),
    lower("AES", 4),
];

static ID_AA64ISAR1: &[IdField] = &[
    lower("LS64", 60),
    lower("XS", 56),
    lower("I8MM", 52),
    lower("DGH", 48),
    lower("BF16", 44),
    lower("SPECRES", 40),
    lower("SB", 36),
    lower("FRINTTS", 32),
    lower("GPI", 28).notes(&[DecidedByFeature(PtrauthGeneric)]),
    lower("GPA", 24).notes(&[DecidedByFeature(PtrauthGeneric)]),
    lower("LRCPC", 20),
    lower("FCMA", 16),
    lower("JSCVT", 12),
    exact("API", 8, 0).notes(&[DecidedByFeature(PtrauthAddress)]),
    exact("APA", 4, 0).notes(&[DecidedByFeature(PtrauthAddress)]),
    lower("DPB", 0),
];

static ID_AA64ISAR2: &[IdField] = &[
    no_entry("ATS1A", 60),
    lower("LUT", 56),
    lower("CSSC", 52),
    lower("RPRFM", 48),
    no_entry("PRFMSLC", 40),
    no_entry("SYSINSTR_128", 36),
    no_entry("SYSREG_128", 32),
    lower("CLRBHB", 28),
    no_entry("PAC_frac", 24),
    lower("BC", 20),
    lower("MOPS", 16),
    exact("APA3", 12, 0).notes(&[DecidedByFeature(PtrauthAddress)]),
    lower("GPA3", 8).notes(&[DecidedByFeature(PtrauthGeneric)]),
    lower("RPRES", 4),
    lower("WFxT", 0),
];

static ID_AA64ISAR3: &[IdField] = &[
    lower("FPRCVT", 28),
    lower("LSUI", 24),
    lower("LSFE", 16),
    lower("FAMINMAX", 4),
];

static ID_AA64MMFR0: &[IdField] = &[
    lower("ECV", 60),
    lower("FGT", 56),
    lower("EXS", 44),
    // 0 = as stage 1, 1 = not supported, 2 = supported, 3 = 52-bit.
    exact("TGRAN4_2", 40, 1),
    exact("TGRAN64_2", 36, 1),
    exact("TGRAN16_2", 32, 1),
    signed_lower("TGRAN4", 28),
    signed_lower("TGRAN64", 24),
    lower("TGRAN16", 20),
    lower("BIGENDEL0", 16),
    lower("SNSMEM", 12),
    lower("BIGEND", 8),
    lower("ASIDBITS", 4),
    lower("PARANGE", 0),
];

static ID_AA64MMFR1: &[IdField] = &[
    lower("ECBHB", 60),
    no_entry("CMOW", 56),
    lower("TIDCP1", 52),
    no_entry("nTLBPA", 48),
    lower("AFP", 44),
    // HCX and TWED: writable since 6.18 (a mask with bits 43:40 and 35:32); both
    // `FTR_STRICT, FTR_LOWER_SAFE` in `ftr_id_aa64mmfr1`.
    lower("HCX", 40),
    lower("ETS", 36),
    lower("TWED", 32),
    lower("XNX", 28),
    higher("SpecSEI", 24),
    lower("PAN", 20),
    lower("LO", 16),
    lower("HPDS", 12),
    lower("VH", 8),
    lower("VMIDBits", 4),
    lower("HAFDBS", 0),
];

static ID_AA64MMFR2: &[IdField] = &[
    lower("E0PD", 60),
    lower("EVT", 56),
    lower("BBM", 52),
    lower("TTL", 48),
    lower("FWB", 40),
    lower("IDS", 36),
    lower("AT", 32),
    lower("ST", 28),
    lower("NV", 24).notes(&[IgnoredWhenEqualToHost]),
    lower("CCIDX", 20),
    lower("VARange", 16),
    lower("IESB", 12),
    lower("LSM", 8),
    lower("UAO", 4),
    lower("CnP", 0),
];

static ID_AA64MMFR3: &[IdField] = &[
    lower("S1POE", 16),
    lower("S1PIE", 8),
    lower("SCTLRX", 4),
    lower("TCRX", 0),
];

static ID_AA64MMFR4: &[IdField] = &[signed_lower("E2H0", 24), lower("NV_frac", 20)];

static CTR: &[IdField] = &[
    exact("RES1", 31, 1).width(1),
    lower("DIC", 29).width(1),
    lower("IDC", 28).width(1),
    higher_or_zero("CWG", 24),
    higher_or_zero("ERG", 20),
    lower("DminLine", 16),
    // 2 = VIPT, 3 = PIPT; set_ctr_el0 refuses anything below VIPT.
    exact("L1Ip", 14, 2).width(2).notes(&[Minimum {
        value: 2,
        zero_allowed: false,
    }]),
    lower("IminLine", 0),
];

const fn table(register: crate::model::arm64::SysReg, fields: &'static [IdField]) -> FieldTable {
    FieldTable {
        register,
        fields,
        read_as_zero_without: None,
    }
}

/// MIDR_EL1 (Arm ARM D23.2): the part the guest sees itself running on. Writable as a whole
/// (within bits 31:0) only with capability 239; its fields have no kernel type.
static MIDR: &[IdField] = &[
    field("Implementer", 24, FieldCheck::WholeRegister).width(8),
    field("Variant", 20, FieldCheck::WholeRegister),
    field("Architecture", 16, FieldCheck::WholeRegister),
    field("PartNum", 4, FieldCheck::WholeRegister).width(12),
    field("Revision", 0, FieldCheck::WholeRegister),
];

/// Every field table, in register encoding order.
pub static TABLES: &[FieldTable] = &[
    table(catalog::MIDR_EL1, MIDR),
    table(catalog::ID_PFR0_EL1, aarch32::ID_PFR0),
    table(catalog::ID_PFR1_EL1, aarch32::ID_PFR1),
    table(catalog::ID_DFR0_EL1, aarch32::ID_DFR0),
    table(catalog::ID_MMFR0_EL1, aarch32::ID_MMFR0),
    table(catalog::ID_MMFR1_EL1, aarch32::ID_MMFR1),
    table(catalog::ID_MMFR2_EL1, aarch32::ID_MMFR2),
    table(catalog::ID_MMFR3_EL1, aarch32::ID_MMFR3),
    table(catalog::ID_ISAR0_EL1, aarch32::ID_ISAR0),
    table(catalog::ID_ISAR1_EL1, aarch32::ID_ISAR1),
    table(catalog::ID_ISAR2_EL1, aarch32::ID_ISAR2),
    table(catalog::ID_ISAR3_EL1, aarch32::ID_ISAR3),
    table(catalog::ID_ISAR4_EL1, aarch32::ID_ISAR4),
    table(catalog::ID_ISAR5_EL1, aarch32::ID_ISAR5),
    table(catalog::ID_MMFR4_EL1, aarch32::ID_MMFR4),
    table(catalog::ID_ISAR6_EL1, aarch32::ID_ISAR6),
    table(catalog::MVFR0_EL1, aarch32::MVFR0),
    table(catalog::MVFR1_EL1, aarch32::MVFR1),
    table(catalog::MVFR2_EL1, aarch32::MVFR2),
    table(catalog::ID_PFR2_EL1, aarch32::ID_PFR2),
    table(catalog::ID_MMFR5_EL1, aarch32::ID_MMFR5),
    table(catalog::ID_AA64PFR0_EL1, ID_AA64PFR0),
    table(catalog::ID_AA64PFR1_EL1, ID_AA64PFR1),
    table(catalog::ID_AA64PFR2_EL1, ID_AA64PFR2),
    FieldTable {
        register: catalog::ID_AA64ZFR0_EL1,
        fields: ID_AA64ZFR0,
        read_as_zero_without: Some(Sve),
    },
    table(catalog::ID_AA64SMFR0_EL1, ID_AA64SMFR0),
    table(catalog::ID_AA64FPFR0_EL1, ID_AA64FPFR0),
    table(catalog::ID_AA64DFR0_EL1, ID_AA64DFR0),
    table(catalog::ID_AA64ISAR0_EL1, ID_AA64ISAR0),
    table(catalog::ID_AA64ISAR1_EL1, ID_AA64ISAR1),
    table(catalog::ID_AA64ISAR2_EL1, ID_AA64ISAR2),
    table(catalog::ID_AA64ISAR3_EL1, ID_AA64ISAR3),
    table(catalog::ID_AA64MMFR0_EL1, ID_AA64MMFR0),
    table(catalog::ID_AA64MMFR1_EL1, ID_AA64MMFR1),
    table(catalog::ID_AA64MMFR2_EL1, ID_AA64MMFR2),
    table(catalog::ID_AA64MMFR3_EL1, ID_AA64MMFR3),
    table(catalog::ID_AA64MMFR4_EL1, ID_AA64MMFR4),
    table(catalog::CTR_EL0, CTR),
];
