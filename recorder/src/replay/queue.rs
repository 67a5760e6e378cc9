//! A replay's queues: each stream's recorded events waiting to be served ([`StreamQueue`]), as
//! runs of consecutive events with their bodies shared with the block they came from
//! ([`Queued`]), and what each body is to a vCPU's run ([`RunRole`]). The feeder fills them
//! (`feed.rs`); the replayed objects serve from them (`replay.rs`).

use super::Position;
use crate::call::TraceCall;
use crate::trace::{EventBody, EventRun};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use vcpu::{Reply, Stream, VcpuCall, VcpuExit};

/// How many queued runs a queue keeps room for: a queue keeps its largest size unless shrunk,
/// and summed over thousands of streams that adds up.
const EMPTY_QUEUE_ROOM: usize = 4;

/// Recorded events of one stream waiting in its queue, in order: a run of consecutive events
/// as the trace stream read them ([`EventRun`]), and how many of them were served. Their bodies
/// are shared with the block they came from, and each event is only its body's number (4 bytes:
/// a replay checks calls and serves outcomes, never times), so the window can hold most of a
/// large fleet's trace in a few MiB.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) first_seq: u64,
    pub(super) bodies: Arc<[EventBody]>,
    /// Each body's [`RunRole`], shared with the other runs of its block.
    pub(super) roles: Arc<[RunRole]>,
    pub(super) events: Box<[u32]>,
    pub(super) served: usize,
    /// What the window counts for it ([`EventRun::weight`]), given back once it is served.
    pub(super) weight: usize,
}

impl Queued {
    pub(super) fn new(run: EventRun, roles: &mut RunRoles) -> Self {
        Queued {
            first_seq: run.first_seq,
            events: run.events.iter().map(|e| e.body).collect(),
            roles: roles.of(&run.bodies),
            bodies: run.bodies,
            served: 0,
            weight: run.weight,
        }
    }

    /// The `seq` and body of the next event to serve (a queued run always has one).
    pub(super) fn next(&self) -> Option<(u64, &EventBody)> {
        let body = self.bodies.get(*self.events.get(self.served)? as usize)?;
        Some((self.first_seq + self.served as u64, body))
    }

    pub(super) fn left(&self) -> usize {
        self.events.len() - self.served
    }
}

/// What an event is to [`ReplayVcpu::run_is_at_hand`], worked out once per body of a block
/// ([`RunRoles`]) rather than from the body at every look: a look goes through a vCPU's every
/// queued exit, and the bodies of a block lie far apart in memory (each look touched hundreds of
/// them: ~3% of a 1,000-VM replay's CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RunRole {
    /// A run answered with an exit after which the guest goes on.
    Goes,
    /// A run answered with an exit that ends the guest, or a run that failed: the run ends.
    Ends,
    /// A run answered with a kick (its control point may wait for the control plane), or a
    /// control decision: the run is not at hand.
    Waits,
    /// Any other call: past a run, the run ended before it.
    Other,
}

impl RunRole {
    pub(super) fn of(body: &EventBody) -> RunRole {
        match (&body.call, &body.outcome) {
            (TraceCall::Vcpu(VcpuCall::Run | VcpuCall::RunCounted), Ok(Reply::Exit(exit))) => {
                match exit {
                    VcpuExit::Interrupted => RunRole::Waits,
                    VcpuExit::Hlt
                    | VcpuExit::Shutdown
                    | VcpuExit::SystemEvent { .. }
                    | VcpuExit::FailEntry { .. }
                    | VcpuExit::InternalError { .. } => RunRole::Ends,
                    _ => RunRole::Goes,
                }
            }
            (TraceCall::Vcpu(VcpuCall::Run | VcpuCall::RunCounted), _) => RunRole::Ends,
            (TraceCall::Decision, _) => RunRole::Waits,
            _ => RunRole::Other,
        }
    }
}

/// A decoded block's bodies, shared by its runs.
type Bodies = Arc<[EventBody]>;
/// The [`RunRole`] of each of a block's bodies.
type Roles = Arc<[RunRole]>;

/// The [`RunRole`]s of the bodies of the block whose runs are being queued: worked out when its
/// first run is, and shared by the rest of its runs (a block's runs come one after another).
#[derive(Debug, Default)]
pub(super) struct RunRoles {
    /// The block's bodies and their roles.
    known: Option<(Bodies, Roles)>,
}

impl RunRoles {
    pub(super) fn of(&mut self, bodies: &Arc<[EventBody]>) -> Arc<[RunRole]> {
        match &self.known {
            Some((known, roles)) if Arc::ptr_eq(known, bodies) => Arc::clone(roles),
            _ => {
                let roles: Arc<[RunRole]> = bodies.iter().map(RunRole::of).collect();
                self.known = Some((Arc::clone(bodies), Arc::clone(&roles)));
                roles
            }
        }
    }
}

/// One stream's recorded events not yet served. Each replayed object holds its stream's queue,
/// so a call takes only its own stream's lock: the calls of thousands of vCPU threads do not
/// meet, except in the rare first divergence.
#[derive(Debug, Default)]
pub(super) struct StreamQueue {
    pub(super) state: Mutex<QueueState>,
    /// The feeder queued an event on this stream, stopped, or a divergence was found.
    pub(super) fed: Condvar,
}

#[derive(Debug, Default)]
pub(super) struct QueueState {
    /// Runs with events left to serve, in order.
    pub(super) events: VecDeque<Queued>,
    /// The `seq` of the last event served.
    pub(super) last_served: Option<u64>,
    /// Calls waiting for the feeder to queue this stream's next event.
    pub(super) waiting: usize,
}

impl QueueState {
    /// Where the stream's next call stands: at its next event, right after its last one once the
    /// stream ran out, or nowhere (after everything) for a stream the trace never had.
    pub(super) fn position(&self, stream: Stream) -> Position {
        let seq = match (self.next(), self.last_served) {
            (Some((seq, _)), _) => seq,
            (None, Some(last)) => last.saturating_add(1),
            (None, None) => u64::MAX,
        };
        (seq, stream)
    }

    /// The `seq` and body of the stream's next event, if queued.
    pub(super) fn next(&self) -> Option<(u64, &EventBody)> {
        self.events.front().and_then(Queued::next)
    }

    /// How many events are queued.
    pub(super) fn len(&self) -> usize {
        self.events.iter().map(Queued::left).sum()
    }

    /// Mark the next event served; when that was its run's last, the run's weight (the feeder
    /// counts the window back a run at a time, not per event).
    pub(super) fn pop(&mut self) -> Option<usize> {
        let front = self.events.front_mut()?;
        self.last_served = Some(front.first_seq + front.served as u64);
        front.served += 1;
        if front.left() > 0 {
            return None;
        }
        Some(self.finish_front())
    }

    /// Drop the front run, all served: its weight.
    pub(super) fn finish_front(&mut self) -> usize {
        let done = self.events.pop_front().map_or(0, |q| q.weight);
        if self.events.capacity() > EMPTY_QUEUE_ROOM.max(2 * self.events.len()) {
            self.events.shrink_to(EMPTY_QUEUE_ROOM);
        }
        done
    }
}
