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
    let live = json_of(
        &vmfleet()
            .args(["host", "--fingerprint", "--json"])
            .output()
            .unwrap(),
        "host --fingerprint --json",
    );
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

/// On real arm64 KVM both ways give one document too: `host --fingerprint --json` measured in the
/// arm64 lab (`fixtures/fingerprints/arm64-6.12-max.host.json`) equals `trace fingerprint` of the
/// `arm64-6.12-max+serve` fixture, recorded in that lab (kernel 6.12, `-cpu max`), but for the
/// EL0/EL1 floor, by design: `host --fingerprint` always runs the probe, a fleet only when a plan
/// lowers EL0 or EL1, which this fleet's never does, so its trace has no answer (`null`).
/// `cargo xtask test` checks the same live in the lab.
#[test]
fn the_arm64_labs_live_fingerprint_equals_its_serve_fixtures_but_for_the_floor() {
    let path = root().join("fixtures/fingerprints/arm64-6.12-max.host.json");
    let mut live: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut recorded = json_of(
        &vmfleet()
            .args(["trace", "fingerprint", "--json"])
            .arg(root().join("fixtures/arm64-6.12-max+serve.trace"))
            .output()
            .unwrap(),
        "trace fingerprint --json arm64-6.12-max+serve",
    );
    let floor = "/arm64/kernel_probes/el_floor";
    assert!(live.pointer(floor).unwrap().is_boolean());
    assert!(recorded.pointer(floor).unwrap().is_null());
    *live.pointer_mut(floor).unwrap() = Value::Null;
    *recorded.pointer_mut(floor).unwrap() = Value::Null;
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
    let floor = "/arm64/kernel_probes/el_floor";
    assert!(recorded.pointer(floor).unwrap().is_boolean());
    assert_eq!(live.pointer(floor), recorded.pointer(floor));
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

/// The text summary names the schema and the arch-specific facts of each fixture.
#[test]
fn trace_fingerprint_text_of_the_fixtures() {
    let out = vmfleet()
        .args(["trace", "fingerprint"])
        .arg(root().join("fixtures/single.trace"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("schema:       vmfleet.fingerprint.v1"),
        "{text}"
    );
    assert!(text.contains("supported CPUID: 56 entries"), "{text}");
    // A format-1 trace's header predates the emulated table: unknown, not guessed.
    assert!(
        text.contains("emulated CPUID:  unknown (not recorded)"),
        "{text}"
    );
    assert!(text.contains("to the default model"), "{text}");
    let out = vmfleet()
        .args(["trace", "fingerprint"])
        .arg(root().join("fixtures/arm64-6.12-max.trace"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("preferred target: 5"), "{text}");
    assert!(text.contains("psci version: 1.1"), "{text}");
    assert!(text.contains("writable masks: 192"), "{text}");
}

/// A 6.1 trace has no writable masks (the call came in 6.7): the fact is null, not guessed.
#[test]
fn a_fact_the_trace_lacks_is_null() {
    let out = vmfleet()
        .args(["trace", "fingerprint", "--json"])
        .arg(root().join("fixtures/arm64-6.1-max.trace"))
        .output()
        .unwrap();
    let doc = json_of(&out, "trace fingerprint --json arm64-6.1-max");
    assert!(doc["arm64"]["writable_masks"].is_null());
    assert!(
        doc["arm64"]["limits"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    );
}

/// A trace cut short is 5 (incomplete), a file that is no trace 4 (bad_input); nothing on stdout.
#[test]
fn bad_traces_get_their_exit_statuses() {
    let dir = scratch_dir("bad");
    let bytes = std::fs::read(root().join("fixtures/single.trace")).unwrap();
    let cut = dir.join("cut.trace");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.join("garbage.trace");
    std::fs::write(&garbage, b"not a trace at all").unwrap();
    for (path, status) in [(&cut, 5), (&garbage, 4), (&dir.join("missing.trace"), 4)] {
        let out = vmfleet()
            .args(["trace", "fingerprint", "--json"])
            .arg(path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(status), "{}", path.display());
        assert!(out.stdout.is_empty(), "{}", path.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("reading trace"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Without a usable /dev/kvm (bound to /dev/null in a private mount namespace), `vmfleet host
/// --fingerprint --json` exits 6 (no_kvm), says why on stderr and prints no half document.
#[test]
fn host_fingerprint_without_kvm_exits_no_kvm() {
    let test = "host_fingerprint_without_kvm_exits_no_kvm";
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        vcpu::skip::skipped(test, "unshare --mount is unavailable (needs root)");
        return;
    }
    let script = "if [ -e /dev/kvm ]; then mount --bind /dev/null /dev/kvm || exit 97; fi; \
                  exec \"$0\" host --fingerprint --json";
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(env!("CARGO_BIN_EXE_vmfleet"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(97),
        "could not hide /dev/kvm: {err}"
    );
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("/dev/kvm"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
