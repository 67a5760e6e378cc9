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
use crate::trace::{Event, EventBody, EventRun};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use vcpu::{
    Call, CallError, Errno, GuestArch, Hypervisor, Kick, LockRefusal, NoKick, Origin, Outcome,
    ReplayFailure, Reply, RunDecision, Stream, SystemCall, TakeExit, Vcpu, VcpuCall, VcpuExit,
    VcpuId, Vm, VmCall, VmId,
};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

mod feed;
mod queue;

use feed::Feed;
pub use feed::{DEFAULT_WINDOW, ReplayFeed};
use queue::{QueueState, Queued, RunRole, RunRoles, StreamQueue};

const END_OF_STREAM: &str = "end of stream";

/// A position in the trace: expected `seq`, then stream to break ties.
type Position = (u64, Stream);

/// What this run did at the point a recorded event is expected.
enum Actual<'a> {
    /// The call reached the backend.
    Call(&'a TraceCall),
    /// The pre-run lock refused the call with this errno.
    Refused(&'a TraceCall, Errno),
}

impl Actual<'_> {
    fn call(&self) -> &TraceCall {
        match self {
            Actual::Call(call) | Actual::Refused(call, _) => call,
        }
    }
}

/// Why the recorded event `expected` does not match what this run did, or `None` if it does.
fn mismatch(expected: &EventBody, actual: &Actual<'_>) -> Option<String> {
    let (actual_call, refused) = match actual {
        Actual::Call(call) => (*call, None),
        Actual::Refused(call, errno) => (*call, Some(*errno)),
    };
    if expected.call != *actual_call {
        return Some(describe_difference(&expected.call, actual_call));
    }
    match (&expected.outcome, refused) {
        (Err(f), None) if f.origin == Origin::Lock => Some(format!(
            "the recorded run's lock refused this call ({}); this run passed it to the backend",
            f.errno
        )),
        (Err(f), Some(errno)) if f.origin == Origin::Lock && f.errno != errno => Some(format!(
            "the recorded run's lock refused this call with {}; this run's with {errno}",
            f.errno
        )),
        (Err(f), Some(_)) if f.origin == Origin::Lock => None,
        (recorded, Some(errno)) => Some(format!(
            "this run's lock refused this call ({errno}); the recorded run passed it to the \
             backend, which answered {}",
            crate::render::outcome(recorded)
        )),
        (_, None) => None,
    }
}

type Shared = Arc<Inner>;

