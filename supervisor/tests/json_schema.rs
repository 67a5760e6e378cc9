//! Every `--json` output validates against its schema in `supervisor/schemas/`: replay-derived
//! output (`trace show --json`, `trace fingerprint --json`, `replay --json` and `replay --model
//! --json` of every fixture, x86 and arm64, `model judge`'s answer lines, and `nfd --json` over a
//! saved fingerprint) on any machine; live output (`run`, `host`, `host --fingerprint`, `bench`, `ctl`)
//! when /dev/kvm is usable (SKIPPED otherwise).
//! The schema files themselves must be valid JSON Schemas, and must reject wrong documents.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use vcpu::skip::kvm_usable;

fn vmfleet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmfleet"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The schema files and the version string each document must carry.
const SCHEMAS: [(&str, &str); 9] = [
    ("run", "vmfleet.run.v1"),
    ("host", "vmfleet.host.v1"),
    ("trace-show", "vmfleet.trace-show.v1"),
    ("ctl", "vmfleet.ctl.v1"),
    ("bench", "vmfleet.bench.v1"),
    ("fingerprint", "vmfleet.fingerprint.v1"),
    ("model-replay", "vmfleet.model-replay.v1"),
    ("model-judge", "vmfleet.model-judge.v1"),
    ("nfd", "vmfleet.nfd.v1"),
];

