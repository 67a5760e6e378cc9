//! Firecracker fingerprints (`fixtures/firecracker/`, from Firecracker's own golden files) read as
//! partial vmfleet hosts: each arch's mapping (identity, CPUID table or register values, what the
//! document lacks), `check --migrate` between them stating the partial facts in text and JSON
//! (validated against its schema), `baseline` of two CPUs' fingerprints accepted by `check` on
//! both, and a malformed one refused with the file and the key path.

mod common;

use common::cli::{root, schema_valid, vmfleet};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use supervisor::model_cmd::{ModelHost, host_from_str};
use vcpu::GuestArch;

fn fixture(name: &str) -> PathBuf {
    root().join(format!("fixtures/firecracker/{name}.fingerprint.json"))
}

fn host(name: &str) -> ModelHost {
    let path = fixture(name);
    host_from_str(&std::fs::read_to_string(&path).unwrap(), name).unwrap()
}

fn migrate(from: &Path, to: &Path, json: bool) -> Output {
    let mut cmd = vmfleet();
    cmd.args(["check", "--migrate"]).arg(from).arg(to);
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

/// The `--json` document, checked against the schema, and the exit status.
fn document(from: &Path, to: &Path) -> (Value, Option<i32>) {
    let out = migrate(from, to, true);
    (
        schema_valid(&out.stdout, "migrate.v1.schema.json"),
        out.status.code(),
    )
}

fn lines_about(doc: &Value, register: &str) -> Vec<(String, bool)> {
    doc["registers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["register"] == register)
        .map(|r| {
            (
                r["problem"].as_str().unwrap().to_string(),
                r["blocks"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_x86_fingerprint_is_a_cpuid_table_and_says_it_is_firecrackers() {
    let h = host("INTEL_SAPPHIRE_RAPIDS_6.18");
    assert_eq!(h.facts.arch, GuestArch::X86_64);
    assert_eq!(h.host.kernel_release, "6.18.30-61.116.amzn2023.x86_64");
    assert_eq!(h.host.microcode.as_deref(), Some("0x2b000661"));
    assert_eq!(h.host.cpu_vendor, "GenuineIntel");
    assert_eq!((h.host.cpu_family, h.host.cpu_model), (6, 0x8f));
    assert!(h.host.capabilities.is_empty() && h.facts.capabilities.is_empty());
    let table = h.facts.x86.supported.as_ref().unwrap();
    // AVX-512F (7.0.ebx[16]) is in Firecracker's guest configuration of this host.
    assert_ne!(table.lookup(7, 0).unwrap().ebx & 1 << 16, 0);
    assert!(h.facts.x86.emulated.is_none() && h.facts.x86.rewrites.is_empty());
    let partial = h.partial.join("\n");
    assert!(partial.contains("not KVM_GET_SUPPORTED_CPUID"), "{partial}");
    assert!(
        partial.contains("MSR values: read, not modelled"),
        "{partial}"
    );
    let amd = host("AMD_GENOA_6.18");
    assert_eq!(amd.host.cpu_vendor, "AuthenticAMD");
    assert_eq!((amd.host.cpu_family, amd.host.cpu_model), (0x19, 0x11));
    assert!(
        amd.host.cpu_model_name.contains("AMD EPYC"),
        "{:?}",
        amd.host
    );
}

#[test]
fn an_arm64_fingerprint_is_register_values_without_list_masks_or_probes() {
    let h = host("ARM_NEOVERSE_V2_6.18");
    assert_eq!(h.facts.arch, GuestArch::Aarch64);
    assert_eq!(h.host.cpu_vendor, "arm-implementer-0x41");
    assert_eq!(h.host.cpu_model, 0xd4f, "Neoverse V2's part number");
    let arm64 = &h.facts.arm64;
    assert_eq!(arm64.reg_list, None);
    assert_eq!(arm64.masks, None);
    assert_eq!(arm64.init_features, Some(0x4));
    assert!(arm64.registers_from_values);
    // MIDR_EL1 and ID_AA64PFR0_EL1 are there; core registers (not model facts) are not.
    assert_eq!(arm64.values.get(&0x6030_0000_0013_c000), Some(&0x410f_d4f1));
    assert!(arm64.values.contains_key(&0x6030_0000_0013_c020));
    assert!(arm64.values.keys().all(|id| id >> 16 & 0xfff != 0x10));
    let partial = h.partial.join("\n");
    for lack in [
        "no writable masks",
        "no register list",
        "no kernel probes",
        "no KVM capabilities",
    ] {
        assert!(partial.contains(lack), "{lack}: {partial}");
    }
}

#[test]
fn migrate_between_firecracker_fingerprints_names_the_kernel_changes_and_what_it_lacks() {
    let (new, old) = (
        fixture("ARM_NEOVERSE_V2_6.18"),
        fixture("ARM_NEOVERSE_V2_6.1"),
    );
    // The same CPU down from 6.18 to 6.1: the kernel changes block (PSCI 1.3 → 1.1, MPAM,
    // DebugVer, NV), the 6.18-only hypercall bitmap holding 0 does not.
    let (down, status) = document(&new, &old);
    assert_eq!(status, Some(7), "{down}");
    for register in [
        "KVM_REG_ARM_PSCI_VERSION",
        "ID_AA64PFR0_EL1",
        "ID_AA64DFR0_EL1",
        "ID_AA64MMFR2_EL1",
    ] {
        assert_eq!(
            lines_about(&down, register),
            [("refused".to_string(), true)],
            "{register}"
        );
    }
    assert_eq!(
        lines_about(&down, "KVM_REG_ARM_VENDOR_HYP_BMAP_2"),
        [("gone".to_string(), false)]
    );
    let gone = down["registers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["problem"] == "gone")
        .unwrap();
    assert!(
        gone["detail"]
            .as_str()
            .unwrap()
            .contains("register list is unknown"),
        "{gone}"
    );
    for side in ["from", "to"] {
        let partial = down[side]["partial"].as_array().unwrap();
        assert!(
            partial
                .iter()
                .any(|p| p.as_str().unwrap().starts_with("no register list")),
            "{side}: {partial:?}"
        );
    }
    // Each host to itself carries over: no register list invents no problem.
    let (same, status) = document(&new, &new);
    assert_eq!(status, Some(0), "{same}");
    assert_eq!(same["registers"], serde_json::json!([]));
    // The words: a note line per missing fact, per host.
    let text = String::from_utf8(migrate(&new, &old, false).stdout).unwrap();
    let notes = text.lines().filter(|l| l.starts_with("note: ")).count();
    assert!(notes >= 8, "{text}");
    assert!(text.contains("no writable masks"), "{text}");
}

#[test]
fn migrate_between_two_cpus_of_each_arch_states_what_is_lost() {
    // Neoverse V2 to N1 on the same kernel: the identity registers differ and no capability
    // makes them writable (none is known), so they block.
    let (doc, status) = document(
        &fixture("ARM_NEOVERSE_V2_6.18"),
        &fixture("ARM_NEOVERSE_N1_6.18"),
    );
    assert_eq!(status, Some(7));
    assert_eq!(
        lines_about(&doc, "MIDR_EL1"),
        [("refused".to_string(), true)]
    );
    // Genoa to Sapphire Rapids: AMD-only features the guest saw are lost.
    let (doc, status) = document(
        &fixture("AMD_GENOA_6.18"),
        &fixture("INTEL_SAPPHIRE_RAPIDS_6.18"),
    );
    assert_eq!(status, Some(7), "{doc}");
    assert!(!doc["registers"].as_array().unwrap().is_empty());
    assert!(
        doc["registers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["problem"] == "lost")
    );
    // An x86 fingerprint to an arm64 one: refused as two that cannot be compared.
    let out = migrate(
        &fixture("AMD_GENOA_6.18"),
        &fixture("ARM_NEOVERSE_N1_6.18"),
        false,
    );
    assert_eq!(out.status.code(), Some(4));
}

/// `text` with its first bitmap's lowest bit made `x` (the host's).
fn keep_lowest_bit(text: &str) -> String {
    let start = text.find("\"bitmap\": \"0b").unwrap() + "\"bitmap\": \"".len();
    let end = start + text[start..].find('"').unwrap();
    format!("{}x{}", &text[..end - 1], &text[end..])
}

#[test]
fn a_malformed_firecracker_fingerprint_is_refused_with_the_file_and_the_key() {
    let dir = std::env::temp_dir().join(format!("vmfleet-firecracker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = fixture("ARM_NEOVERSE_N1_6.18");
    let text = std::fs::read_to_string(&good).unwrap();
    let cases = [
        (
            "bad-bitmap.json",
            text.replacen("\"bitmap\": \"0b0", "\"bitmap\": \"0b2", 1),
            "guest_cpu_config.reg_modifiers[0].bitmap",
        ),
        (
            "bad-addr.json",
            text.replacen("\"addr\": \"0x", "\"addr\": \"", 1),
            "guest_cpu_config.reg_modifiers[0].addr",
        ),
        (
            "no-kernel.json",
            text.replacen("\"kernel_version\"", "\"kernel\"", 1),
            "kernel_version",
        ),
        (
            "partial-bitmap.json",
            keep_lowest_bit(&text),
            "give every bit",
        ),
    ];
    for (name, body, what) in cases {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        let out = migrate(&path, &good, false);
        assert_eq!(out.status.code(), Some(4), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert!(
            stderr.contains("Firecracker fingerprint"),
            "{name}: {stderr}"
        );
        assert!(stderr.contains(what), "{name}: {stderr}");
    }
    // A Firecracker template given where a fingerprint goes is named for what it is.
    let template = root().join("fixtures/firecracker/x86-avx512-off.template.json");
    let out = migrate(&template, &good, false);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is a Firecracker CPU template, not a fingerprint"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_baseline_of_two_cpus_firecracker_fingerprints_is_accepted_by_check_on_both() {
    let dir = std::env::temp_dir().join(format!("vmfleet-fc-baseline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (arch, a, b) in [
        ("x86", "AMD_GENOA_6.18", "INTEL_SAPPHIRE_RAPIDS_6.18"),
        ("arm64", "ARM_NEOVERSE_V2_6.18", "ARM_NEOVERSE_N1_6.18"),
    ] {
        let (a, b) = (fixture(a), fixture(b));
        let template = dir.join(format!("{arch}.toml"));
        let out = vmfleet()
            .arg("baseline")
            .args([&a, &b])
            .arg("--out")
            .arg(&template)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{arch}: {out:?}");
        let out = vmfleet()
            .arg("check")
            .arg(&template)
            .args([&a, &b])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{arch}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
