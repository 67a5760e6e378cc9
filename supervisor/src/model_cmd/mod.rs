//! The model backend's commands: `vmfleet replay --model FP TRACE` ([`replay`]), `vmfleet
//! model judge FP` ([`judge`]) and `vmfleet run --model FP SPEC` ([`run`], over the model
//! backend, [`backend`]), and reading a fingerprint document (schema
//! `vmfleet.fingerprint.v1`, as `vmfleet trace fingerprint --json` or `vmfleet host
//! --fingerprint --json` print it, or a Firecracker fingerprint, read as a partial host) into the
//! engine's facts ([`load_facts`]).
//!
//! The answers come from `vcpu::model::engine`, a pure state machine: no `/dev/kvm` is needed.

pub mod backend;
pub mod judge;
pub mod replay;
pub mod run;

use crate::exit::{Status, StatusExt};
use crate::fingerprint::FINGERPRINT_SCHEMA;
use crate::firecracker::fingerprint::host_from_firecracker;
use crate::firecracker::format::FirecrackerFingerprint;
use anyhow::{Context, Result, bail};
use recorder::{Capability, HostFingerprint};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use vcpu::GuestArch;
use vcpu::hypervisor::cpuid::{CpuidEntry, CpuidReg, CpuidTable};
use vcpu::model::arm64::host::KernelProbes;
use vcpu::model::engine::{
    Arm64HostFacts, Arm64InitFacts, CpuidRewrite, HostFacts, X86HostFacts, without_caller_apic_id,
};

/// The parts of a fingerprint document the engine answers from (every other field is ignored).
#[derive(Deserialize)]
struct Document {
    schema: String,
    arch: String,
    kernel_release: String,
    kvm_module: Option<String>,
    cpu: Cpu,
    microcode: Option<String>,
    kvm_api_version: Option<u32>,
    capabilities: Vec<Capability>,
    x86: Option<X86Section>,
    arm64: Option<Arm64Section>,
}

#[derive(Deserialize)]
struct Cpu {
    vendor: String,
    family: u32,
    model: u32,
    stepping: u32,
    model_name: String,
}

#[derive(Deserialize)]
struct X86Section {
    supported_cpuid: Option<CpuidSummary>,
    #[serde(default)]
    emulated_cpuid: Option<CpuidSummary>,
    host_rewrites: Option<HostRewrites>,
    #[serde(default)]
    forced_bits: Option<Vec<ForcedBitDoc>>,
}

/// A bit the host holds at one value whatever is written (`x86.forced_bits`).
#[derive(Deserialize)]
struct ForcedBitDoc {
    leaf: u32,
    subleaf: u32,
    reg: String,
    bit: u32,
    value: u32,
}

#[derive(Deserialize)]
struct CpuidSummary {
    table: Vec<CpuidEntry>,
}

#[derive(Deserialize)]
struct HostRewrites {
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    leaf: u32,
    subleaf: u32,
    reg: String,
    bit: Option<u32>,
    to: u64,
}

#[derive(Deserialize)]
struct Arm64Section {
    preferred_target: Option<u32>,
    vcpu_init_features: Option<InitFeatures>,
    reg_list: Option<RegList>,
    limits: Vec<RegValue>,
    firmware: Vec<RegValue>,
    writable_masks: Option<Vec<String>>,
    #[serde(default)]
    cache_geometry: Vec<RegValue>,
    #[serde(default)]
    other_vcpu_inits: Vec<OtherInit>,
    #[serde(default)]
    kernel_probes: Option<KernelProbesSection>,
}

#[derive(Deserialize)]
struct KernelProbesSection {
    el_floor: Option<bool>,
    #[serde(default)]
    debug_ver_floor: Option<bool>,
    #[serde(default)]
    pmu_imp_def: Option<vcpu::model::arm64::host::PmuImpDef>,
}

#[derive(Deserialize)]
struct OtherInit {
    vcpu_init_features: InitFeatures,
    reg_list: Option<RegList>,
    values: Vec<RegValue>,
}

#[derive(Deserialize)]
struct InitFeatures {
    bits: String,
}

#[derive(Deserialize)]
struct RegList {
    ids: Vec<String>,
}

#[derive(Deserialize)]
struct RegValue {
    id: String,
    value: String,
}

fn hex(text: &str, what: &str) -> Result<u64> {
    let digits = text
        .strip_prefix("0x")
        .with_context(|| format!("{what}: {text:?} is not a 0x-prefixed hex number"))?;
    u64::from_str_radix(digits, 16).with_context(|| format!("{what}: {text:?} is not a hex number"))
}

