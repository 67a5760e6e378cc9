//! The x86 guest CPU model, as data and rules: CPUID, whose table (`(leaf, subleaf) -> eax..edx`
//! entries, [`CpuidTable`]) is the boundary's payload, read here by what its bits mean.
//!
//! Owns, one concept per module (the same parts as [`super::arm64`]):
//! - catalog ([`catalog`]): the named feature bits, what specs and transcripts say instead of
//!   positions;
//! - build ([`model`]): the table vmfleet hands to `KVM_SET_CPUID2`, from the host's supported
//!   table and the features to hide;
//! - validate (here): KVM's own identity rule for a table rewritten after the first run
//!   ([`kernel_identity_differences`]), which the lock policy applies; x86 has no other
//!   pre-kernel checks (KVM judges a table by itself);
//! - drift ([`drift`]): what the kernel and the guest did with a requested model.
//!
//! Must not: do I/O or call a backend, the guests or the runtime. Everything here is plain data
//! and runs on any architecture: a trace recorded on an x86 host is replayed and checked on an
//! arm64 one and vice versa.

pub mod catalog;
pub mod drift;
pub mod model;

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::hypervisor::cpuid::{CpuidEntry, CpuidReg, CpuidTable};

/// Bits KVM recomputes at run time from guest state (CR4, XCR0, APIC base), per
/// `kvm_update_cpuid_runtime`. KVM's after-run equality check refreshes them in the incoming table
/// before comparing, so vmfleet's lock does the same: a table read back before the guest flipped
/// CR4.OSXSAVE is still "identical".
pub const RUNTIME_BITS: &[(u32, u32, CpuidReg, u32)] = &[
    (0x1, 0, CpuidReg::Ecx, 1 << 27),  // OSXSAVE <- CR4.OSXSAVE
    (0x1, 0, CpuidReg::Edx, 1 << 9),   // APIC <- APIC_BASE.EN
    (0x7, 0, CpuidReg::Ecx, 1 << 4),   // OSPKE <- CR4.PKE
    (0xd, 0, CpuidReg::Ebx, u32::MAX), // XSAVE area size for XCR0
    (0xd, 1, CpuidReg::Ebx, u32::MAX), // XSAVE area size for XCR0 | XSS
];

/// How a requested table differs from the one the kernel holds, by KVM's after-run rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableDifference {
    /// Different number of entries (KVM compares no further).
    Count {
        /// Entries in the table the kernel holds.
        held: usize,
        /// Entries in the requested table.
        requested: usize,
    },
    /// The entry at `position` has a different key (function, index or flags): KVM compares the
    /// tables entry by entry in order, so a reordered table is a different table.
    Key {
        /// The entry's index in both tables.
        position: usize,
        /// The kernel's entry there.
        held: CpuidEntry,
        /// The requested entry there.
        requested: CpuidEntry,
    },
    /// Same key, different bits in one register.
    Bits {
        /// The entry's leaf (`function`).
        leaf: u32,
        /// The entry's subleaf (`index`).
        subleaf: u32,
        /// The register that differs.
        reg: CpuidReg,
        /// The register as the kernel holds it.
        held: u32,
        /// The register as requested, its runtime bits ([`RUNTIME_BITS`]) taken from `held`
        /// the way KVM refreshes them before comparing.
        requested: u32,
    },
}

impl fmt::Display for TableDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableDifference::Count { held, requested } => {
                write!(f, "{requested} entries where the kernel holds {held}")
            }
            TableDifference::Key {
                position,
                held,
                requested,
            } => write!(
                f,
                "entry {position} is leaf {:#x}.{} (flags {}) where the kernel holds {:#x}.{} (flags {})",
                requested.function,
                requested.index,
                requested.flags,
                held.function,
                held.index,
                held.flags
            ),
            TableDifference::Bits {
                leaf,
                subleaf,
                reg,
                held,
                requested,
            } => {
                let changed = held ^ requested;
                let names = catalog::describe_bits(*leaf, *subleaf, *reg, changed);
                let list: Vec<String> = names
                    .iter()
                    .map(|(bit, name)| {
                        let now = (requested >> bit) & 1;
                        format!("{name} {}->{now}", now ^ 1)
                    })
                    .collect();
                write!(
                    f,
                    "{}: {}",
                    catalog::position(*leaf, *subleaf, *reg),
                    list.join(" ")
                )
            }
        }
    }
}

