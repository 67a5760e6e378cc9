//! CPU templates from the fixtures' fingerprints alone (no /dev/kvm): `vmfleet baseline` gives a
//! template per architecture that `vmfleet check` accepts for those hosts; a template asking for
//! something one host lacks is refused for that host with the name, the limit and the rule;
//! `template show` resolves; every `--json` is a document of its schema; bad input gets exit 4
//! and the place.

mod common;

use common::cli::{root, schema_valid, trace_fingerprint, vmfleet};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn scratch_dir(test: &str) -> PathBuf {
    common::cli::scratch_dir("template", test)
}

fn fingerprint(name: &str, dir: &Path) -> PathBuf {
    trace_fingerprint(name, dir)
}

fn run(args: &[&Path]) -> Output {
    vmfleet().args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `out`'s stdout as JSON, validated against `schema`.
fn document(out: &Output, schema: &str) -> Value {
    schema_valid(&out.stdout, schema)
}

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

/// The baseline of `hosts` written to `dir/name.toml`; then `check` of it on those hosts.
fn baseline_then_check(dir: &Path, name: &str, hosts: &[PathBuf]) -> (PathBuf, Value) {
    let out_path = dir.join(format!("{name}.toml"));
    let mut args: Vec<&Path> = vec![Path::new("baseline"), Path::new("--json")];
    args.extend(hosts.iter().map(PathBuf::as_path));
    let o = p("-o");
    args.push(&o);
    args.push(&out_path);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc = document(&out, "baseline.v1.schema.json");
    let written = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(doc["template"], written.as_str());
    let mut args: Vec<&Path> = vec![Path::new("check"), Path::new("--json"), &out_path];
    args.extend(hosts.iter().map(PathBuf::as_path));
    let out = run(&args);
    let check = document(&out, "check.v1.schema.json");
    assert_eq!(out.status.code(), Some(0), "{check:#}");
    assert_eq!(check["runs_everywhere"], true);
    (out_path, doc)
}

#[test]
fn an_arm64_baseline_of_6_12_and_6_1_is_accepted_by_check_for_both() {
    let dir = scratch_dir("arm64");
    let hosts = [
        fingerprint("arm64-6.12-max", &dir),
        fingerprint("arm64-6.1-max", &dir),
    ];
    let (template, doc) = baseline_then_check(&dir, "arm-baseline", &hosts);
    // 6.1 has less of some lower-safe fields: the baseline takes its values, and names it.
    let limited = doc["limited"].as_array().unwrap();
    let debug = limited
        .iter()
        .find(|l| l["what"] == "ID_AA64DFR0_EL1.DebugVer")
        .expect("DebugVer is limited by 6.1");
    assert_eq!(debug["hosts"][0], hosts[1].display().to_string());
    assert!(debug["rule"].as_str().unwrap().contains("lower-safe"));
    // Registers only 6.12 lists are named, not guessed.
    assert!(!doc["only_some"].as_array().unwrap().is_empty());
    // The template asks for what it says: its TOML reads back.
    let show = run(&[&p("template"), &p("show"), &p("--json"), &template]);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    let show = document(&show, "template-show.v1.schema.json");
    assert!(
        show["toml"]
            .as_str()
            .unwrap()
            .contains("ID_AA64DFR0_EL1.DebugVer")
    );
}

#[test]
fn an_x86_baseline_of_two_amd_hosts_is_accepted_by_check_for_both() {
    let dir = scratch_dir("x86");
    let hosts = [
        fingerprint("fleet", &dir),
        root().join("fixtures/fingerprints/x86-amd-family25-model17.host.json"),
    ];
    let (_, doc) = baseline_then_check(&dir, "x86-baseline", &hosts);
    let limited: Vec<&str> = doc["limited"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["what"].as_str().unwrap())
        .collect();
    assert!(
        limited.contains(&"amd_ibpb_ret (0x80000008.0.ebx[30])"),
        "{limited:?}"
    );
    // The later host forces AVX-512 and GFNI on (nested PVM; its fingerprint's probes show it),
    // the earlier cannot give them: named, left to each host.
    let not_uniform: Vec<&str> = doc["not_uniform"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["what"].as_str().unwrap())
        .collect();
    for bit in ["avx512f (7.0.ebx[16])", "gfni (7.0.ecx[8])"] {
        assert!(not_uniform.contains(&bit), "{bit}: {not_uniform:?}");
    }
}

#[test]
fn a_template_one_host_cannot_run_is_refused_for_that_host_with_name_limit_and_rule() {
    let dir = scratch_dir("refused");
    let older = fingerprint("fleet", &dir);
    let later = root().join("fixtures/fingerprints/x86-amd-family25-model17.host.json");
    let template = dir.join("gfni.toml");
    std::fs::write(
        &template,
        "arch = \"x86_64\"\n[x86.features]\ngfni = true\n",
    )
    .unwrap();
    let out = run(&[&p("check"), &p("--json"), &template, &older, &later]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let doc = document(&out, "check.v1.schema.json");
    assert_eq!(doc["hosts"][1]["runs"], true);
    let problem = &doc["hosts"][0]["problems"][0];
    assert_eq!(problem["what"], "gfni (7.0.ecx[8])");
    assert_eq!(problem["kind"], "unsupported");
    assert_eq!(
        (&problem["requested"], &problem["limit"]),
        (&"0x1".into(), &"0x0".into())
    );
    assert!(
        problem["rule"]
            .as_str()
            .unwrap()
            .contains("KVM_GET_SUPPORTED_CPUID")
    );
    // People's output: the host, then the thing, limit → requested, and the rule.
    let out = run(&[&p("check"), &template, &older]);
    let shown = text(&out);
    assert!(shown.contains("cannot run it"), "{shown}");
    assert!(
        shown.contains("x gfni (7.0.ecx[8]) 0x0 → 0x1 unsupported:"),
        "{shown}"
    );

    // arm64: lowering AES on 6.1 (no writable ID registers) is refused with the kernel's rule.
    let arm = [
        fingerprint("arm64-6.12-max", &dir),
        fingerprint("arm64-6.1-max", &dir),
    ];
    let no_aes = root().join("examples/templates/arm-no-aes.toml");
    let out = run(&[&p("check"), &p("--json"), &no_aes, &arm[0], &arm[1]]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let doc = document(&out, "check.v1.schema.json");
    assert_eq!(doc["hosts"][0]["runs"], true);
    // Every field 6.1 cannot lower is named, not just the first the kernel would meet.
    let mut named: Vec<&str> = doc["hosts"][1]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["kind"], "refused");
            assert!(p["rule"].as_str().unwrap().contains("(EINVAL)"), "{p}");
            p["what"].as_str().unwrap()
        })
        .collect();
    named.sort_unstable();
    assert_eq!(
        named,
        [
            "ID_AA64ISAR0_EL1.AES",
            "ID_AA64ISAR0_EL1.SHA1",
            "ID_AA64ISAR0_EL1.SHA2"
        ]
    );
}

