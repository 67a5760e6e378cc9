//! Recording events: the [`Recorder`] that every backend object shares, and the [`TraceWriter`]
//! that owns the background thread writing a trace file.
//!
//! A recorder that only writes a trace (it keeps no events and folds no transcript: what
//! `vmfleet run --record` and `vmfleet serve --record` use) takes no lock per event: a
//! [`Recorder::record`] call stamps the event's time and hands it to the writer thread over a
//! bounded channel, and the writer numbers events in the order they reach it, so the file order
//! is the `seq` order. A call that returned before another began is written first (the channel
//! is linearizable). A fleet-wide mutex there became a convoy: thousands of vCPU threads at a
//! low priority queued on it, each handing it to a sleeper that waited for the CPU, and 1,000
//! VMs of `vmfleet serve --record` took minutes to start. An event whose time is earlier than
//! the one written before it (its thread was preempted between the stamp and the send) takes that
//! time, so a trace's times never go backwards.
//!
//! Recorders that keep events or fold a transcript number them under one small mutex and send
//! them to the writer under it, so their `seq`s, their files and what they keep agree.
//!
//! Either way a recorder waits for the disk only when the writer is [`WRITER_BACKLOG`] events
//! behind (backpressure on the vCPU threads of a huge fleet rather than unbounded memory). An
//! event travels in the channel by value, never boxed: boxed, each event was a heap block that
//! the recording thread allocated and the writer freed, so the writer took the arena locks of
//! the vCPU and loop threads event by event (a recorded 100-VM run made 39,500 `futex` calls
//! instead of 900 unrecorded) and their heaps grew and shrank under it (2,800 `mprotect`s
//! instead of 970, each one a round of every KVM VM's MMU notifiers). The
//! writer thread encodes and buffers, and flushes whenever it has held unwritten data for
//! [`FLUSH_INTERVAL`], so a killed process loses at most the last moments of its trace (which
//! then reads back as cut short). An I/O error (disk full) stops the writing, never the
//! recorders; [`TraceWriter::finish`] reports it. The writer thread keeps the fleet's priority,
//! above the vCPU threads', and sleeps in the channel's `recv` (woken by the next event's sender)
//! except in a burst, where it naps [`BURST_NAP`] between drains instead: a writer as low as
//! thousands of spinning guests, or one that naps longer or whenever it is idle, falls behind,
//! its queue fills, and every recorded call (a VM's start among them) waits for it.
//!
//! A folding-only recorder ([`Recorder::folding`]: a replay, `run --transcript` without a trace)
//! writes no trace and numbers nothing, so its recording objects fold their calls straight into
//! their stream's part of the transcript ([`Recorder::stream_fold`], taken once per object): no
//! fleet-wide lock and no event built per call.
//!
//! The file is written as `<trace>.partial` (mode 0600, see [`crate::output`]) and renamed to its
//! name by [`TraceWriter::finish`]; a killed process leaves the partial file, which reads back to
//! its last whole event. The header is flushed as soon as the writer thread starts, so even a
//! process killed at once leaves a partial file with its header.

use crate::block::{BLOCK_BYTES, BlockEncoder};
use crate::call::TraceCall;
use crate::format::{EncodeError, FORMAT_VERSION, encode_frame, preamble};
use crate::output::{Output, OutputError};
use crate::render::{StreamFold, TranscriptFold};
use crate::trace::{Event, TraceHeader};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;
use vcpu::{Outcome, Stream};

/// The longest the writer thread keeps written-but-unflushed events.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

/// How many events the writer holds unencoded in a burst, at most: it encodes them once the burst
/// is over (a nap found nothing), or when it holds this many or has held them for
/// [`FLUSH_INTERVAL`] (a killed process then loses at most the events of twice that, held and
/// then unflushed: still the last moments). A fleet's start is one burst, and its writer's work
/// (encoding, interning each CPUID table) then comes after it, not in its way: at 100 VMs that
/// work was ~3% of the start.
pub const HELD_EVENTS: usize = 4096;

