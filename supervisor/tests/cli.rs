//! The `vmfleet` binary as a user meets it: bad input gets a clear error and exit status 4
//! (`bad_input`), never a panic; a live run works when /dev/kvm does (and says SKIPPED when it does not); a trace cut
//! short by a killed process still reads back to its last whole event.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use supervisor::exit::Status;

fn vmfleet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmfleet"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmfleet-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_clean_error(out: &Output, needle: &str) {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(Status::BadInput.code().into()),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "expected {needle:?} in stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
}

fn kvm_usable() -> bool {
    match vcpu::kvm::KvmHypervisor::open() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED (live part): /dev/kvm unusable: {e}");
            false
        }
    }
}

#[test]
fn a_bad_spec_names_file_line_and_column() {
    let dir = scratch("spec");
    let spec = dir.join("bad.toml");
    std::fs::write(
        &spec,
        "[[vm]]\nname = \"a\"\ncpu = { hide = [\"avx512\"] }\n",
    )
    .unwrap();
    let out = vmfleet().arg("run").arg(&spec).output().unwrap();
    assert_clean_error(
        &out,
        &format!("{}:3:17: unknown CPU feature `avx512`", spec.display()),
    );
    let out = vmfleet()
        .arg("run")
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert_clean_error(&out, "missing.toml");
}

#[test]
fn bad_traces_get_clear_errors() {
    let dir = scratch("traces");
    let foreign = dir.join("foreign.trace");
    std::fs::write(&foreign, b"#!/bin/sh\necho this is not a trace\n").unwrap();
    for sub in [&["replay"][..], &["trace", "show"][..]] {
        let out = vmfleet().args(sub).arg(&foreign).output().unwrap();
        assert_clean_error(&out, "not a vmfleet trace");
    }
    let empty = dir.join("empty.trace");
    std::fs::write(&empty, b"").unwrap();
    assert_clean_error(
        &vmfleet().arg("replay").arg(&empty).output().unwrap(),
        "empty",
    );

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/single.trace");
    let mut bytes = std::fs::read(&fixture).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let corrupt = dir.join("corrupt.trace");
    std::fs::write(&corrupt, &bytes).unwrap();
    let out = vmfleet().arg("replay").arg(&corrupt).output().unwrap();
    assert_clean_error(&out, "byte");
}

#[test]
fn a_cut_trace_shows_its_whole_events_and_where_it_stopped() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/single.trace");
    let bytes = std::fs::read(&fixture).unwrap();
    let dir = scratch("cut");
    let cut = dir.join("cut.trace");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let out = vmfleet()
        .args(["trace", "show"])
        .arg(&cut)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(Status::Incomplete.code().into()),
        "{stderr}"
    );
    assert!(
        stdout.contains("CREATE_VM"),
        "the whole events are shown: {stdout}"
    );
    assert!(
        stdout.contains("cut short"),
        "the footer says where it stopped: {stdout}"
    );
    // Replay refuses a partial job, naming the offset, with the status of a trace cut short.
    let out = vmfleet().arg("replay").arg(&cut).output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(Status::Incomplete.code().into()),
        "{stderr}"
    );
    assert!(stderr.contains("cut short at byte"), "{stderr}");
}

/// `vmfleet` raises its soft open-files limit to the hard one at startup (a big fleet needs
/// thousands of descriptors) and says so at debug level.
#[test]
fn the_open_files_limit_is_raised_at_startup() {
    let hard = Command::new("sh")
        .args(["-c", "ulimit -H -n"])
        .output()
        .unwrap();
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_string();
    if hard.parse::<u64>().map_or(true, |n| n <= 256) {
        eprintln!("SKIPPED: the hard open-files limit is {hard:?}, nothing to raise from 256");
        return;
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/single.trace");
    let out = Command::new("sh")
        .args(["-c", "ulimit -S -n 256 && exec \"$0\" trace show \"$1\""])
        .arg(env!("CARGO_BIN_EXE_vmfleet"))
        .arg(&fixture)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let expected = format!("open-files limit: soft {hard} (was 256), hard {hard}");
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in: {stderr}"
    );
}

