//! The features a vCPU is created with (`KVM_ARM_VCPU_INIT`, `features[0]`), by the names specs
//! use, and the kernel's rules for combining them (`kvm_vcpu_init_check_features`).
//!
//! They matter to the CPU model because KVM derives ID-register limits from them at the first
//! `KVM_ARM_VCPU_INIT` of the VM (SVE, pointer authentication, PMU, 32-bit EL1), and every vCPU
//! of a VM must then be created with the same set.

use super::suggest;
use crate::hypervisor::abi;
use crate::hypervisor::errno::Errno;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// One `KVM_ARM_VCPU_*` feature bit of `kvm_vcpu_init.features[0]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VcpuFeature {
    /// `KVM_ARM_VCPU_POWER_OFF` (0): the vCPU starts powered off. Per-vCPU boot state, not part of
    /// the CPU model (KVM leaves it out of its same-features comparison).
    PowerOff,
    /// `KVM_ARM_VCPU_EL1_32BIT` (1): AArch32 EL1.
    El1_32bit,
    /// `KVM_ARM_VCPU_PSCI_0_2` (2): PSCI 0.2 and later instead of KVM's legacy PSCI 0.1.
    Psci0_2,
    /// `KVM_ARM_VCPU_PMU_V3` (3): a PMUv3 (sets the PMUVer limit).
    PmuV3,
    /// `KVM_ARM_VCPU_SVE` (4): SVE (sets the SVE limit, makes ID_AA64ZFR0_EL1 visible).
    Sve,
    /// `KVM_ARM_VCPU_PTRAUTH_ADDRESS` (5): address authentication.
    PtrauthAddress,
    /// `KVM_ARM_VCPU_PTRAUTH_GENERIC` (6): generic authentication.
    PtrauthGeneric,
    /// `KVM_ARM_VCPU_HAS_EL2` (7): nested virtualization.
    HasEl2,
    /// `KVM_ARM_VCPU_HAS_EL2_E2H0` (8): nested virtualization without VHE.
    HasEl2E2h0,
}

impl VcpuFeature {
    /// Every feature, in bit order.
    pub const ALL: [VcpuFeature; 9] = [
        VcpuFeature::PowerOff,
        VcpuFeature::El1_32bit,
        VcpuFeature::Psci0_2,
        VcpuFeature::PmuV3,
        VcpuFeature::Sve,
        VcpuFeature::PtrauthAddress,
        VcpuFeature::PtrauthGeneric,
        VcpuFeature::HasEl2,
        VcpuFeature::HasEl2E2h0,
    ];

    /// The bit number in `features[0]`.
    pub const fn bit(self) -> u32 {
        match self {
            VcpuFeature::PowerOff => abi::KVM_ARM_VCPU_POWER_OFF,
            VcpuFeature::El1_32bit => abi::KVM_ARM_VCPU_EL1_32BIT,
            VcpuFeature::Psci0_2 => abi::KVM_ARM_VCPU_PSCI_0_2,
            VcpuFeature::PmuV3 => abi::KVM_ARM_VCPU_PMU_V3,
            VcpuFeature::Sve => abi::KVM_ARM_VCPU_SVE,
            VcpuFeature::PtrauthAddress => abi::KVM_ARM_VCPU_PTRAUTH_ADDRESS,
            VcpuFeature::PtrauthGeneric => abi::KVM_ARM_VCPU_PTRAUTH_GENERIC,
            VcpuFeature::HasEl2 => abi::KVM_ARM_VCPU_HAS_EL2,
            VcpuFeature::HasEl2E2h0 => abi::KVM_ARM_VCPU_HAS_EL2_E2H0,
        }
    }

