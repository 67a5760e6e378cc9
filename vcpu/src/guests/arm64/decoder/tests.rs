//! Decoder tests on exit sequences built from the protocol (independently of the program
//! generator), well-formed and malformed.

use super::*;
use crate::guests::arm64::{REPORT_BASE, SmcccStatus};
use crate::model::arm64::catalog::{ID_AA64ISAR0_EL1, ID_AA64MMFR0_EL1, ID_AA64PFR0_EL1};
use crate::model::arm64::smccc::{
    PSCI_VERSION, SMCCC_ARCH_FEATURES, SMCCC_ARCH_WORKAROUND_1, TRNG_VERSION,
};

const REGS: [SysReg; 3] = [ID_AA64PFR0_EL1, ID_AA64ISAR0_EL1, ID_AA64MMFR0_EL1];
const CALLS: [SmcccCall; 2] = [
    SmcccCall::new(TRNG_VERSION),
    SmcccCall::with_arg(SMCCC_ARCH_FEATURES, SMCCC_ARCH_WORKAROUND_1 as u64),
];

fn program(repeats: u32, finish: Finish) -> Arm64GuestProgram<'static> {
    Arm64GuestProgram {
        id_regs: &REGS,
        calls: &CALLS,
        repeats,
        finish,
    }
}

fn store(addr: u64, word: u64) -> VcpuExit {
    VcpuExit::MmioWrite {
        addr,
        data: word.to_le_bytes()[..].into(),
    }
}

fn tag(tag: Tag) -> VcpuExit {
    store(REPORT_TAG, tag.encode())
}

fn value(word: u64) -> VcpuExit {
    store(REPORT_VALUE, word)
}

fn shutdown() -> VcpuExit {
    VcpuExit::SystemEvent {
        kind: SYSTEM_EVENT_SHUTDOWN,
        data: vec![0],
    }
}

fn reg_value(reg: SysReg) -> u64 {
    reg.kvm_reg_id().rotate_left(17)
}

fn call_ret(call: &SmcccCall) -> [u64; 4] {
    [u64::MAX, call.args[0], 0, u64::from(call.function_id)]
}

/// Exits per pass of [`REGS`] and [`CALLS`].
const PER_PASS: usize = 2 + 2 * REGS.len() + 5 * CALLS.len() + 2;

/// The exits of one pass of `p`.
fn pass(p: &Arm64GuestProgram<'_>, number: u64) -> Vec<VcpuExit> {
    let mut exits = vec![tag(Tag::PASS_BEGIN), value(number)];
    for (i, reg) in p.id_regs.iter().enumerate() {
        exits.push(tag(Tag::id_reg(i as u16, reg.encoding())));
        exits.push(value(reg_value(*reg)));
    }
    for (i, call) in p.calls.iter().enumerate() {
        exits.push(tag(Tag::call(i as u16, call.function_id)));
        exits.extend(call_ret(call).map(value));
    }
    exits.extend([tag(Tag::PASS_END), value(number)]);
    exits
}

/// The exits a well-behaved guest produces for `p` (`passes` of them when it repeats forever).
fn script(p: &Arm64GuestProgram<'_>, passes: u64) -> Vec<VcpuExit> {
    let mut exits: Vec<VcpuExit> = (0..passes).flat_map(|n| pass(p, n)).collect();
    if p.repeats != 0 && p.finish == Finish::PowerOff {
        exits.push(shutdown());
    }
    exits
}

/// Feed `exits`; the decoder's answer to the last one; all earlier ones must be `Continue`.
fn run(decoder: &mut Arm64Decoder, exits: &[VcpuExit]) -> Result<Step, Arm64ProtocolError> {
    let (last, rest) = exits.split_last().expect("at least one exit");
    for (i, exit) in rest.iter().enumerate() {
        assert_eq!(
            decoder.feed(exit),
            Ok(Step::Continue),
            "exit #{} {exit}",
            i + 1
        );
    }
    decoder.feed(last)
}

fn expected_regs() -> Vec<IdRegSeen> {
    REGS.iter()
        .map(|r| IdRegSeen {
            id: r.kvm_reg_id(),
            value: reg_value(*r),
        })
        .collect()
}

fn expected_calls() -> Vec<SmcccResult> {
    CALLS
        .iter()
        .map(|c| SmcccResult {
            function_id: c.function_id,
            args: c.args,
            ret: call_ret(c),
        })
        .collect()
}

