//! The run loop's tests: scripted vCPUs, their exits called one by one or offered as known.

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

/// A vCPU that answers `Run` and `RunCounted` from a script, and notes which was called; one
/// that `knows` also offers the script's exits to `run_known` (noted `KNOWN` when taken), as a
/// replay does.
struct Scripted {
    exits: VecDeque<Result<VcpuExit, CallError>>,
    calls: Arc<std::sync::Mutex<Vec<String>>>,
    knows: bool,
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
    fn run_known(&mut self, take: &mut dyn FnMut(&VcpuExit) -> TakeExit) -> u64 {
        let mut taken = 0;
        while let (true, Some(Ok(exit))) = (self.knows, self.exits.front()) {
            let answer = take(exit);
            if answer == TakeExit::Leave {
                break;
            }
            self.calls.lock().unwrap().push("KNOWN".into());
            self.exits.pop_front();
            taken += 1;
            if answer == TakeExit::Last {
                break;
            }
        }
        taken
    }
}

struct ScriptedVm {
    memory: GuestMemoryMmap,
    script: Option<Vec<Result<VcpuExit, CallError>>>,
    calls: Arc<std::sync::Mutex<Vec<String>>>,
    knows: bool,
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
        let knows = self.knows;
        Ok(Box::new(Scripted {
            exits,
            calls,
            knows,
        }))
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
    vcpu_knowing(script, false)
}

/// [`vcpu_noting`], the vCPU offering its script's exits to `run_known` if it `knows`.
fn vcpu_knowing(
    script: Vec<Result<VcpuExit, CallError>>,
    knows: bool,
) -> (VcpuHandle, Arc<std::sync::Mutex<Vec<String>>>) {
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let vm = VmHandle::new(
        Box::new(ScriptedVm {
            memory: GuestMemoryMmap::new(),
            script: Some(script),
            calls: Arc::clone(&calls),
            knows,
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

/// Exits a backend knows already end a run exactly as exits called one by one do; only
/// the first exit, kicks, and what lies past the budget are calls of their own.
#[test]
fn known_exits_end_runs_as_called_ones_do() {
    type Script = fn() -> Vec<Result<VcpuExit, CallError>>;
    let cases: Vec<(&str, Script, RunLimits)> = vec![
        (
            "halts, kicked once",
            || {
                let mut script = one_pass(0);
                script.insert(2, Ok(VcpuExit::Interrupted));
                script.extend(one_pass(1));
                script.push(Ok(VcpuExit::Hlt));
                script
            },
            RunLimits::default(),
        ),
        (
            "triple fault",
            || {
                let mut script = one_pass(0);
                script.push(Ok(VcpuExit::Shutdown));
                script
            },
            RunLimits::default(),
        ),
        (
            "protocol error",
            || {
                vec![
                    out(PORT_PASS_BEGIN, 0),
                    out(PORT_PASS_BEGIN, 1),
                    Ok(VcpuExit::Hlt),
                ]
            },
            RunLimits::default(),
        ),
        (
            "a call fails mid-run",
            || {
                let mut script = one_pass(0);
                script.insert(3, Err(CallError::Kernel(Errno::EFAULT)));
                script
            },
            RunLimits::default(),
        ),
        (
            "exit budget",
            || one_pass(0),
            RunLimits {
                exit_budget: Some(5),
                ..RunLimits::default()
            },
        ),
        (
            "past the record budget",
            || {
                let mut script = one_pass(0);
                script.extend([out(0x1234, 7), out(PORT_PASS_END, 9), Ok(VcpuExit::Hlt)]);
                script
            },
            bounded(8),
        ),
    ];
    for (case, script, limits) in cases {
        let runs = [false, true].map(|knows| {
            let (vcpu, calls) = vcpu_knowing(script(), knows);
            let decoder = ProbeDecoder::new(&POINTS, 2);
            let outcome = run_decoded(&vcpu, decoder, limits, &RunControl::new(), &mut |_| {});
            let calls = calls.lock().unwrap().clone();
            (outcome, calls)
        });
        let [(called, called_calls), (known, known_calls)] = runs;
        assert_eq!(known.end.to_string(), called.end.to_string(), "{case}");
        assert_eq!(
            (known.exits, known.counted),
            (called.exits, called.counted),
            "{case}"
        );
        assert_eq!(known.report, called.report, "{case}");
        assert!(!called_calls.iter().any(|c| c == "KNOWN"), "{case}");
        // Every exit was served once, one way or the other.
        assert_eq!(
            known_calls.len(),
            called_calls.len(),
            "{case}: {known_calls:?}"
        );
        assert_eq!(
            known_calls.first().map(String::as_str),
            Some("RUN"),
            "{case}"
        );
        if called.exits > 2 {
            assert!(
                known_calls.iter().any(|c| c == "KNOWN"),
                "{case}: {known_calls:?}"
            );
        }
        // Past the record budget, nothing is taken as known.
        if let Some(budget) = limits.record_exits {
            let after: Vec<_> = known_calls.iter().skip(budget as usize).collect();
            assert!(
                after.iter().all(|c| *c == "RUN_COUNTED"),
                "{case}: {after:?}"
            );
        }
    }
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
