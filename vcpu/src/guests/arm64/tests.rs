//! Tests of the arm64 program: layout, determinism, the exact instructions of a small program,
//! and runs of generated programs on a model of the A64 subset they use ([`sim`]), decoded by
//! [`Arm64Decoder`].

use super::*;
use crate::guests::Step;
use crate::hypervisor::call::VcpuExit;
use crate::model::arm64::catalog::{self, CTR_EL0, ID_AA64ISAR0_EL1, ID_AA64PFR0_EL1, MIDR_EL1};
use crate::model::arm64::smccc::*;
use vm_memory::{Bytes, GuestAddress};

const REGS: [SysReg; 4] = [ID_AA64ISAR0_EL1, ID_AA64PFR0_EL1, MIDR_EL1, CTR_EL0];
const CALLS: [SmcccCall; 6] = [
    SmcccCall::new(PSCI_VERSION),
    SmcccCall::new(SMCCC_VERSION),
    SmcccCall::with_arg(SMCCC_ARCH_FEATURES, SMCCC_ARCH_WORKAROUND_1 as u64),
    SmcccCall::new(TRNG_VERSION),
    SmcccCall::new(VENDOR_HYP_CALL_UID),
    SmcccCall {
        function_id: 0x8600_0042,
        args: [1, 0xdead_beef_0000_0002, u64::MAX],
    },
];

fn program_of<'a>(
    id_regs: &'a [SysReg],
    calls: &'a [SmcccCall],
    repeats: u32,
    finish: Finish,
) -> Arm64GuestProgram<'a> {
    Arm64GuestProgram {
        id_regs,
        calls,
        repeats,
        finish,
    }
}

fn words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
        .collect()
}

/// The rest of the layout is checked at compile time (the `const` assertions in the module).
#[test]
fn layout() {
    assert_eq!(ENTRY - CODE_ADDR, VECTORS_SIZE);
    assert_eq!(VECTORS_ADDR % 0x800, 0, "VBAR_EL1 alignment");
    assert_eq!(REPORT_TAG % 8, 0, "Device memory: aligned stores only");
    assert_eq!(REPORT_VALUE % 8, 0);
    assert_eq!(REPORT_VALUE, REPORT_TAG + 8);
    // 64 KiB: a multiple of every arm64 host page size, so a memslot of this size is valid.
    assert_eq!(MEMORY_SIZE % 0x1_0000, 0);
}

/// The largest program (most registers, most calls, every immediate four halfwords wide) still
/// fits in its region.
#[test]
fn the_largest_program_fits() {
    let regs = vec![SysReg::new(3, 7, 15, 15, 7).unwrap(); MAX_ID_REGS];
    let calls = vec![
        SmcccCall {
            function_id: 0xffff_ffff,
            args: [u64::MAX; 3],
        };
        MAX_CALLS
    ];
    let code = program(&program_of(&regs, &calls, u32::MAX, Finish::PowerOff)).unwrap();
    assert!(code.len() as u64 <= CODE_MAX, "{} bytes", code.len());
    // Leave room to grow: less than half the region.
    assert!((code.len() as u64) < CODE_MAX / 2, "{} bytes", code.len());
}

#[test]
fn generation_is_deterministic() {
    let p = program_of(&REGS, &CALLS, 3, Finish::PowerOff);
    let a = program(&p).unwrap();
    assert_eq!(a, program(&p).unwrap());
    assert_eq!(a.len() % 4, 0);
    // Any change to the program changes the code.
    for other in [
        program_of(&REGS[..3], &CALLS, 3, Finish::PowerOff),
        program_of(&REGS, &CALLS[1..], 3, Finish::PowerOff),
        program_of(&REGS, &CALLS, 4, Finish::PowerOff),
        program_of(&REGS, &CALLS, 3, Finish::Park),
        program_of(&REGS, &CALLS, 0, Finish::PowerOff),
    ] {
        assert_ne!(program(&other).unwrap(), a, "{other:?}");
    }
}

