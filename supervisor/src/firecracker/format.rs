//! Firecracker's custom CPU template JSON (`docs/cpu_templates/schema.json` in Firecracker) and
//! its fingerprint document (`cpu-template-helper fingerprint dump`), as data: a strict parser
//! and a serializer in Firecracker's shape, and an order-insensitive canonical form to compare
//! two templates by what they do.
//!
//! The rules are Firecracker's: numbers are strings with a `0x` or `0b` prefix; a bitmap is `0b`
//! then `0` (clear), `1` (set) or `x` (keep the host's bit), `_` a separator, at most as many
//! bits as the register has (shorter ones are padded with `x` on the left); capabilities are
//! decimal strings, `!` before one drops it from Firecracker's built-in checks. Unknown keys are
//! refused. Every error names the key path (`cpuid_modifiers[3].modifiers[1].bitmap`) and, for a
//! bitmap, the 1-based position of the character at fault. The serializer writes bitmaps at
//! Firecracker's widths (32 for CPUID and VCPU_INIT words, 64 for MSRs, 128 for ONE_REG
//! registers), as its own dump does.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use vcpu::GuestArch;
use vcpu::hypervisor::cpuid::CpuidReg;

/// A tri-state bitmap: the bits it gives (`mask`) and their values; every other bit is the
/// host's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bitmap {
    /// How many bits the written form has (32, 64 or 128).
    pub width: u32,
    /// The bits the bitmap gives (`0` or `1`); the others are `x`.
    pub mask: u128,
    /// Their values (only bits in `mask` are set).
    pub value: u128,
}

fn low_bits(width: u32) -> u128 {
    if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    }
}

impl Bitmap {
    /// Parse Firecracker's written form `text` of a register of `width` bits.
    pub fn parse(text: &str, width: u32) -> Result<Bitmap> {
        let Some(digits) = text.strip_prefix("0b") else {
            bail!("{text:?} is not a bitmap: it does not start with 0b");
        };
        let mut bits: Vec<(usize, char)> = Vec::new();
        for (i, c) in digits.chars().enumerate() {
            match c {
                '_' => {}
                '0' | '1' | 'x' => bits.push((i + 3, c)),
                other => bail!(
                    "{text:?}: character {} is {other:?}; a bitmap has only 0, 1, x and _",
                    i + 3
                ),
            }
        }
        if bits.is_empty() {
            bail!("{text:?} is an empty bitmap: it gives no bit (write x for a bit to keep)");
        }
        if bits.len() > width as usize {
            bail!(
                "{text:?} has {} bits, over the {width} of its register (character {} is the \
                 first one too many)",
                bits.len(),
                bits[0].0
            );
        }
        let (mut mask, mut value) = (0u128, 0u128);
        for (bit, (_, c)) in bits.iter().rev().enumerate() {
            match c {
                '0' => mask |= 1 << bit,
                '1' => {
                    mask |= 1 << bit;
                    value |= 1 << bit;
                }
                _ => {}
            }
        }
        Ok(Bitmap { width, mask, value })
    }

    /// The bitmap that gives every bit of a `width`-bit register the value `value`.
    pub fn full(value: u128, width: u32) -> Bitmap {
        Bitmap {
            width,
            mask: low_bits(width),
            value: value & low_bits(width),
        }
    }

    /// Whether it gives every bit (no `x`), as a fingerprint's bitmaps do.
    pub fn is_full(&self) -> bool {
        self.mask == low_bits(self.width)
    }

    /// The value a register holding `host` gets.
    pub fn apply(&self, host: u128) -> u128 {
        host & !self.mask | self.value
    }

    /// This bitmap with `later`'s bits over it (two modifiers of one register, in order).
    pub fn then(&self, later: &Bitmap) -> Bitmap {
        Bitmap {
            width: self.width.max(later.width),
            mask: self.mask | later.mask,
            value: self.value & !later.mask | later.value,
        }
    }
}

impl fmt::Display for Bitmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0b")?;
        for bit in (0..self.width).rev() {
            let c = match (self.mask >> bit & 1, self.value >> bit & 1) {
                (0, _) => 'x',
                (_, 0) => '0',
                _ => '1',
            };
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// One entry of `kvm_capabilities`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KvmCapability {
    /// `"171"`: Firecracker also checks that the host has this capability.
    Require(u32),
    /// `"!172"`: Firecracker drops this one from its built-in checks.
    Drop(u32),
}

