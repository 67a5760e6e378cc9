//! # recorder: vmfleet's traces, the recording backend and the replay backend
//!
//! Owns:
//! - the trace data model ([`trace`]): a header saying where, by which vmfleet and for which job
//!   a trace was recorded, and one [`Event`] per backend call or control request with its
//!   outcome ([`TraceCall`], [`call`]);
//! - the trace file format ([`mod@format`]), its background writer ([`writer`]) and its reader
//!   ([`reader`], streaming in [`stream`]), which reads a trace cut short up to its last whole event and names the byte
//!   offset of any damage;
//! - safe output files ([`output`]): never through a link, never over an existing file unless
//!   asked, written beside the target (mode 0600) and renamed into place when complete;
//! - the recording decorator ([`recording`]) that wraps any backend and records every call on its
//!   stream;
//! - the replay backend ([`replay`]) that serves a trace's results without KVM and checks, stream
//!   by stream, that vmfleet issues the same calls in the same order;
//! - text renderings of events ([`render`]): the canonical transcript and the `trace show` views.
//!
//! Must not: know about fleets, specs or the supervisor's jobs beyond the opaque [`JobInputs`] it
//! stores and the control requests (`protocol::Request`, the control vocabulary) it records;
//! talk to KVM itself (it only decorates or implements `vcpu`'s backend traits); or decide anything
//! about the CPU model (the lock in `vcpu` does, the recorder only writes down its verdicts).

#![deny(missing_docs)]

pub mod block;
pub mod call;
pub mod diff;
pub mod format;
pub mod output;
pub mod reader;
pub mod recording;
pub mod render;
pub mod replay;
pub mod stream;
pub mod trace;
pub mod writer;

pub use block::encode_trace;
pub use call::TraceCall;
pub use diff::describe_difference;
pub use format::{FORMAT_VERSION, MAGIC, MAX_FRAME_LEN, OLDEST_FORMAT_VERSION};
pub use output::{Output, OutputError};
pub use reader::{Corruption, Cut, Trace, TraceEnd, TraceError};
pub use recording::{RecordingHypervisor, RecordingVcpu, RecordingVm, SUMMARY_INTERVAL};
pub use render::{
    ShowFilter, TRACE_SHOW_SCHEMA, call_kind, render_streams, show_json_lines,
    show_json_lines_filtered, show_text, show_text_filtered,
};
pub use replay::{
    DEFAULT_WINDOW, ReplayFeed, ReplayHypervisor, ReplayMonitor, ReplayVcpu, ReplayVm,
};
pub use stream::{ConvertError, Converted, TraceStream, encode_stream};
pub use trace::{
    Capability, Event, EventBody, EventRun, HostFingerprint, JobInputs, RunEvent, TraceHeader,
};
pub use writer::{FLUSH_INTERVAL, Recorder, TraceOptions, TraceWriter, WriteError, WriteSummary};
