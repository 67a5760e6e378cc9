//! Decoding the arm64 guest's report (see [`crate::guests::arm64`] for the protocol): feed it the
//! vCPU's exits, get back [`Step`]s and finally an [`Arm64GuestReport`]; every deviation from the
//! protocol is a named [`Arm64ProtocolError`], never a panic.

use super::protocol::{Tag, TagKind, exception_class, vector_name};
use super::smccc::{SmcccCall, SmcccResult};
use super::{
    Arm64GuestProgram, Finish, REPORT_TAG, REPORT_VALUE, SYSTEM_EVENT_SHUTDOWN, SysReg,
    readable_by_mrs,
};
use crate::guests::{MAX_DIFFERING_KEPT, Step};
use crate::hypervisor::call::VcpuExit;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What the guest's `MRS` of one register read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdRegSeen {
    /// The register's `KVM_GET_ONE_REG` id ([`SysReg::kvm_reg_id`]), so that it compares directly
    /// with what the host holds.
    pub id: u64,
    /// What the guest read.
    pub value: u64,
}

impl IdRegSeen {
    /// `ID_AA64ISAR0_EL1 = 0x0000000000011120`.
    pub fn describe(&self) -> String {
        match SysReg::from_kvm_reg_id(self.id) {
            Ok(reg) if readable_by_mrs(reg) => format!("{reg} = {:#018x}", self.value),
            _ => format!("register {:#018x} = {:#018x}", self.id, self.value),
        }
    }
}

/// A complete pass that saw something different from the first one: its first differing step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arm64Difference {
    /// An ID register read differently.
    IdReg {
        /// The 0-based number of the pass.
        pass: u64,
        /// What pass 0 read.
        first: IdRegSeen,
        /// What this pass read.
        seen: IdRegSeen,
    },
    /// An SMCCC call answered differently (see [`SmcccResult::agrees_with`]).
    Call {
        /// The 0-based number of the pass.
        pass: u64,
        /// What pass 0 got.
        first: SmcccResult,
        /// What this pass got.
        seen: SmcccResult,
    },
}

impl Arm64Difference {
    /// The pass that differs.
    pub fn pass(&self) -> u64 {
        match self {
            Arm64Difference::IdReg { pass, .. } | Arm64Difference::Call { pass, .. } => *pass,
        }
    }
}

/// What the arm64 guest reported, in constant size however many passes it ran: the first
/// *complete* pass in full, and for later ones only whether they agreed with it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm64GuestReport {
    /// What the first complete pass read, one entry per register in program order (empty if no
    /// pass completed).
    pub id_regs: Vec<IdRegSeen>,
    /// What the first complete pass's calls returned, in program order.
    pub calls: Vec<SmcccResult>,
    /// How many complete passes there were.
    pub passes: u64,
    /// How many complete passes disagreed with the first.
    pub differing_passes: u64,
    /// The first few of those (at most [`MAX_DIFFERING_KEPT`]), each with its first difference.
    pub first_differences: Vec<Arm64Difference>,
    /// The guest powered the VM off with PSCI `SYSTEM_OFF` after its last pass.
    pub powered_off: bool,
}

impl Arm64GuestReport {
    /// Every complete pass saw what the first one saw (trivially true with fewer than two).
    pub fn passes_agree(&self) -> bool {
        self.differing_passes == 0
    }

    /// What the guest saw, one line per register and per call of the first complete pass:
    /// `ID_AA64ISAR0_EL1 = 0x…`, `TRNG_VERSION -> NOT_SUPPORTED (-1)`, …
    pub fn describe(&self) -> Vec<String> {
        let regs = self.id_regs.iter().map(IdRegSeen::describe);
        regs.chain(self.calls.iter().map(SmcccResult::describe))
            .collect()
    }
}

