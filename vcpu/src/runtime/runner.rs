//! The vCPU run loop: drive one vCPU through the CPUID probe guest ([`crate::guests::x86`]) on the
//! calling thread, or on a thread of its own ([`spawn_probe`]), until the guest is done, faults,
//! breaks the protocol, a call fails, the control plane stops it, or an exit budget runs out.
//!
//! The loop only ever goes through [`VcpuHandle::run`], so the VM's CPU model is sealed before the
//! first `KVM_RUN`, and it works the same over KVM, the recorder and the replay backend. Past the
//! first exit it also takes the exits a backend knows already ([`VcpuHandle::run_known`]: a
//! replay's queued runs) as they are offered, exactly as if its own `RUN`s had returned them,
//! and leaves to a call each exit it does more with than decode (a kick, a budget reached).
//!
//! Control ([`run_controlled`]): the thread binds itself as the target of its vCPU's kicks. A kick
//! makes `KVM_RUN` return [`VcpuExit::Interrupted`]; there, and only there, the thread asks
//! [`VcpuHandle::control_point`] what to do: run on, park until the wish changes, or stop. Only
//! looking at control after a kick is what makes the decisions replayable: they sit at recorded
//! exits, not at whatever instant a flag happened to be read.
//!
//! Bounded recording ([`RunLimits::record_exits`]): a vCPU's first exits go through
//! [`VcpuHandle::run`] and the guest's decoder, one by one. Past the budget the loop calls
//! [`VcpuHandle::run_counted`] instead and only *counts* I/O and MMIO exits (the decoder does not
//! see them), so a recorder may summarise them; kicks, control points and faults are handled as
//! before, and any other exit ends the run as [`ProbeEnd::EndedBeyondBudget`]. A replay may answer
//! `run_counted` with [`VcpuExit::Counted`], many counted exits at once.

use crate::guests::{ExitDecoder, GuestReport, ProbeDecoder, Step};
use crate::hypervisor::backend::TakeExit;
use crate::hypervisor::call::{ExitSummary, RunDecision, VcpuExit};
use crate::runtime::control::RunControl;
use crate::runtime::handle::{HandleError, VcpuHandle};
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Why a probe run stopped.
#[derive(Clone, Debug)]
pub enum ProbeEnd {
    /// The guest halted after its last pass: the report is complete.
    Halted,
    /// The guest crashed: `SHUTDOWN` (a triple fault), `FAIL_ENTRY` or `INTERNAL_ERROR`, with the
    /// details KVM gave.
    GuestFault(String),
    /// The guest's exits broke the report protocol (the decoder's explanation).
    Protocol(String),
    /// A backend call failed (the kernel, the lock, or a replay that diverged).
    Call(HandleError),
    /// The exit budget was used up before the guest finished.
    ExitBudget,
    /// The control plane stopped the vCPU.
    Stopped,
    /// Past the `record_exits` budget, the guest ended with an exit the loop only counts I/O
    /// and MMIO exits past (`HLT`, `SYSTEM_EVENT`, or another); the exit, described. The decoder
    /// did not see the exits past the budget, so the report holds only the passes decoded before
    /// it, and whether the guest finished its passes is unknown.
    EndedBeyondBudget(String),
}

impl fmt::Display for ProbeEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeEnd::Halted => f.write_str("the guest halted after its last pass"),
            ProbeEnd::GuestFault(fault) => write!(f, "guest fault: {fault}"),
            ProbeEnd::Protocol(error) => write!(f, "guest protocol error: {error}"),
            ProbeEnd::Call(error) => write!(f, "call failed: {error}"),
            ProbeEnd::ExitBudget => f.write_str("the exit budget ran out"),
            ProbeEnd::Stopped => f.write_str("stopped by request"),
            ProbeEnd::EndedBeyondBudget(exit) => write!(
                f,
                "the guest ended beyond its record_exits budget ({exit}): its last exits were \
                 counted, not decoded"
            ),
        }
    }
}

/// The result of one probe run of the x86 guest.
pub type ProbeOutcome = RunOutcome<GuestReport>;

/// The result of one run of a guest program.
#[derive(Clone, Debug)]
pub struct RunOutcome<R> {
    /// What the guest's complete passes saw (all of its passes when `end` is
    /// [`ProbeEnd::Halted`]).
    pub report: R,
    /// `KVM_RUN` calls that returned an exit (including `Interrupted` and the final one).
    pub exits: u64,
    /// Of `exits`, those past the `record_exits` budget: counted, not decoded.
    pub counted: u64,
    /// Why the run ended.
    pub end: ProbeEnd,
}

/// Run `vcpu`, which must already hold the probe guest (loaded with the same `points` and
/// `repeats`) and be at its entry point, until it is done or something stops it. A guest loaded to
/// fault on purpose ([`crate::guests::x86::GuestProgram::fault_after`]) ends in
/// [`ProbeEnd::GuestFault`] after its last complete pass.
///
/// `exit_budget`: stop with [`ProbeEnd::ExitBudget`] after that many exits (for guests that
/// repeat forever, or as a guard against runaway guests). A kick ([`VcpuExit::Interrupted`])
/// counts as an exit and the loop simply runs the vCPU again.
pub fn run_probe(
    vcpu: &VcpuHandle,
    points: &[(u32, u32)],
    repeats: u32,
    exit_budget: Option<u64>,
) -> ProbeOutcome {
    let probe = Probe {
        points,
        repeats,
        exit_budget,
        record_exits: None,
        pause_at_first_exit: false,
    };
    run_controlled(vcpu, &probe, &RunControl::new(), &mut |_| {})
}

