//! Text renderings of recorded events: the canonical per-stream transcript that live and replayed
//! runs must agree on, and the `trace show` views of a whole trace (text and JSON lines).

use crate::call::TraceCall;
use crate::reader::Trace;
use crate::trace::Event;
use serde::Serialize;
use std::fmt::{self, Write as _};
use vcpu::{Failure, Origin, Outcome, Reply, Stream, VcpuExit};

mod fold;

pub use fold::TranscriptFold;
use fold::counted_exit;
pub(crate) use fold::{CallKind, RunExits, StreamFold};

/// An outcome as transcripts print it: `ok`, the reply, or `EINVAL (kernel)` /
/// `EINVAL (refused by vmfleet)`.
pub fn outcome(outcome: &Outcome) -> String {
    OutcomeText(outcome.as_ref()).to_string()
}

/// An outcome borrowed: what the fold takes, so a recording object need not build one.
pub(crate) type OutcomeRef<'a> = Result<&'a Reply, &'a Failure>;

/// An outcome as [`outcome`] prints it, written straight into a line.
pub(crate) struct OutcomeText<'a>(pub(crate) OutcomeRef<'a>);

impl fmt::Display for OutcomeText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(reply) => fmt::Display::fmt(reply, f),
            Err(failure) => match failure.origin {
                Origin::Kernel => write!(f, "{} (kernel)", failure.errno),
                Origin::Lock => write!(f, "{} (refused by vmfleet)", failure.errno),
            },
        }
    }
}

/// Sorts streams in transcript order: the host, then each VM in id order followed by its vCPUs,
/// then the control plane.
type StreamOrder = (u8, u32, Option<u32>);

fn stream_order(stream: &Stream) -> StreamOrder {
    match stream {
        Stream::Host => (0, 0, None),
        Stream::Vm(vm) => (1, vm.0, None),
        Stream::Vcpu(vm, vcpu) => (1, vm.0, Some(vcpu.0)),
        Stream::Control => (2, 0, None),
    }
}

/// The canonical transcript of `events`: calls grouped by stream, without sequence numbers or
/// times (those differ between a live run and its replay), so a live run and its replay render
/// identically. One `call -> outcome` line per call, except that consecutive `RUN`s collapse into
/// one line with their count and a summary of their exits (`RUN x451 -> IO_OUT x450, HLT x1`), and
/// consecutive `RUN_COUNTED`s (summaries of exits past the `record_exits` budget, and the exits
/// recorded whole among them) into one line adding them up (`RUN_COUNTED x1224567 -> INTR x7,
/// IO_OUT x1224560 (digest 1a2b3c4d)`), so how a run cut its summaries in time does not show. An
/// event's detail (a lock refusal's explanation) follows on an indented line.
///
/// It is [`TranscriptFold`] fed the events in `seq` order, so a run that folds its events as they
/// come renders exactly this.
pub fn render_streams(events: &[Event]) -> String {
    let mut in_order: Vec<&Event> = events.iter().collect();
    in_order.sort_by_key(|e| e.seq);
    let mut fold = TranscriptFold::default();
    for event in in_order {
        fold.push(event);
    }
    fold.render()
}

/// `+1.234567s`: an event's time since the trace started.
fn time(at_ns: u64) -> String {
    format!(
        "+{}.{:06}s",
        at_ns / 1_000_000_000,
        (at_ns % 1_000_000_000) / 1_000
    )
}

/// Which events `trace show` prints: those of one VM (and its vCPUs), of one vCPU index, of some
/// call kinds (the call's first word as `trace show` prints it: `SET_CPUID2`, `RUN`,
/// `SET_ONE_REG`, a control request's op), or all of them (the default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShowFilter {
    /// Only the VM with this index: its own stream and its vCPUs'.
    pub vm: Option<u32>,
    /// Only vCPUs with this index (of the `vm`, or of every VM).
    pub vcpu: Option<u32>,
    /// Only calls of these kinds (compared without regard to case); empty: every kind.
    pub calls: Vec<String>,
}

