//! The fields of the ID registers, and the type KVM judges a change of each field by.
//!
//! A requested ID-register value is judged field by field against the host's limit
//! (`arm64_check_features`, semantics reference §2.5): a field of a [`SafeType`] that lies wholly
//! inside the writable mask may move the way its type allows; every other bit must equal the
//! limit. The tables ([`TABLES`]) carry, per field, the type *KVM* applies (after its own
//! overrides, e.g. PMUVer is `EXACT` in the host table and `LOWER_SAFE` for KVM), whether the
//! field is signed, and the special cases of the custom set handlers as [`FieldNote`]s.
//!
//! Fields are named `REGISTER.FIELD` (`ID_AA64ISAR0_EL1.AES`), in any case.
//!
//! A table lists the fields vmfleet knows, not necessarily every field of the register. Bits that
//! no listed field covers are judged like a field without a kernel entry: they must equal the
//! limit. That is conservative: vmfleet may refuse a change the kernel would accept, never the
//! other way round.

mod tables;

pub use tables::TABLES;

use super::features::VcpuFeature;
use super::sysreg::SysReg;
use super::{catalog, suggest};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;

/// How the kernel decides whether a new field value is safe relative to the limit
/// (`arm64_ftr_safe_value`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SafeType {
    /// `FTR_LOWER_SAFE`: any value up to the limit (signed fields compare signed).
    LowerSafe,
    /// `FTR_HIGHER_SAFE`: any value from the limit up.
    HigherSafe,
    /// `FTR_EXACT`: the limit, or the field's safe value.
    Exact,
    /// `FTR_HIGHER_OR_ZERO_SAFE`: 0, or any value from the limit up when the limit is not 0.
    HigherOrZeroSafe,
}

impl fmt::Display for SafeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SafeType::LowerSafe => "lower-safe",
            SafeType::HigherSafe => "higher-safe",
            SafeType::Exact => "exact",
            SafeType::HigherOrZeroSafe => "higher-or-zero-safe",
        })
    }
}

/// What decides the values a field accepts when it lies inside the writable mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FieldCheck {
    /// The kernel has an `arm64_ftr_bits` entry: a change is judged by `safe`. `safe_value` is
    /// the entry's `safe_val`, which only [`SafeType::Exact`] uses.
    Typed {
        /// The type KVM applies.
        safe: SafeType,
        /// The entry's safe value.
        safe_value: u64,
    },
    /// The kernel has no entry for these bits: inside the mask or not, they must equal the limit
    /// (which sanitisation makes 0).
    NoKernelEntry,
    /// vmfleet does not model the kernel's type for this field, so it accepts only the limit.
    Untyped,
    /// A field of a register the kernel judges whole, not field by field: MIDR_EL1's, which
    /// `set_imp_id_reg` takes at any value within its writable mask once capability 239 is
    /// enabled (`validate::check_implementation_id`). The table names the fields for specs and
    /// reports only.
    WholeRegister,
}

/// A special case of the custom set handlers or of how KVM computes the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FieldNote {
    /// `EXACT` in the host's table, judged `LOWER_SAFE` by KVM (`kvm_arm64_ftr_safe_value`).
    KvmJudgesLowerSafe,
    /// 0xF ("IMPLEMENTATION DEFINED") is rewritten to 0 ("not implemented") before the check, and
    /// 0 is what the register then holds.
    ImpDefReadsAsNotImplemented,
    /// The set handler refuses a value below `value` with `EINVAL`, also after the VM has run;
    /// 0 is exempt when `zero_allowed`.
    Minimum {
        /// The smallest value accepted.
        value: u64,
        /// Whether 0 is accepted anyway (PerfMon: 0 = no PMU).
        zero_allowed: bool,
    },
    /// KVM accepts and ignores a value equal to the *host's own* field (MPAM, MPAM_frac,
    /// MMFR2.NV). Userspace cannot read that value, so vmfleet accepts only the limit.
    IgnoredWhenEqualToHost,
    /// Not writable: the VCPU_INIT feature decides the value.
    DecidedByFeature(VcpuFeature),
    /// Writable, but its limit is 0 unless the VCPU_INIT feature is requested.
    LimitFromFeature(VcpuFeature),
    /// Not writable: a VM capability enabled before vCPU creation decides the value.
    LimitFromVmCapability(&'static str),
    /// KVM clears the field at the VM's first run when no in-kernel GIC was created
    /// (`kvm_finalize_sys_regs`): a read-back after the first run can differ from what was
    /// written before it.
    ClearedAtFirstRunWithoutVgic,
    /// Newer kernels (7.1 on, cross-host §1) force the field to what the VM's vGIC supports at
    /// the first run, whatever userspace wrote: the kernel owns it. A read-back after the first
    /// run that differs from the write is the kernel's doing, never a template mismatch; the
    /// guest sees the vGIC's value. (On 6.12 only [`FieldNote::ClearedAtFirstRunWithoutVgic`]
    /// applies; both leave the field out of the read-back comparison,
    /// [`first_run_mutable_mask`].)
    ForcedToVgic,
    /// With MTE2 and MTE_frac = 0xF on the host, a requested MTE_frac of 0 (ASYNC) is accepted and
    /// stored as 0xF (`set_id_aa64pfr1_el1`).
    MteFracAsyncRewrite,
    /// With this VCPU_INIT feature the field must stay nonzero (`EINVAL`).
    NonzeroWithFeature(VcpuFeature),
}

