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
    GuestProtocolError, GuestReport, GuestSeen, MAX_DIFFERING_KEPT, PassDifference, ProbeDecoder,
    Step,
};

use crate::hypervisor::call::VcpuExit;
use thiserror::Error;

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

    /// A guest program reads or calls more than it can report (tag indices, program size).
    #[error("the guest program has {count} {what}; it handles at most {max}")]
    TooManySteps {
        what: &'static str,
        count: usize,
        max: usize,
    },

    /// A register the arm64 guest was asked to read cannot be read with `MRS`.
    #[error("register {register} cannot be read with MRS: {why}")]
    NotAnMrsRegister { register: String, why: String },

    /// An SMCCC call in the arm64 guest's list would stop the program or change which vCPUs run
    /// (PSCI CPU_OFF, SYSTEM_RESET, …); the program powers off by itself at the end.
    #[error(
        "SMCCC call {index} ({name}, {function_id:#010x}) changes the power state and would not \
         return to the program; the guest powers off by itself after its last pass"
    )]
    PowerStateCall {
        index: usize,
        function_id: u32,
        name: &'static str,
    },

    /// The generated arm64 program does not fit in guest memory.
    #[error("the arm64 guest program is {len} bytes; at most {max} fit")]
    ProgramTooLarge { len: usize, max: u64 },

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
        base: u64,
        region_start: u64,
        region_end: u64,
    },
}
