//! The hand-off between the threads that record events and the one thread that writes them: a
//! bounded lock-free queue that wakes the writer only when it is worth waking.
//!
//! Why not a channel: a channel wakes its receiver on every send that finds it asleep. A writer
//! that drains quickly is asleep again before the next event, so each recorded call of a starting
//! fleet paid for a wake-up (a futex call) and the writer for a sleep and a wake-up (two context
//! switches); measured with `vmfleet bench --record-only`, 100 VMs: ~2,300 writer wake-ups per
//! start, ~40% more context switches than the same start unrecorded, and ~5% of its time.
//!
//! Here the writer takes everything queued, then naps ([`Handoff::nap`]); a recorder wakes it
//! only when [`WAKE_AT`] events wait (so a burst is written while it comes), or when the queue is
//! full (backpressure: the recorder sleeps on a condition variable until the writer has taken a
//! round). It must sleep, not poll: a full queue means the writer is short of CPU (a live fleet's
//! writer competes with thousands of spinning guests), and 2,000 vCPU threads polling every
//! 100 µs took that CPU, so a 1,000-VM `run --record` took 6 minutes instead of 10 s. The queue is linearizable (a push that returned before another began is
//! popped first), so the writer's numbering keeps the order in which calls completed. A nap is
//! short while events come and grows while none do, so an idle fleet's writer costs nothing.

use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::Duration;

/// Queued events that make a recorder wake the writer instead of letting it nap on.
pub const WAKE_AT: usize = 4096;
/// The shortest nap, while events come.
pub const NAP_MIN: Duration = Duration::from_millis(2);
/// The longest nap, once none came for a while: also the most an event waits in the queue
/// before the writer takes it.
pub const NAP_MAX: Duration = Duration::from_millis(64);
/// The longest a recorder that found the queue full sleeps before it looks again (the writer
/// wakes it sooner, once it has taken a round).
const FULL_WAIT: Duration = Duration::from_millis(50);

/// What the writer is told to do once it has taken every queued event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Go on.
    No,
    /// Write the end marker, flush, sync, stop.
    Finish,
    /// Flush what was written and stop without an end marker.
    Abandon,
}

impl Stop {
    fn from_u8(value: u8) -> Stop {
        match value {
            1 => Stop::Finish,
            2 => Stop::Abandon,
            _ => Stop::No,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Stop::No => 0,
            Stop::Finish => 1,
            Stop::Abandon => 2,
        }
    }
}

/// The queue from recorders to a writer thread (see the module documentation).
#[derive(Debug)]
pub struct Handoff<T> {
    queue: ArrayQueue<T>,
    stop: AtomicU8,
    /// The writer, once it has started ([`Handoff::writer_started`]); no lock, so that waking it
    /// is no convoy of recorders.
    writer: OnceLock<Thread>,
    /// Recorders sleeping for room (on `room_freed`, under `room`).
    waiting: AtomicUsize,
    room: Mutex<()>,
    room_freed: Condvar,
}

impl<T> Handoff<T> {
    /// A queue holding at most `capacity` items (at least one).
    pub fn new(capacity: usize) -> Handoff<T> {
        Handoff {
            queue: ArrayQueue::new(capacity.max(1)),
            stop: AtomicU8::new(Stop::No.to_u8()),
            writer: OnceLock::new(),
            waiting: AtomicUsize::new(0),
            room: Mutex::new(()),
            room_freed: Condvar::new(),
        }
    }

    /// Called by the writer thread before it takes anything: recorders wake this thread.
    pub fn writer_started(&self) {
        let _ = self.writer.set(std::thread::current());
    }

