//! The vCPU run loop: drive one vCPU through the CPUID probe guest ([`crate::guest::x86`]) on the
//! calling thread, or on a thread of its own ([`spawn_probe`]), until the guest is done, faults,
//! breaks the protocol, a call fails, or an exit budget runs out.
//!
//! The loop only ever goes through [`VcpuHandle::run`], so the VM's CPU model is sealed before the
//! first `KVM_RUN`, and it works the same over KVM, the recorder and the replay backend.

use crate::call::VcpuExit;
use crate::guest::{GuestProtocolError, GuestReport, ProbeDecoder, Step};
use crate::handle::{HandleError, VcpuHandle};
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
    /// The guest's exits broke the report protocol.
    Protocol(GuestProtocolError),
    /// A backend call failed (the kernel, the lock, or a replay that diverged).
    Call(HandleError),
    /// The exit budget was used up before the guest finished.
    ExitBudget,
}

impl fmt::Display for ProbeEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeEnd::Halted => f.write_str("the guest halted after its last pass"),
            ProbeEnd::GuestFault(fault) => write!(f, "guest fault: {fault}"),
            ProbeEnd::Protocol(error) => write!(f, "guest protocol error: {error}"),
            ProbeEnd::Call(error) => write!(f, "call failed: {error}"),
            ProbeEnd::ExitBudget => f.write_str("the exit budget ran out"),
        }
    }
}

/// The result of one probe run.
#[derive(Clone, Debug)]
pub struct ProbeOutcome {
    /// What the guest's complete passes saw (all of its passes when `end` is
    /// [`ProbeEnd::Halted`]).
    pub report: GuestReport,
    /// `KVM_RUN` calls that returned an exit (including `Interrupted` and the final one).
    pub exits: u64,
    pub end: ProbeEnd,
}

/// Run `vcpu`, which must already hold the probe guest (loaded with the same `points` and
/// `repeats`) and be at its entry point, until it is done or something stops it. A guest loaded to
/// fault on purpose ([`crate::guest::x86::GuestProgram::fault_after`]) ends in
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
    let mut decoder = ProbeDecoder::new(points, repeats);
    let mut exits = 0u64;
    let end = loop {
        if exit_budget.is_some_and(|budget| exits >= budget) {
            break ProbeEnd::ExitBudget;
        }
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(error) => break ProbeEnd::Call(error),
        };
        exits += 1;
        if let Some(fault) = guest_fault(&exit) {
            break ProbeEnd::GuestFault(format!("exit #{exits}: {fault}"));
        }
        match decoder.feed(&exit) {
            Ok(Step::Continue) => {}
            Ok(Step::Done) => break ProbeEnd::Halted,
            Err(error) => break ProbeEnd::Protocol(error),
        }
    };
    ProbeOutcome {
        report: decoder.finish(),
        exits,
        end,
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
    use crate::backend::{Vcpu, Vm};
    use crate::call::{Reply, VcpuCall, VmCall};
    use crate::error::CallError;
    use crate::guest::GuestSeen;
    use crate::guest::x86::{PORT_PASS_BEGIN, PORT_PASS_END, PORT_RESULT};
    use crate::handle::VmHandle;
    use crate::ids::{VcpuId, VmId};
    use crate::lock::LockRefusal;
    use std::collections::VecDeque;
    use vm_memory::GuestMemoryMmap;

    /// A vCPU that answers `Run` from a script.
    struct Scripted {
        exits: VecDeque<Result<VcpuExit, CallError>>,
    }

    impl Vcpu for Scripted {
        fn id(&self) -> (VmId, VcpuId) {
            (VmId(0), VcpuId(0))
        }
        fn call(&mut self, call: &VcpuCall) -> Result<Reply, CallError> {
            match call {
                VcpuCall::Run => match self.exits.pop_front() {
                    Some(exit) => exit.map(Reply::Exit),
                    None => Err(CallError::Backend("script exhausted".into())),
                },
                _ => Ok(Reply::Done),
            }
        }
        fn note_refused(&mut self, _: &VcpuCall, _: &LockRefusal) -> Result<(), CallError> {
            Ok(())
        }
    }

    struct ScriptedVm {
        memory: GuestMemoryMmap,
        script: Option<Vec<Result<VcpuExit, CallError>>>,
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
            Ok(Box::new(Scripted { exits }))
        }
        fn guest_memory(&self) -> &GuestMemoryMmap {
            &self.memory
        }
    }

    fn vcpu(script: Vec<Result<VcpuExit, CallError>>) -> VcpuHandle {
        let vm = VmHandle::new(
            Box::new(ScriptedVm {
                memory: GuestMemoryMmap::new(),
                script: Some(script),
            }),
            "scripted",
        );
        vm.create_vcpu(VcpuId(0)).unwrap()
    }

    fn out(port: u16, value: u32) -> Result<VcpuExit, CallError> {
        Ok(VcpuExit::IoOut {
            port,
            data: value.to_le_bytes().to_vec(),
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
        assert_eq!(error.exit(), 2);
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
    fn vcpu_handles_are_shareable() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Arc<VcpuHandle>>();
    }
}
