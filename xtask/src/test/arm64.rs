//! `cargo xtask test`'s arm64 lab steps beyond the first fleet: an arm64 fleet under `vmfleet
//! serve` driven by control requests on real arm64 KVM 6.12, checked reply by reply and replayed
//! here; and `vmfleet host --fingerprint` measured live there, compared with `vmfleet trace
//! fingerprint` of that session's trace.

use crate::record::{ScriptedRequest, read_requests};
use crate::{arm64_lab, root, target_dir, vmfleet_dev};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The serve fixture whose session the lab runs live.
const SERVE_FIXTURE: &str = "arm64-6.12-max+serve";

/// Run the `arm64-6.12-max+serve` fixture's session live on 6.12 `-cpu max` in the lab: `vmfleet
/// serve` of its spec, recording, driven by its `.requests` through `vmfleet ctl send`. Checks
/// that the daemon shut down cleanly, that every request got a reply of the kind the `.requests`
/// file says (refused where a `# refused:` comment marks it, accepted everywhere else), and that
/// `vmfleet replay` of the lab's trace here succeeds with its recorded control requests answered
/// as the guest's replies were. Returns the lab's trace.
pub fn arm64_serve_session_replays_here(lab: &arm64_lab::Lab) -> Result<PathBuf> {
    let spec = root().join(format!("fixtures/specs/{SERVE_FIXTURE}.toml"));
    let requests = read_requests(&spec.with_extension("requests"))?;
    let mut run = arm64_lab::LabRun::new(arm64_lab::Kernel::V6_12, "max");
    run.out = Some(target_dir().join("arm64-lab/xtask-test-serve"));
    run.inputs.push(spec);
    run.serve(
        &format!("{SERVE_FIXTURE}.toml"),
        "out/lab.trace",
        requests.iter().map(|r| r.line.clone()).collect(),
    );
    let outcome = lab.run(&run)?;
    outcome.ensure_success()?;
    let session = outcome
        .session
        .as_ref()
        .context("the lab ran a control session but brought back no session outcome")?;
    let kinds = reply_kinds(&requests, &session.replies).with_context(|| {
        format!(
            "the arm64 lab's control session (`vmfleet ctl send` exit {}, stderr: {}; the replies \
             are in {})",
            session.exit_code,
            session.stderr.trim(),
            outcome.out.join("ctl.replies").display()
        )
    })?;
    let refused = kinds.iter().filter(|ok| !**ok).count();
    let expected_exit = if refused > 0 { 7 } else { 0 };
    if session.exit_code != expected_exit {
        bail!(
            "`vmfleet ctl send` in the arm64 lab exited {} after {refused} refusal(s), not \
             {expected_exit}; its stderr: {}",
            session.exit_code,
            session.stderr.trim()
        );
    }

    let trace = outcome.out.join("out/lab.trace");
    let replayed = outcome.out.join("replayed.txt");
    super::replay_here(
        &trace,
        &replayed,
        "vmfleet replay of the arm64 lab's serve trace",
    )?;
    let transcript =
        fs::read_to_string(&replayed).with_context(|| format!("reading {}", replayed.display()))?;
    replayed_control_agrees(&transcript, &requests, &kinds)
        .with_context(|| format!("the replay of {}", trace.display()))?;
    outln!(
        "  arm64 fleet under serve on {}: {} request(s), {} accepted and {refused} refused as \
         the fixture says; {} bytes of trace, replayed here with every recorded request answered \
         alike",
        outcome.kernel_release,
        requests.len(),
        requests.len() - refused,
        fs::metadata(&trace)?.len(),
    );
    Ok(trace)
}

/// The variable naming a live arm64 fingerprint document for supervisor's `json_schema` test to
/// check as well as the saved ones (`fixtures/fingerprints/`).
const LIVE_FINGERPRINT_ENV: &str = "VMFLEET_LIVE_FINGERPRINT";

/// The test of supervisor's `json_schema` that checks live arm64 fingerprints.
const SCHEMA_TEST: &str = "live_arm64_fingerprints_match_the_schema";