fn register(name: &str, what: &str) -> Result<CpuidReg> {
    Ok(match name {
        "eax" => CpuidReg::Eax,
        "ebx" => CpuidReg::Ebx,
        "ecx" => CpuidReg::Ecx,
        "edx" => CpuidReg::Edx,
        other => bail!("{what}: unknown register {other:?} (eax, ebx, ecx or edx)"),
    })
}

fn x86_facts(section: Option<X86Section>) -> Result<X86HostFacts> {
    let Some(section) = section else {
        return Ok(X86HostFacts::default());
    };
    let mut rewrites = Vec::new();
    for (i, change) in section
        .host_rewrites
        .map(|r| r.changes)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let what = format!("x86.host_rewrites.changes[{i}]");
        let register = register(&change.reg, &what)?;
        let value = u32::try_from(change.to)
            .with_context(|| format!("{what}.to: {} is over 32 bits", change.to))?;
        let (mask, value) = match change.bit {
            None => (u32::MAX, value),
            Some(bit @ 0..=31) => (1 << bit, value << bit),
            Some(bit) => bail!("{what}.bit: {bit} is not a bit of a 32-bit register"),
        };
        rewrites.push(CpuidRewrite {
            function: change.leaf,
            index: change.subleaf,
            register,
            mask,
            value,
        });
    }
    // The probes' forced bits, where the default model's write did not show them already.
    for (i, forced) in section
        .forced_bits
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let what = format!("x86.forced_bits[{i}]");
        let register = register(&forced.reg, &what)?;
        if forced.bit > 31 || forced.value > 1 {
            bail!(
                "{what}: bit {} = {} is not a bit of a 32-bit register",
                forced.bit,
                forced.value
            );
        }
        let mask = 1u32 << forced.bit;
        let shown = rewrites.iter().any(|r| {
            (r.function, r.index, r.register) == (forced.leaf, forced.subleaf, register)
                && r.mask & mask != 0
        });
        if !shown {
            rewrites.push(CpuidRewrite {
                function: forced.leaf,
                index: forced.subleaf,
                register,
                mask,
                value: forced.value << forced.bit,
            });
        }
    }
    Ok(X86HostFacts {
        supported: section
            .supported_cpuid
            .map(|s| without_caller_apic_id(&CpuidTable::new(s.table))),
        emulated: section.emulated_cpuid.map(|s| CpuidTable::new(s.table)),
        rewrites,
    })
}

fn arm64_facts(section: Option<Arm64Section>) -> Result<Arm64HostFacts> {
    let Some(section) = section else {
        return Ok(Arm64HostFacts::default());
    };
    let init_features = match section.vcpu_init_features {
        Some(f) => Some(
            u32::try_from(hex(&f.bits, "arm64.vcpu_init_features.bits")?)
                .context("arm64.vcpu_init_features.bits is over 32 bits")?,
        ),
        None => None,
    };
    let main_list = reg_list(section.reg_list.as_ref(), "arm64.reg_list")?;
    let mut values = BTreeMap::new();
    for (part, list) in [
        ("limits", &section.limits),
        ("firmware", &section.firmware),
        ("cache_geometry", &section.cache_geometry),
    ] {
        add_values(&mut values, list, &format!("arm64.{part}"))?;
    }
    let mut other_inits = Vec::new();
    for (i, other) in section.other_vcpu_inits.iter().enumerate() {
        let what = format!("arm64.other_vcpu_inits[{i}]");
        let bits = hex(
            &other.vcpu_init_features.bits,
            &format!("{what}.vcpu_init_features.bits"),
        )?;
        let mut values = BTreeMap::new();
        add_values(&mut values, &other.values, &format!("{what}.values"))?;
        other_inits.push(Arm64InitFacts {
            init_features: u32::try_from(bits)
                .with_context(|| format!("{what}.vcpu_init_features.bits is over 32 bits"))?,
            reg_list: reg_list(other.reg_list.as_ref(), &format!("{what}.reg_list"))?,
            values,
        });
    }
    let masks = match section.writable_masks {
        Some(masks) => Some(
            masks
                .iter()
                .enumerate()
                .map(|(i, m)| hex(m, &format!("arm64.writable_masks[{i}]")))
                .collect::<Result<Vec<u64>>>()?,
        ),
        None => None,
    };
    Ok(Arm64HostFacts {
        preferred_target: section.preferred_target,
        init_features,
        reg_list: main_list,
        values,
        masks,
        other_inits,
        registers_from_values: false,
        probes: section
            .kernel_probes
            .map_or(KernelProbes::NOT_MEASURED, |p| KernelProbes {
                el_floor: p.el_floor,
                debug_ver_floor: p.debug_ver_floor,
                pmu_imp_def: p.pmu_imp_def,
            }),
    })
}

