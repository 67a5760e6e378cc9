//! The `vmfleet` binary as a user meets it: bad input gets a clear error and exit status 4
//! (`bad_input`), never a panic; a live run works when /dev/kvm does (and says SKIPPED when it does not); a trace cut
//! short by a killed process still reads back to its last whole event; the files vmfleet writes
//! never overwrite or follow anything without `--force`, and only their owner can read them.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use supervisor::exit::Status;

fn vmfleet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmfleet"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmfleet-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
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
    vcpu::skip::kvm_usable("(live part)")
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

    // A misspelt key gets the nearest one; a name a command line would take for an option is
    // refused; `--cross-check` on an x86 fleet points at its own `arch`. All exit 4 (bad input).
    for (text, args, at) in [
        (
            "[[vm]]\nname = \"a\"\nvcpu = 2\n",
            &[][..],
            "3:1: unknown key `vcpu` in [[vm]] (did you mean `vcpus`?)",
        ),
        (
            "[[vm]]\nname = \"-x\"\n",
            &[],
            "2:8: VM name: `-x` starts with `-`",
        ),
        (
            "arch = \"x86_64\"\n[[vm]]\nname = \"a\"\n",
            &["--cross-check"],
            "1:8: `--cross-check` applies to aarch64 fleets",
        ),
    ] {
        std::fs::write(&spec, text).unwrap();
        let out = vmfleet().arg("run").args(args).arg(&spec).output().unwrap();
        assert_clean_error(&out, &format!("{}:{at}", spec.display()));
    }
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

/// A flipped bit in a frame's length field that makes the frame run past the end of the file
/// looks like a cut; it is reported as corrupt at that frame's byte (status bad_input), while
/// `trace show` still shows the events before it.
#[test]
fn a_damaged_length_is_corrupt_not_cut_short() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/single.trace");
    let mut bytes = std::fs::read(&fixture).unwrap();
    // Walk to the third event frame (preamble, header frame, two event frames).
    let mut pos = 12;
    for _ in 0..3 {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 8 + len;
    }
    // Bit 20 of the length: about 1 MiB more, past the end of this small file.
    assert!(bytes.len() < 1 << 20);
    bytes[pos + 2] ^= 0x10;
    let dir = scratch("length");
    let damaged = dir.join("length.trace");
    std::fs::write(&damaged, &bytes).unwrap();
    let out = vmfleet().arg("replay").arg(&damaged).output().unwrap();
    assert_clean_error(&out, &format!("corrupt trace at byte {pos}"));
    let out = vmfleet()
        .args(["trace", "show"])
        .arg(&damaged)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(Status::BadInput.code().into()),
        "{stderr}"
    );
    assert!(stdout.contains("#1 "), "the events before it: {stdout}");
    assert!(!stdout.contains("#2 "), "{stdout}");
    assert!(
        stdout.contains(&format!("corrupt at byte {pos}")) && !stdout.contains("cut short"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("corrupt at byte {pos}")),
        "{stderr}"
    );
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
        vcpu::skip::skipped(
            "the_open_files_limit_is_raised_at_startup",
            format!("the hard open-files limit is {hard:?}, nothing to raise from 256"),
        );
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
    let partial = dir.join("killed.trace.partial");
    let _ = std::fs::remove_file(&partial);
    let stderr_path = dir.join("stderr.txt");
    let mut child = vmfleet()
        .arg("run")
        .arg(&spec)
        .arg("--record")
        .arg(&trace)
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    child.kill().unwrap(); // SIGKILL: no chance to close the trace
    child.wait().unwrap();
    // The run said where its trace was being written, and that is where it is.
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        stderr.contains(&format!("recording to {}", partial.display())),
        "{stderr}"
    );
    assert!(!trace.exists(), "only a closed trace gets its name");
    let mode = std::fs::metadata(&partial).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = vmfleet()
        .args(["trace", "show"])
        .arg(&partial)
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
    // The next run refuses the stale partial file by name, and replaces it with --force.
    let out = vmfleet()
        .arg("run")
        .arg(&spec)
        .arg("--record")
        .arg(&trace)
        .output()
        .unwrap();
    assert_refused_existing(&out, &partial);
}

