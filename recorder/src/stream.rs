//! Reading a trace as a stream: the header, then its events one by one, then how it ends, holding
//! one frame (formats 1-2) or one block (format 3) in memory whatever the trace's size.
//!
//! [`Trace::open`](crate::Trace::open) and friends collect this stream, so a streaming reader
//! (replay, `trace show`, `trace convert`) and a whole-trace reader agree by construction on
//! every event and on the verdict: complete, cut short at an offset, or damaged at an offset.
//!
//! The window: the reader keeps the bytes of the frame it is at (its length says how many). Only
//! when a frame is not whole and sound (cut short, bad checksum) does it look further: the check
//! for a damaged length field ([`crate::reader`]) may look at up to two frames' worth of bytes
//! after the frame header, so the window then grows to `2 * (MAX_FRAME_LEN + 8)` bytes (or to the
//! end of the file) once, at the point where reading stops anyway.

use crate::block::{Decoded, Placed};
use crate::format::{
    BLOCK_FORMAT_VERSION, FORMAT_VERSION, FRAME_HEADER_LEN, MAGIC, MAX_FRAME_LEN,
    OLDEST_FORMAT_VERSION, PREAMBLE_LEN, decode_payload,
};
use crate::reader::{Corruption, Cut, Frame, TraceEnd, TraceError, next_frame};
use crate::trace::{
    Event, EventBody, EventRun, Record, RunEvent, TraceHeader, TraceHeaderV1, TraceHeaderV2,
};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many bytes the window reads at a time.
const READ_CHUNK: usize = 256 << 10;

/// The most bytes the reader ever needs ahead of a frame's start to judge it (see the module).
const LOOKAHEAD_FOR_DAMAGE: usize = 2 * (MAX_FRAME_LEN + FRAME_HEADER_LEN);

/// The bytes of the source from the reader's position on, as far as read.
struct Window<R> {
    source: R,
    /// Storage: `buf[start..end]` holds the bytes read and not yet passed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The file offset of `buf[start]`.
    offset: u64,
    /// Whether the source has no more bytes.
    eof: bool,
}

impl<R: Read> Window<R> {
    fn new(source: R) -> Self {
        Window {
            source,
            buf: Vec::new(),
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
        }
    }

    fn rest(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// Make the window hold at least `want` bytes from the position, or everything to the end of
    /// the source. The storage grows a chunk at a time, as bytes arrive (`want` may be far past
    /// the end of the file).
    fn fill(&mut self, want: usize) -> std::io::Result<()> {
        if self.end - self.start >= want || self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < want && !self.eof {
            if self.end == self.buf.len() {
                self.buf.resize(self.end + READ_CHUNK, 0);
            }
            let read = match self.source.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => other?,
            };
            self.end += read;
            self.eof = read == 0;
        }
        Ok(())
    }