#[test]
fn bad_input_names_what_and_where() {
    let dir = scratch_dir("bad");
    let x86 = fingerprint("single", &dir);
    let arm = fingerprint("arm64-6.12-max", &dir);
    let out = run(&[&p("baseline"), &x86, &arm]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("x86_64 guests"), "{}", text(&out));
    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "arch = \"x86_64\"\n[x86.features]\navx3 = true\n").unwrap();
    let out = run(&[&p("check"), &typo, &x86]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out).contains("typo.toml:3:8: x86.features: unknown CPU feature `avx3`"),
        "{}",
        text(&out)
    );
    let out = run(&[
        &p("check"),
        &root().join("examples/templates/arm-no-aes.toml"),
        &x86,
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out).contains("aarch64 guests and the host runs x86_64"),
        "{}",
        text(&out)
    );
}

/// Every template in the repository reads, and as JSON is an instance of the format's schema.
#[test]
fn every_template_in_the_repository_matches_the_format_schema() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("supervisor/schemas/template.v1.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut seen = 0;
    for dir in ["examples/templates", "fixtures/templates"] {
        let Ok(entries) = std::fs::read_dir(root().join(dir)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let value: toml::Value = toml::from_str(&text).unwrap();
            let doc = serde_json::to_value(value).unwrap();
            let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            let out = run(&[&p("template"), &p("show"), &path]);
            assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
            seen += 1;
        }
    }
    assert!(seen >= 2);
}

fn text_of(out: &Output) -> String {
    text(out)
}
