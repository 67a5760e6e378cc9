//! Formats 3 and 4's blocks: the events after the header, grouped into blocks that are compressed with
//! zstd (pure Rust, `ruzstd`) and each decodable on its own.
//!
//! A block is one outer frame (length, CRC-32 of the compressed bytes, the compressed bytes, as
//! every frame of [`crate::format`]). Inside, once decompressed, it is a run of [`Inner`]
//! records, one after the other (the outer checksum covers them; a cut leaves an exact prefix of
//! them, so they need no framing of their own):
//!
//! - `Block { first_seq }` opens every block: the sequence number of its first event, so a block
//!   needs nothing from the blocks before it;
//! - `Payload { call, outcome, detail }` defines the block's next payload number (0, 1, ...):
//!   what an event did, stored once per block however many events repeat it (the same RUN exit,
//!   the same CPUID read of every VM);
//! - `Event { stream, dt_ns, payload }` is one event: its stream, its time as the difference from
//!   the block's previous event (zig-zag varint: times are taken when an outcome is known, so they
//!   may step back), and its payload's number; its sequence number is the previous one plus one;
//! - `End { events }` closes the trace, as format 2's end frame;
//! - format 4 adds `Sequence { payloads }`, which defines the block's next sequence number (0,
//!   1, ...): a list of payload numbers, stored once per block however many batches repeat it
//!   (every VM's vCPU 0 runs the same guest and exits the same way);
//! - and `Batch { stream, at, opened, dt_ns, span_ns, sequence }`: a stream's consecutive `RUN`
//!   events (a guest's exits, ~340 per vCPU of the built-in guest) as one record, the exits being
//!   the sequence's payloads. It stands where its first `RUN` stood: before the block's `at`-th
//!   `Event` record (batches before the same record in the order they opened, `opened`). Its first
//!   and last exits keep their times (`dt_ns` from the block's previous event time, zig-zag as an
//!   event's, and `span_ns` after it); the exits between get times spaced evenly between them. A
//!   batch is written when its stream makes another call (so a stream's calls stay in order) or
//!   when the block closes; a block cut by a crash therefore still reads back, stream by stream, to
//!   its last whole record.
//!
//! Format 3 blocks are format 4 blocks without the last two records, so one decoder reads both.
//!
//! Integers are bincode varints. A block cut by a crash is decompressed as far as its bytes go,
//! and its records read up to the last whole one: a trace cut anywhere reads back to its last
//! whole record.
//!
//! Must not: know about files or threads (the writer and reader own those).

use crate::call::TraceCall;
use crate::format::{EncodeError, encode_raw_frame};
use crate::trace::{Event, EventBody};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Arc;
use vcpu::{Outcome, Stream, VcpuCall};

/// A block is closed once its uncompressed records reach this size, or it holds
/// [`BLOCK_EVENTS`] events (or when the writer flushes).
pub const BLOCK_BYTES: usize = 1 << 20;

/// A block is closed once it holds this many events. A reader decodes a block into its events, so
/// their number bounds its memory as much as the block's bytes do: batches make a `RUN` cost a
/// byte or two, and a megabyte of them would be half a million events (~100 MB decoded).
pub const BLOCK_EVENTS: usize = 16_384;

/// The most events a block may decode into; more is damage, never an allocation (a writer closes
/// its blocks at [`BLOCK_EVENTS`]).
pub const MAX_BLOCK_EVENTS: usize = 1 << 18;

/// One record inside a block (see the module). New variants go at the end: a variant's number is
/// its place.
#[derive(Deserialize)]
pub(crate) enum Inner {
    Block {
        first_seq: u64,
    },
    Payload {
        call: TraceCall,
        outcome: Outcome,
        detail: Option<String>,
    },
    Event {
        stream: Stream,
        dt_ns: i64,
        payload: u32,
    },
    End {
        events: u64,
    },
    Sequence {
        payloads: Vec<u32>,
    },
    Batch {
        stream: Stream,
        at: u32,
        opened: u32,
        dt_ns: i64,
        span_ns: i64,
        sequence: u32,
    },
}

