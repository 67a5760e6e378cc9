//! What vmfleet says when it predicts that the kernel refuses a write, or when its own pre-run
//! lock refuses one: which register and field, the value asked for, the limit it was judged
//! against, the rule, and the errno the kernel gives for that rule.

use super::masks::MaskSource;
use crate::hypervisor::errno::Errno;
use crate::model::arm64::features::VcpuFeature;
use crate::model::arm64::fields;
use crate::model::arm64::host::{KernelProbe, PmuImpDef};
use crate::model::arm64::reg_id::{self, RegClass};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The rule a write breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arm64Rule {
    // ---- arm64_check_features and the ID-register set handlers (EINVAL)
    /// A lower-safe field above the limit.
    AboveLimit,
    /// A higher-safe field below the limit.
    BelowLimit,
    /// An exact field at neither the limit nor its safe value.
    ExactField {
        /// The one other value the field accepts.
        safe_value: u64,
    },
    /// A higher-or-zero-safe field that is neither 0 nor at least the limit (or the limit is 0).
    HigherOrZero,
    /// Bits outside the writable mask differ from the limit.
    OutsideWritableMask {
        /// The changed bits outside the mask.
        changed: u64,
        /// The register's writable mask.
        mask: u64,
        /// Where the mask came from.
        source: MaskSource,
    },
    /// Bits inside the mask that the kernel has no feature entry for differ from the limit.
    NoKernelFeatureEntry,
    /// A field whose kernel type vmfleet does not model differs from the limit.
    UntypedField,
    /// Bits inside the mask that no field vmfleet knows covers differ from the limit.
    UnmodelledBits {
        /// The changed bits.
        changed: u64,
    },
    /// A set handler's minimum.
    BelowMinimum {
        /// The smallest value accepted.
        minimum: u64,
        /// Whether 0 is accepted anyway.
        zero_allowed: bool,
    },
    /// A set handler's minimum that only some kernels have, with no capability to show which
    /// (ID_AA64PFR0_EL1.EL0/EL1 >= 1, added after 6.12; ID_AA64DFR0_EL1.DebugVer >= 6).
    KernelFloor {
        /// The smallest value accepted.
        minimum: u64,
        /// Whether this host's kernel was measured to enforce it (a probe write on a scratch VM
        /// was refused); `false`: not measured, and vmfleet assumes the newer kernels' rule.
        measured: bool,
        /// The probe that measures it.
        probe: KernelProbe,
    },
    /// ID_AA64DFR0_EL1.PMUVer = 0xF (IMPLEMENTATION DEFINED), refused as this host's kernel
    /// handles it ([`PmuImpDef`]); `None`: not measured on a kernel without writable ID
    /// registers, where 6.1 refuses it and vmfleet assumes so.
    PmuImpDef {
        /// What the probe write on a scratch VM measured.
        measured: Option<PmuImpDef>,
    },
    /// A field that must stay nonzero with a VCPU_INIT feature.
    ZeroWithFeature {
        /// The feature.
        feature: VcpuFeature,
    },
    /// A register that reads as zero without a VCPU_INIT feature accepts only 0.
    ReadAsZero {
        /// The feature that would make it visible.
        unless: VcpuFeature,
    },
    /// MIDR/REVIDR/AIDR change without `KVM_CAP_ARM_WRITABLE_IMP_ID_REGS`.
    ImplementationIdNotWritable,
    /// MIDR/REVIDR/AIDR bits outside their writable mask.
    ImplementationIdMask {
        /// The writable bits.
        mask: u64,
    },
    /// CLIDR_EL1 with reserved bits set.
    ClidrReservedBits {
        /// The reserved bits set.
        bits: u64,
    },
    /// CLIDR_EL1 claims no cache maintenance is needed to the point of unification while
    /// CTR_EL0.IDC says it is.
    ClidrClaimsCoherence,
    // ---- firmware registers (EINVAL)
    /// A PSCI version KVM does not know.
    PsciVersionUnknown,
    /// A PSCI version newer than the host's `KVM_ARM_PSCI_LATEST`.
    PsciVersionAboveHost,
    /// PSCI 0.2 or later for a vCPU without the psci-0.2 feature.
    PsciVersionNeedsPsci02,
    /// PSCI 0.1 for a vCPU with the psci-0.2 feature.
    PsciVersion01WithPsci02,
    /// Bits beyond a workaround register's level field.
    WorkaroundStrayBits {
        /// The bits a value may have.
        allowed: u64,
    },
    /// A workaround level above the host's.
    WorkaroundAboveHost,
    /// WORKAROUND_2's ENABLED bit without the AVAIL level.
    Workaround2EnabledWithoutAvail,
    /// A WORKAROUND_2 level above NOT_REQUIRED (3).
    Workaround2ReservedLevel,
    /// Bitmap bits the host does not offer.
    BitmapBitsBeyondHost {
        /// The bits the host offers.
        allowed: u64,
    },
    // ---- register existence
    /// Not an arm64 register id at all (EINVAL).
    NotArm64Id,
    /// The kernel does not list the register (ENOENT).
    NotListed,
    // ---- the pre-run lock (EBUSY)
    /// A frozen register changed after the VM's first run.
    ChangedAfterRun {
        /// Whether the kernel enforces this too; when not (6.1 ID registers, CLIDR, unknown
        /// firmware registers), the refusal is vmfleet's promise of a locked model.
        kernel_enforces: bool,
    },
}

