//! Requested x86 CPU models: from the host's `KVM_GET_SUPPORTED_CPUID` table and a list of
//! features to hide, the exact table vmfleet hands to `KVM_SET_CPUID2` for one vCPU.
//!
//! [`X86CpuModel::build`] does, in this order:
//! 1. resolve every name in `hide` and `show` through the catalog (unknown →
//!    [`ModelError::UnknownFeature`], with a suggestion; one name in both →
//!    [`ModelError::ShownAndHidden`]);
//! 2. copy the supported table, keeping its order (order matters to KVM's after-run identity
//!    check);
//! 3. per-vCPU normalisation (below);
//! 4. apply the raw `cpuid` bitmaps (a CPU template's tri-state bits; a leaf/subleaf the table
//!    has no entry for → [`ModelError::NoSuchLeaf`]: vmfleet does not invent leaves), then set each
//!    `show` feature's bit (its leaf must be in the table, the same rule). KVM takes any bit: one
//!    the host does not support is not refused here, it is what `vmfleet check` and the run's
//!    read-back and guest view report;
//! 5. clear each hidden feature's bit wherever its leaf/subleaf has an entry (whether the bit was
//!    set or not: either way the request tells the kernel 0 and the feature goes in `hidden`); a
//!    feature whose leaf/subleaf has no entry is recorded in `already_absent`, not an error;
//! 6. apply the checks `KVM_SET_CPUID2` itself makes before accepting a table
//!    ([`KernelRule`]), so a table the kernel would refuse is refused here, naming the rule and the
//!    errno the kernel would give.
//!
//! # Per-vCPU normalisation
//! `KVM_GET_SUPPORTED_CPUID` describes the host, not a vCPU: its topology fields are zero or the
//! host's. Established VMMs (QEMU, Firecracker, cloud-hypervisor) rewrite the same few fields per
//! vCPU; vmfleet does the minimum that keeps a guest's view self-consistent:
//! - leaf 0x1 EBX\[31:24\], initial APIC id = `vcpu_index` (low 8 bits): guests use it to tell
//!   their CPUs apart before they read the APIC, and KVM's in-kernel APIC is created with the vCPU
//!   id as its APIC id, so anything else disagrees with the APIC;
//! - leaf 0xB and 0x1F, every subleaf, EDX = x2APIC id = `vcpu_index`, only where those leaves are
//!   in the table: the SDM defines EDX of these leaves as the full x2APIC id, and an x2APIC guest
//!   enumerates topology from it;
//! - leaf 0x1 EBX\[23:16\], logical processor count = `vcpu_count` (at most 255), and leaf 0x1
//!   EDX\[28\] (HTT) set exactly when `vcpu_count > 1`: the SDM only defines EBX\[23:16\] when HTT is
//!   set, and Linux sizes its per-package CPU enumeration from it.
//!
//! Hiding runs after normalisation, so an explicit request wins (hiding `ht` clears HTT even for
//! several vCPUs). Nothing else is touched: the rest of the table is the host's, bit for bit.

use super::catalog::{self, Feature};
use crate::hypervisor::cpuid::{CpuidReg, CpuidTable, MAX_ENTRIES};
use crate::hypervisor::errno::Errno;
use crate::model::tristate::TriState;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The CPU model vmfleet asks for: the host's supported table, with `cpuid`'s bits, `show`'s
/// features set and `hide`'s cleared.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct X86CpuModel {
    /// Catalog names of features the guest must not see (case-insensitive, `-` or `_`).
    pub hide: Vec<String>,
    /// Catalog names of features the guest must see (a CPU template's `feature = true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub show: Vec<String>,
    /// Raw tri-state bits, per leaf, subleaf and register (a CPU template's `cpuid` table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpuid: Vec<CpuidBits>,
}

/// Tri-state bits of one CPUID register: `x` bits stay the host's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CpuidBits {
    /// The leaf (EAX input).
    pub leaf: u32,
    /// The subleaf (ECX input; 0 for leaves without subleaves).
    pub subleaf: u32,
    /// The output register.
    pub register: CpuidReg,
    /// The bits (width 32).
    pub bits: TriState,
}

impl CpuidBits {
    /// `7.0.ebx`.
    pub fn position(&self) -> String {
        catalog::position(self.leaf, self.subleaf, self.register)
    }
}

impl X86CpuModel {
    /// The model that hides `hide` and changes nothing else.
    pub fn hiding(hide: Vec<String>) -> X86CpuModel {
        X86CpuModel {
            hide,
            ..X86CpuModel::default()
        }
    }
}

