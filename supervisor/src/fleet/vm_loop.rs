//! One VM's event loop, built on `event-manager`, that owns the VM, its vCPU threads and its
//! lifecycle. It runs on a thread of its own when its backend runs guests, else on one of a few
//! loop hosts shared by many VMs (`host.rs`).
//!
//! One eventfd wakes it, for commands from the async control plane (over an `mpsc` channel; replies
//! go back on tokio `oneshot`s) and for notices from its vCPU threads (first exit, parked,
//! unparked, ended; over a second channel). vCPU threads run the guest and decode its exits
//! themselves (one OS thread each, `KVM_RUN` blocks; a replayed vCPU whose whole run is at hand
//! runs on the loop's own thread instead); the loop handles what changes the VM's life:
//! a start completing, a pause settling, a vCPU ending or failing, a stop, a removal. Nothing here
//! blocks on a guest: a pause or a stop kicks the vCPUs and is answered when the notices say it
//! took effect.
//!
//! A vCPU that fails (its guest faults, a call fails, its thread panics) stops the VM's other
//! vCPUs and marks the VM failed; other VMs never notice.
//!
//! A VM of a process about to exit ([`Command::Exit`], after [`VmLink::linger`]) ends without
//! letting anything go: each vCPU thread hands its outcome over in its last notice and parks for
//! good, and the loop answers with the final report and parks too, holding the VM, its vCPUs and
//! its guest memory. Every `munmap` in the process (a thread's stack, a VM's guest memory) calls
//! the MMU notifier of every live VM, so a fleet that lets go of its objects one by one pays for
//! the square of its size; the process's exit releases the notifiers once and then everything.
//!
//! Nothing here depends on the guests' architecture: what does (memory layout, CPU model, guest
//! program, what a vCPU thread runs, judging what it saw, after-run writes) is asked of
//! [`Guest`], the fleet's one guest-architecture seam (`fleet/guest/`). Around the loop: its
//! setup, run once before there are events (`setup.rs`), the control plane's end of it
//! (`link.rs`), where it runs (`host.rs`), the vCPU threads (`vcpu_thread.rs`) and the CPU model
//! as the loop asks for it (`model.rs`).

use super::error::{AfterRunError, ConfigureError, LinkError, ModelError, StartError, VmError};
use super::guest::{Guest, ModelRequest, VcpuOutcome, VmParts};
use super::lifecycle::{ExitReason, Lifecycle, ModelView, StartMode, VcpuModelView, VmStatus};
use crate::fleet::threads::PooledThread;
use crate::report::{RunEnd, VmReport, VmState};
use crate::spec::VmSpec;
use event_manager::{EventOps, Events, MutEventSubscriber};
use protocol::Op;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use tokio::sync::{oneshot, watch};
use vcpu::runtime::runner::{ProbeEnd, VcpuNotice};
use vcpu::{
    Hypervisor, RunControl, RunDecision, Seal, VcpuCall, VcpuHandle, VcpuId, VmCall, VmHandle,
};
use vcpu_thread::{Notice, ReadyThread, VcpuRunner, spawn_vcpu};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

mod host;
mod link;
mod model;
mod setup;
mod vcpu_thread;

pub(super) use link::{Answer, Command, VmLink};
use setup::park_for_good;
pub(super) use setup::{CreateResult, VmSetup, spawn};

/// Where one vCPU thread is, as its notices tell.
#[derive(Clone, Copy, Debug, Default)]
struct VcpuRun {
    first_exit: bool,
    parked: bool,
    ended: bool,
}

/// A CPU-model change requested while the VM ran: pause, write, resume, then answer.
enum ModelChange {
    WaitingForPause {
        change: ModelRequest,
        answer: Answer<ModelView, ModelError>,
    },
    WaitingForResume {
        result: Result<ModelView, ModelError>,
        answer: Answer<ModelView, ModelError>,
    },
}

/// The loop's one eventfd, written by the control plane after a command and by vCPU threads
/// after a notice: one fd per VM, not two (a 1,000-VM fleet made, watched and closed 2,000), and
/// a loop woken by both at once wakes once.
const WAKE: u32 = 1;