/// The replay's state: the streams' queues, the first divergence, the feeder's signals.
#[derive(Debug)]
struct Inner {
    /// Every stream's queue. Looked up once per replayed object and by the feeder once per
    /// stream, never per call.
    streams: RwLock<HashMap<Stream, Arc<StreamQueue>>>,
    /// The `seq` of the earliest divergence so far (`u64::MAX`: none), read by every call
    /// without a lock; `divergence` holds it whole.
    first_seq: AtomicU64,
    divergence: Mutex<Option<(Position, ReplayFailure)>>,
    feed: Feed,
    /// The guest memory regions handed out, by guest-physical address and size: every replayed
    /// VM with a region of that layout gets the same one. A replay never writes guest memory
    /// (its loaders only check that a program fits: `vcpu::guests::Placement::Check`) and runs
    /// no guest, so the memory is only a layout; mapped and unmapped per VM, it cost a 1,000-VM
    /// replay 2,000 `mmap`/`munmap` calls, each taking the process's memory map for writing.
    regions: Mutex<HashMap<(u64, usize), Arc<GuestRegionMmap>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation under these locks is whole (a push, a pop, an insert), so a poisoned lock
    // still holds a consistent state.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn new(queues: HashMap<Stream, Arc<StreamQueue>>, feed: Feed) -> Shared {
        Arc::new(Inner {
            streams: RwLock::new(queues),
            first_seq: AtomicU64::new(u64::MAX),
            divergence: Mutex::new(None),
            feed,
            regions: Mutex::default(),
        })
    }

    /// `stream`'s queue, made empty if the trace has not had it yet.
    fn queue(&self, stream: Stream) -> Arc<StreamQueue> {
        let streams = self.streams.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = streams.get(&stream) {
            return Arc::clone(queue);
        }
        drop(streams);
        let mut streams = self.streams.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(streams.entry(stream).or_default())
    }

    fn queues(&self) -> Vec<(Stream, Arc<StreamQueue>)> {
        let streams = self.streams.read().unwrap_or_else(PoisonError::into_inner);
        streams.iter().map(|(s, q)| (*s, Arc::clone(q))).collect()
    }

    /// The earliest divergence, if one is known at or before `position`.
    fn diverged_by(&self, position: Position) -> Option<ReplayFailure> {
        if self.first_seq.load(Ordering::Acquire) > position.0 {
            return None;
        }
        let divergence = lock(&self.divergence);
        divergence
            .as_ref()
            .filter(|(first, _)| position >= *first)
            .map(|(_, failure)| failure.clone())
    }

    /// The earliest divergence, if any.
    fn first_failure(&self) -> Option<ReplayFailure> {
        lock(&self.divergence).as_ref().map(|(_, f)| f.clone())
    }

    /// Remember a divergence at `position` (if it is the earliest yet), wake every waiting call
    /// (each may now fail fast), and return it as the call's error. Called with no stream locked.
    fn diverge(
        &self,
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
        let mut divergence = lock(&self.divergence);
        if divergence
            .as_ref()
            .is_none_or(|(first, _)| position < *first)
        {
            *divergence = Some((position, failure.clone()));
            self.first_seq.store(position.0, Ordering::Release);
        }
        drop(divergence);
        self.wake_all();
        CallError::Replay(Box::new(failure))
    }

    /// Wake every call waiting for the feeder (it stopped, or a divergence was found). Each
    /// queue is locked to notify it, so a call about to wait cannot miss the news.
    fn wake_all(&self) {
        for (_, queue) in self.queues() {
            let state = lock(&queue.state);
            if state.waiting > 0 {
                queue.fed.notify_all();
            }
        }
    }

    /// Serve one call on `stream` (whose queue is `queue`): wait until its next recorded event
    /// is queued or the trace is read to its end, then check the call against it and answer
    /// with the recorded outcome.
    fn expect(
        &self,
        queue: &StreamQueue,
        stream: Stream,
        actual: Actual<'_>,
    ) -> Result<Outcome, CallError> {
        let mut state = lock(&queue.state);
        while state.events.is_empty() && self.feed.is_feeding() {
            // This call's position is at least `fed`: at or past a known divergence, it fails
            // fast, as it would with the whole trace queued.
            if self.first_seq.load(Ordering::Acquire) <= self.feed.fed() {
                if let Some(failure) = self.first_failure() {
                    return Err(CallError::Replay(Box::new(failure)));
                }
            }
            state.waiting += 1;
            state = queue
                .fed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting -= 1;
        }
        let position = state.position(stream);
        if let Some(failure) = self.diverged_by(position) {
            return Err(CallError::Replay(Box::new(failure)));
        }
        let Some((seq, expected)) = state.next() else {
            drop(state);
            let end = END_OF_STREAM.into();
            return Err(self.diverge(position, None, end, actual.call(), String::new()));
        };
        if let Some(detail) = mismatch(expected, &actual) {
            let recorded = expected.call.to_string();
            drop(state);
            return Err(self.diverge(position, Some(seq), recorded, actual.call(), detail));
        }
        let outcome = expected.outcome.clone();
        let run_done = state.pop();
        drop(state);
        if let Some(weight) = run_done {
            self.feed.took(weight);
        }
        Ok(outcome)
    }

    /// The verdict once the run is over and the feeder has read the whole trace.
    fn verdict(&self) -> Result<(), ReplayFailure> {
        if let Some(failure) = self.first_failure() {
            return Err(failure);
        }
        // The earliest event no call took: queued, or (a streamed replay's rest, read after the
        // run) counted.
        let mut leftover: Option<(u64, Stream, String, usize)> = None;
        for (stream, queue) in self.queues() {
            let state = lock(&queue.state);
            if let Some((seq, body)) = state.next() {
                if leftover.as_ref().is_none_or(|(first, ..)| seq < *first) {
                    leftover = Some((seq, stream, body.call.to_string(), state.len()));
                }
            }
        }
        let drained = self.feed.drained();
        let leftover = match leftover {
            Some((seq, stream, call, left)) => Some((seq, stream, call, left + drained.on(stream))),
            None => drained.first.as_ref().map(|e| {
                let left = drained.on(e.stream);
                (e.seq, e.stream, e.call.to_string(), left)
            }),
        };
        match leftover {
            None => Ok(()),
            Some((seq, stream, expected, left)) => Err(ReplayFailure {
                seq: Some(seq),
                stream,
                expected,
                actual: END_OF_STREAM.into(),
                detail: format!("{left} recorded event(s) left on {stream}"),
            }),
        }
    }
}

