//! The built-in x86 guest: a 16-bit real-mode program that executes `CPUID` for every point of a
//! probe table and reports the results through I/O ports, and that can be told to crash on purpose
//! (a triple fault) after a number of passes.
//!
//! # Memory layout (64 KiB of guest memory at guest-physical address 0)
//!
//! | range | contents |
//! |---|---|
//! | `0x0000..0x1000` | stack, growing down from [`CODE_ADDR`] (the program itself uses none) |
//! | [`CODE_ADDR`] `0x1000` | the program ([`program`]), entered at [`ENTRY`], followed by the 6-byte IDT descriptor its fault path loads |
//! | [`TABLE_ADDR`] `0x2000` | the probe table ([`encode_table`]) |
//! | [`FAULT_IDT_BASE`] `0xffff_0000` | where the fault path points the IDT: must *not* be guest memory |
//!
//! The vCPU starts in real mode with CS = DS = SS = 0 (see [`crate::hypervisor::call::VcpuCall::SetBootState`]),
//! so linear, physical and 16-bit offsets coincide.
//!
//! # Probe table (little endian, at [`TABLE_ADDR`])
//!
//! `u32 count`, `u32 repeats` (0 = repeat forever), `u32 fault_after` (0 = never fault), then
//! `count` × (`u32 leaf`, `u32 subleaf`); at most [`MAX_POINTS`] points.
//!
//! # Report protocol (every access is `OUT dx, eax`, 4 bytes)
//!
//! Before each pass `p` (0-based), the program first checks `fault_after`, then `repeats`:
//! - if `fault_after` ≠ 0 and `p ≥ fault_after`: it faults on purpose (below) — so with
//!   `fault_after = N` exactly `N` complete passes are reported, and a fault takes precedence over
//!   halting when `fault_after = repeats`;
//! - else if `repeats` ≠ 0 and `p ≥ repeats`: `HLT` (and `HLT` again, should it ever return);
//! - else the pass:
//!   1. [`PORT_PASS_BEGIN`] ← `p`;
//!   2. for each point in table order, [`PORT_RESULT`] ← leaf, subleaf, eax, ebx, ecx, edx;
//!   3. [`PORT_PASS_END`] ← `p`.
//!
//! The exit sequence is decoded by [`crate::guests::ProbeDecoder`]; the fault ends it with an exit
//! the runner (`runtime::runner::run_probe`) reports as
//! `runtime::runner::ProbeEnd::GuestFault`.
//!
//! # The fault on purpose
//!
//! `LIDT` of a descriptor with limit 0 and base [`FAULT_IDT_BASE`], then `UD2`. The #UD cannot be
//! delivered, and neither can the faults that follow, so the CPU triple-faults and KVM exits with
//! `KVM_EXIT_SHUTDOWN`. Two ways lead there, which is why the base matters as well as the limit:
//! - hardware real mode (VMX unrestricted guest, SVM) checks the IDT limit: vector 6 lies beyond a
//!   limit of 0, so #UD → #GP → #DF → triple fault;
//! - KVM's real-mode emulation (VMX without unrestricted guest, and the nested `kvm_pvm` module)
//!   ignores the IDT limit and reads the vector from `base + 4 × vector`; that address is not guest
//!   memory, the read fails, and KVM raises the triple fault itself. (With the default base 0 it
//!   would jump through whatever is at address 0 and run garbage: observed on `kvm_pvm`.)
//!
//! Observed on a `kvm_pvm` host (nested on AMD EPYC): `KVM_EXIT_SHUTDOWN`. [`load_with`] refuses a
//! faulting program when guest memory covers the vector table at [`FAULT_IDT_BASE`].
//!
//! The program keeps all of its state in registers and never writes memory, so several vCPUs can
//! run the same copy of it against the same table at once.

