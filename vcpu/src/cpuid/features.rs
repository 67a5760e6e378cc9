//! The catalog of named x86 CPUID features (placeholder; being filled in).

use super::CpuidReg;

/// A named CPUID feature bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub leaf: u32,
    pub subleaf: u32,
    pub reg: CpuidReg,
    pub bit: u8,
}

pub static CATALOG: &[Feature] = &[];

/// Each set bit of `mask` as `(bit, name)`, the name from the catalog or `leaf.subleaf.reg[bit]`.
pub fn describe_bits(leaf: u32, subleaf: u32, reg: CpuidReg, mask: u32) -> Vec<(u32, String)> {
    (0..32)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| {
            let name = CATALOG
                .iter()
                .find(|f| f.leaf == leaf && f.subleaf == subleaf && f.reg == reg && u32::from(f.bit) == bit)
                .map(|f| f.name.to_string())
                .unwrap_or_else(|| format!("{leaf:#x}.{subleaf}.{reg}[{bit}]"));
            (bit, name)
        })
        .collect()
}
