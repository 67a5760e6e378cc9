//! The human form of a fingerprint: a concise summary, one fact per line (the whole document is
//! `--json`'s).

use super::{Arm64Section, Fingerprint, X86Section};
use crate::report::DriftKind;
use std::fmt::Write as _;
use vcpu::model::arm64::host::PmuImpDef;

/// `value`, or `unknown` for a fact the source did not have.
fn or_unknown(value: Option<String>) -> String {
    value.unwrap_or_else(|| "unknown (not recorded)".to_string())
}

/// The summary `vmfleet trace fingerprint` and `vmfleet host --fingerprint` print.
pub fn summary(fp: &Fingerprint) -> String {
    let mut out = String::new();
    let cpu = &fp.cpu;
    // Writing to a String cannot fail.
    let _ = writeln!(out, "schema:       {}", fp.schema);
    let _ = writeln!(out, "arch:         {}", fp.arch);
    let _ = writeln!(out, "kernel:       {}", fp.kernel_release);
    let _ = writeln!(
        out,
        "kvm module:   {}",
        fp.kvm_module.as_deref().unwrap_or("none")
    );
    let _ = writeln!(
        out,
        "cpu:          {} {} (family {} model {:#x} stepping {})",
        cpu.vendor, cpu.model_name, cpu.family, cpu.model, cpu.stepping
    );
    let _ = writeln!(
        out,
        "microcode:    {}",
        fp.microcode.as_deref().unwrap_or("none")
    );
    let _ = writeln!(
        out,
        "kvm api:      {}",
        or_unknown(fp.kvm_api_version.map(|v| v.to_string()))
    );
    let caps: Vec<String> = fp
        .capabilities
        .iter()
        .map(|c| format!("{}={}", c.name.trim_start_matches("KVM_CAP_"), c.value))
        .collect();
    let _ = writeln!(out, "capabilities: {}", caps.join(" "));
    if let Some(x86) = &fp.x86 {
        x86_lines(&mut out, x86);
    }
    if let Some(arm64) = &fp.arm64 {
        arm64_lines(&mut out, arm64);
    }
    out
}

fn x86_lines(out: &mut String, x86: &X86Section) {
    let _ = writeln!(
        out,
        "supported CPUID: {}",
        or_unknown(
            x86.supported_cpuid
                .as_ref()
                .map(|s| format!("{} entries (digest {})", s.entries, s.digest))
        )
    );
    let emulated = x86.emulated_cpuid.as_ref().map(|e| {
        let bits = super::feature_bits(&e.table);
        let bits = if bits.is_empty() {
            "no feature bits".to_string()
        } else {
            bits.join(" ")
        };
        format!("{} entries (digest {}): {bits}", e.entries, e.digest)
    });
    let _ = writeln!(out, "emulated CPUID:  {}", or_unknown(emulated));
    let Some(rw) = &x86.host_rewrites else {
        let _ = writeln!(
            out,
            "host rewrites:   unknown (no SET_CPUID2 + GET_CPUID2 recorded)"
        );
        return;
    };
    let rewrote = rw
        .changes
        .iter()
        .filter(|c| c.kind == DriftKind::KernelRewrote)
        .count();
    let _ = writeln!(
        out,
        "host rewrites:   {} changes by the kernel to the {} model ({} entries, digest {} -> {} entries, digest {}); {} track guest state",
        rewrote,
        if rw.default_model {
            "default"
        } else {
            "first vCPU's"
        },
        rw.written_entries,
        rw.written_digest,
        rw.held_entries,
        rw.held_digest,
        rw.changes.len() - rewrote
    );
    let named: Vec<String> = rw
        .changes
        .iter()
        .filter(|c| c.kind == DriftKind::KernelRewrote)
        .map(|c| {
            let what = c.feature.map_or_else(
                || match c.bit {
                    Some(bit) => format!("{}[{bit}]", c.register),
                    None => c.register.clone(),
                },
                str::to_string,
            );
            match (c.bit, c.from, c.to) {
                (Some(_), Some(0), Some(1)) => format!("+{what}"),
                (Some(_), Some(1), Some(0)) => format!("-{what}"),
                _ => format!("~{what}"),
            }
        })
        .collect();
    if !named.is_empty() {
        let _ = writeln!(out, "  {}", named.join(" "));
    }
}

fn arm64_lines(out: &mut String, arm64: &Arm64Section) {
    let _ = writeln!(
        out,
        "preferred target: {}",
        or_unknown(arm64.preferred_target.map(|t| t.to_string()))
    );
    let _ = writeln!(
        out,
        "vcpu init:    {}",
        or_unknown(arm64.vcpu_init_features.as_ref().map(|f| format!(
            "{} ({})",
            f.bits,
            f.names.join(", ")
        )))
    );
    let _ = writeln!(
        out,
        "reg list:     {}",
        or_unknown(
            arm64
                .reg_list
                .as_ref()
                .map(|l| format!("{} registers", l.count))
        )
    );
    let identity: Vec<String> = arm64
        .limits
        .iter()
        .filter(|r| ["MIDR_EL1", "REVIDR_EL1"].contains(&r.name.as_str()))
        .map(|r| format!("{}={}", r.name, r.value))
        .collect();
    let _ = writeln!(
        out,
        "limits:       {} system registers read before any write (--json lists them): {}",
        arm64.limits.len(),
        identity.join(" ")
    );
    let _ = writeln!(
        out,
        "psci version: {}",
        or_unknown(arm64.psci_version.clone())
    );
    let _ = writeln!(out, "firmware:     {} registers", arm64.firmware.len());
    for r in &arm64.firmware {
        let _ = writeln!(out, "  {:<36} {}", r.name, r.value);
    }
    let _ = writeln!(
        out,
        "writable masks: {}",
        arm64.writable_masks.as_ref().map_or_else(
            || "not recorded (no KVM_ARM_GET_REG_WRITABLE_MASKS)".to_string(),
            |m| format!(
                "{} ({} nonzero)",
                m.len(),
                m.iter().filter(|v| v.as_str() != "0x0").count()
            )
        )
    );
    let floor = |measured: Option<bool>, write: &str| match measured {
        Some(true) => format!("enforced (a probe write of {write} was refused)"),
        Some(false) => format!("not enforced (a probe write of {write} was accepted)"),
        None => "not measured".to_string(),
    };
    let probes = &arm64.kernel_probes;
    let _ = writeln!(
        out,
        "EL0/EL1 floor: {}",
        floor(probes.el_floor, "ID_AA64PFR0_EL1.EL1 = 0")
    );
    let _ = writeln!(
        out,
        "DebugVer floor: {}",
        floor(probes.debug_ver_floor, "ID_AA64DFR0_EL1.DebugVer = 5")
    );
    let _ = writeln!(
        out,
        "PMUVer = 0xF without a PMU: {}",
        match probes.pmu_imp_def {
            Some(PmuImpDef::ReadsAsNotImplemented) => "stored as 0 (the 6.7 handler)",
            Some(PmuImpDef::Kept) => "kept as 0xF (the 6.3-6.6 handler)",
            Some(PmuImpDef::Refused) => "refused (ID_AA64DFR0_EL1 is invariant, as on 6.1)",
            None => "not measured",
        }
    );
}
