//! The canonical transcript built as events come ([`TranscriptFold`]), one stream at a time.
//!
//! Each stream's part sits behind its own lock ([`StreamFold`]), so the recording objects of a
//! folding-only recorder (a replay, `run --transcript` without a trace, `run --model`) fold their
//! calls straight into their stream's part: no fleet-wide lock, no look-up of the stream, no
//! [`Event`] built, and for a `RUN` no allocation (its exit kind is a `&'static str`; only the
//! first `RUN` of a run of them keeps its outcome, to print it alone if it stays alone).
//! [`TranscriptFold::render`] walks the streams in the canonical order (host, each VM followed by
//! its vCPUs, control), so how the threads interleaved does not show.

use super::{OutcomeRef, OutcomeText, StreamOrder, stream_order};
use crate::call::TraceCall;
use crate::trace::Event;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, MutexGuard};
use vcpu::{ExitSummary, Outcome, Reply, Stream, VcpuCall, VcpuExit};

/// The canonical transcript ([`super::render_streams`]) built as events come, without keeping
/// them: each stream's finished lines, the `RUN`s it is collapsing (a count and their exit
/// kinds), and the control events (few, and compared one by one after a replay).
///
/// Cloning takes a snapshot: the clone does not see what is folded in afterwards.
#[derive(Debug, Default)]
pub struct TranscriptFold {
    streams: BTreeMap<StreamOrder, StreamFold>,
    control: Vec<Event>,
}

impl Clone for TranscriptFold {
    fn clone(&self) -> TranscriptFold {
        TranscriptFold {
            streams: self
                .streams
                .iter()
                .map(|(order, fold)| (*order, fold.snapshot()))
                .collect(),
            control: self.control.clone(),
        }
    }
}

impl TranscriptFold {
    /// Fold in the next event of its stream (each stream's events must come in `seq` order;
    /// streams may interleave).
    pub fn push(&mut self, event: &Event) {
        if event.stream == Stream::Control {
            self.control.push(event.clone());
        }
        let kind = CallKind::of(&event.call);
        self.stream(event.stream).lock().push(
            kind,
            &event.call,
            event.outcome.as_ref(),
            event.detail.as_deref(),
        );
    }

    /// The part of `stream`, registered now if it has none yet: a recording object takes it
    /// once and folds its stream's calls into it (see [`StreamFold::push`]).
    pub(crate) fn stream(&mut self, stream: Stream) -> StreamFold {
        self.streams
            .entry(stream_order(&stream))
            .or_insert_with(|| StreamFold::new(stream))
            .clone()
    }

    /// The control events folded in, in the order they came.
    pub fn control_events(&self) -> &[Event] {
        &self.control
    }

    /// How many events were folded in, on every stream.
    pub(crate) fn events(&self) -> u64 {
        self.streams.values().map(|fold| fold.lock().events).sum()
    }

    /// The transcript so far, exactly as [`super::render_streams`] renders the events folded in.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut first = true;
        for fold in self.streams.values() {
            let lines = fold.lock();
            // A stream registered by an object that then recorded nothing has no part.
            if lines.events == 0 {
                continue;
            }
            if !first {
                out.push('\n');
            }
            first = false;
            let _ = writeln!(out, "{}", lines.stream);
            out.push_str(&lines.text);
            lines.runs.write(&mut out);
            if let Some(summary) = &lines.counted {
                write_counted(&mut out, summary);
            }
        }
        out
    }
}

/// A handle on one stream's part of a [`TranscriptFold`]: what a recording object of a
/// folding-only recorder folds its calls into, under a lock of its own stream only.
#[derive(Clone, Debug)]
pub(crate) struct StreamFold {
    lines: Arc<Mutex<StreamLines>>,
}