/// The guest's exits did not follow the protocol. `exit` is the 1-based number of the exit (in
/// the order they were fed to the decoder); `expected` says what the protocol allowed there.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Arm64ProtocolError {
    /// An MMIO write outside the two report addresses.
    #[error(
        "exit #{exit}: MMIO write to {addr:#x}, which is not a report address; expected {expected}"
    )]
    UnknownAddress {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// The address written.
        addr: u64,
        /// What the protocol allowed at this exit.
        expected: String,
    },

    /// A report store that is not 8 bytes.
    #[error(
        "exit #{exit}: MMIO write of {size} bytes to {addr:#x}, but the guest only makes 8-byte \
         stores; expected {expected}"
    )]
    WrongSize {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// The address written.
        addr: u64,
        /// The store's size in bytes.
        size: usize,
        /// What the protocol allowed at this exit.
        expected: String,
    },

    /// A word at the tag address that is no tag the program can produce.
    #[error("exit #{exit}: {word:#018x} at the tag address is not a tag; expected {expected}")]
    NotATag {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// The word written at the tag address.
        word: u64,
        /// What the protocol allowed at this exit.
        expected: String,
    },

    /// A well-formed tag, but not the next step of the program.
    #[error("exit #{exit}: the guest announced {got}; expected {expected}")]
    UnexpectedTag {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// What the guest did instead, in words.
        got: String,
        /// What the protocol allowed at this exit.
        expected: String,
    },

    /// A tag where a value was due, or a value where a tag was due.
    #[error("exit #{exit}: {got}; expected {expected}")]
    OutOfOrder {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// What the guest did instead, in words.
        got: String,
        /// What the protocol allowed at this exit.
        expected: String,
    },

    /// `PASS_BEGIN` or `PASS_END` with the wrong pass number.
    #[error("exit #{exit}: {which} of pass {got}; expected pass {expected}")]
    WrongPass {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// `"PASS_BEGIN"` or `"PASS_END"`.
        which: &'static str,
        /// The pass number the guest reported.
        got: u64,
        /// The pass number due.
        expected: u64,
    },

    /// A pass began after the last one the program runs.
    #[error(
        "exit #{exit}: PASS_BEGIN after {repeats} passes, but the program runs {repeats}; \
         expected {expected}"
    )]
    TooManyPasses {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// How many passes the program runs.
        repeats: u32,
        /// What the protocol allowed at this exit.
        expected: String,
    },

    /// `SYSTEM_EVENT` shutdown before the program's last pass was reported.
    #[error("exit #{exit}: SYSTEM_OFF {when}; expected {expected}")]
    EarlyPowerOff {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// How far the program had got.
        when: String,
        /// What the protocol allowed at this exit.
        expected: String,
    },

    /// PSCI `SYSTEM_OFF` returned to the guest (a filter denied it, or the hypervisor has no
    /// PSCI); the guest parked.
    #[error(
        "exit #{exit}: PSCI SYSTEM_OFF returned {ret:#x} to the guest instead of powering off; \
         the guest parked"
    )]
    SystemOffReturned {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// What `SYSTEM_OFF` returned in X0 (a PSCI error code).
        ret: u64,
    },

    /// The guest took an exception and reported it from its vector table; it parked.
    #[error(
        "exit #{exit}: the guest took an exception {during}: vector {vector} ({vector_name}), \
         ESR_EL1 {esr:#x} ({class}), ELR_EL1 {elr:#x}, FAR_EL1 {far:#x}; the guest parked"
    )]
    GuestException {
        /// The 1-based number of the offending exit.
        exit: u64,
        /// The vector-table entry (0..16).
        vector: u16,
        /// The entry's name (`"current EL with SP_ELx, synchronous"`, …).
        vector_name: &'static str,
        /// ESR_EL1: the exception syndrome.
        esr: u64,
        /// What ESR's exception class means.
        class: String,
        /// ELR_EL1: the address of the instruction that took it.
        elr: u64,
        /// FAR_EL1: the faulting address, where the exception class sets one.
        far: u64,
        /// The step the guest had announced last, in words.
        during: String,
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

impl Arm64ProtocolError {
    /// The 1-based number of the offending exit.
    pub fn exit(&self) -> u64 {
        match self {
            Arm64ProtocolError::UnknownAddress { exit, .. }
            | Arm64ProtocolError::WrongSize { exit, .. }
            | Arm64ProtocolError::NotATag { exit, .. }
            | Arm64ProtocolError::UnexpectedTag { exit, .. }
            | Arm64ProtocolError::OutOfOrder { exit, .. }
            | Arm64ProtocolError::WrongPass { exit, .. }
            | Arm64ProtocolError::TooManyPasses { exit, .. }
            | Arm64ProtocolError::EarlyPowerOff { exit, .. }
            | Arm64ProtocolError::SystemOffReturned { exit, .. }
            | Arm64ProtocolError::GuestException { exit, .. }
            | Arm64ProtocolError::UnexpectedExit { exit, .. } => *exit,
        }
    }
}

/// One step of the protocol: what a tag announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    PassBegin,
    IdReg(usize),
    Call(usize),
    PassEnd,
    OffReturned,
    Exception(u16),
}

