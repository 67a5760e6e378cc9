//! Decoding the CPUID probe's report (see [`crate::guest::x86`] for the protocol).

use crate::call::VcpuExit;
use crate::guest::x86::{PORT_PASS_BEGIN, PORT_PASS_END, PORT_RESULT};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What the guest's `CPUID(leaf, subleaf)` returned: the type the CPU-model checks consume.
pub use crate::cpuid::drift::GuestSeen;

/// How many passes that differ from the first a [`GuestReport`] describes in
/// [`GuestReport::first_differences`]; the rest are only counted.
pub const MAX_DIFFERING_KEPT: usize = 8;

/// What the guest reported, in constant size however many passes it ran: the first *complete*
/// pass in full, and for the later ones only whether they saw the same (a CPU model must never
/// flicker). A pass cut short by a fault or a protocol error is left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestReport {
    /// What the first complete pass saw, one entry per probe point in table order (empty if no
    /// pass completed).
    pub first_pass: Vec<GuestSeen>,
    /// How many complete passes there were.
    pub passes: u64,
    /// How many complete passes saw something different from the first.
    pub differing_passes: u64,
    /// The first few of those passes (at most [`MAX_DIFFERING_KEPT`]), each with its first point
    /// that differs, in pass order.
    pub first_differences: Vec<PassDifference>,
}

impl GuestReport {
    /// Every complete pass saw what the first one saw (trivially true with fewer than two).
    pub fn passes_agree(&self) -> bool {
        self.differing_passes == 0
    }
}

/// A complete pass that saw something different from the first one: its first differing point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassDifference {
    /// The 0-based number of the pass (the first complete pass is pass 0).
    pub pass: u64,
    /// What pass 0 saw at that point.
    pub first: GuestSeen,
    /// What this pass saw there.
    pub seen: GuestSeen,
}

/// Whether the guest has more to say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Run the vCPU again.
    Continue,
    /// The guest halted after its last pass: the report is complete.
    Done,
}

/// The guest's exits did not follow the protocol. `exit` is the 1-based number of the exit (in
/// the order they were fed to the decoder); `expected` says what the protocol allowed there.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum GuestProtocolError {
    #[error("exit #{exit}: OUT to port {port:#x}, which is not a probe port; expected {expected}")]
    UnknownPort {
        exit: u64,
        port: u16,
        expected: String,
    },

    #[error(
        "exit #{exit}: OUT of {size} bytes to port {port:#x}, but the probe only uses 4-byte \
         OUTs; expected {expected}"
    )]
    WrongSize {
        exit: u64,
        port: u16,
        size: usize,
        expected: String,
    },

    #[error("exit #{exit}: {got}; expected {expected}")]
    OutOfOrder {
        exit: u64,
        got: String,
        expected: String,
    },

    #[error(
        "exit #{exit}: pass {pass} reported point {point}, which is not in the probe table; \
         expected {expected}"
    )]
    UnknownPoint {
        exit: u64,
        pass: u32,
        point: String,
        expected: String,
    },

    #[error("exit #{exit}: {port_name} for pass {got}; expected pass {expected}")]
    WrongPass {
        exit: u64,
        port_name: &'static str,
        got: u32,
        expected: u32,
    },

    #[error(
        "exit #{exit}: PASS_BEGIN of pass {pass}, but the table asks for {repeats} passes; \
         expected HLT"
    )]
    TooManyPasses { exit: u64, pass: u32, repeats: u32 },

    #[error("exit #{exit}: HLT {when}; expected {expected}")]
    EarlyHalt {
        exit: u64,
        when: String,
        expected: String,
    },

    #[error("exit #{exit}: {got}; expected {expected}")]
    UnexpectedExit {
        exit: u64,
        got: String,
        expected: String,
    },
}

impl GuestProtocolError {
    /// The 1-based number of the offending exit.
    pub fn exit(&self) -> u64 {
        match self {
            GuestProtocolError::UnknownPort { exit, .. }
            | GuestProtocolError::WrongSize { exit, .. }
            | GuestProtocolError::OutOfOrder { exit, .. }
            | GuestProtocolError::UnknownPoint { exit, .. }
            | GuestProtocolError::WrongPass { exit, .. }
            | GuestProtocolError::TooManyPasses { exit, .. }
            | GuestProtocolError::EarlyHalt { exit, .. }
            | GuestProtocolError::UnexpectedExit { exit, .. } => *exit,
        }
    }
}

/// The names of the six words reported per point.
const WORDS: [&str; 6] = ["leaf", "subleaf", "eax", "ebx", "ecx", "edx"];

/// Where the decoder is in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Between passes: PASS_BEGIN of the next pass, or HLT once every pass is in.
    Idle,
    /// In a pass, waiting for word `word` of the next point.
    Results { word: usize, values: [u32; 6] },
    /// Every point of the pass is in: PASS_END.
    End,
    /// HLT after the last pass.
    Halted,
}