impl KvmCapability {
    fn parse(text: &str) -> Result<KvmCapability> {
        let (drop, digits) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let number: u32 = digits.parse().with_context(|| {
            format!("{text:?} is not a capability: a decimal number, with ! before it to drop it")
        })?;
        Ok(if drop {
            KvmCapability::Drop(number)
        } else {
            KvmCapability::Require(number)
        })
    }
}

impl fmt::Display for KvmCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvmCapability::Require(n) => write!(f, "{n}"),
            KvmCapability::Drop(n) => write!(f, "!{n}"),
        }
    }
}

/// One CPUID leaf's modifiers (x86).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuidLeafModifier {
    /// The leaf (function).
    pub leaf: u32,
    /// The subleaf (index).
    pub subleaf: u32,
    /// `KVM_CPUID_FLAG_*` bits (1: the leaf is indexed by its subleaf).
    pub flags: u32,
    /// Each register's bitmap, in the document's order.
    pub modifiers: Vec<(CpuidReg, Bitmap)>,
}

/// One MSR's bitmap (x86; vmfleet does not model MSRs, it keeps them to say so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrModifier {
    /// The MSR's address.
    pub addr: u32,
    /// Its 64-bit bitmap.
    pub bitmap: Bitmap,
}

/// One `kvm_vcpu_init.features` word's bitmap (arm64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuFeaturesModifier {
    /// The word (0 to 6; kernels use only 0).
    pub index: u32,
    /// Its 32-bit bitmap.
    pub bitmap: Bitmap,
}

/// One ONE_REG register's bitmap (arm64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegModifier {
    /// The KVM register id.
    pub addr: u64,
    /// Its bitmap, written 128 bits wide; it gives no bit above the register's size.
    pub bitmap: Bitmap,
}

/// A Firecracker custom CPU template (or a fingerprint's `guest_cpu_config`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirecrackerTemplate {
    /// `kvm_capabilities`.
    pub kvm_capabilities: Vec<KvmCapability>,
    /// `cpuid_modifiers` (x86).
    pub cpuid_modifiers: Vec<CpuidLeafModifier>,
    /// `msr_modifiers` (x86).
    pub msr_modifiers: Vec<MsrModifier>,
    /// `vcpu_features` (arm64).
    pub vcpu_features: Vec<VcpuFeaturesModifier>,
    /// `reg_modifiers` (arm64).
    pub reg_modifiers: Vec<RegModifier>,
}

