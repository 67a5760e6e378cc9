//! The model backend's commands, end to end, on any machine (no /dev/kvm): `vmfleet replay
//! --model` of every fixture with its own fingerprint agrees with every recorded CPU-model call
//! (no allowlist), a foreign fingerprint is a divergence (3), bad input is 4 and conflicting
//! options 2; `vmfleet model judge` answers each line, keeps state from line to line, and answers
//! a bad line with an error line.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn vmfleet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmfleet"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmfleet-model-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixtures() -> Vec<PathBuf> {
    let mut traces: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "trace"))
        .collect();
    traces.sort();
    traces
}

/// `trace fingerprint --json` of `trace`, written to `dir`.
fn fingerprint(trace: &Path, dir: &Path) -> PathBuf {
    let out = vmfleet()
        .args(["trace", "fingerprint", "--json"])
        .arg(trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "fingerprint of {}", trace.display());
    let path = dir.join(format!(
        "{}.json",
        trace.file_stem().unwrap().to_string_lossy()
    ));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

fn replay_model(fp: &Path, trace: &Path, json: bool) -> Output {
    let mut cmd = vmfleet();
    cmd.arg("replay").arg("--model").arg(fp).arg(trace);
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

#[test]
fn every_fixture_agrees_with_the_model_of_its_own_fingerprint() {
    let dir = scratch_dir("own");
    let mut arches = Vec::new();
    for trace in fixtures() {
        let fp = fingerprint(&trace, &dir);
        let out = replay_model(&fp, &trace, true);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}{}",
            trace.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["differences"], Value::Array(Vec::new()));
        assert!(doc["judged"].as_u64().unwrap() > 0, "{}", trace.display());
        let arch: Value = serde_json::from_slice(&std::fs::read(&fp).unwrap()).unwrap();
        arches.push(arch["arch"].as_str().unwrap().to_string());
    }
    assert!(arches.iter().any(|a| a == "x86_64") && arches.iter().any(|a| a == "aarch64"));
}

#[test]
fn a_foreign_fingerprint_lists_the_differences_and_exits_3() {
    let dir = scratch_dir("foreign");
    let new = fingerprint(&root().join("fixtures/arm64-6.12-max.trace"), &dir);
    let old = root().join("fixtures/arm64-6.1-max.trace");
    let out = replay_model(&new, &old, false);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("recorded:") && text.contains("predicted:"),
        "{text}"
    );
    let out = replay_model(&new, &old, true);
    assert_eq!(out.status.code(), Some(3));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &doc["differences"][0];
    for key in ["stream", "seq", "call", "recorded", "predicted"] {
        assert!(!first[key].is_null(), "{key} in {first}");
    }
}

#[test]
fn bad_input_and_conflicting_options() {
    let dir = scratch_dir("bad");
    let trace = root().join("fixtures/single.trace");
    let missing = replay_model(&dir.join("none.json"), &trace, false);
    assert_eq!(missing.status.code(), Some(4));
    let not_fp = dir.join("not.json");
    std::fs::write(&not_fp, "{\"schema\": \"vmfleet.run.v1\"}").unwrap();
    let out = replay_model(&not_fp, &trace, false);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not.json"));
    let fp = fingerprint(&trace, &dir);
    let both = vmfleet()
        .arg("replay")
        .arg("--model")
        .arg(&fp)
        .arg("--transcript")
        .arg(dir.join("t.txt"))
        .arg(&trace)
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
}

