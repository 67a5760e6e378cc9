//! Property tests: real fixture traces (recorded on KVM), mutated at random (bit flips,
//! truncation, inserted and deleted bytes, splices of two traces), must read back as a trace or a
//! clean error from both readers, never a panic, and every error and every early end must name a
//! byte offset inside the file. A cut must never read as damage, and a single flipped bit never
//! as a cut.

use proptest::prelude::*;
use recorder::{Trace, TraceEnd, TraceError};
use std::path::Path;
use std::sync::LazyLock;

/// Small fixtures of three kinds (a single VM, the lock, hidden features), read once.
static FIXTURES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    ["single.trace", "lock.trace", "hidden.trace"]
        .iter()
        .map(|name| {
            std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("fixtures/{name}: {e}"))
        })
        .collect()
});

/// Each fixture, read as it is: the baseline the mutations are compared with.
static ORIGINALS: LazyLock<Vec<Trace>> = LazyLock::new(|| {
    FIXTURES
        .iter()
        .map(|bytes| Trace::from_bytes(bytes).expect("a fixture reads back"))
        .collect()
});

/// One change to a file. Positions are fractions of the file's length (0..=1 million), so that
/// they stay inside whatever the earlier mutations left.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        at: u32,
        bit: u8,
    },
    Truncate {
        at: u32,
    },
    Insert {
        at: u32,
        bytes: Vec<u8>,
    },
    Delete {
        at: u32,
        len: usize,
    },
    /// The file up to `at`, then fixture `other` from `from` on.
    Splice {
        at: u32,
        other: usize,
        from: u32,
    },
}

const SCALE: u32 = 1_000_000;

fn position(len: usize, at: u32) -> usize {
    (len as u64 * u64::from(at) / u64::from(SCALE)) as usize
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            Mutation::FlipBit { at, bit } => {
                if !bytes.is_empty() {
                    let i = position(bytes.len() - 1, *at);
                    bytes[i] ^= 1 << bit;
                }
            }
            Mutation::Truncate { at } => bytes.truncate(position(bytes.len(), *at)),
            Mutation::Insert { at, bytes: new } => {
                let i = position(bytes.len(), *at);
                bytes.splice(i..i, new.iter().copied());
            }
            Mutation::Delete { at, len } => {
                let i = position(bytes.len(), *at);
                let end = (i + len).min(bytes.len());
                bytes.drain(i..end);
            }
            Mutation::Splice { at, other, from } => {
                let other = &FIXTURES[*other % FIXTURES.len()];
                bytes.truncate(position(bytes.len(), *at));
                bytes.extend_from_slice(&other[position(other.len(), *from)..]);
            }
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0..=SCALE, 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (0..=SCALE).prop_map(|at| Mutation::Truncate { at }),
        (0..=SCALE, prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (0..=SCALE, 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (0..=SCALE, 0usize..3, 0..=SCALE).prop_map(|(at, other, from)| Mutation::Splice {
            at,
            other,
            from
        }),
    ]
}

/// What must hold of any bytes whatever: a clean error naming an offset inside the file, or a
/// trace whose events are numbered in order and whose end, if early, names such an offset. The
/// strict and lenient readers agree up to the damage.
fn check_reads_cleanly(bytes: &[u8]) -> Result<(), TestCaseError> {
    let len = bytes.len() as u64;
    let strict = Trace::from_bytes(bytes);
    let lenient = Trace::from_bytes_lenient(bytes);
    for result in [&strict, &lenient] {
        match result {
            Err(e) => {
                let offset = e.offset();
                prop_assert!(
                    offset.is_some_and(|o| o <= len),
                    "{e} names no offset inside the {len}-byte file"
                );
                if matches!(
                    e,
                    TraceError::Corrupt { .. }
                        | TraceError::CutShort { .. }
                        | TraceError::HeaderCut { .. }
                ) {
                    prop_assert!(e.to_string().contains("byte"), "{e}");
                }
            }
            Ok(trace) => {
                for (i, event) in trace.events.iter().enumerate() {
                    prop_assert_eq!(event.seq, i as u64);
                }
                match &trace.end {
                    TraceEnd::Complete { events } => {
                        prop_assert_eq!(*events, trace.events.len() as u64)
                    }
                    TraceEnd::Truncated {
                        offset,
                        whole_events,
                        ..
                    }
                    | TraceEnd::Corrupt {
                        offset,
                        whole_events,
                        ..
                    } => {
                        prop_assert!(*offset <= len, "{} in a {len}-byte file", trace.end);
                        prop_assert_eq!(*whole_events, trace.events.len() as u64);
                        let e = trace.require_complete().unwrap_err();
                        prop_assert_eq!(e.offset(), Some(*offset));
                        prop_assert!(e.to_string().contains(&format!("byte {offset}")), "{e}");
                    }
                }
            }
        }
    }
    match (&strict, &lenient) {
        (Ok(s), Ok(l)) => prop_assert_eq!(s, l),
        (Err(TraceError::Corrupt { offset, .. }), Ok(l)) => {
            prop_assert!(
                matches!(&l.end, TraceEnd::Corrupt { offset: o, .. } if o == offset),
                "strict: corrupt at {offset}, lenient: {}",
                l.end
            );
        }
        (Err(s), Err(l)) => prop_assert_eq!(s.to_string(), l.to_string()),
        (Ok(s), Err(l)) => prop_assert!(false, "strict read {} but lenient failed: {l}", s.end),
        (Err(s), Ok(l)) => prop_assert!(false, "strict failed ({s}) but lenient read {}", l.end),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn mutated_traces_read_cleanly(
        fixture in 0usize..3,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = FIXTURES[fixture].clone();
        for m in &mutations {
            m.apply(&mut bytes);
        }
        check_reads_cleanly(&bytes)?;
    }

    /// A cut at any byte reads back to the last whole event before it and is never damage.
    #[test]
    fn a_cut_is_never_corruption(fixture in 0usize..3, at in 0..=SCALE) {
        let bytes = &FIXTURES[fixture];
        let cut = &bytes[..position(bytes.len(), at)];
        check_reads_cleanly(cut)?;
        let original = &ORIGINALS[fixture];
        match Trace::from_bytes_lenient(cut) {
            Ok(trace) => {
                prop_assert!(original.events.starts_with(&trace.events));
                prop_assert!(
                    !matches!(trace.end, TraceEnd::Corrupt { .. }),
                    "cut at {}: {}", cut.len(), trace.end
                );
                if cut.len() < bytes.len() {
                    prop_assert!(!trace.is_complete());
                }
            }
            Err(e) => prop_assert!(
                e.is_cut_short() || matches!(e, TraceError::Empty),
                "cut at {}: {e}", cut.len()
            ),
        }
    }

    /// One flipped bit anywhere is damage (or a foreign file), never a trace cut short, and
    /// never goes unnoticed.
    #[test]
    fn a_flipped_bit_is_never_a_cut(fixture in 0usize..3, at in 0..=SCALE, bit in 0u8..8) {
        let mut bytes = FIXTURES[fixture].clone();
        Mutation::FlipBit { at, bit }.apply(&mut bytes);
        check_reads_cleanly(&bytes)?;
        match Trace::from_bytes(&bytes) {
            Err(e) => prop_assert!(!e.is_cut_short(), "{e}"),
            Ok(trace) => prop_assert!(false, "a flipped bit read as {}", trace.end),
        }
    }
}
