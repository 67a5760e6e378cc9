//! The streaming reader agrees with the whole-trace reader on every fixture, and on traces cut
//! at many offsets and damaged at many bytes, however the source hands out its bytes.

use recorder::{Trace, TraceStream};
use std::io::Read;
use std::path::PathBuf;

/// A source that hands out at most a few bytes per read (1, 2, ... 13, 1, ...), so the window
/// fills, compacts and grows across every frame boundary.
struct Trickle<'a> {
    bytes: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.step = self.step % 13 + 1;
        let n = self.step.min(buf.len()).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

/// What a reading gives, as comparable text: the header, every event, the end (or the error).
fn streamed(bytes: &[u8]) -> String {
    let source = Trickle { bytes, step: 0 };
    match TraceStream::new(source, std::path::Path::new("<trickle>")) {
        Err(e) => format!("error: {e}"),
        Ok(stream) => match Trace::collect(stream) {
            Err(e) => format!("error: {e}"),
            Ok(trace) => format!("{:?}\n{:?}\n{:?}", trace.header, trace.events, trace.end),
        },
    }
}

fn whole(bytes: &[u8]) -> String {
    match Trace::from_bytes_lenient(bytes) {
        Err(e) => format!("error: {e}"),
        Ok(trace) => format!("{:?}\n{:?}\n{:?}", trace.header, trace.events, trace.end),
    }
}

fn fixtures() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "trace"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "the fixtures are missing");
    out
}

/// Offsets to cut or damage at: every byte of the first 120, then a spread over the rest, and
/// the last 24.
fn offsets(len: usize) -> Vec<usize> {
    let mut at: Vec<usize> = (0..len.min(120)).collect();
    at.extend((120..len).step_by((len / 60).max(1)));
    at.extend(len.saturating_sub(24)..len);
    at.sort_unstable();
    at.dedup();
    at
}

#[test]
fn the_stream_reads_every_fixture_as_the_whole_reader_does() {
    for (path, bytes) in fixtures() {
        let expected = whole(&bytes);
        assert!(expected.contains("Complete"), "{}", path.display());
        assert_eq!(streamed(&bytes), expected, "{}", path.display());
        // And from the file, as `Trace::open` reads it.
        let opened = Trace::open(&path).unwrap();
        assert_eq!(
            format!("{:?}\n{:?}\n{:?}", opened.header, opened.events, opened.end),
            expected
        );
    }
}

#[test]
fn the_stream_agrees_on_fixtures_cut_short() {
    for (path, bytes) in fixtures() {
        for cut in offsets(bytes.len()) {
            let part = &bytes[..cut];
            assert_eq!(
                streamed(part),
                whole(part),
                "{} cut at {cut}",
                path.display()
            );
        }
    }
}

#[test]
fn the_stream_agrees_on_damaged_fixtures() {
    for (path, bytes) in fixtures() {
        // Fewer than the cuts: each damaged read looks for a damaged length field to its end.
        for at in offsets(bytes.len()).into_iter().step_by(6) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x5a;
            assert_eq!(
                streamed(&damaged),
                whole(&damaged),
                "{} damaged at {at}",
                path.display()
            );
        }
    }
}

#[test]
fn finish_reads_the_rest_and_gives_the_end() {
    let (_, bytes) = fixtures().swap_remove(0);
    let mut stream = TraceStream::from_bytes(&bytes).unwrap();
    let first = stream.next().unwrap();
    assert_eq!(first.seq, 0);
    assert_eq!(stream.served(), 1);
    let end = stream.finish().unwrap();
    assert_eq!(end, Trace::from_bytes(&bytes).unwrap().end);
}

#[test]
fn converting_as_the_trace_is_read_writes_what_encode_trace_writes() {
    for (path, bytes) in fixtures() {
        let len = bytes.len();
        for cut in [len, len / 2, len - 1] {
            let part = &bytes[..cut];
            let Ok(trace) = Trace::from_bytes(part) else {
                continue;
            };
            let expected =
                recorder::encode_trace(&trace.header, &trace.events, trace.is_complete()).unwrap();
            let mut out = Vec::new();
            let converted =
                recorder::encode_stream(TraceStream::from_bytes(part).unwrap(), &mut out).unwrap();
            assert_eq!(out, expected, "{} cut at {cut}", path.display());
            assert_eq!(converted.bytes, expected.len() as u64);
            assert_eq!(converted.events, trace.events.len() as u64);
            assert_eq!(converted.end, trace.end);
        }
    }
}

/// What a run weighs (what a streamed replay's window counts): at least its events' numbers, and
/// its block's bodies shared out evenly over the block's events, so that runs of one block weigh
/// the same per event, and a trace of like VMs, whose blocks hold few distinct bodies, weighs a
/// few bytes per event.
#[test]
fn runs_weigh_their_numbers_and_a_share_of_their_block() {
    for (path, bytes) in fixtures() {
        // Each fixture as recorded (format 1: one body per event) and as this vmfleet writes it.
        let trace = Trace::from_bytes(&bytes).unwrap();
        let converted =
            recorder::encode_trace(&trace.header, &trace.events, trace.is_complete()).unwrap();
        let (single, blocks) = (weigh(&path, &bytes), weigh(&path, &converted));
        assert!(blocks <= single, "{}: {blocks} > {single}", path.display());
        if path.ends_with("fleet.trace") {
            assert!(blocks < 100, "{}: {blocks} bytes an event", path.display());
        }
    }
}

/// The trace's runs' weight per event, on average, after checking each run's.
fn weigh(path: &std::path::Path, bytes: &[u8]) -> usize {
    let mut stream = TraceStream::from_bytes(bytes).unwrap();
    let mut last: Option<(std::sync::Arc<[recorder::EventBody]>, usize)> = None;
    let (mut events, mut weight) = (0usize, 0usize);
    while let Some(run) = stream.next_run(512) {
        let per_event = run.weight / run.events.len();
        assert_eq!(
            per_event * run.events.len(),
            run.weight,
            "{}",
            path.display()
        );
        assert!(
            per_event > 4,
            "{}: {per_event} bytes an event",
            path.display()
        );
        if let Some((bodies, before)) = &last {
            if std::sync::Arc::ptr_eq(bodies, &run.bodies) {
                assert_eq!(
                    *before,
                    per_event,
                    "{}: one block, two weights",
                    path.display()
                );
            }
        }
        last = Some((std::sync::Arc::clone(&run.bodies), per_event));
        events += run.events.len();
        weight += run.weight;
    }
    weight / events.max(1)
}
