//! Decoding the CPUID probe's report (see [`crate::guests::x86`] for the protocol).

use crate::guests::x86::{PORT_PASS_BEGIN, PORT_PASS_END, PORT_RESULT};
use crate::hypervisor::call::VcpuExit;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::x86::drift::GuestSeen;

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
    /// An `OUT` to a port that is none of the probe's three.
    #[error("exit #{exit}: OUT to port {port:#x}, which is not a probe port; expected {expected}")]
    UnknownPort {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// The I/O port written.
        port: u16,
        /// What the protocol allowed at this exit.
        expected: String,
    },

    /// An `OUT` to a probe port that is not 4 bytes wide.
    #[error(
        "exit #{exit}: OUT of {size} bytes to port {port:#x}, but the probe only uses 4-byte \
         OUTs; expected {expected}"
    )]
    WrongSize {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// The I/O port written.
        port: u16,
        /// The `OUT`'s size in bytes.
        size: usize,
        /// What the protocol allowed at this exit.
        expected: String,
    },

    /// A probe port written where the protocol expected another.
    #[error("exit #{exit}: {got}; expected {expected}")]
    OutOfOrder {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// What the guest did instead, in words.
        got: String,
        /// What the protocol allowed at this exit.
        expected: String,
    },

    /// A result for a `(leaf, subleaf)` that is not in the probe table.
    #[error(
        "exit #{exit}: pass {pass} reported point {point}, which is not in the probe table; \
         expected {expected}"
    )]
    UnknownPoint {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// The pass that reported it.
        pass: u32,
        /// The `(leaf, subleaf)` reported, in words.
        point: String,
        /// What the protocol allowed at this exit.
        expected: String,
    },

    /// `PASS_BEGIN` or `PASS_END` with the wrong pass number.
    #[error("exit #{exit}: {port_name} for pass {got}; expected pass {expected}")]
    WrongPass {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// `"PASS_BEGIN"` or `"PASS_END"`.
        port_name: &'static str,
        /// The pass number the guest reported.
        got: u32,
        /// The pass number due.
        expected: u32,
    },

    /// A pass began after the last one the table asks for.
    #[error(
        "exit #{exit}: PASS_BEGIN of pass {pass}, but the table asks for {repeats} passes; \
         expected HLT"
    )]
    TooManyPasses {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// The pass number the guest began.
        pass: u32,
        /// How many passes the table asks for.
        repeats: u32,
    },

    /// `HLT` before the last pass was reported.
    #[error("exit #{exit}: HLT {when}; expected {expected}")]
    EarlyHalt {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// How far the program had got.
        when: String,
        /// What the protocol allowed at this exit.
        expected: String,
    },

    /// An exit that is no part of the protocol.
    #[error("exit #{exit}: {got}; expected {expected}")]
    UnexpectedExit {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// What the guest did instead, in words.
        got: String,
        /// What the protocol allowed at this exit.
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
    Results { word: usize },
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
    /// The words of the point in progress reported so far (`Phase::Results` says how many):
    /// here, not in the phase, so that each exit does not copy them in and out of it.
    words: [u32; 6],
}

impl crate::guests::ExitDecoder for ProbeDecoder {
    type Report = GuestReport;
    fn feed(&mut self, exit: &VcpuExit) -> Result<Step, String> {
        ProbeDecoder::feed(self, exit).map_err(|e: GuestProtocolError| e.to_string())
    }
    fn finish(self) -> GuestReport {
        ProbeDecoder::finish(self)
    }
}

impl ProbeDecoder {
    /// A decoder for a guest loaded with these `points` and `repeats` (0 = forever: the report
    /// then never completes, and it keeps counting passes; its size stays bounded either way).
    pub fn new(points: &[(u32, u32)], repeats: u32) -> Self {
        ProbeDecoder {
            points: points.to_vec(),
            repeats,
            exits: 0,
            // Both passes' room is made here, when the run begins (before its thread lowers its
            // priority), so no exit allocates (see `complete_pass`).
            report: GuestReport {
                first_pass: Vec::with_capacity(points.len()),
                ..GuestReport::default()
            },
            current: Vec::with_capacity(points.len()),
            phase: Phase::Idle,
            words: [0; 6],
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
            Phase::Results { word: 0 }
        };
        Ok(Step::Continue)
    }

    fn result(&mut self, value: u32) -> Result<Step, GuestProtocolError> {
        let Phase::Results { word } = self.phase else {
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
        self.words[word] = value;
        if word + 1 < WORDS.len() {
            self.phase = Phase::Results { word: word + 1 };
            return Ok(Step::Continue);
        }
        let [leaf, subleaf, eax, ebx, ecx, edx] = self.words;
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
            Phase::Results { word: 0 }
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
            // The first pass moves into the room made for it up front, and the next pass reuses
            // that room: no exit allocates. A fleet's spinning vCPU threads that allocate at once
            // queue on the allocator's arena locks, and a control thread that allocates waits in
            // that queue (a pause or resume under load then took over 30 s).
            std::mem::swap(&mut report.first_pass, &mut self.current);
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
mod tests;