#[test]
fn happy_path_powers_off() {
    let p = program(2, Finish::PowerOff);
    let mut decoder = Arm64Decoder::new(&p);
    assert_eq!(run(&mut decoder, &script(&p, 2)), Ok(Step::Done));
    assert_eq!(decoder.exits(), 2 * PER_PASS as u64 + 1);
    // Running the vCPU again after SYSTEM_OFF: still off, still done.
    assert_eq!(decoder.feed(&shutdown()), Ok(Step::Done));
    let report = decoder.finish();
    assert_eq!(
        report,
        Arm64GuestReport {
            id_regs: expected_regs(),
            calls: expected_calls(),
            passes: 2,
            differing_passes: 0,
            first_differences: Vec::new(),
            powered_off: true,
        }
    );
    assert!(report.passes_agree());
    assert_eq!(report.calls[0].status(), SmcccStatus::NotSupported);
    assert_eq!(
        report.describe(),
        [
            format!("ID_AA64PFR0_EL1 = {:#018x}", reg_value(ID_AA64PFR0_EL1)),
            format!("ID_AA64ISAR0_EL1 = {:#018x}", reg_value(ID_AA64ISAR0_EL1)),
            format!("ID_AA64MMFR0_EL1 = {:#018x}", reg_value(ID_AA64MMFR0_EL1)),
            "TRNG_VERSION -> NOT_SUPPORTED (-1)".to_string(),
            "SMCCC_ARCH_FEATURES(SMCCC_ARCH_WORKAROUND_1) -> NOT_SUPPORTED (-1)".to_string(),
        ]
    );
}

#[test]
fn parking_completes_at_the_last_pass_end() {
    let p = program(2, Finish::Park);
    let mut decoder = Arm64Decoder::new(&p);
    assert_eq!(run(&mut decoder, &script(&p, 2)), Ok(Step::Done));
    let error = decoder.feed(&tag(Tag::PASS_BEGIN)).unwrap_err();
    assert!(
        matches!(error, Arm64ProtocolError::OutOfOrder { exit, .. } if exit == 2 * PER_PASS as u64 + 1),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("the guest parked after its last pass"),
        "{error}"
    );
    let error = decoder.feed(&shutdown()).unwrap_err();
    assert!(
        error.to_string().contains("after the guest parked"),
        "{error}"
    );
    let report = decoder.finish();
    assert!(!report.powered_off);
    assert_eq!(report.passes, 2);
}

#[test]
fn an_empty_program() {
    let p = Arm64GuestProgram {
        repeats: 3,
        ..Arm64GuestProgram::default()
    };
    let mut decoder = Arm64Decoder::new(&p);
    assert_eq!(run(&mut decoder, &script(&p, 3)), Ok(Step::Done));
    let report = decoder.finish();
    assert_eq!(report.passes, 3);
    assert!(report.id_regs.is_empty() && report.calls.is_empty());
    // Registers only, calls only.
    for (id_regs, calls) in [(&REGS[..], &[][..]), (&[][..], &CALLS[..])] {
        let p = Arm64GuestProgram {
            id_regs,
            calls,
            repeats: 1,
            finish: Finish::PowerOff,
        };
        let mut decoder = Arm64Decoder::new(&p);
        assert_eq!(run(&mut decoder, &script(&p, 1)), Ok(Step::Done));
    }
}

#[test]
fn kicks_are_ignored() {
    let p = program(1, Finish::PowerOff);
    let mut exits = script(&p, 1);
    exits.insert(5, VcpuExit::Interrupted);
    exits.insert(0, VcpuExit::Interrupted);
    exits.push(VcpuExit::Interrupted);
    let mut decoder = Arm64Decoder::new(&p);
    let (kick, exits) = exits.split_last().unwrap();
    assert_eq!(run(&mut decoder, exits), Ok(Step::Done));
    // A kick after the end changes nothing.
    assert_eq!(decoder.feed(kick), Ok(Step::Continue));
    assert_eq!(decoder.finish().passes, 1);
}

/// Replace the value of ID register `reg` in pass `pass` of a [`script`].
fn set_reg(exits: &mut [VcpuExit], pass: usize, reg: usize, word: u64) {
    exits[pass * PER_PASS + 2 + 2 * reg + 1] = value(word);
}