/// [`Inner`] as the encoder writes it, borrowing (the same variants in the same order, so
/// bincode's bytes are the same).
#[derive(Serialize)]
enum InnerRef<'a> {
    Block {
        first_seq: u64,
    },
    Payload {
        call: &'a TraceCall,
        outcome: &'a Outcome,
        detail: &'a Option<String>,
    },
    Event {
        stream: Stream,
        dt_ns: i64,
        payload: u32,
    },
    End {
        events: u64,
    },
    Sequence {
        payloads: &'a [u32],
    },
    Batch {
        stream: Stream,
        at: u32,
        opened: u32,
        dt_ns: i64,
        span_ns: i64,
        sequence: u32,
    },
}

/// A time difference as stored: times are whole microseconds (the recorder's), so a multiple of
/// 1,000 ns is stored as microseconds times two (the varint a byte shorter), anything else as
/// nanoseconds times two plus one.
fn encode_dt(dt_ns: i64) -> i64 {
    if dt_ns % 1000 == 0 {
        dt_ns / 1000 * 2
    } else {
        dt_ns.wrapping_mul(2).wrapping_add(1)
    }
}

/// The inverse of [`encode_dt`].
fn decode_dt(stored: i64) -> i64 {
    if stored % 2 == 0 {
        stored / 2 * 1000
    } else {
        (stored - 1) / 2
    }
}

/// Whether `event` joins its stream's batch: a `RUN` (a guest exit, or its failure).
fn batches(event: &Event) -> bool {
    matches!(event.call, TraceCall::Vcpu(VcpuCall::Run)) && matches!(event.stream, Stream::Vcpu(..))
}

/// A stream's consecutive `RUN`s, not yet written.
struct OpenBatch {
    /// `Event` records in the block before its first `RUN`.
    at: u32,
    /// Batches opened in the block before it.
    opened: u32,
    first_at: u64,
    last_at: u64,
    payloads: Vec<u32>,
}

/// Builds blocks from events.
#[derive(Default)]
pub(crate) struct BlockEncoder {
    /// The inner frames of the open block.
    buf: Vec<u8>,
    /// The open block's payloads, by their encoding (hashed with foldhash: SipHash over every
    /// event's encoding, a whole CPUID table's for each table call, was a tenth of the writer's
    /// time in a fleet's start).
    payloads: HashMap<Vec<u8>, u32, foldhash::fast::RandomState>,
    /// The encoding of the event being pushed, kept to be written over (not a new key per event).
    key: Vec<u8>,
    /// The open block's sequences, by their payload numbers.
    sequences: HashMap<Vec<u32>, u32>,
    /// Each stream's open batch.
    open: HashMap<Stream, OpenBatch>,
    /// `Event` records in the open block.
    direct: u32,
    /// Batches opened in the open block.
    opened: u32,
    /// `RUN`s waiting in open batches (for [`BlockEncoder::len`]).
    waiting: usize,
    /// `RUN`s in the batches written to the open block.
    written_runs: usize,
    /// The time of the open block's previous `Event` record.
    last_at: u64,
}

impl BlockEncoder {
    /// Add `event` to the open block (events come in the order they were recorded).
    pub(crate) fn push_event(&mut self, event: &Event) -> Result<(), EncodeError> {
        if self.buf.is_empty() {
            self.push(&InnerRef::Block {
                first_seq: event.seq,
            })?;
            self.last_at = 0;
        }
        self.key.clear();
        bincode::serde::encode_into_std_write(
            (&event.call, &event.outcome, &event.detail),
            &mut self.key,
            crate::format::bincode_config(),
        )?;
        let next = self.payloads.len() as u32;
        let payload = match self.payloads.get(self.key.as_slice()) {
            Some(&n) => n,
            None => {
                self.push(&InnerRef::Payload {
                    call: &event.call,
                    outcome: &event.outcome,
                    detail: &event.detail,
                })?;
                self.payloads.insert(self.key.clone(), next);
                next
            }
        };
        if batches(event) {
            let (at, opened) = (self.direct, self.opened);
            let batch = self.open.entry(event.stream).or_insert_with(|| OpenBatch {
                at,
                opened,
                first_at: event.at_ns,
                last_at: event.at_ns,
                payloads: Vec::new(),
            });
            if batch.payloads.is_empty() {
                self.opened += 1;
            }
            batch.payloads.push(payload);
            batch.last_at = event.at_ns;
            self.waiting += 1;
            return Ok(());
        }
        // The stream's other calls stay in order: its batch goes first.
        if let Some(batch) = self.open.remove(&event.stream) {
            self.write_batch(event.stream, batch)?;
        }
        let dt_ns = encode_dt(event.at_ns.wrapping_sub(self.last_at) as i64);
        self.last_at = event.at_ns;
        self.direct += 1;
        self.push(&InnerRef::Event {
            stream: event.stream,
            dt_ns,
            payload,
        })
    }