/// How long the writer naps when it has drained the channel in the middle of a burst (it took an
/// event since its last nap) before it looks again; only a nap that found nothing sends it to
/// sleep in `recv`, where every sender that finds it asleep must wake it. Woken per event, the
/// writer cost a 100-VM start ~2,300 wake-ups (a futex call for the recorder, two context
/// switches), ~40% more switches than the same start unrecorded. Each nap is a timer wake-up
/// too (~15 µs of the writer's CPU on a nested host): napping 1 ms, the writer's share of a
/// 100-VM start was ~1.1 ms of CPU, napping 8 ms ~0.3 ms. Events taken in a burst are held
/// anyway (see [`HELD_EVENTS`]), so a longer nap delays nothing that would be written sooner;
/// the channel ([`WRITER_BACKLOG`] slots) fills in one nap only past 2M events/s, and
/// `serve --record` of 1,000 VMs x 2 spinning vCPUs stays all running (the bench's SIGTERM
/// figure). Blocked senders still sleep in the channel (backpressure), never poll: polling
/// recorders starved the writer under load.
pub const BURST_NAP: Duration = Duration::from_millis(8);

/// The shared handle that records events. Cheap to clone; every clone feeds the same trace.
#[derive(Clone, Debug)]
pub struct Recorder {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    start: Instant,
    /// Made by [`Recorder::folding`]: no writer, no kept events, ever; its recording objects
    /// fold into their streams' parts directly.
    fold_only: bool,
    /// To the writer thread; `None` for in-memory and folding-only recorders. Held here, not
    /// under the mutex, so that write-only events reach it without the mutex. Once the writer
    /// has finished, sends fail (its end of the channel is gone) and events are not written.
    writer: Option<SyncSender<Message>>,
    /// Whether this recorder only writes (it keeps no events and folds no transcript): its
    /// events then go to the writer without the mutex, numbered by the writer.
    write_only: AtomicBool,
    /// Events sent on the write-only path (they are not in `State::next_seq`).
    sent: AtomicU64,
    state: Mutex<State>,
}

/// How many events may wait for the writer thread before recorders wait for it. The channel holds
/// each event whole in a slot of its own (~170 bytes; slots are made as the queue first reaches
/// them), so a queue this deep holds under 3 MiB besides the events' tables.
pub const WRITER_BACKLOG: usize = 16_384;

#[derive(Debug)]
struct State {
    next_seq: u64,
    /// The events recorded so far, when this recorder keeps them.
    kept: Option<Vec<Event>>,
    /// The canonical transcript of the events recorded so far, when this recorder folds them
    /// (boxed: most recorders do not).
    folded: Option<Box<TranscriptFold>>,
}

#[derive(Debug)]
enum Message {
    Event(Event),
    /// Write the end marker, flush, sync, stop.
    Finish,
    /// Flush what was written and stop without an end marker (the writer was dropped).
    Abandon,
}

impl Recorder {
    /// A recorder that only keeps its events in memory (see [`Recorder::events`]).
    pub fn in_memory() -> Recorder {
        Recorder::with(None, true, false)
    }

    fn with(writer: Option<SyncSender<Message>>, keep: bool, fold_only: bool) -> Recorder {
        Recorder {
            shared: Arc::new(Shared {
                start: Instant::now(),
                fold_only,
                write_only: AtomicBool::new(writer.is_some() && !keep),
                writer,
                sent: AtomicU64::new(0),
                state: Mutex::new(State {
                    next_seq: 0,
                    kept: keep.then(Vec::new),
                    folded: None,
                }),
            }),
        }
    }

