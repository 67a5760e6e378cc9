//! The replay backend: serves a recorded trace's results without KVM, and checks that vmfleet
//! issues the same calls, per stream, in the same order.
//!
//! The trace is split into one queue per stream. Order *across* streams is whatever the threads
//! of the live run happened to do, so it is not checked; order *within* a stream is, because one
//! object's calls are serialised by its owner. Each call takes the stream's next expected event:
//! the same call gets the recorded outcome; anything else is a divergence, returned as
//! [`CallError::Replay`].
//!
//! Determinism under threads: every call has a position in the trace, the `seq` of the event it
//! is expected to match (for a stream that ran out, right after the stream's last event). The
//! replay remembers the divergence with the lowest position. A call at a later position than the
//! remembered divergence fails fast with it, so all threads stop soon; a call at an earlier
//! position is still served and checked, so the divergence [`ReplayMonitor::finish`] reports is the
//! earliest one whichever thread happened to get there first.

use crate::call::TraceCall;
use crate::diff::describe_difference;
use crate::reader::{Trace, TraceError};
use crate::trace::Event;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use vcpu::{
    Call, CallError, Errno, GuestArch, Hypervisor, Kick, LockRefusal, NoKick, Origin, Outcome,
    ReplayFailure, Reply, RunDecision, Stream, SystemCall, Vcpu, VcpuCall, VcpuId, Vm, VmCall,
    VmId,
};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

mod feed;

pub use feed::{DEFAULT_WINDOW, ReplayFeed};
use feed::{Feed, expect_fed};

const END_OF_STREAM: &str = "end of stream";

/// A position in the trace: expected `seq`, then stream to break ties.
type Position = (u64, Stream);

#[derive(Debug, Default)]
struct State {
    queues: BTreeMap<Stream, VecDeque<Event>>,
    /// The `seq` of the last event served on each stream.
    last_served: BTreeMap<Stream, u64>,
    first_divergence: Option<(Position, ReplayFailure)>,
    /// For a replay fed from a stream as it goes ([`ReplayHypervisor::streaming`]).
    feed: Option<Feed>,
}

/// What this run did at the point a recorded event is expected.
enum Actual<'a> {
    /// The call reached the backend.
    Call(&'a TraceCall),
    /// The pre-run lock refused the call with this errno.
    Refused(&'a TraceCall, Errno),
}

impl State {
    fn position(&self, stream: Stream) -> Position {
        let seq = match (
            self.queues.get(&stream).and_then(VecDeque::front),
            self.last_served.get(&stream),
        ) {
            (Some(next), _) => next.seq,
            (None, Some(last)) => last.saturating_add(1),
            (None, None) => u64::MAX,
        };
        (seq, stream)
    }

    fn expect(&mut self, stream: Stream, actual: Actual<'_>) -> Result<Outcome, CallError> {
        let position = self.position(stream);
        if let Some((first, failure)) = &self.first_divergence {
            if position >= *first {
                return Err(CallError::Replay(Box::new(failure.clone())));
            }
        }
        let (actual_call, refused) = match actual {
            Actual::Call(call) => (call, None),
            Actual::Refused(call, errno) => (call, Some(errno)),
        };
        let Some(expected) = self.queues.get(&stream).and_then(VecDeque::front) else {
            return Err(self.diverge(
                position,
                None,
                END_OF_STREAM.into(),
                actual_call,
                String::new(),
            ));
        };
        let detail = if expected.call != *actual_call {
            Some(describe_difference(&expected.call, actual_call))
        } else {
            match (&expected.outcome, refused) {
                (Err(f), None) if f.origin == Origin::Lock => Some(format!(
                    "the recorded run's lock refused this call ({}); this run passed it to the backend",
                    f.errno
                )),
                (Err(f), Some(errno)) if f.origin == Origin::Lock && f.errno != errno => {
                    Some(format!(
                        "the recorded run's lock refused this call with {}; this run's with {errno}",
                        f.errno
                    ))
                }
                (Err(f), Some(_)) if f.origin == Origin::Lock => None,
                (recorded, Some(errno)) => Some(format!(
                    "this run's lock refused this call ({errno}); the recorded run passed it to the \
                     backend, which answered {}",
                    crate::render::outcome(recorded)
                )),
                (_, None) => None,
            }
        };
        if let Some(detail) = detail {
            let seq = Some(expected.seq);
            let recorded = expected.call.to_string();
            return Err(self.diverge(position, seq, recorded, actual_call, detail));
        }
        let event = self.queues.get_mut(&stream).and_then(VecDeque::pop_front);
        let event = event.expect("the expected event was just looked at");
        self.last_served.insert(stream, event.seq);
        Ok(event.outcome)
    }

    fn diverge(
        &mut self,
        position: Position,
        seq: Option<u64>,
        expected: String,
        actual: &TraceCall,
        detail: String,
    ) -> CallError {
        let failure = ReplayFailure {
            seq,
            stream: position.1,
            expected,
            actual: actual.to_string(),
            detail,
        };
        let earlier = self
            .first_divergence
            .as_ref()
            .is_none_or(|(first, _)| position < *first);
        if earlier {
            self.first_divergence = Some((position, failure.clone()));
        }
        CallError::Replay(Box::new(failure))
    }

    fn verdict(&self) -> Result<(), ReplayFailure> {
        if let Some((_, failure)) = &self.first_divergence {
            return Err(failure.clone());
        }
        let leftover = self
            .queues
            .iter()
            .filter_map(|(stream, queue)| queue.front().map(|e| (e, *stream, queue.len())))
            .min_by_key(|(e, _, _)| e.seq);
        // A streamed replay: events after the queued ones were counted, not queued.
        let leftover = match (leftover, &self.feed) {
            (Some((event, stream, left)), Some(feed)) => {
                Some((event, stream, left + feed.drained_on(stream)))
            }
            (None, Some(feed)) => feed
                .first_drained
                .as_ref()
                .map(|e| (e, e.stream, feed.drained_on(e.stream))),
            (leftover, None) => leftover,
        };
        match leftover {
            None => Ok(()),
            Some((event, stream, left)) => Err(ReplayFailure {
                seq: Some(event.seq),
                stream,
                expected: event.call.to_string(),
                actual: END_OF_STREAM.into(),
                detail: format!("{left} recorded event(s) left on {stream}"),
            }),
        }
    }
}

type Shared = Arc<Inner>;

/// The replay's state, and for a streamed replay the feeder's signals.
#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    /// The feeder queued events (or stopped): calls waiting for their stream's next event.
    fed: Condvar,
    /// A call took an event (or the replay is over): the feeder waiting for room.
    room: Condvar,
}

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    // `expect` mutates only after all checks, with whole pops and inserts, so a poisoned lock
    // still holds a consistent state.
    state
        .state
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}

