//! Reading a trace back: strictly (replay needs every event and the end marker) or leniently
//! (`trace show` prints whatever is readable and then says where and why it stopped). A whole
//! [`Trace`] is the stream of [`crate::stream`] collected, so both read every trace alike.
//!
//! Reading never panics and never allocates by a length it read: frame lengths are capped at
//! [`MAX_FRAME_LEN`] and checked against the bytes actually present before anything is sliced,
//! and bincode decodes under the same limit.
//!
//! A trace *cut short* (the file simply ends, inside or after a frame) is told apart from a
//! *corrupt* one (a frame whose checksum or length is wrong). The hard case is a damaged length
//! field that points past the end of the file, which looks like a cut: when a frame runs past the
//! end (or fails its checksum), the reader looks for a shorter or longer payload that does match
//! the frame's stored checksum and is followed by the end of the file or a plausible next frame.
//! If there is one, the length field is what is damaged, and the frame is reported corrupt at its
//! own offset. A real cut leaves no such payload (short of a 1 in 2^32 checksum coincidence).

#[cfg(doc)]
use crate::format::FORMAT_VERSION;
use crate::format::{FRAME_HEADER_LEN, MAGIC, MAX_FRAME_LEN, OLDEST_FORMAT_VERSION};
use crate::stream::TraceStream;
use crate::trace::{Event, TraceHeader};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A trace read back from its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Where, by which vmfleet and for which job the trace was recorded.
    pub header: TraceHeader,
    /// Every whole event, in file (= `seq`) order.
    pub events: Vec<Event>,
    /// Whether the trace was closed cleanly, and if not, where reading stopped.
    pub end: TraceEnd,
}

/// How a trace ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceEnd {
    /// The writer closed the trace cleanly after `events` events.
    Complete {
        /// How many events the trace holds (the end marker's count, checked against them).
        events: u64,
    },
    /// The file stops early (killed process, full disk): `whole_events` events were read and the
    /// first byte that does not belong to a whole frame is at `offset`.
    Truncated {
        /// The file offset of the first byte that is not part of a whole frame.
        offset: u64,
        /// How many events were read before it.
        whole_events: u64,
        /// Where in a frame the file ends.
        reason: Cut,
    },
    /// Only from the lenient readers: the frame at `offset` is damaged; `whole_events` events
    /// before it were read. The strict readers return [`TraceError::Corrupt`] instead.
    Corrupt {
        /// The file offset of the damaged frame (for data after the end marker: of that data).
        offset: u64,
        /// How many events were read before it.
        whole_events: u64,
        /// What is wrong with it.
        problem: Corruption,
    },
}

/// How a trace cut short ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cut {
    /// The file ends exactly after a whole frame, but without the end marker a clean close
    /// writes.
    MissingEnd,
    /// The file ends inside a frame's 8-byte length and checksum.
    InFrameHeader {
        /// How many of the frame header's bytes are present.
        have: u64,
    },
    /// The file ends inside a frame's payload.
    InPayload {
        /// The payload length the frame header says.
        length: u32,
        /// How many payload bytes are present.
        have: u64,
    },
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cut::MissingEnd => {
                f.write_str("the file ends after a whole frame but has no end marker")
            }
            Cut::InFrameHeader { have } => write!(
                f,
                "the file ends inside a frame header ({have} of {FRAME_HEADER_LEN} bytes)"
            ),
            Cut::InPayload { length, have } => write!(
                f,
                "the file ends inside a frame ({have} of its {length} payload bytes present)"
            ),
        }
    }
}