/// The table built for one vCPU, and what the build did with each hidden feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestedModel {
    /// The table to hand to `KVM_SET_CPUID2`.
    pub table: CpuidTable,
    /// Hidden features whose bit is clear in `table` because of the request (it was set and is
    /// now cleared, or the host already left it clear; either way the kernel is asked for 0).
    /// What to check with [`super::drift::not_honoured`]: on a host that rewrites leaves, a bit
    /// the host did not even offer can come back set.
    pub hidden: Vec<&'static Feature>,
    /// Hidden features whose leaf/subleaf has no entry in the supported table: nothing to clear.
    pub already_absent: Vec<&'static Feature>,
}

impl RequestedModel {
    /// Every feature the request says the guest must not see (`hidden` then `already_absent`).
    /// Handing this rather than `hidden` to [`super::drift::not_honoured`] and
    /// [`super::drift::check_guest_view`] also catches a kernel that adds a leaf the request left
    /// out.
    pub fn requested_hidden(&self) -> Vec<&'static Feature> {
        self.hidden
            .iter()
            .chain(&self.already_absent)
            .copied()
            .collect()
    }
}

/// A check `KVM_SET_CPUID2` makes before it accepts a table (`kvm_vcpu_ioctl_set_cpuid2`,
/// `kvm_check_cpuid`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelRule {
    /// More than `KVM_MAX_CPUID_ENTRIES` entries: `E2BIG`.
    TooManyEntries {
        /// Entries in the table.
        count: usize,
        /// The kernel's limit (`KVM_MAX_CPUID_ENTRIES`).
        max: usize,
    },
    /// Leaf 0x80000008 EAX\[15:8\] (virtual address bits) is not 0, 48 or 57: `EINVAL`.
    VirtualAddressBits {
        /// The virtual address width the table states.
        bits: u32,
    },
}

impl KernelRule {
    /// The errno the kernel answers a table breaking this rule with.
    pub fn errno(&self) -> Errno {
        match self {
            KernelRule::TooManyEntries { .. } => Errno::E2BIG,
            KernelRule::VirtualAddressBits { .. } => Errno::EINVAL,
        }
    }
}

impl fmt::Display for KernelRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelRule::TooManyEntries { count, max } => write!(
                f,
                "the table has {count} entries, more than KVM_MAX_CPUID_ENTRIES ({max})"
            ),
            KernelRule::VirtualAddressBits { bits } => write!(
                f,
                "leaf 0x80000008 EAX[15:8] (virtual address bits) is {bits}; \
                 kvm_check_cpuid accepts only 0, 48 or 57"
            ),
        }
    }
}

/// Why a model could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ModelError {
    /// `hide` names a feature the catalog does not know.
    #[error("unknown feature `{name}`{}", suggestion_text(.suggestion))]
    UnknownFeature {
        /// The name as the spec wrote it.
        name: String,
        /// The catalog name it is probably a typo of ([`crate::model::suggest`]).
        suggestion: Option<String>,
    },
    /// The built table breaks a check `KVM_SET_CPUID2` makes, so the kernel would refuse it.
    #[error("KVM_SET_CPUID2 would refuse this table with {errno}: {rule}")]
    KernelRule {
        /// The check it breaks.
        rule: KernelRule,
        /// What the kernel would answer ([`KernelRule::errno`]).
        errno: Errno,
    },
    /// A feature both shown and hidden.
    #[error("feature `{name}` is both shown and hidden")]
    ShownAndHidden {
        /// The catalog name.
        name: String,
    },
    /// Bits or a shown feature in a leaf the host's table has no entry for.
    #[error(
        "{what}: the host's supported CPUID has no leaf {leaf:#x} subleaf {subleaf}, and vmfleet \
         does not add leaves"
    )]
    NoSuchLeaf {
        /// What asked for it (`cpuid 0x7.0.ebx`, `feature avx2`).
        what: String,
        /// The leaf.
        leaf: u32,
        /// The subleaf.
        subleaf: u32,
    },
    /// The table was asked for a vCPU the VM does not have.
    #[error("vCPU index {vcpu_index} is out of range for {vcpu_count} vCPUs")]
    Topology {
        /// The vCPU asked for.
        vcpu_index: u32,
        /// The VM's vCPU count.
        vcpu_count: u32,
    },
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    suggestion
        .as_deref()
        .map(|s| format!(" — did you mean `{s}`?"))
        .unwrap_or_default()
}

