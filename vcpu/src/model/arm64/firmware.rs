//! KVM's firmware pseudo-registers (semantics reference §3): the PSCI version offered to the
//! guest, the SMCCC Spectre workaround levels, and the hypercall-service bitmaps with the services
//! they gate.
//!
//! The ids are `KVM_REG_ARM_FW_REG(r)` (coprocessor 0x14) and `KVM_REG_ARM_FW_FEAT_BMAP_REG(r)`
//! (coprocessor 0x16). Kernels add registers over time (VENDOR_HYP_BMAP_2 came in 6.15), and
//! `KVM_GET_REG_LIST` is the only way to discover them, so [`classify`] tells a register this
//! catalog knows from one of those families it does not: the spec's unknown-register policy
//! decides what happens to the latter.

use super::reg_id::{self, RegClass};
use super::{smccc, suggest};
use crate::hypervisor::abi;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// `KVM_REG_ARM_FW_REG(index)`.
pub const fn fw_reg_id(index: u16) -> u64 {
    abi::kvm_reg_arm_fw_reg(index)
}

/// `KVM_REG_ARM_FW_FEAT_BMAP_REG(index)`.
pub const fn bitmap_reg_id(index: u16) -> u64 {
    abi::kvm_reg_arm_fw_feat_bmap_reg(index)
}

/// A firmware pseudo-register or hypercall bitmap this catalog knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FirmwareRegister {
    /// `KVM_REG_ARM_PSCI_VERSION`: the PSCI version the guest sees.
    PsciVersion,
    /// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1`: Spectre-v2 mitigation level.
    SmcccArchWorkaround1,
    /// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2`: Spectre-v4 (SSBD) mitigation level.
    SmcccArchWorkaround2,
    /// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3`: Spectre-BHB mitigation level.
    SmcccArchWorkaround3,
    /// `KVM_REG_ARM_STD_BMAP`: standard secure services (TRNG).
    StdBitmap,
    /// `KVM_REG_ARM_STD_HYP_BMAP`: standard hypervisor services (PV time).
    StdHypBitmap,
    /// `KVM_REG_ARM_VENDOR_HYP_BMAP`: KVM's own services (feature discovery, PTP).
    VendorHypBitmap,
    /// `KVM_REG_ARM_VENDOR_HYP_BMAP_2`: implementation discovery (6.15 and later).
    VendorHypBitmap2,
}

impl FirmwareRegister {
    /// Every register, in the order `KVM_GET_REG_LIST` lists them.
    pub const ALL: [FirmwareRegister; 8] = [
        FirmwareRegister::PsciVersion,
        FirmwareRegister::SmcccArchWorkaround1,
        FirmwareRegister::SmcccArchWorkaround2,
        FirmwareRegister::SmcccArchWorkaround3,
        FirmwareRegister::StdBitmap,
        FirmwareRegister::StdHypBitmap,
        FirmwareRegister::VendorHypBitmap,
        FirmwareRegister::VendorHypBitmap2,
    ];

    /// The `KVM_{GET,SET}_ONE_REG` id.
    pub const fn id(self) -> u64 {
        match self {
            FirmwareRegister::PsciVersion => abi::KVM_REG_ARM_PSCI_VERSION,
            FirmwareRegister::SmcccArchWorkaround1 => abi::KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1,
            FirmwareRegister::SmcccArchWorkaround2 => abi::KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2,
            FirmwareRegister::SmcccArchWorkaround3 => abi::KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3,
            FirmwareRegister::StdBitmap => abi::KVM_REG_ARM_STD_BMAP,
            FirmwareRegister::StdHypBitmap => abi::KVM_REG_ARM_STD_HYP_BMAP,
            FirmwareRegister::VendorHypBitmap => abi::KVM_REG_ARM_VENDOR_HYP_BMAP,
            FirmwareRegister::VendorHypBitmap2 => abi::KVM_REG_ARM_VENDOR_HYP_BMAP_2,
        }
    }

    /// The register with id `id`.
    pub fn from_id(id: u64) -> Option<FirmwareRegister> {
        FirmwareRegister::ALL.into_iter().find(|r| r.id() == id)
    }