struct VmLoop {
    /// The guests' architecture (the backend's: the host's, or the recorded trace's) and its
    /// model state: everything that differs between x86 and arm64.
    guest: Guest,
    /// For the scratch VMs of arm64 cross-checks.
    hv: Arc<dyn Hypervisor>,
    spec: VmSpec,
    supported: Arc<super::supported::HostQueries>,
    /// What the fleet's VMs share of their models and reports.
    shared: Arc<super::guest::SharedModels>,
    vm: VmHandle,
    vcpus: Vec<Arc<VcpuHandle>>,
    control: Arc<RunControl>,
    /// Set when the process is about to exit: threads that end park for good (see
    /// [`VmLink::linger`]).
    linger: Arc<AtomicBool>,
    /// Asked to [`Command::Exit`]: answer with the report and keep everything.
    exiting: bool,
    /// One per vCPU once started (`None` once joined).
    threads: Vec<Option<PooledThread<Option<VcpuOutcome>>>>,
    /// vCPU threads spawned ahead of `start`, waiting for their launch (or why they could not be
    /// spawned, which `start` reports).
    ready: Result<Vec<ReadyThread>, StartError>,
    runs: Vec<VcpuRun>,
    lifecycle: Lifecycle,
    status: watch::Sender<VmStatus>,
    report: VmReport,
    commands: Receiver<Command>,
    /// Wakes the loop for commands and notices alike ([`WAKE`]).
    wake: Arc<EventFd>,
    notice_rx: Receiver<(usize, Notice)>,
    notice_tx: Sender<(usize, Notice)>,
    starting: Vec<Answer<VmStatus>>,
    /// How the VM was started (what `starting` waits for).
    start_mode: StartMode,
    pausing: Vec<Answer<VmStatus>>,
    resuming: Vec<Answer<VmStatus>>,
    stopping: Vec<Answer<VmStatus>>,
    removing: Option<Answer<VmReport>>,
    /// A CPU-model change on a running VM, in progress.
    model_change: Option<ModelChange>,
    /// The first vCPU failure, if any (the VM's exit reason).
    failure: Option<String>,
    done: bool,
    /// Set by `init` when the loop could not register its eventfds.
    broken: Option<VmError>,
    /// Dropped with the loop: tells [`VmLink::take_end`]'s waiter that the VM and its objects are
    /// gone.
    _ended: oneshot::Sender<()>,
}

impl MutEventSubscriber for VmLoop {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.data() != WAKE {
            return;
        }
        // Nonblocking, and read before the channels: the count is irrelevant, the channels hold
        // the commands and notices, and one written after this read wakes the loop again.
        let _ = self.wake.read();
        while let Ok(command) = self.commands.try_recv() {
            self.command(command);
        }
        // The commands' answers are given before any notice is taken, as they were when the two
        // had an eventfd each and each wake-up ended in a settle.
        self.settle();
        // Notices of the runs a `start` above served on this thread are queued already, without
        // a wake-up of their own (see `VcpuRunner::run`): they are taken here, like the others.
        // Settle after every single notice, not after a batch: a vCPU's notices arrive in its
        // own order (first exit before ended, unparked before ended), so answers that are due at
        // a notice are given in the state right after it, however the notices of a live run
        // happened to be batched. That is what makes them replayable. (Commands and notices that
        // wait together are taken in either order: live, their wake-ups race.)
        while let Ok((index, notice)) = self.notice_rx.try_recv() {
            self.notice(index, notice);
            self.settle();
        }
        self.settle();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(self.wake.as_ref(), WAKE, EventSet::IN)) {
            self.broken = Some(VmError::Watch {
                what: "wake-up",
                source: Arc::new(e),
            });
        }
    }
}

impl VmLoop {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn status_now(&self) -> VmStatus {
        let mut status = VmStatus::new(self.lifecycle.clone());
        status.exits = self.report.vcpus.iter().map(|v| v.exits).sum();
        status
    }

    fn set_lifecycle(&mut self, lifecycle: Lifecycle) {
        self.lifecycle = lifecycle;
        self.status.send_replace(self.status_now());
    }

    /// The loop cannot go on: fail every waiting request, stop and tear down the VM.
    fn abandon(&mut self, why: VmError) {
        tracing::error!(vm = self.name(), "{why}");
        self.control.request(RunDecision::Stop);
        self.join_all();
        self.report.fail_if_ok(why.to_string());
        self.teardown();
        self.set_lifecycle(Lifecycle::Exited(ExitReason::Failed(why.to_string())));
        for answer in self
            .starting
            .drain(..)
            .chain(self.pausing.drain(..))
            .chain(self.resuming.drain(..))
            .chain(self.stopping.drain(..))
        {
            let _ = answer.send(Err(why.clone()));
        }
        match self.model_change.take() {
            Some(
                ModelChange::WaitingForPause { answer, .. }
                | ModelChange::WaitingForResume { answer, .. },
            ) => {
                let _ = answer.send(Err(why.clone().into()));
            }
            None => {}
        }
        if let Some(answer) = self.removing.take() {
            let _ = answer.send(Ok(self.report.clone()));
        }
        self.done = true;
    }

