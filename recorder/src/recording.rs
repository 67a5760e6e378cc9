//! The recording decorator: wraps any backend (KVM in a live run, the replay backend in a replay
//! run) and writes down every call it forwards, with its outcome, on the call's stream.
//!
//! What is recorded:
//! - `Ok(reply)` as `Ok(reply)`;
//! - [`CallError::Kernel`] as `Err(Failure { errno, origin: Kernel })`;
//! - a lock refusal reported through [`Vcpu::note_refused`] as
//!   `Err(Failure { errno, origin: Lock })`, with the refusal's text as the event's detail.
//!
//! What is not: [`CallError::Backend`] and [`CallError::Replay`] are not answers to the call (the
//! backend could not issue it, or a replay stopped), so there is nothing to replay; and
//! [`CallError::Refused`] never comes from a backend (the lock sits above the backends and
//! reports through `note_refused`). Those errors are passed on unrecorded.
//!
//! Streams: system calls on [`Stream::Host`]; `create_vm` as [`SystemCall::CreateVm`] on the new
//! VM's stream; VM calls on [`Stream::Vm`]; `create_vcpu` as [`VmCall::CreateVcpu`] on the new
//! vCPU's stream; vCPU calls and control decisions on [`Stream::Vcpu`]. Fleet control requests are
//! recorded by the supervisor itself on [`Stream::Control`] ([`Recorder::record`]).
//!
//! Each recording object holds its stream's `Sink`: under a folding-only recorder
//! ([`Recorder::folding`], a replay) the stream's part of the transcript, taken once when the
//! object is created, into which its calls fold without the recorder's lock and, for a `RUN`,
//! without building an event or cloning the outcome; under any other recorder, the recorder.
//!
//! Summaries (bounded recording): a [`VcpuCall::RunCounted`] whose exit is an I/O or MMIO exit
//! (or a replay's [`VcpuExit::Counted`]) is not recorded on its own but folded into the vCPU's
//! pending [`ExitSummary`]. The pending summary is recorded as one event, call `RUN_COUNTED`,
//! outcome `Ok(Exit(Counted(summary)))`, before any other call on the vCPU is recorded, once it
//! has been pending for [`SUMMARY_INTERVAL`], and when the vCPU is dropped. Every CPU-model call,
//! control point and kick's `INTR` is still recorded one by one, so a replay checks all of them; a
//! guest that keeps running adds about one event per vCPU per second.

use crate::render::{CallKind, OutcomeRef, RunExits, StreamFold};
use crate::writer::Recorder;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vcpu::{
    Call, CallError, ExitSummary, Failure, GuestArch, Hypervisor, Kick, LockRefusal, Origin, Reply,
    RunDecision, Stream, SystemCall, TakeExit, Vcpu, VcpuCall, VcpuExit, VcpuId, Vm, VmCall, VmId,
};
use vm_memory::GuestMemoryMmap;

/// A call as a recording object holds it: borrowed, cloned into a [`Call`] only when the
/// recorder builds an event of it.
#[derive(Clone, Copy)]
enum CallRef<'a> {
    System(&'a SystemCall),
    Vm(&'a VmCall),
    Vcpu(&'a VcpuCall),
    Decision,
}

impl CallRef<'_> {
    fn to_call(self) -> Call {
        match self {
            CallRef::System(c) => Call::System(c.clone()),
            CallRef::Vm(c) => Call::Vm(c.clone()),
            CallRef::Vcpu(c) => Call::Vcpu(c.clone()),
            CallRef::Decision => Call::Decision,
        }
    }

    fn kind(self) -> CallKind {
        match self {
            CallRef::Vcpu(c) => CallKind::of_vcpu(c),
            _ => CallKind::Other,
        }
    }
}

impl fmt::Display for CallRef<'_> {
    /// As the call's [`Call`] (and so its event's call) prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallRef::System(c) => fmt::Display::fmt(c, f),
            CallRef::Vm(c) => fmt::Display::fmt(c, f),
            CallRef::Vcpu(c) => fmt::Display::fmt(c, f),
            CallRef::Decision => fmt::Display::fmt(&Call::Decision, f),
        }
    }
}

