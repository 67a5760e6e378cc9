//! Feeding a replay from a trace stream as it goes, holding a bounded window of events.
//!
//! A feeder thread pulls events from a [`TraceStream`] into the per-stream queues, at most `window`
//! bytes of them queued at a time (as [`EventRun::weight`] counts them); control events go to a
//! callback instead (the supervisor re-issues them). A call whose stream queue is empty waits on
//! its own stream until the feeder queues more for it or has read the whole trace; only then is its
//! stream at its end. The feeder wakes only the streams it queued for, and the calls tell it when
//! half the window is free: no thread is woken for another's event.
//!
//! The window is soft. The live run's threads need not consume the trace in file order (a vCPU
//! may wait on another VM's progress, which replay schedules differently), so every call may be
//! waiting for an event beyond the window: when the window is full and no call took an event for
//! [`STALL`], it doubles (logged at debug level). Replay never deadlocks on the window.
//!
//! The events are queued as runs of one stream with their bodies shared ([`EventRun`]): a
//! decoded block holds each distinct call and outcome once, however many VMs' vCPUs made it, and
//! the feeder takes a stream's lock once per run, not per event.
//!
//! First-divergence determinism (see [`super`]) holds: a waiting call's position is at least the
//! next `seq` the feeder will read, so once a divergence at or before that is known, the call
//! fails fast with it, as it would with the whole trace queued.
//!
//! When the run is over ([`ReplayFeed::finish`], [`super::ReplayMonitor::finish`]) the feeder
//! reads the rest of the trace without queuing it, counting what is left per stream (for the
//! "left on" verdict) and reaching the trace's end verdict: complete, cut short, damaged.

use super::{Inner, Queued, RunRoles, Shared, StreamQueue, lock};
use crate::reader::{TraceEnd, TraceError};
use crate::stream::TraceStream;
use crate::trace::{Event, EventRun};
use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use vcpu::Stream;

/// How much a streamed replay queues before the feeder waits (the window, unless it had to
/// grow), in bytes as [`EventRun::weight`] counts them: a queued event costs 4 bytes (its body's
/// number) plus its share of the decoded block it came from, whose distinct calls and outcomes
/// are held once. A fleet of like VMs shares most bodies (a 1,000-VM trace: ~5 bytes an event),
/// so its whole trace fits, and its VMs run as they come instead of waiting for the feeder: in
/// events, a window of 262,144 replayed a 1,000-VM trace (919,001 events) in 0.23-0.30 s and
/// 41-43 MiB, one of 1,048,576 in 0.18-0.26 s and 37-38 MiB (VMs finish sooner and let go of
/// their threads). A trace whose every event is distinct is held ~100k events at a time.
pub const DEFAULT_WINDOW: usize = 16 << 20;

/// How long a full window may see no event taken before it grows.
const STALL: Duration = Duration::from_millis(25);

/// How many events the feeder reads between looking at the window.
const BATCH: usize = 512;

/// The feeder's side of a replay's state: counters every call updates without a lock, and the
/// signals between the feeder and the calls. A replay of events in memory has no feeder
/// ([`Feed::none`]): it is never feeding.
#[derive(Debug)]
pub(super) struct Feed {
    /// The feeder has not read the whole trace yet.
    feeding: AtomicBool,
    /// Every event with a smaller `seq` is queued, taken, or was a control event.
    fed: AtomicU64,
    /// What is queued and not yet taken, in bytes as [`EventRun::weight`] counts them (0 for a
    /// replay without a feeder).
    queued: AtomicUsize,
    /// Bumped whenever calls have taken a whole run of events.
    taken: AtomicU64,
    /// How much may be queued before the feeder waits, in the same bytes.
    window: AtomicUsize,
    /// The run is over: count the rest, do not queue it.
    draining: AtomicBool,
    /// The feeder waits for room (on `room_freed`).
    feeder_waiting: AtomicBool,
    room: Mutex<()>,
    room_freed: Condvar,
    /// The feeder is done (`true` from the start without a feeder).
    done: Mutex<bool>,
    done_signal: Condvar,
    /// What the feeder counted instead of queuing.
    drained: Mutex<Drained>,
}