/// The JSON shape, strings as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kvm_capabilities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpuid_modifiers: Option<Vec<RawCpuidLeaf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    msr_modifiers: Option<Vec<RawAddrBitmap>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vcpu_features: Option<Vec<RawVcpuFeatures>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reg_modifiers: Option<Vec<RawAddrBitmap>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawCpuidLeaf {
    leaf: String,
    subleaf: String,
    flags: u32,
    modifiers: Vec<RawCpuidReg>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawCpuidReg {
    register: String,
    bitmap: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawAddrBitmap {
    addr: String,
    bitmap: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawVcpuFeatures {
    index: u32,
    bitmap: String,
}

/// A number as Firecracker writes one in a template: `0x…` or `0b…`.
pub fn parse_number(text: &str) -> Result<u64> {
    let parsed = if let Some(hex) = text.strip_prefix("0x") {
        u64::from_str_radix(&hex.replace('_', ""), 16)
    } else if let Some(bin) = text.strip_prefix("0b") {
        u64::from_str_radix(&bin.replace('_', ""), 2)
    } else {
        bail!("{text:?} is not a number: write it with 0x (hex) or 0b (binary) before it");
    };
    parsed.with_context(|| format!("{text:?} is not a 64-bit number"))
}

fn number_u32(text: &str) -> Result<u32> {
    let n = parse_number(text)?;
    u32::try_from(n).with_context(|| format!("{text:?} is over 32 bits"))
}

fn cpuid_reg(name: &str) -> Result<CpuidReg> {
    CpuidReg::ALL
        .into_iter()
        .find(|r| r.name() == name)
        .with_context(|| format!("{name:?} is not a CPUID register (eax, ebx, ecx or edx)"))
}

/// The size in bits of ONE_REG register `id` (its `KVM_REG_SIZE` field).
pub fn reg_bits(id: u64) -> u32 {
    8 << ((id >> 52) & 0xf)
}

impl RawTemplate {
    fn typed(self, at: &str) -> Result<FirecrackerTemplate> {
        let mut template = FirecrackerTemplate::default();
        for (i, cap) in self.kvm_capabilities.unwrap_or_default().iter().enumerate() {
            template.kvm_capabilities.push(
                KvmCapability::parse(cap).with_context(|| format!("{at}kvm_capabilities[{i}]"))?,
            );
        }
        for (i, leaf) in self
            .cpuid_modifiers
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let here = format!("{at}cpuid_modifiers[{i}]");
            let mut modifiers = Vec::new();
            for (j, m) in leaf.modifiers.iter().enumerate() {
                let reg = cpuid_reg(&m.register)
                    .with_context(|| format!("{here}.modifiers[{j}].register"))?;
                let bitmap = Bitmap::parse(&m.bitmap, 32)
                    .with_context(|| format!("{here}.modifiers[{j}].bitmap"))?;
                modifiers.push((reg, bitmap));
            }
            template.cpuid_modifiers.push(CpuidLeafModifier {
                leaf: number_u32(&leaf.leaf).with_context(|| format!("{here}.leaf"))?,
                subleaf: number_u32(&leaf.subleaf).with_context(|| format!("{here}.subleaf"))?,
                flags: leaf.flags,
                modifiers,
            });
        }
        for (i, msr) in self.msr_modifiers.unwrap_or_default().iter().enumerate() {
            let here = format!("{at}msr_modifiers[{i}]");
            template.msr_modifiers.push(MsrModifier {
                addr: number_u32(&msr.addr).with_context(|| format!("{here}.addr"))?,
                bitmap: Bitmap::parse(&msr.bitmap, 64).with_context(|| format!("{here}.bitmap"))?,
            });
        }
        for (i, word) in self.vcpu_features.unwrap_or_default().iter().enumerate() {
            let here = format!("{at}vcpu_features[{i}]");
            if word.index > 6 {
                bail!(
                    "{here}.index: {} is not a word of kvm_vcpu_init.features (0 to 6)",
                    word.index
                );
            }
            template.vcpu_features.push(VcpuFeaturesModifier {
                index: word.index,
                bitmap: Bitmap::parse(&word.bitmap, 32)
                    .with_context(|| format!("{here}.bitmap"))?,
            });
        }
        for (i, reg) in self.reg_modifiers.unwrap_or_default().iter().enumerate() {
            let here = format!("{at}reg_modifiers[{i}]");
            let addr = parse_number(&reg.addr).with_context(|| format!("{here}.addr"))?;
            let mut bitmap =
                Bitmap::parse(&reg.bitmap, 128).with_context(|| format!("{here}.bitmap"))?;
            // Firecracker writes every register 128 bits wide; the bits above its size must
            // be 0 or x.
            let bits = reg_bits(addr);
            let size = low_bits(bits);
            if bitmap.value & !size != 0 {
                bail!(
                    "{here}.bitmap: sets bit {}, over the {bits} bits of register {addr:#018x}",
                    127 - (bitmap.value & !size).leading_zeros()
                );
            }
            bitmap.mask &= size;
            template.reg_modifiers.push(RegModifier { addr, bitmap });
        }
        Ok(template)
    }
}

impl FirecrackerTemplate {
    /// Parse template JSON `text`; errors name the key path.
    pub fn parse(text: &str) -> Result<FirecrackerTemplate> {
        let raw: RawTemplate =
            serde_json::from_str(text).context("not a Firecracker CPU template")?;
        raw.typed("")
    }

    /// The template in `value` (a JSON object); errors name the key path, prefixed with `at`
    /// (`"guest_cpu_config."` inside a fingerprint).
    pub fn from_value(value: serde_json::Value, at: &str) -> Result<FirecrackerTemplate> {
        let raw: RawTemplate = serde_json::from_value(value).with_context(|| {
            format!(
                "{}: not a Firecracker CPU template",
                at.trim_end_matches('.')
            )
        })?;
        raw.typed(at)
    }

    /// The architecture its modifiers are for: `None` when it has only capabilities; an error
    /// when it mixes x86 and arm64 modifiers.
    pub fn arch(&self) -> Result<Option<GuestArch>> {
        let x86 = !self.cpuid_modifiers.is_empty() || !self.msr_modifiers.is_empty();
        let arm64 = !self.vcpu_features.is_empty() || !self.reg_modifiers.is_empty();
        match (x86, arm64) {
            (true, true) => bail!(
                "the template mixes x86 modifiers (cpuid_modifiers, msr_modifiers) and arm64 ones \
                 (vcpu_features, reg_modifiers)"
            ),
            (true, false) => Ok(Some(GuestArch::X86_64)),
            (false, true) => Ok(Some(GuestArch::Aarch64)),
            (false, false) => Ok(None),
        }
    }

    /// The JSON document in Firecracker's shape: `kvm_capabilities` and the keys of `arch`
    /// (x86: `cpuid_modifiers`, `msr_modifiers`; arm64: `vcpu_features`, `reg_modifiers`).
    pub fn to_json(&self, arch: GuestArch) -> Result<serde_json::Value> {
        serde_json::to_value(self.raw(arch)).context("serializing a Firecracker CPU template")
    }

    /// [`Self::to_json`] as pretty text with Firecracker's key order, ending in a newline.
    pub fn to_json_text(&self, arch: GuestArch) -> Result<String> {
        serde_json::to_string_pretty(&self.raw(arch))
            .map(|text| text + "\n")
            .context("serializing a Firecracker CPU template")
    }

    fn raw(&self, arch: GuestArch) -> RawTemplate {
        let mut raw = RawTemplate {
            kvm_capabilities: Some(
                self.kvm_capabilities
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
            ),
            ..RawTemplate::default()
        };
        match arch {
            GuestArch::X86_64 => {
                raw.cpuid_modifiers = Some(
                    self.cpuid_modifiers
                        .iter()
                        .map(|l| RawCpuidLeaf {
                            leaf: format!("{:#x}", l.leaf),
                            subleaf: format!("{:#x}", l.subleaf),
                            flags: l.flags,
                            modifiers: l
                                .modifiers
                                .iter()
                                .map(|(reg, bitmap)| RawCpuidReg {
                                    register: reg.name().to_string(),
                                    bitmap: bitmap.to_string(),
                                })
                                .collect(),
                        })
                        .collect(),
                );
                raw.msr_modifiers = Some(
                    self.msr_modifiers
                        .iter()
                        .map(|m| RawAddrBitmap {
                            addr: format!("{:#x}", m.addr),
                            bitmap: m.bitmap.to_string(),
                        })
                        .collect(),
                );
            }
            GuestArch::Aarch64 => {
                raw.vcpu_features = Some(
                    self.vcpu_features
                        .iter()
                        .map(|w| RawVcpuFeatures {
                            index: w.index,
                            bitmap: w.bitmap.to_string(),
                        })
                        .collect(),
                );
                raw.reg_modifiers = Some(
                    self.reg_modifiers
                        .iter()
                        .map(|r| RawAddrBitmap {
                            addr: format!("{:#018x}", r.addr),
                            bitmap: r.bitmap.to_string(),
                        })
                        .collect(),
                );
            }
        }
        raw
    }

    /// What the template does, order-insensitive: modifiers of one register merged in order,
    /// bitmaps that give no bit dropped.
    pub fn canonical(&self) -> Canonical {
        let mut out = Canonical {
            kvm_capabilities: self.kvm_capabilities.iter().copied().collect(),
            ..Canonical::default()
        };
        fn merge<K: Ord>(map: &mut BTreeMap<K, (u128, u128)>, key: K, b: &Bitmap) {
            let entry = map.entry(key).or_insert((0, 0));
            entry.0 |= b.mask;
            entry.1 = entry.1 & !b.mask | b.value;
        }
        for leaf in &self.cpuid_modifiers {
            for (reg, bitmap) in &leaf.modifiers {
                merge(&mut out.cpuid, (leaf.leaf, leaf.subleaf, *reg), bitmap);
            }
            if leaf.modifiers.iter().any(|(_, b)| b.mask != 0) {
                out.cpuid_flags
                    .insert((leaf.leaf, leaf.subleaf), leaf.flags);
            }
        }
        for m in &self.msr_modifiers {
            merge(&mut out.msrs, m.addr, &m.bitmap);
        }
        for w in &self.vcpu_features {
            merge(&mut out.vcpu_features, w.index, &w.bitmap);
        }
        for r in &self.reg_modifiers {
            merge(&mut out.registers, r.addr, &r.bitmap);
        }
        out.cpuid.retain(|_, (mask, _)| *mask != 0);
        out.msrs.retain(|_, (mask, _)| *mask != 0);
        out.vcpu_features.retain(|_, (mask, _)| *mask != 0);
        out.registers.retain(|_, (mask, _)| *mask != 0);
        out
    }
}

/// A template's effect, for comparing two templates by what they do (`(mask, value)` per
/// register).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Canonical {
    /// The capability entries.
    pub kvm_capabilities: BTreeSet<KvmCapability>,
    /// Each CPUID register's bits, by (leaf, subleaf, register).
    pub cpuid: BTreeMap<(u32, u32, CpuidReg), (u128, u128)>,
    /// Each modified leaf's flags.
    pub cpuid_flags: BTreeMap<(u32, u32), u32>,
    /// Each MSR's bits.
    pub msrs: BTreeMap<u32, (u128, u128)>,
    /// Each `kvm_vcpu_init.features` word's bits.
    pub vcpu_features: BTreeMap<u32, (u128, u128)>,
    /// Each ONE_REG register's bits.
    pub registers: BTreeMap<u64, (u128, u128)>,
}