use crate::guests::{GuestError, Placement, place};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Size of the guest memory the program expects at guest-physical address 0.
pub const MEMORY_SIZE: u64 = 0x10000;
/// Where the program is loaded.
pub const CODE_ADDR: u64 = 0x1000;
/// Where the probe table is loaded.
pub const TABLE_ADDR: u64 = 0x2000;
/// The entry point (the first instruction of the program).
pub const ENTRY: u64 = CODE_ADDR;
/// The most points a probe table can hold (the table must fit between [`TABLE_ADDR`] and the end
/// of memory, and the program counts points in 16 bits).
pub const MAX_POINTS: usize = 256;
/// The base the fault path gives the IDT (with limit 0). The 1 KiB from here (the real-mode
/// vector table) must not be guest memory, so guest memory must end at or below it.
pub const FAULT_IDT_BASE: u64 = 0xffff_0000;
/// Size of a real-mode vector table: 256 vectors of 4 bytes.
const VECTOR_TABLE_SIZE: u64 = 256 * 4;
// The whole vector table must be addressable with the 32-bit base a real-mode `LIDT` loads.
const _: () = assert!(FAULT_IDT_BASE + VECTOR_TABLE_SIZE <= 1 << 32);

/// `OUT`: a pass begins; data = pass number (0-based).
pub const PORT_PASS_BEGIN: u16 = 0x510;
/// `OUT` ×6 per point: leaf, subleaf, eax, ebx, ecx, edx.
pub const PORT_RESULT: u16 = 0x511;
/// `OUT`: a pass ended; data = pass number.
pub const PORT_PASS_END: u16 = 0x512;

/// Size of the table header (`count`, `repeats`, `fault_after`).
const TABLE_HEADER: usize = 12;
/// Size of one table point (`leaf`, `subleaf`).
const POINT_SIZE: usize = 8;

/// What the guest program is to do: probe `points`, `repeats` times (0 = forever), and fault on
/// purpose after `fault_after` complete passes (0 = never).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestProgram<'a> {
    /// The `(leaf, subleaf)` pairs to execute `CPUID` for, in order; at most [`MAX_POINTS`].
    pub points: &'a [(u32, u32)],
    /// How many passes before `HLT`; 0 = repeat forever.
    pub repeats: u32,
    /// How many complete passes before a triple fault; 0 = never. Takes precedence over
    /// `repeats` when both are reached at once.
    pub fault_after: u32,
}

impl GuestProgram<'_> {
    /// How many complete passes the guest reports before it stops (halts or faults); `None` when
    /// it runs forever.
    pub fn passes(&self) -> Option<u32> {
        match (self.repeats, self.fault_after) {
            (0, 0) => None,
            (0, n) | (n, 0) => Some(n),
            (repeats, fault_after) => Some(repeats.min(fault_after)),
        }
    }

    /// Whether the guest ends in a fault rather than `HLT`.
    pub fn faults(&self) -> bool {
        self.fault_after != 0 && (self.repeats == 0 || self.fault_after <= self.repeats)
    }
}