/// `model judge FP` with `lines` on stdin: its answers, one JSON value per line.
fn judge(fp: &Path, lines: &[&str]) -> Vec<Value> {
    let mut child = vmfleet()
        .args(["model", "judge"])
        .arg(fp)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn judge_answers_arm64_calls_and_the_lock() {
    let dir = scratch_dir("judge-arm");
    let fp = fingerprint(&root().join("fixtures/arm64-6.12-max.trace"), &dir);
    let pfr0 = "\"0x603000000013c020\"";
    let answers = judge(
        &fp,
        &[
            r#"{"call":"arm_preferred_target"}"#,
            r#"{"call":"get_one_reg","id":"0x603000000013c020"}"#,
            r#"{"call":"arm_vcpu_init","target":5,"features":"0xc"}"#,
            &format!(r#"{{"call":"get_one_reg","id":{pfr0}}}"#),
            &format!(r#"{{"call":"set_one_reg","id":{pfr0},"value":"0x1"}}"#),
            r#"{"call":"run"}"#,
            &format!(r#"{{"call":"set_one_reg","id":{pfr0},"value":"0x2"}}"#),
            "not json",
            r#"{"call":"nope"}"#,
            r#"{"call":"get_one_reg"}"#,
            "",
            r#"{"call":"get_cpuid2"}"#,
        ],
    );
    assert_eq!(answers.len(), 11, "{answers:?}");
    assert_eq!(answers[0]["reply"]["target"], 5);
    assert_eq!(answers[1]["errno"], "ENOEXEC");
    assert_eq!(answers[2]["ok"], true);
    assert!(answers[3]["reply"].as_str().unwrap().starts_with("0x"));
    assert_eq!(
        (&answers[4]["errno"], &answers[4]["origin"]),
        (&Value::from("EINVAL"), &Value::from("kernel"))
    );
    assert_eq!(answers[5]["judged"], false);
    assert_eq!(answers[6]["origin"], "vmfleet_lock");
    assert!(answers[7]["error"].as_str().unwrap().contains("not JSON"));
    // An error names the input line it answers (1-based, blank lines counted).
    assert!(
        answers[7]["error"]
            .as_str()
            .unwrap()
            .starts_with("line 8: "),
        "{}",
        answers[7]
    );
    assert!(
        answers[8]["error"]
            .as_str()
            .unwrap()
            .contains("unknown call")
    );
    assert!(answers[9]["error"].as_str().unwrap().contains("\"id\""));
    assert_eq!(answers[10]["errno"], "ENOTTY");
}

#[test]
fn judge_answers_x86_calls_with_the_measured_rewrites() {
    let dir = scratch_dir("judge-x86");
    let fp = fingerprint(&root().join("fixtures/single.trace"), &dir);
    let doc: Value = serde_json::from_slice(&std::fs::read(&fp).unwrap()).unwrap();
    let supported = doc["x86"]["supported_cpuid"]["table"].to_string();
    let answers = judge(
        &fp,
        &[
            r#"{"call":"get_supported_cpuid"}"#,
            &format!(r#"{{"call":"set_cpuid2","table":{supported}}}"#),
            r#"{"call":"get_cpuid2"}"#,
            r#"{"call":"run"}"#,
            r#"{"call":"set_cpuid2","table":[]}"#,
            r#"{"call":"set_cpuid2","vcpu":1,"table":"x"}"#,
            r#"{"call":"get_emulated_cpuid"}"#,
        ],
    );
    assert_eq!(answers[0]["reply"], doc["x86"]["supported_cpuid"]["table"]);
    assert_eq!(answers[1]["ok"], true);
    // 0xd.1.ebx tracks guest state: the host holds the measured value after the write.
    let held = answers[2]["reply"].as_array().unwrap();
    let leaf_d1 = held
        .iter()
        .find(|e| e["function"] == 13 && e["index"] == 1)
        .unwrap();
    assert_eq!(leaf_d1["ebx"], 576);
    assert_eq!(answers[4]["origin"], "vmfleet_lock");
    assert!(answers[5]["error"].as_str().unwrap().contains("table"));
    // A format-1 trace's header has no emulated table: the fact is unknown, not guessed.
    assert!(doc["x86"]["emulated_cpuid"].is_null());
    assert_eq!(answers[6]["ok"], Value::Null, "{}", answers[6]);
    assert!(
        answers[6]["unknown"]
            .as_str()
            .is_some_and(|why| why.contains("emulated")),
        "{}",
        answers[6]
    );
}

#[test]
fn run_model_sets_up_each_cpu_model_and_stops_at_the_first_run() {
    let dir = scratch_dir("run");
    for name in ["single", "arm64-6.12-max"] {
        let fp = fingerprint(&root().join(format!("fixtures/{name}.trace")), &dir);
        let spec = root().join(format!("fixtures/specs/{name}.toml"));
        let out = vmfleet()
            .arg("run")
            .arg("--model")
            .arg(&fp)
            .arg(&spec)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("vmfleet transcript"), "{text}");
        assert!(
            text.contains("the model backend cannot run guests"),
            "{text}"
        );
        assert!(text.contains("== calls"), "{text}");
        let json = vmfleet()
            .arg("run")
            .arg("--model")
            .arg(&fp)
            .arg("--json")
            .arg(&spec)
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(doc["schema"], "vmfleet.run.v1");
        // Each VM that got its CPU model set up stops at its first run, which is no failure.
        assert!(
            text.contains("at its first KVM_RUN (the model runs no guests)"),
            "{text}"
        );
        let reached: Vec<&Value> = doc["vms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|vm| vm["state"]["status"] == "at_first_run")
            .collect();
        assert!(!reached.is_empty(), "{name}: {doc}");
        assert!(reached.iter().all(|vm| vm["failed"] == false), "{name}");
    }
    // A fleet of the other architecture is refused before anything runs.
    let x86 = fingerprint(&root().join("fixtures/single.trace"), &dir);
    let out = vmfleet()
        .arg("run")
        .arg("--model")
        .arg(&x86)
        .arg(root().join("fixtures/specs/arm64-6.1-max.toml"))
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
}
