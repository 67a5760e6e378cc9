//! The host fingerprint, end to end: `vmfleet trace fingerprint` of a trace recorded here equals
//! `vmfleet host --fingerprint` (needs /dev/kvm, SKIPPED otherwise), on arm64 too (a live
//! fingerprint saved from the arm64 lab against a fixture recorded there), and bad traces get the exit
//! statuses of `supervisor/src/exit.rs` (4 bad_input, 5 incomplete) on any machine, and no KVM is
//! 6 (no_kvm).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vcpu::skip::kvm_usable;

fn vmfleet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmfleet"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmfleet-fp-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn json_of(out: &Output, what: &str) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not one JSON document: {e}"))
}

/// On one host both ways give one document: a recorded run of the default fleet, fingerprinted,
/// equals the fingerprint measured live.
#[test]
fn trace_fingerprint_of_a_run_recorded_here_equals_the_live_fingerprint() {
    if !kvm_usable("trace_fingerprint_of_a_run_recorded_here_equals_the_live_fingerprint") {
        return;
    }
    let dir = scratch_dir("equal");
    let trace = dir.join("demo.trace");
    let run = vmfleet()
        .args(["run", "--json", "--record"])
        .arg(&trace)
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "vmfleet run --record: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let recorded = json_of(
        &vmfleet()
            .args(["trace", "fingerprint", "--json"])
            .arg(&trace)
            .output()
            .unwrap(),
        "trace fingerprint --json",
    );
    let mut live = json_of(
        &vmfleet()
            .args(["host", "--fingerprint", "--json"])
            .output()
            .unwrap(),
        "host --fingerprint --json",
    );
    // The probes of forced bits are the live fingerprint's own (a fleet never asks them): on
    // x86 live has them, the trace has null; everything else is equal.
    if live["arch"] == "x86_64" {
        assert!(
            live["x86"]["forced_bits"].is_array(),
            "live probes forced bits"
        );
        assert!(recorded["x86"]["forced_bits"].is_null());
        live["x86"]["forced_bits"] = Value::Null;
    }
    if recorded != live {
        let show = |v: &Value| serde_json::to_string_pretty(v).unwrap();
        let (a, b) = (show(&recorded), show(&live));
        let first = a
            .lines()
            .zip(b.lines())
            .position(|(x, y)| x != y)
            .unwrap_or(0);
        panic!(
            "the trace's fingerprint differs from the live one near line {first}:\n  trace: {}\n  live:  {}",
            a.lines().nth(first).unwrap_or("<end>"),
            b.lines().nth(first).unwrap_or("<end>")
        );
    }
    // The default fleet's first vCPU is given the default model: its rewrites are the host's.
    // The emulated table is in the trace (its header) as in the live document, wherever KVM
    // offers it (KVM_CAP_EXT_EMUL_CPUID, 95): the equality above covers it.
    if recorded["arch"] == "x86_64" {
        assert_eq!(recorded["x86"]["host_rewrites"]["default_model"], true);
        let offers_emulated = recorded["capabilities"]
            .as_array()
            .is_some_and(|caps| caps.iter().any(|c| c["number"] == 95 && c["value"] != 0));
        assert_eq!(
            recorded["x86"]["emulated_cpuid"].is_object(),
            offers_emulated,
            "{}",
            recorded["x86"]["emulated_cpuid"]
        );
        // The model backend answers KVM_GET_EMULATED_CPUID from the document.
        let fp = dir.join("fp.json");
        std::fs::write(&fp, serde_json::to_vec(&recorded).unwrap()).unwrap();
        let mut judge = vmfleet()
            .args(["model", "judge"])
            .arg(&fp)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = judge.stdin.take().unwrap();
            writeln!(stdin, r#"{{"call":"get_emulated_cpuid"}}"#).unwrap();
        }
        let answer = json_of(&judge.wait_with_output().unwrap(), "model judge");
        match recorded["x86"]["emulated_cpuid"]["table"].as_array() {
            Some(table) => assert_eq!(answer["reply"].as_array(), Some(table), "{answer}"),
            None => assert_eq!(answer["ok"], Value::Null, "{answer}"),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The kernel probes of a live arm64 fingerprint and a trace's: live measures every one, a
/// fleet only those a verdict waited for. Each trace answer is `null` or the live one; then both
/// are set aside (`null`ed) so the rest compares whole. Returns the probes the trace had.
fn set_probes_aside(live: &mut Value, recorded: &mut Value) -> Vec<String> {
    let mut had = Vec::new();
    let names: Vec<String> = live["arm64"]["kernel_probes"]
        .as_object()
        .expect("live kernel probes")
        .keys()
        .cloned()
        .collect();
    for name in names {
        let at = format!("/arm64/kernel_probes/{name}");
        let live_answer = live.pointer(&at).cloned().unwrap_or(Value::Null);
        let trace_answer = recorded.pointer(&at).cloned().unwrap_or(Value::Null);
        assert!(
            !live_answer.is_null(),
            "{name}: host --fingerprint measures every probe"
        );
        if !trace_answer.is_null() {
            assert_eq!(trace_answer, live_answer, "{name}");
            had.push(name.clone());
        }
        *live.pointer_mut(&at).unwrap() = Value::Null;
        *recorded.pointer_mut(&at).unwrap() = Value::Null;
    }
    had
}

/// On real arm64 KVM both ways give one document too: `host --fingerprint --json` measured in the
/// arm64 lab (`fixtures/fingerprints/arm64-6.12-max.host.json`) equals `trace fingerprint` of the
/// `arm64-6.12-max+serve` fixture, recorded in that lab (kernel 6.12, `-cpu max`), but for the
/// kernel probes, by design: `host --fingerprint` always runs them, a fleet only when a verdict
/// waits for one, which this fleet's never does, so its trace has no answers (`null`).
/// `cargo xtask test` checks the same live in the lab.
#[test]
fn the_arm64_labs_live_fingerprint_equals_its_serve_fixtures_but_for_the_probes() {
    let path = root().join("fixtures/fingerprints/arm64-6.12-max.host.json");
    let mut live: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // What Linux 6.12 answers: EL1 = 0 accepted, DebugVer = 5 refused, PMUVer = 0xF stored as 0.
    assert_eq!(
        live["arm64"]["kernel_probes"],
        serde_json::json!({
            "el_floor": false,
            "debug_ver_floor": true,
            "pmu_imp_def": "reads-as-not-implemented"
        })
    );
    let mut recorded = json_of(
        &vmfleet()
            .args(["trace", "fingerprint", "--json"])
            .arg(root().join("fixtures/arm64-6.12-max+serve.trace"))
            .output()
            .unwrap(),
        "trace fingerprint --json arm64-6.12-max+serve",
    );
    assert!(set_probes_aside(&mut live, &mut recorded).is_empty());
    assert!(
        live == recorded,
        "the lab's live fingerprint and the serve fixture's differ"
    );
}

/// The same live arm64 fingerprint against `arm64-6.12-max+model`, recorded in the same lab by a
/// fleet that asks the EL0/EL1 floor probe: the probe's answer in the trace is the one measured
/// live, and the documents are equal but for `other_vcpu_inits`, by design: that fleet also
/// initialised vCPUs with other features (PMU), while `host --fingerprint` measures one feature
/// set, the default model's.
#[test]
fn the_arm64_labs_live_fingerprint_equals_its_model_fixtures_but_for_other_inits() {
    let path = root().join("fixtures/fingerprints/arm64-6.12-max.host.json");
    let mut live: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut recorded = json_of(
        &vmfleet()
            .args(["trace", "fingerprint", "--json"])
            .arg(root().join("fixtures/arm64-6.12-max+model.trace"))
            .output()
            .unwrap(),
        "trace fingerprint --json arm64-6.12-max+model",
    );
    assert_eq!(set_probes_aside(&mut live, &mut recorded), ["el_floor"]);
    let others = "/arm64/other_vcpu_inits";
    assert_eq!(live.pointer(others).unwrap(), &serde_json::json!([]));
    assert!(
        recorded
            .pointer(others)
            .unwrap()
            .as_array()
            .is_some_and(|inits| !inits.is_empty())
    );
    *live.pointer_mut(others).unwrap() = Value::Null;
    *recorded.pointer_mut(others).unwrap() = Value::Null;
    assert!(
        live == recorded,
        "the lab's live fingerprint and the model fixture's differ"
    );
}

/// Linux 7.2 (Debian's, from trixie-backports) in the arm64 lab (`-cpu max`): the live
/// fingerprint shows what changed after 6.12, as measured there (capability 239, the EL0/EL1
/// floor enforced, PSCI 1.3, `VENDOR_HYP_BMAP_2` listed at 0, TCR2/PIRE0/PIR no longer listed,
/// MIDR/REVIDR/AIDR writable masks full), and equals `trace fingerprint` of the
/// `arm64-7.2-max+model` fixture recorded in the same lab, the probes set aside (that fleet asked
/// only the floor probe: the same answer as live).
#[test]
fn the_arm64_labs_7_2_fingerprint_shows_the_newer_kernel_and_equals_its_model_fixtures() {
    let path = root().join("fixtures/fingerprints/arm64-7.2-max.host.json");
    let mut live: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(live["kernel_release"].as_str().unwrap().starts_with("7.2."));
    assert_eq!(
        live["arm64"]["kernel_probes"],
        serde_json::json!({
            "el_floor": true,
            "debug_ver_floor": true,
            "pmu_imp_def": "reads-as-not-implemented"
        })
    );
    let cap = |n: u64| {
        live["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["number"] == n)
            .map(|c| c["value"].clone())
    };
    assert_eq!(cap(239), Some(serde_json::json!(1)), "cap 239 offered");
    assert_eq!(live["arm64"]["psci_version"], "1.3");
    let firmware = live["arm64"]["firmware"].as_array().unwrap();
    let fw = |name: &str| {
        firmware
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| f["value"].clone())
    };
    assert_eq!(
        fw("KVM_REG_ARM_PSCI_VERSION"),
        Some(serde_json::json!("0x10003"))
    );
    assert_eq!(
        fw("KVM_REG_ARM_VENDOR_HYP_BMAP_2"),
        Some(serde_json::json!("0x0"))
    );
    let ids = live["arm64"]["reg_list"]["ids"].as_array().unwrap();
    for gone in [
        "0x603000000013c103",
        "0x603000000013c512",
        "0x603000000013c513",
    ] {
        assert!(!ids.iter().any(|i| i == gone), "{gone} listed");
    }
    let masks = live["arm64"]["writable_masks"].as_array().unwrap();
    // MIDR_EL1 (index 0), REVIDR_EL1 (6), AIDR_EL1 (op1 1, op2 7: 71).
    assert_eq!(masks[0], "0xffffffff");
    assert_eq!(masks[6], "0xffffffffffffffff");
    assert_eq!(masks[71], "0xffffffffffffffff");
    let mut recorded = json_of(
        &vmfleet()
            .args(["trace", "fingerprint", "--json"])
            .arg(root().join("fixtures/arm64-7.2-max+model.trace"))
            .output()
            .unwrap(),
        "trace fingerprint --json arm64-7.2-max+model",
    );
    assert_eq!(set_probes_aside(&mut live, &mut recorded), ["el_floor"]);
    assert!(
        live == recorded,
        "the lab's live 7.2 fingerprint and the 7.2 model fixture's differ"
    );
}
