//! A replay fed from its trace as it is read, through a window of queued events, replays every
//! fixture exactly as a replay of the whole trace does, however small the window; and a trace
//! cut short or damaged ends such a replay with the trace's error and status.

use recorder::{Trace, TraceError, TraceStream};
use replay_tests::{fixture_name, fixture_traces};
use supervisor::commands::replay_trace;
use supervisor::exit::{Status, status_of};
use supervisor::replay_stream::{DEFAULT_WINDOW, replay_stream, trace_failure};
use supervisor::spec::{self, FleetSpec};

fn spec_of(trace: &Trace) -> FleetSpec {
    spec::parse(&trace.header.job.spec_text, &trace.header.job.spec_source).unwrap()
}

#[test]
fn every_fixture_replays_the_same_streamed_through_any_window() {
    let mut grew = Vec::new();
    for path in fixture_traces() {
        let name = fixture_name(&path);
        let trace = Trace::open(&path).unwrap();
        let spec = spec_of(&trace);
        let whole = replay_trace(&trace, &spec).unwrap();
        assert!(whole.divergence.is_none(), "{name}");
        for window in [1, 3, 64, DEFAULT_WINDOW] {
            let stream = TraceStream::open(&path).unwrap();
            let streamed = replay_stream(stream, &spec, window)
                .unwrap_or_else(|e| panic!("{name}, window {window}: {e:#}"));
            if let Some(d) = &streamed.divergence {
                panic!("{name}, window {window}: diverged: {d}");
            }
            assert_eq!(
                streamed.transcript, whole.transcript,
                "{name}, window {window}: another transcript"
            );
            let ended = streamed.window.unwrap();
            if ended > window {
                grew.push(format!("{name}: {window} -> {ended}"));
            }
        }
    }
    // A window of one event cannot hold what a fleet's threads wait for at once: some replay
    // must have grown it, and still replayed exactly.
    assert!(!grew.is_empty(), "no replay needed its window to grow");
    eprintln!("windows that grew: {grew:?}");
}

fn fleet_fixture() -> (Vec<u8>, FleetSpec) {
    let path = fixture_traces()
        .into_iter()
        .find(|p| fixture_name(p) == "fleet")
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let spec = spec_of(&Trace::from_bytes(&bytes).unwrap());
    (bytes, spec)
}

#[test]
fn a_trace_cut_short_replays_to_incomplete() {
    let (bytes, spec) = fleet_fixture();
    for cut in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        let part = bytes[..cut].to_vec();
        let stream = TraceStream::new(std::io::Cursor::new(part), "cut.trace".as_ref()).unwrap();
        let Err(error) = replay_stream(stream, &spec, 16) else {
            panic!("cut at {cut}: a cut trace cannot replay");
        };
        assert!(
            matches!(
                error.downcast_ref::<TraceError>(),
                Some(TraceError::CutShort { .. })
            ),
            "cut at {cut}: {error:#}"
        );
        let error = trace_failure(error, "cut.trace".as_ref());
        assert_eq!(status_of(&error), Status::Incomplete, "{error:#}");
        assert!(
            format!("{error:#}").starts_with("replaying trace cut.trace: trace was cut short"),
            "{error:#}"
        );
    }
}

#[test]
fn a_damaged_trace_replays_to_bad_input() {
    let (mut bytes, spec) = fleet_fixture();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    let stream = TraceStream::new(std::io::Cursor::new(bytes), "bad.trace".as_ref()).unwrap();
    let Err(error) = replay_stream(stream, &spec, 16) else {
        panic!("a damaged trace cannot replay");
    };
    let error = trace_failure(error, "bad.trace".as_ref());
    assert_eq!(status_of(&error), Status::BadInput, "{error:#}");
    assert!(
        format!("{error:#}").starts_with("reading trace bad.trace: corrupt trace at byte"),
        "{error:#}"
    );
}
