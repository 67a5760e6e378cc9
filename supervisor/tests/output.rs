//! How `vmfleet` speaks to people and scripts: colour only where asked or on a terminal
//! (`--color`, `NO_COLOR`), a reader that goes away ends output quietly, and `vmfleet host`
//! says what the host gives guests beyond "supported" (live) or why it cannot (no KVM: exit 6).

use serde_json::Value;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use vcpu::hypervisor::cpuid::CpuidTable;
use vcpu::skip::kvm_usable;
use vcpu::{Hypervisor as _, Reply, SystemCall};

fn vmfleet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmfleet"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const ESC: &str = "\x1b[";

/// The control fixture's replay logs a warning (a guest faults on purpose): into a pipe it has no
/// colour codes, unless `--color always`; `--color never` and NO_COLOR keep it plain.
#[test]
fn log_lines_are_coloured_only_when_asked() {
    let replay = |args: &[&str], no_color: Option<&str>| {
        let mut cmd = vmfleet();
        cmd.args(args).arg("replay").arg(fixture("control.trace"));
        cmd.env_remove("NO_COLOR").env_remove("RUST_LOG");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            !out.stdout.windows(2).any(|w| w == b"\x1b["),
            "the transcript is never coloured"
        );
        stderr(&out)
    };
    let plain = replay(&[], None);
    assert!(plain.contains("WARN"), "{plain}");
    assert!(!plain.contains(ESC), "colour into a pipe: {plain:?}");
    let always = replay(&["--color", "always"], None);
    assert!(always.contains(ESC), "--color always: {always:?}");
    assert!(!replay(&["--color", "never"], None).contains(ESC));
    assert!(!replay(&["--color", "auto"], Some("1")).contains(ESC));
    // `--color` is global: after the subcommand too.
    let out = vmfleet()
        .args(["replay", "--color", "never"])
        .arg(fixture("single.trace"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bad = vmfleet()
        .args(["--color", "sometimes", "host"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// Live: the run table's state column is coloured with `--color always` (green for completed)
/// and plain into a pipe; the columns stay aligned either way.
#[test]
fn the_run_table_is_coloured_only_when_asked() {
    if !kvm_usable("the_run_table_is_coloured_only_when_asked") {
        return;
    }
    let run = |args: &[&str]| {
        let out = vmfleet()
            .args(args)
            .arg("run")
            .env_remove("NO_COLOR")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let plain = run(&[]);
    assert!(!plain.contains(ESC), "{plain:?}");
    let coloured = run(&["--color", "always"]);
    assert!(coloured.contains("\x1b[32mcompleted"), "{coloured:?}");
    let strip = |s: &str| {
        s.replace("\x1b[32m", "")
            .replace("\x1b[31m", "")
            .replace("\x1b[0m", "")
    };
    // The columns stay aligned: every row's vCPU count starts under the header's `vCPUs`.
    let stripped = strip(&coloured);
    let column = stripped.lines().next().unwrap().find("vCPUs").unwrap();
    for row in stripped.lines().skip(1) {
        let at = row.as_bytes();
        assert!(
            at[column].is_ascii_digit() && at[column - 1] == b' ',
            "{stripped}"
        );
    }
    assert_eq!(strip(&coloured).lines().count(), plain.lines().count());
}

/// A reader that stops early (`vmfleet trace show big | head`) ends vmfleet quietly: no panic,
/// no error message, success.
#[test]
fn a_reader_that_goes_away_ends_output_quietly() {
    for args in [
        vec!["trace", "show"],
        vec!["trace", "show", "--json"],
        vec!["replay"],
    ] {
        let mut child = vmfleet()
            .args(&args)
            .arg(fixture("control.trace"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut head = [0u8; 64];
        child.stdout.take().unwrap().read_exact(&mut head).unwrap();
        // stdout is closed here: the rest of the (~1 MB) output meets a broken pipe.
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("vmfleet:"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
    for args in [["--help"], ["--version"]] {
        let mut child = vmfleet()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert!(stderr(&out).is_empty(), "{args:?}: {}", stderr(&out));
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }
}

/// What the test itself measures: the supported table and what a scratch vCPU holds after
/// writing it (the model vmfleet builds from it, hiding nothing).
fn measure() -> (CpuidTable, CpuidTable) {
    let kvm = vcpu::hypervisor::kvm::KvmHypervisor::open().unwrap();
    let Ok(Reply::Cpuid(supported)) = kvm.call(&SystemCall::GetSupportedCpuid) else {
        panic!("KVM_GET_SUPPORTED_CPUID");
    };
    let vm = vcpu::VmHandle::new(kvm.create_vm(vcpu::VmId(0), "t").unwrap(), "t", kvm.arch());
    let vcpu = vm.create_vcpu(vcpu::VcpuId(0)).unwrap();
    let table = vcpu::model::x86::model::X86CpuModel::default()
        .build(&supported, 0, 1)
        .unwrap()
        .table;
    let held = vcpu.set_cpuid(&table).unwrap().held;
    (supported, held)
}

/// Live: `vmfleet host --json` lists every bit the host adds beyond supported, consistently with
/// what this test measures itself; each named extra is absent from supported and present after
/// SET/GET; the text says how many and marks them in the table.
#[test]
fn host_reports_what_guests_get_beyond_supported() {
    if !kvm_usable("host_reports_what_guests_get_beyond_supported") {
        return;
    }
    if vcpu::hypervisor::kvm::host_arch() != Some(vcpu::GuestArch::X86_64) {
        vcpu::skip::skipped("host_reports_what_guests_get_beyond_supported", "not x86");
        return;
    }
    let out = vmfleet().args(["host", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let probe = &report["guest_cpuid"];
    assert_eq!(probe["measured"], true, "{probe}");
    let added: Vec<&Value> = probe["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["kind"] == "kernel_rewrote" && c["from"] == 0 && c["to"] == 1 && c["bit"].is_u64()
        })
        .collect();
    assert_eq!(probe["extra_bits"], added.len() as u64);

    let (supported, held) = measure();
    let reg = |name: &str| {
        vcpu::hypervisor::cpuid::CpuidReg::ALL
            .into_iter()
            .find(|r| r.name() == name)
            .unwrap()
    };
    let bit_in = |table: &CpuidTable, c: &Value| {
        let entry = table.lookup(
            c["leaf"].as_u64().unwrap() as u32,
            c["subleaf"].as_u64().unwrap() as u32,
        );
        entry.is_some_and(|e| {
            e.reg(reg(c["reg"].as_str().unwrap())) >> c["bit"].as_u64().unwrap() & 1 == 1
        })
    };
    for c in &added {
        assert!(!bit_in(&supported, c), "{c} is listed as supported");
        assert!(bit_in(&held, c), "{c} is not held after SET/GET");
    }
    // And every bit this test sees turned on (outside the runtime bits) is listed.
    let measured = vcpu::model::x86::drift::drift(
        &vcpu::model::x86::model::X86CpuModel::default()
            .build(&supported, 0, 1)
            .unwrap()
            .table,
        &held,
    );
    let turned_on: u32 = measured
        .kernel_rewrites()
        .map(|d| (d.bits & d.held).count_ones())
        .sum();
    assert_eq!(
        added.len(),
        turned_on as usize,
        "measured here: {measured:?}"
    );

    let features = report["features"].as_array().unwrap();
    for c in added.iter().filter(|c| c["feature"].is_string()) {
        let f = features.iter().find(|f| f["name"] == c["feature"]).unwrap();
        assert_eq!(f["host_adds"], true, "{f}");
        assert_ne!(f["supported"], true, "{f}");
    }
    let text = vmfleet().arg("host").output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    if added.is_empty() {
        assert!(
            text.contains("the host gives guests no bits beyond supported"),
            "{text}"
        );
    } else {
        let line = format!(
            "the host gives guests {} bits beyond supported",
            added.len()
        );
        assert!(text.contains(&line), "{text}");
        let first = added.iter().find_map(|c| c["feature"].as_str());
        if let Some(name) = first {
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{name} "))
                        && l.contains("host adds")),
                "{name} is not marked in:\n{text}"
            );
        }
    }
}

/// Live: `vmfleet host` reports `KVM_GET_EMULATED_CPUID` as this test asks it itself: the table
/// in `--json`'s fingerprint, and in the text its entries and how many feature bits it names.
#[test]
fn host_reports_the_emulated_cpuid_table() {
    let test = "host_reports_the_emulated_cpuid_table";
    if !kvm_usable(test) {
        return;
    }
    if vcpu::hypervisor::kvm::host_arch() != Some(vcpu::GuestArch::X86_64) {
        vcpu::skip::skipped(test, "not x86");
        return;
    }
    let kvm = vcpu::hypervisor::kvm::KvmHypervisor::open().unwrap();
    let Ok(Reply::Cpuid(emulated)) = kvm.call(&SystemCall::GetEmulatedCpuid) else {
        vcpu::skip::skipped(test, "this host refuses KVM_GET_EMULATED_CPUID");
        return;
    };
    let out = vmfleet().args(["host", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["fingerprint"]["emulated_cpuid"],
        serde_json::to_value(&emulated).unwrap()
    );
    let text = vmfleet().arg("host").output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains(&format!(
            "emulated CPUID: {} entries (digest {:08x})",
            emulated.len(),
            emulated.digest()
        )),
        "{text}"
    );
    let bits = supervisor::fingerprint::feature_bits(&emulated.entries);
    assert!(
        text.contains(&format!(
            "KVM can emulate {} CPUID bits for guests (KVM_GET_EMULATED_CPUID)",
            bits.len()
        )),
        "{text}"
    );
}

/// Without a usable /dev/kvm (here: bound to /dev/null in a private mount namespace),
/// `vmfleet host` says what failed and why on stderr, and exits 6 (no_kvm); with `--json` its
/// stdout stays empty (no half document).
#[test]
fn host_without_kvm_says_why_and_exits_no_kvm() {
    let bin = env!("CARGO_BIN_EXE_vmfleet");
    let script = "if [ -e /dev/kvm ]; then mount --bind /dev/null /dev/kvm || exit 97; fi; \"$0\" host; echo \"status=$?\" >&2; \"$0\" host --json";
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        vcpu::skip::skipped(
            "host_without_kvm_says_why_and_exits_no_kvm",
            "unshare --mount is unavailable (needs root)",
        );
        return;
    }
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            bin,
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_ne!(
        out.status.code(),
        Some(97),
        "could not bind /dev/null over /dev/kvm: {err}"
    );
    assert!(err.contains("status=6"), "text: {err}");
    assert_eq!(out.status.code(), Some(6), "--json: {err}");
    assert!(err.contains("/dev/kvm"), "{err}");
    assert!(
        err.contains("vmfleet host needs a usable /dev/kvm"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // The text run said what it could without KVM; the JSON run printed nothing.
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("kvm:          UNUSABLE"), "{stdout}");
    assert!(stdout.contains("kernel:"), "{stdout}");
    assert!(!stdout.contains('{'), "--json printed on stdout: {stdout}");
}

/// `trace show --vm/--vcpu/--call` prints only the events asked for (text and JSON alike), says
/// how many it left out, and names a call kind the trace does not have with the nearest one.
#[test]
fn trace_show_filters_by_vm_vcpu_and_call_kind() {
    let trace = fixture("fleet.trace");
    let show = |args: &[&str]| {
        vmfleet()
            .args(["trace", "show"])
            .arg(&trace)
            .args(args)
            .output()
            .unwrap()
    };
    let out = show(&[
        "--vm",
        "vm1",
        "--vcpu",
        "0",
        "--call",
        "run",
        "--call",
        "SET_CPUID2",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let events: Vec<&str> = text.lines().filter(|l| l.starts_with("  #")).collect();
    assert!(events.len() > 2, "{text}");
    for line in &events {
        assert!(line.contains(" vm1/vcpu0 "), "{line}");
        assert!(
            line.contains(" RUN ") || line.contains(" SET_CPUID2 "),
            "{line}"
        );
    }
    assert!(text.contains("event(s) left out by the filter"), "{text}");
    // JSON: the same events, between the header and the end lines.
    let out = show(&[
        "--json",
        "--vm",
        "1",
        "--vcpu",
        "0",
        "--call",
        "RUN",
        "--call",
        "set_cpuid2",
    ]);
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.first().unwrap()["kind"], "header");
    assert_eq!(lines.last().unwrap()["kind"], "end");
    assert_eq!(lines.len() - 2, events.len());
    assert!(
        lines[1..lines.len() - 1]
            .iter()
            .all(|l| l["stream"]["name"] == "vm1/vcpu0")
    );
    // A typo prints nothing, and is said on stderr with the nearest kind.
    let out = show(&["--call", "SET_CPUID"]);
    assert!(
        stderr(&out).contains("no `SET_CPUID` call in this trace (did you mean `SET_CPUID2`?)")
    );
    let out = show(&["--vm", "x1"]);
    assert_eq!(out.status.code(), Some(2), "a bad --vm is a usage error");
}

/// `trace convert` writes the current format (smaller, the same events), refuses to overwrite
/// without --force, and converts a trace cut short as far as it reads, saying so (exit 5).
#[test]
fn trace_convert_rewrites_a_trace_in_the_current_format() {
    let dir = std::env::temp_dir().join(format!("vmfleet-convert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("lock.trace");
    let convert = |input: &std::path::Path, force: bool| {
        let mut cmd = vmfleet();
        cmd.args(["trace", "convert"]).arg(input).arg(&out);
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    let run = convert(&fixture("lock.trace"), false);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert!(stderr(&run).contains("(format 4,"), "{}", stderr(&run));
    let shown = |path: &std::path::Path| {
        let out = vmfleet()
            .args(["trace", "show"])
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let (before, after) = (shown(&fixture("lock.trace")), shown(&out));
    // Each stream's calls, as `trace show` prints them without sequence number and time: the
    // current format keeps a stream's calls in order, and stores its consecutive RUNs as one
    // batch where the first stood (the exits between the first and the last get even times).
    let events = |text: &str| -> std::collections::BTreeMap<String, Vec<String>> {
        let mut streams = std::collections::BTreeMap::<String, Vec<String>>::new();
        for line in text.lines().skip_while(|l| *l != "events:").skip(1) {
            let mut words = line.split_whitespace();
            let (Some(seq), Some(_time), Some(stream)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            if seq.starts_with('#') {
                let call: Vec<&str> = words.collect();
                streams
                    .entry(stream.into())
                    .or_default()
                    .push(call.join(" "));
            }
        }
        streams
    };
    assert!(!events(&before).is_empty());
    assert_eq!(events(&before), events(&after));
    assert_eq!(
        convert(&fixture("lock.trace"), false).status.code(),
        Some(10)
    );
    // A trace cut short converts as far as it reads, and stays cut short.
    let bytes = std::fs::read(fixture("lock.trace")).unwrap();
    let cut = dir.join("cut.trace");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let run = convert(&cut, true);
    assert_eq!(run.status.code(), Some(5), "{}", stderr(&run));
    let shown = shown(&out);
    assert!(shown.contains("end: cut short"), "{shown}");
    let _ = std::fs::remove_dir_all(&dir);
}
