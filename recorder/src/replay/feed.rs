//! Feeding a replay from a trace stream as it goes, holding a bounded window of events.
//!
//! A feeder thread pulls events from a [`TraceStream`] into the per-stream queues, at most
//! `window` queued at a time; control events go to a callback instead (the supervisor re-issues
//! them). A call whose stream queue is empty waits until the feeder queues more or has read the
//! whole trace; only then is its stream at its end.
//!
//! The window is soft. The live run's threads need not consume the trace in file order (a vCPU
//! may wait on another VM's progress, which replay schedules differently), so every call may be
//! waiting for an event beyond the window: when the window is full and no call took an event for
//! [`STALL`], it doubles (logged at debug level). Replay never deadlocks on the window.
//!
//! First-divergence determinism (see [`super`]) holds: a waiting call's position is at least the
//! next `seq` the feeder will read, so once a divergence at or before that is known, the call
//! fails fast with it, as it would with the whole trace queued.
//!
//! When the run is over ([`ReplayFeed::finish`], [`super::ReplayMonitor::finish`]) the feeder
//! reads the rest of the trace without queuing it, counting what is left per stream (for the
//! "left on" verdict) and reaching the trace's end verdict: complete, cut short, damaged.

use super::{Actual, Shared, State, lock};
use crate::reader::{TraceEnd, TraceError};
use crate::stream::TraceStream;
use crate::trace::Event;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::MutexGuard;
use std::thread::JoinHandle;
use std::time::Duration;
use vcpu::{CallError, Outcome, Stream};

/// How many events a streamed replay queues before the feeder waits (the window, unless it had
/// to grow).
pub const DEFAULT_WINDOW: usize = 8_192;

/// How long a full window may see no event taken before it grows.
const STALL: Duration = Duration::from_millis(25);

/// How many events the feeder reads between taking the lock.
const BATCH: usize = 512;

/// The feeder's side of a streamed replay's state.
#[derive(Debug)]
pub(super) struct Feed {
    /// Events queued and not yet taken.
    queued: usize,
    /// How many may be queued before the feeder waits.
    window: usize,
    /// Every event with a smaller `seq` is queued, taken, or was a control event.
    fed: u64,
    /// The feeder has not read the whole trace yet.
    feeding: bool,
    /// Bumped whenever a call takes an event.
    taken: u64,
    /// The run is over: count the rest, do not queue it.
    draining: bool,
    /// Events counted, not queued, per stream.
    drained: BTreeMap<Stream, usize>,
    /// The first event counted, not queued.
    pub(super) first_drained: Option<Event>,
    /// Calls waiting for the feeder.
    waiting: usize,
    /// The feeder waits for room.
    feeder_waiting: bool,
}

impl Feed {
    /// Events left on `stream` that were counted, not queued.
    pub(super) fn drained_on(&self, stream: Stream) -> usize {
        self.drained.get(&stream).copied().unwrap_or(0)
    }
}

fn poisoned<T>(poison: std::sync::PoisonError<T>) -> T {
    poison.into_inner()
}

/// [`State::expect`], for a streamed replay after waiting until the stream's next event is queued
/// or the trace is read to its end.
pub(super) fn expect_fed(
    shared: &Shared,
    stream: Stream,
    actual: Actual<'_>,
) -> Result<Outcome, CallError> {
    let mut state = lock(shared);
    loop {
        let has_next = state.queues.get(&stream).is_some_and(|q| !q.is_empty());
        let first = state.first_divergence.as_ref().map(|(p, f)| (p.0, f));
        let Some(feed) = state.feed.as_ref().filter(|f| f.feeding && !has_next) else {
            break;
        };
        // This call's position is at least `fed`: at or past a known divergence, it fails fast.
        if let Some((_, failure)) = first.filter(|(seq, _)| *seq <= feed.fed) {
            return Err(CallError::Replay(Box::new(failure.clone())));
        }
        state = wait(shared, state);
    }
    let result = state.expect(stream, actual);
    let State { queues, feed, .. } = &mut *state;
    if let Some(feed) = feed.as_mut().filter(|_| result.is_ok()) {
        // A queue keeps its largest size unless shrunk: summed over thousands of streams, that
        // is the whole trace again.
        if let Some(queue) = queues.get_mut(&stream) {
            if queue.capacity() > 4 * queue.len().max(16) {
                queue.shrink_to(2 * queue.len().max(16));
            }
        }
        feed.queued = feed.queued.saturating_sub(1);
        feed.taken += 1;
        // Wake the feeder once half the window is free, not for every event taken.
        if feed.feeder_waiting && feed.queued <= feed.window / 2 {
            feed.feeder_waiting = false;
            shared.room.notify_one();
        }
    }
    result
}

/// Wait (counted) for the feeder to signal.
fn wait<'a>(shared: &'a Shared, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    if let Some(feed) = state.feed.as_mut() {
        feed.waiting += 1;
    }
    let mut state = shared.fed.wait(state).unwrap_or_else(poisoned);
    if let Some(feed) = state.feed.as_mut() {
        feed.waiting = feed.waiting.saturating_sub(1);
    }
    state
}