    fn advance(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        self.start += n;
        self.offset += n as u64;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// How many bytes are left from the position to the end of the source (read and dropped).
    fn bytes_to_end(&mut self) -> std::io::Result<u64> {
        let mut count = self.rest().len() as u64;
        self.advance(self.rest().len());
        let mut scratch = vec![0u8; READ_CHUNK];
        while !self.eof {
            match self.source.read(&mut scratch) {
                Ok(0) => self.eof = true,
                Ok(n) => count += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(count)
    }

    /// The frame at the position, judged exactly as [`next_frame`] judges it on the whole file.
    fn frame(&mut self) -> std::io::Result<Step> {
        self.fill(FRAME_HEADER_LEN)?;
        let length = self
            .rest()
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes);
        if let Some(length) = length.filter(|l| *l as usize <= MAX_FRAME_LEN) {
            self.fill(FRAME_HEADER_LEN + length as usize)?;
        }
        let step = Step::of(next_frame(self.rest(), 0));
        if matches!(step, Step::Whole { .. } | Step::Eof) {
            return Ok(step);
        }
        // Not whole and sound: judge it with everything the damage check may look at.
        self.fill(LOOKAHEAD_FOR_DAMAGE)?;
        Ok(Step::of(next_frame(self.rest(), 0)))
    }
}

/// [`Frame`] without the borrow: a whole frame's payload is `rest()[8..8 + len]`.
enum Step {
    Eof,
    Whole { len: usize },
    Cut(Cut),
    Corrupt(Corruption),
}

impl Step {
    fn of(frame: Frame<'_>) -> Step {
        match frame {
            Frame::Eof => Step::Eof,
            Frame::Whole { payload, .. } => Step::Whole { len: payload.len() },
            Frame::Cut(cut) => Step::Cut(cut),
            Frame::Corrupt(problem) => Step::Corrupt(problem),
        }
    }
}

/// The events of the block being served (formats 1-2: of the frame), and how far it is served.
struct Pending {
    bodies: Arc<[EventBody]>,
    events: Vec<Placed>,
    next: usize,
    /// What holding one of its events costs (see [`EventRun::weight`]).
    weight_per_event: usize,
}

/// What a queued event costs besides its body: its body's number.
const EVENT_BYTES: usize = 4;

/// A block's bodies in memory, per byte of the block uncompressed, at most: bincode's varints
/// decode into fixed-width fields, and tables and strings get heap headers.
const DECODED_PER_RAW_BYTE: usize = 4;

/// What one event of a format 1-2 frame costs held (its own body, of no known size): a generous
/// guess at a body with a CPUID table's worth of payload.
const SINGLE_EVENT_BYTES: usize = 2048;

impl Pending {
    fn none() -> Self {
        Pending {
            bodies: Arc::new([]),
            events: Vec::new(),
            next: 0,
            weight_per_event: EVENT_BYTES,
        }
    }

    fn of(block: Decoded) -> Self {
        let bodies = block.raw_bytes.saturating_mul(DECODED_PER_RAW_BYTE);
        Pending {
            weight_per_event: EVENT_BYTES + bodies.div_ceil(block.events.len().max(1)),
            bodies: block.bodies,
            events: block.events,
            next: 0,
        }
    }

    /// A frame of format 1 or 2: one event.
    fn single(event: Event) -> Self {
        let placed = Placed {
            seq: event.seq,
            stream: event.stream,
            at_ns: event.at_ns,
            body: 0,
        };
        let body = EventBody {
            call: event.call,
            outcome: event.outcome,
            detail: event.detail,
        };
        Pending {
            bodies: Arc::new([body]),
            events: vec![placed],
            next: 0,
            weight_per_event: EVENT_BYTES + SINGLE_EVENT_BYTES,
        }
    }

    fn peek(&self) -> Option<&Placed> {
        self.events.get(self.next)
    }
}

/// What follows the events of the block being served.
enum Tail {
    /// Read the next frame.
    Read,
    /// The block could not be read to its end.
    Problem(String),
    /// The block holds the end record, with this count.
    End(u64),
    /// The block was cut short.
    Cut(Cut),
}

/// A trace read as a stream: [`TraceStream::header`], then the events (it is an [`Iterator`]),
/// then [`TraceStream::finish`] for how the trace ends. Memory: one frame or block at a time.
pub struct TraceStream<R> {
    header: TraceHeader,
    window: Window<R>,
    path: PathBuf,
    /// The events of the block being served, and what comes after them.
    pending: Pending,
    tail: Tail,
    /// The file offset of the frame (block) being served.
    frame_at: u64,
    /// Events served so far: the `seq` due next.
    served: u64,
    /// How the trace ended, once known.
    end: Option<Result<TraceEnd, TraceError>>,
}

impl TraceStream<std::fs::File> {
    /// Open a trace file and read its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TraceError> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|source| TraceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        TraceStream::new(file, path)
    }
}

impl<'a> TraceStream<&'a [u8]> {
    /// A trace in memory.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, TraceError> {
        TraceStream::new(bytes, Path::new("<memory>"))
    }
}

impl<R: Read> TraceStream<R> {
    /// Read the preamble and header from `source`; `path` names it in errors.
    pub fn new(source: R, path: &Path) -> Result<Self, TraceError> {
        let mut window = Window::new(source);
        let io = |source| TraceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let header = read_preamble_and_header(&mut window).map_err(|e| e.into_error(io))?;
        Ok(TraceStream {
            header,
            window,
            path: path.to_path_buf(),
            pending: Pending::none(),
            tail: Tail::Read,
            frame_at: 0,
            served: 0,
            end: None,
        })
    }