    /// Write `batch` of `stream`, defining its sequence if the block has not yet.
    fn write_batch(&mut self, stream: Stream, batch: OpenBatch) -> Result<(), EncodeError> {
        self.waiting -= batch.payloads.len();
        self.written_runs += batch.payloads.len();
        let next = self.sequences.len() as u32;
        let sequence = match self.sequences.get(&batch.payloads) {
            Some(&n) => n,
            None => {
                self.push(&InnerRef::Sequence {
                    payloads: &batch.payloads,
                })?;
                self.sequences.insert(batch.payloads, next);
                next
            }
        };
        self.push(&InnerRef::Batch {
            stream,
            at: batch.at,
            opened: batch.opened,
            dt_ns: encode_dt(batch.first_at.wrapping_sub(self.last_at) as i64),
            span_ns: encode_dt(batch.last_at.wrapping_sub(batch.first_at) as i64),
            sequence,
        })
    }

    /// Write every open batch, in the order they opened.
    fn write_open_batches(&mut self) -> Result<(), EncodeError> {
        let mut open: Vec<(Stream, OpenBatch)> = self.open.drain().collect();
        open.sort_by_key(|(_, batch)| batch.opened);
        open.into_iter()
            .try_for_each(|(stream, batch)| self.write_batch(stream, batch))
    }

    /// Add the end record (after `events` events) to the open block.
    pub(crate) fn push_end(&mut self, events: u64) -> Result<(), EncodeError> {
        if self.buf.is_empty() {
            self.push(&InnerRef::Block { first_seq: events })?;
        }
        self.write_open_batches()?;
        self.push(&InnerRef::End { events })
    }

    fn push(&mut self, record: &InnerRef<'_>) -> Result<(), EncodeError> {
        bincode::serde::encode_into_std_write(
            record,
            &mut self.buf,
            crate::format::bincode_config(),
        )?;
        Ok(())
    }

    /// How full the open block is, in bytes, by the closing rule: its uncompressed records, or its
    /// events at `BLOCK_BYTES / BLOCK_EVENTS` bytes each if that is more (compare with
    /// [`BLOCK_BYTES`]).
    pub(crate) fn len(&self) -> usize {
        let events = self.direct as usize + self.waiting + self.written_runs;
        self.buf.len().max(events * (BLOCK_BYTES / BLOCK_EVENTS))
    }