/// Where the decoder is in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the tag of this step.
    Tag(Item),
    /// The step's tag is in; `got` of its values so far.
    Values {
        item: Item,
        got: usize,
        words: [u64; 4],
    },
    /// Every pass is in; waiting for `SYSTEM_OFF`'s `SYSTEM_EVENT`.
    PowerOff,
    /// The guest powered off, or parked after its last pass.
    Finished,
}

/// Decodes the arm64 guest's exits into an [`Arm64GuestReport`].
#[derive(Clone, Debug)]
pub struct Arm64Decoder {
    id_regs: Vec<SysReg>,
    calls: Vec<SmcccCall>,
    repeats: u32,
    finish: Finish,
    exits: u64,
    report: Arm64GuestReport,
    /// The pass in progress.
    current_regs: Vec<IdRegSeen>,
    current_calls: Vec<SmcccResult>,
    phase: Phase,
    /// The last step the guest announced, in words (for exceptions).
    announced: Option<String>,
    /// What was in progress when an exception tag came (for its error).
    interrupted: String,
}

impl crate::guests::ExitDecoder for Arm64Decoder {
    type Report = Arm64GuestReport;
    fn feed(&mut self, exit: &VcpuExit) -> Result<Step, String> {
        Arm64Decoder::feed(self, exit).map_err(|e| e.to_string())
    }
    fn finish(self) -> Self::Report {
        Arm64Decoder::finish(self)
    }
}