/// The events a feeder counted, not queued, once the run was over.
#[derive(Debug, Default, Clone)]
pub(super) struct Drained {
    per_stream: HashMap<Stream, usize>,
    /// The first of them.
    pub(super) first: Option<Event>,
}

impl Drained {
    /// Events left on `stream` that were counted, not queued.
    pub(super) fn on(&self, stream: Stream) -> usize {
        self.per_stream.get(&stream).copied().unwrap_or(0)
    }
}

impl Feed {
    fn new(feeding: bool, window: usize) -> Feed {
        Feed {
            feeding: AtomicBool::new(feeding),
            fed: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            taken: AtomicU64::new(0),
            window: AtomicUsize::new(window.max(1)),
            draining: AtomicBool::new(false),
            feeder_waiting: AtomicBool::new(false),
            room: Mutex::new(()),
            room_freed: Condvar::new(),
            done: Mutex::new(!feeding),
            done_signal: Condvar::new(),
            drained: Mutex::new(Drained::default()),
        }
    }

    /// No feeder: every event is queued up front.
    pub(super) fn none() -> Feed {
        Feed::new(false, usize::MAX)
    }

    /// A feeder queuing about `window` bytes of events at a time.
    pub(super) fn streaming(window: usize) -> Feed {
        Feed::new(true, window)
    }

    /// Whether the feeder may still queue events.
    pub(super) fn is_feeding(&self) -> bool {
        self.feeding.load(Ordering::Acquire)
    }

    /// Every event before this `seq` is queued, taken, or was a control event.
    pub(super) fn fed(&self) -> u64 {
        self.fed.load(Ordering::Acquire)
    }

    /// Calls took the last event of a queued run that weighed `weight` (counted back a run at a
    /// time, so the counters are not a contended cache line per event): wake the feeder once
    /// half the window is free.
    pub(super) fn took(&self, weight: usize) {
        self.taken.fetch_add(1, Ordering::Relaxed);
        let Ok(before) = self
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                q.checked_sub(weight)
            })
        else {
            return;
        };
        if self.feeder_waiting.load(Ordering::SeqCst)
            && before - weight <= self.window.load(Ordering::Relaxed) / 2
        {
            let _room = lock(&self.room);
            self.room_freed.notify_one();
        }
    }

    /// What the feeder counted instead of queuing (complete once it is done).
    pub(super) fn drained(&self) -> Drained {
        lock(&self.drained).clone()
    }

    /// The run is over: count the rest of the trace, do not queue it.
    fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let _room = lock(&self.room);
        self.room_freed.notify_all();
    }

    /// Wait until the window has room (or the run is over), growing a window that stalls.
    fn wait_for_room(&self) {
        let mut room = lock(&self.room);
        loop {
            let window = self.window.load(Ordering::Relaxed);
            if self.draining.load(Ordering::SeqCst) || self.queued.load(Ordering::SeqCst) < window {
                return;
            }
            let taken = self.taken.load(Ordering::Relaxed);
            self.feeder_waiting.store(true, Ordering::SeqCst);
            // A call that took an event before the flag was up did not signal: look again.
            if self.queued.load(Ordering::SeqCst) < window {
                self.feeder_waiting.store(false, Ordering::SeqCst);
                return;
            }
            let (next, timeout) = self
                .room_freed
                .wait_timeout(room, STALL)
                .unwrap_or_else(PoisonError::into_inner);
            room = next;
            self.feeder_waiting.store(false, Ordering::SeqCst);
            let stalled = timeout.timed_out()
                && self.taken.load(Ordering::Relaxed) == taken
                && self.queued.load(Ordering::SeqCst) >= window;
            if stalled {
                let grown = window.saturating_mul(2);
                tracing::debug!(
                    "replay window: no queued event taken for {STALL:?} with {} queued; every \
                     call waits for an event beyond it, so it grows to {grown}",
                    self.queued.load(Ordering::SeqCst)
                );
                self.window.store(grown, Ordering::Relaxed);
            }
        }
    }

    /// The feeder is done: no more events will be queued.
    fn finished(&self) {
        *lock(&self.done) = true;
        self.done_signal.notify_all();
    }
}