    /// The name specs use.
    pub const fn name(self) -> &'static str {
        match self {
            VcpuFeature::PowerOff => "power-off",
            VcpuFeature::El1_32bit => "el1-32bit",
            VcpuFeature::Psci0_2 => "psci-0.2",
            VcpuFeature::PmuV3 => "pmu-v3",
            VcpuFeature::Sve => "sve",
            VcpuFeature::PtrauthAddress => "ptrauth-address",
            VcpuFeature::PtrauthGeneric => "ptrauth-generic",
            VcpuFeature::HasEl2 => "has-el2",
            VcpuFeature::HasEl2E2h0 => "has-el2-e2h0",
        }
    }

    /// The uapi constant.
    pub const fn uapi_name(self) -> &'static str {
        match self {
            VcpuFeature::PowerOff => "KVM_ARM_VCPU_POWER_OFF",
            VcpuFeature::El1_32bit => "KVM_ARM_VCPU_EL1_32BIT",
            VcpuFeature::Psci0_2 => "KVM_ARM_VCPU_PSCI_0_2",
            VcpuFeature::PmuV3 => "KVM_ARM_VCPU_PMU_V3",
            VcpuFeature::Sve => "KVM_ARM_VCPU_SVE",
            VcpuFeature::PtrauthAddress => "KVM_ARM_VCPU_PTRAUTH_ADDRESS",
            VcpuFeature::PtrauthGeneric => "KVM_ARM_VCPU_PTRAUTH_GENERIC",
            VcpuFeature::HasEl2 => "KVM_ARM_VCPU_HAS_EL2",
            VcpuFeature::HasEl2E2h0 => "KVM_ARM_VCPU_HAS_EL2_E2H0",
        }
    }

    /// The capability (`KVM_CHECK_EXTENSION`) that says the host supports the feature, with its
    /// name; `None` for power-off, which every host has.
    pub const fn capability(self) -> Option<(u32, &'static str)> {
        match self {
            VcpuFeature::PowerOff => None,
            VcpuFeature::El1_32bit => Some((abi::KVM_CAP_ARM_EL1_32BIT, "KVM_CAP_ARM_EL1_32BIT")),
            VcpuFeature::Psci0_2 => Some((abi::KVM_CAP_ARM_PSCI_0_2, "KVM_CAP_ARM_PSCI_0_2")),
            VcpuFeature::PmuV3 => Some((abi::KVM_CAP_ARM_PMU_V3, "KVM_CAP_ARM_PMU_V3")),
            VcpuFeature::Sve => Some((abi::KVM_CAP_ARM_SVE, "KVM_CAP_ARM_SVE")),
            VcpuFeature::PtrauthAddress => Some((
                abi::KVM_CAP_ARM_PTRAUTH_ADDRESS,
                "KVM_CAP_ARM_PTRAUTH_ADDRESS",
            )),
            VcpuFeature::PtrauthGeneric => Some((
                abi::KVM_CAP_ARM_PTRAUTH_GENERIC,
                "KVM_CAP_ARM_PTRAUTH_GENERIC",
            )),
            VcpuFeature::HasEl2 => Some((abi::KVM_CAP_ARM_EL2, "KVM_CAP_ARM_EL2")),
            VcpuFeature::HasEl2E2h0 => Some((abi::KVM_CAP_ARM_EL2_E2H0, "KVM_CAP_ARM_EL2_E2H0")),
        }
    }

    /// The feature called `name` (any case, `_` read as `-`).
    pub fn from_name(name: &str) -> Option<VcpuFeature> {
        let wanted = name.trim().to_ascii_lowercase().replace('_', "-");
        VcpuFeature::ALL.into_iter().find(|f| f.name() == wanted)
    }

    /// The feature name closest to `name`.
    pub fn suggest(name: &str) -> Option<&'static str> {
        suggest::closest(name, VcpuFeature::ALL.iter().map(|f| f.name()))
    }
}

impl fmt::Display for VcpuFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for VcpuFeature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for VcpuFeature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        VcpuFeature::from_name(&name).ok_or_else(|| {
            let hint = suggest::did_you_mean(&VcpuFeature::suggest(&name).map(str::to_string));
            let known: Vec<&str> = VcpuFeature::ALL.iter().map(|f| f.name()).collect();
            serde::de::Error::custom(format!(
                "unknown vCPU feature `{name}`{hint} (known: {})",
                known.join(", ")
            ))
        })
    }
}

/// A set of features: the value of `features[0]`. Serializes as the list of names in bit order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VcpuFeatureSet(u32);

/// A combination `KVM_ARM_VCPU_INIT` refuses whatever the host supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum FeatureConflict {
    /// Only one of the two pointer-authentication features.
    #[error(
        "ptrauth-address and ptrauth-generic must be requested together \
         (KVM_ARM_VCPU_INIT answers EINVAL otherwise)"
    )]
    PtrauthPair,
    /// 32-bit EL1 together with nested virtualization.
    #[error("el1-32bit cannot be combined with has-el2 (KVM_ARM_VCPU_INIT answers EINVAL)")]
    El1_32bitWithEl2,
}

impl FeatureConflict {
    /// The errno of `KVM_ARM_VCPU_INIT` for this combination.
    pub fn errno(self) -> Errno {
        Errno::EINVAL
    }
}

impl VcpuFeatureSet {
    /// No features.
    pub const EMPTY: VcpuFeatureSet = VcpuFeatureSet(0);

    /// The set with exactly these features.
    pub fn of(features: &[VcpuFeature]) -> VcpuFeatureSet {
        features
            .iter()
            .fold(VcpuFeatureSet::EMPTY, |set, &f| set.with(f))
    }