    /// The trace's header.
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// How many events were served so far.
    pub fn served(&self) -> u64 {
        self.served
    }

    /// How the trace ends: complete, cut short or damaged (as [`TraceEnd::Corrupt`]; see
    /// [`crate::Trace::open`] for the strict reading), or the file could not be read. Events not
    /// yet served are read (and dropped) first, so this is the verdict on the whole file.
    pub fn finish(mut self) -> Result<TraceEnd, TraceError> {
        while self.next_run(usize::MAX).is_some() {}
        self.end.unwrap_or(Err(TraceError::Io {
            path: self.path,
            source: std::io::Error::other("the trace stream stopped without a verdict"),
        }))
    }

    /// Whether the stream has ended (the verdict is then known).
    pub fn is_done(&self) -> bool {
        self.end.is_some()
    }

    fn stop(&mut self, end: TraceEnd) {
        self.end = Some(Ok(end));
        self.pending = Pending::none();
    }

    fn corrupt(&mut self, offset: u64, problem: Corruption) {
        self.stop(TraceEnd::Corrupt {
            offset,
            whole_events: self.served,
            problem,
        });
    }

    fn truncated(&mut self, offset: u64, reason: Cut) {
        self.stop(TraceEnd::Truncated {
            offset,
            whole_events: self.served,
            reason,
        });
    }

    fn io_failed(&mut self, source: std::io::Error) {
        self.end = Some(Err(TraceError::Io {
            path: self.path.clone(),
            source,
        }));
        self.pending = Pending::none();
    }

    /// Whether an event numbered `seq` follows on (it is then served); else stop at the frame.
    fn serve(&mut self, seq: u64) -> bool {
        if seq != self.served {
            let problem = Corruption::OutOfSequence {
                expected: self.served,
                found: seq,
            };
            self.corrupt(self.frame_at, problem);
            return false;
        }
        self.served += 1;
        true
    }

    /// The end record (in the frame at `frame_at`, the window now after it) says `end_says`.
    fn end_record(&mut self, end_says: u64) {
        let read = self.served;
        if end_says != read {
            self.corrupt(
                self.frame_at,
                Corruption::EndCountMismatch { end_says, read },
            );
            return;
        }
        let next = self.window.offset;
        match self.window.bytes_to_end() {
            Err(e) => self.io_failed(e),
            Ok(0) => self.stop(TraceEnd::Complete { events: read }),
            Ok(bytes) => self.corrupt(next, Corruption::DataAfterEnd { bytes }),
        }
    }

    /// Read the next frame: an event (formats 1-2), a block's events into `pending` (format 3),
    /// or the end.
    fn read_frame(&mut self) {
        self.frame_at = self.window.offset;
        let step = match self.window.frame() {
            Ok(step) => step,
            Err(e) => {
                self.io_failed(e);
                return;
            }
        };
        let len = match step {
            Step::Whole { len } => len,
            Step::Eof => {
                self.truncated(self.frame_at, Cut::MissingEnd);
                return;
            }
            Step::Cut(reason) => {
                if self.header.format_version >= BLOCK_FORMAT_VERSION {
                    // What the cut left of the block: its whole events still count.
                    if let Some(rest) = self.window.rest().get(FRAME_HEADER_LEN..) {
                        let block = crate::block::decode_block(rest, false);
                        self.pending = Pending::of(block);
                        self.tail = Tail::Cut(reason);
                        return;
                    }
                }
                self.truncated(self.frame_at, reason);
                return;
            }
            Step::Corrupt(problem) => {
                self.corrupt(self.frame_at, problem);
                return;
            }
        };
        let payload = self
            .window
            .rest()
            .get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len)
            .unwrap_or_default();
        if self.header.format_version >= BLOCK_FORMAT_VERSION {
            let block = crate::block::decode_block(payload, true);
            self.window.advance(FRAME_HEADER_LEN + len);
            self.tail = match (&block.problem, block.end) {
                (Some(reason), _) => Tail::Problem(reason.clone()),
                (None, Some(end_says)) => Tail::End(end_says),
                (None, None) => Tail::Read,
            };
            self.pending = Pending::of(block);
            return;
        }
        let record = decode_payload::<Record>(payload);
        self.window.advance(FRAME_HEADER_LEN + len);
        match record {
            Err(reason) => self.corrupt(self.frame_at, Corruption::Undecodable { reason }),
            Ok(Record::Event(event)) => self.pending = Pending::single(event),
            Ok(Record::End { events }) => self.end_record(events),
        }
    }
}

