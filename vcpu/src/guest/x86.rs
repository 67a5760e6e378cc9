//! The built-in x86 guest: a 16-bit real-mode program that executes `CPUID` for every point of a
//! probe table and reports the results through I/O ports.
//!
//! # Memory layout (64 KiB of guest memory at guest-physical address 0)
//!
//! | range | contents |
//! |---|---|
//! | `0x0000..0x1000` | stack, growing down from [`CODE_ADDR`] (the program itself uses none) |
//! | [`CODE_ADDR`] `0x1000` | the program ([`program`]), entered at [`ENTRY`] |
//! | [`TABLE_ADDR`] `0x2000` | the probe table ([`encode_table`]) |
//!
//! The vCPU starts in real mode with CS = DS = SS = 0 (see [`crate::call::VcpuCall::SetBootState`]),
//! so linear, physical and 16-bit offsets coincide.
//!
//! # Probe table (little endian, at [`TABLE_ADDR`])
//!
//! `u32 count`, `u32 repeats` (0 = repeat forever), then `count` × (`u32 leaf`, `u32 subleaf`);
//! at most [`MAX_POINTS`] points.
//!
//! # Report protocol (every access is `OUT dx, eax`, 4 bytes)
//!
//! For each pass `p` (0-based):
//! 1. [`PORT_PASS_BEGIN`] ← `p`;
//! 2. for each point in table order, [`PORT_RESULT`] ← leaf, subleaf, eax, ebx, ecx, edx;
//! 3. [`PORT_PASS_END`] ← `p`.
//!
//! After `repeats` passes: `HLT` (and `HLT` again, should it ever return). The exit sequence is
//! decoded by [`crate::guest::ProbeDecoder`].
//!
//! The program keeps all of its state in registers and never writes memory, so several vCPUs can
//! run the same copy of it against the same table at once.

use crate::guest::GuestError;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

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

/// `OUT`: a pass begins; data = pass number (0-based).
pub const PORT_PASS_BEGIN: u16 = 0x510;
/// `OUT` ×6 per point: leaf, subleaf, eax, ebx, ecx, edx.
pub const PORT_RESULT: u16 = 0x511;
/// `OUT`: a pass ended; data = pass number.
pub const PORT_PASS_END: u16 = 0x512;

/// Size of the table header (`count`, `repeats`).
const TABLE_HEADER: usize = 8;
/// Size of one table point (`leaf`, `subleaf`).
const POINT_SIZE: usize = 8;

/// The program, 16-bit real-mode machine code. Addresses in the comments are offsets from
/// [`CODE_ADDR`]; `0x2000`, `0x2004` and `0x2008` are [`TABLE_ADDR`] + 0 (count), + 4 (repeats)
/// and + 8 (first point). `0x66` is the operand-size prefix that makes an instruction use 32-bit
/// registers in 16-bit code.
///
/// Registers: EBP = pass number, SI = current point, EDI = saved EDX of `CPUID` (DX is needed for
/// the port number).
#[rustfmt::skip]
static PROGRAM: [u8; 0x6f] = [
    0x66, 0x31, 0xED,             // 00: xor   ebp, ebp             ; pass = 0
    // pass_loop:
    0x66, 0xA1, 0x04, 0x20,       // 03: mov   eax, [0x2004]        ; repeats
    0x66, 0x85, 0xC0,             // 07: test  eax, eax
    0x74, 0x05,                   // 0a: jz    begin (0x11)         ; 0 = forever
    0x66, 0x39, 0xC5,             // 0c: cmp   ebp, eax
    0x73, 0x5B,                   // 0f: jae   done (0x6c)          ; pass >= repeats: stop
    // begin:
    0xBA, 0x10, 0x05,             // 11: mov   dx, 0x510            ; PORT_PASS_BEGIN
    0x66, 0x89, 0xE8,             // 14: mov   eax, ebp
    0x66, 0xEF,                   // 17: out   dx, eax              ; pass number
    0xBE, 0x08, 0x20,             // 19: mov   si, 0x2008           ; first point
    0x83, 0x3E, 0x00, 0x20, 0x00, // 1c: cmp   word [0x2000], 0     ; count == 0?
    0x74, 0x3D,                   // 21: jz    pass_end (0x60)
    // point_loop:
    0xBA, 0x11, 0x05,             // 23: mov   dx, 0x511            ; PORT_RESULT
    0x66, 0x8B, 0x04,             // 26: mov   eax, [si]            ; leaf
    0x66, 0xEF,                   // 29: out   dx, eax
    0x66, 0x8B, 0x4C, 0x04,       // 2b: mov   ecx, [si+4]          ; subleaf
    0x66, 0x89, 0xC8,             // 2f: mov   eax, ecx
    0x66, 0xEF,                   // 32: out   dx, eax
    0x66, 0x8B, 0x04,             // 34: mov   eax, [si]            ; leaf again
    0x0F, 0xA2,                   // 37: cpuid                      ; eax..edx <- CPUID(eax, ecx)
    0x66, 0x89, 0xD7,             // 39: mov   edi, edx             ; keep edx, dx is the port
    0xBA, 0x11, 0x05,             // 3c: mov   dx, 0x511            ; PORT_RESULT
    0x66, 0xEF,                   // 3f: out   dx, eax              ; eax
    0x66, 0x89, 0xD8,             // 41: mov   eax, ebx
    0x66, 0xEF,                   // 44: out   dx, eax              ; ebx
    0x66, 0x89, 0xC8,             // 46: mov   eax, ecx
    0x66, 0xEF,                   // 49: out   dx, eax              ; ecx
    0x66, 0x89, 0xF8,             // 4b: mov   eax, edi
    0x66, 0xEF,                   // 4e: out   dx, eax              ; edx
    0x83, 0xC6, 0x08,             // 50: add   si, 8                ; next point
    0xA1, 0x00, 0x20,             // 53: mov   ax, [0x2000]         ; count (<= 256)
    0xC1, 0xE0, 0x03,             // 56: shl   ax, 3
    0x05, 0x08, 0x20,             // 59: add   ax, 0x2008           ; end of the points
    0x39, 0xC6,                   // 5c: cmp   si, ax
    0x72, 0xC3,                   // 5e: jb    point_loop (0x23)
    // pass_end:
    0xBA, 0x12, 0x05,             // 60: mov   dx, 0x512            ; PORT_PASS_END
    0x66, 0x89, 0xE8,             // 63: mov   eax, ebp
    0x66, 0xEF,                   // 66: out   dx, eax              ; pass number
    0x66, 0x45,                   // 68: inc   ebp
    0xEB, 0x97,                   // 6a: jmp   pass_loop (0x03)
    // done:
    0xF4,                         // 6c: hlt
    0xEB, 0xFD,                   // 6d: jmp   done (0x6c)          ; if HLT ever returns
];

