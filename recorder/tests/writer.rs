//! The background writer and the in-memory recorder.

mod common;

use common::{header, scratch};
use recorder::{Cut, FLUSH_INTERVAL, Recorder, Trace, TraceEnd, TraceWriter, WriteError};
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
                Call::Vcpu(VcpuCall::GetOneReg { id }) => id,
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
    // What a killed process would leave: the events so far, without the end marker.
    let trace = Trace::open(&path).unwrap();
    assert_eq!(trace.events.len(), 3);
    assert!(matches!(
        trace.end,
        TraceEnd::Truncated {
            whole_events: 3,
            reason: Cut::MissingEnd,
            ..
        }
    ));
    writer.finish().unwrap();
    assert!(Trace::open(&path).unwrap().is_complete());
}

#[test]
fn a_dropped_writer_leaves_a_trace_cut_short() {
    let path = scratch("dropped.trace");
    let (recorder, writer) = TraceWriter::create(&path, &header()).unwrap();
    for i in 0..10 {
        recorder.record(Stream::Host, reg(i), Ok(Reply::Value(i)), None);
    }
    drop(writer);
    // Recording after the writer is gone must neither panic nor block.
    recorder.record(Stream::Host, reg(99), Ok(Reply::Done), None);
    let trace = Trace::open(&path).unwrap();
    assert_eq!(trace.events.len(), 10);
    let size = std::fs::metadata(&path).unwrap().len();
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
    let (recorder, writer) = TraceWriter::create("/dev/full", &header()).unwrap();
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
    let a = recorder.record(Stream::Host, reg(1), Ok(Reply::Value(1)), None);
    let b = recorder.clone().record(
        Stream::Vm(VmId(0)),
        reg(2),
        Ok(Reply::Done),
        Some("d".into()),
    );
    assert_eq!((a, b), (0, 1));
    let events = recorder.events();
    assert_eq!(events.len(), 2);
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