/// One field of an ID register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdField {
    /// The architectural field name (`AES`, `SpecSEI`, `TGRAN4_2`).
    pub name: &'static str,
    /// The lowest bit.
    pub shift: u8,
    /// The number of bits (4 for almost every field).
    pub width: u8,
    /// Whether the field is signed: 0xF in a 4-bit signed field is -1, "not implemented".
    pub signed: bool,
    /// What decides the values it accepts.
    pub check: FieldCheck,
    /// Where KVM treats the field otherwise than `check` alone says (cleared at the first run,
    /// rewritten on write, tied to a `KVM_ARM_VCPU_INIT` feature).
    pub notes: &'static [FieldNote],
}

impl IdField {
    /// The field's bits in its register. (The arithmetic here saturates rather than overflow, so
    /// that a hand-built field with an impossible shift or width cannot panic.)
    pub const fn mask(&self) -> u64 {
        if self.shift >= 64 {
            0
        } else {
            self.max_raw() << self.shift
        }
    }

    /// The largest raw value the field holds (0xF for 4 bits).
    pub const fn max_raw(&self) -> u64 {
        match self.width {
            0 => 0,
            w if w >= 64 => u64::MAX,
            w => (1u64 << w) - 1,
        }
    }

    /// The field's raw bits in `register`.
    pub const fn raw(&self, register: u64) -> u64 {
        if self.shift >= 64 {
            0
        } else {
            (register >> self.shift) & self.max_raw()
        }
    }

    /// The field's value in `register` as the kernel compares it (`arm64_ftr_value`):
    /// sign-extended when the field is signed.
    pub const fn value(&self, register: u64) -> i64 {
        self.sign_extend(self.raw(register))
    }

    /// `raw` read as this field reads it: sign-extended when the field is signed.
    pub const fn sign_extend(&self, raw: u64) -> i64 {
        let raw = raw & self.max_raw();
        let negative =
            self.signed && self.width > 0 && self.width < 64 && (raw >> (self.width - 1)) & 1 == 1;
        if negative {
            (raw as i64) - (1i64 << self.width)
        } else {
            raw as i64
        }
    }

    /// `register` with this field set to `raw` (bits beyond the field's width are dropped).
    pub const fn with(&self, register: u64, raw: u64) -> u64 {
        if self.shift >= 64 {
            register
        } else {
            (register & !self.mask()) | ((raw & self.max_raw()) << self.shift)
        }
    }

    /// `7:4`, or `29` for a one-bit field.
    pub fn bits(&self) -> String {
        let low = u32::from(self.shift);
        let high = (low + u32::from(self.width)).saturating_sub(1).max(low);
        if high == low {
            low.to_string()
        } else {
            format!("{high}:{low}")
        }
    }

    /// The set handler's minimum, if it has one.
    pub fn minimum(&self) -> Option<(u64, bool)> {
        self.notes.iter().find_map(|note| match *note {
            FieldNote::Minimum {
                value,
                zero_allowed,
            } => Some((value, zero_allowed)),
            _ => None,
        })
    }