    /// The uapi name.
    pub const fn name(self) -> &'static str {
        match self {
            FirmwareRegister::PsciVersion => "KVM_REG_ARM_PSCI_VERSION",
            FirmwareRegister::SmcccArchWorkaround1 => "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1",
            FirmwareRegister::SmcccArchWorkaround2 => "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2",
            FirmwareRegister::SmcccArchWorkaround3 => "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3",
            FirmwareRegister::StdBitmap => "KVM_REG_ARM_STD_BMAP",
            FirmwareRegister::StdHypBitmap => "KVM_REG_ARM_STD_HYP_BMAP",
            FirmwareRegister::VendorHypBitmap => "KVM_REG_ARM_VENDOR_HYP_BMAP",
            FirmwareRegister::VendorHypBitmap2 => "KVM_REG_ARM_VENDOR_HYP_BMAP_2",
        }
    }

    /// Whether this is a hypercall bitmap (frozen once the VM has run) rather than a firmware
    /// register (writable at any time).
    pub const fn is_bitmap(self) -> bool {
        matches!(
            self,
            FirmwareRegister::StdBitmap
                | FirmwareRegister::StdHypBitmap
                | FirmwareRegister::VendorHypBitmap
                | FirmwareRegister::VendorHypBitmap2
        )
    }

    /// A bitmap's upper limit in the kernel (`KVM_ARM_SMCCC_*_FEATURES`): a write with any other
    /// bit gets `EINVAL`. `None` for the firmware registers.
    pub const fn bitmap_limit(self) -> Option<u64> {
        match self {
            FirmwareRegister::StdBitmap => Some(abi::KVM_ARM_SMCCC_STD_FEATURES),
            FirmwareRegister::StdHypBitmap => Some(abi::KVM_ARM_SMCCC_STD_HYP_FEATURES),
            FirmwareRegister::VendorHypBitmap => Some(abi::KVM_ARM_SMCCC_VENDOR_HYP_FEATURES),
            FirmwareRegister::VendorHypBitmap2 => Some(abi::KVM_ARM_SMCCC_VENDOR_HYP_FEATURES_2),
            _ => None,
        }
    }

    /// Bits the kernel accepts in a bitmap although a new VM does not set them. Only
    /// VENDOR_HYP_BMAP_2 has such bits: it starts at 0 with a limit of 0x3 (implementation
    /// discovery is opt-in). The other bitmaps start at their limit, so the value read from a new
    /// VM is the limit.
    pub const fn off_by_default_bits(self) -> u64 {
        match self {
            FirmwareRegister::VendorHypBitmap2 => abi::KVM_ARM_SMCCC_VENDOR_HYP_FEATURES_2,
            _ => 0,
        }
    }

    /// The services a bitmap gates, in bit order.
    pub fn services(self) -> impl Iterator<Item = HypercallService> {
        HypercallService::ALL
            .into_iter()
            .filter(move |s| s.register() == self)
    }

    /// The short name a spec may use instead of the uapi one: the uapi name without
    /// `KVM_REG_ARM_` (`SMCCC_ARCH_WORKAROUND_1`, `PSCI_VERSION`, `STD_BMAP`).
    pub fn short_name(self) -> &'static str {
        let name = self.name();
        name.strip_prefix("KVM_REG_ARM_").unwrap_or(name)
    }

    /// The register called `name`: its uapi name or its short name, in any case (`-` read as
    /// `_`).
    pub fn from_name(name: &str) -> Option<FirmwareRegister> {
        let wanted = suggest::normalise(name);
        FirmwareRegister::ALL
            .into_iter()
            .find(|r| r.name() == wanted || r.short_name() == wanted)
    }
}

impl fmt::Display for FirmwareRegister {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which of the two firmware families an id belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FirmwareFamily {
    /// `KVM_REG_ARM_FW` (0x14): versions and workaround levels.
    Firmware,
    /// `KVM_REG_ARM_FW_FEAT_BMAP` (0x16): hypercall-service bitmaps.
    Bitmap,
}

impl fmt::Display for FirmwareFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FirmwareFamily::Firmware => "firmware register",
            FirmwareFamily::Bitmap => "hypercall bitmap",
        })
    }
}