/// Where one recording object's calls go, on its stream: straight into the stream's part of the
/// transcript when the recorder only folds (taken once, see [`Recorder::stream_fold`]), else
/// through [`Recorder::record`].
struct Sink {
    recorder: Recorder,
    stream: Stream,
    fold: Option<StreamFold>,
}

impl Sink {
    fn new(recorder: Recorder, stream: Stream) -> Sink {
        let fold = recorder.stream_fold(stream);
        Sink {
            recorder,
            stream,
            fold,
        }
    }

    /// Record `result` of `call` if it is an answer to the call, the reply borrowed.
    fn reply(&self, call: CallRef<'_>, result: &Result<Reply, CallError>) {
        let failure;
        let outcome = match result {
            Ok(reply) => Ok(reply),
            Err(CallError::Kernel(errno)) => {
                failure = kernel_failure(*errno);
                Err(&failure)
            }
            Err(CallError::Backend(_) | CallError::Replay(_) | CallError::Refused(_)) => return,
        };
        self.outcome(call, outcome, None);
    }

    /// Record `result` of `call` if it is an answer to the call, the reply made by `reply`.
    fn result<T>(
        &self,
        call: CallRef<'_>,
        result: &Result<T, CallError>,
        reply: impl FnOnce(&T) -> Reply,
    ) {
        let (made, failure);
        let outcome = match result {
            Ok(value) => {
                made = reply(value);
                Ok(&made)
            }
            Err(CallError::Kernel(errno)) => {
                failure = kernel_failure(*errno);
                Err(&failure)
            }
            Err(CallError::Backend(_) | CallError::Replay(_) | CallError::Refused(_)) => return,
        };
        self.outcome(call, outcome, None);
    }

    /// Record a plain `RUN` that returned `exit` (one [`Vcpu::run_known`] served).
    fn run_exit(&self, exit: &VcpuExit) {
        match &self.fold {
            Some(fold) => fold.push_run_exit(exit),
            None => self.recorder.record(
                self.stream,
                Call::Vcpu(VcpuCall::Run),
                Ok(Reply::Exit(exit.clone())),
                None,
            ),
        }
    }

    fn outcome(&self, call: CallRef<'_>, outcome: OutcomeRef<'_>, detail: Option<String>) {
        match &self.fold {
            Some(fold) => fold.push(call.kind(), &call, outcome, detail.as_deref()),
            None => {
                let outcome = match outcome {
                    Ok(reply) => Ok(reply.clone()),
                    Err(failure) => Err(failure.clone()),
                };
                self.recorder
                    .record(self.stream, call.to_call(), outcome, detail);
            }
        }
    }
}

fn kernel_failure(errno: vcpu::Errno) -> Failure {
    Failure {
        errno,
        origin: Origin::Kernel,
    }
}

/// A [`Hypervisor`] that records every call to the one it wraps.
pub struct RecordingHypervisor {
    inner: Box<dyn Hypervisor>,
    recorder: Recorder,
    host: Sink,
}

impl RecordingHypervisor {
    /// Wrap `inner`: the answer to every call on it, and on the VMs and vCPUs it creates, goes to
    /// `recorder` (the module documentation says which errors are not answers).
    pub fn new(inner: Box<dyn Hypervisor>, recorder: Recorder) -> Self {
        let host = Sink::new(recorder.clone(), Stream::Host);
        RecordingHypervisor {
            inner,
            recorder,
            host,
        }
    }

    /// The recorder the calls go to.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }
}

impl Hypervisor for RecordingHypervisor {
    fn arch(&self) -> GuestArch {
        self.inner.arch()
    }

    fn spawns_vcpu_threads_ahead(&self) -> bool {
        self.inner.spawns_vcpu_threads_ahead()
    }

    fn runs_guests(&self) -> bool {
        self.inner.runs_guests()
    }