fn serve(state: &Shared, stream: Stream, call: Call) -> Result<Reply, CallError> {
    let outcome = expect_fed(state, stream, Actual::Call(&call.into()))?;
    outcome.map_err(|failure| CallError::from_kernel_failure(&failure))
}

/// A [`Hypervisor`] that answers from a trace.
pub struct ReplayHypervisor {
    arch: GuestArch,
    state: Shared,
}

/// A handle on a replay's verdict that outlives the [`ReplayHypervisor`] (which is usually moved
/// into a `Box<dyn Hypervisor>`, possibly inside a [`crate::RecordingHypervisor`]).
#[derive(Clone)]
pub struct ReplayMonitor {
    state: Shared,
}

impl ReplayHypervisor {
    /// Replay a complete trace (a trace cut short is refused: its last calls are unknown).
    pub fn new(trace: &Trace) -> Result<ReplayHypervisor, TraceError> {
        trace.require_complete()?;
        Ok(ReplayHypervisor::from_events(
            trace.header.guest_arch,
            trace.events.iter().cloned(),
        ))
    }

    /// Replay events recorded in memory.
    pub fn from_events(
        arch: GuestArch,
        events: impl IntoIterator<Item = Event>,
    ) -> ReplayHypervisor {
        let mut events: Vec<Event> = events.into_iter().collect();
        events.sort_by_key(|e| e.seq);
        let mut state = State::default();
        // Control requests are not calls to a backend: the supervisor's replay re-issues them to
        // its own control plane (see `Trace::control_events`) and compares the replies.
        for event in events.into_iter().filter(|e| e.stream != Stream::Control) {
            state
                .queues
                .entry(event.stream)
                .or_default()
                .push_back(event);
        }
        ReplayHypervisor {
            arch,
            state: Arc::new(Inner {
                state: Mutex::new(state),
                ..Inner::default()
            }),
        }
    }

    /// Replay a trace as it is read: a feeder thread queues at most about `window` events
    /// ([`DEFAULT_WINDOW`]; the window grows when every call waits beyond it) and hands the
    /// control events to `on_control`, in order. The trace's end (a trace cut short or damaged
    /// is found only when the feeder gets there) comes from [`ReplayFeed::finish`]: check it
    /// before trusting the verdict.
    pub fn streaming<R: std::io::Read + Send + 'static>(
        stream: crate::stream::TraceStream<R>,
        window: usize,
        on_control: impl FnMut(&Event) + Send + 'static,
    ) -> Result<(ReplayHypervisor, ReplayFeed), TraceError> {
        let replay = ReplayHypervisor::from_events(stream.header().guest_arch, []);
        let feed = ReplayFeed::start(Arc::clone(&replay.state), stream, window, on_control)?;
        Ok((replay, feed))
    }

    /// A handle on this replay's verdict, to keep once the backend is boxed away.
    pub fn monitor(&self) -> ReplayMonitor {
        ReplayMonitor {
            state: Arc::clone(&self.state),
        }
    }

    /// See [`ReplayMonitor::finish`].
    pub fn finish(&self) -> Result<(), ReplayFailure> {
        self.monitor().finish()
    }
}

impl ReplayMonitor {
    /// The replay's verdict: the earliest divergence, else the earliest recorded event no call
    /// consumed ("expected X, got end of stream"), else `Ok`. Call it once the run is over (a
    /// streamed replay's feeder then reads the rest of the trace, counting what is left).
    pub fn finish(&self) -> Result<(), ReplayFailure> {
        feed::settle(&self.state).verdict()
    }