/// A firmware or bitmap id, known to this catalog or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FirmwareId {
    /// A register this catalog knows.
    Known(FirmwareRegister),
    /// A well-formed id of one of the two families that this catalog does not know: a register of
    /// a newer kernel.
    Unknown {
        /// The family.
        family: FirmwareFamily,
        /// The `r` of `KVM_REG_ARM_FW_REG(r)` / `KVM_REG_ARM_FW_FEAT_BMAP_REG(r)`.
        index: u16,
    },
}

/// What `id` is, if it is a well-formed firmware or bitmap id.
pub fn classify(id: u64) -> Option<FirmwareId> {
    let family = match reg_id::classify(id) {
        RegClass::Firmware { index } => (FirmwareFamily::Firmware, index),
        RegClass::FirmwareBitmap { index } => (FirmwareFamily::Bitmap, index),
        _ => return None,
    };
    Some(match FirmwareRegister::from_id(id) {
        Some(known) => FirmwareId::Known(known),
        None => FirmwareId::Unknown {
            family: family.0,
            index: family.1,
        },
    })
}

/// The firmware and bitmap ids of a `KVM_GET_REG_LIST` answer that this catalog does not know,
/// in list order, with their family.
pub fn unknown_registers(register_list: &[u64]) -> Vec<(u64, FirmwareFamily)> {
    register_list
        .iter()
        .filter_map(|&id| match classify(id) {
            Some(FirmwareId::Unknown { family, .. }) => Some((id, family)),
            _ => None,
        })
        .collect()
}

/// A firmware or bitmap id's name: the uapi name if known, else the uapi macro spelling.
pub fn describe_id(id: u64) -> Option<String> {
    Some(match classify(id)? {
        FirmwareId::Known(register) => register.name().to_string(),
        FirmwareId::Unknown {
            family: FirmwareFamily::Firmware,
            index,
        } => format!("KVM_REG_ARM_FW_REG({index})"),
        FirmwareId::Unknown {
            family: FirmwareFamily::Bitmap,
            index,
        } => format!("KVM_REG_ARM_FW_FEAT_BMAP_REG({index})"),
    })
}

/// Levels of the SMCCC workaround registers (`KVM_REG_FEATURE_LEVEL_*`).
pub mod workaround {
    use crate::hypervisor::abi;

    /// The bits that carry the level (`KVM_REG_FEATURE_LEVEL_MASK`).
    pub const LEVEL_MASK: u64 = abi::KVM_REG_FEATURE_LEVEL_MASK;
    /// WORKAROUND_1/3: the host is vulnerable and has no mitigation for the guest.
    pub const NOT_AVAIL: u64 = abi::KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1_NOT_AVAIL;
    /// WORKAROUND_1/3: the mitigation is available to the guest.
    pub const AVAIL: u64 = abi::KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1_AVAIL;
    /// WORKAROUND_1/3: the host is not affected.
    pub const NOT_REQUIRED: u64 = abi::KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1_NOT_REQUIRED;
    /// WORKAROUND_2: not available.
    pub const WA2_NOT_AVAIL: u64 = abi::KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_NOT_AVAIL;
    /// WORKAROUND_2: unknown.
    pub const WA2_UNKNOWN: u64 = abi::KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_UNKNOWN;
    /// WORKAROUND_2: available.
    pub const WA2_AVAIL: u64 = abi::KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_AVAIL;
    /// WORKAROUND_2: not required.
    pub const WA2_NOT_REQUIRED: u64 = abi::KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_NOT_REQUIRED;
    /// WORKAROUND_2: the mitigation is enabled (only with [`WA2_AVAIL`]).
    pub const WA2_ENABLED: u64 = abi::KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_ENABLED;
}

/// A PSCI version as the guest sees it: `major.minor`, stored as `major << 16 | minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PsciVersion {
    /// The major version.
    pub major: u16,
    /// The minor version.
    pub minor: u16,
}

