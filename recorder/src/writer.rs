//! Recording events: the [`Recorder`] that every backend object shares, and the [`TraceWriter`]
//! that owns the background thread writing a trace file.
//!
//! A [`Recorder::record`] call takes one small mutex, assigns the event its `seq` and time, and
//! hands it to the writer thread over a bounded channel: it waits for the disk only when the
//! writer is [`WRITER_BACKLOG`] events behind (backpressure on the vCPU threads of a huge fleet
//! rather than unbounded memory). Because
//! both happen under the same mutex, the file order is the `seq` order. The writer thread
//! encodes and buffers, and flushes whenever it has held unwritten data for
//! [`FLUSH_INTERVAL`], so a killed process loses at most the last moments of its trace (which
//! then reads back as cut short). An I/O error (disk full) stops the writing, never the
//! recorders; [`TraceWriter::finish`] reports it.

use crate::format::{EncodeError, FORMAT_VERSION, Record, encode_frame, preamble};
use crate::trace::{Event, TraceHeader};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;
use vcpu::{Call, Outcome, Stream};

/// The longest the writer thread keeps written-but-unflushed events.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// The shared handle that records events. Cheap to clone; every clone feeds the same trace.
#[derive(Clone, Debug)]
pub struct Recorder {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    start: Instant,
    state: Mutex<State>,
}

/// How many events may wait for the writer thread before recorders wait for it (about 10 MiB of
/// queued events at the sizes vmfleet records).
pub const WRITER_BACKLOG: usize = 65_536;

#[derive(Debug)]
struct State {
    next_seq: u64,
    /// To the writer thread; `None` for in-memory recorders and after the writer was closed.
    to_writer: Option<SyncSender<Message>>,
    /// The events recorded so far, when this recorder keeps them.
    kept: Option<Vec<Event>>,
}

#[derive(Debug)]
enum Message {
    Event(Box<Event>),
    /// Write the end marker, flush, sync, stop.
    Finish {
        events: u64,
    },
    /// Flush what was written and stop without an end marker (the writer was dropped).
    Abandon,
}

impl Recorder {
    /// A recorder that only keeps its events in memory (see [`Recorder::events`]).
    pub fn in_memory() -> Recorder {
        Recorder::with(None, true)
    }

    fn with(to_writer: Option<SyncSender<Message>>, keep: bool) -> Recorder {
        Recorder {
            shared: Arc::new(Shared {
                start: Instant::now(),
                state: Mutex::new(State {
                    next_seq: 0,
                    to_writer,
                    kept: keep.then(Vec::new),
                }),
            }),
        }
    }

    /// Record one event and return its `seq`. Blocks only while the writer is
    /// [`WRITER_BACKLOG`] events behind. Events recorded after the
    /// trace file was finished are kept in memory (if this recorder keeps events) but not written.
    pub fn record(
        &self,
        stream: Stream,
        call: Call,
        outcome: Outcome,
        detail: Option<String>,
    ) -> u64 {
        let mut state = self.state();
        let seq = state.next_seq;
        state.next_seq += 1;
        let at_ns = u64::try_from(self.shared.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let event = Event {
            seq,
            stream,
            call,
            outcome,
            detail,
            at_ns,
        };
        if let Some(kept) = state.kept.as_mut() {
            kept.push(event.clone());
        }
        if let Some(tx) = &state.to_writer {
            // A send only fails if the writer thread is gone (it panicked); finish reports that.
            let _ = tx.send(Message::Event(Box::new(event)));
        }
        seq
    }

    /// How many events were recorded so far (the next `seq`).
    pub fn recorded(&self) -> u64 {
        self.state().next_seq
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
    #[error("cannot write trace {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write trace {}: event #{seq}: {source}", path.display())]
    Encode {
        path: PathBuf,
        seq: u64,
        #[source]
        source: EncodeError,
    },
    #[error("cannot write trace {}: the trace header: {source}", path.display())]
    Header {
        path: PathBuf,
        #[source]
        source: EncodeError,
    },
    #[error("cannot write trace {}: the header says format version {found}, this writer writes {}",
        path.display(), FORMAT_VERSION)]
    HeaderVersion { path: PathBuf, found: u32 },
    #[error("cannot write trace {}: the writer thread panicked", path.display())]
    WriterPanicked { path: PathBuf },
}

/// What a cleanly finished trace holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteSummary {
    pub events: u64,
    /// The file's size.
    pub bytes: u64,
}

/// The owner of a trace file's writer thread. [`TraceWriter::finish`] closes the trace cleanly;
/// dropping it instead flushes what was written and leaves the trace without its end marker (it
/// then reads back as cut short, which is what it is).
#[derive(Debug)]
pub struct TraceWriter {
    path: PathBuf,
    recorder: Recorder,
    thread: Option<JoinHandle<Result<WriteSummary, WriteError>>>,
}

impl TraceWriter {
    /// Create (or overwrite) the trace file at `path`, write its preamble and header, and start
    /// the writer thread. Returns the recorder to hand to [`crate::RecordingHypervisor`].
    pub fn create(
        path: impl AsRef<Path>,
        header: &TraceHeader,
    ) -> Result<(Recorder, TraceWriter), WriteError> {
        TraceWriter::start(path.as_ref(), header, false)
    }