/// Serve `call` on `stream` and turn a recorded kernel failure into this call's error.
fn serve(
    inner: &Inner,
    queue: &StreamQueue,
    stream: Stream,
    call: Call,
) -> Result<Reply, CallError> {
    let outcome = inner.expect(queue, stream, Actual::Call(&call.into()))?;
    outcome.map_err(|failure| CallError::from_kernel_failure(&failure))
}

/// A [`Hypervisor`] that answers from a trace.
pub struct ReplayHypervisor {
    arch: GuestArch,
    inner: Shared,
    host: Arc<StreamQueue>,
}

/// A handle on a replay's verdict that outlives the [`ReplayHypervisor`] (which is usually moved
/// into a `Box<dyn Hypervisor>`, possibly inside a [`crate::RecordingHypervisor`]).
#[derive(Clone)]
pub struct ReplayMonitor {
    inner: Shared,
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
        let mut queues: HashMap<Stream, Arc<StreamQueue>> = HashMap::new();
        let mut states: HashMap<Stream, QueueState> = HashMap::new();
        let mut roles = RunRoles::default();
        // Control requests are not calls to a backend: the supervisor's replay re-issues them to
        // its own control plane (see `Trace::control_events`) and compares the replies.
        for event in events.into_iter().filter(|e| e.stream != Stream::Control) {
            let run = EventRun {
                stream: event.stream,
                first_seq: event.seq,
                events: vec![crate::trace::RunEvent {
                    body: 0,
                    at_ns: event.at_ns,
                }],
                bodies: Arc::new([EventBody {
                    call: event.call,
                    outcome: event.outcome,
                    detail: event.detail,
                }]),
                // Held whole, with no window: the weight counts for nothing.
                weight: 0,
            };
            let state = states.entry(run.stream).or_default();
            state.events.push_back(Queued::new(run, &mut roles));
        }
        for (stream, state) in states {
            let queue = StreamQueue {
                state: Mutex::new(state),
                fed: Condvar::new(),
            };
            queues.insert(stream, Arc::new(queue));
        }
        ReplayHypervisor::with(arch, Inner::new(queues, Feed::none()))
    }

    fn with(arch: GuestArch, inner: Shared) -> ReplayHypervisor {
        let host = inner.queue(Stream::Host);
        ReplayHypervisor { arch, inner, host }
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
        let arch = stream.header().guest_arch;
        let inner = Inner::new(HashMap::new(), Feed::streaming(window));
        let replay = ReplayHypervisor::with(arch, inner);
        let feed = ReplayFeed::start(Arc::clone(&replay.inner), stream, on_control)?;
        Ok((replay, feed))
    }

    /// A handle on this replay's verdict, to keep once the backend is boxed away.
    pub fn monitor(&self) -> ReplayMonitor {
        ReplayMonitor {
            inner: Arc::clone(&self.inner),
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
        feed::settle(&self.inner);
        self.inner.verdict()
    }

    /// The earliest divergence so far, if any.
    pub fn first_divergence(&self) -> Option<ReplayFailure> {
        self.inner.first_failure()
    }

    /// How many recorded events have not been served yet.
    pub fn remaining(&self) -> usize {
        let queues = self.inner.queues();
        queues.iter().map(|(_, q)| lock(&q.state).len()).sum()
    }
}

