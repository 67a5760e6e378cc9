//! The built-in arm64 guest: an A64 program, generated per CPU model, that reads a list of system
//! (ID) registers with `MRS` and makes a list of SMCCC calls with `HVC #0`, reports every result
//! through MMIO stores, and then powers the VM off with PSCI `SYSTEM_OFF`.
//!
//! Unlike the x86 guest (one fixed program plus a data table) the arm64 program is *generated*:
//! `MRS` names its register in the instruction, so the list of registers is code, and the calls'
//! function ids and arguments are immediates as well. The program never reads memory, keeps its
//! state in registers, and can be run by several vCPUs at once.
//!
//! # Memory layout
//!
//! arm64 KVM imposes no memory map beyond the VM's IPA size (40 bits by default, 32 at least);
//! this one follows QEMU's `virt` board, with RAM at 1 GiB and devices below it, and stays below
//! 4 GiB so that it fits any IPA size.
//!
//! | guest-physical | contents |
//! |---|---|
//! | [`REPORT_BASE`] `0x1000_0000` .. `+0x1000` | the report window: **not** guest memory, so every store there is an MMIO exit ([`load`] checks) |
//! | [`MEMORY_BASE`] `0x4000_0000` .. `+`[`MEMORY_SIZE`] | guest memory (64 KiB at least; any host page size divides it) |
//! | [`VECTORS_ADDR`] = [`MEMORY_BASE`] | the exception vector table, 16 entries of 0x80 bytes (`VBAR_EL1` needs 2 KiB alignment) |
//! | [`ENTRY`] = [`VECTORS_ADDR`] + 0x800 | the program proper; the vCPU starts here |
//!
//! The vCPU starts at EL1 with the MMU off (`KVM_ARM_VCPU_INIT`'s reset state, PSTATE = EL1h
//! with DAIF masked, see [`crate::hypervisor::call::VcpuCall::SetBootState`]). With the MMU off every data
//! access is to Device memory, which must be aligned: the program only makes aligned 64-bit
//! stores, `STR Xt, [X20, #0 or #8]`. That form matters for another reason: a stage-2 abort on it
//! carries a valid instruction syndrome (ISV = 1), which is what lets KVM turn it into a
//! `KVM_EXIT_MMIO`; pair stores or writeback forms would not.
//!
//! # Report protocol
//!
//! Two 8-byte MMIO addresses: [`REPORT_TAG`] (`REPORT_BASE + 0`) receives *tags*,
//! [`REPORT_VALUE`] (`REPORT_BASE + 8`) receives the *values* that follow a tag. Every store is
//! 8 bytes, little endian. A tag ([`Tag`]) is `0xa641` in bits 63..48, then the kind (bits
//! 47..44), an index (43..32) and a detail (31..0); the tag is stored *before* the instruction
//! it announces runs, so a fault in that instruction is attributed to the right step.
//!
//! For each pass `p` (0-based, counted in 64 bits):
//! 1. `PASS_BEGIN` tag, value `p`;
//! 2. for the `i`-th ID register: tag (kind 2, index `i`, detail = the register's 16-bit
//!    encoding), `MRS`, value = what it read;
//! 3. for the `i`-th SMCCC call: tag (kind 3, index `i`, detail = function id), `HVC #0` with
//!    x0 = function id and x1..x3 = the arguments (zero when unused), values x0, x1, x2, x3;
//! 4. `PASS_END` tag, value `p`.
//!
//! With `repeats` = 0 the passes never end. Otherwise, after `repeats` passes, the program ends
//! as [`Finish`] says:
//! - [`Finish::PowerOff`]: `HVC` of PSCI `SYSTEM_OFF`, which KVM turns into
//!   `KVM_EXIT_SYSTEM_EVENT` of type `KVM_SYSTEM_EVENT_SHUTDOWN` ([`SYSTEM_EVENT_SHUTDOWN`]).
//!   Should the call return (a filter denied it), the program reports an `OFF_RETURNED` tag with
//!   the returned x0, then parks;
//! - [`Finish::Park`]: it parks right after the last `PASS_END`.
//!
//! *Parking* is `WFI` in a loop: with every interrupt masked KVM blocks the vCPU inside
//! `KVM_RUN`, at no CPU cost, until the host kicks the thread.
//!
//! If anything raises an exception (an `MRS` of a register the vCPU does not implement is
//! UNDEFINED, for one), the vector table reports an `EXCEPTION` tag (index = vector) with values
//! `ESR_EL1`, `ELR_EL1`, `FAR_EL1`, and parks: a guest that would otherwise loop silently through
//! an absent vector table says what went wrong instead.
//!
//! Registers: x0..x3 carry `MRS` results and SMCCC arguments/results, x9 is scratch, x19 the pass
//! number, x20 the report base, x21 the passes left. x18..x30 are preserved by every SMCCC
//! version, so `HVC` cannot disturb the program's own state.
//!
//! # Several vCPUs
//!
//! `SYSTEM_OFF` stops the whole VM: KVM marks *every* vCPU stopped and makes it sleep in
//! `KVM_RUN`, and only the caller gets the `SYSTEM_EVENT` exit. In a VM with several vCPUs the
//! first vCPU to power off would freeze the others mid-pass, so such VMs should run
//! [`Finish::Park`] (each vCPU's report completes at its last `PASS_END`) and end the VM from the
//! host.
//!
//! The exit sequence is decoded by [`decoder::Arm64Decoder`].