/// A PSCI version that is not one KVM can offer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error(
    "unknown PSCI version `{text}`; KVM offers {}",
    PsciVersion::known_list()
)]
pub struct PsciVersionError {
    /// The text given.
    pub text: String,
}

impl PsciVersion {
    /// KVM's legacy PSCI 0.1 (a vCPU without the psci-0.2 feature).
    pub const V0_1: PsciVersion = PsciVersion::new(0, 1);
    /// PSCI 0.2.
    pub const V0_2: PsciVersion = PsciVersion::new(0, 2);
    /// PSCI 1.0.
    pub const V1_0: PsciVersion = PsciVersion::new(1, 0);
    /// PSCI 1.1 (the newest on 6.12).
    pub const V1_1: PsciVersion = PsciVersion::new(1, 1);
    /// PSCI 1.2.
    pub const V1_2: PsciVersion = PsciVersion::new(1, 2);
    /// PSCI 1.3.
    pub const V1_3: PsciVersion = PsciVersion::new(1, 3);
    /// Every version some KVM accepts in `KVM_REG_ARM_PSCI_VERSION`; a given kernel accepts those up
    /// to its `KVM_ARM_PSCI_LATEST`.
    pub const KNOWN: [PsciVersion; 6] = [
        PsciVersion::V0_1,
        PsciVersion::V0_2,
        PsciVersion::V1_0,
        PsciVersion::V1_1,
        PsciVersion::V1_2,
        PsciVersion::V1_3,
    ];

    /// `major.minor`.
    pub const fn new(major: u16, minor: u16) -> PsciVersion {
        PsciVersion { major, minor }
    }

    /// The register value, `major << 16 | minor`.
    pub const fn reg_value(self) -> u64 {
        (self.major as u64) << 16 | self.minor as u64
    }

    /// The version a register value encodes, if it is one KVM knows.
    pub fn from_reg_value(value: u64) -> Option<PsciVersion> {
        PsciVersion::KNOWN
            .into_iter()
            .find(|v| v.reg_value() == value)
    }

    fn known_list() -> String {
        let names: Vec<String> = PsciVersion::KNOWN.iter().map(|v| v.to_string()).collect();
        names.join(", ")
    }
}

impl fmt::Display for PsciVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for PsciVersion {
    type Err = PsciVersionError;

    /// `"1.1"`; only versions in [`PsciVersion::KNOWN`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        PsciVersion::KNOWN
            .into_iter()
            .find(|v| v.to_string() == text.trim())
            .ok_or_else(|| PsciVersionError {
                text: text.to_string(),
            })
    }
}

impl Serialize for PsciVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PsciVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PsciVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a PSCI version string such as \"1.1\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<PsciVersion, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A hypercall service gated by one bit of a bitmap register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HypercallService {
    /// Arm True Random Number Generator firmware interface (DEN0098), `STD_BMAP` bit 0.
    Trng,
    /// Paravirtualized time / stolen time (DEN0057A), `STD_HYP_BMAP` bit 0.
    PvTime,
    /// KVM's feature discovery (`KVM_FEATURES`, `CALL_UID`), `VENDOR_HYP_BMAP` bit 0.
    KvmFeatures,
    /// KVM's precision time protocol (`KVM_PTP`), `VENDOR_HYP_BMAP` bit 1.
    Ptp,
    /// Implementation-version discovery, `VENDOR_HYP_BMAP_2` bit 0 (advertised only; the VMM
    /// serves the call through the SMCCC filter).
    DiscoverImplVersion,
    /// Implementation-CPUs discovery, `VENDOR_HYP_BMAP_2` bit 1 (advertised only).
    DiscoverImplCpus,
}

impl HypercallService {
    /// Every service, in register then bit order.
    pub const ALL: [HypercallService; 6] = [
        HypercallService::Trng,
        HypercallService::PvTime,
        HypercallService::KvmFeatures,
        HypercallService::Ptp,
        HypercallService::DiscoverImplVersion,
        HypercallService::DiscoverImplCpus,
    ];