/// What a controlled run is asked to run.
#[derive(Clone, Copy, Debug)]
pub struct Probe<'a> {
    /// The probe table's points, as loaded into the guest.
    pub points: &'a [(u32, u32)],
    /// Passes the guest makes (0: forever).
    pub repeats: u32,
    /// Stop with [`ProbeEnd::ExitBudget`] after that many exits.
    pub exit_budget: Option<u64>,
    /// Decode that many exits one by one, then only count them ([`RunLimits::record_exits`]).
    pub record_exits: Option<u64>,
    /// Take a control point right after the first guest exit (before acting on it), so a VM
    /// started paused parks there: every vCPU has entered its guest once, and none runs on until
    /// it is resumed. The point is at a fixed place in the vCPU's stream, so replays take it too.
    pub pause_at_first_exit: bool,
}

/// What a controlled run tells its VM's control plane as it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuNotice {
    /// The first `KVM_RUN` returned: the guest is running.
    FirstExit,
    /// The thread parked at a pause.
    Parked,
    /// The parked thread woke up.
    Unparked,
}

/// [`run_probe`] under `control`, reporting to `notify`. The thread running this is the target of
/// the vCPU's kicks until it returns.
pub fn run_controlled(
    vcpu: &VcpuHandle,
    probe: &Probe<'_>,
    control: &RunControl,
    notify: &mut dyn FnMut(VcpuNotice),
) -> ProbeOutcome {
    let limits = RunLimits {
        exit_budget: probe.exit_budget,
        record_exits: probe.record_exits,
        pause_at_first_exit: probe.pause_at_first_exit,
    };
    run_decoded(
        vcpu,
        ProbeDecoder::new(probe.points, probe.repeats),
        limits,
        control,
        notify,
    )
}

/// How long a run may go, and whether it parks at its first exit (see [`Probe`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunLimits {
    /// Stop with [`ProbeEnd::ExitBudget`] after that many exits (`None`: no limit).
    pub exit_budget: Option<u64>,
    /// The `record_exits` budget: this many exits (at least the first) go through
    /// [`VcpuHandle::run`] and the decoder; the later ones through [`VcpuHandle::run_counted`],
    /// counted and not decoded (`None`: no limit, every exit is decoded).
    pub record_exits: Option<u64>,
    /// Take a control point right after the first guest exit, as [`Probe::pause_at_first_exit`].
    pub pause_at_first_exit: bool,
}

/// Run any guest program under `control`, decoding its exits with `decoder`, reporting to
/// `notify`. The thread running this is the target of the vCPU's kicks until it returns.
pub fn run_decoded<D: ExitDecoder>(
    vcpu: &VcpuHandle,
    mut decoder: D,
    limits: RunLimits,
    control: &RunControl,
    notify: &mut dyn FnMut(VcpuNotice),
) -> RunOutcome<D::Report> {
    let kick = vcpu.kicker();
    kick.bind_current_thread();
    let _unbind = Unbind(kick.as_ref());
    let mut exits = 0u64;
    let mut counted = 0u64;
    // Whether to ask the backend for exits it knows already; a backend that offered none once
    // (a real vCPU) is not asked again.
    let mut ask_known = true;
    let end = loop {
        if limits.exit_budget.is_some_and(|budget| exits >= budget) {
            break ProbeEnd::ExitBudget;
        }
        let beyond = limits
            .record_exits
            .is_some_and(|budget| exits >= budget.max(1));
        // Past the first exit (which is noticed), the exits that need nothing but the decoder
        // are taken as the backend offers them, without a call each.
        if ask_known && !beyond && exits > 0 {
            let (mut offered, mut ended) = (false, None);
            let taken = vcpu.run_known(&mut |exit| {
                offered = true;
                take_known(exit, &mut exits, &mut decoder, &limits, &mut ended)
            });
            if let Some(end) = ended {
                break end;
            }
            ask_known = offered;
            if taken > 0 {
                continue;
            }
        }
        let result = if beyond {
            vcpu.run_counted()
        } else {
            vcpu.run()
        };
        let exit = match result {
            Ok(VcpuExit::Counted(summary)) if beyond => {
                exits += summary.runs;
                counted += summary.runs;
                continue;
            }
            Ok(exit) => exit,
            Err(error) => break ProbeEnd::Call(error),
        };
        exits += 1;
        if beyond {
            counted += 1;
        }
        if exits == 1 {
            notify(VcpuNotice::FirstExit);
            if limits.pause_at_first_exit && exit != VcpuExit::Interrupted {
                match settle(vcpu, control, notify) {
                    Ok(RunDecision::Stop) => break ProbeEnd::Stopped,
                    Ok(_) => {}
                    Err(error) => break ProbeEnd::Call(error),
                }
            }
        }
        if exit == VcpuExit::Interrupted {
            match settle(vcpu, control, notify) {
                Ok(RunDecision::Stop) => break ProbeEnd::Stopped,
                Ok(_) => continue,
                Err(error) => break ProbeEnd::Call(error),
            }
        }
        if let Some(fault) = guest_fault(&exit) {
            break ProbeEnd::GuestFault(format!("exit #{exits}: {fault}"));
        }
        if beyond {
            if ExitSummary::folds(&exit) {
                continue;
            }
            break ProbeEnd::EndedBeyondBudget(format!("exit #{exits}: {exit}"));
        }
        match decoder.feed(&exit) {
            Ok(Step::Continue) => {}
            Ok(Step::Done) => break ProbeEnd::Halted,
            Err(error) => break ProbeEnd::Protocol(error),
        }
    };
    RunOutcome {
        report: decoder.finish(),
        exits,
        counted,
        end,
    }
}

