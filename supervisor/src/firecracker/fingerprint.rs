//! A Firecracker fingerprint as a *partial* vmfleet host: the engine's facts and the trace
//! header's host facts, from what `cpu-template-helper fingerprint dump` wrote, plus the list of
//! what such a document lacks, which every command that reads it prints.
//!
//! Mapping: `kernel_version` → kernel release, `microcode_version` → microcode (on arm64 it is
//! the host's REVIDR_EL1). x86: the CPUID leaves (full bitmaps) → the supported table, though
//! they are Firecracker's guest configuration (normalized by Firecracker), not
//! `KVM_GET_SUPPORTED_CPUID`; the CPU's identity from leaves 0, 1 and 0x80000002–4; MSRs are
//! counted, not modelled. arm64: the CPU-model registers of `reg_modifiers` → the values after
//! `KVM_ARM_VCPU_INIT` (the others, core and FP registers, are not model facts); the CPU's
//! identity from MIDR_EL1; the VCPU_INIT features are Firecracker's default (PSCI 0.2) with the
//! document's `vcpu_features` applied.
//!
//! What it lacks falls back to the conservative side of each rule: no writable masks → the
//! pre-6.7 rule (nothing writable: a value other than the one held is refused); no register list
//! → `KVM_GET_REG_LIST` is answered as unknown, and `check --migrate` judges which registers the
//! host has from the registers whose values the dump holds (Firecracker dumps every listed one but
//! PC and two timers); no capabilities → none offered (so no writable MIDR_EL1); no kernel probes
//! → judged as the newer kernels do, said where it matters; no preferred target →
//! `KVM_ARM_VCPU_INIT` is answered as unknown (the vCPU's later calls are judged as if the kernel
//! took it).

use super::format::FirecrackerFingerprint;
use crate::model_cmd::ModelHost;
use anyhow::{Result, bail};
use recorder::HostFingerprint;
use std::collections::BTreeMap;
use vcpu::GuestArch;
use vcpu::hypervisor::abi::KVM_ARM_VCPU_PSCI_0_2;
use vcpu::hypervisor::cpuid::{CpuidEntry, CpuidTable};
use vcpu::model::arm64::catalog::MIDR_EL1;
use vcpu::model::arm64::host::KernelProbes;
use vcpu::model::engine::{Arm64HostFacts, HostFacts, X86HostFacts, without_caller_apic_id};
use vcpu::model::lock_policy;

/// `kvm_vcpu_init.features[0]` Firecracker gives every vCPU before a template's `vcpu_features`:
/// PSCI 0.2 (Firecracker's `default_kvi`; secondary vCPUs add POWER_OFF, which no register
/// depends on).
pub const FIRECRACKER_DEFAULT_INIT: u32 = 1 << KVM_ARM_VCPU_PSCI_0_2;

/// The host Firecracker fingerprint `fp` describes, with what it lacks in
/// [`ModelHost::partial`].
pub fn host_from_firecracker(fp: &FirecrackerFingerprint) -> Result<ModelHost> {
    let config = &fp.guest_cpu_config;
    let Some(arch) = config.arch()? else {
        bail!("guest_cpu_config has neither CPUID leaves (x86) nor registers (arm64)");
    };
    let mut partial = vec![format!(
        "a Firecracker {} fingerprint: the guest's CPU configuration only, no KVM \
         capabilities (none counts as offered)",
        fp.firecracker_version
    )];
    let mut host = HostFingerprint {
        kernel_release: fp.kernel_version.clone(),
        kvm_module: None,
        cpu_vendor: String::new(),
        cpu_family: 0,
        cpu_model: 0,
        cpu_stepping: 0,
        cpu_model_name: String::new(),
        microcode: Some(fp.microcode_version.clone()),
        kvm_api_version: None,
        capabilities: Vec::new(),
        emulated_cpuid: None,
    };
    let mut facts = HostFacts {
        arch,
        capabilities: Vec::new(),
        x86: X86HostFacts::default(),
        arm64: Arm64HostFacts::default(),
    };
    match arch {
        GuestArch::X86_64 => {
            let table = cpuid_table(fp)?;
            x86_identity(&table, &mut host);
            facts.x86.supported = Some(without_caller_apic_id(&table));
            partial.push(
                "supported CPUID: Firecracker's guest configuration (normalized by Firecracker), \
                 not KVM_GET_SUPPORTED_CPUID: a feature Firecracker hides counts as one the \
                 host lacks"
                    .into(),
            );
            partial.push("no emulated CPUID and no measured host rewrites".into());
            if !config.msr_modifiers.is_empty() {
                partial.push(format!(
                    "{} MSR values: read, not modelled (vmfleet does not model MSRs)",
                    config.msr_modifiers.len()
                ));
            }
        }
        GuestArch::Aarch64 => {
            let mut values = BTreeMap::new();
            for r in &config.reg_modifiers {
                if lock_policy::is_model_register(GuestArch::Aarch64, r.addr) {
                    // A fingerprint's bitmaps are full and within the register's size
                    // (`FirecrackerFingerprint::from_value`): model registers are 64-bit.
                    values.insert(r.addr, u64::try_from(r.bitmap.value).unwrap_or(u64::MAX));
                }
            }
            let midr_id = MIDR_EL1.kvm_reg_id();
            let Some(&midr) = values.get(&midr_id) else {
                bail!("guest_cpu_config.reg_modifiers has no MIDR_EL1 ({midr_id:#018x})");
            };
            arm64_identity(midr, &mut host);
            let mut init = FIRECRACKER_DEFAULT_INIT;
            for word in config.vcpu_features.iter().filter(|w| w.index == 0) {
                init = u32::try_from(word.bitmap.apply(u128::from(init)) & 0xffff_ffff)
                    .unwrap_or(init);
            }
            facts.arm64 = Arm64HostFacts {
                preferred_target: None,
                init_features: Some(init),
                reg_list: None,
                values,
                masks: None,
                other_inits: Vec::new(),
                probes: KernelProbes::NOT_MEASURED,
                registers_from_values: true,
            };
            partial.extend([
                "no writable masks: every field is treated as not writable (the pre-6.7 rule): \
                 a value other than the one held is refused"
                    .to_string(),
                format!(
                    "no register list: KVM_GET_REG_LIST is answered as unknown; which registers \
                     the host has is judged from the {} whose values it holds (Firecracker dumps \
                     every listed register but PC and two timers)",
                    config.reg_modifiers.len()
                ),
                "no kernel probes: the rules they decide are judged as the newer kernels do".into(),
                "no preferred target: KVM_ARM_VCPU_INIT is answered as unknown, and the vCPU's later \
                 calls are judged as if the kernel took it"
                    .into(),
                format!(
                    "VCPU_INIT features {init:#x}: Firecracker's default (psci-0.2) with the \
                     document's vcpu_features, not read from the host"
                ),
            ]);
        }
    }
    Ok(ModelHost {
        facts,
        host,
        partial,
    })
}