/// Check `document` (the lab's live fingerprint) against `vmfleet.fingerprint.v1` with the
/// validator supervisor's tests use: its `json_schema` test [`SCHEMA_TEST`], told the document in
/// [`LIVE_FINGERPRINT_ENV`]. `--workspace --test json_schema`, as for the no-KVM replay: the
/// dependencies' features stay those of `cargo test --workspace`, so nothing is compiled again.
/// The test must have run (a renamed test would make the filter pass silently).
pub fn live_fingerprint_matches_the_schema(document: &Path) -> Result<()> {
    let out = crate::cargo()
        .args(["test", "--workspace", "--locked", "--test", "json_schema"])
        .args(["--", "--exact", SCHEMA_TEST])
        .env(LIVE_FINGERPRINT_ENV, document)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --test json_schema")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} does not match the fingerprint schema, by supervisor's json_schema test:\n{}",
            document.display(),
            stdout.trim_end()
        );
    }
    if !stdout.contains("test result: ok. 1 passed") {
        bail!(
            "supervisor's json_schema test `{SCHEMA_TEST}` did not run (renamed?):\n{}",
            stdout.trim_end()
        );
    }
    outln!("  {} matches vmfleet.fingerprint.v1", document.display());
    Ok(())
}

/// Whether each reply was `ok`, checked against what the requests expect: one reply per request,
/// each a JSON object whose `ok` is `true` unless the request is marked refused.
fn reply_kinds(requests: &[ScriptedRequest], replies: &[String]) -> Result<Vec<bool>> {
    if replies.len() != requests.len() {
        bail!(
            "{} request(s) were sent but {} repl(ies) came back",
            requests.len(),
            replies.len()
        );
    }
    let mut kinds = Vec::new();
    for (request, reply) in requests.iter().zip(replies) {
        let ok = serde_json::from_str::<Value>(reply)
            .ok()
            .and_then(|v| v["ok"].as_bool())
            .with_context(|| {
                format!(
                    "the reply to {} is not a JSON object with `ok`: {}",
                    request.line,
                    shorten(reply)
                )
            })?;
        if ok == request.refused {
            bail!(
                "{} was {} but the fixture expects it {}: {}",
                request.line,
                if ok { "accepted" } else { "refused" },
                if request.refused {
                    "refused"
                } else {
                    "accepted"
                },
                shorten(reply)
            );
        }
        kinds.push(ok);
    }
    Ok(kinds)
}