impl<R: Read> Iterator for TraceStream<R> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let placed = *self.next_placed()?;
        if !self.serve(placed.seq) {
            return None;
        }
        self.pending.next += 1;
        let body = self.pending.bodies.get(placed.body as usize)?.clone();
        Some(Event {
            seq: placed.seq,
            stream: placed.stream,
            call: body.call,
            outcome: body.outcome,
            detail: body.detail,
            at_ns: placed.at_ns,
        })
    }
}

impl<R: Read> TraceStream<R> {
    /// The next events, as long as they are of one stream, at most `max` (at least one): their
    /// bodies shared with the rest of their block (see [`EventRun`]), not copied. What a replay
    /// queues; [`Iterator::next`] gives the same events one by one, copied out.
    pub fn next_run(&mut self, max: usize) -> Option<EventRun> {
        let first = *self.next_placed()?;
        // Made to size: the run's events are the pending ones of its stream from here on.
        let len = self.pending.events[self.pending.next..]
            .iter()
            .take(max.max(1))
            .take_while(|placed| placed.stream == first.stream)
            .count();
        // Those `len` are of the run's stream: no need to compare streams again.
        let mut events = Vec::with_capacity(len);
        while events.len() < len {
            let Some(&next) = self.pending.peek() else {
                break;
            };
            if !self.serve(next.seq) {
                break;
            }
            self.pending.next += 1;
            events.push(RunEvent {
                body: next.body,
                at_ns: next.at_ns,
            });
        }
        if events.is_empty() {
            return None;
        }
        Some(EventRun {
            stream: first.stream,
            first_seq: first.seq,
            bodies: Arc::clone(&self.pending.bodies),
            weight: events.len().saturating_mul(self.pending.weight_per_event),
            events,
        })
    }

    /// The next event to serve, reading frames until there is one or the trace ends.
    fn next_placed(&mut self) -> Option<&Placed> {
        loop {
            if self.end.is_some() {
                return None;
            }
            if self.pending.peek().is_some() {
                return self.pending.peek();
            }
            match std::mem::replace(&mut self.tail, Tail::Read) {
                Tail::Problem(reason) => {
                    self.corrupt(self.frame_at, Corruption::Undecodable { reason })
                }
                Tail::End(end_says) => self.end_record(end_says),
                Tail::Cut(reason) => self.truncated(self.frame_at, reason),
                Tail::Read => self.read_frame(),
            }
        }
    }
}

/// Why the header could not be read: the trace error, or the source failed.
enum HeaderError {
    Trace(TraceError),
    Io(std::io::Error),
}

impl HeaderError {
    fn into_error(self, io: impl FnOnce(std::io::Error) -> TraceError) -> TraceError {
        match self {
            HeaderError::Trace(e) => e,
            HeaderError::Io(e) => io(e),
        }
    }
}

impl From<std::io::Error> for HeaderError {
    fn from(e: std::io::Error) -> Self {
        HeaderError::Io(e)
    }
}

impl From<TraceError> for HeaderError {
    fn from(e: TraceError) -> Self {
        HeaderError::Trace(e)
    }
}

