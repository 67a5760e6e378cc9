//! vmfleet's built-in guest programs and the protocol they report through.
//!
//! - [`x86`]: a real-mode x86 program that executes `CPUID` for every point of a probe table,
//!   for a number of passes, and reports each result through I/O ports, optionally triple-faulting
//!   on purpose after some passes; plus its memory layout and loader.
//! - [`ProbeDecoder`]: turns the exits that program produces back into a [`GuestReport`], and
//!   names every deviation from the protocol as a [`GuestProtocolError`] instead of panicking.
//!
//! Everything here is plain data and code bytes: it compiles and is unit-tested on any host, and
//! replays decode a recorded run's exits exactly as a live run does.

pub mod probe;
pub mod x86;

pub use probe::{
    GuestProtocolError, GuestReport, GuestSeen, MAX_DIFFERING_KEPT, PassDifference, ProbeDecoder,
    Step,
};

use thiserror::Error;

/// A guest program could not be prepared or loaded.
#[derive(Debug, Error)]
pub enum GuestError {
    /// The probe table is larger than the guest can hold.
    #[error("the probe table has {count} points; the guest handles at most {max}")]
    TooManyPoints { count: usize, max: usize },

    /// Guest memory does not cover where the program or its table goes.
    #[error("cannot write the guest's {what} ({len} bytes at {addr:#x}): {source}")]
    Memory {
        what: &'static str,
        addr: u64,
        len: usize,
        #[source]
        source: vm_memory::GuestMemoryError,
    },

    /// The program is to fault on purpose, but guest memory covers the vector table its fault
    /// path relies on being absent (see [`x86`]'s module docs).
    #[error(
        "the guest cannot fault on purpose: its fault path points the IDT at {base:#x}, which \
         must not be guest memory, but guest memory {region_start:#x}..{region_end:#x} covers it; \
         give the VM less memory (below {base:#x} bytes)"
    )]
    FaultIdtInMemory {
        base: u64,
        region_start: u64,
        region_end: u64,
    },
}