    /// The name specs use.
    pub const fn name(self) -> &'static str {
        match self {
            HypercallService::Trng => "trng",
            HypercallService::PvTime => "pv-time",
            HypercallService::KvmFeatures => "kvm-features",
            HypercallService::Ptp => "ptp",
            HypercallService::DiscoverImplVersion => "discover-impl-version",
            HypercallService::DiscoverImplCpus => "discover-impl-cpus",
        }
    }

    /// Other accepted spellings: the uapi bit names without their prefix.
    const fn aliases(self) -> &'static [&'static str] {
        match self {
            HypercallService::Trng => &["trng-v1-0"],
            HypercallService::PvTime => &["stolen-time"],
            HypercallService::KvmFeatures => &["func-feat"],
            HypercallService::Ptp => &["kvm-ptp"],
            HypercallService::DiscoverImplVersion => &["discover-impl-ver"],
            HypercallService::DiscoverImplCpus => &[],
        }
    }

    /// The uapi name of its bit.
    pub const fn uapi_bit_name(self) -> &'static str {
        match self {
            HypercallService::Trng => "KVM_REG_ARM_STD_BIT_TRNG_V1_0",
            HypercallService::PvTime => "KVM_REG_ARM_STD_HYP_BIT_PV_TIME",
            HypercallService::KvmFeatures => "KVM_REG_ARM_VENDOR_HYP_BIT_FUNC_FEAT",
            HypercallService::Ptp => "KVM_REG_ARM_VENDOR_HYP_BIT_PTP",
            HypercallService::DiscoverImplVersion => "KVM_REG_ARM_VENDOR_HYP_BIT_DISCOVER_IMPL_VER",
            HypercallService::DiscoverImplCpus => "KVM_REG_ARM_VENDOR_HYP_BIT_DISCOVER_IMPL_CPUS",
        }
    }

    /// The bitmap register that gates it.
    pub const fn register(self) -> FirmwareRegister {
        match self {
            HypercallService::Trng => FirmwareRegister::StdBitmap,
            HypercallService::PvTime => FirmwareRegister::StdHypBitmap,
            HypercallService::KvmFeatures | HypercallService::Ptp => {
                FirmwareRegister::VendorHypBitmap
            }
            HypercallService::DiscoverImplVersion | HypercallService::DiscoverImplCpus => {
                FirmwareRegister::VendorHypBitmap2
            }
        }
    }

    /// Its bit number in the register.
    pub const fn bit(self) -> u32 {
        match self {
            HypercallService::Trng => abi::KVM_REG_ARM_STD_BIT_TRNG_V1_0,
            HypercallService::PvTime => abi::KVM_REG_ARM_STD_HYP_BIT_PV_TIME,
            HypercallService::KvmFeatures => abi::KVM_REG_ARM_VENDOR_HYP_BIT_FUNC_FEAT,
            HypercallService::Ptp => abi::KVM_REG_ARM_VENDOR_HYP_BIT_PTP,
            HypercallService::DiscoverImplVersion => {
                abi::KVM_REG_ARM_VENDOR_HYP_BIT_DISCOVER_IMPL_VER
            }
            HypercallService::DiscoverImplCpus => {
                abi::KVM_REG_ARM_VENDOR_HYP_BIT_DISCOVER_IMPL_CPUS
            }
        }
    }

    /// Its bit as a mask.
    pub const fn mask(self) -> u64 {
        1 << self.bit()
    }

    /// The SMCCC function ids the bit gates (`kvm_smccc_test_fw_bmap`), for guest-side checks;
    /// the ids are [`smccc`]'s. The implementation-discovery calls are not gated by KVM at all
    /// (only advertised), so they have none.
    pub const fn function_ids(self) -> &'static [u32] {
        match self {
            HypercallService::Trng => &[
                smccc::TRNG_VERSION,
                smccc::TRNG_FEATURES,
                smccc::TRNG_GET_UUID,
                smccc::TRNG_RND32,
                smccc::TRNG_RND64,
            ],
            HypercallService::PvTime => &[smccc::PV_TIME_FEATURES, smccc::PV_TIME_ST],
            HypercallService::KvmFeatures => {
                &[smccc::VENDOR_HYP_KVM_FEATURES, smccc::VENDOR_HYP_CALL_UID]
            }
            HypercallService::Ptp => &[smccc::VENDOR_HYP_KVM_PTP],
            HypercallService::DiscoverImplVersion | HypercallService::DiscoverImplCpus => &[],
        }
    }

    /// The service called `name` (any case, `_` read as `-`, aliases accepted).
    pub fn from_name(name: &str) -> Option<HypercallService> {
        let wanted = name.trim().to_ascii_lowercase().replace('_', "-");
        HypercallService::ALL
            .into_iter()
            .find(|s| s.name() == wanted || s.aliases().contains(&wanted.as_str()))
    }

    /// The service name closest to `name`.
    pub fn suggest(name: &str) -> Option<&'static str> {
        suggest::closest(name, HypercallService::ALL.iter().map(|s| s.name()))
    }
}