    /// Like [`TraceWriter::create`], and the recorder also keeps every event in memory (for
    /// rendering a transcript without reading the file back).
    pub fn create_keeping_events(
        path: impl AsRef<Path>,
        header: &TraceHeader,
    ) -> Result<(Recorder, TraceWriter), WriteError> {
        TraceWriter::start(path.as_ref(), header, true)
    }

    fn start(
        path: &Path,
        header: &TraceHeader,
        keep: bool,
    ) -> Result<(Recorder, TraceWriter), WriteError> {
        let path = path.to_path_buf();
        if header.format_version != FORMAT_VERSION {
            return Err(WriteError::HeaderVersion {
                path,
                found: header.format_version,
            });
        }
        let header_frame = encode_frame(header).map_err(|source| WriteError::Header {
            path: path.clone(),
            source,
        })?;
        let io = |source| WriteError::Io {
            path: path.clone(),
            source,
        };
        let file = File::create(&path).map_err(io)?;
        let mut out = BufWriter::with_capacity(64 << 10, file);
        // Buffered only: a full disk shows up at the first flush and is reported by `finish`,
        // like any later write error.
        out.write_all(&preamble()).map_err(io)?;
        out.write_all(&header_frame).map_err(io)?;
        let written = (preamble().len() + header_frame.len()) as u64;

        let (tx, rx) = mpsc::sync_channel(WRITER_BACKLOG);
        let recorder = Recorder::with(Some(tx), keep);
        let thread_path = path.clone();
        let thread = std::thread::Builder::new()
            .name("vmfleet-trace-writer".into())
            .spawn(move || write_loop(thread_path, out, written, rx))
            .map_err(io)?;
        Ok((
            recorder.clone(),
            TraceWriter {
                path,
                recorder,
                thread: Some(thread),
            },
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorder feeding this trace (the same one `create` returned).
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Write the end marker, flush, fsync and stop the writer thread. Returns the first I/O error
    /// the writer met, if any. Events recorded after this are not written.
    pub fn finish(mut self) -> Result<WriteSummary, WriteError> {
        self.stop(true).unwrap_or(Err(WriteError::WriterPanicked {
            path: self.path.clone(),
        }))
    }

    /// Tell the thread to stop and join it; `None` if it was already stopped or it panicked.
    fn stop(&mut self, clean: bool) -> Option<Result<WriteSummary, WriteError>> {
        let thread = self.thread.take()?;
        {
            let mut state = self.recorder.state();
            if let Some(tx) = state.to_writer.take() {
                let message = if clean {
                    Message::Finish {
                        events: state.next_seq,
                    }
                } else {
                    Message::Abandon
                };
                let _ = tx.send(message);
            }
        }
        thread.join().ok()
    }
}

impl Drop for TraceWriter {
    fn drop(&mut self) {
        let _ = self.stop(false);
    }
}

/// The writer thread: encode, buffer, flush regularly; on `Finish`, end marker + flush + fsync.
fn write_loop(
    path: PathBuf,
    mut out: BufWriter<File>,
    mut bytes: u64,
    rx: Receiver<Message>,
) -> Result<WriteSummary, WriteError> {
    let mut failed: Option<WriteError> = None;
    let mut events: u64 = 0;
    // The header is buffered but not yet flushed.
    let mut dirty_since = Some(Instant::now());
    let io = |source| WriteError::Io {
        path: path.clone(),
        source,
    };

    let finish_events = loop {
        let message = match dirty_since {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(since) => {
                rx.recv_timeout((since + FLUSH_INTERVAL).saturating_duration_since(Instant::now()))
            }
        };
        match message {
            Ok(Message::Event(event)) => {
                if failed.is_some() {
                    continue;
                }
                let seq = event.seq;
                let written = encode_frame(&Record::Event(*event))
                    .map_err(|source| WriteError::Encode {
                        path: path.clone(),
                        seq,
                        source,
                    })
                    .and_then(|frame| {
                        out.write_all(&frame).map_err(io)?;
                        Ok(frame.len() as u64)
                    });
                match written {
                    Ok(n) => {
                        bytes += n;
                        events += 1;
                        let since = *dirty_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= FLUSH_INTERVAL {
                            if let Err(e) = out.flush() {
                                failed = Some(io(e));
                            }
                            dirty_since = None;
                        }
                    }
                    Err(e) => failed = Some(e),
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if failed.is_none() {
                    if let Err(e) = out.flush() {
                        failed = Some(io(e));
                    }
                }
                dirty_since = None;
            }
            Ok(Message::Finish { events }) => break Some(events),
            Ok(Message::Abandon) | Err(RecvTimeoutError::Disconnected) => break None,
        }
    };

    if let Some(e) = failed {
        return Err(e);
    }
    let Some(expected) = finish_events else {
        out.flush().map_err(io)?;
        return Ok(WriteSummary { events, bytes });
    };
    if expected != events {
        // Cannot happen: the recorder numbers and sends under one mutex, and `Finish` is sent
        // under it too. Refuse to write an end marker that would not match.
        out.flush().map_err(io)?;
        return Err(io(std::io::Error::other(format!(
            "{expected} events were recorded but {events} reached the writer"
        ))));
    }
    let end = encode_frame(&Record::End { events }).map_err(|source| WriteError::Encode {
        path: path.clone(),
        seq: events,
        source,
    })?;
    out.write_all(&end).map_err(io)?;
    bytes += end.len() as u64;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(WriteSummary { events, bytes })
}