/// The run is over: let the feeder count the rest of the trace, and wait until it has.
pub(super) fn settle(shared: &Shared) -> MutexGuard<'_, State> {
    let mut state = lock(shared);
    while let Some(feed) = state.feed.as_mut().filter(|f| f.feeding) {
        feed.draining = true;
        shared.room.notify_all();
        state = wait(shared, state);
    }
    state
}

/// The feeder thread of a streamed replay; [`ReplayFeed::finish`] gives the trace's end.
pub struct ReplayFeed {
    shared: Shared,
    thread: Option<JoinHandle<Result<TraceEnd, TraceError>>>,
}

impl ReplayFeed {
    /// Start feeding `stream` into a replay's `shared` state.
    pub(super) fn start<R: Read + Send + 'static>(
        shared: Shared,
        stream: TraceStream<R>,
        window: usize,
        on_control: impl FnMut(&Event) + Send + 'static,
    ) -> Result<ReplayFeed, TraceError> {
        lock(&shared).feed = Some(Feed {
            queued: 0,
            window: window.max(1),
            fed: 0,
            feeding: true,
            taken: 0,
            draining: false,
            drained: BTreeMap::new(),
            first_drained: None,
            waiting: 0,
            feeder_waiting: false,
        });
        let feeder = Shared::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("replay-feed".into())
            .spawn(move || feed(&feeder, stream, on_control))
            .map_err(|source| TraceError::Io {
                path: "<replay feeder thread>".into(),
                source,
            })?;
        Ok(ReplayFeed {
            shared,
            thread: Some(thread),
        })
    }

    /// Read the rest of the trace without queuing it (the run is over) and say how it ends:
    /// complete, cut short or damaged ([`TraceEnd`]), or unreadable.
    pub fn finish(mut self) -> Result<TraceEnd, TraceError> {
        self.drain();
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
        lock(&self.shared).feed.as_ref().map_or(0, |f| f.window)
    }

    fn drain(&self) {
        if let Some(feed) = lock(&self.shared).feed.as_mut() {
            feed.draining = true;
        }
        self.shared.room.notify_all();
    }
}

impl Drop for ReplayFeed {
    /// The feeder reads the rest of the trace without queuing it, and stops.
    fn drop(&mut self) {
        self.drain();
    }
}

/// The feeder: queue events in batches while the window has room, hand control events to
/// `on_control`, then mark the feed done and return the trace's end.
fn feed<R: Read>(
    shared: &Shared,
    mut stream: TraceStream<R>,
    mut on_control: impl FnMut(&Event),
) -> Result<TraceEnd, TraceError> {
    let mut batch: Vec<Event> = Vec::with_capacity(BATCH);
    loop {
        wait_for_room(shared);
        let mut fed = None;
        let room = lock(shared)
            .feed
            .as_ref()
            .map_or(BATCH, |f| f.window)
            .min(BATCH);
        for event in stream.by_ref().take(room) {
            fed = Some(event.seq.saturating_add(1));
            if event.stream == Stream::Control {
                on_control(&event);
            } else {
                batch.push(event);
            }
        }
        let Some(fed) = fed else { break };
        let mut state = lock(shared);
        let State { queues, feed, .. } = &mut *state;
        let Some(feed) = feed.as_mut() else { break };
        feed.fed = fed;
        if feed.draining {
            for event in batch.drain(..) {
                *feed.drained.entry(event.stream).or_insert(0) += 1;
                feed.first_drained.get_or_insert(event);
            }
        } else {
            feed.queued += batch.len();
            for event in batch.drain(..) {
                queues.entry(event.stream).or_default().push_back(event);
            }
            if feed.waiting > 0 {
                shared.fed.notify_all();
            }
        }
    }
    drop(on_control);
    if let Some(feed) = lock(shared).feed.as_mut() {
        feed.feeding = false;
    }
    shared.fed.notify_all();
    stream.finish()
}

/// Wait until the window has room (or the run is over), growing a window that stalls.
fn wait_for_room(shared: &Shared) {
    let mut state = lock(shared);
    loop {
        let Some(feed) = state.feed.as_mut() else {
            return;
        };
        if feed.draining || feed.queued < feed.window {
            return;
        }
        let taken = feed.taken;
        feed.feeder_waiting = true;
        let (next, timeout) = shared
            .room
            .wait_timeout(state, STALL)
            .unwrap_or_else(poisoned);
        state = next;
        let Some(feed) = state.feed.as_mut() else {
            return;
        };
        feed.feeder_waiting = false;
        if timeout.timed_out() && feed.taken == taken && feed.queued >= feed.window {
            let grown = feed.window.saturating_mul(2);
            tracing::debug!(
                "replay window: no queued event taken for {STALL:?} with {} queued; every call \
                 waits for an event beyond it, so it grows to {grown}",
                feed.queued
            );
            feed.window = grown;
        }
    }
}
