//! Firecracker custom CPU templates to vmfleet CPU templates and back (`vmfleet template
//! import-firecracker` and `export-firecracker`).
//!
//! Import: x86 `cpuid_modifiers` → the template's raw `x86.cpuid` tri-state bits (modifiers of
//! one register merged in order; Firecracker has no names); arm64 `reg_modifiers` → the arm64
//! model's `registers` bitmaps (CPU-model registers only, as any template), `vcpu_features` word
//! 0 applied to Firecracker's default features (PSCI 0.2) → the VCPU_INIT features; firmware
//! registers Firecracker does not name are left as the host's (`unknown_registers =
//! "keep-host"`, what Firecracker does). `kvm_capabilities` and `msr_modifiers` are kept in the
//! template's `[firecracker]` table: vmfleet does not model MSRs, so each is a warning and a
//! refusal at run time.
//!
//! Export: named x86 features → their CPUID bits (raw bits, then `show` set, then `hide`
//! cleared: the order the model applies them); arm64 ID-register fields, hypercall services and
//! the PSCI version → register ids and bit positions merged with the raw `registers`; the
//! VCPU_INIT features → the bits that differ from Firecracker's default. What Firecracker cannot
//! express (`unknown_registers = "clear"` or `"refuse"`) is a warning. Leaf flags are KVM's (1
//! for the leaves it indexes by subleaf). Importing the export gives the same template, and
//! exporting an import gives JSON equivalent to the original ([`super::format::Canonical`]).

use super::format::{
    Bitmap, CpuidLeafModifier, FirecrackerTemplate, KvmCapability, MsrModifier, RegModifier,
    VcpuFeaturesModifier,
};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use vcpu::GuestArch;
use vcpu::hypervisor::abi::KVM_ARM_VCPU_POWER_OFF;
use vcpu::hypervisor::cpuid::CpuidReg;
use vcpu::model::arm64::{
    Arm64ModelSpec, FirmwareRegister, UnknownRegisterPolicy, VcpuFeature, VcpuFeatureSet,
};
use vcpu::model::template::unmodelled::MsrBits;
use vcpu::model::template::{CpuTemplate, Unmodelled};
use vcpu::model::tristate::TriState;
use vcpu::model::x86::catalog;
use vcpu::model::x86::model::{CpuidBits, X86CpuModel};

/// `kvm_vcpu_init.features[0]` Firecracker starts from (PSCI 0.2), which `vcpu_features` modify.
pub const FIRECRACKER_DEFAULT_FEATURES: u32 = super::fingerprint::FIRECRACKER_DEFAULT_INIT;

/// The leaves KVM flags `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` (indexed by subleaf): Firecracker's
/// `flags` on export.
const INDEXED_LEAVES: &[u32] = &[
    0x4,
    0x7,
    0xb,
    0xd,
    0xf,
    0x10,
    0x12,
    0x14,
    0x17,
    0x18,
    0x1d,
    0x1e,
    0x1f,
    0x20,
    0x23,
    0x24,
    0x8000_001d,
    0x8000_0020,
    0x8000_0026,
];

/// A conversion's result and what it could not carry over, one warning each.
#[derive(Debug)]
pub struct Converted<T> {
    /// The converted template.
    pub template: T,
    /// What the other format cannot say, or vmfleet does not model.
    pub warnings: Vec<String>,
}

fn tristate(width: u8, b: &Bitmap) -> TriState {
    let all = TriState::all_bits(width);
    TriState {
        width,
        mask: u64::try_from(b.mask & u128::from(all)).unwrap_or(all),
        value: u64::try_from(b.value & u128::from(all)).unwrap_or(all),
    }
}

fn bitmap(width: u32, t: &TriState) -> Bitmap {
    Bitmap {
        width,
        mask: u128::from(t.mask),
        value: u128::from(t.value),
    }
}