    // ---- configuration ------------------------------------------------------------------------

    /// Guest memory, every vCPU and its CPU model; nothing runs yet.
    fn configure(&mut self) -> Result<(), ConfigureError> {
        let (base, memory) = self.guest.memory(self.spec.memory_mib);
        self.vm.add_memory(0, base, memory)?;
        let (guest, vm) = self.guest_and_parts();
        guest.before_vcpus(vm)?;
        for index in 0..self.spec.vcpus {
            let vcpu = Arc::new(self.vm.create_vcpu(VcpuId(index))?);
            self.control.add_kick(vcpu.kicker());
            self.vcpus.push(vcpu);
            self.runs.push(VcpuRun::default());
        }
        let (guest, vm) = self.guest_and_parts();
        guest.configure(vm)
    }

    // ---- commands -----------------------------------------------------------------------------

    fn command(&mut self, command: Command) {
        match command {
            Command::Start { mode, answer } => self.start(mode, answer),
            Command::Pause(answer) => match &self.lifecycle {
                Lifecycle::Running => {
                    self.control.request(RunDecision::Pause);
                    self.set_lifecycle(Lifecycle::Pausing);
                    self.pausing.push(answer);
                }
                Lifecycle::Pausing => self.pausing.push(answer),
                Lifecycle::Paused => {
                    let _ = answer.send(Ok(self.status_now()));
                }
                other => {
                    let _ = answer.send(Err(self.cannot(Op::Pause.name(), other)));
                }
            },
            Command::Resume(answer) => match &self.lifecycle {
                Lifecycle::Paused => {
                    self.control.request(RunDecision::Run);
                    self.set_lifecycle(Lifecycle::Resuming);
                    self.resuming.push(answer);
                }
                Lifecycle::Resuming => self.resuming.push(answer),
                Lifecycle::Running => {
                    let _ = answer.send(Ok(self.status_now()));
                }
                other => {
                    let _ = answer.send(Err(self.cannot(Op::Resume.name(), other)));
                }
            },
            Command::Stop(answer) => match &self.lifecycle {
                Lifecycle::Created => {
                    self.report.state = VmState::Stopped;
                    self.set_lifecycle(Lifecycle::Exited(ExitReason::Stopped));
                    let _ = answer.send(Ok(self.status_now()));
                }
                Lifecycle::Exited(_) => {
                    let _ = answer.send(Ok(self.status_now()));
                }
                Lifecycle::Creating => {
                    let _ = answer.send(Err(self.cannot(Op::Stop.name(), &Lifecycle::Creating)));
                }
                _ => {
                    self.begin_stop();
                    self.stopping.push(answer);
                }
            },
            Command::Model(answer) => {
                let _ = answer.send(Ok(self.model_view()));
            }
            Command::SetModel { change, answer } => self.set_model(change, answer),
            Command::Exit(answer) => {
                self.linger.store(true, Ordering::SeqCst);
                self.exiting = true;
                self.command(Command::Remove(answer));
            }
            Command::Remove(answer) => {
                if matches!(self.lifecycle, Lifecycle::Created | Lifecycle::Creating) {
                    // Its own state, not "completed": no guest ran, nothing was checked.
                    if !matches!(self.report.state, VmState::Failed(_)) {
                        self.report.state = VmState::RemovedBeforeStart;
                    }
                    self.set_lifecycle(Lifecycle::Exited(ExitReason::RemovedBeforeStart));
                    self.finish_removal(answer);
                } else if matches!(self.lifecycle, Lifecycle::Exited(_)) {
                    self.finish_removal(answer);
                } else {
                    self.begin_stop();
                    self.removing = Some(answer);
                }
            }
        }
    }

