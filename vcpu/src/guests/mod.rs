//! vmfleet's built-in guest programs and the protocols they report through.
//!
//! - [`x86`]: a real-mode x86 program that executes `CPUID` for every point of a probe table,
//!   for a number of passes, and reports each result through I/O ports, optionally triple-faulting
//!   on purpose after some passes; plus its memory layout and loader.
//! - [`ProbeDecoder`]: turns the exits that program produces back into a [`GuestReport`], and
//!   names every deviation from the protocol as a [`GuestProtocolError`] instead of panicking.
//! - [`arm64`]: an A64 program *generated* per CPU model (a tiny encoder in [`arm64::asm`]) that
//!   reads a list of ID registers with `MRS` and makes a list of SMCCC calls with `HVC`, reports
//!   each result through 8-byte MMIO stores (a tag, then the values), and powers off with PSCI
//!   `SYSTEM_OFF`; plus its memory layout, loader and decoder ([`arm64::Arm64Decoder`], which
//!   shares [`Step`] with the x86 decoder and names deviations as
//!   [`arm64::Arm64ProtocolError`]s).
//!
//! - [`ExitDecoder`]: what both decoders are to the runtime's run loop, which is generic over it.
//! - [`start`]: the probe guest and the default x86 model as the start workload the floor of
//!   `vmfleet bench` takes as input.
//!
//! Must not: import the runtime or the KVM backend (`runtime`, `hypervisor::kvm`); the guests use
//! the boundary's types and the CPU models only. Everything here is plain data and code bytes: it
//! compiles and is unit-tested on any host, and replays decode a recorded run's exits exactly as a
//! live run does.

pub mod arm64;
pub mod probe;
pub mod start;
pub mod x86;

pub use probe::{
    GuestProtocolError, GuestReport, MAX_DIFFERING_KEPT, PassDifference, ProbeDecoder, Step,
};

use crate::hypervisor::call::VcpuExit;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Turns a guest program's exits into its report; one per guest architecture's program
/// ([`ProbeDecoder`] for x86, [`arm64::Arm64Decoder`] for arm64). The runtime's run loop is
/// generic over it, so a new guest program needs no change there.
pub trait ExitDecoder {
    /// What the guest saw.
    type Report;
    /// Take one exit (never [`VcpuExit::Interrupted`]); `Done` when the program has finished.
    /// An error explains how the exit broke the program's protocol.
    fn feed(&mut self, exit: &VcpuExit) -> Result<Step, String>;
    /// The report of the complete passes so far.
    fn finish(self) -> Self::Report;
}

/// What a loader does with a guest program's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Write them into guest memory: a guest runs from it.
    Write,
    /// Only check that guest memory has room for every byte, failing exactly as the write
    /// would. For a VM whose guest never runs (a replayed or modelled one): nothing reads its
    /// memory, and writing would fault in pages of every such VM, whose teardown then costs a
    /// TLB shootdown each.
    Check,
}

/// Place `bytes` at guest-physical `addr` of `mem` as `placement` says; `what` names them in the
/// error. A check that finds no room writes, so that it fails with the write's own error.
pub(crate) fn place(
    mem: &GuestMemoryMmap,
    placement: Placement,
    what: &'static str,
    addr: u64,
    bytes: &[u8],
) -> Result<(), GuestError> {
    if placement == Placement::Check && mem.check_range(GuestAddress(addr), bytes.len()) {
        return Ok(());
    }
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| GuestError::Memory {
            what,
            addr,
            len: bytes.len(),
            source,
        })
}

/// A guest program could not be prepared or loaded.
#[derive(Debug, Error)]
pub enum GuestError {
    /// The probe table is larger than the guest can hold.
    #[error("the probe table has {count} points; the guest handles at most {max}")]
    TooManyPoints {
        /// Points in the table.
        count: usize,
        /// Points the guest's table area holds.
        max: usize,
    },

    /// Guest memory does not cover where the program or its table goes.
    #[error("cannot write the guest's {what} ({len} bytes at {addr:#x}): {source}")]
    Memory {
        /// What was being written (`"program"`, `"probe table"`, …).
        what: &'static str,
        /// The guest-physical address it goes to.
        addr: u64,
        /// Its length in bytes.
        len: usize,
        /// What guest memory said.
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
        /// The IDT base the fault path loads.
        base: u64,
        /// Start of the guest-memory region that covers it.
        region_start: u64,
        /// End (exclusive) of that region.
        region_end: u64,
    },

    /// A guest program reads or calls more than it can report (tag indices, program size).
    #[error("the guest program has {count} {what}; it handles at most {max}")]
    TooManySteps {
        /// What there are too many of (`"ID registers"`, `"SMCCC calls"`, …).
        what: &'static str,
        /// How many were asked for.
        count: usize,
        /// How many the program handles.
        max: usize,
    },

    /// A register the arm64 guest was asked to read cannot be read with `MRS`.
    #[error("register {register} cannot be read with MRS: {why}")]
    NotAnMrsRegister {
        /// The register as named in the request.
        register: String,
        /// Why it has no `MRS` encoding.
        why: String,
    },

    /// An SMCCC call in the arm64 guest's list would stop the program or change which vCPUs run
    /// (PSCI CPU_OFF, SYSTEM_RESET, …); the program powers off by itself at the end.
    #[error(
        "SMCCC call {index} ({name}, {function_id:#010x}) changes the power state and would not \
         return to the program; the guest powers off by itself after its last pass"
    )]
    PowerStateCall {
        /// The call's position in the list.
        index: usize,
        /// Its SMCCC function id.
        function_id: u32,
        /// Its name.
        name: &'static str,
    },

    /// The generated arm64 program does not fit in guest memory.
    #[error("the arm64 guest program is {len} bytes; at most {max} fit")]
    ProgramTooLarge {
        /// The program's size in bytes.
        len: usize,
        /// The bytes guest memory has for it.
        max: u64,
    },

    /// A branch in the generated arm64 program is out of range (a bug in the generator).
    #[error("cannot assemble the arm64 guest program: {0}")]
    Assembly(#[from] arm64::asm::AsmError),

    /// Guest memory covers the arm64 guest's report window, so its reports would land in memory
    /// instead of exiting to the host.
    #[error(
        "the arm64 guest reports through MMIO at {base:#x}, which must not be guest memory, but \
         guest memory {region_start:#x}..{region_end:#x} covers it"
    )]
    ReportInMemory {
        /// The report window's base address.
        base: u64,
        /// Start of the guest-memory region that covers it.
        region_start: u64,
        /// End (exclusive) of that region.
        region_end: u64,
    },
}