fn assert_refused_existing(out: &Output, path: &Path) {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(Status::Error.code().into()),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("--force"),
        "the refusal names {} and --force: {stderr}",
        path.display()
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// What `--record`, `--transcript` (of run and replay) and serve's `--record` are pointed at
/// is refused when it exists, is a link, or has a partial file beside it; the refusal comes
/// before KVM is even opened, so none of this needs /dev/kvm.
#[test]
fn existing_files_and_links_are_refused_without_force() {
    let dir = scratch("refuse");
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let link = dir.join("link.trace");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let existing = dir.join("existing.trace");
    std::fs::write(&existing, b"an earlier trace").unwrap();
    let stale = dir.join("stale.trace");
    let stale_partial = dir.join("stale.trace.partial");
    std::fs::write(&stale_partial, b"left by a killed run").unwrap();
    let untouched = || {
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&existing).unwrap(), b"an earlier trace");
        assert_eq!(
            std::fs::read(&stale_partial).unwrap(),
            b"left by a killed run"
        );
        for leftover in [&link, &existing] {
            let partial = format!("{}.partial", leftover.display());
            assert!(!Path::new(&partial).exists(), "{partial}");
        }
    };
    let socket = dir.join("d.sock");
    for (flag, target) in [
        ("--record", &link),
        ("--record", &existing),
        ("--record", &stale),
        ("--transcript", &link),
        ("--transcript", &existing),
    ] {
        let named = if target == &stale {
            &stale_partial
        } else {
            target
        };
        let out = vmfleet().arg("run").arg(flag).arg(target).output().unwrap();
        assert_refused_existing(&out, named);
        untouched();
        if flag == "--record" {
            let out = vmfleet()
                .arg("serve")
                .arg("--socket")
                .arg(&socket)
                .arg(flag)
                .arg(target)
                .output()
                .unwrap();
            assert_refused_existing(&out, named);
            assert!(!socket.exists(), "a refused daemon never served");
            untouched();
        }
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/single.trace");
    for target in [&link, &existing] {
        let out = vmfleet()
            .arg("replay")
            .arg(&fixture)
            .arg("--transcript")
            .arg(target)
            .output()
            .unwrap();
        assert_refused_existing(&out, target);
        assert!(out.stdout.is_empty(), "refused before replaying");
        untouched();
    }
    // The same file for both is a usage error.
    let same = dir.join("same");
    let out = vmfleet()
        .arg("run")
        .arg("--record")
        .arg(&same)
        .arg("--transcript")
        .arg(&same)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(Status::Usage.code().into()));
    assert!(!same.exists());
}