impl Arm64Rule {
    /// The errno the kernel answers a write breaking this rule with (for the lock's own rules:
    /// the class the newest kernels use for the same write).
    pub fn errno(&self) -> Errno {
        match self {
            Arm64Rule::NotListed => Errno::ENOENT,
            Arm64Rule::ChangedAfterRun { .. } => Errno::EBUSY,
            _ => Errno::EINVAL,
        }
    }

    /// Whether the rule is vmfleet's cautious reading rather than the kernel's: a write it
    /// refuses might be accepted by the kernel.
    pub fn is_conservative(&self) -> bool {
        matches!(
            self,
            Arm64Rule::UntypedField
                | Arm64Rule::UnmodelledBits { .. }
                | Arm64Rule::KernelFloor {
                    measured: false,
                    ..
                }
                | Arm64Rule::PmuImpDef { measured: None }
        )
    }

    /// The kernel probe this refusal is waiting for: a rule judged without the host's
    /// measurement, which a probe write on a scratch VM would settle ([`KernelProbe`]).
    pub fn unmeasured_probe(&self) -> Option<KernelProbe> {
        match self {
            Arm64Rule::KernelFloor {
                measured: false,
                probe,
                ..
            } => Some(*probe),
            Arm64Rule::PmuImpDef { measured: None } => Some(KernelProbe::PmuImpDef),
            _ => None,
        }
    }

    /// What the value a write is judged against is called in a report; `None` when the rule
    /// does not compare with one (the register does not exist).
    pub fn limit_label(&self) -> Option<&'static str> {
        Some(match self {
            Arm64Rule::NotArm64Id | Arm64Rule::NotListed => return None,
            Arm64Rule::ChangedAfterRun { .. }
            | Arm64Rule::ImplementationIdNotWritable
            | Arm64Rule::ImplementationIdMask { .. }
            | Arm64Rule::ClidrReservedBits { .. }
            | Arm64Rule::ClidrClaimsCoherence => "the VM holds",
            Arm64Rule::PsciVersionAboveHost
            | Arm64Rule::PsciVersionUnknown
            | Arm64Rule::PsciVersionNeedsPsci02
            | Arm64Rule::PsciVersion01WithPsci02
            | Arm64Rule::BitmapBitsBeyondHost { .. } => "host offers",
            Arm64Rule::WorkaroundStrayBits { .. }
            | Arm64Rule::WorkaroundAboveHost
            | Arm64Rule::Workaround2EnabledWithoutAvail
            | Arm64Rule::Workaround2ReservedLevel => "host level",
            _ => "host limit",
        })
    }
}