    /// Change the CPU model of the VM (`set-model`): refused for a guest whose model is fixed at
    /// create; else written at once when no vCPU runs, or by pausing, writing, resuming.
    fn set_model(&mut self, change: ModelRequest, answer: Answer<ModelView, ModelError>) {
        if let Some(why) = self.guest.set_model_refused(&change) {
            let _ = answer.send(Err(ModelError::Fixed {
                vm: self.name().to_string(),
                why,
            }));
            return;
        }
        match &self.lifecycle {
            // vCPU state is never written while its thread runs: pause, write, resume. (It
            // also keeps the write's calls at a recorded point of each vCPU's stream.)
            Lifecycle::Running => {
                self.control.request(RunDecision::Pause);
                self.set_lifecycle(Lifecycle::Pausing);
                self.model_change = Some(ModelChange::WaitingForPause { change, answer });
            }
            Lifecycle::Created | Lifecycle::Paused | Lifecycle::Exited(_) => {
                let result = self.write_model(&change);
                let _ = answer.send(result);
            }
            other => {
                let _ = answer.send(Err(self.cannot("change the CPU model of", other).into()));
            }
        }
    }

    /// Why a request cannot be carried out in `state`. A VM that has exited gets the same words
    /// whether it had exited before the request came or did while carrying it out (which of the
    /// two happened is a matter of timing, and replies must not depend on timing).
    fn cannot(&self, what: &'static str, state: &Lifecycle) -> VmError {
        match state {
            Lifecycle::Exited(reason) => self.has_ended(what, reason),
            state => VmError::Cannot {
                what,
                vm: self.name().to_string(),
                state: state.clone(),
            },
        }
    }

    fn has_ended(&self, what: &'static str, reason: &ExitReason) -> VmError {
        VmError::Ended {
            what,
            vm: self.name().to_string(),
            reason: reason.clone(),
        }
    }

    fn begin_stop(&mut self) {
        self.control.request(RunDecision::Stop);
        if !matches!(self.lifecycle, Lifecycle::Exited(_)) {
            self.set_lifecycle(Lifecycle::Stopping);
        }
    }

    /// Load the guest, place every vCPU at its entry, start one thread per vCPU.
    fn start(&mut self, mode: StartMode, answer: Answer<VmStatus>) {
        match &self.lifecycle {
            Lifecycle::Created => {}
            Lifecycle::Starting => {
                self.starting.push(answer);
                return;
            }
            Lifecycle::Running => {
                let _ = answer.send(Ok(self.status_now()));
                return;
            }
            other => {
                let _ = answer.send(Err(self.cannot(Op::Start.name(), other)));
                return;
            }
        }
        self.start_mode = mode;
        if mode == StartMode::Paused {
            // Before any thread exists: no kick, so every vCPU enters its guest once.
            self.control.preset(RunDecision::Pause);
        }
        if let Err(why) = self.launch() {
            self.failure.get_or_insert(why.to_string());
            self.report.fail_if_ok(why.to_string());
            self.control.request(RunDecision::Stop);
            self.join_all();
            self.set_lifecycle(Lifecycle::Exited(ExitReason::Failed(why.to_string())));
            let _ = answer.send(Err(VmError::Start {
                vm: self.name().to_string(),
                source: Box::new(why),
            }));
            return;
        }
        self.set_lifecycle(Lifecycle::Starting);
        self.starting.push(answer);
    }

    fn launch(&mut self) -> Result<(), StartError> {
        let paused = self.start_mode == StartMode::Paused;
        let (guest, vm) = self.guest_and_parts();
        let launch = guest.load(vm, paused)?;
        let ready = std::mem::replace(&mut self.ready, Ok(Vec::new()))?;
        if ready.is_empty() {
            // Not started ahead: each thread starts with its launch already waiting. A vCPU
            // whose whole run is at hand (a replay's, with nothing in it that waits) runs here,
            // after the threads of the others started: it needs no thread, and its notices
            // reach this loop as a thread's do.
            let here: Vec<bool> = self
                .vcpus
                .iter()
                .map(|vcpu| !paused && vcpu.run_is_at_hand())
                .collect();
            let mut threads: Vec<_> = (0..self.vcpus.len()).map(|_| None).collect();
            for index in (0..self.vcpus.len()).filter(|&i| !here[i]) {
                let spawned = self.spawn_thread(index)?;
                let _ = spawned.launch.send(launch.clone());
                threads[index] = Some(spawned.thread);
            }
            for index in (0..self.vcpus.len()).filter(|&i| here[i]) {
                threads[index] = Some(self.runner(index).run_here(launch.clone()));
            }
            self.threads = threads;
            return Ok(());
        }
        for ready in ready {
            // A thread that cannot take its launch has ended; joining it says why.
            let _ = ready.launch.send(launch.clone());
            self.threads.push(Some(ready.thread));
        }
        Ok(())
    }

