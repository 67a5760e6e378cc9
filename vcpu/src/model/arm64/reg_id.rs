//! The 64-bit register id of `KVM_{GET,SET}_ONE_REG` and `KVM_GET_REG_LIST` on arm64
//! (`include/uapi/linux/kvm.h`, `arch/arm64/include/uapi/asm/kvm.h`), and which family of
//! registers an id belongs to.
//!
//! An id is `arch | size | coprocessor | index`. KVM refuses (`EINVAL`) any id whose upper 32 bits
//! without the size field are not `KVM_REG_ARM64 >> 32`, then dispatches on the coprocessor
//! field; [`classify`] follows the same steps so that vmfleet files every id where the kernel
//! would look for it. The encodings themselves are KVM's ABI and live in
//! [`crate::hypervisor::abi`], and are imported from there by the rules that read them.

use super::sysreg::SysReg;
use super::{catalog, firmware};
use serde::{Deserialize, Serialize};

use crate::hypervisor::abi::{
    COPROC_CORE, COPROC_DEMUX, COPROC_FW, COPROC_FW_FEAT_BMAP, COPROC_SVE, COPROC_SYSREG,
    KVM_REG_ARM_COPROC_MASK, KVM_REG_ARM_COPROC_SHIFT, KVM_REG_ARM64, KVM_REG_SIZE_MASK,
    KVM_REG_SIZE_SHIFT, KVM_REG_SIZE_U64,
};

/// The family of a register id, decided the way KVM dispatches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegClass {
    /// Not an arm64 id: KVM answers `EINVAL` before looking further.
    NotArm64,
    /// A core register (general-purpose, SP, PC, PSTATE, FP/SIMD).
    Core,
    /// A demultiplexed register (CCSIDR of one cache level).
    Demux,
    /// A system register with a well-formed encoding.
    SysReg(SysReg),
    /// A firmware pseudo-register `KVM_REG_ARM_FW_REG(index)`.
    Firmware {
        /// The `r` of `KVM_REG_ARM_FW_REG(r)`.
        index: u16,
    },
    /// A hypercall bitmap `KVM_REG_ARM_FW_FEAT_BMAP_REG(index)`.
    FirmwareBitmap {
        /// The `r` of `KVM_REG_ARM_FW_FEAT_BMAP_REG(r)`.
        index: u16,
    },
    /// An SVE register (Z, P, FFR, VLS).
    Sve,
    /// An arm64 id of another shape: a coprocessor vmfleet has no name for, or a sysreg, firmware
    /// or bitmap coprocessor with the wrong size or stray bits (KVM answers `ENOENT` for those).
    OtherArm64 {
        /// The coprocessor field.
        coproc: u16,
    },
}

/// The coprocessor field of `id`.
pub fn coproc(id: u64) -> u16 {
    // The mask keeps 12 bits, so the shifted value always fits.
    ((id & KVM_REG_ARM_COPROC_MASK) >> KVM_REG_ARM_COPROC_SHIFT) as u16
}

/// The register size `id` announces, in bytes.
pub fn size_bytes(id: u64) -> u64 {
    1u64 << ((id & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT)
}

/// Whether KVM's first check (`kvm_arm_{get,set}_reg`) takes `id` as arm64: the upper 32 bits
/// without the size field must be exactly `KVM_REG_ARM64 >> 32`.
pub fn is_arm64(id: u64) -> bool {
    (id & !KVM_REG_SIZE_MASK) >> 32 == KVM_REG_ARM64 >> 32
}

/// The id of an 8-byte register of coprocessor `coproc` with index `index`.
pub const fn u64_id(coproc: u16, index: u16) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | ((coproc as u64) << KVM_REG_ARM_COPROC_SHIFT) | index as u64
}