/// The program, 16-bit real-mode machine code. Addresses in the comments are offsets from
/// [`CODE_ADDR`]; `0x2000`, `0x2004`, `0x2008` and `0x200c` are the table's count, repeats,
/// fault_after and first point ([`TABLE_ADDR`] + 0, 4, 8 and 12). `0x66` is the operand-size
/// prefix that makes an instruction use 32-bit registers (or, on `LIDT`, a 32-bit base) in 16-bit
/// code.
///
/// Registers: EBP = pass number, SI = current point, EDI = saved EDX of `CPUID` (DX is needed for
/// the port number).
#[rustfmt::skip]
static PROGRAM: [u8; 0x8d] = [
    0x66, 0x31, 0xED,             // 00: xor   ebp, ebp             ; pass = 0
    // pass_loop:
    0x66, 0xA1, 0x08, 0x20,       // 03: mov   eax, [0x2008]        ; fault_after
    0x66, 0x85, 0xC0,             // 07: test  eax, eax
    0x74, 0x05,                   // 0a: jz    check_repeats (0x11) ; 0 = never
    0x66, 0x39, 0xC5,             // 0c: cmp   ebp, eax
    0x73, 0x6C,                   // 0f: jae   fault (0x7d)         ; pass >= fault_after: crash
    // check_repeats:
    0x66, 0xA1, 0x04, 0x20,       // 11: mov   eax, [0x2004]        ; repeats
    0x66, 0x85, 0xC0,             // 15: test  eax, eax
    0x74, 0x05,                   // 18: jz    begin (0x1f)         ; 0 = forever
    0x66, 0x39, 0xC5,             // 1a: cmp   ebp, eax
    0x73, 0x5B,                   // 1d: jae   done (0x7a)          ; pass >= repeats: stop
    // begin:
    0xBA, 0x10, 0x05,             // 1f: mov   dx, 0x510            ; PORT_PASS_BEGIN
    0x66, 0x89, 0xE8,             // 22: mov   eax, ebp
    0x66, 0xEF,                   // 25: out   dx, eax              ; pass number
    0xBE, 0x0C, 0x20,             // 27: mov   si, 0x200c           ; first point
    0x83, 0x3E, 0x00, 0x20, 0x00, // 2a: cmp   word [0x2000], 0     ; count == 0?
    0x74, 0x3D,                   // 2f: jz    pass_end (0x6e)
    // point_loop:
    0xBA, 0x11, 0x05,             // 31: mov   dx, 0x511            ; PORT_RESULT
    0x66, 0x8B, 0x04,             // 34: mov   eax, [si]            ; leaf
    0x66, 0xEF,                   // 37: out   dx, eax
    0x66, 0x8B, 0x4C, 0x04,       // 39: mov   ecx, [si+4]          ; subleaf
    0x66, 0x89, 0xC8,             // 3d: mov   eax, ecx
    0x66, 0xEF,                   // 40: out   dx, eax
    0x66, 0x8B, 0x04,             // 42: mov   eax, [si]            ; leaf again
    0x0F, 0xA2,                   // 45: cpuid                      ; eax..edx <- CPUID(eax, ecx)
    0x66, 0x89, 0xD7,             // 47: mov   edi, edx             ; keep edx, dx is the port
    0xBA, 0x11, 0x05,             // 4a: mov   dx, 0x511            ; PORT_RESULT
    0x66, 0xEF,                   // 4d: out   dx, eax              ; eax
    0x66, 0x89, 0xD8,             // 4f: mov   eax, ebx
    0x66, 0xEF,                   // 52: out   dx, eax              ; ebx
    0x66, 0x89, 0xC8,             // 54: mov   eax, ecx
    0x66, 0xEF,                   // 57: out   dx, eax              ; ecx
    0x66, 0x89, 0xF8,             // 59: mov   eax, edi
    0x66, 0xEF,                   // 5c: out   dx, eax              ; edx
    0x83, 0xC6, 0x08,             // 5e: add   si, 8                ; next point
    0xA1, 0x00, 0x20,             // 61: mov   ax, [0x2000]         ; count (<= 256)
    0xC1, 0xE0, 0x03,             // 64: shl   ax, 3
    0x05, 0x0C, 0x20,             // 67: add   ax, 0x200c           ; end of the points
    0x39, 0xC6,                   // 6a: cmp   si, ax
    0x72, 0xC3,                   // 6c: jb    point_loop (0x31)
    // pass_end:
    0xBA, 0x12, 0x05,             // 6e: mov   dx, 0x512            ; PORT_PASS_END
    0x66, 0x89, 0xE8,             // 71: mov   eax, ebp
    0x66, 0xEF,                   // 74: out   dx, eax              ; pass number
    0x66, 0x45,                   // 76: inc   ebp
    0xEB, 0x89,                   // 78: jmp   pass_loop (0x03)
    // done:
    0xF4,                         // 7a: hlt
    0xEB, 0xFD,                   // 7b: jmp   done (0x7a)          ; if HLT ever returns
    // fault:
    0x66, 0x0F, 0x01, 0x1E, 0x87, 0x10, // 7d: lidt [0x1087]        ; limit 0, base FAULT_IDT_BASE
    0x0F, 0x0B,                   // 83: ud2                        ; undeliverable: triple fault
    0xEB, 0xF6,                   // 85: jmp   fault (0x7d)         ; never reached
    // fault_idt (FAULT_IDT_OFFSET): the 6-byte descriptor `LIDT` loads
    0x00, 0x00,                   // 87: limit 0
    0x00, 0x00, 0xFF, 0xFF,       // 89: base 0xffff0000 (FAULT_IDT_BASE)
];

