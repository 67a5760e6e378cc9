//! `vmfleet replay --model FP TRACE`: every call a trace recorded is sent, in order, to the model
//! engine built from a fingerprint; each CPU-model call whose predicted outcome differs from the
//! recorded one is listed. Exit status: 0 when none differs, 3 (divergence) otherwise, 4
//! (bad_input) for an unreadable fingerprint or trace, 5 (incomplete) for a trace cut short.
//!
//! JSON (`--json`, schema `vmfleet.model-replay.v1`, supervisor/schemas/model-replay.v1.schema.json):
//! the trace, the fingerprint, how many calls were judged and not judged, and the differences.

use super::load_facts;
use crate::cli::ReplayArgs;
use crate::common::{emit, emit_json};
use crate::exit::Status;
use anyhow::Result;
use recorder::{Trace, TraceCall, render};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use vcpu::model::engine::{Engine, HostFacts, Prediction, agrees};
use vcpu::{Call, Outcome, Stream};

/// The version string of `replay --model --json`.
pub const MODEL_REPLAY_SCHEMA: &str = "vmfleet.model-replay.v1";

/// One CPU-model call whose prediction differs from its recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The stream (`host`, `vm0`, `vm0/vcpu1`).
    pub stream: String,
    /// The event's sequence number in the trace.
    pub seq: u64,
    /// The call, as `trace show` prints it.
    pub call: String,
    /// The recorded outcome, as transcripts print it.
    pub recorded: String,
    /// The predicted outcome, as transcripts print it, or `unknown: WHY`.
    pub predicted: String,
}

/// The result of sending a trace's calls to the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelReplay {
    /// CPU-model calls judged.
    pub judged: usize,
    /// Other calls (answered trivially, not compared).
    pub not_judged: usize,
    /// The judged calls whose prediction differs, in trace order.
    pub differences: Vec<Difference>,
}

/// Send every backend call of `trace` (control requests aside) to an engine over `facts`, in
/// sequence order (each stream's calls stay in their order), and compare.
pub fn compare(trace: &Trace, facts: HostFacts) -> ModelReplay {
    let mut events: Vec<_> = trace.events.iter().collect();
    events.sort_by_key(|e| e.seq);
    compare_events(events, facts)
}

/// [`compare`] on events already in sequence order (a trace read as a stream): only the
/// differences are kept.
pub fn compare_events(
    events: impl IntoIterator<Item = impl std::borrow::Borrow<recorder::Event>>,
    facts: HostFacts,
) -> ModelReplay {
    let mut engine = Engine::new(facts);
    let mut result = ModelReplay {
        judged: 0,
        not_judged: 0,
        differences: Vec::new(),
    };
    for event in events {
        let event = event.borrow();
        let call = match &event.call {
            TraceCall::System(c) => Call::System(c.clone()),
            TraceCall::Vm(c) => Call::Vm(c.clone()),
            TraceCall::Vcpu(c) => Call::Vcpu(c.clone()),
            TraceCall::Decision | TraceCall::Control(_) => continue,
        };
        let predicted: Result<Outcome, String> = match engine.call(event.stream, &call) {
            Prediction::NotJudged => {
                result.not_judged += 1;
                continue;
            }
            Prediction::Judged(outcome) => Ok(outcome),
            Prediction::Unknown { why } => Err(why),
        };
        result.judged += 1;
        let same = predicted
            .as_ref()
            .is_ok_and(|p| agrees(&call, p, &event.outcome));
        if !same {
            result.differences.push(Difference {
                stream: stream_name(event.stream),
                seq: event.seq,
                call: event.call.to_string(),
                recorded: render::outcome(&event.outcome),
                predicted: match predicted {
                    Ok(p) => render::outcome(&p),
                    Err(why) => format!("unknown: {why}"),
                },
            });
        }
    }
    result
}

fn stream_name(stream: Stream) -> String {
    match stream {
        Stream::Vcpu(vm, vcpu) => format!("{vm}/{vcpu}"),
        other => other.to_string(),
    }
}

#[derive(Serialize)]
struct Json<'a> {
    schema: &'static str,
    trace: String,
    fingerprint: String,
    #[serde(flatten)]
    result: &'a ModelReplay,
}

/// The text report.
fn text(trace: &Path, fingerprint: &Path, result: &ModelReplay) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} CPU-model calls judged against {} ({} other calls not judged), {} differ",
        trace.display(),
        result.judged,
        fingerprint.display(),
        result.not_judged,
        result.differences.len()
    );
    for d in &result.differences {
        let _ = writeln!(
            out,
            "  {} #{} {}\n    recorded:  {}\n    predicted: {}",
            d.stream, d.seq, d.call, d.recorded, d.predicted
        );
    }
    out
}

/// `vmfleet replay --model FP TRACE [--json]`.
pub fn run(fingerprint: &Path, args: &ReplayArgs) -> Result<Status> {
    let facts = load_facts(fingerprint)?;
    // Compared as the trace is read; a trace cut short or damaged is refused at its end, as it
    // was when read whole first.
    let path = &args.trace;
    let failure = |e: recorder::TraceError| crate::replay_stream::trace_failure(e.into(), path);
    let mut stream = recorder::TraceStream::open(path).map_err(failure)?;
    let result = compare_events(stream.by_ref(), facts);
    stream
        .finish()
        .and_then(|end| end.require_complete())
        .map_err(failure)?;
    if args.json {
        emit_json(&Json {
            schema: MODEL_REPLAY_SCHEMA,
            trace: args.trace.display().to_string(),
            fingerprint: fingerprint.display().to_string(),
            result: &result,
        })?;
    } else {
        emit(&text(&args.trace, fingerprint, &result))?;
    }
    Ok(if result.differences.is_empty() {
        Status::Success
    } else {
        Status::Divergence
    })
}