impl ModelError {
    fn rule(rule: KernelRule) -> Self {
        ModelError::KernelRule {
            errno: rule.errno(),
            rule,
        }
    }
}

/// Leaf 0x1 EDX\[28\]: more than one logical processor per package (HTT).
const HTT: u32 = 1 << 28;

impl X86CpuModel {
    /// The table for vCPU `vcpu_index` of `vcpu_count`, built from the host's supported table.
    pub fn build(
        &self,
        supported: &CpuidTable,
        vcpu_index: u32,
        vcpu_count: u32,
    ) -> Result<RequestedModel, ModelError> {
        if vcpu_index >= vcpu_count {
            return Err(ModelError::Topology {
                vcpu_index,
                vcpu_count,
            });
        }
        let resolve = |names: &[String]| -> Result<Vec<&'static Feature>, ModelError> {
            let mut out: Vec<&'static Feature> = Vec::new();
            for name in names {
                let feature = catalog::by_name(name).ok_or_else(|| ModelError::UnknownFeature {
                    name: name.clone(),
                    suggestion: catalog::suggest(name).map(str::to_string),
                })?;
                if !out.contains(&feature) {
                    out.push(feature);
                }
            }
            Ok(out)
        };
        let wanted = resolve(&self.hide)?;
        let shown = resolve(&self.show)?;
        if let Some(both) = shown.iter().find(|f| wanted.contains(f)) {
            return Err(ModelError::ShownAndHidden {
                name: both.name.to_string(),
            });
        }

        let mut table = supported.clone();
        normalise_for_vcpu(&mut table, vcpu_index, vcpu_count);
        for bits in &self.cpuid {
            let entry = table.lookup_mut(bits.leaf, bits.subleaf).ok_or_else(|| {
                ModelError::NoSuchLeaf {
                    what: format!("cpuid {}", bits.position()),
                    leaf: bits.leaf,
                    subleaf: bits.subleaf,
                }
            })?;
            let reg = entry.reg_mut(bits.register);
            *reg = bits.bits.apply(u64::from(*reg)) as u32;
        }
        for feature in shown {
            let entry = table
                .lookup_mut(feature.leaf, feature.subleaf)
                .ok_or_else(|| ModelError::NoSuchLeaf {
                    what: format!("feature {}", feature.name),
                    leaf: feature.leaf,
                    subleaf: feature.subleaf,
                })?;
            *entry.reg_mut(feature.reg) |= feature.mask();
        }

        let mut hidden = Vec::new();
        let mut already_absent = Vec::new();
        for feature in wanted {
            match table.lookup_mut(feature.leaf, feature.subleaf) {
                Some(entry) => {
                    *entry.reg_mut(feature.reg) &= !feature.mask();
                    hidden.push(feature);
                }
                None => already_absent.push(feature),
            }
        }

        check_kernel_rules(&table)?;
        Ok(RequestedModel {
            table,
            hidden,
            already_absent,
        })
    }
}

/// The per-vCPU rewrites documented at the top of this module.
fn normalise_for_vcpu(table: &mut CpuidTable, vcpu_index: u32, vcpu_count: u32) {
    if let Some(leaf1) = table.lookup_mut(0x1, 0) {
        let apic_id = vcpu_index & 0xff;
        let count = vcpu_count.min(0xff);
        leaf1.ebx = (leaf1.ebx & 0x0000_ffff) | (apic_id << 24) | (count << 16);
        if vcpu_count > 1 {
            leaf1.edx |= HTT;
        } else {
            leaf1.edx &= !HTT;
        }
    }
    for entry in &mut table.entries {
        if entry.function == 0xb || entry.function == 0x1f {
            entry.edx = vcpu_index;
        }
    }
}