/// The replayed transcript's `control` section (one `REQUEST -> ok: …` or `-> error: …` line per
/// recorded request, in order) answers like the live replies did. `list` reads the fleet's state
/// without being recorded, and `shutdown` is recorded as `shutdown for exit`.
fn replayed_control_agrees(
    transcript: &str,
    requests: &[ScriptedRequest],
    kinds: &[bool],
) -> Result<()> {
    let section: Vec<&str> = transcript
        .lines()
        .skip_while(|l| *l != "control")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    let live: Vec<(&ScriptedRequest, bool)> = requests
        .iter()
        .zip(kinds.iter().copied())
        .filter(|(r, _)| !r.line.contains(r#""op":"list""#))
        .collect();
    if section.len() != live.len() {
        bail!(
            "its control section has {} line(s), but {} recorded request(s) were sent",
            section.len(),
            live.len()
        );
    }
    for (line, (request, ok)) in section.iter().zip(live) {
        let replayed_ok = line.contains(" -> ok: ") || line.ends_with(" -> ok");
        if replayed_ok != ok || !(replayed_ok || line.contains(" -> error: ")) {
            bail!(
                "{} was {} live, but the replay answers `{}`",
                request.line,
                if ok { "accepted" } else { "refused" },
                shorten(line.trim())
            );
        }
    }
    Ok(())
}

/// `vmfleet host --fingerprint --json` live on 6.12 `-cpu max` in the lab (its own boot), and
/// `vmfleet trace fingerprint --json` here of `trace`, recorded on the same kernel and QEMU CPU
/// (the serve session's). The two documents must be equal but for one part that differs by
/// design, compared apart:
///
/// - `arm64.kernel_probes.*`: `host --fingerprint` always runs every kernel probe (scratch VMs
///   writing ID_AA64PFR0_EL1.EL1 = 0, ID_AA64DFR0_EL1.DebugVer = 5 and PMUVer = 0xF), so the
///   live document holds an answer for each; a fleet runs a probe only when a verdict waits for
///   it, and the serve fixture's fleet writes near none, so its trace has no answers and its
///   document holds `null`s (facts the source did not have, never guessed). Required: live an
///   answer for each; the trace's `null`, or the same answer when a fleet does ask.
///
/// The live answers are also checked against what Linux 6.12 does: it accepts EL1 = 0 (the
/// EL0/EL1 floor came later), refuses DebugVer = 5, and stores PMUVer = 0xF as 0.
///
/// Everything else (kernel, capabilities, CPU identity, preferred target, the first vCPU's
/// `KVM_ARM_VCPU_INIT` features, register list, initial register values, writable masks, firmware
/// registers, and `other_vcpu_inits`, empty in both since every VM of the fleet uses the default
/// features) is compared as is. The live document is saved as `live-fingerprint.json` in the
/// results directory; its schema is checked by supervisor's `json_schema` test (see
/// [`crate::test`]).
pub fn arm64_fingerprint_live_equals_trace(lab: &arm64_lab::Lab, trace: &Path) -> Result<PathBuf> {
    let mut run = arm64_lab::LabRun::new(arm64_lab::Kernel::V6_12, "max");
    run.out = Some(target_dir().join("arm64-lab/xtask-test-fingerprint"));
    run.args = ["host", "--fingerprint", "--json"]
        .map(String::from)
        .to_vec();
    let outcome = lab.run(&run)?;
    outcome.ensure_success()?;
    let live: Value = serde_json::from_str(&outcome.stdout).with_context(|| {
        format!(
            "`vmfleet host --fingerprint --json` in the arm64 lab printed something other than \
             one JSON document (in {})",
            outcome.out.join("vmfleet.stdout").display()
        )
    })?;
    let saved = outcome.out.join("live-fingerprint.json");
    fs::write(&saved, &outcome.stdout).with_context(|| format!("writing {}", saved.display()))?;
    let out = Command::new(vmfleet_dev())
        .args(["trace", "fingerprint", "--json"])
        .arg(trace)
        .stderr(Stdio::inherit())
        .output()
        .context("running vmfleet trace fingerprint")?;
    if !out.status.success() {
        bail!(
            "vmfleet trace fingerprint --json {} failed ({})",
            trace.display(),
            out.status
        );
    }
    let recorded: Value = serde_json::from_slice(&out.stdout)
        .context("vmfleet trace fingerprint --json printed something other than JSON")?;
    let differences = fingerprint_differences(&live, &recorded);
    if !differences.is_empty() {
        bail!(
            "the live arm64 fingerprint ({}) and the one of the lab's trace ({}) differ:\n{}",
            saved.display(),
            trace.display(),
            differences
                .iter()
                .map(|d| format!("    {d}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    outln!(
        "  host --fingerprint on {} equals trace fingerprint of the session's trace (kernel \
         probes: live {}, trace {})",
        outcome.kernel_release,
        live["arm64"]["kernel_probes"],
        recorded["arm64"]["kernel_probes"]
    );
    Ok(saved)
}

/// Where a live arm64 fingerprint and a trace's differ, as `path: live … trace …` lines, with the
/// kernel probes compared as [`arm64_fingerprint_live_equals_trace`] says.
fn fingerprint_differences(live: &Value, recorded: &Value) -> Vec<String> {
    let mut differences = Vec::new();
    // What Linux 6.12 answers each probe (the lab's kernel).
    let on_6_12 = [
        ("el_floor", Value::Bool(false)),
        ("debug_ver_floor", Value::Bool(true)),
        ("pmu_imp_def", Value::from("reads-as-not-implemented")),
    ];
    let probes = |doc: &Value| doc["arm64"]["kernel_probes"].clone();
    let (live_probes, trace_probes) = (probes(live), probes(recorded));
    for (name, expected) in &on_6_12 {
        let (live_answer, trace_answer) = (&live_probes[name], &trace_probes[name]);
        if live_answer != expected {
            differences.push(format!(
                "arm64.kernel_probes.{name}: live {live_answer}, but Linux 6.12 answers \
                 {expected}"
            ));
        }
        if !trace_answer.is_null() && trace_answer != live_answer {
            differences.push(format!(
                "arm64.kernel_probes.{name}: live {live_answer}, trace {trace_answer}"
            ));
        }
    }
    let without_probes = |doc: &Value| {
        let mut doc = doc.clone();
        if let Some(probes) = doc.pointer_mut("/arm64").and_then(Value::as_object_mut) {
            probes.remove("kernel_probes");
        }
        doc
    };
    diff_values(
        "",
        &without_probes(live),
        &without_probes(recorded),
        &mut differences,
    );
    differences
}

/// A reply or value for an error message: its first 160 characters.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(160) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Every path where `a` and `b` differ (at most 20).
fn diff_values(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    if out.len() >= 20 || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let (p, q) = (
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                );
                diff_values(&format!("{path}.{key}"), p, q, out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff_values(&format!("{path}[{i}]"), p, q, out);
            }
        }
        _ => out.push(format!(
            "{}: live {}, trace {}",
            if path.is_empty() { "." } else { path },
            shorten(&a.to_string()),
            shorten(&b.to_string())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(line: &str, refused: bool) -> ScriptedRequest {
        ScriptedRequest {
            line: line.to_string(),
            refused,
        }
    }

    /// The lab steps of this module alone, on the real lab (installs what it lacks, boots QEMU twice; needs
    /// the dev `vmfleet`, e.g. from `cargo build -p supervisor`): `cargo test -p xtask --
    /// --ignored the_lab_steps_pass`.
    #[test]
    #[ignore = "boots the arm64 lab"]
    fn the_lab_steps_pass() {
        let lab = arm64_lab::Lab::prepare(&[arm64_lab::Kernel::V6_12]).unwrap();
        let trace = arm64_serve_session_replays_here(&lab).unwrap();
        let live = arm64_fingerprint_live_equals_trace(&lab, &trace).unwrap();
        live_fingerprint_matches_the_schema(&live).unwrap();
    }

    #[test]
    fn replies_are_checked_against_the_expected_kind() {
        let requests = [
            request(r#"{"op":"list"}"#, false),
            request(r#"{"op":"pause","vm":"x"}"#, true),
        ];
        let ok = r#"{"ok":true,"result":[]}"#.to_string();
        let refused = r#"{"ok":false,"error":"no VM named \"x\""}"#.to_string();
        assert_eq!(
            reply_kinds(&requests, &[ok.clone(), refused.clone()]).unwrap(),
            [true, false]
        );
        let err = reply_kinds(&requests, &[ok.clone(), ok.clone()]).unwrap_err();
        assert!(err.to_string().contains("expects it refused"), "{err}");
        assert!(reply_kinds(&requests, std::slice::from_ref(&ok)).is_err());
        assert!(reply_kinds(&requests, &[ok, "garbage".into()]).is_err());
    }

    #[test]
    fn the_replayed_control_section_must_answer_alike() {
        let requests = [
            request(r#"{"op":"list"}"#, false),
            request(r#"{"op":"pause","vm":"web"}"#, false),
            request(r#"{"op":"pause","vm":"nope"}"#, true),
        ];
        let transcript = "== vm0 web\nvcpu0: 3 exits\n\ncontrol\n  pause web -> ok: web paused\n  \
                          pause nope -> error: no VM named \"nope\"\n";
        replayed_control_agrees(transcript, &requests, &[true, true, false]).unwrap();
        let flipped = transcript.replace("-> ok: web", "-> error: web");
        assert!(replayed_control_agrees(&flipped, &requests, &[true, true, false]).is_err());
        let short = "control\n  pause web -> ok: web paused\n";
        assert!(replayed_control_agrees(short, &requests, &[true, true, false]).is_err());
    }

    #[test]
    fn fingerprints_differ_only_where_they_really_do() {
        // The 6.12 answers live; a trace holds `null` (not asked) or the same answer.
        let probes = |el: Value, debug: Value, pmu: Value| json!({"el_floor": el, "debug_ver_floor": debug, "pmu_imp_def": pmu});
        let on_6_12 = || probes(json!(false), json!(true), json!("reads-as-not-implemented"));
        let unasked = || probes(Value::Null, Value::Null, Value::Null);
        let doc = |probes: Value, regs: Value| {
            json!({"schema": "vmfleet.fingerprint.v1", "arch": "aarch64", "x86": null,
                   "arm64": {"reg_list": regs, "kernel_probes": probes}})
        };
        let live = doc(on_6_12(), json!([1, 2, 3]));
        assert!(fingerprint_differences(&live, &doc(unasked(), json!([1, 2, 3]))).is_empty());
        assert!(fingerprint_differences(&live, &doc(on_6_12(), json!([1, 2, 3]))).is_empty());
        let asked_differently = probes(json!(true), Value::Null, Value::Null);
        let floor = fingerprint_differences(&live, &doc(asked_differently, json!([1, 2, 3])));
        assert_eq!(floor.len(), 1, "{floor:?}");
        let regs = fingerprint_differences(&live, &doc(unasked(), json!([1, 5, 3])));
        assert_eq!(regs, [".arm64.reg_list[1]: live 2, trace 5"]);
        // Live must hold every answer, and 6.12's.
        let unmeasured = doc(unasked(), json!([1, 2, 3]));
        assert_eq!(fingerprint_differences(&unmeasured, &unmeasured).len(), 3);
        let not_6_12 = doc(
            probes(json!(true), json!(true), json!("kept")),
            json!([1, 2, 3]),
        );
        assert_eq!(fingerprint_differences(&not_6_12, &unmeasured).len(), 2);
    }
}