impl TableDifference {
    /// The difference as changes from what the kernel holds to what was asked, one per feature
    /// bit, each `WHAT OLD → NEW`: `CPUID 0x7.0.ebx avx2 1 → 0`, `CPUID 0x1.0.ecx[31] 0 → 1`,
    /// `CPUID entries 57 → 56`, `CPUID entry 3 0x7.0 → 0x8.0`.
    pub fn changes(&self) -> Vec<String> {
        match self {
            TableDifference::Count { held, requested } => {
                vec![format!("CPUID entries {held} → {requested}")]
            }
            TableDifference::Key {
                position,
                held,
                requested,
            } => vec![format!(
                "CPUID entry {position} {:#x}.{} → {:#x}.{}",
                held.function, held.index, requested.function, requested.index
            )],
            TableDifference::Bits {
                leaf,
                subleaf,
                reg,
                held,
                requested,
            } => catalog::describe_bits(*leaf, *subleaf, *reg, held ^ requested)
                .into_iter()
                .map(|(bit, name)| {
                    let (old, new) = ((held >> bit) & 1, (requested >> bit) & 1);
                    let position = format!("{leaf:#x}.{subleaf}.{reg}");
                    if name.contains('[') {
                        format!("CPUID {position}[{bit}] {old} → {new}")
                    } else {
                        format!("CPUID {position} {name} {old} → {new}")
                    }
                })
                .collect(),
        }
    }
}

/// Compare `requested` with the table the kernel `held`, the way KVM's `kvm_cpuid_check_equal`
/// does after a vCPU has run: same count, same order, same keys and values once the runtime bits of
/// `requested` are refreshed from `held`. An empty result means "identical".
pub fn kernel_identity_differences(
    held: &CpuidTable,
    requested: &CpuidTable,
) -> Vec<TableDifference> {
    if held.len() != requested.len() {
        return vec![TableDifference::Count {
            held: held.len(),
            requested: requested.len(),
        }];
    }
    let mut out = Vec::new();
    for (position, (h, r)) in held.entries.iter().zip(&requested.entries).enumerate() {
        if (h.function, h.index, h.flags) != (r.function, r.index, r.flags) {
            out.push(TableDifference::Key {
                position,
                held: *h,
                requested: *r,
            });
            continue;
        }
        for reg in CpuidReg::ALL {
            let runtime = RUNTIME_BITS
                .iter()
                .filter(|(leaf, subleaf, rreg, _)| {
                    *rreg == reg && h.matches(*leaf, *subleaf) && h.function == *leaf
                })
                .fold(0u32, |acc, (_, _, _, mask)| acc | mask);
            let held_value = h.reg(reg);
            let requested_value = (r.reg(reg) & !runtime) | (held_value & runtime);
            if held_value != requested_value {
                out.push(TableDifference::Bits {
                    leaf: h.function,
                    subleaf: h.index,
                    reg,
                    held: held_value,
                    requested: requested_value,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    fn entry(function: u32, index: u32, ecx: u32, ebx: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            flags: 0,
            eax: 0,
            ebx,
            ecx,
            edx: 0,
        }
    }

    #[test]
    fn identical_tables_have_no_difference() {
        let t = CpuidTable::new(vec![entry(1, 0, 0x1234, 0), entry(7, 0, 0, 0xff)]);
        assert!(kernel_identity_differences(&t, &t.clone()).is_empty());
    }

    #[test]
    fn runtime_bits_are_ignored_like_the_kernel_does() {
        let held = CpuidTable::new(vec![entry(1, 0, 1 << 27, 0)]);
        let requested = CpuidTable::new(vec![entry(1, 0, 0, 0)]);
        assert!(kernel_identity_differences(&held, &requested).is_empty());
    }

    #[test]
    fn a_changed_bit_count_or_order_is_a_difference() {
        let held = CpuidTable::new(vec![entry(1, 0, 0, 0), entry(7, 0, 0, 1 << 16)]);
        let mut changed = held.clone();
        changed.entries[1].ebx = 0;
        let d = kernel_identity_differences(&held, &changed);
        assert_eq!(
            d,
            vec![TableDifference::Bits {
                leaf: 7,
                subleaf: 0,
                reg: CpuidReg::Ebx,
                held: 1 << 16,
                requested: 0
            }]
        );
        let mut swapped = held.clone();
        swapped.entries.swap(0, 1);
        assert!(matches!(
            kernel_identity_differences(&held, &swapped)[0],
            TableDifference::Key { .. }
        ));
        let shorter = CpuidTable::new(vec![entry(1, 0, 0, 0)]);
        assert!(matches!(
            kernel_identity_differences(&held, &shorter)[0],
            TableDifference::Count { .. }
        ));
    }
}
