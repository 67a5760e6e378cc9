//! The field tables of the AArch32 feature-ID registers (ID_PFR0..2, ID_DFR0, ID_MMFR0..5,
//! ID_ISAR0..6, MVFR0..2). The newest kernels make each of them writable as a whole (mask
//! 0xFFFFFFFF; the 6.12 reference kernel reports that mask for every one), older ones only
//! ID_DFR0's PerfMon and CopDbg or nothing: the masks are always read from the host.
//!
//! Source: torvalds/linux `arch/arm64/kernel/cpufeature.c`, the `arm64_ftr_bits` tables named
//! above each table here (`ftr_id_pfr0`, `ftr_id_mmfr0`, `ftr_generic_32bits`, …, as registered
//! in `arm64_ftr_regs[]`), read at the layout with `ID_*_EL1_*_SHIFT` names (v6.2 on, which 6.12
//! shares); field positions from the generated `sysreg-defs.h` (`arch/arm64/tools/sysreg`).
//! `FTR_HIDDEN`/`FTR_VISIBLE` and `FTR_STRICT`/`FTR_NONSTRICT` do not change how
//! `arm64_check_features` judges a write, so they are not carried. Bits a kernel table has no
//! entry for are [`no_entry`] where the architecture names them and left out where the kernel's
//! sysreg description calls them RES0: either way they must equal the limit, which sanitisation
//! makes 0. Older kernels used `ftr_generic_32bits` for MVFR0/1; its entries are all unsigned
//! `LOWER_SAFE` 0, as are the explicit ones that replaced them, so the judgement is the same.
//!
//! When the host has no AArch32 EL0 KVM makes these registers RAZ and ignores user writes
//! (`aa32_id_visibility`: `REG_RAZ | REG_USER_WI`); the tables do not apply then
//! (`validate::id_regs::aarch32_writes_ignored`).

use super::{higher, lower, no_entry, signed_lower};
use crate::model::arm64::features::VcpuFeature::PmuV3;
use crate::model::arm64::fields::{FieldNote::*, IdField};

/// `ftr_id_pfr0`. RAS (31:28) and AMU (23:20) have no entry.
pub(super) static ID_PFR0: &[IdField] = &[
    no_entry("RAS", 28),
    lower("DIT", 24),
    no_entry("AMU", 20),
    lower("CSV2", 16),
    lower("State3", 12),
    lower("State2", 8),
    lower("State1", 4),
    lower("State0", 0),
];

/// `ftr_id_pfr1`: every field lower-safe.
pub(super) static ID_PFR1: &[IdField] = &[
    // `kvm_finalize_sys_regs` clears it with ID_AA64PFR0_EL1.GIC (seen on 6.12 in the arm64 lab:
    // written 0x10011001, the guest reads 0x11001).
    lower("GIC", 28).notes(&[ClearedAtFirstRunWithoutVgic, ForcedToVgic]),
    lower("Virt_frac", 24),
    lower("Sec_frac", 20),
    lower("GenTimer", 16),
    lower("Virtualization", 12),
    lower("MProgMod", 8),
    lower("Security", 4),
    lower("ProgMod", 0),
];

/// `ftr_id_pfr2`. RAS_frac (11:8) has no entry.
pub(super) static ID_PFR2: &[IdField] =
    &[no_entry("RAS_frac", 8), lower("SSBS", 4), lower("CSV3", 0)];

/// `ftr_id_dfr0`, with KVM's `set_id_dfr0_el1` and `kvm_arm64_ftr_safe_value` on PerfMon.
/// TraceFilt (31:28) has no entry (the kernel's table says so in a comment).
pub(super) static ID_DFR0: &[IdField] = &[
    no_entry("TraceFilt", 28),
    // `S_ARM64_FTR_BITS(..., FTR_EXACT, PerfMon, 4, 0)` in the host table.
    signed_lower("PerfMon", 24).notes(&[
        KvmJudgesLowerSafe,
        ImpDefReadsAsNotImplemented,
        // Below PMUv3 (3) only 0, "no PMU", is accepted.
        Minimum {
            value: 3,
            zero_allowed: true,
        },
        LimitFromFeature(PmuV3),
    ]),
    lower("MProfDbg", 20),
    lower("MMapTrc", 16),
    lower("CopTrc", 12),
    lower("MMapDbg", 8),
    lower("CopSDbg", 4),
    lower("CopDbg", 0).notes(&[Minimum {
        value: 6,
        zero_allowed: false,
    }]),
];

/// `ftr_id_mmfr0`. InnerShr and OuterShr are signed (0xF = "shareability ignored" reads as -1).
pub(super) static ID_MMFR0: &[IdField] = &[
    signed_lower("InnerShr", 28),
    lower("FCSE", 24),
    lower("AuxReg", 20),
    lower("TCM", 16),
    lower("ShareLvl", 12),
    signed_lower("OuterShr", 8),
    lower("PMSA", 4),
    lower("VMSA", 0),
];

/// `ftr_generic_32bits` (ID_MMFR1): eight unsigned lower-safe fields.
pub(super) static ID_MMFR1: &[IdField] = &[
    lower("BPred", 28),
    lower("L1TstCln", 24),
    lower("L1Uni", 20),
    lower("L1Hvd", 16),
    lower("L1UniSW", 12),
    lower("L1HvdSW", 8),
    lower("L1UniVA", 4),
    lower("L1HvdVA", 0),
];