/// The CPUID table of an x86 fingerprint (every leaf has its four registers).
fn cpuid_table(fp: &FirecrackerFingerprint) -> Result<CpuidTable> {
    let mut entries = Vec::new();
    for (i, leaf) in fp.guest_cpu_config.cpuid_modifiers.iter().enumerate() {
        let mut entry = CpuidEntry {
            function: leaf.leaf,
            index: leaf.subleaf,
            flags: leaf.flags,
            eax: 0,
            ebx: 0,
            ecx: 0,
            edx: 0,
        };
        for reg in vcpu::hypervisor::cpuid::CpuidReg::ALL {
            let Some((_, bitmap)) = leaf.modifiers.iter().rev().find(|(r, _)| *r == reg) else {
                bail!(
                    "guest_cpu_config.cpuid_modifiers[{i}] (leaf {:#x} subleaf {:#x}) has no {reg}: \
                     a fingerprint gives all four registers",
                    leaf.leaf,
                    leaf.subleaf
                );
            };
            *entry.reg_mut(reg) = u32::try_from(bitmap.value).unwrap_or(u32::MAX);
        }
        entries.push(entry);
    }
    Ok(CpuidTable::new(entries))
}

/// Vendor, family, model, stepping and brand string from CPUID, as `/proc/cpuinfo` shows them.
fn x86_identity(table: &CpuidTable, host: &mut HostFingerprint) {
    let bytes = |regs: &[u32]| -> String {
        let raw: Vec<u8> = regs.iter().flat_map(|r| r.to_le_bytes()).collect();
        String::from_utf8_lossy(&raw)
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string()
    };
    if let Some(e) = table.lookup(0, 0) {
        host.cpu_vendor = bytes(&[e.ebx, e.edx, e.ecx]);
    }
    if let Some(e) = table.lookup(1, 0) {
        let base_family = e.eax >> 8 & 0xf;
        let base_model = e.eax >> 4 & 0xf;
        host.cpu_family = if base_family == 0xf {
            base_family + (e.eax >> 20 & 0xff)
        } else {
            base_family
        };
        host.cpu_model = if base_family == 0x6 || base_family == 0xf {
            (e.eax >> 16 & 0xf) << 4 | base_model
        } else {
            base_model
        };
        host.cpu_stepping = e.eax & 0xf;
    }
    let brand: Vec<u32> = (0x8000_0002..=0x8000_0004)
        .filter_map(|leaf| table.lookup(leaf, 0))
        .flat_map(|e| [e.eax, e.ebx, e.ecx, e.edx])
        .collect();
    if brand.len() == 12 {
        host.cpu_model_name = bytes(&brand);
    }
}

/// Vendor, architecture, part and revision from MIDR_EL1, as `/proc/cpuinfo` shows them.
fn arm64_identity(midr: u64, host: &mut HostFingerprint) {
    host.cpu_vendor = format!("arm-implementer-{:#04x}", midr >> 24 & 0xff);
    // "CPU architecture: 8" for every ARMv8+ part (MIDR's architecture field reads 0xf).
    host.cpu_family = 8;
    host.cpu_model = u32::try_from(midr >> 4 & 0xfff).unwrap_or(0);
    host.cpu_stepping = u32::try_from(midr & 0xf).unwrap_or(0);
}