    /// Record one event. Blocks only while the writer is [`WRITER_BACKLOG`] events behind.
    /// Events recorded after the trace file was finished are kept in memory (if this recorder
    /// keeps events) but not written.
    pub fn record(
        &self,
        stream: Stream,
        call: impl Into<TraceCall>,
        outcome: Outcome,
        detail: Option<String>,
    ) {
        if self.shared.write_only.load(Ordering::Acquire)
            && let Some(tx) = &self.shared.writer
        {
            // The writer numbers it (see the module documentation).
            let event = self.event(0, stream, call.into(), outcome, detail);
            self.shared.sent.fetch_add(1, Ordering::Relaxed);
            // A send only fails once the writer has stopped (finished, or panicked: `finish`
            // reports that); the event is then not written, like any after `finish`.
            let _ = tx.send(Message::Event(event));
            return;
        }
        let mut state = self.state();
        let seq = state.next_seq;
        state.next_seq += 1;
        let event = self.event(seq, stream, call.into(), outcome, detail);
        if let Some(kept) = state.kept.as_mut() {
            kept.push(event.clone());
        }
        if let Some(folded) = state.folded.as_mut() {
            folded.push(&event);
        }
        if let Some(tx) = &self.shared.writer {
            // Sent under the mutex, so the writer's numbering is this one. A send only fails once
            // the writer has stopped (finished, or panicked: `finish` reports that).
            let _ = tx.send(Message::Event(event));
        }
    }

    /// An event stamped with the time since the recorder was made.
    fn event(
        &self,
        seq: u64,
        stream: Stream,
        call: TraceCall,
        outcome: Outcome,
        detail: Option<String>,
    ) -> Event {
        // Whole microseconds: what `trace show` prints, and a trace's times then cost a byte or
        // two each (formats 3 and 4 store their differences).
        let at_ns = u64::try_from(self.shared.start.elapsed().as_micros())
            .unwrap_or(u64::MAX / 1000)
            .saturating_mul(1000);
        Event {
            seq,
            stream,
            call,
            outcome,
            detail,
            at_ns,
        }
    }

    /// A recorder that keeps no events, only their canonical transcript as they come (see
    /// [`Recorder::transcript`]): what a replay or `vmfleet run --transcript` needs, in memory
    /// that grows with the transcript's lines, not with the events.
    pub fn folding() -> Recorder {
        let recorder = Recorder::with(None, false, true);
        recorder.fold_transcript();
        recorder
    }

    /// From now on, fold events into their canonical transcript (see [`Recorder::transcript`])
    /// instead of keeping them: a writer's recorder, for `vmfleet run --record --transcript`.
    /// Events kept so far are folded in first; a recorder that already folds keeps its fold (the
    /// streams its recording objects fold into stay the transcript's).
    ///
    /// Call it before the recorder is handed to anything that records: events recorded while it
    /// switches a write-only recorder over may miss the transcript.
    pub fn fold_transcript(&self) {
        let mut state = self.state();
        self.shared.write_only.store(false, Ordering::Release);
        let kept = state.kept.take().unwrap_or_default();
        let fold = state.folded.get_or_insert_with(Box::default);
        for event in &kept {
            fold.push(event);
        }
    }

    /// For a folding-only recorder ([`Recorder::folding`]), the part of `stream` in its
    /// transcript, registered now if it has none yet: a recording object takes it once, when it is
    /// created, and folds its calls into it without this recorder's lock. `None` for every other
    /// recorder (its events go through [`Recorder::record`]).
    pub(crate) fn stream_fold(&self, stream: Stream) -> Option<StreamFold> {
        if !self.shared.fold_only {
            return None;
        }
        self.state().folded.as_mut().map(|fold| fold.stream(stream))
    }

    /// The canonical transcript of the events recorded so far, with the control events, when
    /// this recorder folds them ([`Recorder::folding`], [`Recorder::fold_transcript`]).
    pub fn transcript(&self) -> Option<TranscriptFold> {
        self.state().folded.as_deref().cloned()
    }

    /// [`Recorder::transcript`] taken rather than copied: the recorder folds nothing more (what
    /// it is given after this is dropped). For the end of a job: a 1,000-VM replay's fold is
    /// 2,000 streams of text, and copying it was the main thread's work alone.
    pub fn take_transcript(&self) -> Option<TranscriptFold> {
        self.state().folded.take().map(|fold| *fold)
    }

    /// How many events were recorded so far (the next `seq`; for a folding-only recorder, every
    /// event folded, on every stream).
    pub fn recorded(&self) -> u64 {
        let state = self.state();
        match &state.folded {
            // Its recording objects fold most events without numbering them.
            Some(fold) if self.shared.fold_only => fold.events(),
            _ => state.next_seq + self.shared.sent.load(Ordering::Relaxed),
        }
    }