/// Check magic and version and decode the header frame; the window is left at the first event
/// frame.
fn read_preamble_and_header<R: Read>(window: &mut Window<R>) -> Result<TraceHeader, HeaderError> {
    window.fill(PREAMBLE_LEN)?;
    let bytes = window.rest();
    if bytes.is_empty() {
        return Err(TraceError::Empty.into());
    }
    let magic_part = &bytes[..bytes.len().min(MAGIC.len())];
    if magic_part != &MAGIC[..magic_part.len()] {
        return Err(TraceError::NotATrace {
            found: magic_part.to_vec(),
        }
        .into());
    }
    let Some(version) = bytes
        .get(MAGIC.len()..PREAMBLE_LEN)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
    else {
        return Err(TraceError::HeaderCut {
            offset: bytes.len() as u64,
            what: "inside the magic and format version",
        }
        .into());
    };
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(TraceError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        }
        .into());
    }
    window.advance(PREAMBLE_LEN);
    let pos = PREAMBLE_LEN as u64;
    let corrupt = |problem| TraceError::Corrupt {
        offset: pos,
        problem,
    };
    // Past a cut, the window holds everything to the end of the file.
    let file_len = |window: &Window<R>| window.offset + window.rest().len() as u64;
    match window.frame()? {
        Step::Eof => Err(TraceError::HeaderCut {
            offset: file_len(window),
            what: "before the header frame",
        }
        .into()),
        Step::Cut(_) => Err(TraceError::HeaderCut {
            offset: file_len(window),
            what: "inside the header frame",
        }
        .into()),
        Step::Corrupt(problem) => Err(corrupt(problem).into()),
        Step::Whole { len } => {
            let payload = window
                .rest()
                .get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len)
                .unwrap_or_default();
            // Format 1's header has fewer host facts, formats 2 and 3 no `exit_budgets` (see
            // `crate::format`).
            let header: TraceHeader = match version {
                OLDEST_FORMAT_VERSION => {
                    decode_payload::<TraceHeaderV1>(payload).map(TraceHeader::from)
                }
                2 | 3 => decode_payload::<TraceHeaderV2>(payload).map(TraceHeader::from),
                _ => decode_payload(payload),
            }
            .map_err(|reason| corrupt(Corruption::Undecodable { reason }))?;
            if header.format_version != version {
                return Err(corrupt(Corruption::HeaderVersionMismatch {
                    header: header.format_version,
                    preamble: version,
                })
                .into());
            }
            window.advance(FRAME_HEADER_LEN + len);
            Ok(header)
        }
    }
}

/// What [`encode_stream`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Converted {
    /// The events read and written.
    pub events: u64,
    /// The bytes written.
    pub bytes: u64,
    /// How the trace read ends (complete or cut short; damage is an error).
    pub end: TraceEnd,
}

/// Why [`encode_stream`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The trace read is unreadable or damaged (as [`crate::Trace::open`] says).
    #[error(transparent)]
    Read(#[from] TraceError),
    /// An event could not be encoded.
    #[error(transparent)]
    Encode(#[from] crate::format::EncodeError),
    /// The output could not be written.
    #[error("cannot write the converted trace: {0}")]
    Write(#[from] std::io::Error),
}

/// [`crate::encode_trace`] as the trace is read: `stream`'s header (its version set to this
/// crate's) and events, in the current format, to `out`, one block at a time; the end record
/// only if the trace read is complete (a trace cut short stays cut short). Damage found on the
/// way is an error (the caller discards what was written), as [`crate::Trace::open`] refuses it.
pub fn encode_stream<R: Read>(
    mut stream: TraceStream<R>,
    out: &mut impl std::io::Write,
) -> Result<Converted, ConvertError> {
    let header = TraceHeader {
        format_version: FORMAT_VERSION,
        ..stream.header().clone()
    };
    let mut bytes = 0u64;
    let mut write = |chunk: &[u8]| -> Result<(), ConvertError> {
        out.write_all(chunk)?;
        bytes += chunk.len() as u64;
        Ok(())
    };
    write(&crate::format::preamble())?;
    write(&crate::format::encode_frame(&header)?)?;
    let mut encoder = crate::block::BlockEncoder::default();
    let mut events = 0u64;
    for event in stream.by_ref() {
        encoder.push_event(&event)?;
        events += 1;
        if encoder.len() >= crate::block::BLOCK_BYTES {
            write(&encoder.finish_block()?)?;
        }
    }
    let end = stream.finish()?;
    if let TraceEnd::Corrupt {
        offset, problem, ..
    } = end
    {
        return Err(TraceError::Corrupt { offset, problem }.into());
    }
    if matches!(end, TraceEnd::Complete { .. }) {
        encoder.push_end(events)?;
    }
    if !encoder.is_empty() {
        write(&encoder.finish_block()?)?;
    }
    Ok(Converted { events, bytes, end })
}