/// The run is over: let the feeder count the rest of the trace, and wait until it has.
pub(super) fn settle(inner: &Inner) {
    inner.feed.drain();
    let mut done = lock(&inner.feed.done);
    while !*done {
        done = inner
            .feed
            .done_signal
            .wait(done)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// The feeder thread of a streamed replay; [`ReplayFeed::finish`] gives the trace's end.
pub struct ReplayFeed {
    inner: Shared,
    thread: Option<JoinHandle<Result<TraceEnd, TraceError>>>,
}

impl ReplayFeed {
    /// Start feeding `stream` into a replay's state (made with [`Feed::streaming`]).
    pub(super) fn start<R: Read + Send + 'static>(
        inner: Shared,
        stream: TraceStream<R>,
        on_control: impl FnMut(&Event) + Send + 'static,
    ) -> Result<ReplayFeed, TraceError> {
        let feeder = Shared::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("replay-feed".into())
            .spawn(move || feed(&feeder, stream, on_control))
            .map_err(|source| TraceError::Io {
                path: "<replay feeder thread>".into(),
                source,
            })?;
        Ok(ReplayFeed {
            inner,
            thread: Some(thread),
        })
    }

    /// Read the rest of the trace without queuing it (the run is over) and say how it ends:
    /// complete, cut short or damaged ([`TraceEnd`]), or unreadable.
    pub fn finish(mut self) -> Result<TraceEnd, TraceError> {
        self.inner.feed.drain();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(end)) => end,
            _ => Err(TraceError::Io {
                path: "<replay feeder thread>".into(),
                source: std::io::Error::other("the replay's feeder thread panicked"),
            }),
        }
    }

    /// How many events the window holds now: the window asked for, or more if it had to grow.
    pub fn window(&self) -> usize {
        self.inner.feed.window.load(Ordering::Relaxed)
    }
}

impl Drop for ReplayFeed {
    /// The feeder reads the rest of the trace without queuing it, and stops.
    fn drop(&mut self) {
        self.inner.feed.drain();
    }
}

/// The feeder: queue runs of events while the window has room, hand control events to
/// `on_control`, count what the run no longer wants, then mark the feed done and return the
/// trace's end.
fn feed<R: Read>(
    inner: &Inner,
    mut stream: TraceStream<R>,
    mut on_control: impl FnMut(&Event),
) -> Result<TraceEnd, TraceError> {
    let feed = &inner.feed;
    // The queues this feeder has met: the shared map is locked once per stream, not per run.
    let mut queues: HashMap<Stream, Arc<StreamQueue>> = HashMap::new();
    let mut roles = RunRoles::default();
    loop {
        feed.wait_for_room();
        let room = feed.window.load(Ordering::Relaxed).min(BATCH);
        let Some(run) = stream.next_run(room) else {
            break;
        };
        let next = run.first_seq + run.events.len() as u64;
        if run.stream == Stream::Control {
            for k in 0..run.events.len() {
                if let Some(event) = run.event(k) {
                    on_control(&event);
                }
            }
        } else if feed.draining.load(Ordering::Relaxed) {
            let mut drained = lock(&feed.drained);
            *drained.per_stream.entry(run.stream).or_insert(0) += run.events.len();
            if drained.first.is_none() {
                drained.first = run.event(0);
            }
        } else {
            queue_run(inner, &mut queues, &mut roles, run);
        }
        feed.fed.store(next, Ordering::Release);
    }
    drop(on_control);
    feed.feeding.store(false, Ordering::SeqCst);
    inner.wake_all();
    feed.finished();
    stream.finish()
}

/// Queue `run` on its stream and wake a call waiting there.
fn queue_run(
    inner: &Inner,
    queues: &mut HashMap<Stream, Arc<StreamQueue>>,
    roles: &mut RunRoles,
    run: EventRun,
) {
    let queue = queues
        .entry(run.stream)
        .or_insert_with(|| inner.queue(run.stream));
    // Counted before they can be taken, so `queued` never goes below what is queued.
    inner.feed.queued.fetch_add(run.weight, Ordering::SeqCst);
    let mut state: MutexGuard<'_, _> = lock(&queue.state);
    state.events.push_back(Queued::new(run, roles));
    if state.waiting > 0 {
        queue.fed.notify_all();
    }
}
