//! A tiny A64 encoder: exactly the instructions the built-in arm64 guest needs, each a pure
//! function from operands to its 32-bit instruction word, plus [`Asm`], a buffer that emits them
//! and resolves the one kind of branch the program uses (backwards, to a position already
//! emitted).
//!
//! Encodings are from the Arm ARM (DDI 0487), section C6 "A64 Base Instruction Descriptions"; the
//! unit tests check every encoder against words produced by GNU `as` for aarch64. Registers are
//! numbered 0..=30 (`X0`..`X30`); number 31 means XZR or SP depending on the instruction, which
//! is why the encoders that accept it say which.
//!
//! Operand values are the caller's responsibility only in the sense that they are masked to their
//! field widths (a wrong operand can produce a wrong instruction, never a panic); [`Asm`] checks
//! branch ranges and reports them as [`AsmError`].

use crate::model::arm64::sysreg::SysReg;
use thiserror::Error;

/// A general-purpose register, `X0`..`X30` (31 is XZR or SP, depending on the instruction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg(u8);

impl Reg {
    /// `Xn` for `n` in `0..=31`; other numbers are masked to 5 bits.
    pub const fn x(n: u8) -> Reg {
        Reg(n & 0x1f)
    }

    /// The 5-bit register field.
    const fn field(self) -> u32 {
        self.0 as u32
    }
}

/// `X0`: the first SMCCC argument and result, and where `MRS` results land.
pub const X0: Reg = Reg::x(0);
/// `X1`: SMCCC argument/result 1.
pub const X1: Reg = Reg::x(1);
/// `X2`: SMCCC argument/result 2.
pub const X2: Reg = Reg::x(2);
/// `X3`: SMCCC argument/result 3.
pub const X3: Reg = Reg::x(3);
/// `X9`: scratch (tags, addresses).
pub const X9: Reg = Reg::x(9);
/// `X19`: the pass number. X18..X30 are preserved by every SMCCC version, so `HVC` cannot
/// clobber the program's state.
pub const X19: Reg = Reg::x(19);
/// `X20`: the report window's base address.
pub const X20: Reg = Reg::x(20);
/// `X21`: passes still to run.
pub const X21: Reg = Reg::x(21);
/// Register number 31 as the zero register (in `ORR`).
pub const XZR: Reg = Reg::x(31);

/// A system register operand of `MRS`/`MSR`: `S<op0>_<op1>_C<CRn>_C<CRm>_<op2>`.
///
/// Only `op0` 2 and 3 are encodable (the instruction has a single `o0` bit, op0 = 2 + o0); this
/// type stores the encoding's fields already masked to their widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegOperand {
    /// 2 or 3 (other values are encoded as `2 + (op0 & 1)`).
    pub op0: u8,
    /// 0..=7.
    pub op1: u8,
    /// 0..=15.
    pub crn: u8,
    /// 0..=15.
    pub crm: u8,
    /// 0..=7.
    pub op2: u8,
}

impl SysRegOperand {
    /// The operand that names `reg`, if `MRS`/`MSR` can: op0 0 and 1 encode instructions, not
    /// registers, and the instruction's single `o0` bit cannot express them.
    pub const fn of(reg: SysReg) -> Option<SysRegOperand> {
        if reg.op0() < 2 {
            return None;
        }
        Some(sysreg(
            reg.op0(),
            reg.op1(),
            reg.crn(),
            reg.crm(),
            reg.op2(),
        ))
    }

    /// Bits 20..5 of `MRS`/`MSR`: `o0:op1:CRn:CRm:op2` (bit 19 is `o0`, op0 = 2 + o0).
    const fn field(self) -> u32 {
        ((self.op0 as u32 & 1) << 19)
            | ((self.op1 as u32 & 7) << 16)
            | ((self.crn as u32 & 0xf) << 12)
            | ((self.crm as u32 & 0xf) << 8)
            | ((self.op2 as u32 & 7) << 5)
    }
}