/// The vmfleet template named `name` that Firecracker template `fc` describes.
pub fn import(fc: &FirecrackerTemplate, name: &str) -> Result<Converted<CpuTemplate>> {
    let Some(arch) = fc.arch()? else {
        bail!(
            "the template has no modifiers (cpuid_modifiers, msr_modifiers: x86; reg_modifiers, \
             vcpu_features: arm64), so its architecture is unknown"
        );
    };
    let mut warnings = Vec::new();
    let mut template = CpuTemplate {
        name: name.to_string(),
        description: Some("imported from a Firecracker CPU template".into()),
        arch,
        x86: X86CpuModel::default(),
        arm64: Arm64ModelSpec::default(),
        firecracker: Unmodelled {
            kvm_capabilities: fc.kvm_capabilities.iter().map(|c| c.to_string()).collect(),
            msrs: Vec::new(),
        },
    };
    match arch {
        GuestArch::X86_64 => {
            let mut bits: BTreeMap<(u32, u32, CpuidReg), TriState> = BTreeMap::new();
            for (i, leaf) in fc.cpuid_modifiers.iter().enumerate() {
                let expected = u32::from(INDEXED_LEAVES.contains(&leaf.leaf));
                if leaf.flags != expected {
                    warnings.push(format!(
                        "cpuid_modifiers[{i}] (leaf {:#x}): flags {} dropped; vmfleet keys a leaf \
                         by KVM's own flags ({expected} for this leaf)",
                        leaf.leaf, leaf.flags
                    ));
                }
                for (reg, b) in &leaf.modifiers {
                    let entry = bits
                        .entry((leaf.leaf, leaf.subleaf, *reg))
                        .or_insert_with(|| TriState::host(32));
                    let new = tristate(32, b);
                    entry.mask |= new.mask;
                    entry.value = entry.value & !new.mask | new.value;
                }
            }
            template.x86.cpuid = bits
                .into_iter()
                .filter(|(_, b)| !b.is_host())
                .map(|((leaf, subleaf, register), bits)| CpuidBits {
                    leaf,
                    subleaf,
                    register,
                    bits,
                })
                .collect();
            for m in &fc.msr_modifiers {
                let msr = MsrBits {
                    addr: m.addr,
                    bits: tristate(64, &m.bitmap),
                };
                warnings.push(
                    Unmodelled {
                        kvm_capabilities: Vec::new(),
                        msrs: vec![msr],
                    }
                    .unsupported()
                    .join(""),
                );
                template.firecracker.msrs.push(msr);
            }
        }
        GuestArch::Aarch64 => {
            let spec = &mut template.arm64;
            spec.unknown_registers = UnknownRegisterPolicy::KeepHost;
            let mut words: BTreeMap<u32, Bitmap> = BTreeMap::new();
            for w in &fc.vcpu_features {
                let entry = words.entry(w.index).or_insert(Bitmap {
                    width: 32,
                    mask: 0,
                    value: 0,
                });
                *entry = entry.then(&w.bitmap);
            }
            for (index, word) in &words {
                if *index != 0 && word.mask != 0 {
                    bail!(
                        "vcpu_features: word {index} sets bits; KVM defines only word 0 of \
                         kvm_vcpu_init.features"
                    );
                }
            }
            if let Some(word) = words.get(&0) {
                if word.mask & 1 << KVM_ARM_VCPU_POWER_OFF != 0 {
                    bail!(
                        "vcpu_features[0]: bit {KVM_ARM_VCPU_POWER_OFF} (POWER_OFF) is how \
                         Firecracker starts secondary vCPUs, not a CPU-model feature"
                    );
                }
                let bits = u32::try_from(
                    word.apply(u128::from(FIRECRACKER_DEFAULT_FEATURES)) & 0xffff_ffff,
                )
                .unwrap_or(FIRECRACKER_DEFAULT_FEATURES);
                spec.features = feature_set(bits)?;
            }
            let mut registers: BTreeMap<u64, Bitmap> = BTreeMap::new();
            for r in &fc.reg_modifiers {
                let entry = registers.entry(r.addr).or_insert(Bitmap {
                    width: 128,
                    mask: 0,
                    value: 0,
                });
                *entry = entry.then(&r.bitmap);
            }
            for (id, b) in registers {
                if b.mask == 0 {
                    continue;
                }
                spec.registers
                    .set_bits(id, tristate(64, &b))
                    .with_context(|| format!("reg_modifiers: register {id:#018x}"))?;
            }
            spec.check().context("the arm64 model it gives")?;
        }
    }
    // What is written must read back as the same template (names, values, every rule).
    let text = template.to_toml();
    let again = CpuTemplate::parse(&text, name, name)
        .map_err(|e| anyhow::anyhow!("the imported template does not read back: {e}"))?;
    if again != template {
        bail!("the imported template does not read back as itself:\n{text}");
    }
    Ok(Converted { template, warnings })
}

/// The VCPU_INIT features `bits` are, each a feature vmfleet knows.
fn feature_set(bits: u32) -> Result<VcpuFeatureSet> {
    let mut set = VcpuFeatureSet::EMPTY;
    for bit in 0..32 {
        if bits & 1 << bit == 0 {
            continue;
        }
        let Some(feature) = VcpuFeature::ALL.into_iter().find(|f| f.bit() == bit) else {
            bail!("vcpu_features[0]: bit {bit} is no VCPU_INIT feature KVM defines");
        };
        set = set.with(feature);
    }
    Ok(set)
}