    /// Whether the open block holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Close the open block: its whole outer frame, compressed. The next event opens a new one.
    pub(crate) fn finish_block(&mut self) -> Result<Vec<u8>, EncodeError> {
        self.write_open_batches()?;
        let compressed = ruzstd::encoding::compress_to_vec(
            &self.buf[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        self.buf.clear();
        self.payloads.clear();
        self.sequences.clear();
        self.direct = 0;
        self.opened = 0;
        self.written_runs = 0;
        encode_raw_frame(&compressed)
    }
}

/// What one block held: its events and, if it closed the trace, the end's count.
pub(crate) struct Decoded {
    /// Each distinct call, outcome and detail of the block once.
    pub(crate) bodies: Arc<[EventBody]>,
    /// The block's events in order (their `seq`s follow on from the block's first).
    pub(crate) events: Vec<Placed>,
    pub(crate) end: Option<u64>,
    /// Set when the block stopped early: why.
    pub(crate) problem: Option<String>,
    /// The block's size uncompressed: what its bodies cost in memory is about proportional.
    pub(crate) raw_bytes: usize,
}

/// An event of a decoded block: where it stands and which of the block's bodies it says.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placed {
    pub(crate) seq: u64,
    pub(crate) stream: Stream,
    pub(crate) at_ns: u64,
    pub(crate) body: u32,
}

/// A decoded batch, waiting for its place among the block's events.
struct PlacedBatch {
    at: u32,
    opened: u32,
    stream: Stream,
    first_at: u64,
    span_ns: i64,
    sequence: u32,
}

/// The records of a block, as read so far.
#[derive(Default)]
struct BlockRecords {
    first_seq: Option<u64>,
    /// Each payload once.
    payloads: Vec<EventBody>,
    sequences: Vec<Vec<u32>>,
    /// `Event` records: stream, time, payload number.
    direct: Vec<(Stream, u64, u32)>,
    batches: Vec<PlacedBatch>,
    /// Events the batches so far stand for.
    batched: usize,
    at: u64,
}

impl BlockRecords {
    /// Take one record; `Err` says why the block cannot be read past it.
    fn take(&mut self, record: Inner) -> Result<Option<u64>, String> {
        let first_seq = self.first_seq;
        match record {
            Inner::Block { first_seq } if self.first_seq.is_none() => {
                self.first_seq = Some(first_seq)
            }
            Inner::Block { .. } => return Err("a block opens twice".into()),
            _ if first_seq.is_none() => return Err("a block does not open with its number".into()),
            Inner::Payload {
                call,
                outcome,
                detail,
            } => self.payloads.push(EventBody {
                call,
                outcome,
                detail,
            }),
            Inner::Event {
                stream,
                dt_ns,
                payload,
            } => {
                if payload as usize >= self.payloads.len() {
                    return Err(format!(
                        "an event refers to payload {payload}, which the block does not define"
                    ));
                }
                if self.direct.len() + self.batched >= MAX_BLOCK_EVENTS {
                    return Err(format!(
                        "the block holds more than {MAX_BLOCK_EVENTS} events, more than any \
                         writer puts in one"
                    ));
                }
                self.at = self.at.wrapping_add(decode_dt(dt_ns) as u64);
                self.direct.push((stream, self.at, payload));
            }
            Inner::End { events } => return Ok(Some(events)),
            Inner::Sequence { payloads } => {
                if let Some(p) = payloads
                    .iter()
                    .find(|&&p| p as usize >= self.payloads.len())
                {
                    return Err(format!(
                        "a sequence refers to payload {p}, which the block does not define"
                    ));
                }
                self.sequences.push(payloads);
            }
            Inner::Batch {
                stream,
                at,
                opened,
                dt_ns,
                span_ns,
                sequence,
            } => {
                if sequence as usize >= self.sequences.len() {
                    return Err(format!(
                        "a batch refers to sequence {sequence}, which the block does not define"
                    ));
                }
                self.batched += self.sequences[sequence as usize].len();
                if self.direct.len() + self.batched > MAX_BLOCK_EVENTS {
                    return Err(format!(
                        "the block holds more than {MAX_BLOCK_EVENTS} events, more than any \
                         writer puts in one"
                    ));
                }
                if at as usize > self.direct.len() {
                    return Err(format!(
                        "a batch stands before event record {at}, which the block has not reached"
                    ));
                }
                self.batches.push(PlacedBatch {
                    at,
                    opened,
                    stream,
                    first_at: self.at.wrapping_add(decode_dt(dt_ns) as u64),
                    span_ns: decode_dt(span_ns),
                    sequence,
                });
            }
        }
        Ok(None)
    }