impl StreamFold {
    fn new(stream: Stream) -> StreamFold {
        StreamFold {
            lines: Arc::new(Mutex::new(StreamLines {
                stream,
                events: 0,
                text: String::new(),
                runs: Runs::default(),
                counted: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StreamLines> {
        // Every change is a whole push, so a poisoned lock still holds consistent lines.
        self.lines
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A copy of the part as it is now, no longer shared.
    fn snapshot(&self) -> StreamFold {
        StreamFold {
            lines: Arc::new(Mutex::new(self.lock().clone())),
        }
    }

    /// Fold in the stream's next call, `shown` as the transcript prints it (only printed for a
    /// call that is not a plain `RUN` or a `RUN_COUNTED`'s exit), with its outcome and detail.
    pub(crate) fn push(
        &self,
        kind: CallKind,
        shown: &dyn fmt::Display,
        outcome: OutcomeRef<'_>,
        detail: Option<&str>,
    ) {
        self.lock().push(kind, shown, outcome, detail);
    }
}

impl StreamFold {
    /// Fold in a plain `RUN` that returned `exit` (as [`StreamFold::push`] does).
    pub(crate) fn push_run_exit(&self, exit: &VcpuExit) {
        self.lock().push_run_exit(exit);
    }

    /// Fold in plain `RUN`s added up apart, in their order: as [`StreamFold::push_run_exit`] of
    /// each of them, under one lock.
    pub(crate) fn push_run_exits(&self, exits: RunExits) {
        if exits.runs.count > 0 {
            self.lock().push_run_exits(exits.runs);
        }
    }
}

/// Plain `RUN`s that returned an exit each, added up apart from their stream's part (for the
/// runs a backend serves in one go, [`vcpu::Vcpu::run_known`]: hundreds of exits a vCPU, each
/// folded without the part's lock) and then folded into it at once
/// ([`StreamFold::push_run_exits`]).
#[derive(Debug, Default)]
pub(crate) struct RunExits {
    runs: Runs,
}

impl RunExits {
    /// Add a `RUN` that returned `exit`.
    pub(crate) fn push(&mut self, exit: &VcpuExit) {
        self.runs.push_exit(exit);
    }

    /// Whether no run was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.runs.count == 0
    }
}

/// What a call is to the fold: a plain `RUN` (collapsed with its neighbours), a `RUN_COUNTED`
/// (added up with its neighbours when it answered with an exit), or any other call (a line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// `RUN`.
    Run,
    /// `RUN_COUNTED`.
    RunCounted,
    /// Any other call.
    Other,
}

impl CallKind {
    /// The kind of a recorded call.
    pub(crate) fn of(call: &TraceCall) -> CallKind {
        match call {
            TraceCall::Vcpu(vcpu) => CallKind::of_vcpu(vcpu),
            _ => CallKind::Other,
        }
    }

    /// The kind of a vCPU call.
    pub(crate) fn of_vcpu(call: &VcpuCall) -> CallKind {
        match call {
            VcpuCall::Run => CallKind::Run,
            VcpuCall::RunCounted => CallKind::RunCounted,
            _ => CallKind::Other,
        }
    }
}

/// One stream's part of a [`TranscriptFold`].
#[derive(Clone, Debug)]
struct StreamLines {
    stream: Stream,
    /// How many events were folded in.
    events: u64,
    /// The finished lines.
    text: String,
    /// The plain `RUN`s since the last other call.
    runs: Runs,
    /// The `RUN_COUNTED`s since the last other call, added up.
    counted: Option<ExitSummary>,
}

impl StreamLines {
    fn push(
        &mut self,
        kind: CallKind,
        shown: &dyn fmt::Display,
        outcome: OutcomeRef<'_>,
        detail: Option<&str>,
    ) {
        self.events += 1;
        if detail.is_none() {
            match (kind, outcome) {
                (CallKind::RunCounted, Ok(Reply::Exit(exit))) => {
                    self.runs.write_and_clear(&mut self.text);
                    self.counted.get_or_insert_default().add(exit);
                    return;
                }
                (CallKind::Run, _) => {
                    if let Some(summary) = self.counted.take() {
                        write_counted(&mut self.text, &summary);
                    }
                    self.runs.push(outcome);
                    return;
                }
                _ => {}
            }
        }
        self.close();
        let _ = writeln!(self.text, "  {shown} -> {}", OutcomeText(outcome));
        if let Some(detail) = detail {
            for line in detail.lines() {
                let _ = writeln!(self.text, "      {line}");
            }
        }
    }

    /// [`StreamLines::push`] of a plain `RUN` that returned `exit`.
    fn push_run_exit(&mut self, exit: &VcpuExit) {
        self.events += 1;
        if let Some(summary) = self.counted.take() {
            write_counted(&mut self.text, &summary);
        }
        self.runs.push_exit(exit);
    }

    /// [`StreamLines::push_run_exit`] of each of `exits`' runs, in order.
    fn push_run_exits(&mut self, exits: Runs) {
        self.events += exits.count as u64;
        if let Some(summary) = self.counted.take() {
            write_counted(&mut self.text, &summary);
        }
        self.runs.absorb(exits);
    }

    /// Write the `RUN`s or `RUN_COUNTED`s being collapsed (at most one of them is open).
    fn close(&mut self) {
        self.runs.write_and_clear(&mut self.text);
        if let Some(summary) = self.counted.take() {
            write_counted(&mut self.text, &summary);
        }
    }
}

/// `RUN_COUNTED x1224567 -> INTR x7, IO_OUT x1224560 (digest 1a2b3c4d)`: consecutive
/// `RUN_COUNTED` events added up into one summary.
fn write_counted(out: &mut String, summary: &ExitSummary) {
    let _ = writeln!(
        out,
        "  RUN_COUNTED x{} -> {}",
        summary.runs,
        summary.kinds_text()
    );
}

/// How a `RUN`'s outcome counts among its neighbours': its exit's kind, or (rarely) the whole
/// outcome as text.
#[derive(Clone, Debug)]
enum RunKind {
    Exit(&'static str),
    Text(String),
}

impl RunKind {
    fn as_str(&self) -> &str {
        match self {
            RunKind::Exit(kind) => kind,
            RunKind::Text(text) => text,
        }
    }
}

/// Consecutive plain `RUN`s: how many, the first one's outcome (printed alone when it is the only
/// one), and their outcome kinds in order of first appearance, with counts.
#[derive(Clone, Debug, Default)]
struct Runs {
    count: usize,
    first: Option<Outcome>,
    kinds: Vec<(RunKind, usize)>,
}

impl Runs {
    fn push(&mut self, outcome: OutcomeRef<'_>) {
        if let Ok(Reply::Exit(exit)) = outcome {
            return self.push_exit(exit);
        }
        if self.count == 0 {
            self.first = Some(match outcome {
                Ok(reply) => Ok(reply.clone()),
                Err(failure) => Err(failure.clone()),
            });
        }
        self.count += 1;
        self.count_kind(RunKind::Text(OutcomeText(outcome).to_string()), 1);
    }

    /// [`Runs::push`] of a `RUN` that returned `exit`.
    fn push_exit(&mut self, exit: &VcpuExit) {
        if self.count == 0 {
            self.first = Some(Ok(Reply::Exit(exit.clone())));
        }
        self.count += 1;
        let kind = exit.kind();
        if !self.count_named(kind, 1) {
            self.kinds.push((RunKind::Exit(kind), 1));
        }
    }

    /// Count `n` more runs of `kind`, after the kinds seen so far if it is new.
    fn count_kind(&mut self, kind: RunKind, n: usize) {
        if !self.count_named(kind.as_str(), n) {
            self.kinds.push((kind, n));
        }
    }

    /// Count `n` more runs of the kind named `name` if it was seen before; whether it was.
    fn count_named(&mut self, name: &str, n: usize) -> bool {
        // An exit kind is a `'static` name: the same pointer almost always (no `memcmp` per exit).
        let found = self
            .kinds
            .iter_mut()
            .find(|(seen, _)| std::ptr::eq(seen.as_str(), name) || seen.as_str() == name);
        match found {
            Some((_, count)) => {
                *count += n;
                true
            }
            None => false,
        }
    }

    /// Take in `later`, the runs that came after these: as if each had been pushed here (the
    /// first of all stays first, kinds keep the order they first came in).
    fn absorb(&mut self, later: Runs) {
        if self.count == 0 {
            self.first = later.first;
        }
        self.count += later.count;
        for (kind, n) in later.kinds {
            self.count_kind(kind, n);
        }
    }

    /// The line (if any) these runs print.
    fn write(&self, out: &mut String) {
        match (self.count, &self.first) {
            (0, _) | (_, None) => {}
            (1, Some(first)) => {
                let _ = writeln!(
                    out,
                    "  {} -> {}",
                    VcpuCall::Run,
                    OutcomeText(first.as_ref())
                );
            }
            (count, Some(_)) => {
                let _ = write!(out, "  RUN x{count} -> ");
                for (i, (kind, n)) in self.kinds.iter().enumerate() {
                    let sep = if i > 0 { ", " } else { "" };
                    let _ = write!(out, "{sep}{} x{n}", kind.as_str());
                }
                out.push('\n');
            }
        }
    }

    /// [`Runs::write`], then start over (keeping the kinds' room).
    fn write_and_clear(&mut self, out: &mut String) {
        self.write(out);
        self.count = 0;
        self.first = None;
        self.kinds.clear();
    }
}

/// The exit of a `RUN_COUNTED` event that answered with one (a summary or an exit recorded whole).
pub(super) fn counted_exit(event: &Event) -> Option<&VcpuExit> {
    match (&event.call, &event.outcome, &event.detail) {
        (TraceCall::Vcpu(VcpuCall::RunCounted), Ok(Reply::Exit(exit)), None) => Some(exit),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcpu::hypervisor::call::ExitData;
    use vcpu::{VcpuId, VmId};

    /// An `OUT` to `port` (exits of one kind that differ in their bytes).
    fn out(port: u16, byte: u8) -> VcpuExit {
        VcpuExit::IoOut {
            port,
            data: ExitData::from_slice(&[byte]),
        }
    }

    /// Exits as a vCPU's runs return them, with kinds that come and come back.
    fn exits() -> Vec<VcpuExit> {
        let mut exits = vec![VcpuExit::Interrupted, out(0x10, 1)];
        exits.extend((0..7).map(|i| out(0x11, i)));
        exits.extend([VcpuExit::Interrupted, out(0x12, 9), VcpuExit::Hlt]);
        exits
    }

    /// The part of a stream that folded `exits` between a `RUN_COUNTED` and another call, each
    /// `RUN` on its own, or in batches of `batch` added up apart.
    fn part(exits: &[VcpuExit], batch: Option<usize>) -> String {
        let mut fold = TranscriptFold::default();
        let stream = fold.stream(Stream::Vcpu(VmId(0), VcpuId(0)));
        let counted = Reply::Exit(out(0x13, 0));
        stream.push(
            CallKind::RunCounted,
            &VcpuCall::RunCounted,
            Ok(&counted),
            None,
        );
        match batch {
            None => exits.iter().for_each(|exit| stream.push_run_exit(exit)),
            Some(batch) => {
                for chunk in exits.chunks(batch) {
                    let mut apart = RunExits::default();
                    chunk.iter().for_each(|exit| apart.push(exit));
                    stream.push_run_exits(apart);
                }
            }
        }
        stream.push(
            CallKind::Other,
            &VcpuCall::GetCpuid2,
            Ok(&Reply::Done),
            None,
        );
        fold.render()
    }

    #[test]
    fn runs_added_up_apart_fold_as_runs_pushed_one_by_one() {
        for len in [1, 2, exits().len()] {
            let exits = &exits()[..len];
            let one_by_one = part(exits, None);
            assert!(one_by_one.contains("RUN"), "{one_by_one}");
            for batch in 1..=len {
                assert_eq!(
                    part(exits, Some(batch)),
                    one_by_one,
                    "{len} exits, batch {batch}"
                );
            }
        }
        // An empty batch folds nothing (not even an event).
        let mut fold = TranscriptFold::default();
        let stream = fold.stream(Stream::Vcpu(VmId(0), VcpuId(0)));
        stream.push_run_exits(RunExits::default());
        assert_eq!(fold.events(), 0);
    }
}