pub mod asm;
pub mod decoder;
pub mod protocol;
pub mod smccc;

use crate::model::arm64::sysreg::SysReg;
pub use decoder::{Arm64Decoder, Arm64Difference, Arm64GuestReport, Arm64ProtocolError, IdRegSeen};
pub use protocol::{Tag, TagKind};
pub use smccc::{SmcccCall, SmcccResult, SmcccStatus};

use crate::guests::{GuestError, Placement, place};
use asm::{
    Asm, ELR_EL1, ESR_EL1, FAR_EL1, ISB, SysRegOperand, UDF, VBAR_EL1, WFI, X0, X1, X2, X3, X9,
    X19, X20, X21, add_imm, hvc, movz, mrs, msr, str_imm, sub_imm,
};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Where guest memory starts.
pub const MEMORY_BASE: u64 = 0x4000_0000;
/// The guest memory the program needs from [`MEMORY_BASE`] (more is fine).
pub const MEMORY_SIZE: u64 = 0x1_0000;
/// The exception vector table (2 KiB aligned, as `VBAR_EL1` requires).
pub const VECTORS_ADDR: u64 = MEMORY_BASE;
/// Size of the vector table: 16 entries of 0x80 bytes.
pub const VECTORS_SIZE: u64 = 0x800;
/// Where the program is loaded: the vector table, then the program proper.
pub const CODE_ADDR: u64 = VECTORS_ADDR;
/// The entry point (the first instruction after the vector table).
pub const ENTRY: u64 = VECTORS_ADDR + VECTORS_SIZE;
/// The most bytes the program may take ([`MEMORY_SIZE`]); [`MAX_ID_REGS`] and [`MAX_CALLS`] keep
/// it well below.
pub const CODE_MAX: u64 = MEMORY_SIZE;

/// The report window: [`REPORT_SIZE`] bytes that must not be guest memory.
pub const REPORT_BASE: u64 = 0x1000_0000;
/// The size of the report window [`load`] keeps free of guest memory.
pub const REPORT_SIZE: u64 = 0x1000;
/// Tags are stored here.
pub const REPORT_TAG: u64 = REPORT_BASE;
/// Values are stored here.
pub const REPORT_VALUE: u64 = REPORT_BASE + 8;

/// `KVM_SYSTEM_EVENT_SHUTDOWN`: the `SYSTEM_EVENT` type of PSCI `SYSTEM_OFF`.
pub const SYSTEM_EVENT_SHUTDOWN: u32 = 1;

/// The most ID registers a program reads per pass.
pub const MAX_ID_REGS: usize = 256;
/// The most SMCCC calls a program makes per pass.
pub const MAX_CALLS: usize = 64;

const _: () = assert!(VECTORS_ADDR % 0x800 == 0);
// The report window is outside the program's memory, and both the tag and the value address are
// inside the window.
const _: () = assert!(REPORT_BASE + REPORT_SIZE <= MEMORY_BASE);
const _: () = assert!(REPORT_VALUE + 8 <= REPORT_BASE + REPORT_SIZE);
// Everything below 4 GiB: any IPA size KVM offers (32 bits at least) reaches it.
const _: () = assert!(MEMORY_BASE + MEMORY_SIZE <= 1 << 32);
const _: () = assert!(MAX_ID_REGS <= protocol::MAX_TAG_INDEX as usize + 1);
const _: () = assert!(MAX_CALLS <= protocol::MAX_TAG_INDEX as usize + 1);