/// The program proper of a small program, word for word. The words and their disassembly come
/// from GNU objdump 2.40 (`objdump -D -b binary -m aarch64 --adjust-vma=0x40000000`).
#[test]
fn a_small_program_word_for_word() {
    let calls = [SmcccCall::new(TRNG_VERSION)];
    let p = program_of(&[ID_AA64ISAR0_EL1], &calls, 2, Finish::PowerOff);
    let code = words(&program(&p).unwrap());
    #[rustfmt::skip]
    let expected: [u32; 47] = [
        0xd2a8_0009, // 40000800: mov x9, #0x40000000
        0xd518_c009, //           msr vbar_el1, x9
        0xd503_3fdf, //           isb
        0xd2a2_0014, //           mov x20, #0x10000000
        0xd280_0013, //           mov x19, #0x0
        0xd280_0055, //           mov x21, #0x2
        0xd2c2_0009, // 40000818: mov x9, #0x100000000000         ; pass_loop: PASS_BEGIN tag
        0xf2f4_c829, //           movk x9, #0xa641, lsl #48
        0xf900_0289, //           str x9, [x20]
        0xf900_0693, //           str x19, [x20, #8]             ; pass number
        0xd298_0609, //           mov x9, #0xc030                 ; ID register #0 tag
        0xf2c4_0009, //           movk x9, #0x2000, lsl #32
        0xf2f4_c829, //           movk x9, #0xa641, lsl #48
        0xf900_0289, //           str x9, [x20]
        0xd538_0600, //           mrs x0, id_aa64isar0_el1
        0xf900_0680, //           str x0, [x20, #8]
        0xd280_0a09, //           mov x9, #0x50                   ; SMCCC call #0 tag
        0xf2b0_8009, //           movk x9, #0x8400, lsl #16
        0xf2c6_0009, //           movk x9, #0x3000, lsl #32
        0xf2f4_c829, //           movk x9, #0xa641, lsl #48
        0xf900_0289, //           str x9, [x20]
        0xd280_0a00, //           mov x0, #0x50                   ; TRNG_VERSION
        0xf2b0_8000, //           movk x0, #0x8400, lsl #16
        0xd280_0001, //           mov x1, #0x0
        0xd280_0002, //           mov x2, #0x0
        0xd280_0003, //           mov x3, #0x0
        0xd400_0002, //           hvc #0x0
        0xf900_0680, //           str x0, [x20, #8]
        0xf900_0681, //           str x1, [x20, #8]
        0xf900_0682, //           str x2, [x20, #8]
        0xf900_0683, //           str x3, [x20, #8]
        0xd2c8_0009, //           mov x9, #0x400000000000         ; PASS_END tag
        0xf2f4_c829, //           movk x9, #0xa641, lsl #48
        0xf900_0289, //           str x9, [x20]
        0xf900_0693, //           str x19, [x20, #8]
        0x9100_0673, //           add x19, x19, #0x1
        0xd100_06b5, //           sub x21, x21, #0x1
        0xb5ff_fc35, //           cbnz x21, 0x40000818
        0xd280_0100, //           mov x0, #0x8                    ; PSCI SYSTEM_OFF
        0xf2b0_8000, //           movk x0, #0x8400, lsl #16
        0xd400_0002, //           hvc #0x0
        0xd2ca_0009, //           mov x9, #0x500000000000         ; OFF_RETURNED tag
        0xf2f4_c829, //           movk x9, #0xa641, lsl #48
        0xf900_0289, //           str x9, [x20]
        0xf900_0680, //           str x0, [x20, #8]
        0xd503_207f, //           wfi
        0x17ff_ffff, //           b 0x400008b4
    ];
    assert_eq!(code[VECTORS_SIZE as usize / 4..], expected);
}

/// Each vector entry reports its own index and parks within its 0x80 bytes; the rest is UDF.
#[test]
fn vector_table() {
    let code = words(&program(&Arm64GuestProgram::default()).unwrap());
    for (vector, entry) in code[..VECTORS_SIZE as usize / 4]
        .chunks(VECTOR_WORDS)
        .enumerate()
    {
        let tag = Tag::exception(vector as u16).encode();
        #[rustfmt::skip]
        let mut expected = vec![
            0xd2a2_0014,                                  // mov x20, #0x10000000
            0xd2cc_0009 | ((vector as u32) << 5),         // mov x9, #0x6<vector>00000000
            0xf2f4_c829,                                  // movk x9, #0xa641, lsl #48
            0xf900_0289,                                  // str x9, [x20]
            0xd538_5209, 0xf900_0689,                     // mrs x9, esr_el1; str x9, [x20, #8]
            0xd538_4029, 0xf900_0689,                     // mrs x9, elr_el1; str
            0xd538_6009, 0xf900_0689,                     // mrs x9, far_el1; str
            0xd503_207f, 0x17ff_ffff,                     // wfi; b .-4
        ];
        assert_eq!(tag >> 32 & 0xffff, 0x6000 | vector as u64);
        expected.resize(VECTOR_WORDS, 0);
        assert_eq!(entry, expected, "vector {vector}");
    }
}

