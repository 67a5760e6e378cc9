//! KVM's rules for writing the firmware pseudo-registers and hypercall bitmaps (semantics
//! reference §3.2–§3.4, `kvm_arm_set_fw_reg`).
//!
//! Each function returns what a read-back then shows: the workaround registers store nothing
//! (a read keeps showing the host's level), the others store the value written.

use super::refusal::{Arm64Refusal, Arm64Rule};
use crate::model::arm64::features::{VcpuFeature, VcpuFeatureSet};
use crate::model::arm64::firmware::{self, FirmwareRegister, PsciVersion, workaround};

fn refusal(
    register: FirmwareRegister,
    requested: u64,
    limit: u64,
    rule: Arm64Rule,
) -> Arm64Refusal {
    Arm64Refusal::register(register.id(), requested, limit, rule)
}

/// `KVM_REG_ARM_PSCI_VERSION`. `host_value` is what a new vCPU reads: the kernel's newest
/// version (`KVM_ARM_PSCI_LATEST`) with psci-0.2, 0.1 without. A kernel accepts every known
/// version up to its newest (6.12: 0.2, 1.0 and 1.1, not 1.2).
pub fn check_psci_version(
    requested: u64,
    host_value: u64,
    features: VcpuFeatureSet,
) -> Result<u64, Arm64Refusal> {
    let register = FirmwareRegister::PsciVersion;
    let Some(version) = PsciVersion::from_reg_value(requested) else {
        return Err(refusal(
            register,
            requested,
            host_value,
            Arm64Rule::PsciVersionUnknown,
        ));
    };
    let psci_0_2 = features.contains(VcpuFeature::Psci0_2);
    if !psci_0_2 && version != PsciVersion::V0_1 {
        return Err(refusal(
            register,
            requested,
            host_value,
            Arm64Rule::PsciVersionNeedsPsci02,
        ));
    }
    if psci_0_2 && version == PsciVersion::V0_1 {
        return Err(refusal(
            register,
            requested,
            host_value,
            Arm64Rule::PsciVersion01WithPsci02,
        ));
    }
    if psci_0_2 && requested > host_value {
        let offered = PsciVersion::from_reg_value(host_value)
            .map_or_else(|| format!("{host_value:#x}"), |v| v.to_string());
        return Err(refusal(
            register,
            requested,
            host_value,
            Arm64Rule::PsciVersionAboveHost,
        )
        .with_hint(Some(format!("this kernel offers PSCI up to {offered}"))));
    }
    Ok(requested)
}

/// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1` and `_3`: a level up to the host's. Nothing is stored.
pub fn check_workaround_1_or_3(
    register: FirmwareRegister,
    requested: u64,
    host_level: u64,
) -> Result<u64, Arm64Refusal> {
    if requested & !workaround::LEVEL_MASK != 0 {
        return Err(refusal(
            register,
            requested,
            host_level,
            Arm64Rule::WorkaroundStrayBits {
                allowed: workaround::LEVEL_MASK,
            },
        ));
    }
    if requested > host_level {
        return Err(refusal(
            register,
            requested,
            host_level,
            Arm64Rule::WorkaroundAboveHost,
        ));
    }
    Ok(host_level)
}

/// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2`: levels normalise (0/1 → 0, 2/3 → 3) before the
/// comparison with the host's, ENABLED needs the AVAIL level. Nothing is stored.
///
/// Whether "the level" of the ENABLED rule is the requested level or the host's is not spelled
/// out in the reference; the requested level is read here (both readings agree on every write of
/// the reference log).
pub fn check_workaround_2(requested: u64, host_level: u64) -> Result<u64, Arm64Refusal> {
    let register = FirmwareRegister::SmcccArchWorkaround2;
    let allowed = workaround::LEVEL_MASK | workaround::WA2_ENABLED;
    if requested & !allowed != 0 {
        return Err(refusal(
            register,
            requested,
            host_level,
            Arm64Rule::WorkaroundStrayBits { allowed },
        ));
    }
    let level = requested & workaround::LEVEL_MASK;
    if requested & workaround::WA2_ENABLED != 0 && level != workaround::WA2_AVAIL {
        return Err(refusal(
            register,
            requested,
            host_level,
            Arm64Rule::Workaround2EnabledWithoutAvail,
        ));
    }
    let normalised = match level {
        workaround::WA2_NOT_AVAIL | workaround::WA2_UNKNOWN => workaround::WA2_NOT_AVAIL,
        workaround::WA2_AVAIL | workaround::WA2_NOT_REQUIRED => workaround::WA2_NOT_REQUIRED,
        _ => {
            return Err(refusal(
                register,
                requested,
                host_level,
                Arm64Rule::Workaround2ReservedLevel,
            ));
        }
    };
    if normalised > host_level {
        return Err(refusal(
            register,
            requested,
            host_level,
            Arm64Rule::WorkaroundAboveHost,
        ));
    }
    Ok(host_level)
}

/// The bits a bitmap accepts: what the VM offered when it was created, plus the documented bits a
/// new VM leaves off (VENDOR_HYP_BMAP_2). `register` is `None` for a bitmap this catalog does not
/// know, which gets only what it offered.
pub fn bitmap_allowed_bits(register: Option<FirmwareRegister>, host_value: u64) -> u64 {
    host_value | register.map_or(0, FirmwareRegister::off_by_default_bits)
}