    /// The earliest divergence so far, if any.
    pub fn first_divergence(&self) -> Option<ReplayFailure> {
        lock(&self.state)
            .first_divergence
            .as_ref()
            .map(|(_, f)| f.clone())
    }

    /// How many recorded events have not been served yet.
    pub fn remaining(&self) -> usize {
        lock(&self.state).queues.values().map(VecDeque::len).sum()
    }
}

impl Hypervisor for ReplayHypervisor {
    fn arch(&self) -> GuestArch {
        self.arch
    }

    fn call(&self, call: &SystemCall) -> Result<Reply, CallError> {
        if matches!(call, SystemCall::CreateVm { .. }) {
            return Err(CallError::Backend(
                "CREATE_VM must go through create_vm".into(),
            ));
        }
        serve(&self.state, Stream::Host, Call::System(call.clone()))
    }

    fn create_vm(&self, vm: VmId, name: &str) -> Result<Box<dyn Vm>, CallError> {
        let call = Call::System(SystemCall::CreateVm {
            vm,
            name: name.to_string(),
        });
        serve(&self.state, Stream::Vm(vm), call)?;
        Ok(Box::new(ReplayVm {
            id: vm,
            state: Arc::clone(&self.state),
            memory: GuestMemoryMmap::new(),
        }))
    }
}

/// A replayed VM. Guest memory is real anonymous memory, so guest programs load as in a live run.
pub struct ReplayVm {
    id: VmId,
    state: Shared,
    memory: GuestMemoryMmap,
}

impl ReplayVm {
    fn add_memory(&mut self, guest_phys_addr: u64, size: u64) -> Result<(), CallError> {
        let size = usize::try_from(size)
            .map_err(|_| CallError::Backend(format!("guest memory size {size:#x} does not fit")))?;
        let region = GuestRegionMmap::from_range(GuestAddress(guest_phys_addr), size, None)
            .map_err(|e| CallError::Backend(format!("cannot allocate guest memory: {e}")))?;
        self.memory = self
            .memory
            .insert_region(Arc::new(region))
            .map_err(|e| CallError::Backend(format!("cannot add guest memory: {e}")))?;
        Ok(())
    }
}

impl Vm for ReplayVm {
    fn id(&self) -> VmId {
        self.id
    }

    fn call(&mut self, call: &VmCall) -> Result<Reply, CallError> {
        if matches!(call, VmCall::CreateVcpu { .. }) {
            return Err(CallError::Backend(
                "CREATE_VCPU must go through create_vcpu".into(),
            ));
        }
        let reply = serve(&self.state, Stream::Vm(self.id), Call::Vm(call.clone()))?;
        if let VmCall::AddMemory {
            guest_phys_addr,
            size,
            ..
        } = call
        {
            self.add_memory(*guest_phys_addr, *size)?;
        }
        Ok(reply)
    }

    fn create_vcpu(&mut self, vcpu: VcpuId) -> Result<Box<dyn Vcpu>, CallError> {
        let call = Call::Vm(VmCall::CreateVcpu { vcpu });
        serve(&self.state, Stream::Vcpu(self.id, vcpu), call)?;
        Ok(Box::new(ReplayVcpu {
            vm: self.id,
            id: vcpu,
            state: Arc::clone(&self.state),
        }))
    }

    fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }
}

/// A replayed vCPU.
pub struct ReplayVcpu {
    vm: VmId,
    id: VcpuId,
    state: Shared,
}

impl Vcpu for ReplayVcpu {
    fn id(&self) -> (VmId, VcpuId) {
        (self.vm, self.id)
    }

    fn call(&mut self, call: &VcpuCall) -> Result<Reply, CallError> {
        serve(
            &self.state,
            Stream::Vcpu(self.vm, self.id),
            Call::Vcpu(call.clone()),
        )
    }

    /// Checks that the recorded run's lock refused the same call at the same point, with the same
    /// errno (the explanation text is not compared: it is rendered, not replayed).
    fn note_refused(&mut self, call: &VcpuCall, refusal: &LockRefusal) -> Result<(), CallError> {
        let call = TraceCall::Vcpu(call.clone());
        let stream = Stream::Vcpu(self.vm, self.id);
        expect_fed(&self.state, stream, Actual::Refused(&call, refusal.errno)).map(drop)
    }

    /// Replayed runs never block: their kicks are the recorded `INTR` exits.
    fn kicker(&self) -> Arc<dyn Kick> {
        Arc::new(NoKick)
    }

    /// The recorded decision, whatever this run's control plane wants right now (the handle then
    /// waits for it to want the same; see `VcpuHandle::control_point`).
    fn control_point(&mut self, _wanted: RunDecision) -> Result<RunDecision, CallError> {
        match serve(&self.state, Stream::Vcpu(self.vm, self.id), Call::Decision)? {
            Reply::Decision(decision) => Ok(decision),
            other => Err(CallError::Backend(format!(
                "the trace answers a control point with {other}, not a decision"
            ))),
        }
    }
}