/// The checks `KVM_SET_CPUID2` makes before it installs a table on a vCPU that has not run.
pub fn check_kernel_rules(table: &CpuidTable) -> Result<(), ModelError> {
    if table.len() > MAX_ENTRIES {
        return Err(ModelError::rule(KernelRule::TooManyEntries {
            count: table.len(),
            max: MAX_ENTRIES,
        }));
    }
    // kvm_find_cpuid_entry(vcpu, 0x80000008): the first entry of that function, whatever its index.
    if let Some(entry) = table.entries.iter().find(|e| e.function == 0x8000_0008) {
        let bits = (entry.reg(CpuidReg::Eax) >> 8) & 0xff;
        if !matches!(bits, 0 | 48 | 57) {
            return Err(ModelError::rule(KernelRule::VirtualAddressBits { bits }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::cpuid::{CpuidEntry, FLAG_SIGNIFICANT_INDEX};

    fn entry(function: u32, index: u32, flags: u32, regs: [u32; 4]) -> CpuidEntry {
        let [eax, ebx, ecx, edx] = regs;
        CpuidEntry {
            function,
            index,
            flags,
            eax,
            ebx,
            ecx,
            edx,
        }
    }

    /// A small but realistic supported table (values from a Skylake-SP-like host).
    fn supported() -> CpuidTable {
        CpuidTable::new(vec![
            entry(0x0, 0, 0, [0xd, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]),
            entry(0x1, 0, 0, [0x5_0654, 0x0000_0800, 0xf7fa_3223, 0x078b_fbff]),
            entry(
                0x7,
                0,
                FLAG_SIGNIFICANT_INDEX,
                [0, 0xd19f_4fbb, 0x0000_000c, 0xac00_0400],
            ),
            entry(0x7, 1, FLAG_SIGNIFICANT_INDEX, [0x10, 0, 0, 0]),
            entry(0xb, 0, FLAG_SIGNIFICANT_INDEX, [0x1, 0x1, 0x100, 0]),
            entry(0xb, 1, FLAG_SIGNIFICANT_INDEX, [0x7, 0x1, 0x201, 0]),
            entry(0xd, 0, FLAG_SIGNIFICANT_INDEX, [0x2e7, 0x340, 0xa88, 0]),
            entry(0xd, 1, FLAG_SIGNIFICANT_INDEX, [0xf, 0x340, 0, 0]),
            entry(
                0x4000_0000,
                0,
                0,
                [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d],
            ),
            entry(0x4000_0001, 0, 0, [0x0100_7efb, 0, 0, 0]),
            entry(0x8000_0000, 0, 0, [0x8000_0008, 0, 0, 0]),
            entry(0x8000_0001, 0, 0, [0, 0, 0x0000_0121, 0x2c10_0800]),
            entry(0x8000_0008, 0, 0, [0x3030, 0, 0, 0]),
        ])
    }

    fn model(hide: &[&str]) -> X86CpuModel {
        X86CpuModel::hiding(hide.iter().map(|s| s.to_string()).collect())
    }

    /// Every bit that differs between two same-shaped tables, as (leaf, subleaf, reg, mask).
    fn differences(a: &CpuidTable, b: &CpuidTable) -> Vec<(u32, u32, CpuidReg, u32)> {
        assert_eq!(a.len(), b.len());
        let mut out = Vec::new();
        for (x, y) in a.entries.iter().zip(&b.entries) {
            assert_eq!(
                (x.function, x.index, x.flags),
                (y.function, y.index, y.flags)
            );
            for reg in CpuidReg::ALL {
                if x.reg(reg) != y.reg(reg) {
                    out.push((x.function, x.index, reg, x.reg(reg) ^ y.reg(reg)));
                }
            }
        }
        out
    }

    #[test]
    fn shown_features_and_raw_bits_change_only_their_bits() {
        let model = X86CpuModel {
            hide: vec!["avx2".into()],
            show: vec!["avx512f".into()],
            cpuid: vec![CpuidBits {
                leaf: 0x8000_0001,
                subleaf: 0,
                register: CpuidReg::Ecx,
                bits: TriState::parse("0b1x0", 32).unwrap(),
            }],
        };
        let mut supported = supported();
        supported.lookup_mut(7, 0).unwrap().ebx &= !(1 << 16);
        let built = model.build(&supported, 0, 1).unwrap();
        let ebx = built.table.lookup(7, 0).unwrap().ebx;
        assert_eq!(ebx & (1 << 16), 1 << 16, "avx512f shown");
        assert_eq!(ebx & (1 << 5), 0, "avx2 hidden");
        assert_eq!(built.table.lookup(0x8000_0001, 0).unwrap().ecx, 0x0000_0124);
        let both = X86CpuModel {
            hide: vec!["avx2".into()],
            show: vec!["AVX2".into()],
            ..X86CpuModel::default()
        };
        assert!(matches!(
            both.build(&supported, 0, 1),
            Err(ModelError::ShownAndHidden { .. })
        ));
        let missing = X86CpuModel {
            cpuid: vec![CpuidBits {
                leaf: 0x14,
                subleaf: 0,
                register: CpuidReg::Eax,
                bits: TriState::whole(32, 1),
            }],
            ..X86CpuModel::default()
        };
        let e = missing.build(&supported, 0, 1).unwrap_err().to_string();
        assert!(e.contains("no leaf 0x14 subleaf 0"), "{e}");
    }

    #[test]
    fn hiding_clears_exactly_that_bit() {
        let baseline = model(&[]).build(&supported(), 0, 1).unwrap();
        let hidden = model(&["avx512f"]).build(&supported(), 0, 1).unwrap();
        assert_eq!(
            differences(&baseline.table, &hidden.table),
            vec![(0x7, 0, CpuidReg::Ebx, 1 << 16)]
        );
        assert_eq!(hidden.table.lookup(7, 0).unwrap().ebx & (1 << 16), 0);
        assert_eq!(hidden.hidden, vec![catalog::by_name("avx512f").unwrap()]);
        assert!(hidden.already_absent.is_empty());
        assert_eq!(hidden.table.entries.len(), supported().len());
    }

    #[test]
    fn only_documented_normalisation_differs_from_the_supported_table() {
        let built = model(&["hypervisor", "x2apic"])
            .build(&supported(), 2, 4)
            .unwrap();
        let mut diffs = differences(&supported(), &built.table);
        diffs.sort();
        assert_eq!(
            diffs,
            vec![
                // EBX[31:24] 0 -> 2 and EBX[23:16] 0x00 -> 4
                (0x1, 0, CpuidReg::Ebx, 0x0204_0000),
                // hypervisor and x2apic cleared
                (0x1, 0, CpuidReg::Ecx, (1 << 31) | (1 << 21)),
                // HTT set for 4 vCPUs
                (0x1, 0, CpuidReg::Edx, 1 << 28),
                (0xb, 0, CpuidReg::Edx, 2),
                (0xb, 1, CpuidReg::Edx, 2),
            ]
        );
        // Order and keys kept.
        let keys = |t: &CpuidTable| {
            t.entries
                .iter()
                .map(|e| (e.function, e.index, e.flags))
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&built.table), keys(&supported()));
    }

    #[test]
    fn apic_ids_follow_the_vcpu_index() {
        for index in 0..4 {
            let built = model(&[]).build(&supported(), index, 4).unwrap();
            let leaf1 = built.table.lookup(1, 0).unwrap();
            assert_eq!(leaf1.ebx >> 24, index, "initial APIC id");
            assert_eq!((leaf1.ebx >> 16) & 0xff, 4, "logical processor count");
            assert_eq!(
                leaf1.ebx & 0xffff,
                0x0800,
                "CLFLUSH size and brand index kept"
            );
            assert_ne!(leaf1.edx & HTT, 0);
            for sub in 0..2 {
                assert_eq!(
                    built.table.lookup(0xb, sub).unwrap().edx,
                    index,
                    "x2APIC id, 0xb.{sub}"
                );
            }
        }
        let single = model(&[]).build(&supported(), 0, 1).unwrap();
        assert_eq!(single.table.lookup(1, 0).unwrap().edx & HTT, 0);
        assert_eq!((single.table.lookup(1, 0).unwrap().ebx >> 16) & 0xff, 1);
    }

    #[test]
    fn leaf_0x1f_is_normalised_only_when_present() {
        let mut table = supported();
        table
            .entries
            .push(entry(0x1f, 0, FLAG_SIGNIFICANT_INDEX, [1, 1, 0x100, 0]));
        table
            .entries
            .push(entry(0x1f, 1, FLAG_SIGNIFICANT_INDEX, [4, 4, 0x201, 0]));
        let built = model(&[]).build(&table, 3, 4).unwrap();
        assert_eq!(built.table.lookup(0x1f, 1).unwrap().edx, 3);
        let without = model(&[]).build(&supported(), 3, 4).unwrap();
        assert!(without.table.lookup(0x1f, 0).is_none());
        assert_eq!(without.table.len(), supported().len());
    }

    #[test]
    fn hide_wins_over_normalisation() {
        let built = model(&["ht"]).build(&supported(), 0, 2).unwrap();
        assert_eq!(built.table.lookup(1, 0).unwrap().edx & HTT, 0);
        assert_eq!(built.hidden, vec![catalog::by_name("ht").unwrap()]);
    }

    #[test]
    fn unknown_feature_is_refused_with_a_suggestion() {
        let err = model(&["avx2", "avx512"])
            .build(&supported(), 0, 1)
            .unwrap_err();
        assert_eq!(
            err,
            ModelError::UnknownFeature {
                name: "avx512".into(),
                suggestion: Some("avx512f".into())
            }
        );
        assert_eq!(
            err.to_string(),
            "unknown feature `avx512` — did you mean `avx512f`?"
        );
        let err = model(&["no_such_thing_at_all"])
            .build(&supported(), 0, 1)
            .unwrap_err();
        assert_eq!(err.to_string(), "unknown feature `no_such_thing_at_all`");
    }

    #[test]
    fn absent_features_are_recorded_not_refused() {
        // avx_vnni (7.1 EAX[4]) is set in the table, amx_tile (7.0 EDX[24]) is clear, and there
        // is no 0x80000007 entry for constant_tsc. Duplicates and spellings collapse.
        let built = model(&["AMX-TILE", "constant_tsc", "avx_vnni", "avx_vnni"])
            .build(&supported(), 0, 1)
            .unwrap();
        let names = |v: &[&Feature]| v.iter().map(|f| f.name).collect::<Vec<_>>();
        assert_eq!(names(&built.hidden), vec!["amx_tile", "avx_vnni"]);
        assert_eq!(names(&built.already_absent), vec!["constant_tsc"]);
        assert_eq!(
            names(&built.requested_hidden()),
            vec!["amx_tile", "avx_vnni", "constant_tsc"]
        );
        let baseline = model(&[]).build(&supported(), 0, 1).unwrap();
        assert_eq!(
            differences(&baseline.table, &built.table),
            vec![(0x7, 1, CpuidReg::Eax, 1 << 4)],
            "hiding a bit the host left clear changes nothing"
        );
        assert_eq!(
            built.table.len(),
            supported().len(),
            "no entry is invented for an absent leaf"
        );
    }

    #[test]
    fn too_many_entries_is_e2big() {
        let mut table = supported();
        while table.len() < MAX_ENTRIES {
            let n = table.len() as u32;
            table
                .entries
                .push(entry(0x4, n, FLAG_SIGNIFICANT_INDEX, [0; 4]));
        }
        assert!(
            model(&[]).build(&table, 0, 1).is_ok(),
            "256 entries are accepted"
        );
        table
            .entries
            .push(entry(0x4, 999, FLAG_SIGNIFICANT_INDEX, [0; 4]));
        let err = model(&[]).build(&table, 0, 1).unwrap_err();
        assert_eq!(
            err,
            ModelError::KernelRule {
                rule: KernelRule::TooManyEntries {
                    count: 257,
                    max: 256
                },
                errno: Errno::E2BIG
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("E2BIG") && text.contains("KVM_MAX_CPUID_ENTRIES"),
            "{text}"
        );
    }

    #[test]
    fn bad_virtual_address_bits_are_einval() {
        for (bits, ok) in [
            (0u32, true),
            (48, true),
            (57, true),
            (39, false),
            (52, false),
        ] {
            let mut table = supported();
            table.lookup_mut(0x8000_0008, 0).unwrap().eax = (bits << 8) | 0x2e;
            let result = model(&[]).build(&table, 0, 1);
            if ok {
                assert!(result.is_ok(), "{bits} virtual address bits");
            } else {
                let err = result.unwrap_err();
                assert_eq!(
                    err,
                    ModelError::KernelRule {
                        rule: KernelRule::VirtualAddressBits { bits },
                        errno: Errno::EINVAL
                    }
                );
                let text = err.to_string();
                assert!(
                    text.contains("0x80000008") && text.contains("EINVAL"),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn vcpu_index_must_be_below_the_count() {
        assert_eq!(
            model(&[]).build(&supported(), 2, 2).unwrap_err(),
            ModelError::Topology {
                vcpu_index: 2,
                vcpu_count: 2
            }
        );
        assert!(model(&[]).build(&supported(), 0, 0).is_err());
    }

    #[test]
    fn requested_model_round_trips_through_json() {
        let built = model(&["avx512f", "constant_tsc"])
            .build(&supported(), 1, 2)
            .unwrap();
        let json = serde_json::to_string(&built).unwrap();
        assert!(json.contains(r#""hidden":["avx512f"]"#), "{json}");
        assert!(
            json.contains(r#""already_absent":["constant_tsc"]"#),
            "{json}"
        );
        let back: RequestedModel = serde_json::from_str(&json).unwrap();
        assert_eq!(back, built);
    }
}