    /// Whether [`Recorder::events`] returns the recorded events (in-memory recorders and
    /// recorders from [`TraceWriter::create_keeping_events`]).
    pub fn keeps_events(&self) -> bool {
        self.state().kept.is_some()
    }

    /// A copy of the events recorded so far, in `seq` order; empty unless
    /// [`Recorder::keeps_events`].
    pub fn events(&self) -> Vec<Event> {
        self.state().kept.clone().unwrap_or_default()
    }

    /// Take the events recorded so far out of the recorder (later events are kept again).
    pub fn take_events(&self) -> Vec<Event> {
        self.state()
            .kept
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is only ever changed by whole assignments and pushes, so a poisoned lock
        // still holds a consistent state.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Writing a trace file failed.
#[derive(Debug, Error)]
pub enum WriteError {
    /// Writing, flushing or syncing the file failed (the first such error; writing stopped
    /// there), or the writer thread could not be started.
    #[error("cannot write trace {}: {source}", path.display())]
    Io {
        /// The file the bytes go to: the partial file while there is one.
        path: PathBuf,
        /// The call's error.
        #[source]
        source: std::io::Error,
    },
    /// An event (or the end marker) could not be encoded as a frame.
    #[error("cannot write trace {}: event #{seq}: {source}", path.display())]
    Encode {
        /// The trace's name.
        path: PathBuf,
        /// The event's `seq` (for the end marker: the number of events).
        seq: u64,
        /// Why it could not be encoded.
        #[source]
        source: EncodeError,
    },
    /// The header could not be encoded as a frame; nothing was written.
    #[error("cannot write trace {}: the trace header: {source}", path.display())]
    Header {
        /// The trace's name.
        path: PathBuf,
        /// Why it could not be encoded.
        #[source]
        source: EncodeError,
    },
    /// The header names a format version other than the one this writer writes.
    #[error("cannot write trace {}: the header says format version {found}, this writer writes {}",
        path.display(), FORMAT_VERSION)]
    HeaderVersion {
        /// The trace's name.
        path: PathBuf,
        /// The header's `format_version`.
        found: u32,
    },
    /// The writer thread panicked, so whatever it wrote is unaccounted for.
    #[error("cannot write trace {}: the writer thread panicked", path.display())]
    WriterPanicked {
        /// The trace's name.
        path: PathBuf,
    },
    /// The trace's path is refused (it exists, it is a link, a partial file is in the way), or
    /// the finished trace could not be renamed into place.
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// How [`TraceWriter::create_with`] creates a trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceOptions {
    /// The recorder also keeps every event in memory (see [`Recorder::events`]).
    pub keep_events: bool,
    /// Replace an existing trace (or a link) at the path, and a partial file from an earlier run.
    pub replace: bool,
}

/// What a cleanly finished trace holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteSummary {
    /// How many events were written (the end marker's count).
    pub events: u64,
    /// The file's size.
    pub bytes: u64,
}

/// The owner of a trace file's writer thread. [`TraceWriter::finish`] closes the trace cleanly
/// and renames it into place; dropping it instead flushes what was written and leaves the partial
/// file without its end marker (it then reads back as cut short, which is what it is);
/// [`TraceWriter::discard`] removes it.
#[derive(Debug)]
pub struct TraceWriter {
    path: PathBuf,
    /// Where the bytes go until [`TraceWriter::finish`]; `None` for [`TraceWriter::to_file`].
    output: Option<Output>,
    recorder: Recorder,
    thread: Option<JoinHandle<Result<WriteSummary, WriteError>>>,
    /// The writer thread's id as the kernel knows it, once the thread has started (0 before, or
    /// where `/proc` cannot tell it).
    thread_id: Arc<AtomicU32>,
}