#[test]
fn passes_that_differ_are_counted_in_constant_size() {
    const PASSES: u64 = 1000;
    let p = program(0, Finish::PowerOff);
    let mut exits = script(&p, PASSES);
    // Every third pass after the first reads a different ISAR0.
    for n in (3..PASSES as usize).step_by(3) {
        set_reg(&mut exits, n, 1, n as u64);
    }
    // Pass 9 also gets a different call answer, but its first difference is the register.
    // Pass 8 gets only a different call answer.
    for n in [8, 9] {
        exits[n * PER_PASS + 2 + 2 * REGS.len() + 1] = value(0);
    }
    let mut decoder = Arm64Decoder::new(&p);
    for chunk in exits.chunks(PER_PASS) {
        assert_eq!(run(&mut decoder, chunk), Ok(Step::Continue));
        let report = decoder.clone().finish();
        assert!(report.first_differences.len() <= MAX_DIFFERING_KEPT);
    }
    assert_eq!(decoder.passes_done(), PASSES);
    let report = decoder.clone().finish();
    assert_eq!(report.id_regs, expected_regs());
    assert_eq!(report.differing_passes, (PASSES - 1) / 3 + 1);
    let passes: Vec<u64> = report.first_differences.iter().map(|d| d.pass()).collect();
    assert_eq!(passes, [3, 6, 8, 9, 12, 15, 18, 21]);
    assert_eq!(
        report.first_differences[0],
        Arm64Difference::IdReg {
            pass: 3,
            first: expected_regs()[1],
            seen: IdRegSeen {
                id: ID_AA64ISAR0_EL1.kvm_reg_id(),
                value: 3
            }
        }
    );
    let Arm64Difference::Call { first, seen, .. } = report.first_differences[2] else {
        panic!("{:?}", report.first_differences[2]);
    };
    assert_eq!((first.ret[0], seen.ret[0]), (u64::MAX, 0));
    assert!(matches!(
        report.first_differences[3],
        Arm64Difference::IdReg { pass: 9, .. }
    ));
    // A program that repeats forever never powers off.
    let error = decoder.feed(&shutdown()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("after pass 1000 although the program repeats forever"),
        "{error}"
    );
}

fn first_error(p: &Arm64GuestProgram<'_>, exits: &[VcpuExit]) -> Arm64ProtocolError {
    let mut decoder = Arm64Decoder::new(p);
    run(&mut decoder, exits).unwrap_err()
}

#[test]
fn unknown_address() {
    let p = program(1, Finish::PowerOff);
    let error = first_error(&p, &[tag(Tag::PASS_BEGIN), store(REPORT_BASE + 0x10, 0)]);
    assert_eq!(
        error,
        Arm64ProtocolError::UnknownAddress {
            exit: 2,
            addr: 0x1000_0010,
            expected: "the pass number (1 of 1) of PASS_BEGIN of pass 0 at 0x10000008".into()
        }
    );
    assert!(
        error
            .to_string()
            .starts_with("exit #2: MMIO write to 0x10000010"),
        "{error}"
    );
}

#[test]
fn wrong_size() {
    let p = program(1, Finish::PowerOff);
    let exit = VcpuExit::MmioWrite {
        addr: REPORT_TAG,
        data: vec![0; 4].into(),
    };
    let error = first_error(&p, &[exit]);
    assert_eq!(
        error,
        Arm64ProtocolError::WrongSize {
            exit: 1,
            addr: REPORT_TAG,
            size: 4,
            expected: "the tag of PASS_BEGIN of pass 0 at 0x10000000".into()
        }
    );
}