impl ShowFilter {
    /// Whether the filter lets every event through.
    pub fn is_all(&self) -> bool {
        self.vm.is_none() && self.vcpu.is_none() && self.calls.is_empty()
    }

    /// Whether `event` is shown.
    pub fn shows(&self, event: &Event) -> bool {
        let (vm, vcpu) = match event.stream {
            vcpu::Stream::Vm(vm) => (Some(vm.0), None),
            vcpu::Stream::Vcpu(vm, vcpu) => (Some(vm.0), Some(vcpu.0)),
            vcpu::Stream::Host | vcpu::Stream::Control => (None, None),
        };
        if self.vm.is_some() && vm != self.vm {
            return false;
        }
        if self.vcpu.is_some() && vcpu != self.vcpu {
            return false;
        }
        self.calls.is_empty() || {
            let kind = call_kind(&event.call);
            self.calls.iter().any(|c| c.eq_ignore_ascii_case(&kind))
        }
    }

    /// The call kinds the filter names that no event of `events` has, each with the nearest
    /// kind the trace does have: a typo shows as nothing printed, so it is said instead.
    pub fn unknown_calls<'a>(&self, events: impl Iterator<Item = &'a Event>) -> Vec<String> {
        if self.calls.is_empty() {
            return Vec::new();
        }
        let present: std::collections::BTreeSet<String> =
            events.map(|e| call_kind(&e.call)).collect();
        self.unknown_calls_among(&present)
    }

    /// [`ShowFilter::unknown_calls`], given the call kinds a trace has (gathered as it is read).
    pub fn unknown_calls_among(&self, present: &std::collections::BTreeSet<String>) -> Vec<String> {
        self.calls
            .iter()
            .filter(|c| !present.iter().any(|p| p.eq_ignore_ascii_case(c)))
            .map(|c| {
                let hint = vcpu::model::suggest::closest(
                    &c.to_ascii_uppercase(),
                    present.iter().map(String::as_str),
                )
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
                format!("no `{c}` call in this trace{hint}")
            })
            .collect()
    }
}

/// A call's kind: the first word of how `trace show` prints it.
pub fn call_kind(call: &crate::call::TraceCall) -> String {
    let text = call.to_string();
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `trace show`: the header, every event on one line (`#seq +time stream call -> outcome
/// [origin]`, detail indented below), and a footer saying whether the trace is complete or where
/// and why reading stopped.
pub fn show_text(trace: &Trace) -> String {
    show_text_filtered(trace, &ShowFilter::default())
}

/// [`show_text`] of the events `filter` shows (the header and the footer always; a filtered
/// listing says how many events it left out).
pub fn show_text_filtered(trace: &Trace, filter: &ShowFilter) -> String {
    let mut out = show_text_header(&trace.header);
    let mut hidden = 0u64;
    let mut summaries = SummaryTally::default();
    for event in &trace.events {
        summaries.add(event);
        if filter.shows(event) {
            show_text_event(&mut out, event);
        } else {
            hidden += 1;
        }
    }
    out + &show_text_footer(filter, hidden, &summaries, &trace.end)
}

/// The start of [`show_text`]: the header and the `events:` line.
pub fn show_text_header(header: &crate::trace::TraceHeader) -> String {
    format!("{header}events:\n")
}

/// One event as [`show_text`] prints it (its line, and its detail's lines), appended to `out`.
pub fn show_text_event(out: &mut String, event: &Event) {
    let _ = write!(
        out,
        "  #{} {} {} {} -> ",
        event.seq,
        time(event.at_ns),
        event.stream,
        event.call,
    );
    let _ = match &event.outcome {
        Ok(reply) => writeln!(out, "{reply}"),
        Err(f) => writeln!(out, "{} [{}]", f.errno, f.origin),
    };
    if let Some(detail) = &event.detail {
        for line in detail.lines() {
            let _ = writeln!(out, "      {line}");
        }
    }
}

/// The end of [`show_text_filtered`]: how many events `filter` left out (if it is not
/// [`ShowFilter::is_all`]), and how the trace ends.
pub fn show_text_footer(
    filter: &ShowFilter,
    hidden: u64,
    summaries: &SummaryTally,
    end: &crate::reader::TraceEnd,
) -> String {
    let mut out = String::new();
    if !filter.is_all() {
        let _ = writeln!(out, "({hidden} event(s) left out by the filter)");
    }
    if let Some(line) = summaries_line(summaries) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "end: {end}");
    out
}