impl Hypervisor for ReplayHypervisor {
    fn arch(&self) -> GuestArch {
        self.arch
    }

    /// No: a replayed VM's threads are spawned when it starts (see the trait), so a replay of a
    /// fleet that creates every VM before starting any does not hold every VM's threads at once.
    fn spawns_vcpu_threads_ahead(&self) -> bool {
        false
    }

    /// No: a replayed vCPU serves recorded exits, it never spins.
    fn runs_guests(&self) -> bool {
        false
    }

    fn call(&self, call: &SystemCall) -> Result<Reply, CallError> {
        if matches!(call, SystemCall::CreateVm { .. }) {
            return Err(CallError::Backend(
                "CREATE_VM must go through create_vm".into(),
            ));
        }
        serve(
            &self.inner,
            &self.host,
            Stream::Host,
            Call::System(call.clone()),
        )
    }

    fn create_vm(&self, vm: VmId, name: &str) -> Result<Box<dyn Vm>, CallError> {
        let call = Call::System(SystemCall::CreateVm {
            vm,
            name: name.to_string(),
        });
        let queue = self.inner.queue(Stream::Vm(vm));
        serve(&self.inner, &queue, Stream::Vm(vm), call)?;
        Ok(Box::new(ReplayVm {
            id: vm,
            inner: Arc::clone(&self.inner),
            queue,
            memory: GuestMemoryMmap::new(),
        }))
    }
}

/// A replayed VM. Guest memory is real anonymous memory, so guest programs are checked against
/// it as in a live run (shared by the VMs of one layout, see `Inner::regions`).
pub struct ReplayVm {
    id: VmId,
    inner: Shared,
    queue: Arc<StreamQueue>,
    memory: GuestMemoryMmap,
}