/// A hypercall bitmap: services may be switched off, never on beyond what the host offers.
/// `id` is the register's id (known or not), `host_value` what a new VM holds.
pub fn check_bitmap(id: u64, requested: u64, host_value: u64) -> Result<u64, Arm64Refusal> {
    let known = FirmwareRegister::from_id(id);
    let allowed = bitmap_allowed_bits(known, host_value);
    let beyond = requested & !allowed;
    if beyond == 0 {
        return Ok(requested);
    }
    let hint = known.map(|register| {
        format!(
            "the host does not offer {}",
            firmware::describe_services(register, beyond)
        )
    });
    Err(Arm64Refusal::register(
        id,
        requested,
        host_value,
        Arm64Rule::BitmapBitsBeyondHost { allowed },
    )
    .with_hint(hint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::errno::Errno;

    fn psci() -> VcpuFeatureSet {
        VcpuFeatureSet::of(&[VcpuFeature::Psci0_2])
    }

    #[test]
    fn psci_versions_up_to_the_hosts_newest() {
        let latest = PsciVersion::V1_1.reg_value();
        assert_eq!(check_psci_version(0x2, latest, psci()), Ok(0x2));
        assert_eq!(check_psci_version(0x10000, latest, psci()), Ok(0x10000));
        assert_eq!(check_psci_version(0x10001, latest, psci()), Ok(0x10001));
        let above = check_psci_version(0x10002, latest, psci()).unwrap_err();
        assert_eq!(above.rule, Arm64Rule::PsciVersionAboveHost);
        assert_eq!(above.errno, Errno::EINVAL);
        assert!(
            above.to_string().contains("offers PSCI up to 1.1"),
            "{above}"
        );
        assert_eq!(
            check_psci_version(0, latest, psci()).unwrap_err().rule,
            Arm64Rule::PsciVersionUnknown
        );
        assert_eq!(
            check_psci_version(0x1, latest, psci()).unwrap_err().rule,
            Arm64Rule::PsciVersion01WithPsci02
        );
        // Without the feature only 0.1.
        let none = VcpuFeatureSet::EMPTY;
        assert_eq!(check_psci_version(0x1, 0x1, none), Ok(0x1));
        assert_eq!(
            check_psci_version(0x2, 0x1, none).unwrap_err().rule,
            Arm64Rule::PsciVersionNeedsPsci02
        );
    }

    #[test]
    fn workaround_levels_follow_the_host() {
        let wa1 = FirmwareRegister::SmcccArchWorkaround1;
        for level in 0..=2 {
            assert_eq!(
                check_workaround_1_or_3(wa1, level, 2),
                Ok(2),
                "nothing is stored"
            );
        }
        assert_eq!(
            check_workaround_1_or_3(wa1, 3, 2).unwrap_err().rule,
            Arm64Rule::WorkaroundAboveHost
        );
        assert_eq!(
            check_workaround_1_or_3(wa1, 1, 0).unwrap_err().rule,
            Arm64Rule::WorkaroundAboveHost
        );
        assert!(matches!(
            check_workaround_1_or_3(wa1, 0x10, 2).unwrap_err().rule,
            Arm64Rule::WorkaroundStrayBits { allowed: 0xF }
        ));
    }

    #[test]
    fn workaround_2_normalises_levels() {
        // Host NOT_AVAIL (0), as in the reference log.
        assert_eq!(check_workaround_2(0, 0), Ok(0));
        assert_eq!(
            check_workaround_2(1, 0),
            Ok(0),
            "UNKNOWN normalises to NOT_AVAIL"
        );
        assert_eq!(
            check_workaround_2(3, 0).unwrap_err().rule,
            Arm64Rule::WorkaroundAboveHost
        );
        assert_eq!(
            check_workaround_2(2, 0).unwrap_err().rule,
            Arm64Rule::WorkaroundAboveHost
        );
        assert_eq!(
            check_workaround_2(0x10, 0).unwrap_err().rule,
            Arm64Rule::Workaround2EnabledWithoutAvail
        );
        // Host NOT_REQUIRED (3).
        assert_eq!(check_workaround_2(0x12, 3), Ok(3));
        assert_eq!(check_workaround_2(2, 3), Ok(3));
        assert_eq!(
            check_workaround_2(4, 3).unwrap_err().rule,
            Arm64Rule::Workaround2ReservedLevel
        );
        assert!(check_workaround_2(0x20, 3).is_err());
    }

    #[test]
    fn bitmaps_may_only_lose_services() {
        let std = FirmwareRegister::StdBitmap.id();
        assert_eq!(check_bitmap(std, 0, 1), Ok(0));
        assert_eq!(check_bitmap(std, 1, 1), Ok(1));
        let err = check_bitmap(std, 0x2, 1).unwrap_err();
        assert_eq!(err.rule, Arm64Rule::BitmapBitsBeyondHost { allowed: 1 });
        assert_eq!(err.errno, Errno::EINVAL);
        // A service the host switched off is beyond it too.
        let err = check_bitmap(std, 1, 0).unwrap_err();
        assert!(err.to_string().contains("does not offer trng"), "{err}");
        // VENDOR_HYP_BMAP_2 starts at 0 but accepts its two documented bits.
        let bmap2 = FirmwareRegister::VendorHypBitmap2.id();
        assert_eq!(check_bitmap(bmap2, 0x3, 0), Ok(0x3));
        assert!(check_bitmap(bmap2, 0x4, 0).is_err());
        // An unknown bitmap gets only what it offered.
        assert_eq!(check_bitmap(0x6030_0000_0016_0004, 0x1, 0x5), Ok(0x1));
        assert!(check_bitmap(0x6030_0000_0016_0004, 0x2, 0x5).is_err());
    }
}