impl TraceWriter {
    /// Create the trace `path` (refused if something is there: see [`crate::output`]), write its
    /// preamble and header to `<path>.partial`, and start the writer thread. Returns the recorder
    /// to hand to [`crate::RecordingHypervisor`].
    pub fn create(
        path: impl AsRef<Path>,
        header: &TraceHeader,
    ) -> Result<(Recorder, TraceWriter), WriteError> {
        TraceWriter::create_with(path, header, TraceOptions::default())
    }

    /// Like [`TraceWriter::create`], and the recorder also keeps every event in memory (for
    /// rendering a transcript without reading the file back).
    pub fn create_keeping_events(
        path: impl AsRef<Path>,
        header: &TraceHeader,
    ) -> Result<(Recorder, TraceWriter), WriteError> {
        let options = TraceOptions {
            keep_events: true,
            ..TraceOptions::default()
        };
        TraceWriter::create_with(path, header, options)
    }

    /// [`TraceWriter::create`] with options (keep events, replace an existing trace).
    pub fn create_with(
        path: impl AsRef<Path>,
        header: &TraceHeader,
        options: TraceOptions,
    ) -> Result<(Recorder, TraceWriter), WriteError> {
        check_version(path.as_ref(), header)?;
        let output = Output::check(path.as_ref(), options.replace)?;
        let file = output.create_partial()?;
        let started = TraceWriter::start(
            output.target().to_path_buf(),
            Some(output.clone()),
            file,
            header,
            options.keep_events,
        );
        if started.is_err() {
            output.discard();
        }
        started
    }

    /// Write a trace straight into an open file (a pipe, a device, a file the caller made safe
    /// itself); `name` is what errors call it. [`TraceWriter::finish`] renames nothing.
    pub fn to_file(
        file: File,
        name: impl Into<PathBuf>,
        header: &TraceHeader,
        keep_events: bool,
    ) -> Result<(Recorder, TraceWriter), WriteError> {
        let name = name.into();
        check_version(&name, header)?;
        TraceWriter::start(name, None, file, header, keep_events)
    }

    fn start(
        path: PathBuf,
        output: Option<Output>,
        file: File,
        header: &TraceHeader,
        keep: bool,
    ) -> Result<(Recorder, TraceWriter), WriteError> {
        // I/O errors name the file the bytes go to.
        let writing_to = output
            .as_ref()
            .map_or_else(|| path.clone(), |o| o.partial().to_path_buf());
        let header_frame = encode_frame(header).map_err(|source| WriteError::Header {
            path: path.clone(),
            source,
        })?;
        let io = |source| WriteError::Io {
            path: writing_to.clone(),
            source,
        };
        let mut out = BufWriter::with_capacity(64 << 10, file);
        // Buffered here, flushed by the writer thread as it starts: a full disk is reported by
        // `finish`, like any later write error, and never blocks the caller.
        out.write_all(&preamble()).map_err(io)?;
        out.write_all(&header_frame).map_err(io)?;
        let written = (preamble().len() + header_frame.len()) as u64;

        let (tx, rx) = mpsc::sync_channel(WRITER_BACKLOG);
        let recorder = Recorder::with(Some(tx), keep, false);
        let thread_path = writing_to.clone();
        let thread_id = Arc::new(AtomicU32::new(0));
        let its_id = Arc::clone(&thread_id);
        let thread = std::thread::Builder::new()
            .name("vmfleet-trace-writer".into())
            .spawn(move || {
                its_id.store(own_thread_id().unwrap_or(0), Ordering::Relaxed);
                write_loop(thread_path, out, written, rx)
            })
            .map_err(io)?;
        Ok((
            recorder.clone(),
            TraceWriter {
                path,
                output,
                recorder,
                thread: Some(thread),
                thread_id,
            },
        ))
    }

    /// The CPU time the writer thread has used so far (`/proc/self/task/<tid>/schedstat`), or
    /// `None` where it cannot be read (not Linux, the thread not started yet or gone): how
    /// `vmfleet bench` accounts for the writer's share of what recording costs a start.
    pub fn writer_cpu_time(&self) -> Option<Duration> {
        // A thread just spawned may not have run yet: give it a moment to say who it is.
        let asked = Instant::now();
        let mut tid = self.thread_id.load(Ordering::Relaxed);
        while tid == 0 && self.thread.is_some() && asked.elapsed() < Duration::from_millis(200) {
            std::thread::sleep(Duration::from_micros(100));
            tid = self.thread_id.load(Ordering::Relaxed);
        }
        if tid == 0 {
            return None;
        }
        let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
        let on_cpu_ns = text.split_whitespace().next()?.parse().ok()?;
        Some(Duration::from_nanos(on_cpu_ns))
    }

