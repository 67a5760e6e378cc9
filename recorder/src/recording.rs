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
//! Summaries (bounded recording): a [`VcpuCall::RunCounted`] whose exit is an I/O or MMIO exit
//! (or a replay's [`VcpuExit::Counted`]) is not recorded on its own but folded into the vCPU's
//! pending [`ExitSummary`]. The pending summary is recorded as one event, call `RUN_COUNTED`,
//! outcome `Ok(Exit(Counted(summary)))`, before any other call on the vCPU is recorded, once it
//! has been pending for [`SUMMARY_INTERVAL`], and when the vCPU is dropped. Every CPU-model call,
//! control point and kick's `INTR` is still recorded one by one, so a replay checks all of them; a
//! guest that keeps running adds about one event per vCPU per second.

use crate::writer::Recorder;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vcpu::{
    Call, CallError, ExitSummary, Failure, GuestArch, Hypervisor, Kick, LockRefusal, Origin, Reply,
    RunDecision, Stream, SystemCall, Vcpu, VcpuCall, VcpuExit, VcpuId, Vm, VmCall, VmId,
};
use vm_memory::GuestMemoryMmap;

/// Record `result` of `call` on `stream` if it is an answer to the call.
fn record<T>(
    recorder: &Recorder,
    stream: Stream,
    call: Call,
    result: &Result<T, CallError>,
    reply: impl FnOnce(&T) -> Reply,
) {
    let outcome = match result {
        Ok(value) => Ok(reply(value)),
        Err(CallError::Kernel(errno)) => Err(Failure {
            errno: *errno,
            origin: Origin::Kernel,
        }),
        Err(CallError::Backend(_) | CallError::Replay(_) | CallError::Refused(_)) => return,
    };
    recorder.record(stream, call, outcome, None);
}

/// A [`Hypervisor`] that records every call to the one it wraps.
pub struct RecordingHypervisor {
    inner: Box<dyn Hypervisor>,
    recorder: Recorder,
}

impl RecordingHypervisor {
    /// Wrap `inner`: the answer to every call on it, and on the VMs and vCPUs it creates, goes to
    /// `recorder` (the module documentation says which errors are not answers).
    pub fn new(inner: Box<dyn Hypervisor>, recorder: Recorder) -> Self {
        RecordingHypervisor { inner, recorder }
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

    fn call(&self, call: &SystemCall) -> Result<Reply, CallError> {
        let result = self.inner.call(call);
        record(
            &self.recorder,
            Stream::Host,
            Call::System(call.clone()),
            &result,
            Reply::clone,
        );
        result
    }

    fn create_vm(&self, vm: VmId, name: &str) -> Result<Box<dyn Vm>, CallError> {
        let result = self.inner.create_vm(vm, name);
        let call = Call::System(SystemCall::CreateVm {
            vm,
            name: name.to_string(),
        });
        record(&self.recorder, Stream::Vm(vm), call, &result, |_| {
            Reply::Done
        });
        let inner = result?;
        Ok(Box::new(RecordingVm {
            id: vm,
            inner,
            recorder: self.recorder.clone(),
        }))
    }
}

/// A [`Vm`] that records every call to the one it wraps.
pub struct RecordingVm {
    id: VmId,
    inner: Box<dyn Vm>,
    recorder: Recorder,
}

impl Vm for RecordingVm {
    fn id(&self) -> VmId {
        self.id
    }

    fn call(&mut self, call: &VmCall) -> Result<Reply, CallError> {
        let result = self.inner.call(call);
        record(
            &self.recorder,
            Stream::Vm(self.id),
            Call::Vm(call.clone()),
            &result,
            Reply::clone,
        );
        result
    }

    fn create_vcpu(&mut self, vcpu: VcpuId) -> Result<Box<dyn Vcpu>, CallError> {
        let result = self.inner.create_vcpu(vcpu);
        let call = Call::Vm(VmCall::CreateVcpu { vcpu });
        record(
            &self.recorder,
            Stream::Vcpu(self.id, vcpu),
            call,
            &result,
            |_| Reply::Done,
        );
        let inner = result?;
        Ok(Box::new(RecordingVcpu::new(
            self.id,
            vcpu,
            inner,
            self.recorder.clone(),
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
    recorder: Recorder,
    pending: Option<Pending>,
}

impl RecordingVcpu {
    /// Wrap `inner`, vCPU `id` of VM `vm`: its calls go to `recorder` on its stream (what
    /// [`RecordingVm`]'s `create_vcpu` does with the vCPUs it creates).
    pub fn new(vm: VmId, id: VcpuId, inner: Box<dyn Vcpu>, recorder: Recorder) -> Self {
        RecordingVcpu {
            vm,
            id,
            inner,
            recorder,
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
        if let Some(pending) = self.pending.take() {
            self.recorder.record(
                Stream::Vcpu(self.vm, self.id),
                Call::Vcpu(VcpuCall::RunCounted),
                Ok(Reply::Exit(VcpuExit::Counted(pending.summary))),
                None,
            );
        }
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
        let stream = Stream::Vcpu(self.vm, self.id);
        record(
            &self.recorder,
            stream,
            Call::Vcpu(call.clone()),
            &result,
            Reply::clone,
        );
        result
    }

    /// Records the refusal (the lock decided it; no backend is asked), then tells the inner
    /// backend.
    fn note_refused(&mut self, call: &VcpuCall, refusal: &LockRefusal) -> Result<(), CallError> {
        self.flush();
        self.recorder.record(
            Stream::Vcpu(self.vm, self.id),
            Call::Vcpu(call.clone()),
            Err(Failure {
                errno: refusal.errno,
                origin: Origin::Lock,
            }),
            Some(refusal.recorded()),
        );
        self.inner.note_refused(call, refusal)
    }

    /// Kicks are not calls: what they cause is recorded, as the `INTR` exit and the decision.
    fn kicker(&self) -> Arc<dyn Kick> {
        self.inner.kicker()
    }

    fn control_point(&mut self, wanted: RunDecision) -> Result<RunDecision, CallError> {
        let result = self.inner.control_point(wanted);
        self.flush();
        record(
            &self.recorder,
            Stream::Vcpu(self.vm, self.id),
            Call::Decision,
            &result,
            |decision| Reply::Decision(*decision),
        );
        result
    }
}