fn reg_list(list: Option<&RegList>, what: &str) -> Result<Option<Vec<u64>>> {
    list.map(|list| {
        list.ids
            .iter()
            .enumerate()
            .map(|(i, id)| hex(id, &format!("{what}.ids[{i}]")))
            .collect::<Result<Vec<u64>>>()
    })
    .transpose()
}

fn add_values(values: &mut BTreeMap<u64, u64>, list: &[RegValue], what: &str) -> Result<()> {
    for (i, reg) in list.iter().enumerate() {
        values.insert(
            hex(&reg.id, &format!("{what}[{i}].id"))?,
            hex(&reg.value, &format!("{what}[{i}].value"))?,
        );
    }
    Ok(())
}

/// A host as its fingerprint describes it: the engine's facts and the trace header's host facts.
#[derive(Clone, Debug)]
pub struct ModelHost {
    /// What the engine answers from.
    pub facts: HostFacts,
    /// The host facts a trace header (and a transcript) carries.
    pub host: HostFingerprint,
    /// What the source document lacks, one sentence each, with the rule's fallback (empty for a
    /// vmfleet fingerprint; a Firecracker one has no masks, register list, probes or
    /// capabilities): every command that reads the host prints them as notes.
    pub partial: Vec<String>,
}

/// The engine's facts from fingerprint document `text`; `source` names it in errors.
pub fn facts_from_str(text: &str, source: &str) -> Result<HostFacts> {
    host_from_str(text, source).map(|h| h.facts)
}

/// The host fingerprint document `text` describes; `source` names it in errors. A Firecracker
/// fingerprint (`cpu-template-helper fingerprint dump`, known by its `firecracker_version` and
/// `guest_cpu_config`) is read too, as a partial host ([`crate::firecracker::fingerprint`]).
pub fn host_from_str(text: &str, source: &str) -> Result<ModelHost> {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text)
        && FirecrackerFingerprint::detect(&value)
    {
        let read = || -> Result<ModelHost> {
            host_from_firecracker(&FirecrackerFingerprint::from_value(value)?)
        };
        return read().with_context(|| format!("{source} is not a valid Firecracker fingerprint"));
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text)
        && [
            "cpuid_modifiers",
            "reg_modifiers",
            "vcpu_features",
            "msr_modifiers",
        ]
        .iter()
        .any(|k| value.get(k).is_some())
    {
        bail!(
            "{source} is a Firecracker CPU template, not a fingerprint (`cpu-template-helper \
             fingerprint dump` writes those; `vmfleet template import-firecracker` reads templates)"
        );
    }
    let doc: Document = serde_json::from_str(text)
        .with_context(|| format!("{source} is not a fingerprint document"))?;
    if doc.schema != FINGERPRINT_SCHEMA {
        bail!(
            "{source}: schema is {:?}, expected {FINGERPRINT_SCHEMA:?}",
            doc.schema
        );
    }
    let arch = match doc.arch.as_str() {
        "x86_64" => GuestArch::X86_64,
        "aarch64" => GuestArch::Aarch64,
        other => bail!("{source}: arch {other:?} is neither x86_64 nor aarch64"),
    };
    let emulated_cpuid = doc
        .x86
        .as_ref()
        .and_then(|x86| x86.emulated_cpuid.as_ref())
        .map(|s| CpuidTable::new(s.table.clone()));
    let facts = HostFacts {
        arch,
        capabilities: doc
            .capabilities
            .iter()
            .map(|c| (c.number, c.value))
            .collect(),
        x86: x86_facts(doc.x86).with_context(|| format!("reading {source}"))?,
        arm64: arm64_facts(doc.arm64).with_context(|| format!("reading {source}"))?,
    };
    let host = HostFingerprint {
        kernel_release: doc.kernel_release,
        kvm_module: doc.kvm_module,
        cpu_vendor: doc.cpu.vendor,
        cpu_family: doc.cpu.family,
        cpu_model: doc.cpu.model,
        cpu_stepping: doc.cpu.stepping,
        cpu_model_name: doc.cpu.model_name,
        microcode: doc.microcode,
        kvm_api_version: doc.kvm_api_version,
        capabilities: doc.capabilities,
        emulated_cpuid,
    };
    Ok(ModelHost {
        facts,
        host,
        partial: Vec::new(),
    })
}

/// The engine's facts from the fingerprint file at `path` (an unreadable or malformed file is
/// [`Status::BadInput`]).
pub fn load_facts(path: &Path) -> Result<HostFacts> {
    load_host(path).map(|h| h.facts)
}

/// The host the fingerprint file at `path` describes (an unreadable or malformed file is
/// [`Status::BadInput`]).
pub fn load_host(path: &Path) -> Result<ModelHost> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading fingerprint {}", path.display()))
        .or_status(Status::BadInput)?;
    host_from_str(&text, &path.display().to_string()).or_status(Status::BadInput)
}