/// Decodes the probe guest's exits into a [`GuestReport`].
#[derive(Clone, Debug)]
pub struct ProbeDecoder {
    points: Vec<(u32, u32)>,
    repeats: u32,
    exits: u64,
    /// Complete passes, the first of them, and how the later ones compared with it.
    report: GuestReport,
    /// The pass in progress (at most one entry per point).
    current: Vec<GuestSeen>,
    phase: Phase,
}

impl ProbeDecoder {
    /// A decoder for a guest loaded with these `points` and `repeats` (0 = forever: the report
    /// then never completes, and it keeps counting passes; its size stays bounded either way).
    pub fn new(points: &[(u32, u32)], repeats: u32) -> Self {
        ProbeDecoder {
            points: points.to_vec(),
            repeats,
            exits: 0,
            report: GuestReport::default(),
            current: Vec::with_capacity(points.len()),
            phase: Phase::Idle,
        }
    }

    /// Exits fed so far.
    pub fn exits(&self) -> u64 {
        self.exits
    }

    /// Complete passes so far.
    pub fn passes_done(&self) -> u64 {
        self.report.passes
    }

    /// The report on the complete passes (a pass cut short by a fault or a protocol error is left
    /// out).
    pub fn finish(self) -> GuestReport {
        self.report
    }

    /// Take one exit. [`VcpuExit::Interrupted`] (a kick from the host, not the guest's doing) is
    /// counted and otherwise ignored; any other exit that is not part of the protocol is an error.
    pub fn feed(&mut self, exit: &VcpuExit) -> Result<Step, GuestProtocolError> {
        self.exits += 1;
        match exit {
            VcpuExit::Interrupted => Ok(Step::Continue),
            VcpuExit::Hlt => self.halt(),
            VcpuExit::IoOut { port, data } => {
                if ![PORT_PASS_BEGIN, PORT_RESULT, PORT_PASS_END].contains(port) {
                    return Err(GuestProtocolError::UnknownPort {
                        exit: self.exits,
                        port: *port,
                        expected: self.expected(),
                    });
                }
                let Ok(bytes) = <[u8; 4]>::try_from(data.as_slice()) else {
                    return Err(GuestProtocolError::WrongSize {
                        exit: self.exits,
                        port: *port,
                        size: data.len(),
                        expected: self.expected(),
                    });
                };
                let value = u32::from_le_bytes(bytes);
                match *port {
                    PORT_PASS_BEGIN => self.pass_begin(value),
                    PORT_RESULT => self.result(value),
                    _ => self.pass_end(value),
                }
            }
            other => Err(GuestProtocolError::UnexpectedExit {
                exit: self.exits,
                got: format!("{other} exit"),
                expected: self.expected(),
            }),
        }
    }

    /// The number of the pass in progress, or of the next one (wraps like the guest's counter).
    fn pass(&self) -> u32 {
        self.report.passes as u32
    }

    fn all_passes_done(&self) -> bool {
        self.repeats != 0 && self.report.passes >= u64::from(self.repeats)
    }

    /// What the protocol allows next, for error messages.
    fn expected(&self) -> String {
        match self.phase {
            Phase::Idle if self.all_passes_done() => {
                format!("HLT after the last of {} passes", self.repeats)
            }
            Phase::Idle => format!(
                "OUT {PORT_PASS_BEGIN:#x} (PASS_BEGIN) of pass {}",
                self.pass()
            ),
            Phase::Results { word, .. } => {
                let index = self.current.len();
                let (leaf, subleaf) = self.points[index];
                format!(
                    "OUT {PORT_RESULT:#x} (RESULT) with the {} of point {index} ({leaf:#x}.{subleaf}) \
                     in pass {}",
                    WORDS[word],
                    self.pass()
                )
            }
            Phase::End => format!("OUT {PORT_PASS_END:#x} (PASS_END) of pass {}", self.pass()),
            Phase::Halted => "no further exit (the guest halted after its last pass)".to_string(),
        }
    }

    fn out_of_order(&self, got: String) -> GuestProtocolError {
        GuestProtocolError::OutOfOrder {
            exit: self.exits,
            got,
            expected: self.expected(),
        }
    }

    fn halt(&mut self) -> Result<Step, GuestProtocolError> {
        let when = match self.phase {
            Phase::Halted => return Ok(Step::Done),
            Phase::Idle if self.all_passes_done() => {
                self.phase = Phase::Halted;
                return Ok(Step::Done);
            }
            Phase::Idle if self.repeats == 0 => {
                format!(
                    "after pass {} although the table repeats forever",
                    self.report.passes
                )
            }
            Phase::Idle => format!("after {} of {} passes", self.report.passes, self.repeats),
            Phase::Results { .. } | Phase::End => format!(
                "in the middle of pass {}, after {} of {} points",
                self.pass(),
                self.current.len(),
                self.points.len()
            ),
        };
        Err(GuestProtocolError::EarlyHalt {
            exit: self.exits,
            when,
            expected: self.expected(),
        })
    }

