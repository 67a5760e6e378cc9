//! `vmfleet check --migrate FROM TO` between the arm64 fixtures' hosts (real kernels 6.1, 6.12 and
//! 7.2, recorded in the lab), from their trace fingerprints alone: in both directions it names
//! each register that does not carry over, with the destination kernel's rule, and the exit
//! status says whether the guest can move; its JSON is a document of its schema. x86: between
//! the host the x86 fixtures were recorded on (AMD family 25 model 1) and a later one (model 17,
//! `fixtures/fingerprints/x86-amd-family25-model17.host.json`, measured live there), the
//! features the guest would lose.

mod common;

use common::cli::{root, schema_valid, trace_fingerprint, vmfleet};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn scratch_dir(test: &str) -> PathBuf {
    common::cli::scratch_dir("check", test)
}

fn fingerprint(name: &str, dir: &Path) -> PathBuf {
    trace_fingerprint(name, dir)
}

fn migrate(from: &Path, to: &Path, json: bool) -> Output {
    let mut cmd = vmfleet();
    cmd.args(["check", "--migrate"]).arg(from).arg(to);
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

/// The `--json` document, checked against the schema.
fn document(from: &Path, to: &Path) -> (Value, Option<i32>) {
    let out = migrate(from, to, true);
    (
        schema_valid(&out.stdout, "migrate.v1.schema.json"),
        out.status.code(),
    )
}

/// The lines of `doc` about `register`: (problem, blocks).
fn about(doc: &Value, register: &str) -> Vec<(String, bool)> {
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
fn from_6_12_to_6_1_and_back_each_blocker_is_named() {
    let dir = scratch_dir("down-up");
    let (v612, v61) = (
        fingerprint("arm64-6.12-max", &dir),
        fingerprint("arm64-6.1-max", &dir),
    );
    // To the older kernel: ID registers whose 6.12 values 6.1 cannot hold (its ID registers are
    // invariant), and cache-description registers 6.1 does not list.
    let (down, status) = document(&v612, &v61);
    assert_eq!(status, Some(7), "refused: {down}");
    assert_eq!(down["carries_over"], false);
    for register in ["ID_AA64DFR0_EL1", "ID_AA64ISAR2_EL1", "ID_AA64MMFR1_EL1"] {
        assert_eq!(
            about(&down, register),
            [("refused".to_string(), true)],
            "{register}"
        );
    }
    let gone = down["registers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["problem"] == "gone")
        .count();
    assert!(gone > 0, "{down}");
    // Back up: 6.12 cannot hold 6.1's ID_AA64MMFR1_EL1 (HCX 0 where 6.12's is 1, not writable
    // before 6.18), and it lists registers 6.1 never had (notes, not blockers).
    let (up, status) = document(&v61, &v612);
    assert_eq!(status, Some(7));
    assert_eq!(
        about(&up, "ID_AA64MMFR1_EL1"),
        [("refused".to_string(), true)]
    );
    assert!(
        up["registers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["problem"] == "new" && r["blocks"] == false)
    );
    // The words name the field and the rule.
    let text = String::from_utf8(migrate(&v61, &v612, false).stdout).unwrap();
    assert!(text.contains("block the move"), "{text}");
    assert!(text.contains("ID_AA64MMFR1_EL1.HCX"), "{text}");
}

#[test]
fn from_7_2_to_6_12_psci_1_3_blocks_and_a_zero_bitmap_does_not() {
    let dir = scratch_dir("7-2");
    let (v72, v612) = (
        fingerprint("arm64-7.2-max+model", &dir),
        fingerprint("arm64-6.12-max", &dir),
    );
    let (doc, status) = document(&v72, &v612);
    assert_eq!(status, Some(7));
    assert_eq!(
        about(&doc, "KVM_REG_ARM_PSCI_VERSION"),
        [("refused".to_string(), true)]
    );
    assert_eq!(
        about(&doc, "KVM_REG_ARM_VENDOR_HYP_BMAP_2"),
        [("gone".to_string(), false)],
        "{doc}"
    );
    // The same host to itself: everything carries over.
    let (same, status) = document(&v612, &v612);
    assert_eq!(status, Some(0), "{same}");
    assert_eq!(same["carries_over"], true);
    assert_eq!(same["registers"], serde_json::json!([]));
}

#[test]
fn bad_input_is_refused_with_what_and_where() {
    let dir = scratch_dir("bad");
    let arm = fingerprint("arm64-6.12-max", &dir);
    let x86 = fingerprint("single", &dir);
    let out = migrate(&x86, &arm, false);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("x86_64") && stderr.contains("aarch64"),
        "{stderr}"
    );
    let missing = dir.join("missing.json");
    let out = migrate(&missing, &arm, false);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.json"));
    // --migrate and two fingerprints are required.
    let out = vmfleet().args(["check"]).arg(&arm).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn x86_between_two_amd_hosts_the_features_the_guest_would_lose_are_named() {
    let dir = scratch_dir("x86");
    let older = fingerprint("single", &dir);
    let newer = root().join("fixtures/fingerprints/x86-amd-family25-model17.host.json");
    // Down to the host without AVX-512: every AVX-512 feature the guest saw is lost.
    let (down, status) = document(&newer, &older);
    assert_eq!(status, Some(7), "{down}");
    for feature in ["avx512f", "avx512bw", "avx512vl"] {
        assert_eq!(
            about(&down, feature),
            [("lost".to_string(), true)],
            "{feature}"
        );
    }
    assert_eq!(
        down["registers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["register"] == "avx512f")
            .unwrap()["id"],
        "7.0.ebx[16]"
    );
    // Up: everything the older host's guest sees, the newer host gives.
    let (up, status) = document(&older, &newer);
    assert_eq!(status, Some(0), "{up}");
    let text = String::from_utf8(migrate(&newer, &older, false).stdout).unwrap();
    assert!(text.contains("feature(s) block the move"), "{text}");
}

#[test]
fn with_a_template_the_guests_model_is_the_templates_on_the_source() {
    let dir = scratch_dir("template");
    let (v612, v72, v61) = (
        fingerprint("arm64-6.12-max", &dir),
        fingerprint("arm64-7.2-max+model", &dir),
        fingerprint("arm64-6.1-max", &dir),
    );
    let no_aes = root().join("examples/templates/arm-no-aes.toml");
    let out = vmfleet()
        .args(["check", "--json", "--migrate", "--template"])
        .arg(&no_aes)
        .arg(&v612)
        .arg(&v72)
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).expect("only JSON on stdout");
    assert_eq!(doc["template"], "arm-no-aes");
    // The bitmap only 7.2 lists: vmfleet knows it, so the policy does not apply, and it says so.
    let bmap2 = doc["registers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["register"] == "KVM_REG_ARM_VENDOR_HYP_BMAP_2")
        .expect("7.2's new bitmap is named");
    assert_eq!(bmap2["problem"], "new");
    assert_eq!(bmap2["policy"]["in_effect"], "clear");
    assert_eq!(bmap2["policy"]["known"], true);
    assert_eq!(bmap2["blocks"], false);
    // A template the source cannot run (6.1 cannot lower AES) is refused before any comparison.
    let out = vmfleet()
        .args(["check", "--migrate", "--template"])
        .arg(&no_aes)
        .arg(&v61)
        .arg(&v612)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot run on the source host"), "{stderr}");
    assert!(stderr.contains("ID_AA64ISAR0_EL1"), "{stderr}");
}