    fn call(&self, call: &SystemCall) -> Result<Reply, CallError> {
        let result = self.inner.call(call);
        self.host.reply(CallRef::System(call), &result);
        result
    }

    fn create_vm(&self, vm: VmId, name: &str) -> Result<Box<dyn Vm>, CallError> {
        let result = self.inner.create_vm(vm, name);
        let call = SystemCall::CreateVm {
            vm,
            name: name.to_string(),
        };
        let sink = Sink::new(self.recorder.clone(), Stream::Vm(vm));
        sink.result(CallRef::System(&call), &result, |_| Reply::Done);
        let inner = result?;
        Ok(Box::new(RecordingVm {
            id: vm,
            inner,
            sink,
        }))
    }
}

/// A [`Vm`] that records every call to the one it wraps.
pub struct RecordingVm {
    id: VmId,
    inner: Box<dyn Vm>,
    sink: Sink,
}

impl Vm for RecordingVm {
    fn id(&self) -> VmId {
        self.id
    }

    fn call(&mut self, call: &VmCall) -> Result<Reply, CallError> {
        let result = self.inner.call(call);
        self.sink.reply(CallRef::Vm(call), &result);
        result
    }

    fn create_vcpu(&mut self, vcpu: VcpuId) -> Result<Box<dyn Vcpu>, CallError> {
        let result = self.inner.create_vcpu(vcpu);
        let call = VmCall::CreateVcpu { vcpu };
        let sink = Sink::new(self.sink.recorder.clone(), Stream::Vcpu(self.id, vcpu));
        sink.result(CallRef::Vm(&call), &result, |_| Reply::Done);
        let inner = result?;
        Ok(Box::new(RecordingVcpu::with_sink(
            self.id, vcpu, inner, sink,
        )))
    }

    fn guest_memory(&self) -> &GuestMemoryMmap {
        self.inner.guest_memory()
    }
}

/// How long a vCPU's exit summary may stay pending before it is recorded: about one summary event
/// per vCPU per second while a guest keeps running past its `record_exits` budget.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(1);

/// Folds between two looks at the clock (a fold is much cheaper than reading it).
const FOLDS_PER_CLOCK_CHECK: u32 = 64;

/// A vCPU's exits folded but not yet recorded.
struct Pending {
    summary: ExitSummary,
    since: Instant,
    folds_unchecked: u32,
}

/// A [`Vcpu`] that records every call to the one it wraps, and every lock refusal; past the
/// `record_exits` budget, summaries of its counted exits (see the module documentation).
pub struct RecordingVcpu {
    vm: VmId,
    id: VcpuId,
    inner: Box<dyn Vcpu>,
    sink: Sink,
    pending: Option<Pending>,
}

impl RecordingVcpu {
    /// Wrap `inner`, vCPU `id` of VM `vm`: its calls go to `recorder` on its stream (what
    /// [`RecordingVm`]'s `create_vcpu` does with the vCPUs it creates).
    pub fn new(vm: VmId, id: VcpuId, inner: Box<dyn Vcpu>, recorder: Recorder) -> Self {
        RecordingVcpu::with_sink(vm, id, inner, Sink::new(recorder, Stream::Vcpu(vm, id)))
    }

    fn with_sink(vm: VmId, id: VcpuId, inner: Box<dyn Vcpu>, sink: Sink) -> Self {
        RecordingVcpu {
            vm,
            id,
            inner,
            sink,
            pending: None,
        }
    }

    /// Fold `exit` (of a `RUN_COUNTED`) into the pending summary; record the summary if it has
    /// been pending for [`SUMMARY_INTERVAL`].
    fn fold(&mut self, exit: &VcpuExit) {
        let pending = self.pending.get_or_insert_with(|| Pending {
            summary: ExitSummary::default(),
            since: Instant::now(),
            folds_unchecked: 0,
        });
        pending.summary.add(exit);
        pending.folds_unchecked += 1;
        if pending.folds_unchecked >= FOLDS_PER_CLOCK_CHECK {
            pending.folds_unchecked = 0;
            if pending.since.elapsed() >= SUMMARY_INTERVAL {
                self.flush();
            }
        }
    }