#[test]
fn not_a_tag() {
    let p = program(1, Finish::PowerOff);
    let error = first_error(&p, &[store(REPORT_TAG, 0x1234)]);
    assert!(
        matches!(
            error,
            Arm64ProtocolError::NotATag {
                exit: 1,
                word: 0x1234,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("0x0000000000001234 at the tag address"),
        "{error}"
    );
}

#[test]
fn unexpected_tags() {
    let p = program(1, Finish::PowerOff);
    let begin = [tag(Tag::PASS_BEGIN), value(0)];

    // A call where the first register was due.
    let mut exits = begin.to_vec();
    exits.push(tag(Tag::call(0, TRNG_VERSION)));
    let error = first_error(&p, &exits);
    assert_eq!(
        error,
        Arm64ProtocolError::UnexpectedTag {
            exit: 3,
            got: "SMCCC call #0 (TRNG_VERSION)".into(),
            expected: "the tag of ID register #0 (ID_AA64PFR0_EL1) of pass 0 at 0x10000000".into()
        }
    );

    // The right position with another register.
    let mut exits = begin.to_vec();
    exits.push(tag(Tag::id_reg(0, ID_AA64ISAR0_EL1.encoding())));
    let error = first_error(&p, &exits);
    assert!(
        error
            .to_string()
            .contains("announced ID register #0 (ID_AA64ISAR0_EL1)"),
        "{error}"
    );

    // A register skipped.
    let mut exits = script(&p, 1);
    exits.drain(4..6);
    let error = first_error(&p, &exits[..5]);
    assert!(
        matches!(&error, Arm64ProtocolError::UnexpectedTag { exit: 5, got, .. } if got.contains("#2")),
        "{error}"
    );

    // PASS_END before the calls.
    let mut exits = script(&p, 1);
    exits.truncate(2 + 2 * REGS.len());
    exits.push(tag(Tag::PASS_END));
    let error = first_error(&p, &exits);
    assert!(
        error
            .to_string()
            .contains("expected the tag of SMCCC call #0 (TRNG_VERSION)"),
        "{error}"
    );

    // SYSTEM_OFF returned where a pass was due.
    let error = first_error(&p, &[tag(Tag::OFF_RETURNED)]);
    assert!(
        matches!(error, Arm64ProtocolError::UnexpectedTag { exit: 1, .. }),
        "{error}"
    );

    // After the last pass, anything but the power-off or its failure.
    let mut exits = script(&p, 1);
    exits.pop();
    exits.push(tag(Tag::PASS_END));
    let error = first_error(&p, &exits);
    assert!(
        error
            .to_string()
            .contains("expected SYSTEM_EVENT type 1 (SHUTDOWN)"),
        "{error}"
    );
}

#[test]
fn out_of_order_words() {
    let p = program(1, Finish::PowerOff);
    // A value before any tag.
    let error = first_error(&p, &[value(7)]);
    assert_eq!(
        error,
        Arm64ProtocolError::OutOfOrder {
            exit: 1,
            got: "value 0x7 with no tag before it".into(),
            expected: "the tag of PASS_BEGIN of pass 0 at 0x10000000".into()
        }
    );
    // A tag in the middle of a call's values.
    let mut exits = script(&p, 1);
    let call = 2 + 2 * REGS.len();
    exits.truncate(call + 3);
    exits.push(tag(Tag::call(1, SMCCC_ARCH_FEATURES)));
    let error = first_error(&p, &exits);
    assert!(
        matches!(error, Arm64ProtocolError::OutOfOrder { exit, .. } if exit == call as u64 + 4)
    );
    assert!(
        error
            .to_string()
            .contains("expected the x2 (3 of 4) of SMCCC call #0 (TRNG_VERSION) of pass 0"),
        "{error}"
    );
    // An extra value after a register's one.
    let mut exits = script(&p, 1);
    exits.truncate(4);
    exits.push(value(1));
    let error = first_error(&p, &exits);
    assert!(
        error
            .to_string()
            .contains("expected the tag of ID register #1 (ID_AA64ISAR0_EL1)"),
        "{error}"
    );
    // Anything after the power-off.
    let mut decoder = Arm64Decoder::new(&p);
    assert_eq!(run(&mut decoder, &script(&p, 1)), Ok(Step::Done));
    let error = decoder.feed(&value(0)).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no further exit (the guest powered off"),
        "{error}"
    );
}

#[test]
fn wrong_pass_numbers() {
    let p = program(2, Finish::PowerOff);
    let error = first_error(&p, &[tag(Tag::PASS_BEGIN), value(1)]);
    assert_eq!(
        error,
        Arm64ProtocolError::WrongPass {
            exit: 2,
            which: "PASS_BEGIN",
            got: 1,
            expected: 0
        }
    );
    let mut exits = script(&p, 2);
    exits.truncate(2 * PER_PASS);
    *exits.last_mut().unwrap() = value(7);
    let error = first_error(&p, &exits);
    assert_eq!(
        error,
        Arm64ProtocolError::WrongPass {
            exit: 2 * PER_PASS as u64,
            which: "PASS_END",
            got: 7,
            expected: 1
        }
    );
}

#[test]
fn too_many_passes() {
    let p = program(1, Finish::PowerOff);
    let mut exits = pass(&p, 0);
    exits.push(tag(Tag::PASS_BEGIN));
    let error = first_error(&p, &exits);
    assert!(
        matches!(error, Arm64ProtocolError::TooManyPasses { exit, repeats: 1, .. } if exit == PER_PASS as u64 + 1),
        "{error}"
    );
    assert!(
        error.to_string().contains("expected SYSTEM_EVENT"),
        "{error}"
    );
}

#[test]
fn early_power_off() {
    let p = program(2, Finish::PowerOff);
    let mut exits = pass(&p, 0);
    exits.push(shutdown());
    let error = first_error(&p, &exits);
    assert!(
        matches!(&error, Arm64ProtocolError::EarlyPowerOff { when, .. } if when == "after 1 of 2 passes"),
        "{error}"
    );
    let mut exits = pass(&p, 0);
    exits.truncate(2 + 2 * REGS.len() + 5 + 1);
    exits.push(shutdown());
    let error = first_error(&p, &exits);
    assert!(
        error
            .to_string()
            .contains("in the middle of pass 0, after 3 of 3 ID registers and 1 of 2 calls"),
        "{error}"
    );
    // A parking program never powers off.
    let p = program(1, Finish::Park);
    let error = first_error(&p, &[shutdown()]);
    assert!(
        error.to_string().contains("SYSTEM_OFF after 0 of 1 passes"),
        "{error}"
    );
}

#[test]
fn system_off_returned() {
    let p = program(1, Finish::PowerOff);
    let mut exits = pass(&p, 0);
    exits.extend([tag(Tag::OFF_RETURNED), value(u64::MAX)]);
    let error = first_error(&p, &exits);
    assert_eq!(
        error,
        Arm64ProtocolError::SystemOffReturned {
            exit: PER_PASS as u64 + 2,
            ret: u64::MAX
        }
    );
    assert!(
        error.to_string().contains("returned 0xffffffffffffffff"),
        "{error}"
    );
}

#[test]
fn guest_exceptions() {
    let p = program(1, Finish::PowerOff);
    let exception = |vector| {
        [
            tag(Tag::exception(vector)),
            value(0x9600_0050),
            value(0x4000_0900),
            value(0x1000_0000),
        ]
    };
    // Before anything was reported.
    let error = first_error(&p, &exception(4));
    assert_eq!(
        error,
        Arm64ProtocolError::GuestException {
            exit: 4,
            vector: 4,
            vector_name: "current EL with SP_ELx, synchronous",
            esr: 0x9600_0050,
            class: "EC 0x25: data abort (a report store KVM could not turn into an MMIO exit)"
                .into(),
            elr: 0x4000_0900,
            far: 0x1000_0000,
            during: "before its first report".into(),
        }
    );
    // In the middle of a call's values: attributed to the call.
    let mut exits = pass(&p, 0);
    exits.truncate(2 + 2 * REGS.len() + 2);
    exits.extend(exception(5));
    let error = first_error(&p, &exits);
    assert!(
        error
            .to_string()
            .contains("exception in SMCCC call #0 (TRNG_VERSION) of pass 0: vector 5"),
        "{error}"
    );
    // During SYSTEM_OFF.
    let mut exits = pass(&p, 0);
    exits.extend(exception(4));
    let error = first_error(&p, &exits);
    assert!(
        error.to_string().contains("exception in PSCI SYSTEM_OFF"),
        "{error}"
    );
    assert_eq!(error.exit(), PER_PASS as u64 + 4);
}

#[test]
fn other_exits() {
    let p = program(1, Finish::PowerOff);
    for (exit, text) in [
        (VcpuExit::Hlt, "HLT exit"),
        (
            VcpuExit::IoOut {
                port: 0x510,
                data: vec![0; 4].into(),
            },
            "IO_OUT port=0x510",
        ),
        (
            VcpuExit::MmioRead {
                addr: REPORT_TAG,
                len: 8,
            },
            "MMIO read of 8 bytes at 0x10000000",
        ),
        (
            VcpuExit::SystemEvent {
                kind: 2,
                data: vec![],
            },
            "SYSTEM_EVENT kind=2",
        ),
        (VcpuExit::Shutdown, "SHUTDOWN exit"),
    ] {
        let error = first_error(&p, &[tag(Tag::PASS_BEGIN), exit]);
        assert!(
            matches!(error, Arm64ProtocolError::UnexpectedExit { exit: 2, .. }),
            "{error}"
        );
        assert!(error.to_string().contains(text), "{error}");
        assert!(
            error.to_string().contains("expected the pass number"),
            "{error}"
        );
    }
}

#[test]
fn report_round_trips_through_serde() {
    let report = Arm64GuestReport {
        id_regs: expected_regs(),
        calls: expected_calls(),
        passes: 3,
        differing_passes: 1,
        first_differences: vec![Arm64Difference::Call {
            pass: 2,
            first: expected_calls()[0],
            seen: SmcccResult {
                ret: [0x1_0000, 0, 0, 0],
                ..expected_calls()[0]
            },
        }],
        powered_off: true,
    };
    let json = serde_json::to_string(&report).unwrap();
    assert_eq!(
        serde_json::from_str::<Arm64GuestReport>(&json).unwrap(),
        report
    );
    // Unused in the protocol: a PSCI_VERSION description for the report's consumers.
    let psci = SmcccResult {
        function_id: PSCI_VERSION,
        args: [0; 3],
        ret: [0x1_0001, 0, 0, 0],
    };
    assert_eq!(psci.describe(), "PSCI_VERSION -> 0x10001 (version 1.1)");
}