    /// Spawn one thread per vCPU, each waiting for its [`Launch`](crate::fleet::guest::Launch).
    /// Spawning is the costliest part of `start` that does not depend on it, so it is done while
    /// the control plane handles the `create` answer (measured by `vmfleet bench`: it is on the
    /// path to every VM's first exit).
    fn spawn_ready_threads(&mut self) {
        let mut ready = Vec::with_capacity(self.vcpus.len());
        for index in 0..self.vcpus.len() {
            match self.spawn_thread(index) {
                Ok(thread) => ready.push(thread),
                Err(why) => {
                    self.ready = Err(why);
                    return;
                }
            }
        }
        self.ready = Ok(ready);
    }

    /// What vCPU `index`'s run needs besides its launch.
    fn runner(&self, index: usize) -> VcpuRunner {
        VcpuRunner {
            index,
            vcpu: Arc::clone(&self.vcpus[index]),
            control: Arc::clone(&self.control),
            linger: Arc::clone(&self.linger),
            tx: self.notice_tx.clone(),
            wake: Arc::clone(&self.wake),
            runs_guest: self.hv.runs_guests(),
        }
    }

    /// Spawn vCPU `index`'s thread, waiting for its [`Launch`](crate::fleet::guest::Launch).
    fn spawn_thread(&self, index: usize) -> Result<ReadyThread, StartError> {
        let vcpu = &self.vcpus[index];
        spawn_vcpu(self.runner(index), format!("{}-{}", self.name(), vcpu.id())).map_err(|e| {
            StartError::Thread {
                vcpu: vcpu.id(),
                source: Arc::new(e),
            }
        })
    }

    /// End the threads that were never launched (dropping their launch channel ends them).
    fn release_ready_threads(&mut self) {
        if let Ok(ready) = std::mem::replace(&mut self.ready, Ok(Vec::new())) {
            for ReadyThread { launch, thread } in ready {
                drop(launch);
                let _ = thread.join();
            }
        }
    }

    // ---- notices ------------------------------------------------------------------------------

    fn notice(&mut self, index: usize, notice: Notice) {
        let Some(run) = self.runs.get_mut(index) else {
            return;
        };
        match notice {
            Notice::Run(VcpuNotice::FirstExit) => run.first_exit = true,
            Notice::Run(VcpuNotice::Parked) => run.parked = true,
            Notice::Run(VcpuNotice::Unparked) => run.parked = false,
            Notice::Ended(outcome) => {
                run.ended = true;
                run.parked = false;
                self.collect(index, outcome);
            }
        }
    }

    /// Take an ended vCPU thread's outcome into the report: the one it handed over (it parks for
    /// good, and is never joined), or the one it returns (joined).
    fn collect(&mut self, index: usize, handed_over: Option<Box<VcpuOutcome>>) {
        let Some(thread) = self.threads.get_mut(index).and_then(Option::take) else {
            return;
        };
        let Some(vcpu_report) = self.report.vcpus.get_mut(index) else {
            return;
        };
        let ended = match handed_over {
            // Dropping the handle detaches the parked thread.
            Some(outcome) => Ok(Some(*outcome)),
            None => thread.join(),
        };
        let failure = match ended {
            Ok(None) => {
                vcpu_report.end = "its thread ended before it was launched".into();
                vcpu_report.run_end = RunEnd::CallFailed;
                Some(format!(
                    "vcpu{index}: its thread ended before it was launched"
                ))
            }
            Ok(Some(outcome)) => {
                vcpu_report.exits = outcome.exits();
                vcpu_report.exits_counted = outcome.counted();
                vcpu_report.end = describe_end(outcome.end());
                vcpu_report.run_end = run_end(outcome.end());
                // A vCPU stopped, or past its record_exits budget, before its guest finished one
                // decoded pass saw nothing to check; that is not a mismatch.
                let saw_nothing = matches!(
                    outcome.end(),
                    ProbeEnd::Stopped | ProbeEnd::EndedBeyondBudget(_)
                ) && outcome.passes() == 0;
                self.guest.judge(index, &outcome, saw_nothing, vcpu_report);
                (!matches!(outcome.end(), ProbeEnd::Halted | ProbeEnd::Stopped))
                    .then(|| format!("vcpu{index}: {}", vcpu_report.end))
            }
            Err(_) => {
                vcpu_report.end = "its thread panicked".into();
                vcpu_report.run_end = RunEnd::ThreadPanicked;
                Some(format!("vcpu{index}: its thread panicked"))
            }
        };
        if let Some(why) = failure {
            tracing::warn!(vm = self.spec.name.as_str(), "{why}");
            if self.failure.is_none() {
                self.failure = Some(why.clone());
                self.report.fail_if_ok(why);
                // One failed vCPU fails the VM: stop the others.
                self.control.request(RunDecision::Stop);
            }
        }
    }