/// What is wrong with a damaged frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Corruption {
    /// The payload does not hash to the checksum its frame header stores (and no other length
    /// would make it: that is [`Corruption::DamagedLength`]).
    BadChecksum {
        /// The CRC-32 in the frame header.
        stored: u32,
        /// The CRC-32 of the payload as read.
        computed: u32,
    },
    /// The length field exceeds [`MAX_FRAME_LEN`]: refused before anything is allocated.
    FrameTooLong {
        /// The length field's value.
        length: u32,
    },
    /// The frame is whole and its checksum matches, but bincode cannot read the payload as what
    /// it must hold (the header, an event or the end marker), or bytes are left over.
    Undecodable {
        /// bincode's complaint, or how many bytes follow the value.
        reason: String,
    },
    /// The header frame's version disagrees with the preamble's.
    HeaderVersionMismatch {
        /// The header frame's `format_version`.
        header: u32,
        /// The version in the preamble, after the magic.
        preamble: u32,
    },
    /// Events must be numbered 0, 1, 2, … in file order.
    OutOfSequence {
        /// The `seq` due here: the number of events before it.
        expected: u64,
        /// The `seq` the event has.
        found: u64,
    },
    /// The end marker's count disagrees with the events before it.
    EndCountMismatch {
        /// The count the end marker holds.
        end_says: u64,
        /// The events actually read.
        read: u64,
    },
    /// Bytes follow the end marker; a clean close writes nothing after it.
    DataAfterEnd {
        /// How many.
        bytes: u64,
    },
    /// The frame's length field says `length`, but its stored checksum matches the first `fits`
    /// bytes after the frame header, which are followed by the end of the file or a plausible
    /// next frame: the length field is damaged.
    DamagedLength {
        /// The length field's value.
        length: u32,
        /// The payload length that matches the stored checksum.
        fits: u32,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::BadChecksum { stored, computed } => write!(
                f,
                "checksum mismatch (frame says {stored:08x}, payload hashes to {computed:08x})"
            ),
            Corruption::FrameTooLong { length } => write!(
                f,
                "frame length {length} exceeds the {MAX_FRAME_LEN}-byte limit"
            ),
            Corruption::Undecodable { reason } => f.write_str(reason),
            Corruption::HeaderVersionMismatch { header, preamble } => write!(
                f,
                "the header says format version {header} but the file preamble says {preamble}"
            ),
            Corruption::OutOfSequence { expected, found } => {
                write!(f, "event #{found} where event #{expected} was due")
            }
            Corruption::EndCountMismatch { end_says, read } => write!(
                f,
                "the end marker counts {end_says} events but the trace holds {read}"
            ),
            Corruption::DataAfterEnd { bytes } => {
                write!(f, "{bytes} bytes follow the end marker")
            }
            Corruption::DamagedLength { length, fits } => write!(
                f,
                "the frame's length field says {length} bytes, but its checksum matches the \
                 {fits} bytes that follow its header: the length field is damaged"
            ),
        }
    }
}

/// Why a trace cannot be read (or, for [`Trace::require_complete`], cannot be replayed).
#[derive(Debug, Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The trace file.
        path: PathBuf,
        /// What reading it failed with.
        #[source]
        source: std::io::Error,
    },

    /// The file has no bytes at all.
    #[error("not a vmfleet trace: the file is empty")]
    Empty,

    /// The file's first bytes differ from [`MAGIC`] (a shorter file that matches it so far is a
    /// [`TraceError::HeaderCut`]).
    #[error("not a vmfleet trace: it starts with {found:02x?}, not the trace magic {:?}",
        String::from_utf8_lossy(&MAGIC))]
    NotATrace {
        /// The file's first bytes, at most as many as the magic has.
        found: Vec<u8>,
    },

    /// The preamble names a format version this crate does not read.
    #[error(
        "unsupported trace format version {found}: this vmfleet reads versions {OLDEST_FORMAT_VERSION} to {supported}"
    )]
    UnsupportedVersion {
        /// The preamble's version.
        found: u32,
        /// The newest one this crate reads, [`FORMAT_VERSION`] (the oldest is
        /// [`OLDEST_FORMAT_VERSION`]).
        supported: u32,
    },

    /// The file ends before its header frame is whole: nothing to show, nothing to replay.
    #[error("trace header is incomplete: the file ends at byte {offset}, {what}")]
    HeaderCut {
        /// The file's length.
        offset: u64,
        /// Where it ends: inside the preamble, before or inside the header frame.
        what: &'static str,
    },

    /// A frame is damaged (from the strict readers, or from [`Trace::require_complete`]).
    #[error("corrupt trace at byte {offset}: {problem}")]
    Corrupt {
        /// The file offset of the damaged frame, as in [`TraceEnd::Corrupt`].
        offset: u64,
        /// What is wrong with it.
        problem: Corruption,
    },

    /// The trace has no end marker: from [`Trace::require_complete`], for replay, which needs
    /// every event.
    #[error("trace was cut short at byte {offset} {}: {reason}",
        .whole_events.checked_sub(1).map_or("before any event".to_string(), |last| format!("after event #{last}")))]
    CutShort {
        /// The file offset of the first byte that is not part of a whole frame.
        offset: u64,
        /// How many events were read before it.
        whole_events: u64,
        /// Where in a frame the file ends.
        reason: Cut,
    },
}