/// The probe program's machine code, to be loaded at [`CODE_ADDR`].
pub fn program() -> &'static [u8] {
    &PROGRAM
}

/// Encode the probe table of `program` (see the module docs for the format).
pub fn encode_table(program: &GuestProgram<'_>) -> Result<Vec<u8>, GuestError> {
    let points = program.points;
    if points.len() > MAX_POINTS {
        return Err(GuestError::TooManyPoints {
            count: points.len(),
            max: MAX_POINTS,
        });
    }
    let mut table = Vec::with_capacity(TABLE_HEADER + POINT_SIZE * points.len());
    table.extend_from_slice(&(points.len() as u32).to_le_bytes());
    table.extend_from_slice(&program.repeats.to_le_bytes());
    table.extend_from_slice(&program.fault_after.to_le_bytes());
    for (leaf, subleaf) in points {
        table.extend_from_slice(&leaf.to_le_bytes());
        table.extend_from_slice(&subleaf.to_le_bytes());
    }
    Ok(table)
}

/// [`load_with`] a program that probes `points` `repeats` times (0 = forever) and never faults.
pub fn load(mem: &GuestMemoryMmap, points: &[(u32, u32)], repeats: u32) -> Result<(), GuestError> {
    load_with(
        mem,
        &GuestProgram {
            points,
            repeats,
            fault_after: 0,
        },
        Placement::Write,
    )
}