fn schema(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("schemas/{name}.v1.schema.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn validator(name: &str) -> jsonschema::Validator {
    jsonschema::validator_for(&schema(name))
        .unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"))
}

/// Validate `doc` against schema `name`, failing with every error and where it is.
fn check(name: &str, doc: &Value, source: &str) {
    check_with(&validator(name), name, doc, source);
}

fn check_with(validator: &jsonschema::Validator, name: &str, doc: &Value, source: &str) {
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("  at {}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{source} does not match schema {name}:\n{}",
        errors.join("\n")
    );
    let version = SCHEMAS.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(doc["schema"], version, "{source}");
}

/// Run vmfleet; its stdout must be JSON only (nothing else on it), whatever went to stderr.
fn json_of(out: &Output, what: &str) -> Value {
    let stdout = String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8");
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is not one JSON document ({e}):\n{stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn fixtures() -> Vec<PathBuf> {
    let mut traces: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures"))
        .expect("fixtures/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "trace"))
        .collect();
    traces.sort();
    assert!(traces.len() >= 2, "no fixtures found");
    traces
}

#[test]
fn the_schema_files_are_valid_schemas() {
    for (name, version) in SCHEMAS {
        let schema = schema(name);
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("{name}.v1.schema.json is not a valid JSON Schema: {e}");
        }
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}"
        );
        assert!(
            schema["title"]
                .as_str()
                .is_some_and(|t| t.contains(version)),
            "{name}: the title names the version"
        );
        assert!(
            schema["description"].is_string(),
            "{name} has a description"
        );
    }
}

/// The schemas are not vacuous: documents with the wrong version, an enum in another spelling,
/// or prose where data belongs are rejected.
#[test]
fn the_schemas_reject_wrong_documents() {
    let reject = |name: &str, doc: Value| {
        let validator = jsonschema::validator_for(&schema(name)).unwrap();
        assert!(!validator.is_valid(&doc), "{name} accepted {doc}");
    };
    reject(
        "run",
        serde_json::json!({"schema": "vmfleet.run.v2", "fleet": "f", "vms": []}),
    );
    let vm = |state: Value, drift: Value| {
        serde_json::json!({"schema": "vmfleet.run.v1", "fleet": "f", "vms": [{
            "id": 0, "name": "a", "vcpu_count": 1, "requested_hidden": [], "state": state,
            "vcpus": [{"id": 0, "drift": drift, "not_honoured": [], "already_absent": [],
                       "guest": null, "exits": 1, "end": "halted", "run_end": "halted"}],
            "after_run": [], "failed": false}]})
    };
    let good = vm(
        serde_json::json!({"status": "completed"}),
        serde_json::json!([]),
    );
    assert!(
        jsonschema::validator_for(&schema("run"))
            .unwrap()
            .is_valid(&good)
    );
    reject(
        "run",
        vm(serde_json::json!("Completed"), serde_json::json!([])),
    );
    reject(
        "run",
        vm(
            serde_json::json!({"status": "failed"}),
            serde_json::json!([]),
        ),
    );
    reject(
        "run",
        vm(
            serde_json::json!({"status": "completed"}),
            serde_json::json!(["1.0.ecx: pni 0->1 (kernel rewrote)"]),
        ),
    );
    reject(
        "trace-show",
        serde_json::json!({"schema": "vmfleet.trace-show.v1", "kind": "end", "status": "Complete",
                           "events": 1, "offset": null, "reason": null, "text": "x"}),
    );
    reject(
        "ctl",
        serde_json::json!({"schema": "vmfleet.ctl.v1", "ok": false}),
    );
    reject("host", serde_json::json!({"schema": "vmfleet.host.v1"}));
    reject(
        "bench",
        serde_json::json!({"schema": "vmfleet.bench.v1", "host": {}}),
    );
    let fingerprint = |arch: Value, x86: Value| {
        serde_json::json!({"schema": "vmfleet.fingerprint.v1", "arch": arch,
            "kernel_release": "6.12", "kvm_module": null, "microcode": null,
            "kvm_api_version": 12, "capabilities": [],
            "cpu": {"vendor": "v", "family": 6, "model": 1, "stepping": 0, "model_name": "",
                    "midr": null, "revidr": null},
            "x86": x86, "arm64": null})
    };
    reject(
        "model-replay",
        serde_json::json!({"schema": "vmfleet.model-replay.v1", "trace": "t", "fingerprint": "f",
                           "judged": 1, "not_judged": 0, "differences": ["#3 differs"]}),
    );
    reject(
        "model-judge",
        serde_json::json!({"schema": "vmfleet.model-judge.v1", "ok": false, "errno": "EINVAL"}),
    );
    reject(
        "model-judge",
        serde_json::json!({"schema": "vmfleet.model-judge.v1", "ok": false, "errno": "EINVAL",
                           "origin": "vmfleet lock"}),
    );
    let nfd = |label: Value| {
        serde_json::json!({"schema": "vmfleet.nfd.v1", "path": "/x",
            "fingerprint_digest": "sha256-0123456789abcdef0123456789abcdef",
            "expiry_time": null, "labels": [label]})
    };
    assert!(
        jsonschema::validator_for(&schema("nfd"))
            .unwrap()
            .is_valid(&nfd(serde_json::json!(
                {"name": "vmfleet.dev/template.a", "value": "true", "template": "a"}
            )))
    );
    reject(
        "nfd",
        nfd(serde_json::json!({"name": "vmfleet.dev/template.a b", "value": "true"})),
    );
    reject(
        "nfd",
        nfd(serde_json::json!({"name": "vmfleet.dev/template.a", "value": true})),
    );
    let no_facts = serde_json::json!({"supported_cpuid": null, "emulated_cpuid": null,
                                      "host_rewrites": null});
    assert!(
        jsonschema::validator_for(&schema("fingerprint"))
            .unwrap()
            .is_valid(&fingerprint(serde_json::json!("x86_64"), no_facts.clone()))
    );
    reject(
        "fingerprint",
        fingerprint(serde_json::json!("x86"), no_facts),
    );
    reject(
        "fingerprint",
        fingerprint(
            serde_json::json!("x86_64"),
            serde_json::json!({"supported_cpuid": "56 entries", "emulated_cpuid": null,
                               "host_rewrites": null}),
        ),
    );
}

/// `trace show --json` of every fixture: every line is a document of its schema, stdout holds
/// nothing else, and the lines are a header, events and an end.
#[test]
fn trace_show_json_of_every_fixture_matches_its_schema() {
    let validator = validator("trace-show");
    for trace in fixtures() {
        let out = vmfleet()
            .args(["trace", "show", "--json"])
            .arg(&trace)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", trace.display());
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect();
        for (i, line) in lines.iter().enumerate() {
            check_with(
                &validator,
                "trace-show",
                line,
                &format!("{} line {}", trace.display(), i + 1),
            );
        }
        assert_eq!(lines[0]["kind"], "header");
        assert_eq!(lines.last().unwrap()["kind"], "end");
        assert_eq!(lines.last().unwrap()["status"], "complete");
        let events = lines.iter().filter(|l| l["kind"] == "event").count();
        assert_eq!(lines.last().unwrap()["events"], events as u64);
    }
}

/// A fingerprint with measured kernel probes (a trace whose fleet asked them, or `host
/// --fingerprint` on arm64) is a document of the schema, each answer as measured.
#[test]
fn measured_kernel_probes_match_the_fingerprint_schema() {
    use supervisor::fingerprint::{Arm64Facts, Facts, Fingerprint, X86Facts};
    use vcpu::model::arm64::host::{KernelProbes, PmuImpDef};
    let pmu = [
        None,
        Some(PmuImpDef::ReadsAsNotImplemented),
        Some(PmuImpDef::Kept),
        Some(PmuImpDef::Refused),
    ];
    for (i, pmu_imp_def) in pmu.into_iter().enumerate() {
        let floor = [Some(true), Some(false), None][i % 3];
        let probes = KernelProbes {
            el_floor: floor,
            debug_ver_floor: [None, Some(true), Some(false)][i % 3],
            pmu_imp_def,
        };
        let doc = serde_json::to_value(Fingerprint::build(&Facts {
            arch: vcpu::GuestArch::Aarch64,
            host: recorder::HostFingerprint::default(),
            x86: X86Facts::default(),
            arm64: Arm64Facts {
                probes,
                ..Arm64Facts::default()
            },
        }))
        .unwrap();
        let section = &doc["arm64"]["kernel_probes"];
        assert_eq!(section["el_floor"], serde_json::json!(probes.el_floor));
        assert_eq!(
            section["debug_ver_floor"],
            serde_json::json!(probes.debug_ver_floor)
        );
        assert_eq!(
            section["pmu_imp_def"],
            serde_json::json!(pmu_imp_def.map(PmuImpDef::name))
        );
        check("fingerprint", &doc, &format!("{probes:?}"));
    }
}

/// `host --fingerprint --json` measured live in the arm64 lab (real arm64 KVM) is a document of
/// the schema: the saved ones in `fixtures/fingerprints/` (`arm64-6.12-max.host.json`: kernel
/// 6.12, `-cpu max`, the lab the `arm64-6.12-max+serve` fixture was recorded in; made by `cargo
/// xtask arm64-lab -- host --fingerprint --json`, its stdout), and the one `cargo xtask test`'s
/// lab step just measured when it names it in `VMFLEET_LIVE_FINGERPRINT`.
#[test]
fn live_arm64_fingerprints_match_the_schema() {
    let dir = root().join("fixtures/fingerprints");
    let mut documents: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures/fingerprints/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    documents.sort();
    assert!(
        !documents.is_empty(),
        "no saved fingerprints in {}",
        dir.display()
    );
    documents.extend(std::env::var_os("VMFLEET_LIVE_FINGERPRINT").map(PathBuf::from));
    let validator = validator("fingerprint");
    for path in documents {
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let doc: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not one JSON document: {e}", path.display()));
        let source = path.display().to_string();
        check_with(&validator, "fingerprint", &doc, &source);
        if doc["arch"] == "x86_64" {
            // A saved x86 host (for `check --migrate` tests): measured live, so its supported
            // and emulated tables and what the host rewrites are all there.
            assert!(doc["arm64"].is_null(), "{source}");
            for part in ["supported_cpuid", "emulated_cpuid", "host_rewrites"] {
                assert!(doc["x86"][part].is_object(), "{source}: {part}");
            }
            continue;
        }
        assert_eq!(doc["arch"], "aarch64", "{source}");
        assert!(doc["x86"].is_null(), "{source}");
        // Measured live: the floor probe always runs, the register list is the kernel's.
        assert!(
            doc["arm64"]["kernel_probes"]["el_floor"].is_boolean(),
            "{source}"
        );
        assert!(
            doc["arm64"]["reg_list"]["count"]
                .as_u64()
                .is_some_and(|n| n > 200),
            "{source}"
        );
    }
}

/// `trace fingerprint --json` of every fixture (x86 and arm64) is one document of its schema, with
/// the section of the trace's architecture filled from the recorded calls.
#[test]
fn trace_fingerprint_json_of_every_fixture_matches_its_schema() {
    let validator = validator("fingerprint");
    for trace in fixtures() {
        let out = vmfleet()
            .args(["trace", "fingerprint", "--json"])
            .arg(&trace)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", trace.display());
        let doc = json_of(&out, &format!("trace fingerprint {}", trace.display()));
        check_with(
            &validator,
            "fingerprint",
            &doc,
            &trace.display().to_string(),
        );
        match doc["arch"].as_str() {
            Some("x86_64") => {
                assert!(doc["arm64"].is_null(), "{}", trace.display());
                assert!(
                    doc["x86"]["supported_cpuid"].is_object(),
                    "{}",
                    trace.display()
                );
                assert!(
                    doc["x86"]["host_rewrites"].is_object(),
                    "{}",
                    trace.display()
                );
            }
            Some("aarch64") => {
                assert!(doc["x86"].is_null(), "{}", trace.display());
                assert!(doc["arm64"]["reg_list"].is_object(), "{}", trace.display());
                assert!(
                    doc["arm64"]["preferred_target"].is_u64(),
                    "{}",
                    trace.display()
                );
                // Only the +model fleets lower EL0/EL1, so only they asked the probe: real 6.12
                // accepted PFR0.EL1 = 0, so it has no floor (false); real 7.2 refused it (true).
                let el_floor = &doc["arm64"]["kernel_probes"]["el_floor"];
                if trace.ends_with("arm64-6.12-max+model.trace") {
                    assert_eq!(el_floor, &Value::Bool(false), "{}", trace.display());
                } else if trace.ends_with("arm64-7.2-max+model.trace") {
                    assert_eq!(el_floor, &Value::Bool(true), "{}", trace.display());
                } else {
                    assert!(el_floor.is_null(), "{}", trace.display());
                }
            }
            other => panic!("{}: arch {other:?}", trace.display()),
        }
    }
}

/// A trace cut short still gives schema-valid lines, its end saying where reading stopped.
#[test]
fn trace_show_json_of_a_cut_trace_matches_its_schema() {
    let bytes = std::fs::read(root().join("fixtures/single.trace")).unwrap();
    let dir = std::env::temp_dir().join(format!("vmfleet-json-cut-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cut = dir.join("cut.trace");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = vmfleet()
        .args(["trace", "show", "--json"])
        .arg(&cut)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "exit status incomplete");
    let validator = validator("trace-show");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for line in &lines {
        check_with(&validator, "trace-show", line, "the cut trace");
    }
    let end = lines.last().unwrap();
    assert_eq!(end["status"], "truncated", "{end}");
    assert!(
        end["offset"].as_u64().unwrap() <= bytes.len() as u64 / 2,
        "{end}"
    );
    assert!(end["reason"].is_string(), "{end}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `replay --json` of every fixture, x86 and arm64: the report `run --json` prints, validated.
#[test]
fn replay_json_of_every_fixture_matches_the_run_schema() {
    let mut arches = Vec::new();
    for trace in fixtures() {
        let out = vmfleet()
            .args(["replay", "--json"])
            .arg(&trace)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", trace.display());
        let report = json_of(&out, &trace.display().to_string());
        check("run", &report, &trace.display().to_string());
        let vms = report["vms"].as_array().unwrap();
        if vms.iter().any(|vm| vm["arm64"].is_object()) {
            arches.push("aarch64");
        } else {
            arches.push("x86_64");
        }
        // Drift is data: every change names its register and kind.
        for vcpu in vms.iter().flat_map(|vm| vm["vcpus"].as_array().unwrap()) {
            for change in vcpu["drift"].as_array().unwrap() {
                assert!(change["register"].is_string() && change["kind"].is_string());
            }
        }
    }
    assert!(
        arches.contains(&"aarch64") && arches.contains(&"x86_64"),
        "{arches:?}"
    );
}

#[test]
fn live_run_json_matches_the_run_schema() {
    if !kvm_usable("live_run_json_matches_the_run_schema") {
        return;
    }
    let out = vmfleet().args(["run", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let report = json_of(&out, "run --json");
    check("run", &report, "run --json");
    // The demo fleet on a host that rewrites CPUID reports drift as data, with names.
    for change in report["vms"][0]["vcpus"][0]["drift"].as_array().unwrap() {
        assert!(
            [
                "kernel_rewrote",
                "tracks_guest_state",
                "entry_missing",
                "entry_added"
            ]
            .contains(&change["kind"].as_str().unwrap())
        );
    }
}

/// A trace recorded here (format 2: its header holds the emulated CPUID table on x86) shows as
/// documents of the trace-show schema too.
#[test]
fn trace_show_json_of_a_trace_recorded_here_matches_its_schema() {
    if !kvm_usable("trace_show_json_of_a_trace_recorded_here_matches_its_schema") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vmfleet-schema-show-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("demo.trace");
    let run = vmfleet()
        .args(["run", "--json", "--record"])
        .arg(&trace)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0));
    let out = vmfleet()
        .args(["trace", "show", "--json"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(out.status.success());
    let validator = validator("trace-show");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    for (i, line) in lines.iter().enumerate() {
        check_with(&validator, "trace-show", line, &format!("line {}", i + 1));
    }
    let header = &lines[0];
    assert_eq!(header["format_version"], recorder::FORMAT_VERSION);
    if header["guest_arch"] == "aarch64" {
        assert!(header["host"]["emulated_cpuid"].is_null());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn live_host_json_matches_the_host_schema() {
    if !kvm_usable("live_host_json_matches_the_host_schema") {
        return;
    }
    let out = vmfleet().args(["host", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    check("host", &json_of(&out, "host --json"), "host --json");
}

#[test]
fn live_host_fingerprint_json_matches_the_fingerprint_schema() {
    if !kvm_usable("live_host_fingerprint_json_matches_the_fingerprint_schema") {
        return;
    }
    let out = vmfleet()
        .args(["host", "--fingerprint", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    check(
        "fingerprint",
        &json_of(&out, "host --fingerprint --json"),
        "host --fingerprint --json",
    );
}

#[test]
fn live_bench_json_matches_the_bench_schema() {
    if !kvm_usable("live_bench_json_matches_the_bench_schema") {
        return;
    }
    let out = vmfleet()
        .args([
            "bench",
            "--json",
            "--floor-only",
            "--counts",
            "1",
            "--runs",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out, "bench --json");
    check("bench", &report, "bench --json");
    assert_eq!(report["start"][0]["verdict"]["status"], "skipped");
    // The recording, trace and replay figures, measured (met or missed) on a small fleet.
    let out = vmfleet()
        .args([
            "bench",
            "--json",
            "--record-only",
            "--record-counts",
            "100",
            "--trace-vms",
            "2",
            "--runs",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 9)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out, "bench --json --record-only");
    check("bench", &report, "bench --json --record-only");
    assert!(report["record"][0]["on"].is_object(), "{report}");
}

/// A daemon with no VMs: `ctl --json` replies, a success and a refusal, validate.
#[test]
fn live_ctl_json_matches_the_ctl_schema() {
    if !kvm_usable("live_ctl_json_matches_the_ctl_schema") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vmfleet-json-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("ctl.sock");
    let mut daemon = vmfleet()
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not create its socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ctl = |args: &[&str]| {
        vmfleet()
            .arg("ctl")
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .arg("--json")
            .output()
            .unwrap()
    };
    let list = ctl(&["list"]);
    assert_eq!(list.status.code(), Some(0));
    let reply = json_of(&list, "ctl list --json");
    check("ctl", &reply, "ctl list --json");
    assert_eq!(reply["result"], serde_json::json!([]));
    // A VM through its life: every reply validates, and states are snake_case data.
    let spec = dir.join("one.toml");
    std::fs::write(&spec, "[[vm]]\nname = \"one\"\nprobe_repeats = 1\n").unwrap();
    let created = ctl(&["create", spec.to_str().unwrap()]);
    check(
        "ctl",
        &json_of(&created, "ctl create --json"),
        "ctl create --json",
    );
    let listed = json_of(&ctl(&["list"]), "ctl list --json");
    check("ctl", &listed, "ctl list --json");
    assert_eq!(listed["result"][0]["phase"], "created", "{listed}");
    let started = json_of(&ctl(&["start", "one"]), "ctl start --json");
    check("ctl", &started, "ctl start --json");
    let waited = json_of(&ctl(&["wait", "one"]), "ctl wait --json");
    check("ctl", &waited, "ctl wait --json");
    assert_eq!(waited["result"]["phase"], "exited", "{waited}");
    assert_eq!(waited["result"]["exit_reason"], "halted", "{waited}");
    let model = json_of(&ctl(&["model", "one"]), "ctl model --json");
    check("ctl", &model, "ctl model --json");
    let vcpu = &model["result"]["vcpus"][0];
    let lines = vcpu["drift"].as_array().unwrap().len();
    let changes = vcpu["drift_changes"].as_array().unwrap();
    assert!(
        lines == 0 || !changes.is_empty(),
        "drift lines come with their data: {model}"
    );
    let removed = json_of(&ctl(&["remove", "one"]), "ctl remove --json");
    check("ctl", &removed, "ctl remove --json");
    let refused = ctl(&["model", "nosuch"]);
    assert_eq!(refused.status.code(), Some(7));
    let reply = json_of(&refused, "ctl model nosuch --json");
    check("ctl", &reply, "ctl model nosuch --json");
    assert_eq!(reply["ok"], false);
    let shutdown = ctl(&["shutdown"]);
    check(
        "ctl",
        &json_of(&shutdown, "ctl shutdown --json"),
        "ctl shutdown --json",
    );
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `replay --model FP TRACE --json` of every fixture with its own fingerprint, and with a foreign
/// one (differences listed), match their schema.
#[test]
fn replay_model_json_of_every_fixture_matches_its_schema() {
    let dir = std::env::temp_dir().join(format!("vmfleet-schema-model-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let validator = validator("model-replay");
    let traces = fixtures();
    let mut fingerprints = Vec::new();
    for trace in &traces {
        let out = vmfleet()
            .args(["trace", "fingerprint", "--json"])
            .arg(trace)
            .output()
            .unwrap();
        let fp = dir.join(format!("{}.json", fingerprints.len()));
        std::fs::write(&fp, &out.stdout).unwrap();
        fingerprints.push(fp);
    }
    for (i, trace) in traces.iter().enumerate() {
        // Its own fingerprint, and the next fixture's (foreign, usually other answers).
        for fp in [&fingerprints[i], &fingerprints[(i + 1) % traces.len()]] {
            let out = vmfleet()
                .arg("replay")
                .arg("--model")
                .arg(fp)
                .arg("--json")
                .arg(trace)
                .output()
                .unwrap();
            assert!(
                matches!(out.status.code(), Some(0 | 3)),
                "{}",
                trace.display()
            );
            let doc = json_of(&out, &format!("replay --model {}", trace.display()));
            check_with(
                &validator,
                "model-replay",
                &doc,
                &trace.display().to_string(),
            );
        }
    }
}

/// Every kind of `model judge` answer line matches the schema.
#[test]
fn model_judge_answers_match_their_schema() {
    let dir = std::env::temp_dir().join(format!("vmfleet-schema-judge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fp = dir.join("fp.json");
    let out = vmfleet()
        .args(["trace", "fingerprint", "--json"])
        .arg(root().join("fixtures/arm64-6.12-max.trace"))
        .output()
        .unwrap();
    std::fs::write(&fp, &out.stdout).unwrap();
    let lines = [
        r#"{"call":"arm_preferred_target"}"#,
        r#"{"call":"arm_get_reg_writable_masks"}"#,
        r#"{"call":"check_extension","cap":230}"#,
        r#"{"call":"arm_vcpu_init","target":5,"features":"0xc"}"#,
        r#"{"call":"get_reg_list"}"#,
        r#"{"call":"get_one_reg","id":"0x603000000013c020"}"#,
        r#"{"call":"set_one_reg","id":"0x603000000013c020","value":"0x1"}"#,
        r#"{"call":"arm_vcpu_init","vcpu":1,"target":5,"features":"0x74"}"#,
        r#"{"call":"get_reg_list","vcpu":1}"#,
        r#"{"call":"run"}"#,
        r#"{"call":"get_supported_cpuid"}"#,
        r#"{"call":"get_emulated_cpuid"}"#,
        "{",
    ];
    let mut child = vmfleet()
        .args(["model", "judge"])
        .arg(&fp)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let validator = validator("model-judge");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), lines.len());
    for (line, answer) in lines.iter().zip(stdout.lines()) {
        let doc: Value = serde_json::from_str(answer).unwrap();
        check_with(&validator, "model-judge", &doc, line);
    }
}

/// `nfd --json` over each saved fingerprint, with the example templates and with none, with and
/// without `--expiry`, matches its schema.
#[test]
fn nfd_json_matches_its_schema() {
    let dir = std::env::temp_dir().join(format!("vmfleet-schema-nfd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let empty = dir.join("templates");
    std::fs::create_dir_all(&empty).unwrap();
    let validator = validator("nfd");
    let fingerprints = root().join("fixtures/fingerprints");
    let mut saved: Vec<PathBuf> = std::fs::read_dir(&fingerprints)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    saved.sort();
    assert!(!saved.is_empty());
    let examples = root().join("examples/templates");
    for (fp, given) in saved.iter().flat_map(|fp| [(fp, &empty), (fp, &examples)]) {
        for expiry in [None, Some("1h")] {
            let mut cmd = vmfleet();
            cmd.args(["nfd", "--json", "--templates"])
                .arg(given)
                .arg("--fingerprint")
                .arg(fp)
                .arg("--out")
                .arg(dir.join("vmfleet"));
            if let Some(expiry) = expiry {
                cmd.args(["--expiry", expiry]);
            }
            let out = cmd.output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {}",
                fp.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let doc = json_of(&out, &format!("nfd --json --fingerprint {}", fp.display()));
            check_with(&validator, "nfd", &doc, &fp.display().to_string());
            let labels = doc["labels"].as_array().unwrap().len();
            assert_eq!(labels > 1, *given == examples, "{doc}");
            assert_eq!(doc["expiry_time"].is_null(), expiry.is_none());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