impl fmt::Display for HypercallService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for HypercallService {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for HypercallService {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        HypercallService::from_name(&name).ok_or_else(|| {
            let hint = suggest::did_you_mean(&HypercallService::suggest(&name).map(str::to_string));
            let known: Vec<&str> = HypercallService::ALL.iter().map(|s| s.name()).collect();
            serde::de::Error::custom(format!(
                "unknown hypercall service `{name}`{hint} (known: {})",
                known.join(", ")
            ))
        })
    }
}

/// The services of `register` whose bits are set in `value`, by name, then `unnamed bits 0x…`
/// for set bits no service has.
pub fn service_names(register: FirmwareRegister, value: u64) -> Vec<String> {
    let mut names: Vec<String> = register
        .services()
        .filter(|s| value & s.mask() != 0)
        .map(|s| s.name().to_string())
        .collect();
    let unnamed = register.services().fold(value, |rest, s| rest & !s.mask());
    if unnamed != 0 {
        names.push(format!("unnamed bits {unnamed:#x}"));
    }
    names
}

/// The services of `register` whose bits are set in `value`, by name, or `none`.
pub fn describe_services(register: FirmwareRegister, value: u64) -> String {
    let names = service_names(register, value);
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_reference() {
        let expected = [
            (FirmwareRegister::PsciVersion, 0x6030_0000_0014_0000),
            (
                FirmwareRegister::SmcccArchWorkaround1,
                0x6030_0000_0014_0001,
            ),
            (
                FirmwareRegister::SmcccArchWorkaround2,
                0x6030_0000_0014_0002,
            ),
            (
                FirmwareRegister::SmcccArchWorkaround3,
                0x6030_0000_0014_0003,
            ),
            (FirmwareRegister::StdBitmap, 0x6030_0000_0016_0000),
            (FirmwareRegister::StdHypBitmap, 0x6030_0000_0016_0001),
            (FirmwareRegister::VendorHypBitmap, 0x6030_0000_0016_0002),
            (FirmwareRegister::VendorHypBitmap2, 0x6030_0000_0016_0003),
        ];
        for (register, id) in expected {
            assert_eq!(register.id(), id, "{register}");
            assert_eq!(FirmwareRegister::from_id(id), Some(register));
            assert_eq!(classify(id), Some(FirmwareId::Known(register)));
        }
    }

    #[test]
    fn unknown_ids_of_both_families_are_recognised_and_others_are_not() {
        // The reference kernel answered ENOENT for FW_REG(4); a newer kernel may list it.
        assert_eq!(
            classify(0x6030_0000_0014_0004),
            Some(FirmwareId::Unknown {
                family: FirmwareFamily::Firmware,
                index: 4
            })
        );
        assert_eq!(
            classify(0x6030_0000_0016_0004),
            Some(FirmwareId::Unknown {
                family: FirmwareFamily::Bitmap,
                index: 4
            })
        );
        // PSCI_VERSION with a U32 size is not a firmware id (ENOENT in the log), nor is a sysreg.
        assert_eq!(classify(0x6020_0000_0014_0000), None);
        assert_eq!(classify(0x6030_0000_0013_c020), None);
        let list = [
            0x6030_0000_0010_0000,
            0x6030_0000_0014_0000,
            0x6030_0000_0014_0009,
            0x6030_0000_0016_0002,
            0x6030_0000_0016_0005,
        ];
        assert_eq!(
            unknown_registers(&list),
            vec![
                (0x6030_0000_0014_0009, FirmwareFamily::Firmware),
                (0x6030_0000_0016_0005, FirmwareFamily::Bitmap)
            ]
        );
        assert_eq!(
            describe_id(0x6030_0000_0016_0005).as_deref(),
            Some("KVM_REG_ARM_FW_FEAT_BMAP_REG(5)")
        );
    }

    #[test]
    fn psci_versions_encode_like_the_kernel_and_parse_from_specs() {
        assert_eq!(PsciVersion::V0_1.reg_value(), 0x1);
        assert_eq!(PsciVersion::V0_2.reg_value(), 0x2);
        assert_eq!(PsciVersion::V1_0.reg_value(), 0x10000);
        assert_eq!(PsciVersion::V1_1.reg_value(), 0x10001);
        assert_eq!(PsciVersion::V1_3.reg_value(), 0x10003);
        assert_eq!("1.1".parse(), Ok(PsciVersion::V1_1));
        assert_eq!(
            PsciVersion::from_reg_value(0x10001),
            Some(PsciVersion::V1_1)
        );
        assert_eq!(PsciVersion::from_reg_value(0x20000), None);
        let err = "2.0".parse::<PsciVersion>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown PSCI version `2.0`; KVM offers 0.1, 0.2, 1.0, 1.1, 1.2, 1.3"
        );
        assert!(
            serde_json::from_str::<PsciVersion>("1.0").is_err(),
            "a number is not a version"
        );
        assert_eq!(
            serde_json::from_str::<PsciVersion>("\"1.0\"").unwrap(),
            PsciVersion::V1_0
        );
    }

    #[test]
    fn services_sit_in_their_bitmaps() {
        assert_eq!(
            HypercallService::Trng.register(),
            FirmwareRegister::StdBitmap
        );
        assert_eq!(HypercallService::Ptp.mask(), 0x2);
        assert_eq!(
            HypercallService::Trng.function_ids(),
            [
                0x8400_0050,
                0x8400_0051,
                0x8400_0052,
                0x8400_0053,
                0xC400_0053
            ]
        );
        assert_eq!(
            HypercallService::PvTime.function_ids(),
            [0xC500_0020, 0xC500_0021]
        );
        assert_eq!(
            HypercallService::KvmFeatures.function_ids(),
            [0x8600_0000, 0x8600_FF01]
        );
        assert_eq!(HypercallService::Ptp.function_ids(), [0x8600_0001]);
        for service in HypercallService::ALL {
            for &id in service.function_ids() {
                assert!(smccc::function_name(id).is_some(), "{service}: {id:#x}");
            }
        }
        for register in FirmwareRegister::ALL {
            let bits = register.services().fold(0, |m, s| m | s.mask());
            assert_eq!(
                Some(bits).filter(|_| register.is_bitmap()),
                register.bitmap_limit()
            );
        }
        assert_eq!(
            HypercallService::from_name("PV_TIME"),
            Some(HypercallService::PvTime)
        );
        assert_eq!(
            HypercallService::from_name("func-feat"),
            Some(HypercallService::KvmFeatures)
        );
        assert_eq!(HypercallService::suggest("trnq"), Some("trng"));
        let err = serde_json::from_str::<HypercallService>("\"pvtime\"").unwrap_err();
        assert!(err.to_string().contains("did you mean `pv-time`?"), "{err}");
        assert_eq!(
            describe_services(FirmwareRegister::VendorHypBitmap, 0x3),
            "kvm-features, ptp"
        );
        assert_eq!(describe_services(FirmwareRegister::StdBitmap, 0), "none");
        assert_eq!(
            describe_services(FirmwareRegister::StdBitmap, 0x5),
            "trng, unnamed bits 0x4"
        );
    }
}