/// The probe program's machine code, to be loaded at [`CODE_ADDR`].
pub fn program() -> &'static [u8] {
    &PROGRAM
}

/// Encode a probe table (see the module docs for the format).
pub fn encode_table(points: &[(u32, u32)], repeats: u32) -> Result<Vec<u8>, GuestError> {
    if points.len() > MAX_POINTS {
        return Err(GuestError::TooManyPoints {
            count: points.len(),
            max: MAX_POINTS,
        });
    }
    let mut table = Vec::with_capacity(TABLE_HEADER + POINT_SIZE * points.len());
    table.extend_from_slice(&(points.len() as u32).to_le_bytes());
    table.extend_from_slice(&repeats.to_le_bytes());
    for (leaf, subleaf) in points {
        table.extend_from_slice(&leaf.to_le_bytes());
        table.extend_from_slice(&subleaf.to_le_bytes());
    }
    Ok(table)
}

/// Write the program at [`CODE_ADDR`] and the probe table at [`TABLE_ADDR`] into `mem`, which
/// must cover `0..MEMORY_SIZE` (at least up to the end of the table).
pub fn load(mem: &GuestMemoryMmap, points: &[(u32, u32)], repeats: u32) -> Result<(), GuestError> {
    let table = encode_table(points, repeats)?;
    write(mem, "program", CODE_ADDR, program())?;
    write(mem, "probe table", TABLE_ADDR, &table)
}

/// Write `bytes` at guest-physical `addr`, all or nothing.
fn write(
    mem: &GuestMemoryMmap,
    what: &'static str,
    addr: u64,
    bytes: &[u8],
) -> Result<(), GuestError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| GuestError::Memory {
            what,
            addr,
            len: bytes.len(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            (0x0f, 0x73, 0x6c),
            (0x21, 0x74, 0x60),
            (0x5e, 0x72, 0x23),
            (0x6a, 0xEB, 0x03),
            (0x6d, 0xEB, 0x6c),
        ] {
            assert_eq!(PROGRAM[at], opcode, "opcode at {at:#x}");
            assert_eq!(target(at), to, "branch at {at:#x}");
        }
        assert_eq!(PROGRAM[0x6c], 0xF4, "hlt");
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
        for addr in [TABLE_ADDR, TABLE_ADDR + 4, TABLE_ADDR + 8] {
            assert!(contains(&(addr as u16).to_le_bytes()), "{addr:#x}");
        }
    }

    #[test]
    fn table_encoding() {
        let table = encode_table(&[(0x1, 0), (0x7, 1)], 3).unwrap();
        assert_eq!(
            table,
            [
                2, 0, 0, 0, 3, 0, 0, 0, // count, repeats
                1, 0, 0, 0, 0, 0, 0, 0, // 0x1.0
                7, 0, 0, 0, 1, 0, 0, 0, // 0x7.1
            ]
        );
        assert_eq!(encode_table(&[], 0).unwrap(), [0; 8]);
    }

    #[test]
    fn table_bounds() {
        let full: Vec<(u32, u32)> = (0..MAX_POINTS as u32).map(|i| (i, 0)).collect();
        assert_eq!(
            encode_table(&full, 1).unwrap().len(),
            TABLE_HEADER + POINT_SIZE * MAX_POINTS
        );
        let mut over = full.clone();
        over.push((0, 0));
        let error = encode_table(&over, 1).unwrap_err();
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
        let mut table = [0u8; 16];
        mem.read_slice(&mut table, GuestAddress(TABLE_ADDR))
            .unwrap();
        assert_eq!(table, [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0x80, 0, 0, 0, 0]);
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
}