/// The Firecracker template vmfleet template `t` describes.
pub fn export(t: &CpuTemplate) -> Result<Converted<FirecrackerTemplate>> {
    let mut warnings = Vec::new();
    let mut out = FirecrackerTemplate::default();
    for (i, cap) in t.firecracker.kvm_capabilities.iter().enumerate() {
        let digits = cap.strip_prefix('!').unwrap_or(cap);
        let number: u32 = digits
            .parse()
            .with_context(|| format!("firecracker.kvm_capabilities[{i}]: {cap:?}"))?;
        out.kvm_capabilities.push(if cap.starts_with('!') {
            KvmCapability::Drop(number)
        } else {
            KvmCapability::Require(number)
        });
    }
    match t.arch {
        GuestArch::X86_64 => {
            let mut bits: BTreeMap<(u32, u32, CpuidReg), TriState> = t
                .x86
                .cpuid
                .iter()
                .map(|b| ((b.leaf, b.subleaf, b.register), b.bits))
                .collect();
            for (names, on) in [(&t.x86.show, true), (&t.x86.hide, false)] {
                for name in names {
                    let Some(f) = catalog::by_name(name) else {
                        bail!("x86 feature {name:?} is not in vmfleet's catalog");
                    };
                    bits.entry((f.leaf, f.subleaf, f.reg))
                        .or_insert_with(|| TriState::host(32))
                        .set_bit(u32::from(f.bit), on);
                }
            }
            let mut leaves: BTreeMap<(u32, u32), Vec<(CpuidReg, Bitmap)>> = BTreeMap::new();
            for ((leaf, subleaf, reg), b) in bits {
                leaves
                    .entry((leaf, subleaf))
                    .or_default()
                    .push((reg, bitmap(32, &b)));
            }
            out.cpuid_modifiers = leaves
                .into_iter()
                .map(|((leaf, subleaf), modifiers)| CpuidLeafModifier {
                    leaf,
                    subleaf,
                    flags: u32::from(INDEXED_LEAVES.contains(&leaf)),
                    modifiers,
                })
                .collect();
            for msr in &t.firecracker.msrs {
                out.msr_modifiers.push(MsrModifier {
                    addr: msr.addr,
                    bitmap: bitmap(64, &msr.bits),
                });
            }
            warnings.extend(t.firecracker.unsupported());
        }
        GuestArch::Aarch64 => export_arm64(&t.arm64, &mut out, &mut warnings),
    }
    Ok(Converted {
        template: out,
        warnings,
    })
}

fn export_arm64(spec: &Arm64ModelSpec, out: &mut FirecrackerTemplate, warnings: &mut Vec<String>) {
    let changed = spec.features.bits() ^ FIRECRACKER_DEFAULT_FEATURES;
    if changed != 0 {
        out.vcpu_features.push(VcpuFeaturesModifier {
            index: 0,
            bitmap: Bitmap {
                width: 32,
                mask: u128::from(changed),
                value: u128::from(spec.features.bits() & changed),
            },
        });
    }
    let mut registers: BTreeMap<u64, TriState> = spec.registers.iter().collect();
    let mut fix = |id: u64, mask: u64, value: u64| {
        let entry = registers.entry(id).or_insert_with(|| TriState::host(64));
        entry.mask |= mask;
        entry.value = entry.value & !mask | value & mask;
    };
    for (field, value) in spec.id_registers.iter() {
        let f = field.field();
        fix(field.register().kvm_reg_id(), f.mask(), value << f.shift);
    }
    for service in vcpu::model::arm64::HypercallService::ALL {
        if let Some(on) = spec.hypercalls.get(service) {
            let bit = 1u64 << service.bit();
            fix(service.register().id(), bit, if on { bit } else { 0 });
        }
    }
    if let Some(version) = spec.psci_version {
        fix(
            FirmwareRegister::PsciVersion.id(),
            u64::MAX,
            version.reg_value(),
        );
    }
    match spec.unknown_registers {
        UnknownRegisterPolicy::KeepHost => {}
        policy => warnings.push(format!(
            "unknown_registers = \"{policy}\" has no Firecracker form: Firecracker leaves the \
             firmware registers vmfleet does not know as the host has them"
        )),
    }
    out.reg_modifiers = registers
        .into_iter()
        .filter(|(_, b)| !b.is_host())
        .map(|(addr, b)| RegModifier {
            addr,
            bitmap: bitmap(128, &b),
        })
        .collect();
}