/// `ftr_generic_32bits` (ID_MMFR2).
pub(super) static ID_MMFR2: &[IdField] = &[
    lower("HWAccFlg", 28),
    lower("WFIStall", 24),
    lower("MemBarr", 20),
    lower("UniTLB", 16),
    lower("HvdTLB", 12),
    lower("L1HvdRng", 8),
    lower("L1HvdBG", 4),
    lower("L1HvdFG", 0),
];

/// `ftr_generic_32bits` (ID_MMFR3).
pub(super) static ID_MMFR3: &[IdField] = &[
    lower("Supersec", 28),
    lower("CMemSz", 24),
    lower("CohWalk", 20),
    lower("PAN", 16),
    lower("MaintBcst", 12),
    lower("BPMaint", 8),
    lower("CMaintSW", 4),
    lower("CMaintVA", 0),
];

/// `ftr_id_mmfr4`. SpecSEI is higher-safe ("it is safe to assume that an SError might be
/// generated").
pub(super) static ID_MMFR4: &[IdField] = &[
    lower("EVT", 28),
    lower("CCIDX", 24),
    lower("LSM", 20),
    lower("HPDS", 16),
    lower("CnP", 12),
    lower("XNX", 8),
    lower("AC2", 4),
    higher("SpecSEI", 0),
];

/// `ftr_id_mmfr5`. nTLBPA (7:4) has no entry.
pub(super) static ID_MMFR5: &[IdField] = &[no_entry("nTLBPA", 4), lower("ETS", 0)];

/// `ftr_id_isar0`. Bits 31:28 are RES0.
pub(super) static ID_ISAR0: &[IdField] = &[
    lower("Divide", 24),
    lower("Debug", 20),
    lower("Coproc", 16),
    lower("CmpBranch", 12),
    lower("BitField", 8),
    lower("BitCount", 4),
    lower("Swap", 0),
];

/// `ftr_generic_32bits` (ID_ISAR1).
pub(super) static ID_ISAR1: &[IdField] = &[
    lower("Jazelle", 28),
    lower("Interwork", 24),
    lower("Immediate", 20),
    lower("IfThen", 16),
    lower("Extend", 12),
    lower("Except_AR", 8),
    lower("Except", 4),
    lower("Endian", 0),
];

/// `ftr_generic_32bits` (ID_ISAR2).
pub(super) static ID_ISAR2: &[IdField] = &[
    lower("Reversal", 28),
    lower("PSR_AR", 24),
    lower("MultU", 20),
    lower("MultS", 16),
    lower("Mult", 12),
    lower("MultiAccessInt", 8),
    lower("MemHint", 4),
    lower("LoadStore", 0),
];

/// `ftr_generic_32bits` (ID_ISAR3).
pub(super) static ID_ISAR3: &[IdField] = &[
    lower("T32EE", 28),
    lower("TrueNOP", 24),
    lower("T32Copy", 20),
    lower("TabBranch", 16),
    lower("SynchPrim", 12),
    lower("SVC", 8),
    lower("SIMD", 4),
    lower("Saturate", 0),
];

/// `ftr_id_isar4`: every field lower-safe.
pub(super) static ID_ISAR4: &[IdField] = &[
    lower("SWP_frac", 28),
    lower("PSR_M", 24),
    lower("SynchPrim_frac", 20),
    lower("Barrier", 16),
    lower("SMC", 12),
    lower("Writeback", 8),
    lower("WithShifts", 4),
    lower("Unpriv", 0),
];

/// `ftr_id_isar5`. VCMA (31:28) has no entry; 23:20 is RES0.
pub(super) static ID_ISAR5: &[IdField] = &[
    no_entry("VCMA", 28),
    lower("RDM", 24),
    lower("CRC32", 16),
    lower("SHA2", 12),
    lower("SHA1", 8),
    lower("AES", 4),
    lower("SEVL", 0),
];

/// `ftr_id_isar6`. Bits 31:28 are RES0 in the kernel's sysreg description.
pub(super) static ID_ISAR6: &[IdField] = &[
    lower("I8MM", 24),
    lower("BF16", 20),
    lower("SPECRES", 16),
    lower("SB", 12),
    lower("FHM", 8),
    lower("DP", 4),
    lower("JSCVT", 0),
];

/// `ftr_mvfr0`: every field lower-safe.
pub(super) static MVFR0: &[IdField] = &[
    lower("FPRound", 28),
    lower("FPShVec", 24),
    lower("FPSqrt", 20),
    lower("FPDivide", 16),
    lower("FPTrap", 12),
    lower("FPDP", 8),
    lower("FPSP", 4),
    lower("SIMDReg", 0),
];

/// `ftr_mvfr1`: every field lower-safe.
pub(super) static MVFR1: &[IdField] = &[
    lower("SIMDFMAC", 28),
    lower("FPHP", 24),
    lower("SIMDHP", 20),
    lower("SIMDSP", 16),
    lower("SIMDInt", 12),
    lower("SIMDLS", 8),
    lower("FPDNaN", 4),
    lower("FPFtZ", 0),
];

/// `ftr_mvfr2`. Bits 31:8 are RES0.
pub(super) static MVFR2: &[IdField] = &[lower("FPMisc", 4), lower("SIMDMisc", 0)];