impl fmt::Display for Arm64Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arm64Rule::AboveLimit => {
                f.write_str("a lower-safe field may be lowered, not raised above the host limit")
            }
            Arm64Rule::BelowLimit => {
                f.write_str("a higher-safe field may be raised, not lowered below the host limit")
            }
            Arm64Rule::ExactField { safe_value } => write!(
                f,
                "an exact field accepts only the host limit or its safe value {safe_value:#x}"
            ),
            Arm64Rule::HigherOrZero => f.write_str(
                "a higher-or-zero-safe field accepts only 0 or, when the limit is not 0, values \
                 from the limit up",
            ),
            Arm64Rule::OutsideWritableMask {
                changed,
                mask,
                source,
            } => write!(
                f,
                "bits {changed:#x} change outside the writable mask {mask:#018x} ({source}); \
                 such bits must equal the host limit"
            ),
            Arm64Rule::NoKernelFeatureEntry => f.write_str(
                "the kernel has no feature entry for these bits, so they must equal the host limit",
            ),
            Arm64Rule::UntypedField => f.write_str(
                "vmfleet does not model this field's kernel type, so it accepts only the host limit",
            ),
            Arm64Rule::UnmodelledBits { changed } => write!(
                f,
                "bits {changed:#x} belong to no field vmfleet knows, so they must equal the host \
                 limit"
            ),
            Arm64Rule::BelowMinimum {
                minimum,
                zero_allowed: false,
            } => write!(f, "the set handler refuses values below {minimum:#x}"),
            Arm64Rule::BelowMinimum {
                minimum,
                zero_allowed: true,
            } => write!(f, "the set handler refuses values below {minimum:#x} other than 0"),
            Arm64Rule::KernelFloor {
                minimum,
                measured: true,
                ..
            } => write!(
                f,
                "the set handler refuses values below {minimum:#x}, and this host's kernel \
                 enforces it (a probe write on a scratch VM was refused)"
            ),
            Arm64Rule::KernelFloor {
                minimum,
                measured: false,
                probe: KernelProbe::ElFloor,
            } => write!(
                f,
                "the set handler refuses values below {minimum:#x} on kernels after 6.12 (6.12 \
                 accepts them); the floor was not measured on this host, so vmfleet assumes it"
            ),
            Arm64Rule::KernelFloor {
                minimum,
                measured: false,
                ..
            } => write!(
                f,
                "the set handler refuses values below {minimum:#x} on every kernel vmfleet \
                 knows; the floor was not measured on this host, so vmfleet assumes it"
            ),
            Arm64Rule::PmuImpDef { measured: None } => f.write_str(
                "a kernel without writable ID registers refuses PMUVer = 0xF (6.1) or keeps it \
                 (6.3-6.6); this host's answer was not measured, so vmfleet assumes the refusal",
            ),
            Arm64Rule::PmuImpDef {
                measured: Some(PmuImpDef::Kept),
            } => f.write_str(
                "this host's kernel keeps PMUVer = 0xF only for a vCPU without a PMU (a probe \
                 write on a scratch VM measured the 6.3-6.6 handler); a vCPU with one needs a \
                 PMU version",
            ),
            Arm64Rule::PmuImpDef { measured: Some(_) } => f.write_str(
                "this host's kernel refuses PMUVer = 0xF (a probe write on a scratch VM was \
                 refused)",
            ),
            Arm64Rule::ZeroWithFeature { feature } => {
                write!(f, "the field must stay nonzero for a vCPU with {feature}")
            }
            Arm64Rule::ReadAsZero { unless } => write!(
                f,
                "the register reads as zero without the VCPU_INIT feature {unless} and accepts \
                 only 0"
            ),
            Arm64Rule::ImplementationIdNotWritable => f.write_str(
                "MIDR_EL1, REVIDR_EL1 and AIDR_EL1 change only on a VM that enabled \
                 KVM_CAP_ARM_WRITABLE_IMP_ID_REGS (239) before creating vCPUs",
            ),
            Arm64Rule::ImplementationIdMask { mask } => {
                write!(f, "only bits {mask:#x} of the register are writable")
            }
            Arm64Rule::ClidrReservedBits { bits } => {
                write!(f, "CLIDR_EL1 reserved bits {bits:#x} must be 0")
            }
            Arm64Rule::ClidrClaimsCoherence => f.write_str(
                "CLIDR_EL1 claims no cache maintenance to the point of unification (LoC = 0, or \
                 LoUIS = LoUU = 0) while CTR_EL0.IDC = 0",
            ),
            Arm64Rule::PsciVersionUnknown => f.write_str("KVM knows no such PSCI version"),
            Arm64Rule::PsciVersionAboveHost => {
                f.write_str("the version is newer than the newest this kernel offers")
            }
            Arm64Rule::PsciVersionNeedsPsci02 => {
                f.write_str("PSCI 0.2 and later need the VCPU_INIT feature psci-0.2")
            }
            Arm64Rule::PsciVersion01WithPsci02 => {
                f.write_str("PSCI 0.1 is only for vCPUs without the VCPU_INIT feature psci-0.2")
            }
            Arm64Rule::WorkaroundStrayBits { allowed } => {
                write!(f, "a workaround value has only the bits {allowed:#x}")
            }
            Arm64Rule::WorkaroundAboveHost => {
                f.write_str("a workaround level may not exceed the host's level")
            }
            Arm64Rule::Workaround2EnabledWithoutAvail => {
                f.write_str("WORKAROUND_2's ENABLED bit (0x10) needs level AVAIL (2)")
            }
            Arm64Rule::Workaround2ReservedLevel => {
                f.write_str("WORKAROUND_2 levels above NOT_REQUIRED (3) are reserved")
            }
            Arm64Rule::BitmapBitsBeyondHost { allowed } => write!(
                f,
                "a hypercall bitmap may only clear services; the host offers bits {allowed:#x}"
            ),
            Arm64Rule::NotArm64Id => f.write_str("the id is not an arm64 register id"),
            Arm64Rule::NotListed => f.write_str("KVM_GET_REG_LIST does not list the register"),
            Arm64Rule::ChangedAfterRun {
                kernel_enforces: true,
            } => f.write_str(
                "the register is frozen once a vCPU of the VM has run; only the identical value \
                 is accepted",
            ),
            Arm64Rule::ChangedAfterRun {
                kernel_enforces: false,
            } => f.write_str(
                "vmfleet freezes the register once a vCPU of the VM has run (this kernel would \
                 accept the change); only the identical value is accepted",
            ),
        }
    }
}

