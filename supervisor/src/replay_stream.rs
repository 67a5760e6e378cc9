//! `vmfleet replay` as the trace is read: the replay backend is fed from a [`TraceStream`] by
//! its feeder thread ([`ReplayHypervisor::streaming`]), holding a bounded window of events, and
//! the transcript is folded as the calls come, so a replay's memory does not grow with its trace.
//!
//! A trace cut short or damaged is found when the feeder gets there; the replay then ends with
//! the trace's error (cut short: [`Status::Incomplete`], damaged: [`Status::BadInput`]), as if
//! the trace had been read whole first, never with a divergence.

use crate::commands::{ReplayOutcome, control_request, replay_job};
use crate::exit::{Failure, Status};
use crate::spec::FleetSpec;
use anyhow::Result;
use protocol::Request;
use recorder::{Event, ReplayHypervisor, TraceError, TraceHeader, TraceStream};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

pub use recorder::DEFAULT_WINDOW;

/// Replay `stream` with `spec` (as the trace recorded it: see [`as_recorded`]), holding about `window` recorded events at a time (the window
/// grows when every call waits for an event beyond it). An error that is the trace's own
/// (cut short, damaged, unreadable) is a [`TraceError`] inside the [`anyhow::Error`]; see
/// [`trace_failure`].
pub fn replay_stream<R: Read + Send + 'static>(
    stream: TraceStream<R>,
    spec: &FleetSpec,
    window: usize,
) -> Result<ReplayOutcome> {
    let header = stream.header().clone();
    let (requests, received) = futures::channel::mpsc::unbounded::<Request>();
    // The control events, kept for the comparison of replies (they are few), and the first one
    // that is not a control request.
    let recorded: Arc<Mutex<(Vec<Event>, Option<anyhow::Error>)>> = Arc::default();
    let keep = Arc::clone(&recorded);
    let on_control = move |event: &Event| {
        let mut kept = keep.lock().unwrap_or_else(PoisonError::into_inner);
        match control_request(event) {
            Ok(request) => {
                // The replay may have stopped listening; the comparison still sees the event.
                let _ = requests.unbounded_send(request);
            }
            Err(e) => {
                kept.1.get_or_insert(e);
            }
        }
        kept.0.push(event.clone());
    };
    let (replay, feed) = ReplayHypervisor::streaming(stream, window, on_control)?;
    let spec = &as_recorded(&header, spec);
    replay_job(&header, received, replay, spec, move || {
        let window = feed.window();
        feed.finish()?.require_complete()?;
        let mut kept = recorded.lock().unwrap_or_else(PoisonError::into_inner);
        match kept.1.take() {
            Some(e) => Err(e),
            None => Ok((std::mem::take(&mut kept.0), Some(window))),
        }
    })
}

/// An error from [`replay_stream`] (or from opening its trace) with the status and context
/// `vmfleet replay` gives it: the trace cut short is [`Status::Incomplete`] ("replaying trace
/// P"); unreadable, foreign or damaged is [`Status::BadInput`] ("reading trace P"); anything
/// else is passed on.
pub fn trace_failure(error: anyhow::Error, path: &Path) -> anyhow::Error {
    let Some(trace_error) = error.downcast_ref::<TraceError>() else {
        return error;
    };
    let (status, doing) = match trace_error {
        TraceError::CutShort { .. } => (Status::Incomplete, "replaying"),
        e if e.is_cut_short() => (Status::Incomplete, "reading"),
        _ => (Status::BadInput, "reading"),
    };
    let error = error.context(format!("{doing} trace {}", path.display()));
    Failure::new(status, error).into()
}

/// `spec`, or [`FleetSpec::recorded_whole`] for a trace recorded without `record_exits` budgets
/// (before format 4: every exit was recorded one by one, so every exit is replayed so).
pub(crate) fn as_recorded(header: &TraceHeader, spec: &FleetSpec) -> FleetSpec {
    if header.exit_budgets {
        spec.clone()
    } else {
        spec.recorded_whole()
    }
}