    fn pass_begin(&mut self, pass: u32) -> Result<Step, GuestProtocolError> {
        if self.phase != Phase::Idle {
            return Err(self.out_of_order(format!("PASS_BEGIN of pass {pass}")));
        }
        if self.all_passes_done() {
            return Err(GuestProtocolError::TooManyPasses {
                exit: self.exits,
                pass,
                repeats: self.repeats,
            });
        }
        if pass != self.pass() {
            return Err(GuestProtocolError::WrongPass {
                exit: self.exits,
                port_name: "PASS_BEGIN",
                got: pass,
                expected: self.pass(),
            });
        }
        self.current.clear();
        self.phase = if self.points.is_empty() {
            Phase::End
        } else {
            Phase::Results {
                word: 0,
                values: [0; 6],
            }
        };
        Ok(Step::Continue)
    }

    fn result(&mut self, value: u32) -> Result<Step, GuestProtocolError> {
        let Phase::Results { word, mut values } = self.phase else {
            return Err(self.out_of_order(format!("RESULT word {value:#x}")));
        };
        let index = self.current.len();
        let (leaf, subleaf) = self.points[index];
        match word {
            0 if value != leaf => {
                return Err(self.misplaced_point(value, None));
            }
            1 if value != subleaf => {
                return Err(self.misplaced_point(leaf, Some(value)));
            }
            _ => {}
        }
        values[word] = value;
        if word + 1 < WORDS.len() {
            self.phase = Phase::Results {
                word: word + 1,
                values,
            };
            return Ok(Step::Continue);
        }
        let [leaf, subleaf, eax, ebx, ecx, edx] = values;
        self.current.push(GuestSeen {
            leaf,
            subleaf,
            eax,
            ebx,
            ecx,
            edx,
        });
        self.phase = if self.current.len() == self.points.len() {
            Phase::End
        } else {
            Phase::Results {
                word: 0,
                values: [0; 6],
            }
        };
        Ok(Step::Continue)
    }

    /// The guest reported a point other than the next one: out of order if the table has it,
    /// unknown otherwise. `subleaf` is `None` when only the leaf was seen so far.
    fn misplaced_point(&self, leaf: u32, subleaf: Option<u32>) -> GuestProtocolError {
        let position = self
            .points
            .iter()
            .position(|&(l, s)| l == leaf && subleaf.is_none_or(|sub| sub == s));
        let point = match subleaf {
            Some(subleaf) => format!("{leaf:#x}.{subleaf}"),
            None => format!("{leaf:#x}"),
        };
        match position {
            Some(position) => self.out_of_order(format!(
                "RESULT for point {point} (table position {position}) out of order"
            )),
            None => GuestProtocolError::UnknownPoint {
                exit: self.exits,
                pass: self.pass(),
                point,
                expected: self.expected(),
            },
        }
    }

    fn pass_end(&mut self, pass: u32) -> Result<Step, GuestProtocolError> {
        match self.phase {
            Phase::End => {}
            Phase::Results { .. } => {
                return Err(self.out_of_order(format!(
                    "PASS_END of pass {pass} after {} of {} points",
                    self.current.len(),
                    self.points.len()
                )));
            }
            Phase::Idle | Phase::Halted => {
                return Err(self.out_of_order(format!("PASS_END of pass {pass}")));
            }
        }
        if pass != self.pass() {
            return Err(GuestProtocolError::WrongPass {
                exit: self.exits,
                port_name: "PASS_END",
                got: pass,
                expected: self.pass(),
            });
        }
        self.complete_pass();
        self.phase = Phase::Idle;
        Ok(Step::Continue)
    }

    /// The pass in `current` is complete: keep it if it is the first, otherwise compare it with
    /// the first and keep only the verdict.
    fn complete_pass(&mut self) {
        let report = &mut self.report;
        if report.passes == 0 {
            report.first_pass = std::mem::take(&mut self.current);
        } else {
            // Both passes reported the same points in table order, so only the results can differ.
            let difference = report
                .first_pass
                .iter()
                .zip(&self.current)
                .find(|(first, seen)| first != seen);
            if let Some((&first, &seen)) = difference {
                report.differing_passes += 1;
                if report.first_differences.len() < MAX_DIFFERING_KEPT {
                    report.first_differences.push(PassDifference {
                        pass: report.passes,
                        first,
                        seen,
                    });
                }
            }
            self.current.clear();
        }
        report.passes += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(port: u16, value: u32) -> VcpuExit {
        VcpuExit::IoOut {
            port,
            data: value.to_le_bytes().to_vec(),
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
            data: vec![0],
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
                data: vec![1],
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
}