    /// Join every vCPU thread still running (they must already have been asked to stop).
    fn join_all(&mut self) {
        for index in 0..self.threads.len() {
            if self.threads[index].is_some() {
                self.collect(index, None);
                self.runs[index].ended = true;
            }
        }
    }

    /// Answer whatever the latest notices completed.
    fn settle(&mut self) {
        let started = !self.threads.is_empty();
        let all_ended = started && self.runs.iter().all(|r| r.ended);
        if started && !all_ended {
            let start_done = match self.start_mode {
                StartMode::Running => self.runs.iter().all(|r| r.first_exit || r.ended),
                StartMode::Paused => self.runs.iter().all(|r| r.parked || r.ended),
            };
            if start_done && !self.starting.is_empty() {
                if self.lifecycle == Lifecycle::Starting {
                    self.set_lifecycle(match self.start_mode {
                        StartMode::Running => Lifecycle::Running,
                        StartMode::Paused => Lifecycle::Paused,
                    });
                }
                let status = self.status_now();
                for answer in self.starting.drain(..) {
                    let _ = answer.send(Ok(status.clone()));
                }
            }
            if self.lifecycle == Lifecycle::Pausing && self.runs.iter().all(|r| r.parked || r.ended)
            {
                self.set_lifecycle(Lifecycle::Paused);
                let status = self.status_now();
                for answer in self.pausing.drain(..) {
                    let _ = answer.send(Ok(status.clone()));
                }
                if let Some(ModelChange::WaitingForPause { change, answer }) =
                    self.model_change.take()
                {
                    let result = self.write_model(&change);
                    self.control.request(RunDecision::Run);
                    self.set_lifecycle(Lifecycle::Resuming);
                    self.model_change = Some(ModelChange::WaitingForResume { result, answer });
                }
            }
            if self.lifecycle == Lifecycle::Resuming && self.runs.iter().all(|r| !r.parked) {
                self.set_lifecycle(Lifecycle::Running);
                let status = self.status_now();
                for answer in self.resuming.drain(..) {
                    let _ = answer.send(Ok(status.clone()));
                }
                if let Some(ModelChange::WaitingForResume { result, answer }) =
                    self.model_change.take()
                {
                    let _ = answer.send(result);
                }
            }
        }
        if all_ended && !matches!(self.lifecycle, Lifecycle::Exited(_)) {
            self.exited();
        }
        if matches!(self.lifecycle, Lifecycle::Exited(_)) {
            if let Some(answer) = self.removing.take() {
                self.finish_removal(answer);
            }
        }
    }

    /// Every vCPU thread has ended: decide how the VM ended, run the after-run checks of a VM
    /// whose guests all halted, and answer everyone waiting.
    fn exited(&mut self) {
        let stopped = self
            .report
            .vcpus
            .iter()
            .any(|v| v.end == describe_end(&ProbeEnd::Stopped));
        let reason = match &self.failure {
            Some(why) => ExitReason::Failed(why.clone()),
            None if stopped => ExitReason::Stopped,
            None => ExitReason::Halted,
        };
        if reason == ExitReason::Halted {
            if let Err(why) = self.after_run() {
                self.report.fail_if_ok(why.to_string());
            }
        }
        if reason == ExitReason::Stopped && self.report.state == VmState::Completed {
            self.report.state = VmState::Stopped;
        }
        self.set_lifecycle(Lifecycle::Exited(reason.clone()));
        let status = self.status_now();
        for answer in self.starting.drain(..) {
            // Every vCPU left the guest once before ending (its notices come in that order).
            let _ = answer.send(Ok(status.clone()));
        }
        let (no_pause, no_resume) = (
            self.has_ended(Op::Pause.name(), &reason),
            self.has_ended(Op::Resume.name(), &reason),
        );
        for answer in self.pausing.drain(..) {
            let _ = answer.send(Err(no_pause.clone()));
        }
        for answer in self.resuming.drain(..) {
            let _ = answer.send(Err(no_resume.clone()));
        }
        for answer in self.stopping.drain(..) {
            let _ = answer.send(Ok(status.clone()));
        }
        // The VM ended during a model change: write to the ended VM (still deterministic: it
        // ended the same way in any replay), or give the result of the write already made.
        match self.model_change.take() {
            Some(ModelChange::WaitingForPause { change, answer }) => {
                let result = self.write_model(&change);
                let _ = answer.send(result);
            }
            Some(ModelChange::WaitingForResume { result, answer }) => {
                let _ = answer.send(result);
            }
            None => {}
        }
    }

