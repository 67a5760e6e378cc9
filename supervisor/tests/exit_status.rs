//! The exit-status table as scripts meet it, on traces alone (no /dev/kvm needed): a faithful
//! replay exits 0 even when a recorded VM failed on purpose; a trace edited to disagree with its
//! recording exits `divergence`; a corrupted copy `bad_input`; a cut copy `incomplete`; a bad
//! command line `usage`. Each status is distinct, so CI can tell them apart.

use recorder::{Trace, TraceWriter};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use supervisor::exit::Status;

fn vmfleet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmfleet"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmfleet-exit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn status_of(out: &Output) -> Option<i32> {
    out.status.code()
}

fn expect(out: &Output, status: Status, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        status_of(out),
        Some(status.code().into()),
        "{what}: expected {status}; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
}

#[test]
fn a_faithful_replay_of_a_run_whose_vm_failed_exits_0() {
    // control.trace: one VM triple-faults on purpose; the replay matches the recording.
    let out = vmfleet()
        .arg("replay")
        .arg(fixture("control.trace"))
        .output()
        .unwrap();
    expect(&out, Status::Success, "replay of control.trace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAILED"),
        "the transcript still shows the recorded failure: {stdout}"
    );
}

/// Rewrite `source` as a new, well-formed trace (valid frames and checksums) whose header's spec
/// hides one more feature: the replayed supervisor then asks for a different CPU model than the
/// recorded one did.
fn disagreeing_copy(source: &Path, to: &Path) {
    let trace = Trace::open(source).unwrap();
    let mut header = trace.header.clone();
    // The copy is written in today's format (a format-1 header reads with no emulated CPUID
    // table, which format 2 says the same way).
    header.format_version = recorder::FORMAT_VERSION;
    let spec = &mut header.job.spec_text;
    assert!(
        spec.contains("hide = ["),
        "the lock fixture's spec hides features: {spec}"
    );
    *spec = spec.replacen("hide = [", "hide = [\"x2apic\", ", 1);
    let (recorder, writer) = TraceWriter::create(to, &header).unwrap();
    for event in &trace.events {
        recorder.record(
            event.stream,
            event.call.clone(),
            event.outcome.clone(),
            event.detail.clone(),
        );
    }
    writer.finish().unwrap();
}

#[test]
fn a_trace_edited_to_disagree_with_its_recording_exits_divergence() {
    let dir = scratch("diverge");
    let edited = dir.join("edited.trace");
    disagreeing_copy(&fixture("lock.trace"), &edited);
    // It is a whole, readable trace: the reader has nothing to say against it.
    let out = vmfleet()
        .args(["trace", "show"])
        .arg(&edited)
        .output()
        .unwrap();
    expect(&out, Status::Success, "trace show of the edited trace");
    let out = vmfleet().arg("replay").arg(&edited).output().unwrap();
    expect(&out, Status::Divergence, "replay of the edited trace");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("diverged"), "{stderr}");
}

#[test]
fn a_corrupted_trace_exits_bad_input_and_a_cut_one_incomplete() {
    let bytes = std::fs::read(fixture("control.trace")).unwrap();
    let dir = scratch("damaged");

    // A byte in the middle of an event's payload: its frame's checksum no longer matches.
    let corrupt = dir.join("corrupt.trace");
    let mut edited = bytes.clone();
    let middle = edited.len() / 2;
    edited[middle] ^= 0x40;
    std::fs::write(&corrupt, &edited).unwrap();
    for args in [&["replay"][..], &["trace", "show"][..]] {
        let out = vmfleet().args(args).arg(&corrupt).output().unwrap();
        expect(
            &out,
            Status::BadInput,
            &format!("{args:?} of a corrupt trace"),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("corrupt"), "{args:?}: {stderr}");
    }

    // Cut in the middle: read to the last whole event, reported as cut short.
    let cut = dir.join("cut.trace");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    for args in [&["replay"][..], &["trace", "show"][..]] {
        let out = vmfleet().args(args).arg(&cut).output().unwrap();
        expect(
            &out,
            Status::Incomplete,
            &format!("{args:?} of a cut trace"),
        );
    }
}

#[test]
fn bad_command_lines_exit_usage_and_the_table_is_in_help() {
    let out = vmfleet().args(["replay"]).output().unwrap();
    expect(&out, Status::Usage, "replay without a trace");
    let out = vmfleet().args(["--help"]).output().unwrap();
    expect(&out, Status::Success, "--help");
    let help = String::from_utf8_lossy(&out.stdout);
    for status in Status::ALL {
        assert!(
            help.contains(&format!("{:>2}  {}", status.code(), status.name())),
            "--help lists {status}: {help}"
        );
    }
}