impl TraceError {
    /// Whether the trace was cut short (the file ends early) rather than unreadable or damaged:
    /// `vmfleet` exits `incomplete` for these and `bad_input` for the others.
    pub fn is_cut_short(&self) -> bool {
        matches!(
            self,
            TraceError::CutShort { .. } | TraceError::HeaderCut { .. }
        )
    }

    /// The byte offset the error names, if it names one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            TraceError::HeaderCut { offset, .. }
            | TraceError::Corrupt { offset, .. }
            | TraceError::CutShort { offset, .. } => Some(*offset),
            TraceError::NotATrace { .. } | TraceError::Empty => Some(0),
            TraceError::UnsupportedVersion { .. } => Some(crate::format::MAGIC.len() as u64),
            TraceError::Io { .. } => None,
        }
    }
}

/// One step through the frames.
pub(crate) enum Frame<'a> {
    Eof,
    Whole { payload: &'a [u8] },
    Cut(Cut),
    Corrupt(Corruption),
}

pub(crate) fn next_frame(bytes: &[u8], pos: usize) -> Frame<'_> {
    let rest = bytes.get(pos..).unwrap_or_default();
    if rest.is_empty() {
        return Frame::Eof;
    }
    let word = |at: usize| -> Option<u32> {
        rest.get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
    };
    let Some(length) = word(0) else {
        return Frame::Cut(Cut::InFrameHeader {
            have: rest.len() as u64,
        });
    };
    if length as usize > MAX_FRAME_LEN {
        return Frame::Corrupt(Corruption::FrameTooLong { length });
    }
    let Some(stored) = word(4) else {
        return Frame::Cut(Cut::InFrameHeader {
            have: rest.len() as u64,
        });
    };
    let body = rest.get(FRAME_HEADER_LEN..).unwrap_or_default();
    let damaged_length = |fits| Frame::Corrupt(Corruption::DamagedLength { length, fits });
    let Some(payload) = body.get(..length as usize) else {
        // Past the end of the file: a cut, unless the length field is what is wrong.
        return match payload_that_fits(body, stored) {
            Some(fits) => damaged_length(fits),
            None => Frame::Cut(Cut::InPayload {
                length,
                have: body.len() as u64,
            }),
        };
    };
    let computed = crc32fast::hash(payload);
    if computed != stored {
        return match payload_that_fits(body, stored) {
            Some(fits) => damaged_length(fits),
            None => Frame::Corrupt(Corruption::BadChecksum { stored, computed }),
        };
    }
    Frame::Whole { payload }
}

/// The length of a prefix of `body` (at most [`MAX_FRAME_LEN`]) whose checksum is `stored` and
/// which is followed by the end of the file or a plausible frame: the payload a frame with a
/// damaged length field really has. Only called once reading has already stopped at a frame, so
/// its cost (one pass over the rest of the file) is paid once.
fn payload_that_fits(body: &[u8], stored: u32) -> Option<u32> {
    let limit = body.len().min(MAX_FRAME_LEN);
    let mut hasher = crc32fast::Hasher::new();
    for len in 0..=limit {
        if hasher.clone().finalize() == stored && plausible_frame_start(&body[len..]) {
            return u32::try_from(len).ok();
        }
        if let Some(byte) = body.get(len..=len) {
            hasher.update(byte);
        }
    }
    None
}

/// Whether `rest` could be what follows a whole frame: nothing, a frame header cut short, a whole
/// frame whose checksum matches, or a frame cut short inside a payload of a possible length.
fn plausible_frame_start(rest: &[u8]) -> bool {
    let word = |at: usize| {
        rest.get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
    };
    let (Some(length), Some(stored)) = (word(0), word(4)) else {
        return true;
    };
    if length as usize > MAX_FRAME_LEN {
        return false;
    }
    match rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + length as usize) {
        Some(payload) => crc32fast::hash(payload) == stored,
        None => true,
    }
}