    /// This set plus `feature`.
    pub const fn with(self, feature: VcpuFeature) -> VcpuFeatureSet {
        VcpuFeatureSet(self.0 | 1 << feature.bit())
    }

    /// This set without `feature`.
    pub const fn without(self, feature: VcpuFeature) -> VcpuFeatureSet {
        VcpuFeatureSet(self.0 & !(1 << feature.bit()))
    }

    /// Whether `feature` is in the set.
    pub const fn contains(self, feature: VcpuFeature) -> bool {
        self.0 & 1 << feature.bit() != 0
    }

    /// The value of `kvm_vcpu_init.features[0]`.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The features, in bit order.
    pub fn iter(self) -> impl Iterator<Item = VcpuFeature> {
        VcpuFeature::ALL
            .into_iter()
            .filter(move |&f| self.contains(f))
    }

    /// The first rule of `kvm_vcpu_init_check_features` the set breaks, if any.
    pub fn conflict(self) -> Option<FeatureConflict> {
        if self.contains(VcpuFeature::PtrauthAddress) != self.contains(VcpuFeature::PtrauthGeneric)
        {
            return Some(FeatureConflict::PtrauthPair);
        }
        if self.contains(VcpuFeature::El1_32bit) && self.contains(VcpuFeature::HasEl2) {
            return Some(FeatureConflict::El1_32bitWithEl2);
        }
        None
    }
}

impl fmt::Display for VcpuFeatureSet {
    /// `psci-0.2, pmu-v3`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(VcpuFeature::name).collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

impl Serialize for VcpuFeatureSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for VcpuFeatureSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let features = Vec::<VcpuFeature>::deserialize(deserializer)?;
        Ok(VcpuFeatureSet::of(&features))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_follow_the_uapi() {
        let set = VcpuFeatureSet::of(&[
            VcpuFeature::Psci0_2,
            VcpuFeature::PmuV3,
            VcpuFeature::Sve,
            VcpuFeature::PtrauthAddress,
            VcpuFeature::PtrauthGeneric,
        ]);
        // The reference log's variant B: features[0] = 0x7c.
        assert_eq!(set.bits(), 0x7c);
        assert_eq!(
            VcpuFeatureSet::of(&[VcpuFeature::Psci0_2]).bits(),
            0x4,
            "the reference log's default init"
        );
        assert_eq!(VcpuFeature::HasEl2E2h0.bit(), 8);
        for (i, f) in VcpuFeature::ALL.iter().enumerate() {
            assert_eq!(f.bit() as usize, i);
            assert_eq!(VcpuFeature::from_name(f.name()), Some(*f));
        }
    }

    #[test]
    fn names_parse_loosely_and_unknown_ones_get_a_suggestion() {
        assert_eq!(
            VcpuFeature::from_name("PSCI_0.2"),
            Some(VcpuFeature::Psci0_2)
        );
        assert_eq!(VcpuFeature::from_name("pmu_v3"), Some(VcpuFeature::PmuV3));
        assert_eq!(VcpuFeature::suggest("pmuv3"), Some("pmu-v3"));
        let err = serde_json::from_str::<VcpuFeature>("\"ptrauth-adress\"").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("unknown vCPU feature `ptrauth-adress`"),
            "{message}"
        );
        assert!(
            message.contains("did you mean `ptrauth-address`"),
            "{message}"
        );
    }

    #[test]
    fn the_kernels_combination_rules() {
        let ptrauth_half = VcpuFeatureSet::of(&[VcpuFeature::PtrauthAddress]);
        assert_eq!(ptrauth_half.conflict(), Some(FeatureConflict::PtrauthPair));
        let ptrauth = ptrauth_half.with(VcpuFeature::PtrauthGeneric);
        assert_eq!(ptrauth.conflict(), None);
        let el1_el2 = VcpuFeatureSet::of(&[VcpuFeature::El1_32bit, VcpuFeature::HasEl2]);
        assert_eq!(el1_el2.conflict(), Some(FeatureConflict::El1_32bitWithEl2));
        assert_eq!(FeatureConflict::PtrauthPair.errno(), Errno::EINVAL);
    }

    #[test]
    fn sets_serialize_as_names() {
        let set = VcpuFeatureSet::of(&[VcpuFeature::Sve, VcpuFeature::Psci0_2]);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["psci-0.2","sve"]"#);
        assert_eq!(serde_json::from_str::<VcpuFeatureSet>(&json).unwrap(), set);
        assert_eq!(set.to_string(), "psci-0.2, sve");
        assert_eq!(VcpuFeatureSet::EMPTY.to_string(), "none");
        assert!(!set.without(VcpuFeature::Sve).contains(VcpuFeature::Sve));
    }
}