/// Words per vector-table entry (0x80 bytes).
const VECTOR_WORDS: usize = 0x80 / 4;

/// How the program ends after its last pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Finish {
    /// PSCI `SYSTEM_OFF`: the VM exits with `SYSTEM_EVENT` (for VMs with one vCPU; see the
    /// module docs).
    #[default]
    PowerOff,
    /// Park in `WFI` after the last `PASS_END`; the host ends the VM.
    Park,
}

/// What the arm64 guest is to do: read `id_regs` and make `calls`, `repeats` times (0 =
/// forever), then [`Finish`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Arm64GuestProgram<'a> {
    /// The registers to read with `MRS`, in order; at most [`MAX_ID_REGS`], each with op0 2 or 3
    /// (the registers of [`crate::model::arm64::catalog`] all are).
    pub id_regs: &'a [SysReg],
    /// The SMCCC calls to make with `HVC #0`, in order (after the registers); at most
    /// [`MAX_CALLS`], and none that changes the power state.
    pub calls: &'a [SmcccCall],
    /// How many passes; 0 = repeat forever.
    pub repeats: u32,
    /// What to do after the last pass.
    pub finish: Finish,
}

impl Arm64GuestProgram<'_> {
    /// How many complete passes the guest reports; `None` when it runs forever.
    pub fn passes(&self) -> Option<u32> {
        (self.repeats != 0).then_some(self.repeats)
    }

    /// Check the lists: their lengths, that `MRS` can read every register (see
    /// [`GuestError::NotAnMrsRegister`]), and that no call would stop the program (see
    /// [`GuestError::PowerStateCall`]).
    pub fn validate(&self) -> Result<(), GuestError> {
        for (what, count, max) in [
            ("ID registers", self.id_regs.len(), MAX_ID_REGS),
            ("SMCCC calls", self.calls.len(), MAX_CALLS),
        ] {
            if count > max {
                return Err(GuestError::TooManySteps { what, count, max });
            }
        }
        for &reg in self.id_regs {
            mrs_operand(reg)?;
        }
        for (index, call) in self.calls.iter().enumerate() {
            if let Some(name) = call.changes_power_state() {
                return Err(GuestError::PowerStateCall {
                    index,
                    function_id: call.function_id,
                    name,
                });
            }
        }
        Ok(())
    }
}

/// The `MRS` operand of `reg`, or why `MRS` cannot read it: op0 must be 2 (debug) or 3
/// (everything else), since the instruction has a single bit for op0.
fn mrs_operand(reg: SysReg) -> Result<SysRegOperand, GuestError> {
    SysRegOperand::of(reg).ok_or_else(|| GuestError::NotAnMrsRegister {
        register: reg.to_string(),
        why: format!(
            "op0 {} encodes instructions, not registers; MRS reads op0 2 or 3",
            reg.op0()
        ),
    })
}

/// Whether `MRS` can read `reg` (what [`Arm64GuestProgram::validate`] requires of every
/// register), so that only such registers are named in reports.
pub(crate) fn readable_by_mrs(reg: SysReg) -> bool {
    SysRegOperand::of(reg).is_some()
}

/// Generate the program (vector table first, entered at [`ENTRY`]) as little-endian bytes, to be
/// loaded at [`CODE_ADDR`]. The same program always gives the same bytes.
pub fn program(program: &Arm64GuestProgram<'_>) -> Result<Vec<u8>, GuestError> {
    program.validate()?;
    let mut asm = Asm::new();
    vector_table(&mut asm)?;
    main(&mut asm, program)?;
    let bytes = asm.into_bytes();
    if bytes.len() as u64 > CODE_MAX {
        return Err(GuestError::ProgramTooLarge {
            len: bytes.len(),
            max: CODE_MAX,
        });
    }
    Ok(bytes)
}

/// `STR Xt` of a tag to [`REPORT_TAG`] (through x9).
fn tag(asm: &mut Asm, tag: Tag) {
    asm.mov_imm(X9, tag.encode());
    asm.emit(str_imm(X9, X20, 0));
}

