//! The vCPU run loop: drive one vCPU through the CPUID probe guest ([`crate::guests::x86`]) on the
//! calling thread, or on a thread of its own ([`spawn_probe`]), until the guest is done, faults,
//! breaks the protocol, a call fails, the control plane stops it, or an exit budget runs out.
//!
//! The loop only ever goes through [`VcpuHandle::run`], so the VM's CPU model is sealed before the
//! first `KVM_RUN`, and it works the same over KVM, the recorder and the replay backend.
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
    let end = loop {
        if limits.exit_budget.is_some_and(|budget| exits >= budget) {
            break ProbeEnd::ExitBudget;
        }
        let beyond = limits
            .record_exits
            .is_some_and(|budget| exits >= budget.max(1));
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
fn guest_fault(exit: &VcpuExit) -> Option<String> {
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
mod tests {
    use super::*;
    use crate::Errno;
    use crate::guests::x86::{PORT_PASS_BEGIN, PORT_PASS_END, PORT_RESULT};
    use crate::hypervisor::backend::{Vcpu, Vm};
    use crate::hypervisor::call::{Reply, VcpuCall, VmCall};
    use crate::hypervisor::error::CallError;
    use crate::hypervisor::ids::{VcpuId, VmId};
    use crate::hypervisor::refusal::LockRefusal;
    use crate::model::x86::drift::GuestSeen;
    use crate::runtime::handle::VmHandle;
    use std::collections::VecDeque;
    use vm_memory::GuestMemoryMmap;

    /// A vCPU that answers `Run` and `RunCounted` from a script, and notes which was called.
    struct Scripted {
        exits: VecDeque<Result<VcpuExit, CallError>>,
        calls: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Vcpu for Scripted {
        fn id(&self) -> (VmId, VcpuId) {
            (VmId(0), VcpuId(0))
        }
        fn call(&mut self, call: &VcpuCall) -> Result<Reply, CallError> {
            match call {
                VcpuCall::Run | VcpuCall::RunCounted => {
                    if let Ok(mut calls) = self.calls.lock() {
                        calls.push(call.to_string());
                    }
                    match self.exits.pop_front() {
                        Some(exit) => exit.map(Reply::Exit),
                        None => Err(CallError::Backend("script exhausted".into())),
                    }
                }
                _ => Ok(Reply::Done),
            }
        }
        fn note_refused(&mut self, _: &VcpuCall, _: &LockRefusal) -> Result<(), CallError> {
            Ok(())
        }
        fn kicker(&self) -> Arc<dyn crate::hypervisor::backend::Kick> {
            Arc::new(crate::hypervisor::backend::NoKick)
        }
        fn control_point(&mut self, wanted: RunDecision) -> Result<RunDecision, CallError> {
            Ok(wanted)
        }
    }

    struct ScriptedVm {
        memory: GuestMemoryMmap,
        script: Option<Vec<Result<VcpuExit, CallError>>>,
        calls: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Vm for ScriptedVm {
        fn id(&self) -> VmId {
            VmId(0)
        }
        fn call(&mut self, _: &VmCall) -> Result<Reply, CallError> {
            Ok(Reply::Done)
        }
        fn create_vcpu(&mut self, _: VcpuId) -> Result<Box<dyn Vcpu>, CallError> {
            let exits = self.script.take().unwrap_or_default().into();
            let calls = Arc::clone(&self.calls);
            Ok(Box::new(Scripted { exits, calls }))
        }
        fn guest_memory(&self) -> &GuestMemoryMmap {
            &self.memory
        }
    }

    fn vcpu(script: Vec<Result<VcpuExit, CallError>>) -> VcpuHandle {
        vcpu_noting(script).0
    }

    /// A scripted vCPU, and the run calls it was given (`RUN` or `RUN_COUNTED`), in order.
    fn vcpu_noting(
        script: Vec<Result<VcpuExit, CallError>>,
    ) -> (VcpuHandle, Arc<std::sync::Mutex<Vec<String>>>) {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let vm = VmHandle::new(
            Box::new(ScriptedVm {
                memory: GuestMemoryMmap::new(),
                script: Some(script),
                calls: Arc::clone(&calls),
            }),
            "scripted",
            crate::GuestArch::X86_64,
        );
        (vm.create_vcpu(VcpuId(0)).unwrap(), calls)
    }

    fn bounded(record_exits: u64) -> RunLimits {
        RunLimits {
            exit_budget: None,
            record_exits: Some(record_exits),
            pause_at_first_exit: false,
        }
    }

    fn run_bounded(
        script: Vec<Result<VcpuExit, CallError>>,
        limits: RunLimits,
        control: &RunControl,
    ) -> (ProbeOutcome, Vec<String>) {
        let (vcpu, calls) = vcpu_noting(script);
        let decoder = ProbeDecoder::new(&POINTS, 0);
        let outcome = run_decoded(&vcpu, decoder, limits, control, &mut |_| {});
        let calls = calls.lock().unwrap().clone();
        (outcome, calls)
    }

    #[test]
    fn past_the_budget_exits_are_counted_not_decoded() {
        // One whole pass decoded (8 exits), then garbage the decoder would refuse: counted only.
        let mut script = one_pass(0);
        script.extend([out(0x1234, 7), out(PORT_PASS_END, 9)]);
        script.push(Ok(VcpuExit::Interrupted));
        script.push(out(PORT_RESULT, 1));
        let control = RunControl::new();
        control.request(RunDecision::Stop);
        let (outcome, calls) = run_bounded(script, bounded(8), &control);
        assert!(matches!(outcome.end, ProbeEnd::Stopped), "{}", outcome.end);
        assert_eq!((outcome.exits, outcome.counted), (11, 3));
        assert_eq!(outcome.report.passes, 1);
        assert_eq!(calls[..8], vec!["RUN".to_string(); 8]);
        assert_eq!(calls[8..], vec!["RUN_COUNTED".to_string(); 3]);
    }

    #[test]
    fn a_replayed_summary_counts_its_runs_and_goes_on() {
        let mut summary = ExitSummary::default();
        for _ in 0..1000 {
            summary.add(&VcpuExit::IoOut {
                port: PORT_RESULT,
                data: vec![0; 4].into(),
            });
        }
        let mut script = one_pass(0);
        script.push(Ok(VcpuExit::Counted(summary)));
        script.push(Ok(VcpuExit::Interrupted));
        let control = RunControl::new();
        control.request(RunDecision::Stop);
        let (outcome, _) = run_bounded(script, bounded(8), &control);
        assert!(matches!(outcome.end, ProbeEnd::Stopped), "{}", outcome.end);
        assert_eq!((outcome.exits, outcome.counted), (1009, 1001));
    }

    #[test]
    fn past_the_budget_other_ends_and_faults_end_the_run() {
        let mut script = one_pass(0);
        script.push(out(PORT_RESULT, 1));
        script.push(Ok(VcpuExit::Hlt));
        let (outcome, _) = run_bounded(script, bounded(8), &RunControl::new());
        let ProbeEnd::EndedBeyondBudget(what) = &outcome.end else {
            panic!("{}", outcome.end)
        };
        assert!(what.contains("exit #10: HLT"), "{what}");
        assert_eq!((outcome.exits, outcome.counted), (10, 2));
        let mut script = one_pass(0);
        script.push(Ok(VcpuExit::Shutdown));
        let (outcome, _) = run_bounded(script, bounded(8), &RunControl::new());
        assert!(
            matches!(&outcome.end, ProbeEnd::GuestFault(f) if f.contains("exit #9: SHUTDOWN")),
            "{}",
            outcome.end
        );
    }

    #[test]
    fn the_exit_budget_counts_counted_exits_too() {
        let mut script = one_pass(0);
        script.extend((0..10).map(|_| out(PORT_RESULT, 1)));
        let limits = RunLimits {
            exit_budget: Some(12),
            ..bounded(8)
        };
        let (outcome, _) = run_bounded(script, limits, &RunControl::new());
        assert!(
            matches!(outcome.end, ProbeEnd::ExitBudget),
            "{}",
            outcome.end
        );
        assert_eq!((outcome.exits, outcome.counted), (12, 4));
    }

    fn out(port: u16, value: u32) -> Result<VcpuExit, CallError> {
        Ok(VcpuExit::IoOut {
            port,
            data: value.to_le_bytes()[..].into(),
        })
    }

    const POINTS: [(u32, u32); 1] = [(0x1, 0)];

    fn one_pass(pass: u32) -> Vec<Result<VcpuExit, CallError>> {
        let mut exits = vec![out(PORT_PASS_BEGIN, pass)];
        exits.extend([1, 0, 0xa, 0xb, 0xc, 0xd].map(|w| out(PORT_RESULT, w)));
        exits.push(out(PORT_PASS_END, pass));
        exits
    }

    #[test]
    fn halts_with_a_full_report() {
        let mut script = one_pass(0);
        script.insert(2, Ok(VcpuExit::Interrupted));
        script.extend(one_pass(1));
        script.push(Ok(VcpuExit::Hlt));
        let outcome = run_probe(&vcpu(script), &POINTS, 2, None);
        assert!(matches!(outcome.end, ProbeEnd::Halted), "{}", outcome.end);
        assert_eq!(outcome.exits, 18);
        let result = GuestSeen {
            leaf: 1,
            subleaf: 0,
            eax: 0xa,
            ebx: 0xb,
            ecx: 0xc,
            edx: 0xd,
        };
        assert_eq!(outcome.report.first_pass, vec![result]);
        assert_eq!(outcome.report.passes, 2);
        assert_eq!(outcome.report.differing_passes, 0);
        assert!(outcome.report.passes_agree());
    }

    #[test]
    fn triple_fault_is_a_guest_fault() {
        let mut script = one_pass(0);
        script.push(Ok(VcpuExit::Shutdown));
        let outcome = run_probe(&vcpu(script), &POINTS, 2, None);
        let ProbeEnd::GuestFault(fault) = &outcome.end else {
            panic!("{}", outcome.end)
        };
        assert!(fault.contains("exit #9: SHUTDOWN"), "{fault}");
        assert_eq!(outcome.report.passes, 1);
    }

    #[test]
    fn other_faults() {
        let outcome = run_probe(
            &vcpu(vec![Ok(VcpuExit::FailEntry { reason: 0x80000021 })]),
            &POINTS,
            1,
            None,
        );
        assert!(
            matches!(&outcome.end, ProbeEnd::GuestFault(f) if f.contains("FAIL_ENTRY")),
            "{}",
            outcome.end
        );
        let outcome = run_probe(
            &vcpu(vec![Ok(VcpuExit::InternalError { suberror: 1 })]),
            &POINTS,
            1,
            None,
        );
        assert!(
            matches!(&outcome.end, ProbeEnd::GuestFault(f) if f.contains("suberror 1: instruction emulation")),
            "{}",
            outcome.end
        );
    }

    #[test]
    fn protocol_errors_stop_the_run() {
        let outcome = run_probe(
            &vcpu(vec![out(PORT_PASS_BEGIN, 0), Ok(VcpuExit::Hlt)]),
            &POINTS,
            1,
            None,
        );
        let ProbeEnd::Protocol(error) = &outcome.end else {
            panic!("{}", outcome.end)
        };
        assert!(error.contains("exit #2"), "{error}");
        assert_eq!(outcome.exits, 2);
    }

    #[test]
    fn call_errors_stop_the_run() {
        let outcome = run_probe(
            &vcpu(vec![Err(CallError::Kernel(Errno::EFAULT))]),
            &POINTS,
            1,
            None,
        );
        let ProbeEnd::Call(error) = &outcome.end else {
            panic!("{}", outcome.end)
        };
        assert_eq!(error.errno(), Some(Errno::EFAULT));
        assert_eq!(outcome.exits, 0);
    }

    #[test]
    fn exit_budget() {
        let outcome = run_probe(&vcpu(one_pass(0)), &POINTS, 0, Some(5));
        assert!(
            matches!(outcome.end, ProbeEnd::ExitBudget),
            "{}",
            outcome.end
        );
        assert_eq!(outcome.exits, 5);
        let outcome = run_probe(&vcpu(one_pass(0)), &POINTS, 0, Some(0));
        assert_eq!(outcome.exits, 0);
    }

    #[test]
    fn spawned_probe_runs_on_a_named_thread() {
        let mut script = one_pass(0);
        script.push(Ok(VcpuExit::Hlt));
        let handle = spawn_probe(
            Arc::new(vcpu(script)),
            "vm0/vcpu0".into(),
            POINTS.to_vec(),
            1,
            None,
        )
        .unwrap();
        assert_eq!(handle.thread().name(), Some("vm0/vcpu0"));
        let outcome = handle.join().unwrap();
        assert!(matches!(outcome.end, ProbeEnd::Halted), "{}", outcome.end);
    }

    #[test]
    fn a_kick_with_stop_wanted_stops_the_run() {
        let mut script = one_pass(0);
        script.insert(3, Ok(VcpuExit::Interrupted));
        let control = RunControl::new();
        control.request(RunDecision::Stop);
        let mut notices = Vec::new();
        let probe = Probe {
            points: &POINTS,
            repeats: 0,
            exit_budget: None,
            record_exits: None,
            pause_at_first_exit: false,
        };
        let outcome = run_controlled(&vcpu(script), &probe, &control, &mut |n| notices.push(n));
        assert!(matches!(outcome.end, ProbeEnd::Stopped), "{}", outcome.end);
        assert_eq!(outcome.exits, 4);
        assert_eq!(notices, vec![VcpuNotice::FirstExit]);
    }

    /// Run `script` on a thread of its own under `control` (one probe pass), with its notices on
    /// a channel.
    fn spawn_run(
        script: Vec<Result<VcpuExit, CallError>>,
        control: &Arc<RunControl>,
        pause_at_first_exit: bool,
    ) -> (
        std::thread::JoinHandle<ProbeOutcome>,
        std::sync::mpsc::Receiver<VcpuNotice>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel();
        let control = Arc::clone(control);
        let vcpu = vcpu(script);
        let runner = std::thread::spawn(move || {
            let probe = Probe {
                points: &POINTS,
                repeats: 1,
                exit_budget: None,
                record_exits: None,
                pause_at_first_exit,
            };
            run_controlled(&vcpu, &probe, &control, &mut |n| tx.send(n).unwrap())
        });
        (runner, rx)
    }

    #[test]
    fn a_kick_with_pause_wanted_parks_until_resumed() {
        let mut script = one_pass(0);
        script.insert(1, Ok(VcpuExit::Interrupted));
        script.push(Ok(VcpuExit::Hlt));
        let control = Arc::new(RunControl::new());
        control.request(RunDecision::Pause);
        let (runner, rx) = spawn_run(script, &control, false);
        assert_eq!(rx.recv().unwrap(), VcpuNotice::FirstExit);
        assert_eq!(rx.recv().unwrap(), VcpuNotice::Parked);
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(30))
                .is_err(),
            "the thread must stay parked while pause is wanted"
        );
        control.request(RunDecision::Run);
        assert_eq!(rx.recv().unwrap(), VcpuNotice::Unparked);
        let outcome = runner.join().unwrap();
        assert!(matches!(outcome.end, ProbeEnd::Halted), "{}", outcome.end);
        assert_eq!(outcome.report.passes, 1);
    }

    #[test]
    fn a_paused_start_parks_after_the_first_real_exit_and_keeps_it() {
        // No kick: the first exit is the guest's own (pass 0 begins), and the thread parks right
        // there, before it is decoded, because pause was wanted before the thread ran.
        let control = Arc::new(RunControl::new());
        control.preset(RunDecision::Pause);
        let mut script = one_pass(0);
        script.push(Ok(VcpuExit::Hlt));
        let (runner, rx) = spawn_run(script, &control, true);
        assert_eq!(rx.recv().unwrap(), VcpuNotice::FirstExit);
        assert_eq!(rx.recv().unwrap(), VcpuNotice::Parked);
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(30))
                .is_err(),
            "a vCPU started paused stays parked until resumed"
        );
        control.request(RunDecision::Run);
        assert_eq!(rx.recv().unwrap(), VcpuNotice::Unparked);
        let outcome = runner.join().unwrap();
        // The exit it parked at was not lost: the pass it began is complete.
        assert!(matches!(outcome.end, ProbeEnd::Halted), "{}", outcome.end);
        assert_eq!(outcome.report.passes, 1);
    }

    #[test]
    fn a_paused_start_stopped_while_parked_ends_stopped() {
        let control = Arc::new(RunControl::new());
        control.preset(RunDecision::Pause);
        let (runner, rx) = spawn_run(one_pass(0), &control, true);
        assert_eq!(rx.recv().unwrap(), VcpuNotice::FirstExit);
        assert_eq!(rx.recv().unwrap(), VcpuNotice::Parked);
        control.request(RunDecision::Stop);
        let outcome = runner.join().unwrap();
        assert!(matches!(outcome.end, ProbeEnd::Stopped), "{}", outcome.end);
        assert_eq!(outcome.exits, 1);
    }

    #[test]
    fn vcpu_handles_are_shareable() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Arc<VcpuHandle>>();
    }
}