    /// Whether the field carries `note`.
    pub fn has(&self, note: FieldNote) -> bool {
        self.notes.contains(&note)
    }

    /// The VCPU_INIT feature that decides or limits this field, if any.
    pub fn feature(&self) -> Option<VcpuFeature> {
        self.notes.iter().find_map(|note| match *note {
            FieldNote::DecidedByFeature(f) | FieldNote::LimitFromFeature(f) => Some(f),
            _ => None,
        })
    }
}

/// The fields vmfleet knows of one register.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FieldTable {
    /// The register.
    pub register: SysReg,
    /// Its fields, from the highest bits down (the kernel's table order).
    pub fields: &'static [IdField],
    /// The register reads as zero, and accepts only 0, unless the vCPU has this feature
    /// (ID_AA64ZFR0_EL1 without SVE).
    pub read_as_zero_without: Option<VcpuFeature>,
}

impl FieldTable {
    /// The register's name.
    pub fn register_name(&self) -> String {
        catalog::name_of(self.register)
    }

    /// The field called `name` (any case).
    pub fn field(&self, name: &str) -> Option<&'static IdField> {
        let wanted = suggest::normalise(name);
        self.fields
            .iter()
            .find(|f| suggest::normalise(f.name) == wanted)
    }

    /// The field that holds `bit`, if the table lists one.
    pub fn field_at_bit(&self, bit: u32) -> Option<&'static IdField> {
        self.fields.iter().find(|f| f.mask() >> bit & 1 == 1)
    }
}

/// The table of `register`, if vmfleet has one.
pub fn table_for(register: SysReg) -> Option<&'static FieldTable> {
    TABLES.iter().find(|t| t.register == register)
}

/// Bits of `register` that KVM may change by itself at the VM's first run
/// ([`FieldNote::ClearedAtFirstRunWithoutVgic`], [`FieldNote::ForcedToVgic`]): checks comparing a read-back after the first run
/// with what was written before it must ignore them.
pub fn first_run_mutable_mask(register: SysReg) -> u64 {
    table_for(register).map_or(0, |t| {
        t.fields
            .iter()
            .filter(|f| {
                f.has(FieldNote::ClearedAtFirstRunWithoutVgic) || f.has(FieldNote::ForcedToVgic)
            })
            .fold(0, |mask, f| mask | f.mask())
    })
}

/// A field together with its register: what a spec names as `ID_AA64ISAR0_EL1.AES`.
///
/// Orders by register encoding, then from the highest field down. Serializes as its full name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FieldRef {
    table: &'static FieldTable,
    field: &'static IdField,
}

impl FieldRef {
    /// The register.
    pub fn register(&self) -> SysReg {
        self.table.register
    }

    /// The register's table.
    pub fn table(&self) -> &'static FieldTable {
        self.table
    }

    /// The field.
    pub fn field(&self) -> &'static IdField {
        self.field
    }

    /// `ID_AA64ISAR0_EL1.AES`.
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.table.register_name(), self.field.name)
    }
}

impl PartialOrd for FieldRef {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FieldRef {
    fn cmp(&self, other: &Self) -> Ordering {
        self.register()
            .cmp(&other.register())
            .then(other.field.shift.cmp(&self.field.shift))
    }
}

impl fmt::Display for FieldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full_name())
    }
}

impl Serialize for FieldRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.full_name())
    }
}

impl<'de> Deserialize<'de> for FieldRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        resolve(&name).map_err(serde::de::Error::custom)
    }
}

