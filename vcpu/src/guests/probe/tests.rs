//! Tests of `probe` (tests), kept beside it so the module itself stays short.

use super::*;

fn out(port: u16, value: u32) -> VcpuExit {
    VcpuExit::IoOut {
        port,
        data: value.to_le_bytes()[..].into(),
    }
}

fn result_of(leaf: u32, subleaf: u32) -> GuestSeen {
    GuestSeen {
        leaf,
        subleaf,
        eax: leaf ^ 0xa,
        ebx: leaf ^ 0xb,
        ecx: subleaf ^ 0xc,
        edx: 0xd,
    }
}

/// The exits a well-behaved guest produces.
fn script(points: &[(u32, u32)], passes: u32) -> Vec<VcpuExit> {
    let mut exits = Vec::new();
    for pass in 0..passes {
        exits.push(out(PORT_PASS_BEGIN, pass));
        for &(leaf, subleaf) in points {
            let r = result_of(leaf, subleaf);
            for word in [r.leaf, r.subleaf, r.eax, r.ebx, r.ecx, r.edx] {
                exits.push(out(PORT_RESULT, word));
            }
        }
        exits.push(out(PORT_PASS_END, pass));
    }
    exits.push(VcpuExit::Hlt);
    exits
}

/// Feed `exits`; the decoder's answer to the last one, all earlier ones must be `Continue`.
fn run(decoder: &mut ProbeDecoder, exits: &[VcpuExit]) -> Result<Step, GuestProtocolError> {
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

const POINTS: [(u32, u32); 3] = [(0x0, 0), (0x7, 1), (0x8000_0001, 0)];

#[test]
fn happy_path() {
    let mut decoder = ProbeDecoder::new(&POINTS, 2);
    assert_eq!(run(&mut decoder, &script(&POINTS, 2)), Ok(Step::Done));
    assert_eq!(decoder.exits(), 2 * (2 + 6 * 3) + 1);
    // A HLT that returns and halts again is still done.
    assert_eq!(decoder.feed(&VcpuExit::Hlt), Ok(Step::Done));
    let report = decoder.finish();
    let expected: Vec<GuestSeen> = POINTS.iter().map(|&(l, s)| result_of(l, s)).collect();
    assert_eq!(
        report,
        GuestReport {
            first_pass: expected,
            passes: 2,
            differing_passes: 0,
            first_differences: Vec::new(),
        }
    );
    assert!(report.passes_agree());
}

/// Replace the ebx word of point `point` in pass `pass` of a [`script`] of `POINTS`.
fn set_ebx(exits: &mut [VcpuExit], pass: usize, point: usize, ebx: u32) {
    let per_pass = 2 + 6 * POINTS.len();
    exits[pass * per_pass + 1 + 6 * point + 3] = out(PORT_RESULT, ebx);
}

#[test]
fn a_later_pass_that_differs() {
    let mut exits = script(&POINTS, 3);
    set_ebx(&mut exits, 1, 1, 0x1234);
    let mut decoder = ProbeDecoder::new(&POINTS, 3);
    assert_eq!(run(&mut decoder, &exits), Ok(Step::Done));
    let report = decoder.finish();
    let expected: Vec<GuestSeen> = POINTS.iter().map(|&(l, s)| result_of(l, s)).collect();
    assert_eq!(report.first_pass, expected);
    assert_eq!(report.passes, 3);
    assert_eq!(report.differing_passes, 1);
    assert!(!report.passes_agree());
    assert_eq!(
        report.first_differences,
        vec![PassDifference {
            pass: 1,
            first: result_of(0x7, 1),
            seen: GuestSeen {
                ebx: 0x1234,
                ..result_of(0x7, 1)
            },
        }]
    );
}

#[test]
fn a_differing_first_pass_is_the_reference() {
    // Pass 0 is the odd one out: every later pass differs from it.
    let mut exits = script(&POINTS, 3);
    set_ebx(&mut exits, 0, 2, 0);
    let mut decoder = ProbeDecoder::new(&POINTS, 3);
    assert_eq!(run(&mut decoder, &exits), Ok(Step::Done));
    let report = decoder.finish();
    assert_eq!(report.first_pass[2].ebx, 0);
    assert_eq!(report.differing_passes, 2);
    let passes: Vec<u64> = report.first_differences.iter().map(|d| d.pass).collect();
    assert_eq!(passes, [1, 2]);
}

#[test]
fn many_passes_keep_the_report_small() {
    const PASSES: u32 = 1000;
    let mut exits = script(&POINTS, PASSES);
    // Every third pass after the first sees a different 0x8000_0001.0 ebx.
    for pass in (3..PASSES as usize).step_by(3) {
        set_ebx(&mut exits, pass, 2, pass as u32);
    }
    let mut decoder = ProbeDecoder::new(&POINTS, PASSES);
    let (hlt, passes) = exits.split_last().unwrap();
    let mut sizes = Vec::new();
    for chunk in passes.chunks(2 + 6 * POINTS.len()) {
        assert_eq!(run(&mut decoder, chunk), Ok(Step::Continue));
        let report = decoder.clone().finish();
        assert_eq!(report.first_pass.len(), POINTS.len());
        assert!(report.first_differences.len() <= MAX_DIFFERING_KEPT);
        sizes.push(report.first_differences.len());
    }
    assert_eq!(decoder.passes_done(), u64::from(PASSES));
    assert_eq!(decoder.feed(hlt), Ok(Step::Done));
    let report = decoder.finish();
    assert_eq!(report.passes, u64::from(PASSES));
    assert_eq!(report.differing_passes, u64::from(PASSES - 1) / 3);
    assert_eq!(report.first_differences.len(), MAX_DIFFERING_KEPT);
    assert_eq!(sizes.iter().max(), Some(&MAX_DIFFERING_KEPT));
    let kept: Vec<u64> = report.first_differences.iter().map(|d| d.pass).collect();
    assert_eq!(kept, [3, 6, 9, 12, 15, 18, 21, 24]);
    assert_eq!(report.first_differences[7].seen.ebx, 24);
    assert_eq!(report.first_differences[7].first, result_of(0x8000_0001, 0));
}

#[test]
fn forever_keeps_counting_in_constant_size() {
    let mut exits = script(&POINTS, 1000);
    exits.pop(); // no HLT: the guest repeats forever
    set_ebx(&mut exits, 500, 0, 7);
    let mut decoder = ProbeDecoder::new(&POINTS, 0);
    assert_eq!(run(&mut decoder, &exits), Ok(Step::Continue));
    assert_eq!(decoder.passes_done(), 1000);
    let report = decoder.clone().finish();
    assert_eq!(report.differing_passes, 1);
    assert_eq!(report.first_differences[0].pass, 500);
    let error = decoder.feed(&VcpuExit::Hlt).unwrap_err();
    assert!(
        error.to_string().contains("after pass 1000 although"),
        "{error}"
    );
}

#[test]
fn kicks_are_ignored() {
    let mut exits = script(&POINTS, 1);
    exits.insert(3, VcpuExit::Interrupted);
    exits.insert(0, VcpuExit::Interrupted);
    let mut decoder = ProbeDecoder::new(&POINTS, 1);
    assert_eq!(run(&mut decoder, &exits), Ok(Step::Done));
    assert_eq!(decoder.finish().passes, 1);
}

#[test]
fn empty_table() {
    let mut decoder = ProbeDecoder::new(&[], 3);
    assert_eq!(run(&mut decoder, &script(&[], 3)), Ok(Step::Done));
    let report = decoder.finish();
    assert_eq!(report.passes, 3);
    assert!(report.first_pass.is_empty());
    assert!(report.passes_agree());
}

#[test]
fn zero_repeats_never_completes() {
    let mut exits = script(&POINTS, 3);
    exits.pop(); // no HLT
    let mut decoder = ProbeDecoder::new(&POINTS, 0);
    assert_eq!(run(&mut decoder, &exits), Ok(Step::Continue));
    assert_eq!(decoder.passes_done(), 3);
    let error = decoder.feed(&VcpuExit::Hlt).unwrap_err();
    assert!(
        matches!(error, GuestProtocolError::EarlyHalt { exit: 61, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("repeats forever"), "{error}");
}

#[test]
fn unknown_port() {
    let mut decoder = ProbeDecoder::new(&POINTS, 1);
    let error = run(&mut decoder, &[out(PORT_PASS_BEGIN, 0), out(0x3f8, 7)]).unwrap_err();
    assert_eq!(
        error,
        GuestProtocolError::UnknownPort {
            exit: 2,
            port: 0x3f8,
            expected: "OUT 0x511 (RESULT) with the leaf of point 0 (0x0.0) in pass 0".into()
        }
    );
    assert!(
        error.to_string().starts_with("exit #2: OUT to port 0x3f8"),
        "{error}"
    );
}

#[test]
fn wrong_size() {
    let mut decoder = ProbeDecoder::new(&POINTS, 1);
    let exit = VcpuExit::IoOut {
        port: PORT_PASS_BEGIN,
        data: vec![0].into(),
    };
    let error = decoder.feed(&exit).unwrap_err();
    assert!(
        matches!(
            error,
            GuestProtocolError::WrongSize {
                exit: 1,
                port: PORT_PASS_BEGIN,
                size: 1,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("PASS_BEGIN) of pass 0"),
        "{error}"
    );
}

#[test]
fn results_out_of_order() {
    // The guest reports the second point first.
    let mut decoder = ProbeDecoder::new(&POINTS, 1);
    let error = run(
        &mut decoder,
        &[out(PORT_PASS_BEGIN, 0), out(PORT_RESULT, 0x7)],
    )
    .unwrap_err();
    assert!(
        matches!(error, GuestProtocolError::OutOfOrder { exit: 2, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("table position 1"), "{error}");

    // A result word before any pass began.
    let mut decoder = ProbeDecoder::new(&POINTS, 1);
    let error = decoder.feed(&out(PORT_RESULT, 0)).unwrap_err();
    assert!(
        matches!(error, GuestProtocolError::OutOfOrder { exit: 1, .. }),
        "{error}"
    );

    // PASS_END before every point is in.
    let mut exits = script(&POINTS, 1);
    exits.truncate(1 + 6);
    exits.push(out(PORT_PASS_END, 0));
    let mut decoder = ProbeDecoder::new(&POINTS, 1);
    let error = run(&mut decoder, &exits).unwrap_err();
    assert!(
        matches!(error, GuestProtocolError::OutOfOrder { exit: 8, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("after 1 of 3 points"), "{error}");

    // PASS_BEGIN inside a pass.
    let mut decoder = ProbeDecoder::new(&POINTS, 1);
    let error = run(
        &mut decoder,
        &[out(PORT_PASS_BEGIN, 0), out(PORT_PASS_BEGIN, 0)],
    )
    .unwrap_err();
    assert!(
        matches!(error, GuestProtocolError::OutOfOrder { exit: 2, .. }),
        "{error}"
    );
}

#[test]
fn point_not_in_the_table() {
    let mut decoder = ProbeDecoder::new(&POINTS, 1);
    let error = run(
        &mut decoder,
        &[out(PORT_PASS_BEGIN, 0), out(PORT_RESULT, 0x4000_0000)],
    )
    .unwrap_err();
    assert_eq!(
        error,
        GuestProtocolError::UnknownPoint {
            exit: 2,
            pass: 0,
            point: "0x40000000".into(),
            expected: "OUT 0x511 (RESULT) with the leaf of point 0 (0x0.0) in pass 0".into()
        }
    );
    // Right leaf, subleaf not in the table.
    let mut exits = script(&POINTS, 1);
    exits.truncate(1 + 6 + 1);
    exits.push(out(PORT_RESULT, 5));
    let mut decoder = ProbeDecoder::new(&POINTS, 1);
    let error = run(&mut decoder, &exits).unwrap_err();
    assert!(
        matches!(&error, GuestProtocolError::UnknownPoint { exit: 9, point, .. } if point == "0x7.5"),
        "{error}"
    );
}

#[test]
fn halt_mid_pass_and_early() {
    let mut exits = script(&POINTS, 1);
    exits.truncate(4);
    exits.push(VcpuExit::Hlt);
    let mut decoder = ProbeDecoder::new(&POINTS, 1);
    let error = run(&mut decoder, &exits).unwrap_err();
    assert!(
        matches!(error, GuestProtocolError::EarlyHalt { exit: 5, .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("middle of pass 0, after 0 of 3 points"),
        "{error}"
    );
    assert!(
        error.to_string().contains("with the ebx of point 0"),
        "{error}"
    );

    let mut decoder = ProbeDecoder::new(&POINTS, 2);
    let error = run(&mut decoder, &script(&POINTS, 1)).unwrap_err();
    assert!(
        error.to_string().contains("HLT after 1 of 2 passes"),
        "{error}"
    );
    assert_eq!(decoder.finish().passes, 1);
}

#[test]
fn too_many_passes() {
    let mut exits = script(&POINTS, 2);
    exits.pop();
    let mut decoder = ProbeDecoder::new(&POINTS, 1);
    // Pass 0 is exits 1..=20; exit 21 begins a second pass.
    let error = run(&mut decoder, &exits[..21]).unwrap_err();
    assert_eq!(
        error,
        GuestProtocolError::TooManyPasses {
            exit: 21,
            pass: 1,
            repeats: 1
        }
    );
    assert!(error.to_string().ends_with("expected HLT"), "{error}");
}

#[test]
fn wrong_pass_numbers() {
    let mut decoder = ProbeDecoder::new(&POINTS, 2);
    let error = decoder.feed(&out(PORT_PASS_BEGIN, 1)).unwrap_err();
    assert_eq!(
        error,
        GuestProtocolError::WrongPass {
            exit: 1,
            port_name: "PASS_BEGIN",
            got: 1,
            expected: 0
        }
    );
    let mut exits = script(&POINTS, 1);
    exits.pop();
    *exits.last_mut().unwrap() = out(PORT_PASS_END, 9);
    let mut decoder = ProbeDecoder::new(&POINTS, 1);
    let error = run(&mut decoder, &exits).unwrap_err();
    assert!(
        matches!(
            error,
            GuestProtocolError::WrongPass {
                port_name: "PASS_END",
                got: 9,
                expected: 0,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn other_exits_and_exits_after_halt() {
    let mut decoder = ProbeDecoder::new(&POINTS, 1);
    let error = decoder
        .feed(&VcpuExit::MmioWrite {
            addr: 0xd000,
            data: vec![1].into(),
        })
        .unwrap_err();
    assert!(
        matches!(error, GuestProtocolError::UnexpectedExit { exit: 1, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("MMIO_WRITE addr=0xd000"),
        "{error}"
    );

    let mut decoder = ProbeDecoder::new(&[], 1);
    assert_eq!(run(&mut decoder, &script(&[], 1)), Ok(Step::Done));
    let error = decoder.feed(&out(PORT_PASS_BEGIN, 1)).unwrap_err();
    assert!(
        matches!(error, GuestProtocolError::OutOfOrder { exit: 4, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("no further exit"), "{error}");
    assert_eq!(error.exit(), 4);
}

#[test]
fn report_round_trips_through_serde() {
    let report = GuestReport {
        first_pass: vec![result_of(1, 0), result_of(7, 0)],
        passes: 4,
        differing_passes: 1,
        first_differences: vec![PassDifference {
            pass: 2,
            first: result_of(7, 0),
            seen: result_of(7, 1),
        }],
    };
    let json = serde_json::to_string(&report).unwrap();
    assert_eq!(serde_json::from_str::<GuestReport>(&json).unwrap(), report);
}