/// `replay --transcript --force` replaces an existing file, and a link by a file (the link's
/// target is untouched); the transcript is mode 0600 and is what the replay printed.
#[test]
fn replay_force_replaces_files_and_links_themselves() {
    let dir = scratch("replay-force");
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let link = dir.join("link.txt");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let existing = dir.join("existing.txt");
    std::fs::write(&existing, b"old").unwrap();
    let fresh = dir.join("fresh.txt");
    let _ = std::fs::remove_file(&fresh);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/single.trace");
    for (target, force) in [(&fresh, false), (&existing, true), (&link, true)] {
        let mut cmd = vmfleet();
        cmd.arg("replay")
            .arg(&fixture)
            .arg("--transcript")
            .arg(target);
        if force {
            cmd.arg("--force");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", text(&out).1);
        assert_eq!(std::fs::read(target).unwrap(), out.stdout);
        assert_eq!(mode(target), 0o600, "{}", target.display());
        assert!(!Path::new(&format!("{}.partial", target.display())).exists());
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(
        !std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link itself was replaced"
    );
}

/// A run (or daemon) refused for its fleet's architecture leaves the files it was pointed at
/// byte for byte as they were, even under --force, and no partial files. Needs no /dev/kvm.
#[test]
fn a_run_refused_for_its_architecture_leaves_files_untouched() {
    if vcpu::hypervisor::kvm::host_arch() != Some(vcpu::GuestArch::X86_64) {
        vcpu::skip::skipped(
            "a_run_refused_for_its_architecture_leaves_files_untouched",
            "not an x86_64 host",
        );
        return;
    }
    let dir = scratch("arch");
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/specs/arm64-6.12-max.toml");
    let trace = dir.join("keep.trace");
    let transcript = dir.join("keep.txt");
    let fixture =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/single.trace"))
            .unwrap();
    std::fs::write(&trace, &fixture).unwrap();
    std::fs::write(&transcript, b"an earlier transcript").unwrap();
    let socket = dir.join("d.sock");
    for serve in [false, true] {
        let mut cmd = vmfleet();
        if serve {
            cmd.arg("serve").arg("--socket").arg(&socket);
        } else {
            cmd.arg("run").arg("--transcript").arg(&transcript);
        }
        let out = cmd
            .arg(&spec)
            .arg("--record")
            .arg(&trace)
            .arg("--force")
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{stdout}\n{stderr}");
        assert!(stderr.contains("aarch64"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(std::fs::read(&trace).unwrap(), fixture);
        assert_eq!(
            std::fs::read(&transcript).unwrap(),
            b"an earlier transcript"
        );
        for partial in ["keep.trace.partial", "keep.txt.partial"] {
            assert!(!dir.join(partial).exists(), "{partial}");
        }
    }
}

/// Live: a trace and a transcript are mode 0600; an existing trace is replaced with --force,
/// and a link by the trace itself (what it pointed to is untouched).
#[test]
fn force_replaces_an_existing_trace_and_files_are_0600() {
    if !kvm_usable() {
        return;
    }
    let dir = scratch("force");
    let spec = dir.join("one.toml");
    std::fs::write(&spec, "[[vm]]\nname = \"one\"\n").unwrap();
    let trace = dir.join("one.trace");
    let transcript = dir.join("one.txt");
    std::fs::write(&trace, b"an earlier trace").unwrap();
    std::fs::write(&transcript, b"an earlier transcript").unwrap();
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let link = dir.join("link.trace");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    for target in [&trace, &link] {
        let out = vmfleet()
            .arg("run")
            .arg(&spec)
            .arg("--record")
            .arg(target)
            .arg("--transcript")
            .arg(&transcript)
            .arg("--force")
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let show = vmfleet()
            .args(["trace", "show"])
            .arg(target)
            .output()
            .unwrap();
        assert!(show.status.success(), "{}", text(&show).1);
        assert_eq!(mode(target), 0o600);
        assert_eq!(mode(&transcript), 0o600);
        assert!(
            std::fs::read_to_string(&transcript)
                .unwrap()
                .contains("one")
        );
        assert!(!Path::new(&format!("{}.partial", target.display())).exists());
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(
        !std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

/// SIGTERM to `vmfleet run` stops every VM, closes the trace whole (end marker) and exits with
/// the run's status, not the signal's; the trace replays.
#[test]
fn sigterm_stops_a_run_and_closes_its_trace() {
    if !kvm_usable() {
        return;
    }
    signal_stops_a_run("TERM");
}

/// SIGINT (Ctrl-C) does the same as SIGTERM.
#[test]
fn sigint_stops_a_run_and_closes_its_trace() {
    if !kvm_usable() {
        return;
    }
    signal_stops_a_run("INT");
}

/// Send `SIG<signal>` to a running `vmfleet run --record` and check how it ends.
fn signal_stops_a_run(signal: &str) {
    let dir = scratch(&format!("sig{signal}-run"));
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
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    // A hang, not a figure (the figure is `vmfleet bench`'s shutdown).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("vmfleet run still running 20 s after SIG{signal}");
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
    // The signal is a shutdown for exit: every VM stopped and reported, nothing closed one by
    // one (the process's exit does that), and the trace says no more than what happened.
    let control: Vec<String> = recorded
        .control_events()
        .map(|e| e.call.to_string())
        .collect();
    assert_eq!(control, ["shutdown for exit"]);
    assert!(
        !recorded.events.iter().any(|e| matches!(
            e.call,
            recorder::TraceCall::Vm(vcpu::VmCall::Destroy)
                | recorder::TraceCall::Vcpu(vcpu::VcpuCall::Destroy)
        )),
        "no DESTROY was recorded"
    );
    let replay = vmfleet().arg("replay").arg(&trace).output().unwrap();
    assert_eq!(replay.status.code(), Some(0), "{}", text(&replay).1);
    assert!(
        text(&replay)
            .0
            .contains("  shutdown for exit -> ok: shut down 2 VM(s)"),
        "{}",
        text(&replay).0
    );
}