/// Why a `REGISTER.FIELD` name names no field vmfleet knows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum FieldNameError {
    /// No `.` between register and field.
    #[error(
        "`{key}` is not of the form REGISTER.FIELD (e.g. ID_AA64ISAR0_EL1.AES){}",
        suggest::did_you_mean(.suggestion)
    )]
    NotRegisterDotField {
        /// The name given.
        key: String,
        /// A full name whose field is called `key`, if exactly that exists.
        suggestion: Option<String>,
    },
    /// The register part names no catalogued register.
    #[error("`{key}`: unknown register `{register}`{}", suggest::did_you_mean(.suggestion))]
    UnknownRegister {
        /// The name given.
        key: String,
        /// Its register part.
        register: String,
        /// The closest known name.
        suggestion: Option<String>,
    },
    /// The register exists but vmfleet has no field table for it.
    #[error(
        "`{key}`: vmfleet has no field table for {register}; registers with named fields: {known}"
    )]
    NoFieldTable {
        /// The name given.
        key: String,
        /// The register's catalog name.
        register: String,
        /// The registers that do have tables.
        known: String,
    },
    /// The register has a table without that field.
    #[error("`{key}`: {register} has no field `{field}`{}", suggest::did_you_mean(.suggestion))]
    UnknownField {
        /// The name given.
        key: String,
        /// The register's catalog name.
        register: String,
        /// The field part.
        field: String,
        /// The closest known full name.
        suggestion: Option<String>,
    },
}

/// Every full field name, in table order.
fn all_full_names() -> impl Iterator<Item = (FieldRef, String)> {
    TABLES.iter().flat_map(|table| {
        table.fields.iter().map(move |field| {
            let r = FieldRef { table, field };
            (r, r.full_name())
        })
    })
}

/// The one element of `items`, if there is exactly one (a suggestion must not be a guess between
/// several).
fn only(items: Vec<String>) -> Option<String> {
    match <[String; 1]>::try_from(items) {
        Ok([one]) => Some(one),
        Err(_) => None,
    }
}

/// Whether `register` is one of the AArch32 feature-ID registers (CRm 1..3 of the feature-ID
/// space: ID_PFR0_EL1 … ID_MMFR5_EL1).
fn is_aarch32(register: SysReg) -> bool {
    register.is_feature_id() && (1..=3).contains(&register.crm())
}

/// The full name of the one field called `field`, if exactly one table has it, or else if exactly
/// one register of the family `aarch32` (AArch32 or not) has it: `SB` is a field of both
/// ID_AA64ISAR1_EL1 and ID_ISAR6_EL1, and someone writing an AArch64 register (or no register)
/// most likely means the AArch64 one.
fn same_field_elsewhere(field: &str, aarch32: bool) -> Option<String> {
    let wanted = suggest::normalise(field);
    let all: Vec<FieldRef> = all_full_names()
        .map(|(r, _)| r)
        .filter(|r| suggest::normalise(r.field.name) == wanted)
        .collect();
    let names = |refs: &mut dyn Iterator<Item = &FieldRef>| {
        only(refs.map(FieldRef::full_name).collect::<Vec<_>>())
    };
    names(&mut all.iter())
        .or_else(|| names(&mut all.iter().filter(|r| is_aarch32(r.register()) == aarch32)))
}

/// The table of the register called `register` (catalog or generic name, any case). `key` is the
/// name as the user wrote it, for the error; `field` the field part, if any, to make the
/// suggestion a full name.
fn table_named(
    key: &str,
    register: &str,
    field: Option<&str>,
) -> Result<&'static FieldTable, FieldNameError> {
    let Some(found) = catalog::by_name(register) else {
        let with_tables: Vec<String> = TABLES.iter().map(|t| t.register_name()).collect();
        let near = suggest::closest(register, with_tables.iter().map(String::as_str))
            .or_else(|| catalog::suggest(register));
        // Prefer a full name when the corrected register has the field.
        let suggestion = near.map(|name| {
            catalog::by_name(name)
                .and_then(|r| table_for(r.reg))
                .zip(field)
                .and_then(|(t, field)| t.field(field))
                .map_or_else(|| name.to_string(), |f| format!("{name}.{}", f.name))
        });
        return Err(FieldNameError::UnknownRegister {
            key: key.to_string(),
            register: register.to_string(),
            suggestion,
        });
    };
    table_for(found.reg).ok_or_else(|| {
        let known: Vec<String> = TABLES.iter().map(|t| t.register_name()).collect();
        FieldNameError::NoFieldTable {
            key: key.to_string(),
            register: found.name.to_string(),
            known: known.join(", "),
        }
    })
}

/// The field table of the register called `name` (catalog or generic name, any case), or why
/// there is none.
pub fn resolve_table(name: &str) -> Result<&'static FieldTable, FieldNameError> {
    table_named(name, name.trim(), None)
}