impl Trace {
    /// Read a trace file strictly: damage anywhere is an error; a trace cut short is returned with
    /// [`TraceEnd::Truncated`] (use [`Trace::require_complete`] where every event is needed).
    pub fn open(path: impl AsRef<Path>) -> Result<Trace, TraceError> {
        Trace::strict(Trace::open_lenient(path)?)
    }

    /// Read a trace file leniently: damage after the header ends the event list with
    /// [`TraceEnd::Corrupt`] instead of failing.
    pub fn open_lenient(path: impl AsRef<Path>) -> Result<Trace, TraceError> {
        Trace::collect(TraceStream::open(path)?)
    }

    /// [`Trace::open`] on bytes in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Trace, TraceError> {
        Trace::strict(Trace::from_bytes_lenient(bytes)?)
    }

    /// A trace read leniently, read strictly: damage is an error.
    fn strict(trace: Trace) -> Result<Trace, TraceError> {
        match trace.end {
            TraceEnd::Corrupt {
                offset, problem, ..
            } => Err(TraceError::Corrupt { offset, problem }),
            _ => Ok(trace),
        }
    }

    /// [`Trace::open_lenient`] on bytes in memory.
    pub fn from_bytes_lenient(bytes: &[u8]) -> Result<Trace, TraceError> {
        Trace::collect(TraceStream::from_bytes(bytes)?)
    }

    /// Every event of `stream` and how it ends (leniently: damage is [`TraceEnd::Corrupt`]).
    pub fn collect<R: std::io::Read>(mut stream: TraceStream<R>) -> Result<Trace, TraceError> {
        let events: Vec<Event> = stream.by_ref().collect();
        let header = stream.header().clone();
        let end = stream.finish()?;
        Ok(Trace {
            header,
            events,
            end,
        })
    }

    /// The fleet control requests the trace recorded, in the order they were carried out, with
    /// their recorded replies: what a replay re-issues to its own control plane.
    pub fn control_events(&self) -> impl Iterator<Item = &crate::trace::Event> {
        self.events
            .iter()
            .filter(|e| e.stream == vcpu::Stream::Control)
    }

    /// Whether the trace was closed cleanly.
    pub fn is_complete(&self) -> bool {
        matches!(self.end, TraceEnd::Complete { .. })
    }

    /// The check replay needs: the trace ends with its end marker. Otherwise the error says where
    /// it stopped ("trace was cut short at byte N after event #M") or what is damaged.
    pub fn require_complete(&self) -> Result<(), TraceError> {
        self.end.require_complete()
    }
}

impl TraceEnd {
    /// [`Trace::require_complete`] for a trace read as a stream: `Ok` for a complete trace, else
    /// the error saying where it was cut short or what is damaged.
    pub fn require_complete(&self) -> Result<(), TraceError> {
        match self {
            TraceEnd::Complete { .. } => Ok(()),
            TraceEnd::Truncated {
                offset,
                whole_events,
                reason,
            } => Err(TraceError::CutShort {
                offset: *offset,
                whole_events: *whole_events,
                reason: reason.clone(),
            }),
            TraceEnd::Corrupt {
                offset, problem, ..
            } => Err(TraceError::Corrupt {
                offset: *offset,
                problem: problem.clone(),
            }),
        }
    }
}

impl fmt::Display for TraceEnd {
    /// One line for the footer of `trace show`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let after = |n: u64| match n.checked_sub(1) {
            Some(last) => format!("after event #{last}"),
            None => "before any event".to_string(),
        };
        match self {
            TraceEnd::Complete { events } => write!(f, "complete: {events} events"),
            TraceEnd::Truncated {
                offset,
                whole_events,
                reason,
            } => write!(
                f,
                "cut short at byte {offset} {}: {reason}",
                after(*whole_events)
            ),
            TraceEnd::Corrupt {
                offset,
                whole_events,
                problem,
            } => write!(
                f,
                "corrupt at byte {offset} {}: {problem}",
                after(*whole_events)
            ),
        }
    }
}