/// The field a refusal is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedField {
    /// The field name (`AES`).
    pub name: String,
    /// Its lowest bit.
    pub shift: u8,
    /// Its width in bits.
    pub width: u8,
}

impl RefusedField {
    fn bits(&self) -> String {
        let low = u32::from(self.shift);
        let high = low + u32::from(self.width).max(1) - 1;
        if high == low {
            low.to_string()
        } else {
            format!("{high}:{low}")
        }
    }
}

/// A write vmfleet refuses before the kernel sees it.
///
/// Displays as `ID_AA64ISAR0_EL1.AES (bits 7:4): requested 0x3, host limit 0x2: a lower-safe
/// field may be lowered, not raised above the host limit (EINVAL)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm64Refusal {
    /// The register's id ([`Arm64Refusal::register_name`] names it).
    pub reg_id: u64,
    /// The field, when the rule is about one field.
    pub field: Option<RefusedField>,
    /// The value asked for: the field's raw value when there is a field, else the register's.
    pub requested: u64,
    /// The value it was judged against, in the same unit as `requested` (the host limit, the host
    /// level, or what the VM holds after its first run; the rule says which).
    pub limit: u64,
    /// The rule.
    pub rule: Arm64Rule,
    /// The errno the kernel gives for the rule.
    pub errno: Errno,
    /// Whether the kernel might accept what vmfleet refuses (vmfleet's cautious reading).
    pub conservative: bool,
    /// What to do instead, when there is something useful to say.
    pub hint: Option<String>,
}