#[test]
fn unknown_arguments_are_usage_errors() {
    let out = vmfleet().args(["run", "--frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(Status::Usage.code().into()));
    let out = vmfleet().arg("fly").output().unwrap();
    assert_eq!(out.status.code(), Some(Status::Usage.code().into()));
}

#[test]
fn the_demo_fleet_runs_and_replays_identically() {
    if !kvm_usable() {
        return;
    }
    let dir = scratch("demo");
    let (trace, live) = (dir.join("demo.trace"), dir.join("live.txt"));
    let out = vmfleet()
        .arg("run")
        .arg("--record")
        .arg(&trace)
        .arg("--transcript")
        .arg(&live)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for vm in ["solo", "quad", "masked"] {
        assert!(stdout.contains(vm), "{stdout}");
    }
    let out = vmfleet().arg("replay").arg(&trace).output().unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(
        out.stdout,
        std::fs::read(&live).unwrap(),
        "replay transcript differs from the live one"
    );
    let out = vmfleet()
        .args(["trace", "show", "--json"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(out.status.success());
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("every line is JSON");
    }
}

/// A VM whose guest faults on purpose fails with the fault; the other VM of the fleet is not
/// disturbed and halts normally. The run's trace replays to the same transcript.
#[test]
fn a_faulting_guest_fails_its_vm_only() {
    if !kvm_usable() {
        return;
    }
    let dir = scratch("fault");
    let spec = dir.join("fault.toml");
    std::fs::write(
        &spec,
        "name = \"isolation\"\n\
         [[vm]]\nname = \"healthy\"\nvcpus = 2\nprobe_repeats = 2\n\
         [[vm]]\nname = \"faulty\"\nprobe_repeats = 0\nfault_after_passes = 1\n",
    )
    .unwrap();
    let (trace, live) = (dir.join("fault.trace"), dir.join("live.txt"));
    let out = vmfleet()
        .arg("run")
        .arg(&spec)
        .arg("--record")
        .arg(&trace)
        .arg("--transcript")
        .arg(&live)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(Status::VmFailed.code().into()),
        "{stdout}\n{stderr}"
    );
    let row = |vm: &str| {
        stdout
            .lines()
            .find(|line| line.starts_with(&format!("{vm} ")))
            .unwrap_or_else(|| panic!("no row for {vm}: {stdout}"))
            .to_string()
    };
    let healthy = row("healthy");
    assert!(healthy.contains(" completed "), "{healthy}");
    assert!(healthy.contains(" halted "), "{healthy}");
    assert!(healthy.contains("= kernel table"), "{healthy}");
    let faulty = row("faulty");
    assert!(
        faulty.contains("FAILED: vcpu0: guest fault: exit #"),
        "{faulty}"
    );
    assert!(
        faulty.contains("SHUTDOWN") || faulty.contains("INTERNAL_ERROR"),
        "{faulty}"
    );
    assert!(
        faulty.contains(" guest fault "),
        "the guest end column: {faulty}"
    );
    // The one pass before the fault was complete, and what it saw is checked.
    let transcript = std::fs::read_to_string(&live).unwrap();
    assert!(
        transcript.contains("== vm1 faulty: FAILED: vcpu0: guest fault"),
        "{transcript}"
    );
    assert!(transcript.contains("guest: 1 pass(es)"), "{transcript}");
    eprintln!("{stdout}");

    // The replay matched the recording, so it succeeds although the recorded VM failed.
    let out = vmfleet().arg("replay").arg(&trace).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        transcript,
        "replay transcript differs from the live one"
    );
}

#[test]
fn a_killed_run_leaves_a_trace_that_reads_back() {
    if !kvm_usable() {
        return;
    }
    let dir = scratch("killed");
    let spec = dir.join("long.toml");
    std::fs::write(
        &spec,
        "[[vm]]\nname = \"long\"\nvcpus = 2\nprobe_repeats = 100000\n",
    )
    .unwrap();
    let trace = dir.join("killed.trace");
    let mut child = vmfleet()
        .arg("run")
        .arg(&spec)
        .arg("--record")
        .arg(&trace)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    child.kill().unwrap(); // SIGKILL: no chance to close the trace
    child.wait().unwrap();
    let out = vmfleet()
        .args(["trace", "show"])
        .arg(&trace)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(Status::Incomplete.code().into()),
        "{stderr}"
    );
    assert!(
        stdout.contains("RUN"),
        "events recorded before the kill are there"
    );
    assert!(
        stdout.contains("cut short"),
        "{}",
        stdout.lines().last().unwrap_or_default()
    );
}

/// SIGTERM to `vmfleet run` stops every VM, closes the trace whole (end marker) and exits with
/// the run's status, not the signal's; the trace replays.
#[test]
fn sigterm_stops_a_run_and_closes_its_trace() {
    if !kvm_usable() {
        return;
    }
    let dir = scratch("sigterm-run");
    let spec = dir.join("long.toml");
    std::fs::write(
        &spec,
        "[[vm]]\nname = \"x\"\nvcpus = 2\nprobe_repeats = 100000\n\n\
         [[vm]]\nname = \"y\"\nvcpus = 1\nprobe_repeats = 100000\n",
    )
    .unwrap();
    let trace = dir.join("term.trace");
    let mut child = vmfleet()
        .arg("run")
        .arg(&spec)
        .arg("--record")
        .arg(&trace)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Up and running (its signal handlers are installed before the fleet comes up).
    std::thread::sleep(Duration::from_millis(1500));
    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    // A hang, not a figure (the figure is `vmfleet bench`'s shutdown).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("vmfleet run still running 20 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    // 0, or 1 if a guest was stopped in the middle of a probe pass: the run's status either way.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stderr.contains("stopping every VM"), "{stderr}");
    for vm in ["x", "y"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{vm} "))),
            "{vm} in the report: {stdout}"
        );
    }
    let recorded = recorder::Trace::open(&trace).expect("the trace reads back");
    recorded
        .require_complete()
        .expect("the trace has its end marker");
    let replay = vmfleet().arg("replay").arg(&trace).output().unwrap();
    assert_eq!(replay.status.code(), Some(0), "{}", text(&replay).1);
    assert!(
        text(&replay)
            .0
            .contains("  stop all -> ok: stopped 2 VM(s)"),
        "{}",
        text(&replay).0
    );
}