/// The program's only data accesses are 64-bit stores to the two report addresses through x20,
/// which holds [`REPORT_BASE`]: no loads, no other stores.
#[test]
fn only_aligned_report_stores() {
    let code = words(&program(&program_of(&REGS, &CALLS, 5, Finish::PowerOff)).unwrap());
    for (i, &word) in code.iter().enumerate() {
        // Loads and stores are the encodings with op0 bits 27 and 25 = 1, 0 (x1x0).
        if word & 0x0a00_0000 == 0x0800_0000 {
            let offset = (word >> 10 & 0xfff) * 8;
            assert_eq!(
                word & 0xffc0_03e0,
                0xf900_0280,
                "word {i}: {word:#x} is not STR Xt, [X20, #imm]"
            );
            assert!(offset == 0 || offset == 8, "word {i}: offset {offset}");
        }
    }
}

#[test]
fn endings() {
    let system_off = [0xd280_0100, 0xf2b0_8000, 0xd400_0002];
    let has = |code: &[u32], needle: &[u32]| code.windows(needle.len()).any(|w| w == needle);

    let off = words(&program(&program_of(&REGS, &[], 1, Finish::PowerOff)).unwrap());
    assert!(has(&off, &system_off));

    let park = words(&program(&program_of(&REGS, &[], 1, Finish::Park)).unwrap());
    assert!(!has(&park, &system_off));
    assert_eq!(
        park[park.len() - 4..],
        [0xd100_06b5, park[park.len() - 3], 0xd503_207f, 0x17ff_ffff]
    );

    // Forever: the pass loop ends in a B back, and nothing follows it.
    let forever = words(&program(&program_of(&REGS, &[], 0, Finish::PowerOff)).unwrap());
    assert!(!has(&forever, &system_off));
    let last = *forever.last().unwrap();
    assert_eq!(last & 0xfc00_0000, 0x1400_0000, "B");
    assert!(!forever.contains(&0xd100_06b5), "no countdown");
}