impl Arm64Refusal {
    /// A refusal of the whole register.
    pub fn register(reg_id: u64, requested: u64, limit: u64, rule: Arm64Rule) -> Arm64Refusal {
        Arm64Refusal {
            reg_id,
            field: None,
            requested,
            limit,
            errno: rule.errno(),
            conservative: rule.is_conservative(),
            rule,
            hint: None,
        }
    }

    /// A refusal of one field (`requested` and `limit` are the field's raw values).
    pub fn field(
        reg_id: u64,
        field: RefusedField,
        requested: u64,
        limit: u64,
        rule: Arm64Rule,
    ) -> Arm64Refusal {
        Arm64Refusal {
            field: Some(field),
            ..Arm64Refusal::register(reg_id, requested, limit, rule)
        }
    }

    /// The register's name: derived from the id (the catalog's or the uapi's name), so that a
    /// refusal carries one source of truth.
    pub fn register_name(&self) -> String {
        reg_id::describe(self.reg_id)
    }

    /// The same refusal with a hint.
    pub fn with_hint(self, hint: Option<String>) -> Arm64Refusal {
        Arm64Refusal { hint, ..self }
    }

    /// The same refusal, marked as vmfleet's cautious reading.
    pub fn conservatively(self) -> Arm64Refusal {
        Arm64Refusal {
            conservative: true,
            ..self
        }
    }
}

impl Arm64Refusal {
    /// The first line, for people: `ID_AA64ISAR0_EL1.AES 2 → 3 refused: RULE`, where 2 is what
    /// the write is judged against (the host limit, or what the VM holds after its first run) and
    /// 3 what was asked; a register-wide refusal names the fields that change. At most
    /// [`crate::hypervisor::headline::HEADLINE_MAX`] characters; [`Arm64Refusal`]'s display has every detail.
    pub fn headline(&self) -> String {
        let changes = match &self.field {
            Some(field) => vec![format!(
                "{}.{} {} → {}",
                self.register_name(),
                field.name,
                self.limit,
                self.requested
            )],
            None => register_changes(self.reg_id, self.limit, self.requested),
        };
        let rule = match self.rule {
            Arm64Rule::ChangedAfterRun { .. } => crate::hypervisor::headline::LOCK_RULE.to_string(),
            ref rule => format!("{rule} ({})", self.errno),
        };
        crate::hypervisor::headline::headline("", &changes, &rule)
    }
}

/// One difference between two values of a register: a named field, or (`field` `None`) the
/// whole value, for registers without a field table and bits outside every field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDifference {
    /// The field's name; `None` for the whole register value.
    pub field: Option<&'static str>,
    /// Its value in the old register value (the field's raw bits, or the whole value).
    pub old: u64,
    /// Its value in the new one.
    pub new: u64,
}

/// How `new` differs from `old` in register `id`: one entry per field vmfleet knows that
/// changed, in table order, then one for the whole value if bits outside those fields (or of a
/// register without a field table) changed.
pub fn field_differences(id: u64, old: u64, new: u64) -> Vec<FieldDifference> {
    let table = match reg_id::classify(id) {
        RegClass::SysReg(reg) => fields::table_for(reg),
        _ => None,
    };
    let mut differences = Vec::new();
    let mut covered = 0u64;
    for field in table.map_or(&[][..], |t| t.fields) {
        covered |= field.mask();
        let (old, new) = (field.raw(old), field.raw(new));
        if old != new {
            differences.push(FieldDifference {
                field: Some(field.name),
                old,
                new,
            });
        }
    }
    if (old ^ new) & !covered != 0 {
        differences.push(FieldDifference {
            field: None,
            old,
            new,
        });
    }
    differences
}