    /// The block's events in order: each batch's exits where its first stood.
    fn place_events(&mut self) -> Vec<Placed> {
        self.batches.sort_by_key(|b| (b.at, b.opened));
        let Some(first_seq) = self.first_seq else {
            return Vec::new();
        };
        let runs: usize = self
            .batches
            .iter()
            .map(|b| self.sequences[b.sequence as usize].len())
            .sum();
        let mut events = Vec::with_capacity(self.direct.len() + runs);
        let mut batches = self.batches.iter().peekable();
        let event = |seq: usize, stream: Stream, at_ns: u64, body: u32| Placed {
            seq: first_seq + seq as u64,
            stream,
            at_ns,
            body,
        };
        for i in 0..=self.direct.len() {
            while let Some(batch) = batches.next_if(|b| b.at as usize <= i) {
                let exits = &self.sequences[batch.sequence as usize];
                let gaps = exits.len().saturating_sub(1).max(1) as i64;
                for (k, &p) in exits.iter().enumerate() {
                    // In 64 bits when it fits (always, for spans below ~100 days): a 128-bit
                    // division per exit was 1% of a fleet replay, which never reads the times.
                    let offset = match batch.span_ns.checked_mul(k as i64) {
                        Some(product) => product / gaps,
                        None => (i128::from(batch.span_ns) * k as i128 / i128::from(gaps)) as i64,
                    };
                    let at_ns = batch.first_at.wrapping_add(offset as u64);
                    events.push(event(events.len(), batch.stream, at_ns, p));
                }
            }
            if let Some(&(stream, at_ns, p)) = self.direct.get(i) {
                events.push(event(events.len(), stream, at_ns, p));
            }
        }
        events
    }
}

/// Decompress `compressed` (a whole block, or the part of one a cut left) and read its inner
/// frames: every whole event, whether an end record was met, and what stopped reading early.
pub(crate) fn decode_block(compressed: &[u8], whole: bool) -> Decoded {
    let mut raw = Vec::new();
    let mut problem = None;
    match ruzstd::decoding::StreamingDecoder::new(compressed) {
        Ok(mut decoder) => {
            if let Err(e) = decoder.read_to_end(&mut raw) {
                if whole {
                    problem = Some(format!("cannot decompress the block: {e}"));
                }
            }
        }
        Err(e) => {
            if whole {
                problem = Some(format!("cannot decompress the block: {e}"));
            }
        }
    }
    let mut records = BlockRecords::default();
    let mut end = None;
    let mut pos = 0;
    while pos < raw.len() {
        let decoded = bincode::serde::decode_from_slice::<Inner, _>(
            &raw[pos..],
            crate::format::bincode_config(),
        );
        let record = match decoded {
            Ok((record, used)) => {
                pos += used;
                record
            }
            // A block cut short ends inside its last record: the records before it are whole.
            Err(_) if !whole => break,
            Err(e) => {
                problem = Some(format!(
                    "cannot decode record at byte {pos} of the block: {e}"
                ));
                break;
            }
        };
        match records.take(record) {
            Ok(None) => {}
            Ok(Some(events)) => {
                end = Some(events);
                break;
            }
            Err(reason) => {
                problem = Some(reason);
                break;
            }
        }
    }
    let events = records.place_events();
    Decoded {
        bodies: records.payloads.into(),
        events,
        end,
        problem,
        raw_bytes: raw.len(),
    }
}

/// A whole trace in the current format: `header` (its version set to this crate's), `events`,
/// and the end record when `complete` (a trace that was cut short stays cut short). What `vmfleet
/// trace convert` writes.
pub fn encode_trace(
    header: &crate::trace::TraceHeader,
    events: &[Event],
    complete: bool,
) -> Result<Vec<u8>, EncodeError> {
    let header = crate::trace::TraceHeader {
        format_version: crate::format::FORMAT_VERSION,
        ..header.clone()
    };
    let mut out = crate::format::preamble().to_vec();
    out.extend(crate::format::encode_frame(&header)?);
    let mut encoder = BlockEncoder::default();
    for event in events {
        encoder.push_event(event)?;
        if encoder.len() >= BLOCK_BYTES {
            out.extend(encoder.finish_block()?);
        }
    }
    if complete {
        encoder.push_end(events.len() as u64)?;
    }
    if !encoder.is_empty() {
        out.extend(encoder.finish_block()?);
    }
    Ok(out)
}