    fn wake_writer(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    /// Queue `item`; waits while the queue is full. Returns the item if the writer has been
    /// told to stop (it would not be written).
    pub fn push(&self, mut item: T) -> Result<(), T> {
        loop {
            if self.stop() != Stop::No {
                return Err(item);
            }
            match self.queue.push(item) {
                Ok(()) => {
                    if self.queue.len() >= WAKE_AT {
                        self.wake_writer();
                    }
                    return Ok(());
                }
                Err(back) => {
                    item = back;
                    self.wake_writer();
                    self.wait_for_room();
                }
            }
        }
    }

    /// Sleep until the writer has taken a round (or told to stop), if the queue is still full.
    fn wait_for_room(&self) {
        let room = self.room.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // Looked at again under the lock: a writer that took its round before `waiting` went up
        // did not signal, and then the queue has room.
        if self.queue.is_full() && self.stop() == Stop::No {
            let _ = self
                .room_freed
                .wait_timeout(room, FULL_WAIT)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    /// Writer side, after a round that took items: wake the recorders sleeping for room.
    pub fn took_round(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _room = self.room.lock().unwrap_or_else(PoisonError::into_inner);
            self.room_freed.notify_all();
        }
    }

    /// Take the oldest queued item (writer side).
    pub fn pop(&self) -> Option<T> {
        self.queue.pop()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// What the writer has been told (writer side: it stops once it has taken every item).
    pub fn stop(&self) -> Stop {
        Stop::from_u8(self.stop.load(Ordering::Acquire))
    }

    /// Tell the writer to stop (the first word stands) and wake it.
    pub fn tell_stop(&self, stop: Stop) {
        let _ = self.stop.compare_exchange(
            Stop::No.to_u8(),
            stop.to_u8(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.wake_writer();
        // Recorders waiting for room give up their events instead.
        let _room = self.room.lock().unwrap_or_else(PoisonError::into_inner);
        self.room_freed.notify_all();
    }

    /// Writer side, with nothing queued: sleep for `nap`, or until woken.
    pub fn nap(&self, nap: Duration) {
        if self.queue.is_empty() && self.stop() == Stop::No {
            std::thread::park_timeout(nap);
        }
    }
}

/// The writer's next nap: the shortest after a nap that found work, twice the last one (up to
/// [`NAP_MAX`]) after one that found none.
pub fn next_nap(last: Duration, found_work: bool) -> Duration {
    if found_work {
        NAP_MIN
    } else {
        (last * 2).clamp(NAP_MIN, NAP_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn items_come_out_in_order_and_stop_refuses_more() {
        let handoff = Handoff::new(8);
        for k in 0..5 {
            handoff.push(k).unwrap();
        }
        assert_eq!(handoff.pop(), Some(0));
        handoff.tell_stop(Stop::Finish);
        handoff.tell_stop(Stop::Abandon);
        assert_eq!(handoff.stop(), Stop::Finish, "the first word stands");
        assert_eq!(handoff.push(9), Err(9));
        let rest: Vec<i32> = std::iter::from_fn(|| handoff.pop()).collect();
        assert_eq!(rest, vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_full_queue_makes_the_recorder_wait_for_the_writer() {
        let handoff = Arc::new(Handoff::new(2));
        let writer = {
            let handoff = Arc::clone(&handoff);
            std::thread::spawn(move || {
                handoff.writer_started();
                let mut taken = Vec::new();
                let mut nap = NAP_MIN;
                loop {
                    let mut found = false;
                    while let Some(item) = handoff.pop() {
                        taken.push(item);
                        found = true;
                    }
                    if found {
                        handoff.took_round();
                    }
                    if handoff.stop() != Stop::No && handoff.is_empty() {
                        return taken;
                    }
                    nap = next_nap(nap, found);
                    handoff.nap(nap);
                }
            })
        };
        for k in 0..100 {
            handoff.push(k).unwrap();
        }
        handoff.tell_stop(Stop::Finish);
        assert_eq!(writer.join().unwrap(), (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn naps_shorten_with_work_and_grow_without() {
        assert_eq!(next_nap(NAP_MAX, true), NAP_MIN);
        assert_eq!(next_nap(NAP_MIN, false), NAP_MIN * 2);
        assert_eq!(next_nap(NAP_MAX, false), NAP_MAX);
        assert_eq!(next_nap(Duration::ZERO, false), NAP_MIN);
    }
}
