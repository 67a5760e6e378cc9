//! What arm64 KVM changed after 6.12 (cross-host §1), as data: each change with the facts a host
//! shows it by (bits of a writable mask, a register in `KVM_GET_REG_LIST`, a VM capability, the
//! PSCI version a new vCPU reads, a field's limit, a kernel-owned field, or, where none of those
//! shows it, the kernel's answer to a probe write on a scratch VM).
//!
//! No rule here or elsewhere branches on a kernel version: [`KernelChange::since`] is for people
//! reading a report, and every judgement follows the host's own facts, which the rest of the
//! model already reads (the masks decide what is writable, the field tables how a writable field
//! may move, the limits and the register list the rest). This table says which of those facts a
//! newer kernel changes, so that tests can hold the model to them (every bit a newer mask opens is
//! typed, `tests/arm64_newer_kernels.rs`) and reports can name why two hosts differ.

use super::catalog;
use super::firmware::{FirmwareRegister, PsciVersion};
use super::sysreg::SysReg;
use crate::hypervisor::abi;

/// A fact a host shows that tells whether a change is present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostSign {
    /// These bits of the register's `KVM_ARM_GET_REG_WRITABLE_MASKS` mask are set: the fields
    /// under them are writable, judged by their type in the field tables.
    MaskBits {
        /// The register.
        register: SysReg,
        /// The bits the newer kernel adds to the 6.12 mask.
        bits: u64,
    },
    /// `KVM_GET_REG_LIST` lists this id (judge the register only when it does).
    Listed(u64),
    /// `KVM_GET_REG_LIST` may leave this id out (6.12 always listed it).
    MayBeUnlisted(SysReg),
    /// `KVM_CHECK_EXTENSION` answers this VM capability.
    VmCapability(u32),
    /// The PSCI version a new psci-0.2 vCPU reads (the newest the kernel offers) is at least
    /// this; any version up to it is accepted.
    PsciLimitAtLeast(PsciVersion),
    /// The field (`REGISTER.FIELD`) reads as 0 right after the first init, so its limit is 0.
    FieldLimitZero(&'static str),
    /// The field's (`REGISTER.FIELD`) limit, the value right after the first init, differs from
    /// 6.12's on the same CPU; the model reads it from the host, as every limit.
    FieldLimit(&'static str),
    /// The kernel forces the field (`REGISTER.FIELD`) to what the VM's vGIC supports at the
    /// first run ([`super::fields::FieldNote::ForcedToVgic`]).
    KernelOwnedField(&'static str),
    /// Nothing the host reports shows it: the kernel's answer to a probe write on a scratch VM,
    /// recorded in [`super::host::KernelProbes`] (the field named here) and in the fingerprint's
    /// `arm64.kernel_probes`.
    Probe(&'static str),
}

/// One change a newer kernel made to what userspace may write or the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelChange {
    /// The mainline release that made it (for people; no rule reads it).
    pub since: &'static str,
    /// What changed, in a sentence.
    pub what: &'static str,
    /// The host facts that show it.
    pub shows_as: &'static [HostSign],
}

/// ID_AA64MMFR1_EL1.HCX (43:40) and .TWED (35:32).
const MMFR1_HCX_TWED: u64 = 0x0000_0F0F_0000_0000;
/// ID_AA64DFR0_EL1.HPMN0 (63:60).
const DFR0_HPMN0: u64 = 0xF000_0000_0000_0000;

/// Every change after 6.12 the model knows, oldest first.
pub static CHANGES: &[KernelChange] = &[
    KernelChange {
        since: "6.13",
        what: "MPAM is trapped and hidden: ID_AA64PFR0_EL1.MPAM (and MPAM_frac) read 0, and a \
               write of the host's own value is accepted and ignored",
        shows_as: &[
            HostSign::FieldLimitZero("ID_AA64PFR0_EL1.MPAM"),
            HostSign::FieldLimitZero("ID_AA64PFR1_EL1.MPAM_frac"),
        ],
    },
    KernelChange {
        since: "6.13",
        what: "PSCI 1.3 (SYSTEM_OFF2) is the newest version offered",
        shows_as: &[HostSign::PsciLimitAtLeast(PsciVersion::V1_3)],
    },
    KernelChange {
        since: "6.13",
        what: "TCR2_EL1, PIRE0_EL1 and PIR_EL1 are listed only when the vCPU has the feature",
        shows_as: &[
            HostSign::MayBeUnlisted(SysReg::at(3, 0, 2, 0, 3)),
            HostSign::MayBeUnlisted(SysReg::at(3, 0, 10, 2, 2)),
            HostSign::MayBeUnlisted(SysReg::at(3, 0, 10, 2, 3)),
        ],
    },
    KernelChange {
        since: "6.15",
        what: "MIDR_EL1, REVIDR_EL1 and AIDR_EL1 are writable (any value) when capability 239 is \
               enabled before any vCPU exists",
        shows_as: &[HostSign::VmCapability(
            abi::KVM_CAP_ARM_WRITABLE_IMP_ID_REGS,
        )],
    },
    KernelChange {
        since: "6.15",
        what: "KVM_REG_ARM_VENDOR_HYP_BMAP_2: discover-impl-version (bit 0) and discover-impl-cpus \
               (bit 1), reset 0, answered by the VMM",
        shows_as: &[HostSign::Listed(abi::KVM_REG_ARM_VENDOR_HYP_BMAP_2)],
    },
    KernelChange {
        since: "6.16",
        what: "ID_AA64PFR1_EL1.MTE_frac is exposed, and an accidentally advertised FEAT_MTE_ASYNC \
               disappears",
        shows_as: &[HostSign::FieldLimit("ID_AA64PFR1_EL1.MTE_frac")],
    },
    KernelChange {
        since: "6.16",
        what: "nested virtualisation can be requested (KVM_ARM_VCPU_HAS_EL2), off by default",
        shows_as: &[
            HostSign::VmCapability(abi::KVM_CAP_ARM_EL2),
            HostSign::VmCapability(abi::KVM_CAP_ARM_EL2_E2H0),
        ],
    },
    KernelChange {
        since: "6.16",
        what: "KVM_REG_ARM_VENDOR_HYP_BMAP_2 is listed unconditionally",
        shows_as: &[HostSign::Listed(abi::KVM_REG_ARM_VENDOR_HYP_BMAP_2)],
    },
    KernelChange {
        since: "6.17",
        what: "ID_AA64PFR2_EL1.GCIE; RAS, DoubleFault2 and SCTLR2 advertised",
        shows_as: &[
            HostSign::FieldLimit("ID_AA64PFR2_EL1.GCIE"),
            HostSign::FieldLimit("ID_AA64PFR0_EL1.RAS"),
            HostSign::FieldLimit("ID_AA64PFR1_EL1.DF2"),
            HostSign::FieldLimit("ID_AA64MMFR3_EL1.SCTLRX"),
        ],
    },
    KernelChange {
        since: "6.18",
        what: "ID_AA64MMFR1_EL1.HCX and .TWED are writable (lower-safe)",
        shows_as: &[HostSign::MaskBits {
            register: catalog::ID_AA64MMFR1_EL1,
            bits: MMFR1_HCX_TWED,
        }],
    },
    KernelChange {
        since: "after 6.12 (2025)",
        what: "set_id_aa64pfr0_el1 refuses ID_AA64PFR0_EL1.EL0 or .EL1 = 0 (EINVAL, no AArch64 \
               at a virtualisable EL); 6.12 accepts lowering them",
        shows_as: &[HostSign::Probe("el_floor")],
    },
    KernelChange {
        since: "6.3 (to 6.6)",
        what: "set_id_aa64dfr0_el1 lets ID_AA64DFR0_EL1.PMUVer change with no writable ID \
               registers, and keeps PMUVer = 0xF on a vCPU without a PMU (6.1 refuses it; 6.7 \
               stores it as 0)",
        shows_as: &[HostSign::Probe("pmu_imp_def")],
    },
    KernelChange {
        since: "FEAT_HPMN0 cpucap",
        what: "ID_AA64DFR0_EL1.HPMN0 is writable (lower-safe)",
        shows_as: &[HostSign::MaskBits {
            register: catalog::ID_AA64DFR0_EL1,
            bits: DFR0_HPMN0,
        }],
    },
    KernelChange {
        since: "7.0",
        what: "TME gone (its entry dropped); LS64 and LS64_V exposed",
        shows_as: &[
            HostSign::FieldLimitZero("ID_AA64ISAR0_EL1.TME"),
            HostSign::FieldLimit("ID_AA64ISAR1_EL1.LS64"),
        ],
    },
    KernelChange {
        since: "7.1",
        what: "KVM forces the GIC fields to what the vGIC supports, whatever userspace wrote: \
               kernel-owned, never a template mismatch",
        shows_as: &[
            HostSign::KernelOwnedField("ID_AA64PFR0_EL1.GIC"),
            HostSign::KernelOwnedField("ID_PFR1_EL1.GIC"),
            HostSign::KernelOwnedField("ID_AA64PFR2_EL1.GCIE"),
        ],
    },
];

/// The writable-mask bits newer kernels add to the 6.12 masks, per register (one entry per
/// [`HostSign::MaskBits`] of [`CHANGES`]).
pub fn newer_mask_bits() -> impl Iterator<Item = (SysReg, u64)> {
    CHANGES
        .iter()
        .flat_map(|c| c.shows_as.iter())
        .filter_map(|sign| match *sign {
            HostSign::MaskBits { register, bits } => Some((register, bits)),
            _ => None,
        })
}

/// The changes whose host facts `register_ids` (a `KVM_GET_REG_LIST`) and `psci_limit` (the
/// PSCI_VERSION a new psci-0.2 vCPU reads) show, among the two kinds of fact those carry. For a
/// report: "this host has PSCI 1.3 and VENDOR_HYP_BMAP_2".
pub fn shown_by(register_ids: &[u64], psci_limit: Option<u64>) -> Vec<&'static KernelChange> {
    CHANGES
        .iter()
        .filter(|c| {
            c.shows_as.iter().any(|sign| match *sign {
                HostSign::Listed(id) => register_ids.contains(&id),
                HostSign::PsciLimitAtLeast(v) => psci_limit.is_some_and(|l| l >= v.reg_value()),
                _ => false,
            })
        })
        .collect()
}

/// The firmware registers a newer kernel added, judged only when the host lists them.
pub const NEWER_FIRMWARE_REGISTERS: [FirmwareRegister; 1] = [FirmwareRegister::VendorHypBitmap2];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arm64::fields::{self, FieldNote};

    #[test]
    fn every_named_field_exists_and_kernel_owned_ones_carry_the_note() {
        for change in CHANGES {
            for sign in change.shows_as {
                match *sign {
                    HostSign::FieldLimitZero(name) | HostSign::FieldLimit(name) => {
                        assert!(fields::by_name(name).is_some(), "{name}");
                    }
                    HostSign::KernelOwnedField(name) => {
                        let field = fields::by_name(name).unwrap().field();
                        assert!(field.has(FieldNote::ForcedToVgic), "{name}");
                        let reg = fields::by_name(name).unwrap().register();
                        assert_eq!(
                            fields::first_run_mutable_mask(reg) & field.mask(),
                            field.mask()
                        );
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn psci_1_3_and_vendor_hyp_bmap_2_are_shown_by_the_host_facts_only() {
        let bmap2 = abi::KVM_REG_ARM_VENDOR_HYP_BMAP_2;
        assert_eq!(bmap2, 0x6030_0000_0016_0003);
        assert!(shown_by(&[], Some(PsciVersion::V1_1.reg_value())).is_empty());
        let shown = shown_by(&[bmap2], Some(PsciVersion::V1_3.reg_value()));
        assert_eq!(shown.len(), 3);
        assert_eq!(
            NEWER_FIRMWARE_REGISTERS[0].id(),
            bmap2,
            "VENDOR_HYP_BMAP_2 in the firmware catalog"
        );
    }
}