    /// The trace's name (where it is once finished).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the trace is being written until [`TraceWriter::finish`] renames it: the partial
    /// file, or the file itself for [`TraceWriter::to_file`].
    pub fn writing_to(&self) -> &Path {
        self.output.as_ref().map_or(&self.path, |o| o.partial())
    }

    /// The recorder feeding this trace (the same one `create` returned).
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Write the end marker, flush, fsync, stop the writer thread and rename the trace into
    /// place. Returns the first I/O error the writer met, if any (the partial file then stays
    /// where it is). Events recorded after this are not written.
    pub fn finish(mut self) -> Result<WriteSummary, WriteError> {
        let summary = self.stop(true).unwrap_or(Err(WriteError::WriterPanicked {
            path: self.path.clone(),
        }))?;
        if let Some(output) = &self.output {
            output.publish()?;
        }
        Ok(summary)
    }

    /// Stop writing and remove the partial file: for a job that was refused or failed before
    /// it ran, whose trace is worth nothing and must not replace an existing one.
    pub fn discard(mut self) {
        let _ = self.stop(false);
        if let Some(output) = &self.output {
            output.discard();
        }
    }

    /// Tell the thread to stop and join it; `None` if it was already stopped or it panicked.
    fn stop(&mut self, clean: bool) -> Option<Result<WriteSummary, WriteError>> {
        let thread = self.thread.take()?;
        if let Some(tx) = &self.recorder.shared.writer {
            // Events sent after this one are never written: the writer stops at it.
            let _ = tx.send(if clean {
                Message::Finish
            } else {
                Message::Abandon
            });
        }
        thread.join().ok()
    }
}

/// The calling thread's id as the kernel knows it (`/proc/thread-self` links to
/// `<pid>/task/<tid>`), or `None` where `/proc` cannot tell it.
fn own_thread_id() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

impl Drop for TraceWriter {
    fn drop(&mut self) {
        let _ = self.stop(false);
    }
}

fn check_version(path: &Path, header: &TraceHeader) -> Result<(), WriteError> {
    if header.format_version != FORMAT_VERSION {
        return Err(WriteError::HeaderVersion {
            path: path.to_path_buf(),
            found: header.format_version,
        });
    }
    Ok(())
}

