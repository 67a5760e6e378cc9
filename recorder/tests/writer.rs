//! The background writer and the in-memory recorder.

mod common;

use common::{header, scratch};
use recorder::{
    Cut, FLUSH_INTERVAL, OutputError, Recorder, Trace, TraceEnd, TraceOptions, TraceWriter,
    WriteError,
};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;
use vcpu::{Call, Reply, Stream, VcpuCall, VcpuId, VmId};

fn reg(id: u64) -> Call {
    Call::Vcpu(VcpuCall::GetOneReg { id })
}

#[test]
fn concurrent_recorders_number_events_in_file_order() {
    let path = scratch("concurrent.trace");
    let (recorder, writer) = TraceWriter::create(&path, &header()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let recorder = recorder.clone();
            s.spawn(move || {
                for i in 0..500 {
                    recorder.record(
                        Stream::Vcpu(VmId(0), VcpuId(t)),
                        reg(i),
                        Ok(Reply::Value(i)),
                        None,
                    );
                }
            });
        }
    });
    assert_eq!(recorder.recorded(), 2000);
    assert!(!recorder.keeps_events());
    assert!(recorder.events().is_empty());
    let summary = writer.finish().unwrap();
    assert_eq!(summary.events, 2000);

    let trace = Trace::open(&path).unwrap();
    assert_eq!(trace.end, TraceEnd::Complete { events: 2000 });
    // The reader checks seq == position; each thread's own events keep their order.
    for t in 0..4u32 {
        let ids: Vec<u64> = trace
            .events
            .iter()
            .filter(|e| e.stream == Stream::Vcpu(VmId(0), VcpuId(t)))
            .map(|e| match e.call {
                recorder::TraceCall::Vcpu(VcpuCall::GetOneReg { id }) => id,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(ids, (0..500).collect::<Vec<_>>());
    }
    assert!(trace.events.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
}

#[test]
fn the_writer_flushes_while_the_run_goes_on() {
    let path = scratch("flush.trace");
    let (recorder, writer) = TraceWriter::create(&path, &header()).unwrap();
    for i in 0..3 {
        recorder.record(Stream::Host, reg(i), Ok(Reply::Value(i)), None);
    }
    std::thread::sleep(FLUSH_INTERVAL * 6);
    // What a killed process would leave: the partial file, with the events so far and without
    // the end marker; nothing at the trace's own name yet.
    assert!(!path.exists());
    assert_eq!(
        writer.writing_to(),
        Path::new(&format!("{}.partial", path.display()))
    );
    let trace = Trace::open(writer.writing_to()).unwrap();
    assert_eq!(trace.events.len(), 3);
    assert!(matches!(
        trace.end,
        TraceEnd::Truncated {
            whole_events: 3,
            reason: Cut::MissingEnd,
            ..
        }
    ));
    let partial = writer.writing_to().to_path_buf();
    writer.finish().unwrap();
    assert!(Trace::open(&path).unwrap().is_complete());
    assert!(!partial.exists(), "the partial file was renamed into place");
}

#[test]
fn a_dropped_writer_leaves_a_trace_cut_short() {
    let path = scratch("dropped.trace");
    let (recorder, writer) = TraceWriter::create(&path, &header()).unwrap();
    for i in 0..10 {
        recorder.record(Stream::Host, reg(i), Ok(Reply::Value(i)), None);
    }
    let partial = writer.writing_to().to_path_buf();
    drop(writer);
    // Recording after the writer is gone must neither panic nor block.
    recorder.record(Stream::Host, reg(99), Ok(Reply::Done), None);
    assert!(!path.exists(), "only a finished trace gets its name");
    let trace = Trace::open(&partial).unwrap();
    assert_eq!(trace.events.len(), 10);
    let size = std::fs::metadata(&partial).unwrap().len();
    assert_eq!(
        trace.end,
        TraceEnd::Truncated {
            offset: size,
            whole_events: 10,
            reason: Cut::MissingEnd
        }
    );
    assert_eq!(
        trace.require_complete().unwrap_err().to_string(),
        format!(
            "trace was cut short at byte {size} after event #9: the file ends after a whole frame \
             but has no end marker"
        )
    );
}

#[test]
fn a_full_disk_is_reported_at_finish_without_blocking_recorders() {
    if !std::path::Path::new("/dev/full").exists() {
        eprintln!("no /dev/full here; skipped");
        return;
    }
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let (recorder, writer) = TraceWriter::to_file(full, "/dev/full", &header(), false).unwrap();
    let started = std::time::Instant::now();
    for i in 0..20_000 {
        recorder.record(Stream::Host, reg(i), Ok(Reply::Value(i)), None);
    }
    std::thread::sleep(FLUSH_INTERVAL * 2);
    for i in 0..100 {
        recorder.record(Stream::Host, reg(i), Ok(Reply::Value(i)), None);
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    match writer.finish() {
        Err(WriteError::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(28)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_header_of_another_version_is_refused() {
    let mut h = header();
    h.format_version = 9;
    let err = TraceWriter::create(scratch("v9.trace"), &h).unwrap_err();
    assert!(
        matches!(err, WriteError::HeaderVersion { found: 9, .. }),
        "{err:?}"
    );
}

#[test]
fn in_memory_recorders_keep_their_events() {
    let recorder = Recorder::in_memory();
    assert!(recorder.keeps_events());
    recorder.record(Stream::Host, reg(1), Ok(Reply::Value(1)), None);
    recorder.clone().record(
        Stream::Vm(VmId(0)),
        reg(2),
        Ok(Reply::Done),
        Some("d".into()),
    );
    let events = recorder.events();
    assert_eq!(events.len(), 2);
    assert_eq!((events[0].seq, events[1].seq), (0, 1));
    assert_eq!(events[1].detail.as_deref(), Some("d"));
    assert_eq!(recorder.take_events(), events);
    assert!(recorder.events().is_empty());
    recorder.record(Stream::Host, reg(3), Ok(Reply::Done), None);
    assert_eq!(recorder.events()[0].seq, 2);
}

#[test]
fn a_writer_can_also_keep_events() {
    let path = scratch("keep.trace");
    let (recorder, writer) = TraceWriter::create_keeping_events(&path, &header()).unwrap();
    recorder.record(Stream::Host, reg(1), Ok(Reply::Value(1)), None);
    assert_eq!(writer.recorder().recorded(), 1);
    writer.finish().unwrap();
    assert_eq!(Trace::open(&path).unwrap().events, recorder.events());
}

#[test]
fn a_trace_never_overwrites_follows_links_or_leaves_others_readable() {
    let path = scratch("safe.trace");
    let partial = std::path::PathBuf::from(format!("{}.partial", path.display()));
    // A first trace: mode 0600, renamed into place.
    let (_, writer) = TraceWriter::create(&path, &header()).unwrap();
    let mode = std::fs::metadata(&partial).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the partial file is the owner's only");
    writer.finish().unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read(&path).unwrap();

    // Again without `replace`: refused before anything is written, naming the file and --force.
    let err = TraceWriter::create(&path, &header()).unwrap_err();
    assert!(
        matches!(&err, WriteError::Output(OutputError::Exists { path: p }) if *p == path),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()) && message.contains("--force"));
    assert!(!partial.exists());
    assert_eq!(std::fs::read(&path).unwrap(), first);

    // With `replace`: a new trace replaces it, whole.
    let replace = TraceOptions {
        replace: true,
        ..TraceOptions::default()
    };
    let (recorder, writer) = TraceWriter::create_with(&path, &header(), replace).unwrap();
    recorder.record(Stream::Host, reg(1), Ok(Reply::Value(1)), None);
    writer.finish().unwrap();
    assert_eq!(Trace::open(&path).unwrap().events.len(), 1);

    // A link is refused, and what it points to is untouched; with `replace`, the link itself is
    // replaced.
    let victim = scratch("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let link = scratch("link.trace");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let err = TraceWriter::create(&link, &header()).unwrap_err();
    assert!(
        matches!(err, WriteError::Output(OutputError::Symlink { .. })),
        "{err:?}"
    );
    let (_, writer) = TraceWriter::create_with(&link, &header(), replace).unwrap();
    writer.finish().unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(
        !std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(Trace::open(&link).unwrap().is_complete());

    // A partial file left by a killed run is refused by name, or replaced with `replace`; a link
    // in its place is never written through.
    let stale = scratch("stale.trace");
    let stale_partial = format!("{}.partial", stale.display());
    std::os::unix::fs::symlink(&victim, &stale_partial).unwrap();
    let err = TraceWriter::create(&stale, &header()).unwrap_err();
    assert!(
        matches!(err, WriteError::Output(OutputError::StalePartial { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains(&stale_partial), "{err}");
    let (_, writer) = TraceWriter::create_with(&stale, &header(), replace).unwrap();
    writer.finish().unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(Trace::open(&stale).unwrap().is_complete());

    // A discarded writer (a refused job) leaves nothing behind, and an existing trace as it was.
    let before = std::fs::read(&path).unwrap();
    let (_, writer) = TraceWriter::create_with(&path, &header(), replace).unwrap();
    writer.discard();
    assert!(!partial.exists());
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_trace_that_appears_meanwhile_is_not_replaced() {
    let path = scratch("raced.trace");
    let (_, writer) = TraceWriter::create(&path, &header()).unwrap();
    std::fs::write(&path, b"someone else's").unwrap();
    let partial = writer.writing_to().to_path_buf();
    let err = writer.finish().unwrap_err();
    assert!(
        matches!(err, WriteError::Output(OutputError::Appeared { .. })),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
    assert!(
        Trace::open(&partial).unwrap().is_complete(),
        "the finished trace is kept in its partial file"
    );
}