    fn after_run(&mut self) -> Result<(), AfterRunError> {
        // The writes the lock refused, by their report's index: asked of the kernel together
        // afterwards, on one scratch VM (with `cross_check`).
        let mut refused = Vec::new();
        for action in self.spec.after_run.clone() {
            let targets: Vec<u32> = match action.vcpu() {
                Some(v) => vec![v],
                None => (0..self.spec.vcpus).collect(),
            };
            for target in targets {
                let (guest, parts) = self.guest_and_parts();
                let (result, refusal) = guest.after_run(parts, target as usize, &action)?;
                if let Some(refusal) = refusal.filter(|r| !refused.iter().any(|(_, o)| o == r)) {
                    refused.push((self.report.after_run.len(), refusal));
                }
                self.report.after_run.push(result);
            }
        }
        let writes: Vec<_> = refused.iter().map(|(_, r)| r.clone()).collect();
        let (guest, parts) = self.guest_and_parts();
        let answers = guest.cross_check_after_run(parts, &writes)?;
        for ((index, _), answer) in refused.iter().zip(answers) {
            self.report.after_run[*index].cross_check = Some(answer);
        }
        Ok(())
    }

    fn finish_removal(&mut self, answer: Answer<VmReport>) {
        if self.exiting {
            // Every vCPU has ended (or never started); nothing is closed or joined.
            self.finish_drift();
            let _ = answer.send(Ok(self.report.clone()));
            self.done = true;
            return;
        }
        self.join_all();
        self.teardown();
        let _ = answer.send(Ok(self.report.clone()));
        self.done = true;
    }

    /// Close every vCPU, then the VM, in reverse order of creation. A failed teardown is reported
    /// but does not hide an earlier failure.
    fn teardown(&mut self) {
        self.finish_drift();
        self.release_ready_threads();
        for vcpu in self.vcpus.iter().rev() {
            if let Err(e) = vcpu.plain_call(VcpuCall::Destroy) {
                self.report.fail_if_ok(format!("teardown: {e}"));
            }
        }
        self.vcpus.clear();
        if let Err(e) = self.vm.call(VmCall::Destroy) {
            self.report.fail_if_ok(format!("teardown: {e}"));
        }
    }
}

fn run_end(end: &ProbeEnd) -> RunEnd {
    match end {
        ProbeEnd::Halted => RunEnd::Halted,
        ProbeEnd::GuestFault(_) => RunEnd::GuestFault,
        ProbeEnd::Protocol(_) => RunEnd::ProtocolError,
        ProbeEnd::Call(_) => RunEnd::CallFailed,
        ProbeEnd::ExitBudget => RunEnd::ExitBudget,
        ProbeEnd::Stopped => RunEnd::Stopped,
        ProbeEnd::EndedBeyondBudget(_) => RunEnd::EndedBeyondBudget,
    }
}

pub(super) fn describe_end(end: &ProbeEnd) -> String {
    match end {
        ProbeEnd::Halted => "halted".into(),
        ProbeEnd::GuestFault(what) => format!("guest fault: {what}"),
        ProbeEnd::Protocol(e) => format!("guest protocol error: {e}"),
        ProbeEnd::Call(e) => format!("call failed: {e}"),
        ProbeEnd::ExitBudget => "exit budget exhausted before the guest halted".into(),
        ProbeEnd::Stopped => "stopped by request".into(),
        ProbeEnd::EndedBeyondBudget(exit) => {
            format!("ended beyond the record_exits budget ({exit}; counted, not decoded)")
        }
    }
}