/// The summary events `trace show` met (`RUN_COUNTED -> COUNTED`) and the exits they stand for,
/// counted as it reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SummaryTally {
    /// Summary events.
    pub events: u64,
    /// The exits they stand for.
    pub exits: u64,
}

impl SummaryTally {
    /// Count `event` if it is a summary.
    pub fn add(&mut self, event: &Event) {
        if let Some(VcpuExit::Counted(summary)) = counted_exit(event) {
            self.events += 1;
            self.exits += summary.runs;
        }
    }
}

/// What a trace summarised, when it did: `summaries: 4 event(s) stand for 1224567 exits beyond
/// the record_exits budget (counted, not decoded)`.
fn summaries_line(tally: &SummaryTally) -> Option<String> {
    (tally.events > 0).then(|| {
        format!(
            "summaries: {} event(s) stand for {} exits beyond the record_exits budget \
             (counted, not decoded)",
            tally.events, tally.exits
        )
    })
}

/// The schema every line of `trace show --json` names (`supervisor/schemas/trace-show.v1.schema.json`).
pub const TRACE_SHOW_SCHEMA: &str = "vmfleet.trace-show.v1";

/// The first line: the trace header.
#[derive(Serialize)]
struct HeaderLine<'a> {
    schema: &'static str,
    kind: &'static str,
    format_version: u32,
    vmfleet_version: &'a str,
    /// `x86_64` or `aarch64`.
    guest_arch: String,
    host: &'a crate::trace::HostFingerprint,
    job: &'a crate::trace::JobInputs,
}

/// One line per event.
#[derive(Serialize)]
struct EventLine<'a> {
    schema: &'static str,
    kind: &'static str,
    seq: u64,
    at_ns: u64,
    stream: StreamJson,
    /// The call as `trace show` prints it (`SET_CPUID2 entries=56 digest=…`).
    call: String,
    outcome: OutcomeJson,
    detail: Option<&'a str>,
    /// The call and outcome in the trace's own encoding (every argument, every reply), for tools
    /// that need more than the text.
    raw: RawEvent<'a>,
}

#[derive(Serialize)]
struct StreamJson {
    /// `host`, `vm`, `vcpu` or `control`.
    kind: &'static str,
    /// `host`, `vm0`, `vm0/vcpu1`, `control`.
    name: String,
    vm: Option<u32>,
    vcpu: Option<u32>,
}

#[derive(Serialize)]
struct OutcomeJson {
    ok: bool,
    /// The reply as text, when `ok`.
    reply: Option<String>,
    /// `EINVAL`, ..., when not `ok`.
    errno: Option<String>,
    /// Who refused, when not `ok`: `kernel` or `vmfleet_lock`.
    origin: Option<&'static str>,
}

#[derive(Serialize)]
struct RawEvent<'a> {
    call: &'a TraceCall,
    outcome: &'a Outcome,
}

/// The last line: how the trace ends.
#[derive(Serialize)]
struct EndLine {
    schema: &'static str,
    kind: &'static str,
    /// `complete`, `truncated` or `corrupt`.
    status: &'static str,
    /// Events read (whole events, for a trace cut short or corrupt).
    events: u64,
    /// Where reading stopped (not for a complete trace).
    offset: Option<u64>,
    /// Why reading stopped (not for a complete trace).
    reason: Option<String>,
    /// The footer of `trace show`.
    text: String,
}