/// What writing `requested` to register `id` changes from `held`, field by field
/// (`ID_AA64PFR0_EL1.CSV3 1 → 0`), for the fields vmfleet knows; bits outside them, and registers
/// without a field table, as the whole value (`KVM_REG_ARM_STD_BMAP 0x1 → 0x0`).
pub fn register_changes(id: u64, held: u64, requested: u64) -> Vec<String> {
    let name = reg_id::describe(id);
    field_differences(id, held, requested)
        .into_iter()
        .map(|d| match d.field {
            Some(field) => format!("{name}.{field} {} → {}", d.old, d.new),
            None => format!("{name} {:#x} → {:#x}", d.old, d.new),
        })
        .collect()
}

// A refusal is an error to whoever asked for the write; it has no underlying cause.
impl std::error::Error for Arm64Refusal {}

impl fmt::Display for Arm64Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "{}.{} (bits {}): requested {:#x}",
                self.register_name(),
                field.name,
                field.bits(),
                self.requested
            )?,
            None => write!(
                f,
                "{}: requested {:#018x}",
                self.register_name(),
                self.requested
            )?,
        }
        match (self.rule.limit_label(), &self.field) {
            (Some(label), Some(_)) => write!(f, ", {label} {:#x}", self.limit)?,
            (Some(label), None) => write!(f, ", {label} {:#018x}", self.limit)?,
            (None, _) => {}
        }
        write!(f, ": {} ({})", self.rule, self.errno)?;
        if self.conservative {
            f.write_str(" [vmfleet's cautious reading: the kernel might accept it]")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISAR0: u64 = 0x6030_0000_0013_c030;

    #[test]
    fn a_field_refusal_names_register_field_values_rule_and_errno() {
        let aes = RefusedField {
            name: "AES".into(),
            shift: 4,
            width: 4,
        };
        let refusal = Arm64Refusal::field(ISAR0, aes, 3, 2, Arm64Rule::AboveLimit);
        assert_eq!(refusal.register_name(), "ID_AA64ISAR0_EL1");
        assert_eq!(refusal.errno, Errno::EINVAL);
        assert!(!refusal.conservative);
        assert_eq!(
            refusal.to_string(),
            "ID_AA64ISAR0_EL1.AES (bits 7:4): requested 0x3, host limit 0x2: a lower-safe field \
             may be lowered, not raised above the host limit (EINVAL)"
        );
    }

    #[test]
    fn register_refusals_hints_and_cautious_readings_render_too() {
        let refusal = Arm64Refusal::register(
            ISAR0,
            0,
            1,
            Arm64Rule::ChangedAfterRun {
                kernel_enforces: true,
            },
        )
        .with_hint(Some("write back what the VM holds".into()));
        assert_eq!(refusal.errno, Errno::EBUSY);
        assert_eq!(
            refusal.to_string(),
            "ID_AA64ISAR0_EL1: requested 0x0000000000000000, the VM holds 0x0000000000000001: the \
             register is frozen once a vCPU of the VM has run; only the identical value is \
             accepted (EBUSY); write back what the VM holds"
        );
        let missing = Arm64Refusal::register(0x6030_0000_0016_0003, 1, 0, Arm64Rule::NotListed);
        assert_eq!(
            missing.to_string(),
            "KVM_REG_ARM_VENDOR_HYP_BMAP_2: requested 0x0000000000000001: KVM_GET_REG_LIST does \
             not list the register (ENOENT)"
        );
        let cautious =
            Arm64Refusal::register(ISAR0, 1, 0, Arm64Rule::UnmodelledBits { changed: 1 });
        assert!(cautious.conservative);
        assert!(
            cautious
                .to_string()
                .ends_with("(EINVAL) [vmfleet's cautious reading: the kernel might accept it]")
        );
        let json = serde_json::to_string(&missing).unwrap();
        assert_eq!(
            serde_json::from_str::<Arm64Refusal>(&json).unwrap(),
            missing
        );
    }
}