/// The writer thread: encode, buffer, flush regularly; on `Finish`, end marker + flush + fsync.
fn write_loop(
    path: PathBuf,
    mut out: BufWriter<File>,
    mut bytes: u64,
    rx: Receiver<Message>,
) -> Result<WriteSummary, WriteError> {
    let io = |source| WriteError::Io {
        path: path.clone(),
        source,
    };
    // The header first, at once: a process killed right after start-up still leaves a file with
    // its header, which reads back as a trace cut short before any event.
    let mut failed: Option<WriteError> = out.flush().err().map(io);
    let mut events: u64 = 0;
    let mut last_at: u64 = 0;
    let mut dirty_since: Option<Instant> = None;
    let mut encoder = BlockEncoder::default();
    let write_block = |encoder: &mut BlockEncoder,
                       out: &mut BufWriter<File>,
                       seq: u64|
     -> Result<u64, WriteError> {
        if encoder.is_empty() {
            return Ok(0);
        }
        let block = encoder
            .finish_block()
            .map_err(|source| WriteError::Encode {
                path: path.clone(),
                seq,
                source,
            })?;
        out.write_all(&block).map_err(|source| WriteError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(block.len() as u64)
    };

    // Whether an event was taken since the writer last napped (see [`BURST_NAP`]).
    let mut took_since_nap = false;
    // Events taken in a burst, encoded once it is over (see [`HELD_EVENTS`]); and what came
    // from the channel while they waited to be, handled after them.
    let mut held: VecDeque<Event> = VecDeque::new();
    let mut held_since: Option<Instant> = None;
    let mut after_held: Option<Result<Message, RecvTimeoutError>> = None;
    // Encoding what is held, before taking anything else.
    let mut releasing = false;
    let finished = loop {
        let message = if releasing {
            match held.pop_front() {
                Some(event) => Ok(Message::Event(event)),
                None => {
                    releasing = false;
                    match after_held.take() {
                        Some(message) => message,
                        None => continue,
                    }
                }
            }
        } else {
            let taken = match rx.try_recv() {
                Ok(message) => Ok(message),
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) if took_since_nap => {
                    // In a burst: nap and take what came meanwhile, rather than sleep in `recv`
                    // and be woken by the next event's sender.
                    took_since_nap = false;
                    std::thread::sleep(BURST_NAP);
                    continue;
                }
                Err(TryRecvError::Empty) if !held.is_empty() => {
                    // The burst is over: encode what it left.
                    (held_since, releasing) = (None, true);
                    continue;
                }
                Err(TryRecvError::Empty) => match dirty_since {
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    Some(since) => rx.recv_timeout(
                        (since + FLUSH_INTERVAL).saturating_duration_since(Instant::now()),
                    ),
                },
            };
            match taken {
                Ok(Message::Event(event)) => {
                    took_since_nap = true;
                    // Held while the burst lasts, unless too many or held too long.
                    let since = *held_since.get_or_insert_with(Instant::now);
                    held.push_back(event);
                    if held.len() >= HELD_EVENTS || since.elapsed() >= FLUSH_INTERVAL {
                        (held_since, releasing) = (None, true);
                    }
                    continue;
                }
                other if !held.is_empty() => {
                    // The trace ends (or is abandoned): what is held goes first.
                    (held_since, releasing) = (None, true);
                    after_held = Some(other);
                    continue;
                }
                other => other,
            }
        };
        match message {
            Ok(Message::Event(mut event)) => {
                if failed.is_some() {
                    continue;
                }
                // The file order is the `seq` order, and times never go backwards (see the
                // module documentation).
                let seq = events;
                event.seq = seq;
                event.at_ns = event.at_ns.max(last_at);
                last_at = event.at_ns;
                let pushed = encoder
                    .push_event(&event)
                    .map_err(|source| WriteError::Encode {
                        path: path.clone(),
                        seq,
                        source,
                    });
                if let Err(e) = pushed {
                    failed = Some(e);
                    continue;
                }
                events += 1;
                let since = *dirty_since.get_or_insert_with(Instant::now);
                let due = since.elapsed() >= FLUSH_INTERVAL;
                if due || encoder.len() >= BLOCK_BYTES {
                    match write_block(&mut encoder, &mut out, seq) {
                        Ok(n) => bytes += n,
                        Err(e) => failed = Some(e),
                    }
                }
                if due && failed.is_none() {
                    if let Err(e) = out.flush() {
                        failed = Some(io(e));
                    }
                    dirty_since = None;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if failed.is_none() {
                    match write_block(&mut encoder, &mut out, events) {
                        Ok(n) => bytes += n,
                        Err(e) => failed = Some(e),
                    }
                }
                if failed.is_none() {
                    if let Err(e) = out.flush() {
                        failed = Some(io(e));
                    }
                }
                dirty_since = None;
            }
            Ok(Message::Finish) => break true,
            Ok(Message::Abandon) | Err(RecvTimeoutError::Disconnected) => break false,
        }
    };

    if let Some(e) = failed {
        return Err(e);
    }
    if !finished {
        bytes += write_block(&mut encoder, &mut out, events)?;
        out.flush().map_err(io)?;
        return Ok(WriteSummary { events, bytes });
    }
    encoder
        .push_end(events)
        .map_err(|source| WriteError::Encode {
            path: path.clone(),
            seq: events,
            source,
        })?;
    bytes += write_block(&mut encoder, &mut out, events)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(WriteSummary { events, bytes })
}