impl Arm64Decoder {
    /// A decoder for a guest loaded with `program`. With `repeats` = 0 the report never
    /// completes and passes keep being counted; its size stays bounded either way.
    pub fn new(program: &Arm64GuestProgram<'_>) -> Self {
        Arm64Decoder {
            id_regs: program.id_regs.to_vec(),
            calls: program.calls.to_vec(),
            repeats: program.repeats,
            finish: program.finish,
            exits: 0,
            report: Arm64GuestReport::default(),
            current_regs: Vec::with_capacity(program.id_regs.len()),
            current_calls: Vec::with_capacity(program.calls.len()),
            phase: Phase::Tag(Item::PassBegin),
            announced: None,
            interrupted: String::new(),
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

    /// The report on the complete passes (a pass cut short is left out).
    pub fn finish(self) -> Arm64GuestReport {
        self.report
    }

    /// Take one exit. [`VcpuExit::Interrupted`] (a kick from the host) is counted and otherwise
    /// ignored; any other exit that is not the next one of the protocol is an error.
    pub fn feed(&mut self, exit: &VcpuExit) -> Result<Step, Arm64ProtocolError> {
        self.exits += 1;
        match exit {
            VcpuExit::Interrupted => Ok(Step::Continue),
            VcpuExit::MmioWrite { addr, data } => {
                if *addr != REPORT_TAG && *addr != REPORT_VALUE {
                    return Err(Arm64ProtocolError::UnknownAddress {
                        exit: self.exits,
                        addr: *addr,
                        expected: self.expected(),
                    });
                }
                let Ok(bytes) = <[u8; 8]>::try_from(data.as_slice()) else {
                    return Err(Arm64ProtocolError::WrongSize {
                        exit: self.exits,
                        addr: *addr,
                        size: data.len(),
                        expected: self.expected(),
                    });
                };
                let word = u64::from_le_bytes(bytes);
                if *addr == REPORT_TAG {
                    self.tag(word)
                } else {
                    self.value(word)
                }
            }
            VcpuExit::SystemEvent { kind, .. } if *kind == SYSTEM_EVENT_SHUTDOWN => {
                self.power_off()
            }
            // The program never loads; and KVM leaves the previous write's bytes in
            // `kvm_run.mmio.data` on a read exit, so nothing about a read could be trusted anyway.
            VcpuExit::MmioRead { addr, len } => Err(self.unexpected_exit(format!(
                "MMIO read of {len} bytes at {addr:#x} (the program never reads outside its memory)"
            ))),
            other => Err(self.unexpected_exit(format!("{other} exit"))),
        }
    }

    /// The number of the pass in progress, or of the next one.
    fn pass(&self) -> u64 {
        self.report.passes
    }

    fn all_passes_done(&self) -> bool {
        self.repeats != 0 && self.report.passes >= u64::from(self.repeats)
    }

    /// The tag the program stores for `item`.
    fn tag_of(&self, item: Item) -> Tag {
        match item {
            Item::PassBegin => Tag::PASS_BEGIN,
            Item::PassEnd => Tag::PASS_END,
            Item::OffReturned => Tag::OFF_RETURNED,
            Item::Exception(vector) => Tag::exception(vector),
            Item::IdReg(i) => Tag::id_reg(i as u16, self.id_regs[i].encoding()),
            Item::Call(i) => Tag::call(i as u16, self.calls[i].function_id),
        }
    }

    /// `item` in words, with the pass it belongs to.
    fn describe(&self, item: Item) -> String {
        match item {
            Item::PassBegin | Item::PassEnd | Item::IdReg(_) | Item::Call(_) => {
                format!("{} of pass {}", self.tag_of(item), self.pass())
            }
            Item::OffReturned | Item::Exception(_) => self.tag_of(item).to_string(),
        }
    }

    /// What the protocol allows next, for error messages.
    fn expected(&self) -> String {
        match self.phase {
            Phase::Tag(item) => {
                format!("the tag of {} at {REPORT_TAG:#x}", self.describe(item))
            }
            Phase::Values { item, got, .. } => {
                let names: &[&str] = match item {
                    Item::Call(_) => &["x0", "x1", "x2", "x3"],
                    Item::Exception(_) => &["ESR_EL1", "ELR_EL1", "FAR_EL1"],
                    Item::PassBegin | Item::PassEnd => &["pass number"],
                    Item::IdReg(_) => &["value"],
                    Item::OffReturned => &["x0"],
                };
                format!(
                    "the {} ({} of {}) of {} at {REPORT_VALUE:#x}",
                    names.get(got).copied().unwrap_or("value"),
                    got + 1,
                    names.len(),
                    self.describe(item)
                )
            }
            Phase::PowerOff => format!(
                "SYSTEM_EVENT type {SYSTEM_EVENT_SHUTDOWN} (SHUTDOWN) from PSCI SYSTEM_OFF after \
                 the last of {} passes",
                self.repeats
            ),
            Phase::Finished if self.report.powered_off => {
                "no further exit (the guest powered off after its last pass)".to_string()
            }
            Phase::Finished => "no further exit (the guest parked after its last pass)".to_string(),
        }
    }

    fn unexpected_exit(&self, got: String) -> Arm64ProtocolError {
        Arm64ProtocolError::UnexpectedExit {
            exit: self.exits,
            got,
            expected: self.expected(),
        }
    }

    fn out_of_order(&self, got: String) -> Arm64ProtocolError {
        Arm64ProtocolError::OutOfOrder {
            exit: self.exits,
            got,
            expected: self.expected(),
        }
    }

    fn start_values(&mut self, item: Item) -> Result<Step, Arm64ProtocolError> {
        self.phase = Phase::Values {
            item,
            got: 0,
            words: [0; 4],
        };
        Ok(Step::Continue)
    }

    fn tag(&mut self, word: u64) -> Result<Step, Arm64ProtocolError> {
        let Some(tag) = Tag::decode(word) else {
            return Err(Arm64ProtocolError::NotATag {
                exit: self.exits,
                word,
                expected: self.expected(),
            });
        };
        if tag.kind == TagKind::Exception && self.phase != Phase::Finished {
            // An exception can interrupt any step: say which one.
            self.interrupted = match (&self.phase, &self.announced) {
                (Phase::PowerOff, _) => "in PSCI SYSTEM_OFF".to_string(),
                (_, Some(step)) => format!("in {step}"),
                (_, None) => "before its first report".to_string(),
            };
            return self.start_values(Item::Exception(tag.index));
        }
        match self.phase {
            Phase::Tag(item) if tag == self.tag_of(item) => {
                self.announced = Some(self.describe(item));
                self.start_values(item)
            }
            Phase::Tag(_) => Err(Arm64ProtocolError::UnexpectedTag {
                exit: self.exits,
                got: tag.to_string(),
                expected: self.expected(),
            }),
            Phase::Values { .. } => Err(self.out_of_order(format!("the tag of {tag}"))),
            Phase::PowerOff if tag == Tag::OFF_RETURNED => self.start_values(Item::OffReturned),
            Phase::PowerOff if tag == Tag::PASS_BEGIN => Err(Arm64ProtocolError::TooManyPasses {
                exit: self.exits,
                repeats: self.repeats,
                expected: self.expected(),
            }),
            Phase::PowerOff => Err(Arm64ProtocolError::UnexpectedTag {
                exit: self.exits,
                got: tag.to_string(),
                expected: self.expected(),
            }),
            Phase::Finished => Err(self.out_of_order(format!("the tag of {tag}"))),
        }
    }

    fn value(&mut self, word: u64) -> Result<Step, Arm64ProtocolError> {
        let Phase::Values {
            item,
            got,
            mut words,
        } = self.phase
        else {
            return Err(self.out_of_order(format!("value {word:#x} with no tag before it")));
        };
        words[got] = word;
        let kind = self.tag_of(item).kind;
        if got + 1 < kind.values() {
            self.phase = Phase::Values {
                item,
                got: got + 1,
                words,
            };
            return Ok(Step::Continue);
        }
        self.complete(item, words)
    }

    /// The step after `item` within a pass.
    fn after(&self, item: Item) -> Item {
        let first_call = || {
            if self.calls.is_empty() {
                Item::PassEnd
            } else {
                Item::Call(0)
            }
        };
        match item {
            Item::PassBegin if self.id_regs.is_empty() => first_call(),
            Item::PassBegin => Item::IdReg(0),
            Item::IdReg(i) if i + 1 < self.id_regs.len() => Item::IdReg(i + 1),
            Item::IdReg(_) => first_call(),
            Item::Call(i) if i + 1 < self.calls.len() => Item::Call(i + 1),
            _ => Item::PassEnd,
        }
    }

    /// Every value of `item` is in.
    fn complete(&mut self, item: Item, words: [u64; 4]) -> Result<Step, Arm64ProtocolError> {
        match item {
            Item::PassBegin | Item::PassEnd if words[0] != self.pass() => {
                Err(Arm64ProtocolError::WrongPass {
                    exit: self.exits,
                    which: if item == Item::PassBegin {
                        "PASS_BEGIN"
                    } else {
                        "PASS_END"
                    },
                    got: words[0],
                    expected: self.pass(),
                })
            }
            Item::PassBegin => {
                self.current_regs.clear();
                self.current_calls.clear();
                self.phase = Phase::Tag(self.after(item));
                Ok(Step::Continue)
            }
            Item::IdReg(i) => {
                self.current_regs.push(IdRegSeen {
                    id: self.id_regs[i].kvm_reg_id(),
                    value: words[0],
                });
                self.phase = Phase::Tag(self.after(item));
                Ok(Step::Continue)
            }
            Item::Call(i) => {
                let call = self.calls[i];
                self.current_calls.push(SmcccResult {
                    function_id: call.function_id,
                    args: call.args,
                    ret: words,
                });
                self.phase = Phase::Tag(self.after(item));
                Ok(Step::Continue)
            }
            Item::PassEnd => {
                self.complete_pass();
                if !self.all_passes_done() {
                    self.phase = Phase::Tag(Item::PassBegin);
                    return Ok(Step::Continue);
                }
                match self.finish {
                    Finish::PowerOff => {
                        self.phase = Phase::PowerOff;
                        Ok(Step::Continue)
                    }
                    Finish::Park => {
                        self.phase = Phase::Finished;
                        Ok(Step::Done)
                    }
                }
            }
            Item::OffReturned => Err(Arm64ProtocolError::SystemOffReturned {
                exit: self.exits,
                ret: words[0],
            }),
            Item::Exception(vector) => {
                let [esr, elr, far, _] = words;
                Err(Arm64ProtocolError::GuestException {
                    exit: self.exits,
                    vector,
                    vector_name: vector_name(vector),
                    esr,
                    class: exception_class(esr),
                    elr,
                    far,
                    during: self.interrupted.clone(),
                })
            }
        }
    }

    /// The pass in progress is complete: keep it if it is the first, otherwise compare it with
    /// the first and keep only the verdict.
    fn complete_pass(&mut self) {
        let report = &mut self.report;
        if report.passes == 0 {
            report.id_regs = std::mem::take(&mut self.current_regs);
            report.calls = std::mem::take(&mut self.current_calls);
        } else {
            let pass = report.passes;
            // Both passes reported the same steps in program order (the tags said so).
            let reg_difference = report
                .id_regs
                .iter()
                .zip(&self.current_regs)
                .find(|(first, seen)| first != seen)
                .map(|(&first, &seen)| Arm64Difference::IdReg { pass, first, seen });
            let difference = reg_difference.or_else(|| {
                report
                    .calls
                    .iter()
                    .zip(&self.current_calls)
                    .find(|(first, seen)| !first.agrees_with(seen))
                    .map(|(&first, &seen)| Arm64Difference::Call { pass, first, seen })
            });
            if let Some(difference) = difference {
                report.differing_passes += 1;
                if report.first_differences.len() < MAX_DIFFERING_KEPT {
                    report.first_differences.push(difference);
                }
            }
        }
        report.passes += 1;
    }

    /// `SYSTEM_EVENT` shutdown.
    fn power_off(&mut self) -> Result<Step, Arm64ProtocolError> {
        let when = match self.phase {
            Phase::PowerOff => {
                self.report.powered_off = true;
                self.phase = Phase::Finished;
                return Ok(Step::Done);
            }
            // Running the vCPU again after SYSTEM_OFF: still off.
            Phase::Finished if self.report.powered_off => return Ok(Step::Done),
            Phase::Finished => "after the guest parked".to_string(),
            Phase::Tag(Item::PassBegin) if self.repeats == 0 => format!(
                "after pass {} although the program repeats forever",
                self.report.passes
            ),
            Phase::Tag(Item::PassBegin) => {
                format!("after {} of {} passes", self.report.passes, self.repeats)
            }
            Phase::Tag(_) | Phase::Values { .. } => format!(
                "in the middle of pass {}, after {} of {} ID registers and {} of {} calls",
                self.pass(),
                self.current_regs.len(),
                self.id_regs.len(),
                self.current_calls.len(),
                self.calls.len()
            ),
        };
        Err(Arm64ProtocolError::EarlyPowerOff {
            exit: self.exits,
            when,
            expected: self.expected(),
        })
    }
}

#[cfg(test)]
mod tests;
