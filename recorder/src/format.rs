//! The trace file layout, shared by the writer and the reader.
//!
//! ```text
//! offset 0   magic           8 bytes  b"VMFLTRC\0"
//! offset 8   format version  u32 LE   FORMAT_VERSION
//! offset 12  frames, each:   u32 LE payload length (<= MAX_FRAME_LEN)
//!                            u32 LE crc32 (IEEE) of the payload
//!                            payload: bincode 2 (serde, standard config)
//! frame 0:    TraceHeader
//! frame 1..n: Record::Event(Event), seq 0..n-1 in order
//! last:       Record::End { events: n }   (only on a clean close)
//! ```
//!
//! Versions: format 1 is the first; format 2 added one field at the end of the header's host
//! facts (`HostFingerprint::emulated_cpuid`) and nothing else, so a format-1 trace is read with
//! its own header shape and every event frame reads alike (new call variants are appended,
//! never inserted, so format-1 event bytes mean what they meant). Format 3 keeps format 2's
//! preamble and header frame; after it, every frame is a compressed block of events
//! ([`crate::block`]: payloads stored once per block, times as deltas, sequence numbers implied,
//! zstd), the end record inside the last block. Format 4 adds one field at the end of the
//! header (`TraceHeader::exit_budgets`: the recording applied `record_exits`) and two records
//! inside blocks: a stream's consecutive `RUN`s stored as one batch, and the batches' exit
//! sequences once per block. Formats 1 to 3 still read.
//!
//! The version sits outside any frame so that a reader can refuse a newer layout before trying to
//! parse it. The `End` frame lets a reader tell a complete trace from one cut exactly at a frame
//! boundary.
//!
//! What the frames hold (`TraceHeader`, `Record`) is the data model's, [`crate::trace`]; this module
//! knows only bytes, so the data model may name the format's version and not the other way round.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::Serialize;

/// The first eight bytes of every trace.
pub const MAGIC: [u8; 8] = *b"VMFLTRC\0";

/// The layout this crate writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 4;

/// The first layout whose events are in compressed blocks ([`crate::block`]).
pub const BLOCK_FORMAT_VERSION: u32 = 3;

/// The oldest layout this crate reads (its header has no emulated CPUID table).
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// Bytes before the first frame: magic and format version.
pub const PREAMBLE_LEN: usize = MAGIC.len() + 4;

/// Bytes before a frame's payload: length and checksum.
pub const FRAME_HEADER_LEN: usize = 8;

/// The largest payload a frame may have; a larger length field is corruption, never an
/// allocation. (The largest real payload, a 256-entry CPUID table, is about 8 KiB.)
pub const MAX_FRAME_LEN: usize = 16 << 20;

type BincodeConfig = Configuration<LittleEndian, Varint, Limit<MAX_FRAME_LEN>>;

/// bincode's standard configuration, with a decoding limit so that no length prefix inside a
/// payload can make the decoder allocate more than a frame may hold.
pub(crate) fn bincode_config() -> BincodeConfig {
    bincode::config::standard().with_limit::<MAX_FRAME_LEN>()
}

/// The preamble: magic and version.
pub(crate) fn preamble() -> [u8; PREAMBLE_LEN] {
    let mut out = [0u8; PREAMBLE_LEN];
    out[..MAGIC.len()].copy_from_slice(&MAGIC);
    out[MAGIC.len()..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out
}

/// Why a value could not be turned into a frame.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// bincode refused the value.
    #[error("cannot encode: {0}")]
    Bincode(#[from] bincode::error::EncodeError),
    /// The payload is larger than [`MAX_FRAME_LEN`], which no reader would accept.
    #[error("a {len}-byte frame exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge {
        /// The payload's length in bytes.
        len: usize,
    },
}

/// One whole frame (length, checksum, payload) for `value`.
pub(crate) fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let payload = bincode::serde::encode_to_vec(value, bincode_config())?;
    encode_raw_frame(&payload)
}

/// One whole frame (length, checksum, payload) around bytes already encoded.
pub(crate) fn encode_raw_frame(payload: &[u8]) -> Result<Vec<u8>, EncodeError> {
    if payload.len() > MAX_FRAME_LEN {
        return Err(EncodeError::TooLarge { len: payload.len() });
    }
    let len =
        u32::try_from(payload.len()).map_err(|_| EncodeError::TooLarge { len: payload.len() })?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// Decode a whole payload (every byte must belong to the value).
pub(crate) fn decode_payload<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    match bincode::serde::decode_from_slice::<T, _>(payload, bincode_config()) {
        Ok((value, used)) if used == payload.len() => Ok(value),
        Ok((_, used)) => Err(format!(
            "the payload has {} bytes after its value",
            payload.len() - used
        )),
        Err(e) => Err(format!("cannot decode the payload: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::bincode_config;
    use vcpu::hypervisor::call::ExitData;

    /// An exit's bytes are kept inline now; traces written when they were a `Vec<u8>` must read
    /// the same, and new traces must be what old readers read.
    #[test]
    fn exit_bytes_encode_exactly_as_a_vec_did() {
        for bytes in [
            vec![],
            vec![0x41],
            vec![1, 2, 3, 4],
            (0..40).collect::<Vec<u8>>(),
        ] {
            let inline = ExitData::from_slice(&bytes);
            let old = bincode::serde::encode_to_vec(&bytes, bincode_config()).unwrap();
            let new = bincode::serde::encode_to_vec(&inline, bincode_config()).unwrap();
            assert_eq!(old, new, "{} bytes", bytes.len());
            let (back, _): (ExitData, usize) =
                bincode::serde::decode_from_slice(&old, bincode_config()).unwrap();
            assert_eq!(back.as_slice(), bytes.as_slice());
        }
    }
}