/// `STR Xt` of a value to [`REPORT_VALUE`].
fn value(asm: &mut Asm, reg: asm::Reg) {
    asm.emit(str_imm(reg, X20, (REPORT_VALUE - REPORT_BASE) as u16));
}

/// `WFI` forever.
fn park(asm: &mut Asm) -> Result<(), GuestError> {
    let wait = asm.here();
    asm.emit(WFI);
    asm.b_to(wait)?;
    Ok(())
}

/// 16 entries, each: report `EXCEPTION` (index = vector) with ESR, ELR and FAR, then park. Every
/// entry reloads x20, because an exception may come before the program has set it.
fn vector_table(asm: &mut Asm) -> Result<(), GuestError> {
    for vector in 0..protocol::VECTORS.len() {
        asm.pad_to(vector * VECTOR_WORDS, UDF);
        asm.mov_imm(X20, REPORT_BASE);
        tag(asm, Tag::exception(vector as u16));
        for reg in [ESR_EL1, ELR_EL1, FAR_EL1] {
            asm.emit(mrs(X9, reg));
            value(asm, X9);
        }
        park(asm)?;
    }
    asm.pad_to(VECTORS_SIZE as usize / 4, UDF);
    Ok(())
}

/// The program proper (see the module docs).
fn main(asm: &mut Asm, program: &Arm64GuestProgram<'_>) -> Result<(), GuestError> {
    asm.mov_imm(X9, VECTORS_ADDR);
    asm.emit(msr(VBAR_EL1, X9));
    asm.emit(ISB);
    asm.mov_imm(X20, REPORT_BASE);
    asm.emit(movz(X19, 0, 0));
    if program.repeats != 0 {
        asm.mov_imm(X21, program.repeats.into());
    }

    let pass_loop = asm.here();
    tag(asm, Tag::PASS_BEGIN);
    value(asm, X19);
    for (index, reg) in program.id_regs.iter().enumerate() {
        tag(asm, Tag::id_reg(index as u16, reg.encoding()));
        asm.emit(mrs(X0, mrs_operand(*reg)?));
        value(asm, X0);
    }
    for (index, call) in program.calls.iter().enumerate() {
        tag(asm, Tag::call(index as u16, call.function_id));
        asm.mov_imm(X0, call.function_id.into());
        for (reg, &arg) in [X1, X2, X3].into_iter().zip(&call.args) {
            asm.mov_imm(reg, arg);
        }
        asm.emit(hvc(0));
        for reg in [X0, X1, X2, X3] {
            value(asm, reg);
        }
    }
    tag(asm, Tag::PASS_END);
    value(asm, X19);
    asm.emit(add_imm(X19, X19, 1));

    if program.repeats == 0 {
        asm.b_to(pass_loop)?;
        return Ok(());
    }
    asm.emit(sub_imm(X21, X21, 1));
    asm.cbnz_to(X21, pass_loop)?;
    if program.finish == Finish::PowerOff {
        asm.mov_imm(X0, crate::model::arm64::smccc::PSCI_SYSTEM_OFF.into());
        asm.emit(hvc(0));
        tag(asm, Tag::OFF_RETURNED);
        value(asm, X0);
    }
    park(asm)
}

/// Generate `program` and write it at [`CODE_ADDR`] into `mem`, which must cover
/// [`MEMORY_BASE`]`..`+ the program's length ([`MEMORY_SIZE`] always suffices) and must leave
/// the report window ([`REPORT_BASE`], [`REPORT_SIZE`] bytes) uncovered, or the reports would
/// land in memory instead of exiting ([`GuestError::ReportInMemory`]). With
/// [`Placement::Check`], nothing is written, and the answer is the same.
pub fn load(
    mem: &GuestMemoryMmap,
    program: &Arm64GuestProgram<'_>,
    placement: Placement,
) -> Result<(), GuestError> {
    let window = REPORT_BASE..REPORT_BASE + REPORT_SIZE;
    if let Some(region) = mem.iter().find(|region| {
        let start = region.start_addr().0;
        start < window.end && window.start < start.saturating_add(region.len())
    }) {
        return Err(GuestError::ReportInMemory {
            base: REPORT_BASE,
            region_start: region.start_addr().0,
            region_end: region.start_addr().0.saturating_add(region.len()),
        });
    }
    let code = self::program(program)?;
    place(mem, placement, "arm64 program", CODE_ADDR, &code)
}

#[cfg(test)]
mod tests;