#[test]
fn validation() {
    let regs = vec![ID_AA64PFR0_EL1; MAX_ID_REGS + 1];
    let error = program(&program_of(&regs, &[], 1, Finish::PowerOff)).unwrap_err();
    assert!(
        matches!(
            error,
            GuestError::TooManySteps {
                what: "ID registers",
                count: 257,
                max: 256
            }
        ),
        "{error}"
    );
    let calls = vec![SmcccCall::new(PSCI_VERSION); MAX_CALLS + 1];
    let error = program(&program_of(&[], &calls, 1, Finish::PowerOff)).unwrap_err();
    assert!(
        matches!(
            error,
            GuestError::TooManySteps {
                what: "SMCCC calls",
                count: 65,
                ..
            }
        ),
        "{error}"
    );
    let calls = [SmcccCall::new(PSCI_VERSION), SmcccCall::new(0x8400_0009)];
    let error = program(&program_of(&[], &calls, 1, Finish::PowerOff)).unwrap_err();
    assert!(
        matches!(
            error,
            GuestError::PowerStateCall {
                index: 1,
                function_id: 0x8400_0009,
                name: "PSCI_SYSTEM_RESET"
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("PSCI_SYSTEM_RESET, 0x84000009"),
        "{error}"
    );
}

#[test]
fn passes() {
    assert_eq!(program_of(&[], &[], 0, Finish::PowerOff).passes(), None);
    assert_eq!(program_of(&[], &[], 7, Finish::Park).passes(), Some(7));
}

fn memory(ranges: &[(u64, usize)]) -> GuestMemoryMmap {
    let ranges: Vec<_> = ranges.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
    GuestMemoryMmap::from_ranges(&ranges).unwrap()
}

#[test]
fn load_writes_the_program() {
    let mem = memory(&[(MEMORY_BASE, MEMORY_SIZE as usize)]);
    let p = program_of(&REGS, &CALLS, 2, Finish::PowerOff);
    load(&mem, &p, Placement::Write).unwrap();
    let code = program(&p).unwrap();
    let mut back = vec![0u8; code.len()];
    mem.read_slice(&mut back, GuestAddress(CODE_ADDR)).unwrap();
    assert_eq!(back, code);
}

#[test]
fn load_keeps_reports_out_of_memory() {
    // Memory from 0 up past the report window: the reports would be plain stores.
    let mem = memory(&[(0, 0x1000_1000), (MEMORY_BASE, MEMORY_SIZE as usize)]);
    let error = load(&mem, &Arm64GuestProgram::default(), Placement::Write).unwrap_err();
    assert!(
        matches!(
            error,
            GuestError::ReportInMemory {
                base: REPORT_BASE,
                region_start: 0,
                region_end: 0x1000_1000
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("0x10000000"), "{error}");
    // Memory that ends where the window begins is fine.
    let mem = memory(&[
        (0, REPORT_BASE as usize),
        (MEMORY_BASE, MEMORY_SIZE as usize),
    ]);
    load(&mem, &Arm64GuestProgram::default(), Placement::Write).unwrap();
}

#[test]
fn load_needs_memory_at_the_base() {
    let mem = memory(&[(0, 0x1_0000)]);
    let error = load(&mem, &Arm64GuestProgram::default(), Placement::Write).unwrap_err();
    assert!(
        matches!(
            error,
            GuestError::Memory {
                what: "arm64 program",
                addr: CODE_ADDR,
                ..
            }
        ),
        "{error}"
    );
}

/// A check writes nothing, and answers what the write would: room, or the write's error.
#[test]
fn a_check_writes_nothing_and_fails_as_the_write_would() {
    let mem = memory(&[(MEMORY_BASE, MEMORY_SIZE as usize)]);
    let p = program_of(&REGS, &CALLS, 2, Finish::PowerOff);
    load(&mem, &p, Placement::Check).unwrap();
    let mut back = vec![0xffu8; program(&p).unwrap().len()];
    mem.read_slice(&mut back, GuestAddress(CODE_ADDR)).unwrap();
    assert!(back.iter().all(|&b| b == 0), "a check wrote the program");
    for mem in [memory(&[(0, 0x1_0000)]), memory(&[(MEMORY_BASE, 0x10)])] {
        let written = load(&mem, &p, Placement::Write).unwrap_err();
        let checked = load(&mem, &p, Placement::Check).unwrap_err();
        assert_eq!(checked.to_string(), written.to_string());
    }
}

/// A model of the A64 subset the generator emits, precise enough to run a generated program and
/// collect the exits KVM would produce. Its instruction decoding is checked indirectly: the
/// encoders are checked against GNU as, and the programs run here are built from them.
mod sim {
    use super::*;

    /// What `HVC` does.
    pub enum Hvc {
        /// Return these x0..x3.
        Return([u64; 4]),
        /// `SYSTEM_EVENT` shutdown: the vCPU stops.
        PowerOff,
    }

    /// Why a run stopped.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Stop {
        /// `WFI`: the vCPU would block in the kernel.
        Parked,
        /// `SYSTEM_OFF`.
        PoweredOff,
        /// The step budget ran out.
        Budget,
    }

    /// `ESR_EL1` of an UNDEFINED instruction: EC 0, IL 1.
    pub const ESR_UNDEFINED: u64 = 0x0200_0000;

    pub struct Machine<'a> {
        code: Vec<u32>,
        pc: u64,
        x: [u64; 32],
        vbar: u64,
        esr: u64,
        elr: u64,
        /// What `MRS` reads; `None` makes the instruction UNDEFINED.
        pub sysreg: Box<dyn Fn(SysReg) -> Option<u64> + 'a>,
        /// The hypervisor's answer to `HVC` with x0..x3.
        pub hvc: Box<dyn FnMut([u64; 4]) -> Hvc + 'a>,
        pub exits: Vec<VcpuExit>,
    }

    impl<'a> Machine<'a> {
        pub fn new(
            code: &[u8],
            sysreg: impl Fn(SysReg) -> Option<u64> + 'a,
            hvc: impl FnMut([u64; 4]) -> Hvc + 'a,
        ) -> Self {
            Machine {
                code: words(code),
                pc: ENTRY,
                x: [0; 32],
                vbar: 0,
                esr: 0,
                elr: 0,
                sysreg: Box::new(sysreg),
                hvc: Box::new(hvc),
                exits: Vec::new(),
            }
        }

        /// Take a synchronous exception to the current EL with SP_ELx (vector 4).
        fn undefined(&mut self) {
            self.esr = ESR_UNDEFINED;
            self.elr = self.pc;
            self.pc = self.vbar + 0x200;
        }

        pub fn run(&mut self, budget: usize) -> Stop {
            for _ in 0..budget {
                let index = usize::try_from((self.pc - CODE_ADDR) / 4).unwrap();
                let w = self.code[index];
                let rd = (w & 0x1f) as usize;
                let rn = (w >> 5 & 0x1f) as usize;
                let mut next = self.pc + 4;
                if w & 0xff80_0000 == 0xd280_0000 {
                    // MOVZ
                    let hw = w >> 21 & 3;
                    self.x[rd] = u64::from(w >> 5 & 0xffff) << (16 * hw);
                } else if w & 0xff80_0000 == 0xf280_0000 {
                    // MOVK
                    let shift = 16 * (w >> 21 & 3);
                    self.x[rd] =
                        self.x[rd] & !(0xffff << shift) | u64::from(w >> 5 & 0xffff) << shift;
                } else if w & 0xfff0_0000 == 0xd530_0000 {
                    // MRS
                    let f = |shift: u32, mask: u32| (w >> shift & mask) as u8;
                    let op = (2 + f(19, 1), f(16, 7), f(12, 15), f(8, 15), f(5, 7));
                    let value = match op {
                        (3, 0, 5, 2, 0) => Some(self.esr),
                        (3, 0, 4, 0, 1) => Some(self.elr),
                        (3, 0, 6, 0, 0) => Some(0),
                        (op0, op1, crn, crm, op2) => {
                            let reg = SysReg::new(
                                op0.into(),
                                op1.into(),
                                crn.into(),
                                crm.into(),
                                op2.into(),
                            );
                            (self.sysreg)(reg.unwrap())
                        }
                    };
                    match value {
                        Some(value) => self.x[rd] = value,
                        None => {
                            self.undefined();
                            continue;
                        }
                    }
                } else if w & 0xffff_ffe0 == 0xd518_c000 {
                    // MSR VBAR_EL1
                    self.vbar = self.x[rd];
                } else if w == 0xd503_3fdf {
                    // ISB
                } else if w & 0xffc0_0000 == 0xf900_0000 {
                    // STR Xt, [Xn, #imm]
                    let addr = self.x[rn] + u64::from(w >> 10 & 0xfff) * 8;
                    assert!(
                        addr == REPORT_TAG || addr == REPORT_VALUE,
                        "store to {addr:#x}"
                    );
                    self.exits.push(VcpuExit::MmioWrite {
                        addr,
                        data: self.x[rd].to_le_bytes()[..].into(),
                    });
                } else if w & 0xffc0_0000 == 0x9100_0000 {
                    self.x[rd] = self.x[rn] + u64::from(w >> 10 & 0xfff);
                } else if w & 0xffc0_0000 == 0xd100_0000 {
                    self.x[rd] = self.x[rn] - u64::from(w >> 10 & 0xfff);
                } else if w == 0xd400_0002 {
                    // HVC #0
                    match (self.hvc)([self.x[0], self.x[1], self.x[2], self.x[3]]) {
                        Hvc::Return(ret) => self.x[..4].copy_from_slice(&ret),
                        Hvc::PowerOff => {
                            self.exits.push(VcpuExit::SystemEvent {
                                kind: SYSTEM_EVENT_SHUTDOWN,
                                data: vec![0],
                            });
                            return Stop::PoweredOff;
                        }
                    }
                } else if w & 0xfc00_0000 == 0x1400_0000 {
                    // B: sign-extend imm26
                    let words = i64::from(((w << 6) as i32) >> 6);
                    next = self.pc.wrapping_add_signed(words * 4);
                } else if w & 0xff00_0000 == 0xb500_0000 {
                    // CBNZ
                    if self.x[rd] != 0 {
                        let words = i64::from(((w << 8) as i32) >> 13);
                        next = self.pc.wrapping_add_signed(words * 4);
                    }
                } else if w == 0xd503_207f {
                    return Stop::Parked;
                } else {
                    self.undefined();
                    continue;
                }
                self.pc = next;
            }
            Stop::Budget
        }
    }
}

use sim::{Hvc, Machine, Stop};

/// A register file where every register reads `kvm_reg_id ^ 0x5a5a`.
fn reg_value(reg: SysReg) -> Option<u64> {
    Some(reg.kvm_reg_id() ^ 0x5a5a)
}

/// KVM-like answers: SYSTEM_OFF powers off, known calls answer something, the rest -1.
fn kvm(args: [u64; 4]) -> Hvc {
    let ret = |x0| Hvc::Return([x0, 0, 0, 0]);
    match u32::try_from(args[0]).unwrap() {
        PSCI_SYSTEM_OFF => Hvc::PowerOff,
        PSCI_VERSION => ret(0x1_0001),
        SMCCC_VERSION => ret(0x1_0001),
        SMCCC_ARCH_FEATURES => ret(0),
        VENDOR_HYP_CALL_UID => Hvc::Return(KVM_UID),
        // Echo the arguments, to check they arrive.
        0x8600_0042 => Hvc::Return(args),
        _ => ret(u64::MAX),
    }
}

fn decode(program: &Arm64GuestProgram<'_>, exits: &[VcpuExit]) -> (Arm64Decoder, Vec<Step>) {
    let mut decoder = Arm64Decoder::new(program);
    let steps = exits
        .iter()
        .map(|exit| decoder.feed(exit).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    (decoder, steps)
}

#[test]
fn a_run_powers_off_and_decodes() {
    let p = program_of(&REGS, &CALLS, 3, Finish::PowerOff);
    let mut machine = Machine::new(&program(&p).unwrap(), reg_value, kvm);
    assert_eq!(machine.run(10_000), Stop::PoweredOff);
    let per_pass = 2 + 2 * REGS.len() + 5 * CALLS.len() + 2;
    assert_eq!(machine.exits.len(), 3 * per_pass + 1);
    let (decoder, steps) = decode(&p, &machine.exits);
    assert_eq!(steps.last(), Some(&Step::Done));
    assert!(
        steps[..steps.len() - 1]
            .iter()
            .all(|s| *s == Step::Continue)
    );
    let report = decoder.finish();
    assert!(report.powered_off);
    assert_eq!(report.passes, 3);
    assert!(report.passes_agree());
    let regs: Vec<IdRegSeen> = REGS
        .iter()
        .map(|r| IdRegSeen {
            id: r.kvm_reg_id(),
            value: r.kvm_reg_id() ^ 0x5a5a,
        })
        .collect();
    assert_eq!(report.id_regs, regs);
    assert_eq!(report.calls.len(), CALLS.len());
    assert_eq!(report.calls[4].ret, KVM_UID);
    // x0..x3 as loaded by the program (x0 zero-extended from the 32-bit function id).
    assert_eq!(
        report.calls[5].ret,
        [0x8600_0042, 1, 0xdead_beef_0000_0002, u64::MAX]
    );
    assert_eq!(
        report.describe()[REGS.len()..],
        [
            "PSCI_VERSION -> 0x10001 (version 1.1)",
            "SMCCC_VERSION -> 0x10001 (version 1.1)",
            "SMCCC_ARCH_FEATURES(SMCCC_ARCH_WORKAROUND_1) -> 0 (SUCCESS)",
            "TRNG_VERSION -> NOT_SUPPORTED (-1)",
            "VENDOR_HYP_CALL_UID -> KVM's UID",
            "SMCCC 0x86000042(0x1, 0xdeadbeef00000002, 0xffffffffffffffff) -> 0x86000042 \
             (x1 0x1, x2 0xdeadbeef00000002, x3 0xffffffffffffffff)",
        ]
    );
}

#[test]
fn a_parked_run_completes_at_the_last_pass_end() {
    let p = program_of(&REGS, &CALLS[..2], 2, Finish::Park);
    let mut machine = Machine::new(&program(&p).unwrap(), reg_value, kvm);
    assert_eq!(machine.run(10_000), Stop::Parked);
    let (decoder, steps) = decode(&p, &machine.exits);
    assert_eq!(steps.last(), Some(&Step::Done));
    let report = decoder.finish();
    assert!(!report.powered_off);
    assert_eq!(report.passes, 2);
}

#[test]
fn a_forever_run_keeps_counting() {
    let p = program_of(&REGS[..1], &CALLS[..1], 0, Finish::PowerOff);
    let mut machine = Machine::new(&program(&p).unwrap(), reg_value, kvm);
    assert_eq!(machine.run(5_000), Stop::Budget);
    let (decoder, steps) = decode(&p, &machine.exits);
    assert!(steps.iter().all(|s| *s == Step::Continue));
    assert!(decoder.passes_done() > 50, "{}", decoder.passes_done());
}

/// Passes that see different answers are counted; random and clock calls are compared on
/// support only.
#[test]
fn passes_that_differ() {
    let calls = [
        SmcccCall::new(PSCI_VERSION),
        SmcccCall::with_arg(VENDOR_HYP_KVM_PTP, 0),
    ];
    let p = program_of(&REGS[..1], &calls, 4, Finish::PowerOff);
    let mut n = 0u64;
    let hvc = |args: [u64; 4]| {
        n += 1;
        match u32::try_from(args[0]).unwrap() {
            // The clock advances on every call; PSCI_VERSION changes in pass 2 only.
            VENDOR_HYP_KVM_PTP => Hvc::Return([0, n, 0, n * 10]),
            PSCI_VERSION if n == 5 => Hvc::Return([0x1_0000, 0, 0, 0]),
            other => kvm([u64::from(other), 0, 0, 0]),
        }
    };
    let mut machine = Machine::new(&program(&p).unwrap(), reg_value, hvc);
    assert_eq!(machine.run(10_000), Stop::PoweredOff);
    let (decoder, _) = decode(&p, &machine.exits);
    let report = decoder.finish();
    assert_eq!(report.passes, 4);
    assert_eq!(report.differing_passes, 1);
    let [Arm64Difference::Call { pass, first, seen }] = report.first_differences[..] else {
        panic!("{:?}", report.first_differences);
    };
    assert_eq!(pass, 2);
    assert_eq!((first.ret[0], seen.ret[0]), (0x1_0001, 0x1_0000));
}

/// An `MRS` of a register the vCPU does not have: the vector table reports the exception, and
/// the decoder names the step it interrupted.
#[test]
fn an_undefined_register_is_reported_by_the_vector_table() {
    let p = program_of(&REGS, &[], 1, Finish::PowerOff);
    let sysreg = |reg: SysReg| (reg != MIDR_EL1).then(|| reg.kvm_reg_id());
    let mut machine = Machine::new(&program(&p).unwrap(), sysreg, kvm);
    assert_eq!(machine.run(10_000), Stop::Parked);
    let mut decoder = Arm64Decoder::new(&p);
    let (last, rest) = machine.exits.split_last().unwrap();
    for exit in rest {
        assert_eq!(decoder.feed(exit), Ok(Step::Continue), "{exit}");
    }
    let error = decoder.feed(last).unwrap_err();
    let Arm64ProtocolError::GuestException {
        vector,
        esr,
        elr,
        during,
        ..
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!((*vector, *esr), (4, sim::ESR_UNDEFINED));
    // ELR points at the MRS of MIDR_EL1.
    let code = words(&program(&p).unwrap());
    let at = usize::try_from((elr - CODE_ADDR) / 4).unwrap();
    assert_eq!(code[at], asm::mrs(asm::X0, mrs_operand(MIDR_EL1).unwrap()));
    assert_eq!(during, "in ID register #2 (MIDR_EL1) of pass 0");
    assert!(
        error.to_string().contains("EC 0x00: unknown reason"),
        "{error}"
    );
}

#[test]
fn system_off_that_returns_is_reported() {
    let p = program_of(&REGS[..1], &[], 1, Finish::PowerOff);
    let hvc = |_: [u64; 4]| Hvc::Return([u64::MAX, 0, 0, 0]);
    let mut machine = Machine::new(&program(&p).unwrap(), reg_value, hvc);
    assert_eq!(machine.run(10_000), Stop::Parked);
    let mut decoder = Arm64Decoder::new(&p);
    let results: Vec<_> = machine.exits.iter().map(|e| decoder.feed(e)).collect();
    let (last, rest) = results.split_last().unwrap();
    assert!(rest.iter().all(|r| *r == Ok(Step::Continue)));
    assert_eq!(
        *last,
        Err(Arm64ProtocolError::SystemOffReturned {
            exit: machine.exits.len() as u64,
            ret: u64::MAX
        })
    );
    assert_eq!(decoder.passes_done(), 1);
}

/// The guest reads the model's registers: ids from kvm-semantics §2.3 (`ARM64_SYS_REG`), checked
/// both ways, are what the decoder reports, and tags carry the same 16-bit encoding.
#[test]
fn id_registers_are_the_models_system_registers() {
    for (reg, id, name) in [
        (ID_AA64PFR0_EL1, 0x6030_0000_0013_c020, "ID_AA64PFR0_EL1"),
        (ID_AA64ISAR0_EL1, 0x6030_0000_0013_c030, "ID_AA64ISAR0_EL1"),
        (
            catalog::ID_AA64MMFR2_EL1,
            0x6030_0000_0013_c03a,
            "ID_AA64MMFR2_EL1",
        ),
        (catalog::ID_DFR0_EL1, 0x6030_0000_0013_c00a, "ID_DFR0_EL1"),
        (catalog::MPIDR_EL1, 0x6030_0000_0013_c005, "MPIDR_EL1"),
        (catalog::CLIDR_EL1, 0x6030_0000_0013_c801, "CLIDR_EL1"),
        (catalog::AIDR_EL1, 0x6030_0000_0013_c807, "AIDR_EL1"),
        (CTR_EL0, 0x6030_0000_0013_d801, "CTR_EL0"),
    ] {
        assert_eq!(reg.kvm_reg_id(), id, "{reg}");
        assert_eq!(SysReg::from_kvm_reg_id(id), Ok(reg), "{id:#x}");
        assert_eq!(reg.to_string(), name);
        assert_eq!(u64::from(reg.encoding()), id & 0xffff);
        let seen = IdRegSeen { id, value: 7 };
        assert_eq!(seen.describe(), format!("{name} = 0x0000000000000007"));
        assert_eq!(
            protocol::Tag::id_reg(0, reg.encoding()).to_string(),
            format!("ID register #0 ({name})")
        );
    }
    // Every register of the catalog can be read, as the fields it was declared with.
    for register in catalog::REGISTERS {
        let reg = register.reg;
        let operand = mrs_operand(reg).unwrap();
        assert_eq!(
            (
                operand.op0,
                operand.op1,
                operand.crn,
                operand.crm,
                operand.op2
            ),
            (reg.op0(), reg.op1(), reg.crn(), reg.crm(), reg.op2()),
            "{}",
            register.name
        );
        assert_eq!(reg.to_string(), register.name);
    }
    // An unallocated slot carries its generic name.
    let reg = SysReg::new(3, 0, 0, 4, 3).unwrap();
    assert_eq!(reg.to_string(), "S3_0_C0_C4_3");
    assert_eq!(reg.kvm_reg_id(), 0x6030_0000_0013_c023);
}

/// What `MRS` cannot read is refused: out-of-range fields by the model's type, op0 0 and 1 by
/// the program, ids of other register families by the id decoder.
#[test]
fn what_mrs_cannot_read_is_refused() {
    let refused = |reg: SysReg| match program(&program_of(&[reg], &[], 1, Finish::PowerOff)) {
        Err(GuestError::NotAnMrsRegister { register, why }) => format!("{register}: {why}"),
        other => panic!("{reg}: {other:?}"),
    };
    assert_eq!(
        refused(SysReg::new(1, 0, 7, 5, 1).unwrap()),
        "S1_0_C7_C5_1: op0 1 encodes instructions, not registers; MRS reads op0 2 or 3"
    );
    // The right prefix with op0 0.
    let op0_0 = SysReg::from_kvm_reg_id(0x6030_0000_0013_0020).unwrap();
    assert!(refused(op0_0).contains("op0 0 encodes instructions"));
    assert!(
        program_of(&[op0_0], &[], 1, Finish::PowerOff)
            .validate()
            .is_err()
    );
    // Nor is such a register named in a report.
    assert_eq!(
        protocol::Tag::id_reg(0, op0_0.encoding()).to_string(),
        "ID register #0 (encoding 0x0020)"
    );
    for (op0, op1, crn, crm, op2, part) in [
        (4, 0, 0, 0, 0, "op0 = 4"),
        (3, 8, 0, 0, 0, "op1 = 8"),
        (3, 0, 16, 0, 0, "CRn = 16"),
        (3, 0, 0, 16, 0, "CRm = 16"),
        (3, 0, 0, 0, 8, "op2 = 8"),
    ] {
        let error = SysReg::new(op0, op1, crn, crm, op2).unwrap_err();
        assert!(error.to_string().starts_with(part), "{error}");
    }
    // A core register, a firmware register, a 32-bit DEMUX id: not system registers.
    for id in [
        0x6030_0000_0010_0040,
        0x6030_0000_0014_0000,
        0x6020_0000_0011_0000,
    ] {
        assert!(SysReg::from_kvm_reg_id(id).is_err(), "{id:#x}");
        let seen = IdRegSeen { id, value: 1 };
        assert_eq!(
            seen.describe(),
            format!("register {id:#018x} = 0x0000000000000001")
        );
    }
}