/// `ESR_EL1` (3, 0, 5, 2, 0): the syndrome of the exception being handled.
pub const ESR_EL1: SysRegOperand = sysreg(3, 0, 5, 2, 0);
/// `ELR_EL1` (3, 0, 4, 0, 1): where the exception was taken from.
pub const ELR_EL1: SysRegOperand = sysreg(3, 0, 4, 0, 1);
/// `FAR_EL1` (3, 0, 6, 0, 0): the faulting address of an abort.
pub const FAR_EL1: SysRegOperand = sysreg(3, 0, 6, 0, 0);
/// `VBAR_EL1` (3, 0, 12, 0, 0): the EL1 exception vector base.
pub const VBAR_EL1: SysRegOperand = sysreg(3, 0, 12, 0, 0);

/// A [`SysRegOperand`] from its five fields.
pub const fn sysreg(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> SysRegOperand {
    SysRegOperand {
        op0,
        op1,
        crn,
        crm,
        op2,
    }
}

/// `MOVZ Xd, #imm16, LSL #(16 * hw)`: Xd = imm16 << (16 * hw), the rest zero.
///
/// `1 10 100101 hw:2 imm16:16 Rd:5` (sf = 1, opc = 10). `hw` is 0..=3; `Rd` 31 is XZR.
pub const fn movz(rd: Reg, imm16: u16, hw: u8) -> u32 {
    0xd280_0000 | ((hw as u32 & 3) << 21) | ((imm16 as u32) << 5) | rd.field()
}

/// `MOVK Xd, #imm16, LSL #(16 * hw)`: replaces one halfword of Xd, keeps the others.
///
/// `1 11 100101 hw:2 imm16:16 Rd:5` (sf = 1, opc = 11).
pub const fn movk(rd: Reg, imm16: u16, hw: u8) -> u32 {
    0xf280_0000 | ((hw as u32 & 3) << 21) | ((imm16 as u32) << 5) | rd.field()
}

/// `MOV Xd, Xm`, the alias of `ORR Xd, XZR, Xm`.
///
/// `1 01 01010 00 0 Rm:5 000000 11111 Rd:5` (ORR shifted register, sf = 1, shift LSL #0, Rn = 31
/// = XZR).
pub const fn mov(rd: Reg, rm: Reg) -> u32 {
    0xaa00_0000 | (rm.field() << 16) | (XZR.field() << 5) | rd.field()
}

/// `MRS Xt, <sysreg>`: read a system register.
///
/// `1101010100 1 1 o0 op1:3 CRn:4 CRm:4 op2:3 Rt:5` (L = 1 is the read).
pub const fn mrs(rt: Reg, reg: SysRegOperand) -> u32 {
    0xd530_0000 | reg.field() | rt.field()
}

/// `MSR <sysreg>, Xt`: write a system register.
///
/// `1101010100 0 1 o0 op1:3 CRn:4 CRm:4 op2:3 Rt:5` (L = 0 is the write).
pub const fn msr(reg: SysRegOperand, rt: Reg) -> u32 {
    0xd510_0000 | reg.field() | rt.field()
}

/// `STR Xt, [Xn, #offset]`, the unsigned-offset form without writeback: a 64-bit store.
///
/// `11 111 0 01 00 imm12:12 Rn:5 Rt:5` (size = 11, opc = 00); imm12 = offset / 8, so `offset` is
/// a multiple of 8 in `0..=32760` (it is masked to that). This form matters beyond its
/// simplicity: a stage-2 abort on it has a valid instruction syndrome (ISV = 1), which is what
/// lets KVM emulate the store as an MMIO exit; pair stores and writeback forms do not.
/// `Rn` 31 is SP.
pub const fn str_imm(rt: Reg, rn: Reg, offset: u16) -> u32 {
    0xf900_0000 | (((offset as u32 / 8) & 0xfff) << 10) | (rn.field() << 5) | rt.field()
}

/// `ADD Xd, Xn, #imm12` (no shift).
///
/// `1 0 0 100010 0 imm12:12 Rn:5 Rd:5` (sf = 1, op = 0, S = 0, sh = 0). 31 is SP.
pub const fn add_imm(rd: Reg, rn: Reg, imm12: u16) -> u32 {
    0x9100_0000 | ((imm12 as u32 & 0xfff) << 10) | (rn.field() << 5) | rd.field()
}

/// `SUB Xd, Xn, #imm12` (no shift).
///
/// `1 1 0 100010 0 imm12:12 Rn:5 Rd:5` (sf = 1, op = 1, S = 0, sh = 0). 31 is SP.
pub const fn sub_imm(rd: Reg, rn: Reg, imm12: u16) -> u32 {
    0xd100_0000 | ((imm12 as u32 & 0xfff) << 10) | (rn.field() << 5) | rd.field()
}

/// `HVC #imm16`: a hypervisor call (SMCCC uses `#0`).
///
/// `11010100 000 imm16:16 000 10`.
pub const fn hvc(imm16: u16) -> u32 {
    0xd400_0002 | ((imm16 as u32) << 5)
}

/// `B <label>`, `words` instructions away (negative is backwards; ±32 Mi instructions).
///
/// `0 00101 imm26:26`, imm26 = the word offset in two's complement.
pub const fn b(words: i32) -> u32 {
    0x1400_0000 | (words as u32 & 0x03ff_ffff)
}

/// `CBNZ Xt, <label>`, `words` instructions away (±256 Ki instructions).
///
/// `1 011010 1 imm19:19 Rt:5` (sf = 1, op = 1).
pub const fn cbnz(rt: Reg, words: i32) -> u32 {
    0xb500_0000 | ((words as u32 & 0x7_ffff) << 5) | rt.field()
}

/// `WFI`: wait for an interrupt. With every interrupt masked and none pending KVM blocks the vCPU
/// in the kernel until something (a host signal, a kick) makes `KVM_RUN` return: a parked guest
/// that costs no CPU.
///
/// `HINT #3`: `11010101000000110010 0000 011 11111`.
pub const WFI: u32 = 0xd503_207f;

/// `ISB`: instruction synchronization barrier, so that a system-register write (`VBAR_EL1`)
/// takes effect before the next instruction.
///
/// `11010101000000110011 1111 110 11111` (CRm = 0b1111, SY).
pub const ISB: u32 = 0xd503_3fdf;

/// `UDF #0`: permanently undefined. Fills the unused space of the vector table, so that a stray
/// jump there is reported as an exception rather than run.
pub const UDF: u32 = 0x0000_0000;

/// Branch offsets [`Asm`] could not encode.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AsmError {
    /// The branch target is further than the instruction's offset field reaches.
    #[error("{instruction} at word {from} cannot reach word {to} (at most {max_words} words away)")]
    OutOfRange {
        /// The branch's mnemonic.
        instruction: &'static str,
        /// The word index of the branch.
        from: usize,
        /// The word index of its target.
        to: usize,
        /// How many words the offset field reaches, either way.
        max_words: i64,
    },
}