/// A Firecracker fingerprint (`cpu-template-helper fingerprint dump`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirecrackerFingerprint {
    /// The helper's version.
    pub firecracker_version: String,
    /// The host's kernel release.
    pub kernel_version: String,
    /// x86: `/proc/cpuinfo`'s microcode; arm64: the host's REVIDR_EL1.
    pub microcode_version: String,
    /// The DMI BIOS version.
    pub bios_version: String,
    /// The DMI BIOS release.
    pub bios_revision: String,
    /// The guest's CPU configuration, every bitmap fully given.
    pub guest_cpu_config: FirecrackerTemplate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFingerprint {
    firecracker_version: String,
    kernel_version: String,
    microcode_version: String,
    bios_version: String,
    bios_revision: String,
    guest_cpu_config: serde_json::Value,
}

impl FirecrackerFingerprint {
    /// Whether JSON `value` looks like a Firecracker fingerprint (it has `firecracker_version`
    /// and `guest_cpu_config`).
    pub fn detect(value: &serde_json::Value) -> bool {
        value.get("firecracker_version").is_some() && value.get("guest_cpu_config").is_some()
    }

    /// The fingerprint in `value`; every bitmap of its configuration must give every bit.
    pub fn from_value(value: serde_json::Value) -> Result<FirecrackerFingerprint> {
        let raw: RawFingerprint = serde_json::from_value(value).context("its top-level keys")?;
        let config = FirecrackerTemplate::from_value(raw.guest_cpu_config, "guest_cpu_config.")?;
        let partial = |what: String| {
            anyhow::anyhow!(
                "guest_cpu_config.{what}: a fingerprint's bitmaps give every bit, this one keeps \
                 some of the host's (x)"
            )
        };
        for (i, leaf) in config.cpuid_modifiers.iter().enumerate() {
            for (j, (_, b)) in leaf.modifiers.iter().enumerate() {
                if !b.is_full() {
                    return Err(partial(format!(
                        "cpuid_modifiers[{i}].modifiers[{j}].bitmap"
                    )));
                }
            }
        }
        for (i, m) in config.msr_modifiers.iter().enumerate() {
            if !m.bitmap.is_full() {
                return Err(partial(format!("msr_modifiers[{i}].bitmap")));
            }
        }
        for (i, r) in config.reg_modifiers.iter().enumerate() {
            if r.bitmap.mask != low_bits(reg_bits(r.addr).min(128)) {
                return Err(partial(format!("reg_modifiers[{i}].bitmap")));
            }
        }
        Ok(FirecrackerFingerprint {
            firecracker_version: raw.firecracker_version,
            kernel_version: raw.kernel_version,
            microcode_version: raw.microcode_version,
            bios_version: raw.bios_version,
            bios_revision: raw.bios_revision,
            guest_cpu_config: config,
        })
    }
}

#[cfg(test)]
mod tests;
