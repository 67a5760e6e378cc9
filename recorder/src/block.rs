//! Format 3's blocks: the events after the header, grouped into blocks that are compressed with
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
//! - `End { events }` closes the trace, as format 2's end frame.
//!
//! Integers are bincode varints. A block cut by a crash is decompressed as far as its bytes go,
//! and its records read up to the last whole one: a trace cut anywhere reads back to its last
//! whole event.
//!
//! Must not: know about files or threads (the writer and reader own those).

use crate::call::TraceCall;
use crate::format::{EncodeError, encode_raw_frame};
use crate::trace::Event;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Read as _;
use vcpu::{Outcome, Stream};

/// A block is closed once its uncompressed records reach this size (or when the writer flushes).
pub const BLOCK_BYTES: usize = 1 << 20;

/// One record inside a block (see the module).
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
}

/// Builds blocks from events.
#[derive(Default)]
pub(crate) struct BlockEncoder {
    /// The inner frames of the open block.
    buf: Vec<u8>,
    /// The open block's payloads, by their encoding.
    payloads: HashMap<Vec<u8>, u32>,
    /// The time of the open block's previous event.
    last_at: u64,
}

impl BlockEncoder {
    /// Add `event` (whose `seq` follows the previous one's) to the open block.
    pub(crate) fn push_event(&mut self, event: &Event) -> Result<(), EncodeError> {
        if self.buf.is_empty() {
            self.push(&InnerRef::Block {
                first_seq: event.seq,
            })?;
            self.last_at = 0;
        }
        let key = bincode::serde::encode_to_vec(
            (&event.call, &event.outcome, &event.detail),
            crate::format::bincode_config(),
        )?;
        let next = self.payloads.len() as u32;
        let payload = match self.payloads.get(&key) {
            Some(&n) => n,
            None => {
                self.push(&InnerRef::Payload {
                    call: &event.call,
                    outcome: &event.outcome,
                    detail: &event.detail,
                })?;
                self.payloads.insert(key, next);
                next
            }
        };
        let dt_ns = event.at_ns.wrapping_sub(self.last_at) as i64;
        // Times are whole microseconds (the recorder's): store them so, the varint a byte shorter.
        let dt_ns = if dt_ns % 1000 == 0 {
            dt_ns / 1000 * 2
        } else {
            dt_ns * 2 + 1
        };
        self.last_at = event.at_ns;
        self.push(&InnerRef::Event {
            stream: event.stream,
            dt_ns,
            payload,
        })
    }

    /// Add the end record (after `events` events) to the open block.
    pub(crate) fn push_end(&mut self, events: u64) -> Result<(), EncodeError> {
        if self.buf.is_empty() {
            self.push(&InnerRef::Block { first_seq: events })?;
        }
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

    /// Uncompressed bytes in the open block.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the open block holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Close the open block: its whole outer frame, compressed. The next event opens a new one.
    pub(crate) fn finish_block(&mut self) -> Result<Vec<u8>, EncodeError> {
        let compressed = ruzstd::encoding::compress_to_vec(
            &self.buf[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        self.buf.clear();
        self.payloads.clear();
        encode_raw_frame(&compressed)
    }
}

/// What one block held: its events and, if it closed the trace, the end's count.
pub(crate) struct Decoded {
    pub(crate) events: Vec<Event>,
    pub(crate) end: Option<u64>,
    /// Set when the block stopped early: why.
    pub(crate) problem: Option<String>,
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
    let mut out = Decoded {
        events: Vec::new(),
        end: None,
        problem,
    };
    let mut payloads: Vec<(TraceCall, Outcome, Option<String>)> = Vec::new();
    let mut seq: Option<u64> = None;
    let mut at: u64 = 0;
    let mut pos = 0;
    while pos < raw.len() {
        let decoded = bincode::serde::decode_from_slice::<Inner, _>(
            &raw[pos..],
            crate::format::bincode_config(),
        );
        let record = match decoded {
            Ok((record, used)) => {
                pos += used;
                Ok(record)
            }
            // A block cut short ends inside its last record: the records before it are whole.
            Err(_) if !whole => break,
            Err(e) => Err(format!(
                "cannot decode record at byte {pos} of the block: {e}"
            )),
        };
        match record {
            Ok(Inner::Block { first_seq }) if seq.is_none() => seq = Some(first_seq),
            Ok(Inner::Payload {
                call,
                outcome,
                detail,
            }) => payloads.push((call, outcome, detail)),
            Ok(Inner::Event {
                stream,
                dt_ns,
                payload,
            }) => {
                let (Some(s), Some((call, outcome, detail))) =
                    (seq, payloads.get(payload as usize))
                else {
                    out.problem = Some(format!(
                        "an event refers to payload {payload}, which the block does not define"
                    ));
                    break;
                };
                // Even: microseconds; odd: nanoseconds (see the encoder).
                let dt = if dt_ns % 2 == 0 {
                    dt_ns / 2 * 1000
                } else {
                    (dt_ns - 1) / 2
                };
                at = at.wrapping_add(dt as u64);
                out.events.push(Event {
                    seq: s,
                    stream,
                    call: call.clone(),
                    outcome: outcome.clone(),
                    detail: detail.clone(),
                    at_ns: at,
                });
                seq = Some(s + 1);
            }
            Ok(Inner::End { events }) => {
                out.end = Some(events);
                break;
            }
            Ok(Inner::Block { .. }) => {
                out.problem = Some("a block opens twice".into());
                break;
            }
            Err(reason) => {
                out.problem = Some(reason);
                break;
            }
        }
    }
    out
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