/// The field a `REGISTER.FIELD` name names: the register by catalog or generic name, the field by
/// name, both in any case.
pub fn resolve(key: &str) -> Result<FieldRef, FieldNameError> {
    let Some((register_part, field_part)) = key.trim().split_once('.') else {
        return Err(FieldNameError::NotRegisterDotField {
            key: key.to_string(),
            suggestion: same_field_elsewhere(key, false),
        });
    };
    let table = table_named(key, register_part, Some(field_part))?;
    match table.field(field_part) {
        Some(field) => Ok(FieldRef { table, field }),
        None => {
            let register = table.register_name();
            let suggestion = suggest::closest(field_part, table.fields.iter().map(|f| f.name))
                .map(|f| format!("{register}.{f}"))
                .or_else(|| {
                    // The right field in the wrong register (ISAR0.SB lives in ISAR1).
                    same_field_elsewhere(field_part, is_aarch32(table.register))
                });
            Err(FieldNameError::UnknownField {
                key: key.to_string(),
                register,
                field: field_part.to_string(),
                suggestion,
            })
        }
    }
}

/// The field a `REGISTER.FIELD` name names, if any.
pub fn by_name(key: &str) -> Option<FieldRef> {
    resolve(key).ok()
}

/// The field `field` of `register`, by the table's own name.
pub fn field_of(register: SysReg, field: &str) -> Option<FieldRef> {
    let table = table_for(register)?;
    table.field(field).map(|field| FieldRef { table, field })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arm64::catalog::{
        CTR_EL0, ID_AA64DFR0_EL1, ID_AA64ISAR0_EL1, ID_AA64MMFR0_EL1, ID_AA64MMFR1_EL1,
        ID_AA64PFR0_EL1,
    };
    use std::collections::HashSet;

    #[test]
    fn tables_are_well_formed() {
        let mut registers = HashSet::new();
        for table in TABLES {
            assert!(
                registers.insert(table.register),
                "two tables for a register"
            );
            assert!(catalog::by_reg(table.register).is_some());
            let mut covered = 0u64;
            let mut names = HashSet::new();
            for pair in table.fields.windows(2) {
                assert!(
                    pair[0].shift > pair[1].shift,
                    "{}: {} before {}",
                    table.register_name(),
                    pair[0].name,
                    pair[1].name
                );
            }
            for field in table.fields {
                assert!(field.width >= 1 && u32::from(field.shift) + u32::from(field.width) <= 64);
                assert_eq!(covered & field.mask(), 0, "{} overlaps", field.name);
                covered |= field.mask();
                assert!(
                    names.insert(suggest::normalise(field.name)),
                    "{}",
                    field.name
                );
                if let FieldCheck::Typed { safe_value, .. } = field.check {
                    assert!(safe_value <= field.max_raw(), "{}", field.name);
                }
            }
        }
    }

    #[test]
    fn the_required_registers_have_tables() {
        for name in [
            "ID_AA64PFR0_EL1",
            "ID_AA64PFR1_EL1",
            "ID_AA64PFR2_EL1",
            "ID_AA64ISAR0_EL1",
            "ID_AA64ISAR1_EL1",
            "ID_AA64ISAR2_EL1",
            "ID_AA64ISAR3_EL1",
            "ID_AA64MMFR0_EL1",
            "ID_AA64MMFR1_EL1",
            "ID_AA64MMFR2_EL1",
            "ID_AA64MMFR3_EL1",
            "ID_AA64MMFR4_EL1",
            "ID_AA64DFR0_EL1",
            "ID_AA64ZFR0_EL1",
            "ID_DFR0_EL1",
            "CTR_EL0",
            "ID_AA64FPFR0_EL1",
            "ID_PFR0_EL1",
            "ID_PFR1_EL1",
            "ID_PFR2_EL1",
            "ID_MMFR0_EL1",
            "ID_MMFR1_EL1",
            "ID_MMFR2_EL1",
            "ID_MMFR3_EL1",
            "ID_MMFR4_EL1",
            "ID_MMFR5_EL1",
            "ID_ISAR0_EL1",
            "ID_ISAR1_EL1",
            "ID_ISAR2_EL1",
            "ID_ISAR3_EL1",
            "ID_ISAR4_EL1",
            "ID_ISAR5_EL1",
            "ID_ISAR6_EL1",
            "MVFR0_EL1",
            "MVFR1_EL1",
            "MVFR2_EL1",
        ] {
            let reg = catalog::by_name(name).unwrap().reg;
            assert!(table_for(reg).is_some(), "{name}");
        }
    }

    #[test]
    fn lookup_by_full_name_in_any_case() {
        let aes = by_name("ID_AA64ISAR0_EL1.AES").unwrap();
        assert_eq!(aes.register(), ID_AA64ISAR0_EL1);
        assert_eq!((aes.field().shift, aes.field().width), (4, 4));
        assert_eq!(by_name("id_aa64isar0_el1.aes"), Some(aes));
        assert_eq!(by_name("S3_0_C0_C6_0.Aes"), Some(aes));
        assert_eq!(aes.to_string(), "ID_AA64ISAR0_EL1.AES");
        assert_eq!(aes.field().bits(), "7:4");
        let dic = field_of(CTR_EL0, "DIC").unwrap();
        assert_eq!(
            (dic.field().bits(), dic.field().mask()),
            ("29".into(), 1 << 29)
        );
    }

    #[test]
    fn types_of_the_fields_the_reference_singles_out() {
        let check = |reg, name| field_of(reg, name).unwrap().field().check;
        let typed = |safe, safe_value| FieldCheck::Typed { safe, safe_value };
        assert_eq!(
            check(ID_AA64MMFR1_EL1, "SpecSEI"),
            typed(SafeType::HigherSafe, 0)
        );
        assert_eq!(
            check(ID_AA64MMFR0_EL1, "TGRAN4_2"),
            typed(SafeType::Exact, 1)
        );
        assert_eq!(check(CTR_EL0, "CWG"), typed(SafeType::HigherOrZeroSafe, 0));
        assert_eq!(check(ID_AA64PFR0_EL1, "RME"), FieldCheck::NoKernelEntry);
        let pmuver = field_of(ID_AA64DFR0_EL1, "PMUVer").unwrap().field();
        assert!(pmuver.signed);
        assert!(pmuver.has(FieldNote::KvmJudgesLowerSafe));
        assert!(pmuver.has(FieldNote::ImpDefReadsAsNotImplemented));
        assert_eq!(pmuver.feature(), Some(VcpuFeature::PmuV3));
        let debugver = field_of(ID_AA64DFR0_EL1, "DebugVer").unwrap().field();
        assert_eq!(debugver.minimum(), Some((6, false)));
        assert!(field_of(ID_AA64MMFR0_EL1, "TGRAN4").unwrap().field().signed);
        assert!(
            !field_of(ID_AA64MMFR0_EL1, "TGRAN16")
                .unwrap()
                .field()
                .signed
        );
    }

    #[test]
    fn hand_built_fields_with_impossible_geometry_do_not_panic() {
        let bad = IdField {
            name: "BAD",
            shift: 70,
            width: 0,
            signed: true,
            check: FieldCheck::Untyped,
            notes: &[],
        };
        assert_eq!(
            (bad.mask(), bad.raw(u64::MAX), bad.value(u64::MAX)),
            (0, 0, 0)
        );
        assert_eq!(bad.with(7, 1), 7);
        assert_eq!(bad.bits(), "70");
        let wide = IdField {
            shift: 0,
            width: 64,
            ..bad
        };
        assert_eq!(
            (wide.mask(), wide.raw(5), wide.value(u64::MAX)),
            (u64::MAX, 5, -1)
        );
    }

    #[test]
    fn raw_signed_and_insert() {
        let tgran4 = field_of(ID_AA64MMFR0_EL1, "TGRAN4").unwrap().field();
        assert_eq!(tgran4.raw(0xF000_0000), 0xF);
        assert_eq!(tgran4.value(0xF000_0000), -1, "0xF is 'not implemented'");
        assert_eq!(tgran4.value(0x7000_0000), 7);
        let aes = field_of(ID_AA64ISAR0_EL1, "AES").unwrap().field();
        assert_eq!(aes.value(0x1221_1111_1021_2120), 2);
        assert_eq!(aes.with(0x1221_1111_1021_2120, 0), 0x1221_1111_1021_2100);
        assert_eq!(aes.with(0, 0x1F), 0xF0, "bits beyond the width are dropped");
    }

    #[test]
    fn first_run_mutable_bits_are_gic_and_gcie() {
        assert_eq!(first_run_mutable_mask(ID_AA64PFR0_EL1), 0xF << 24);
        assert_eq!(
            first_run_mutable_mask(crate::model::arm64::catalog::ID_AA64PFR2_EL1),
            0xF << 12
        );
        assert_eq!(first_run_mutable_mask(ID_AA64ISAR0_EL1), 0);
        // AArch32: `kvm_finalize_sys_regs` clears ID_PFR1_EL1.GIC too.
        assert_eq!(
            first_run_mutable_mask(crate::model::arm64::catalog::ID_PFR1_EL1),
            0xF << 28
        );
    }

    #[test]
    fn unknown_names_are_explained_with_a_suggestion() {
        let message = |key: &str| resolve(key).unwrap_err().to_string();
        assert_eq!(
            message("ID_AA64ISAR0_EL1.AESS"),
            "`ID_AA64ISAR0_EL1.AESS`: ID_AA64ISAR0_EL1 has no field `AESS` — did you mean \
             `ID_AA64ISAR0_EL1.AES`?"
        );
        assert_eq!(
            message("ID_AA64ISR0_EL1.AES"),
            "`ID_AA64ISR0_EL1.AES`: unknown register `ID_AA64ISR0_EL1` — did you mean \
             `ID_AA64ISAR0_EL1.AES`?"
        );
        // The right field, the wrong register.
        assert!(message("ID_AA64ISAR0_EL1.SB").contains("did you mean `ID_AA64ISAR1_EL1.SB`?"));
        assert!(message("SpecSEI").contains("did you mean `ID_AA64MMFR1_EL1.SpecSEI`?"));
        // SB is a field of ID_AA64ISAR1_EL1 and of ID_ISAR6_EL1 (AArch32): the suggestion stays
        // in the family of the register written.
        assert!(message("ID_ISAR5_EL1.SB").contains("did you mean `ID_ISAR6_EL1.SB`?"));
        assert!(message("SB").contains("did you mean `ID_AA64ISAR1_EL1.SB`?"));
        // Unique to one AArch32 register: suggested from anywhere.
        assert!(message("State0").contains("did you mean `ID_PFR0_EL1.State0`?"));
        let no_table = message("ID_DFR1_EL1.MTPMU");
        assert!(
            no_table.contains("no field table for ID_DFR1_EL1"),
            "{no_table}"
        );
        assert!(no_table.contains("ID_AA64ISAR0_EL1"), "{no_table}");
    }

    #[test]
    fn register_names_resolve_to_tables_or_say_why_not() {
        assert_eq!(
            resolve_table("id_aa64mmfr0_el1").unwrap().register,
            ID_AA64MMFR0_EL1
        );
        assert_eq!(
            resolve_table("ID_AA64MMR0_EL1").unwrap_err().to_string(),
            "`ID_AA64MMR0_EL1`: unknown register `ID_AA64MMR0_EL1` — did you mean \
             `ID_AA64MMFR0_EL1`?"
        );
        assert!(matches!(
            resolve_table("REVIDR_EL1"),
            Err(FieldNameError::NoFieldTable { .. })
        ));
    }

    #[test]
    fn field_refs_serialize_as_full_names_and_order_by_encoding() {
        let aes = by_name("ID_AA64ISAR0_EL1.AES").unwrap();
        let sha1 = by_name("ID_AA64ISAR0_EL1.SHA1").unwrap();
        let csv3 = by_name("ID_AA64PFR0_EL1.CSV3").unwrap();
        assert!(csv3 < aes, "PFR0 comes before ISAR0");
        assert!(
            sha1 < aes,
            "higher fields first: SHA1 (11:8) before AES (7:4)"
        );
        let json = serde_json::to_string(&aes).unwrap();
        assert_eq!(json, "\"ID_AA64ISAR0_EL1.AES\"");
        assert_eq!(serde_json::from_str::<FieldRef>(&json).unwrap(), aes);
        assert!(serde_json::from_str::<FieldRef>("\"ID_AA64ISAR0_EL1.NOPE\"").is_err());
    }
}