/// The family of `id`.
pub fn classify(id: u64) -> RegClass {
    if !is_arm64(id) {
        return RegClass::NotArm64;
    }
    let coproc = coproc(id);
    // Firmware and bitmap registers are matched on the full id (size included), as
    // `kvm_arm_{get,set}_fw_reg` does; anything else in those coprocessors is not found.
    let index_of = |family: u16| (id & !0xffff == u64_id(family, 0)).then_some(id as u16);
    match coproc {
        COPROC_CORE => RegClass::Core,
        COPROC_DEMUX => RegClass::Demux,
        COPROC_SYSREG => match SysReg::from_kvm_reg_id(id) {
            Ok(reg) => RegClass::SysReg(reg),
            Err(_) => RegClass::OtherArm64 { coproc },
        },
        COPROC_FW => match index_of(COPROC_FW) {
            Some(index) => RegClass::Firmware { index },
            None => RegClass::OtherArm64 { coproc },
        },
        COPROC_FW_FEAT_BMAP => match index_of(COPROC_FW_FEAT_BMAP) {
            Some(index) => RegClass::FirmwareBitmap { index },
            None => RegClass::OtherArm64 { coproc },
        },
        COPROC_SVE => RegClass::Sve,
        _ => RegClass::OtherArm64 { coproc },
    }
}

/// A name for `id` fit for a report: the catalog or firmware name where vmfleet has one, else
/// the uapi spelling (`KVM_REG_ARM_FW_REG(4)`, `S3_0_C0_C5_2`), else the id in hex.
pub fn describe(id: u64) -> String {
    match classify(id) {
        RegClass::SysReg(reg) => catalog::name_of(reg),
        RegClass::Firmware { .. } | RegClass::FirmwareBitmap { .. } => {
            firmware::describe_id(id).unwrap_or_else(|| format!("{id:#018x}"))
        }
        RegClass::Core => format!("core register {id:#018x}"),
        RegClass::Demux => format!("demux register {id:#018x}"),
        RegClass::Sve => format!("SVE register {id:#018x}"),
        RegClass::NotArm64 | RegClass::OtherArm64 { .. } => format!("{id:#018x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_the_reference_register_list_classify_by_family() {
        assert_eq!(classify(0x6030_0000_0010_0000), RegClass::Core);
        assert_eq!(classify(0x6040_0000_0010_0054), RegClass::Core);
        assert_eq!(classify(0x6020_0000_0011_000d), RegClass::Demux);
        assert_eq!(
            classify(0x6030_0000_0014_0003),
            RegClass::Firmware { index: 3 }
        );
        assert_eq!(
            classify(0x6030_0000_0016_0002),
            RegClass::FirmwareBitmap { index: 2 }
        );
        assert_eq!(
            classify(0x6030_0000_0013_c020),
            RegClass::SysReg(SysReg::new(3, 0, 0, 4, 0).unwrap())
        );
    }

    #[test]
    fn malformed_ids_are_not_taken_for_what_they_resemble() {
        // PSCI_VERSION with a U32 size: the kernel answered ENOENT in the reference log.
        assert_eq!(
            classify(0x6020_0000_0014_0000),
            RegClass::OtherArm64 { coproc: COPROC_FW }
        );
        // Bits between the size field and bit 32: not arm64 for KVM's first check.
        assert_eq!(classify(0x6030_0001_0013_c020), RegClass::NotArm64);
        // An x86 id.
        assert_eq!(classify(0x2030_0000_0000_0000), RegClass::NotArm64);
        assert_eq!(
            classify(0x6030_0000_0017_0000),
            RegClass::OtherArm64 { coproc: 0x17 }
        );
    }

    #[test]
    fn sizes_and_names() {
        assert_eq!(size_bytes(0x6030_0000_0013_c020), 8);
        assert_eq!(size_bytes(0x6020_0000_0011_0000), 4);
        assert_eq!(size_bytes(0x6040_0000_0010_0054), 16);
        assert_eq!(describe(0x6030_0000_0013_c020), "ID_AA64PFR0_EL1");
        assert_eq!(describe(0x6030_0000_0013_c02a), "S3_0_C0_C5_2");
        assert_eq!(describe(0x6030_0000_0014_0000), "KVM_REG_ARM_PSCI_VERSION");
        assert_eq!(describe(0x6030_0000_0014_0004), "KVM_REG_ARM_FW_REG(4)");
        assert_eq!(
            describe(0x6030_0000_0016_0007),
            "KVM_REG_ARM_FW_FEAT_BMAP_REG(7)"
        );
    }
}