fn stream_json(stream: &Stream) -> StreamJson {
    let (kind, vm, vcpu) = match stream {
        Stream::Host => ("host", None, None),
        Stream::Vm(vm) => ("vm", Some(vm.0), None),
        Stream::Vcpu(vm, vcpu) => ("vcpu", Some(vm.0), Some(vcpu.0)),
        Stream::Control => ("control", None, None),
    };
    StreamJson {
        kind,
        name: stream.to_string(),
        vm,
        vcpu,
    }
}

fn outcome_json(outcome: &Outcome) -> OutcomeJson {
    match outcome {
        Ok(reply) => OutcomeJson {
            ok: true,
            reply: Some(reply.to_string()),
            errno: None,
            origin: None,
        },
        Err(f) => OutcomeJson {
            ok: false,
            reply: None,
            errno: Some(f.errno.to_string()),
            origin: Some(match f.origin {
                Origin::Kernel => "kernel",
                Origin::Lock => "vmfleet_lock",
            }),
        },
    }
}

fn end_line(end: &crate::reader::TraceEnd) -> EndLine {
    use crate::reader::TraceEnd;
    let (status, events, offset, reason) = match end {
        TraceEnd::Complete { events } => ("complete", *events, None, None),
        TraceEnd::Truncated {
            offset,
            whole_events,
            reason,
        } => (
            "truncated",
            *whole_events,
            Some(*offset),
            Some(reason.to_string()),
        ),
        TraceEnd::Corrupt {
            offset,
            whole_events,
            problem,
        } => (
            "corrupt",
            *whole_events,
            Some(*offset),
            Some(problem.to_string()),
        ),
    };
    EndLine {
        schema: TRACE_SHOW_SCHEMA,
        kind: "end",
        status,
        events,
        offset,
        reason,
        text: end.to_string(),
    }
}

fn json_line(value: &impl Serialize) -> String {
    // These types serialise infallibly (no maps with non-string keys, no custom impls).
    let mut text = serde_json::to_string(value)
        .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()));
    text.push('\n');
    text
}

/// `trace show --json`: one JSON object per line, each with `schema` ([`TRACE_SHOW_SCHEMA`]) and
/// `kind`: the `header`, then an `event` per event, then the `end` (complete, or where and why
/// reading stopped).
pub fn show_json_lines(trace: &Trace) -> String {
    show_json_lines_filtered(trace, &ShowFilter::default())
}

/// [`show_json_lines`] of the events `filter` shows (the header and end lines always).
pub fn show_json_lines_filtered(trace: &Trace, filter: &ShowFilter) -> String {
    let mut out = show_json_header(&trace.header);
    for event in trace.events.iter().filter(|e| filter.shows(e)) {
        out += &show_json_event(event);
    }
    out + &show_json_end(&trace.end)
}

/// The first line of [`show_json_lines`]: the header.
pub fn show_json_header(h: &crate::trace::TraceHeader) -> String {
    json_line(&HeaderLine {
        schema: TRACE_SHOW_SCHEMA,
        kind: "header",
        format_version: h.format_version,
        vmfleet_version: &h.vmfleet_version,
        guest_arch: h.guest_arch.to_string(),
        host: &h.host,
        job: &h.job,
    })
}

/// One event's line of [`show_json_lines`].
pub fn show_json_event(event: &Event) -> String {
    json_line(&EventLine {
        schema: TRACE_SHOW_SCHEMA,
        kind: "event",
        seq: event.seq,
        at_ns: event.at_ns,
        stream: stream_json(&event.stream),
        call: event.call.to_string(),
        outcome: outcome_json(&event.outcome),
        detail: event.detail.as_deref(),
        raw: RawEvent {
            call: &event.call,
            outcome: &event.outcome,
        },
    })
}

/// The last line of [`show_json_lines`]: how the trace ends.
pub fn show_json_end(end: &crate::reader::TraceEnd) -> String {
    json_line(&end_line(end))
}