impl ReplayVm {
    fn add_memory(&mut self, guest_phys_addr: u64, size: u64) -> Result<(), CallError> {
        let size = usize::try_from(size)
            .map_err(|_| CallError::Backend(format!("guest memory size {size:#x} does not fit")))?;
        let region = {
            let mut regions = lock(&self.inner.regions);
            match regions.entry((guest_phys_addr, size)) {
                std::collections::hash_map::Entry::Occupied(shared) => Arc::clone(shared.get()),
                std::collections::hash_map::Entry::Vacant(vacant) => {
                    let region =
                        GuestRegionMmap::from_range(GuestAddress(guest_phys_addr), size, None)
                            .map_err(|e| {
                                CallError::Backend(format!("cannot allocate guest memory: {e}"))
                            })?;
                    Arc::clone(vacant.insert(Arc::new(region)))
                }
            }
        };
        self.memory = self
            .memory
            .insert_region(region)
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
        let stream = Stream::Vm(self.id);
        let reply = serve(&self.inner, &self.queue, stream, Call::Vm(call.clone()))?;
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
        let stream = Stream::Vcpu(self.id, vcpu);
        let queue = self.inner.queue(stream);
        serve(&self.inner, &queue, stream, call)?;
        Ok(Box::new(ReplayVcpu {
            vm: self.id,
            id: vcpu,
            inner: Arc::clone(&self.inner),
            queue,
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
    inner: Shared,
    queue: Arc<StreamQueue>,
}

impl Vcpu for ReplayVcpu {
    fn id(&self) -> (VmId, VcpuId) {
        (self.vm, self.id)
    }

    fn call(&mut self, call: &VcpuCall) -> Result<Reply, CallError> {
        let stream = Stream::Vcpu(self.vm, self.id);
        serve(&self.inner, &self.queue, stream, Call::Vcpu(call.clone()))
    }

    /// Checks that the recorded run's lock refused the same call at the same point, with the same
    /// errno (the explanation text is not compared: it is rendered, not replayed).
    fn note_refused(&mut self, call: &VcpuCall, refusal: &LockRefusal) -> Result<(), CallError> {
        let call = TraceCall::Vcpu(call.clone());
        let stream = Stream::Vcpu(self.vm, self.id);
        let actual = Actual::Refused(&call, refusal.errno);
        self.inner.expect(&self.queue, stream, actual).map(drop)
    }

    /// Replayed runs never block: their kicks are the recorded `INTR` exits.
    fn kicker(&self) -> Arc<dyn Kick> {
        Arc::new(NoKick)
    }

    /// Yes when the stream's queued events hold the run's exits up to one that ends the guest
    /// (halt, shutdown, a system event, a failed entry or an internal error), or up to a call
    /// that is not a run, with no kick (`INTR`) and no control decision on the way. Calls before
    /// the first run (the thread's setup) are passed over. The run may still end earlier (its
    /// decoder says so); it never needs an event the feeder has not queued.
    fn run_is_at_hand(&self) -> bool {
        let state = lock(&self.queue.state);
        let mut running = false;
        for queued in &state.events {
            for &body in &queued.events[queued.served..] {
                let Some(&role) = queued.roles.get(body as usize) else {
                    return false;
                };
                match role {
                    RunRole::Goes => running = true,
                    RunRole::Ends => return true,
                    RunRole::Waits => return false,
                    RunRole::Other if running => return true,
                    RunRole::Other => {}
                }
            }
        }
        false
    }

    /// Offers the queued events that are plain runs answered with an exit, in order, until
    /// `take` leaves one or the queue holds something else (a call of another kind, a run that
    /// failed, nothing yet): that one is served by a call of its own, which checks it and
    /// reports a divergence. So does everything once a divergence at or before the next event
    /// is known.
    fn run_known(&mut self, take: &mut dyn FnMut(&VcpuExit) -> TakeExit) -> u64 {
        let (mut taken, mut weight) = (0, 0);
        let mut state = lock(&self.queue.state);
        // A queued run at a time, its events in a tight loop (served as `QueueState::pop`
        // serves them one by one; `last_served` set once at the end).
        let (mut last_served, mut stop) = (None, false);
        while !stop {
            let Some(front) = state.events.front_mut() else {
                break;
            };
            while let Some(&body) = front.events.get(front.served) {
                let seq = front.first_seq + front.served as u64;
                let exit = match front.bodies.get(body as usize) {
                    Some(EventBody {
                        call: TraceCall::Vcpu(VcpuCall::Run),
                        outcome: Ok(Reply::Exit(exit)),
                        ..
                    }) if self.inner.first_seq.load(Ordering::Acquire) > seq => exit,
                    _ => {
                        stop = true;
                        break;
                    }
                };
                let answer = take(exit);
                if answer == TakeExit::Leave {
                    stop = true;
                    break;
                }
                (taken, last_served) = (taken + 1, Some(seq));
                front.served += 1;
                if answer == TakeExit::Last {
                    stop = true;
                    break;
                }
            }
            if front.left() > 0 {
                break;
            }
            weight += state.finish_front();
        }
        if last_served.is_some() {
            state.last_served = last_served;
        }
        drop(state);
        if weight > 0 {
            self.inner.feed.took(weight);
        }
        taken
    }

    /// The recorded decision, whatever this run's control plane wants right now (the handle then
    /// waits for it to want the same; see `VcpuHandle::control_point`).
    fn control_point(&mut self, _wanted: RunDecision) -> Result<RunDecision, CallError> {
        let stream = Stream::Vcpu(self.vm, self.id);
        match serve(&self.inner, &self.queue, stream, Call::Decision)? {
            Reply::Decision(decision) => Ok(decision),
            other => Err(CallError::Backend(format!(
                "the trace answers a control point with {other}, not a decision"
            ))),
        }
    }
}
