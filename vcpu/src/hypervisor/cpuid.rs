//! The CPUID table as the x86 calls carry it (`KVM_SET_CPUID2`, `KVM_GET_CPUID2`,
//! `KVM_GET_SUPPORTED_CPUID`): ordered `(leaf, subleaf) -> eax..edx` entries, KVM's lookup rule,
//! and the digest transcripts print.
//!
//! It is the payload of the boundary, not a model: what the entries mean (the feature catalog),
//! how a model is built from them and how two tables are compared live in the x86 model (`model::x86`),
//! which builds on these types. Plain serde data, so a trace recorded on an x86 host is replayed
//! on any other.

use crate::hypervisor::abi;
use serde::{Deserialize, Serialize};
use std::fmt;

/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` (sic): the entry's subleaf is part of its key.
pub const FLAG_SIGNIFICANT_INDEX: u32 = abi::KVM_CPUID_FLAG_SIGNIFCANT_INDEX;

/// The kernel's limit on table size (`KVM_MAX_CPUID_ENTRIES`).
pub const MAX_ENTRIES: usize = abi::KVM_MAX_CPUID_ENTRIES;

/// One of the four result registers of CPUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CpuidReg {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

impl CpuidReg {
    /// The four, in the order CPUID returns them (and tables and transcripts print them).
    pub const ALL: [CpuidReg; 4] = [CpuidReg::Eax, CpuidReg::Ebx, CpuidReg::Ecx, CpuidReg::Edx];

    /// The lower-case name transcripts use (`eax`).
    pub fn name(self) -> &'static str {
        match self {
            CpuidReg::Eax => "eax",
            CpuidReg::Ebx => "ebx",
            CpuidReg::Ecx => "ecx",
            CpuidReg::Edx => "edx",
        }
    }
}

impl fmt::Display for CpuidReg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `kvm_cpuid_entry2`, without its padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CpuidEntry {
    /// The leaf (EAX on input to CPUID).
    pub function: u32,
    /// The subleaf (ECX on input); part of the key only with [`FLAG_SIGNIFICANT_INDEX`].
    pub index: u32,
    /// `KVM_CPUID_FLAG_*` bits; vmfleet reads only [`FLAG_SIGNIFICANT_INDEX`].
    pub flags: u32,
    /// EAX as CPUID returns it.
    pub eax: u32,
    /// EBX as CPUID returns it.
    pub ebx: u32,
    /// ECX as CPUID returns it.
    pub ecx: u32,
    /// EDX as CPUID returns it.
    pub edx: u32,
}

impl CpuidEntry {
    /// The value of one result register.
    pub fn reg(&self, reg: CpuidReg) -> u32 {
        match reg {
            CpuidReg::Eax => self.eax,
            CpuidReg::Ebx => self.ebx,
            CpuidReg::Ecx => self.ecx,
            CpuidReg::Edx => self.edx,
        }
    }

    /// One result register, to change it in place.
    pub fn reg_mut(&mut self, reg: CpuidReg) -> &mut u32 {
        match reg {
            CpuidReg::Eax => &mut self.eax,
            CpuidReg::Ebx => &mut self.ebx,
            CpuidReg::Ecx => &mut self.ecx,
            CpuidReg::Edx => &mut self.edx,
        }
    }

    /// KVM's lookup rule (`cpuid_entry2_find`): the subleaf only counts when the entry says so.
    pub fn matches(&self, leaf: u32, subleaf: u32) -> bool {
        self.function == leaf && (self.flags & FLAG_SIGNIFICANT_INDEX == 0 || self.index == subleaf)
    }

    /// The subleaf a guest should use to reach this entry.
    pub fn probe_subleaf(&self) -> u32 {
        if self.flags & FLAG_SIGNIFICANT_INDEX != 0 {
            self.index
        } else {
            0
        }
    }
}

impl fmt::Display for CpuidEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#x}.{} flags={} eax={:#010x} ebx={:#010x} ecx={:#010x} edx={:#010x}",
            self.function, self.index, self.flags, self.eax, self.ebx, self.ecx, self.edx
        )
    }
}

/// A CPUID table in the order the kernel was given it (order matters to KVM's after-run equality
/// check, so it is preserved everywhere).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidTable {
    /// The entries, at most [`MAX_ENTRIES`] for the kernel to accept them (`E2BIG`).
    pub entries: Vec<CpuidEntry>,
}

/// The entries' words hashed two at a time (four writes an entry, not seven): a fleet interns
/// every table its vCPUs hold, and the derived hash was ~2% of a 1,000-VM replay's instructions.
/// Equal tables hash alike, as `Eq` needs: the same words in the same order.
impl std::hash::Hash for CpuidTable {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let pair = |high: u32, low: u32| (u64::from(high) << 32) | u64::from(low);
        state.write_usize(self.entries.len());
        for e in &self.entries {
            state.write_u64(pair(e.function, e.index));
            state.write_u64(pair(e.flags, e.eax));
            state.write_u64(pair(e.ebx, e.ecx));
            state.write_u32(e.edx);
        }
    }
}

impl CpuidTable {
    /// The table of these entries, in this order.
    pub fn new(entries: Vec<CpuidEntry>) -> Self {
        CpuidTable { entries }
    }

    /// How many entries (`kvm_cpuid2.nent`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry a guest's `CPUID(leaf, subleaf)` resolves to, by KVM's lookup rule.
    pub fn lookup(&self, leaf: u32, subleaf: u32) -> Option<&CpuidEntry> {
        self.entries.iter().find(|e| e.matches(leaf, subleaf))
    }

    /// Where in the table the entry [`CpuidTable::lookup`] finds is.
    pub fn position(&self, leaf: u32, subleaf: u32) -> Option<usize> {
        self.entries.iter().position(|e| e.matches(leaf, subleaf))
    }

    /// [`CpuidTable::lookup`], to change the entry in place.
    pub fn lookup_mut(&mut self, leaf: u32, subleaf: u32) -> Option<&mut CpuidEntry> {
        self.entries.iter_mut().find(|e| e.matches(leaf, subleaf))
    }

    /// A short, stable fingerprint of the whole table (order included), for transcripts.
    pub fn digest(&self) -> u32 {
        // One update for the whole table, from a copy on the heap: the CRC's per-call setup cost
        // more than the hashing when it ran per word, and still ~2% of a fleet replay (whose
        // transcript names every table's digest) when it ran per entry. Not a buffer on the
        // stack: this runs deep in every VM loop's stack, and 896 bytes of stack buffer here
        // made each of a 1,000-VM fleet's loop threads touch one more stack page.
        // Appended an entry at a time (28 bytes made on the stack), not a word at a time: 525
        // small appends' capacity checks cost more than the CRC.
        const ENTRY_BYTES: usize = 7 * 4;
        let mut bytes = Vec::with_capacity(self.entries.len() * ENTRY_BYTES);
        for e in &self.entries {
            let words = [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx];
            let mut entry = [0u8; ENTRY_BYTES];
            for (to, word) in entry.chunks_exact_mut(4).zip(words) {
                to.copy_from_slice(&word.to_le_bytes());
            }
            bytes.extend_from_slice(&entry);
        }
        crc32fast::hash(&bytes)
    }

    /// `(leaf, subleaf)` pairs a guest must execute to see every entry of this table.
    pub fn probe_points(&self) -> Vec<(u32, u32)> {
        self.entries
            .iter()
            .map(|e| (e.function, e.probe_subleaf()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn table() -> CpuidTable {
        let entry = |function, index| CpuidEntry {
            function,
            index,
            flags: 1,
            eax: 0x10 + function,
            ebx: 0x20 + index,
            ecx: 0x30,
            edx: 0x40,
        };
        CpuidTable::new(vec![entry(0, 0), entry(7, 0), entry(7, 1)])
    }

    /// Equal tables hash alike (what `Eq` needs of `Hash`), and a change to any one word of any
    /// entry, or to the entries' count, changes the hash.
    #[test]
    fn a_table_hashes_by_every_word_of_every_entry() {
        let hasher = std::hash::RandomState::new();
        let hash = |t: &CpuidTable| hasher.hash_one(t);
        assert_eq!(hash(&table()), hash(&table().clone()));
        for at in 0..table().len() {
            for word in 0..7 {
                let mut changed = table();
                let e = &mut changed.entries[at];
                let field = [
                    &mut e.function,
                    &mut e.index,
                    &mut e.flags,
                    &mut e.eax,
                    &mut e.ebx,
                    &mut e.ecx,
                    &mut e.edx,
                ];
                *field.into_iter().nth(word).unwrap() ^= 0x100;
                assert_ne!(changed, table());
                assert_ne!(hash(&changed), hash(&table()), "entry {at}, word {word}");
            }
        }
        let mut shorter = table();
        shorter.entries.pop();
        assert_ne!(hash(&shorter), hash(&table()));
    }
}