/// Write the program at [`CODE_ADDR`] and the probe table of `program` at [`TABLE_ADDR`] into
/// `mem`, which must cover `0..MEMORY_SIZE` (at least up to the end of the table). A program that
/// faults on purpose also needs the vector table at [`FAULT_IDT_BASE`] to be outside `mem` (see
/// the module docs); otherwise this fails with [`GuestError::FaultIdtInMemory`]. With
/// [`Placement::Check`], nothing is written, and the answer is the same.
pub fn load_with(
    mem: &GuestMemoryMmap,
    program: &GuestProgram<'_>,
    placement: Placement,
) -> Result<(), GuestError> {
    let table = encode_table(program)?;
    if program.fault_after != 0 {
        let idt = FAULT_IDT_BASE..FAULT_IDT_BASE + VECTOR_TABLE_SIZE;
        if let Some(region) = mem.iter().find(|region| {
            let start = region.start_addr().0;
            start < idt.end && idt.start < start.saturating_add(region.len())
        }) {
            return Err(GuestError::FaultIdtInMemory {
                base: FAULT_IDT_BASE,
                region_start: region.start_addr().0,
                region_end: region.start_addr().0.saturating_add(region.len()),
            });
        }
    }
    place(mem, placement, "program", CODE_ADDR, self::program())?;
    place(mem, placement, "probe table", TABLE_ADDR, &table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    /// Offset of the fault path's IDT descriptor in [`PROGRAM`].
    const FAULT_IDT_OFFSET: usize = 0x87;

    #[test]
    fn layout_fits() {
        assert!(CODE_ADDR + program().len() as u64 <= TABLE_ADDR);
        let largest = (TABLE_HEADER + POINT_SIZE * MAX_POINTS) as u64;
        assert!(TABLE_ADDR + largest <= MEMORY_SIZE);
        assert_eq!(ENTRY, CODE_ADDR);
    }

    /// The short jumps land where the comments say (a cheap guard against editing one byte of the
    /// program and forgetting a displacement).
    #[test]
    fn branch_targets() {
        let target = |at: usize| (at as i64 + 2 + i64::from(PROGRAM[at + 1] as i8)) as usize;
        for (at, opcode, to) in [
            (0x0a, 0x74, 0x11),
            (0x0f, 0x73, 0x7d),
            (0x18, 0x74, 0x1f),
            (0x1d, 0x73, 0x7a),
            (0x2f, 0x74, 0x6e),
            (0x6c, 0x72, 0x31),
            (0x78, 0xEB, 0x03),
            (0x7b, 0xEB, 0x7a),
            (0x85, 0xEB, 0x7d),
        ] {
            assert_eq!(PROGRAM[at], opcode, "opcode at {at:#x}");
            assert_eq!(target(at), to, "branch at {at:#x}");
        }
        assert_eq!(PROGRAM[0x7a], 0xF4, "hlt");
        assert_eq!(&PROGRAM[0x83..0x85], [0x0F, 0x0B], "ud2");
    }

    /// The fault path loads the descriptor at the end of the program: limit 0, base
    /// [`FAULT_IDT_BASE`], with a 32-bit operand size so that all 32 bits of the base count.
    #[test]
    fn fault_path_loads_the_empty_idt() {
        let descriptor_addr = CODE_ADDR as usize + FAULT_IDT_OFFSET;
        let mut lidt = vec![0x66, 0x0F, 0x01, 0x1E];
        lidt.extend_from_slice(&(descriptor_addr as u16).to_le_bytes());
        assert_eq!(&PROGRAM[0x7d..0x83], lidt.as_slice());
        let descriptor = &PROGRAM[FAULT_IDT_OFFSET..];
        assert_eq!(descriptor.len(), 6, "the descriptor ends the program");
        assert_eq!(&descriptor[..2], [0, 0], "limit 0");
        assert_eq!(
            u64::from(u32::from_le_bytes(descriptor[2..].try_into().unwrap())),
            FAULT_IDT_BASE
        );
    }

    #[test]
    fn ports_and_table_addresses_are_in_the_code() {
        let code = program();
        let contains = |needle: &[u8]| code.windows(needle.len()).any(|w| w == needle);
        for port in [PORT_PASS_BEGIN, PORT_RESULT, PORT_PASS_END] {
            let mut mov_dx = vec![0xBA];
            mov_dx.extend_from_slice(&port.to_le_bytes());
            assert!(contains(&mov_dx), "mov dx, {port:#x}");
        }
        for offset in [0, 4, 8, TABLE_HEADER as u64] {
            let addr = TABLE_ADDR + offset;
            assert!(contains(&(addr as u16).to_le_bytes()), "{addr:#x}");
        }
    }

    fn program_of(points: &[(u32, u32)], repeats: u32, fault_after: u32) -> GuestProgram<'_> {
        GuestProgram {
            points,
            repeats,
            fault_after,
        }
    }

    #[test]
    fn table_encoding() {
        let table = encode_table(&program_of(&[(0x1, 0), (0x7, 1)], 3, 0)).unwrap();
        assert_eq!(
            table,
            [
                2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, // count, repeats, fault_after
                1, 0, 0, 0, 0, 0, 0, 0, // 0x1.0
                7, 0, 0, 0, 1, 0, 0, 0, // 0x7.1
            ]
        );
        assert_eq!(encode_table(&GuestProgram::default()).unwrap(), [0; 12]);
    }

    #[test]
    fn table_encoding_with_a_fault() {
        let table = encode_table(&program_of(&[(0xd, 1)], 0, 0x0102_0304)).unwrap();
        assert_eq!(
            table,
            [
                1, 0, 0, 0, 0, 0, 0, 0, // count 1, repeats 0 (forever)
                4, 3, 2, 1, // fault_after 0x01020304
                0xd, 0, 0, 0, 1, 0, 0, 0, // 0xd.1
            ]
        );
    }

    #[test]
    fn passes_and_faults() {
        let cases = [
            // (repeats, fault_after) -> (passes, faults)
            ((0, 0), (None, false)),
            ((3, 0), (Some(3), false)),
            ((0, 2), (Some(2), true)),
            ((3, 2), (Some(2), true)),
            ((2, 2), (Some(2), true)),
            ((2, 3), (Some(2), false)),
        ];
        for ((repeats, fault_after), (passes, faults)) in cases {
            let program = program_of(&[], repeats, fault_after);
            assert_eq!(program.passes(), passes, "{program:?}");
            assert_eq!(program.faults(), faults, "{program:?}");
        }
    }

    #[test]
    fn table_bounds() {
        let full: Vec<(u32, u32)> = (0..MAX_POINTS as u32).map(|i| (i, 0)).collect();
        assert_eq!(
            encode_table(&program_of(&full, 1, 0)).unwrap().len(),
            TABLE_HEADER + POINT_SIZE * MAX_POINTS
        );
        let mut over = full.clone();
        over.push((0, 0));
        let error = encode_table(&program_of(&over, 1, 1)).unwrap_err();
        assert!(
            matches!(
                error,
                GuestError::TooManyPoints {
                    count: 257,
                    max: 256
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn load_writes_program_and_table() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY_SIZE as usize)]).unwrap();
        load(&mem, &[(0x8000_0001, 0)], 0).unwrap();
        let mut code = vec![0u8; program().len()];
        mem.read_slice(&mut code, GuestAddress(CODE_ADDR)).unwrap();
        assert_eq!(code, program());
        let mut table = [0u8; 20];
        mem.read_slice(&mut table, GuestAddress(TABLE_ADDR))
            .unwrap();
        assert_eq!(
            table,
            [
                1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0x80, 0, 0, 0, 0
            ]
        );
        load_with(
            &mem,
            &program_of(&[(0x8000_0001, 0)], 0, 7),
            Placement::Write,
        )
        .unwrap();
        mem.read_slice(&mut table, GuestAddress(TABLE_ADDR))
            .unwrap();
        assert_eq!(
            table,
            [
                1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0x80, 0, 0, 0, 0
            ]
        );
    }

    /// A faulting program needs the vector table at [`FAULT_IDT_BASE`] to be outside guest
    /// memory; a program that never faults does not care.
    #[test]
    fn a_fault_needs_the_idt_outside_memory() {
        let base = GuestAddress(FAULT_IDT_BASE + 0x100);
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), MEMORY_SIZE as usize),
            (base, 0x1000),
        ])
        .unwrap();
        load(&mem, &[], 0).unwrap();
        let error = load_with(&mem, &program_of(&[], 0, 1), Placement::Write).unwrap_err();
        assert!(
            matches!(
                error,
                GuestError::FaultIdtInMemory {
                    base: FAULT_IDT_BASE,
                    region_start: 0xffff_0100,
                    region_end: 0xffff_1100,
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("0xffff0000"), "{error}");
        // Memory that ends exactly where the vector table begins is fine.
        let below = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), MEMORY_SIZE as usize),
            (GuestAddress(FAULT_IDT_BASE - 0x1000), 0x1000),
        ])
        .unwrap();
        load_with(&below, &program_of(&[], 0, 1), Placement::Write).unwrap();
    }

    #[test]
    fn load_needs_memory() {
        let empty = GuestMemoryMmap::new();
        let error = load(&empty, &[], 1).unwrap_err();
        assert!(
            matches!(
                error,
                GuestError::Memory {
                    what: "program",
                    ..
                }
            ),
            "{error}"
        );
        let small = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap();
        let error = load(&small, &[], 1).unwrap_err();
        assert!(
            matches!(
                error,
                GuestError::Memory {
                    what: "probe table",
                    ..
                }
            ),
            "{error}"
        );
    }

    /// A check writes nothing, and answers what the write would: room, or the write's error.
    #[test]
    fn a_check_writes_nothing_and_fails_as_the_write_would() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY_SIZE as usize)]).unwrap();
        let probe = program_of(&[(0x8000_0001, 0)], 3, 0);
        load_with(&mem, &probe, Placement::Check).unwrap();
        let mut code = vec![0xffu8; program().len()];
        mem.read_slice(&mut code, GuestAddress(CODE_ADDR)).unwrap();
        assert!(code.iter().all(|&b| b == 0), "a check wrote the program");
        let mut table = [0xffu8; 20];
        mem.read_slice(&mut table, GuestAddress(TABLE_ADDR))
            .unwrap();
        assert_eq!(table, [0; 20], "a check wrote the probe table");
        let small = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap();
        for memory in [GuestMemoryMmap::new(), small] {
            let written = load_with(&memory, &probe, Placement::Write).unwrap_err();
            let checked = load_with(&memory, &probe, Placement::Check).unwrap_err();
            assert_eq!(checked.to_string(), written.to_string());
        }
    }
}