/// An instruction buffer: emit words in order; branch back to an earlier [`Asm::here`].
#[derive(Clone, Debug, Default)]
pub struct Asm {
    words: Vec<u32>,
}

impl Asm {
    /// An empty buffer.
    pub fn new() -> Self {
        Asm::default()
    }

    /// The position (in words) the next instruction is emitted at: a branch label.
    pub fn here(&self) -> usize {
        self.words.len()
    }

    /// Emit one instruction word.
    pub fn emit(&mut self, word: u32) {
        self.words.push(word);
    }

    /// Emit `word` until the buffer holds `words` instructions (nothing if it already does).
    pub fn pad_to(&mut self, words: usize, word: u32) {
        if self.words.len() < words {
            self.words.resize(words, word);
        }
    }

    /// `Xd = value`: `MOVZ` of the lowest nonzero halfword (halfword 0 if `value` is 0), then
    /// `MOVK` of each other nonzero halfword, low to high. Always the same instructions for the
    /// same value, at most four.
    pub fn mov_imm(&mut self, rd: Reg, value: u64) {
        let halfword = |hw: u8| (value >> (16 * u32::from(hw))) as u16;
        let first = (0..4).find(|&hw| halfword(hw) != 0).unwrap_or(0);
        self.emit(movz(rd, halfword(first), first));
        for hw in first + 1..4 {
            if halfword(hw) != 0 {
                self.emit(movk(rd, halfword(hw), hw));
            }
        }
    }

    /// `B label`.
    pub fn b_to(&mut self, label: usize) -> Result<(), AsmError> {
        let words = self.offset_to(label, "B", 1 << 25)?;
        self.emit(b(words));
        Ok(())
    }