    /// Record the pending summary, if any, as one `RUN_COUNTED` event.
    fn flush(&mut self) {
        flush(&self.sink, &mut self.pending);
    }
}

/// Record `pending`'s summary, if any, to `sink` as one `RUN_COUNTED` event.
fn flush(sink: &Sink, pending: &mut Option<Pending>) {
    if let Some(pending) = pending.take() {
        let reply = Reply::Exit(VcpuExit::Counted(pending.summary));
        sink.outcome(CallRef::Vcpu(&VcpuCall::RunCounted), Ok(&reply), None);
    }
}

/// Whether a `RUN_COUNTED`'s result goes into the vCPU's summary rather than an event of its own.
fn folds<'a>(call: &VcpuCall, result: &'a Result<Reply, CallError>) -> Option<&'a VcpuExit> {
    match (call, result) {
        (VcpuCall::RunCounted, Ok(Reply::Exit(exit)))
            if ExitSummary::folds(exit) || matches!(exit, VcpuExit::Counted(_)) =>
        {
            Some(exit)
        }
        _ => None,
    }
}

impl Drop for RecordingVcpu {
    /// A vCPU dropped with exits still pending (its thread ended past the budget and nothing was
    /// called on it since) records them now.
    fn drop(&mut self) {
        self.flush();
    }
}

impl Vcpu for RecordingVcpu {
    fn id(&self) -> (VmId, VcpuId) {
        (self.vm, self.id)
    }

    fn call(&mut self, call: &VcpuCall) -> Result<Reply, CallError> {
        let result = self.inner.call(call);
        if let Some(exit) = folds(call, &result) {
            self.fold(exit);
            return result;
        }
        self.flush();
        self.sink.reply(CallRef::Vcpu(call), &result);
        result
    }

    /// Records the refusal (the lock decided it; no backend is asked), then tells the inner
    /// backend.
    fn note_refused(&mut self, call: &VcpuCall, refusal: &LockRefusal) -> Result<(), CallError> {
        self.flush();
        let failure = Failure {
            errno: refusal.errno,
            origin: Origin::Lock,
        };
        self.sink
            .outcome(CallRef::Vcpu(call), Err(&failure), Some(refusal.recorded()));
        self.inner.note_refused(call, refusal)
    }

    /// Kicks are not calls: what they cause is recorded, as the `INTR` exit and the decision.
    fn kicker(&self) -> Arc<dyn Kick> {
        self.inner.kicker()
    }

    fn run_is_at_hand(&self) -> bool {
        self.inner.run_is_at_hand()
    }

    /// Records each exit taken as the plain `RUN` that returned it.
    fn run_known(&mut self, take: &mut dyn FnMut(&VcpuExit) -> TakeExit) -> u64 {
        let (sink, pending) = (&self.sink, &mut self.pending);
        if let Some(fold) = &sink.fold {
            // Added up here and folded at once: `take` records nothing, so nothing can come
            // between these exits on this stream.
            let mut exits = RunExits::default();
            let taken = self.inner.run_known(&mut |exit| {
                let answer = take(exit);
                if answer != TakeExit::Leave {
                    exits.push(exit);
                }
                answer
            });
            if !exits.is_empty() {
                // As `call` does for a call that is not folded.
                flush(sink, pending);
                fold.push_run_exits(exits);
            }
            return taken;
        }
        self.inner.run_known(&mut |exit| {
            let answer = take(exit);
            if answer != TakeExit::Leave {
                // As `call` does for a call that is not folded.
                flush(sink, pending);
                sink.run_exit(exit);
            }
            answer
        })
    }

    fn control_point(&mut self, wanted: RunDecision) -> Result<RunDecision, CallError> {
        let result = self.inner.control_point(wanted);
        self.flush();
        self.sink.result(CallRef::Decision, &result, |decision| {
            Reply::Decision(*decision)
        });
        result
    }
}