/// What [`run_decoded`] does with an exit [`VcpuHandle::run_known`] offers, exactly as with one
/// its own `RUN` returned: leave it if the loop does more than decode it (a kick's control
/// point, or a budget reached), else count it and end the run at a guest fault, or feed it to
/// the decoder (`ended` says why the run ended, when it did).
fn take_known<D: ExitDecoder>(
    exit: &VcpuExit,
    exits: &mut u64,
    decoder: &mut D,
    limits: &RunLimits,
    ended: &mut Option<ProbeEnd>,
) -> TakeExit {
    if matches!(exit, VcpuExit::Interrupted)
        || limits.exit_budget.is_some_and(|budget| *exits >= budget)
        || limits
            .record_exits
            .is_some_and(|budget| *exits >= budget.max(1))
    {
        return TakeExit::Leave;
    }
    *exits += 1;
    let end = match guest_fault(exit) {
        Some(fault) => ProbeEnd::GuestFault(format!("exit #{exits}: {fault}")),
        None => match decoder.feed(exit) {
            Ok(Step::Continue) => return TakeExit::Take,
            Ok(Step::Done) => ProbeEnd::Halted,
            Err(error) => ProbeEnd::Protocol(error),
        },
    };
    *ended = Some(end);
    TakeExit::Last
}

/// Unbinds the run thread from its vCPU's kicks however the loop ends (a panic included).
struct Unbind<'a>(&'a dyn crate::hypervisor::backend::Kick);

impl Drop for Unbind<'_> {
    fn drop(&mut self) {
        self.0.unbind_thread();
    }
}

/// After a kick: take control points until the decision is to run on or to stop, parking in
/// between while the decision is to pause.
fn settle(
    vcpu: &VcpuHandle,
    control: &RunControl,
    notify: &mut dyn FnMut(VcpuNotice),
) -> Result<RunDecision, HandleError> {
    loop {
        match vcpu.control_point(control)? {
            RunDecision::Pause => {
                notify(VcpuNotice::Parked);
                control.wait_while_paused();
                notify(VcpuNotice::Unparked);
            }
            decision => return Ok(decision),
        }
    }
}

/// [`run_probe`] on a new OS thread named `thread_name` (one thread per vCPU).
pub fn spawn_probe(
    vcpu: Arc<VcpuHandle>,
    thread_name: String,
    points: Vec<(u32, u32)>,
    repeats: u32,
    exit_budget: Option<u64>,
) -> std::io::Result<JoinHandle<ProbeOutcome>> {
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || run_probe(&vcpu, &points, repeats, exit_budget))
}

/// The exits that mean the guest crashed, described for a person.
#[inline]
fn guest_fault(exit: &VcpuExit) -> Option<String> {
    // Told apart here, described out of line: almost every exit is no fault, and each run of a
    // replay's hundreds of thousands of exits asks.
    if !matches!(
        exit,
        VcpuExit::Shutdown | VcpuExit::FailEntry { .. } | VcpuExit::InternalError { .. }
    ) {
        return None;
    }
    describe_guest_fault(exit)
}

/// [`guest_fault`]'s description of a fault.
#[cold]
fn describe_guest_fault(exit: &VcpuExit) -> Option<String> {
    Some(match exit {
        VcpuExit::Shutdown => {
            "SHUTDOWN: the guest triple-faulted (an exception it could not deliver)".to_string()
        }
        VcpuExit::FailEntry { reason } => format!(
            "FAIL_ENTRY: the hardware refused to enter the guest (entry failure reason {reason:#x})"
        ),
        VcpuExit::InternalError { suberror } => format!(
            "INTERNAL_ERROR: KVM could not continue the guest (suberror {suberror}: {})",
            internal_error_name(*suberror)
        ),
        _ => return None,
    })
}

/// `KVM_INTERNAL_ERROR_*`.
fn internal_error_name(suberror: u32) -> &'static str {
    match suberror {
        1 => "instruction emulation failed",
        2 => "simultaneous exceptions",
        3 => "event delivery failed",
        4 => "unexpected exit reason",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests;