    /// `CBNZ Xt, label`.
    pub fn cbnz_to(&mut self, rt: Reg, label: usize) -> Result<(), AsmError> {
        let words = self.offset_to(label, "CBNZ", 1 << 18)?;
        self.emit(cbnz(rt, words));
        Ok(())
    }

    /// The word offset from the next instruction to `label`, if it is within `±max_words`.
    fn offset_to(
        &self,
        label: usize,
        instruction: &'static str,
        max_words: i64,
    ) -> Result<i32, AsmError> {
        let from = self.here();
        let error = || AsmError::OutOfRange {
            instruction,
            from,
            to: label,
            max_words,
        };
        let delta = i64::try_from(label)
            .ok()
            .zip(i64::try_from(from).ok())
            .map(|(to, from)| to - from)
            .ok_or_else(error)?;
        if !(-max_words..max_words).contains(&delta) {
            return Err(error());
        }
        i32::try_from(delta).map_err(|_| error())
    }

    /// The instructions emitted so far.
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// The program as little-endian bytes (A64 instructions are always little endian).
    pub fn into_bytes(self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected words were produced by GNU as 2.40 (`aarch64-linux-gnu-as`, then
    /// `objdump -d`); the assembly is in each comment.
    #[test]
    fn encodings_match_gnu_as() {
        let id_aa64isar0_el1 = sysreg(3, 0, 0, 6, 0);
        let cases: &[(u32, u32, &str)] = &[
            (movz(X0, 0x1234, 0), 0xd282_4680, "movz x0, #0x1234"),
            (
                movz(X9, 0xa641, 3),
                0xd2f4_c829,
                "movz x9, #0xa641, lsl #48",
            ),
            (movz(X19, 0, 0), 0xd280_0013, "movz x19, #0"),
            (
                movk(X0, 0x8400, 1),
                0xf2b0_8000,
                "movk x0, #0x8400, lsl #16",
            ),
            (
                movk(X9, 0xffff, 2),
                0xf2df_ffe9,
                "movk x9, #0xffff, lsl #32",
            ),
            (mov(X0, X19), 0xaa13_03e0, "mov x0, x19"),
            (
                mrs(X0, id_aa64isar0_el1),
                0xd538_0600,
                "mrs x0, id_aa64isar0_el1",
            ),
            (
                mrs(X0, sysreg(3, 0, 0, 4, 0)),
                0xd538_0400,
                "mrs x0, id_aa64pfr0_el1",
            ),
            (
                mrs(X0, sysreg(3, 3, 0, 0, 1)),
                0xd53b_0020,
                "mrs x0, ctr_el0",
            ),
            (
                mrs(X0, sysreg(3, 0, 0, 0, 5)),
                0xd538_00a0,
                "mrs x0, mpidr_el1",
            ),
            (mrs(X9, ESR_EL1), 0xd538_5209, "mrs x9, esr_el1"),
            (mrs(X9, ELR_EL1), 0xd538_4029, "mrs x9, elr_el1"),
            (mrs(X9, FAR_EL1), 0xd538_6009, "mrs x9, far_el1"),
            (
                mrs(X0, sysreg(2, 0, 0, 0, 2)),
                0xd530_0040,
                "mrs x0, osdtrrx_el1",
            ),
            (msr(VBAR_EL1, X9), 0xd518_c009, "msr vbar_el1, x9"),
            (str_imm(X9, X20, 0), 0xf900_0289, "str x9, [x20]"),
            (str_imm(X0, X20, 8), 0xf900_0680, "str x0, [x20, #8]"),
            (str_imm(X3, X20, 8), 0xf900_0683, "str x3, [x20, #8]"),
            (add_imm(X19, X19, 1), 0x9100_0673, "add x19, x19, #1"),
            (sub_imm(X21, X21, 1), 0xd100_06b5, "sub x21, x21, #1"),
            (hvc(0), 0xd400_0002, "hvc #0"),
            (hvc(0x1234), 0xd402_4682, "hvc #0x1234"),
            (b(-1), 0x17ff_ffff, "b .-4"),
            (b(2), 0x1400_0002, "b .+8"),
            (cbnz(X21, -10), 0xb5ff_fed5, "cbnz x21, .-40"),
            (cbnz(X21, 3), 0xb500_0075, "cbnz x21, .+12"),
            (WFI, 0xd503_207f, "wfi"),
            (ISB, 0xd503_3fdf, "isb"),
            (UDF, 0x0000_0000, "udf #0"),
        ];
        for &(got, want, asm) in cases {
            assert_eq!(got, want, "{asm}: got {got:#010x}, want {want:#010x}");
        }
    }

    /// The model's registers become `MRS` operands field for field; op0 0 and 1 cannot.
    #[test]
    fn operands_of_the_models_registers() {
        use crate::model::arm64::catalog::{CTR_EL0, ID_AA64ISAR0_EL1};
        assert_eq!(
            SysRegOperand::of(ID_AA64ISAR0_EL1),
            Some(sysreg(3, 0, 0, 6, 0))
        );
        assert_eq!(
            mrs(X0, SysRegOperand::of(CTR_EL0).unwrap()),
            0xd53b_0020,
            "mrs x0, ctr_el0"
        );
        let debug = SysReg::new(2, 0, 0, 0, 2).unwrap();
        assert_eq!(mrs(X0, SysRegOperand::of(debug).unwrap()), 0xd530_0040);
        for op0 in [0, 1] {
            assert_eq!(
                SysRegOperand::of(SysReg::new(op0, 0, 7, 5, 1).unwrap()),
                None
            );
        }
    }

    #[test]
    fn mov_imm_is_minimal_and_deterministic() {
        let words = |value| {
            let mut asm = Asm::new();
            asm.mov_imm(X0, value);
            asm.words().to_vec()
        };
        assert_eq!(words(0), [movz(X0, 0, 0)]);
        assert_eq!(words(0x1234), [movz(X0, 0x1234, 0)]);
        assert_eq!(words(0x8400_0008), [movz(X0, 8, 0), movk(X0, 0x8400, 1)]);
        assert_eq!(words(0x8400_0000), [movz(X0, 0x8400, 1)]);
        assert_eq!(
            words(0xa641_2000_0000_0003),
            [movz(X0, 3, 0), movk(X0, 0x2000, 2), movk(X0, 0xa641, 3)]
        );
        assert_eq!(
            words(u64::MAX),
            [
                movz(X0, 0xffff, 0),
                movk(X0, 0xffff, 1),
                movk(X0, 0xffff, 2),
                movk(X0, 0xffff, 3)
            ]
        );
    }

    #[test]
    fn backward_branches() {
        let mut asm = Asm::new();
        let top = asm.here();
        asm.emit(WFI);
        asm.b_to(top).unwrap();
        asm.cbnz_to(X21, top).unwrap();
        assert_eq!(asm.words(), [WFI, b(-1), cbnz(X21, -2)]);
        // A branch to itself is offset 0.
        let here = asm.here();
        asm.b_to(here).unwrap();
        assert_eq!(asm.words()[3], 0x1400_0000);
    }

    #[test]
    fn branch_range_is_checked() {
        // CBNZ reaches -2^18 words back (imm19 is signed), not one word further.
        let mut asm = Asm::new();
        asm.pad_to((1 << 18) + 1, WFI);
        let error = asm.cbnz_to(X21, 0).unwrap_err();
        assert_eq!(
            error,
            AsmError::OutOfRange {
                instruction: "CBNZ",
                from: (1 << 18) + 1,
                to: 0,
                max_words: 1 << 18
            }
        );
        let mut asm = Asm::new();
        asm.pad_to(1 << 18, WFI);
        asm.cbnz_to(X21, 0).unwrap();
        assert_eq!(asm.words()[1 << 18], cbnz(X21, -(1 << 18)));
        // B reaches much further.
        asm.b_to(0).unwrap();
        // Forward: at most 2^18 - 1 words.
        let mut asm = Asm::new();
        assert!(asm.cbnz_to(X21, 1 << 18).is_err());
        asm.cbnz_to(X21, (1 << 18) - 1).unwrap();
    }

    #[test]
    fn bytes_are_little_endian() {
        let mut asm = Asm::new();
        asm.emit(hvc(0));
        asm.pad_to(2, WFI);
        assert_eq!(asm.into_bytes(), [0x02, 0, 0, 0xd4, 0x7f, 0x20, 0x03, 0xd5]);
    }
}
