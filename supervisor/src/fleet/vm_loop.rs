//! One VM's event loop: a thread of its own, built on `event-manager`, that owns the VM, its vCPU
//! threads and its lifecycle.
//!
//! Two eventfds wake it: one for commands from the async control plane (over an `mpsc` channel;
//! replies go back on tokio `oneshot`s), one for notices from its vCPU threads (first exit, parked,
//! unparked, ended). vCPU threads run the guest and decode its exits themselves (one OS thread
//! each, `KVM_RUN` blocks); the loop handles what changes the VM's life: a start completing, a
//! pause settling, a vCPU ending or failing, a stop, a removal. Nothing here blocks on a guest: a
//! pause or a stop kicks the vCPUs and is answered when the notices say it took effect.
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

use super::lifecycle::{ExitReason, Lifecycle, ModelView, StartMode, VcpuModelView, VmStatus};
use crate::report::{
    AfterRunReport, GuestSummary, ModelDrift, RunEnd, VcpuReport, Verdict, VmReport, VmState,
};
use crate::spec::{AfterRun, VmSpec};
use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use tokio::sync::{oneshot, watch};
use vcpu::guests::arm64 as arm64_guest;
use vcpu::guests::arm64::decoder::Arm64GuestReport;
use vcpu::guests::x86 as guest;
use vcpu::model::x86::model::X86CpuModel;
use vcpu::model::x86::{CpuidTable, catalog as features, drift};
use vcpu::runtime::runner::{
    self, Probe, ProbeEnd, ProbeOutcome, RunLimits, RunOutcome, VcpuNotice,
};
use vcpu::{
    GuestArch, HandleError, Hypervisor, RunControl, RunDecision, Seal, VcpuCall, VcpuHandle,
    VcpuId, VmCall, VmHandle, VmId,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

mod model;

/// Stack size of the VM loop thread and of each vCPU thread. Neither recurses nor keeps large
/// frames; small stacks keep a 500-VM fleet's address space (and page tables) small.
pub(super) const THREAD_STACK: usize = 256 << 10;

/// A reply to the control plane: the result, or an error message that names the VM.
pub(super) type Answer<T, E = String> = oneshot::Sender<Result<T, E>>;

/// Why a CPU-model write did not happen: the lock refused it, or something else failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelError {
    /// The pre-run lock refused the change, in both of its words: `shown` to people (the
    /// refusal's headline and details), `recorded` in the trace's reply (the one-line text replays
    /// compare).
    Refused {
        vm: String,
        shown: String,
        recorded: String,
    },
    /// Anything else, naming the VM.
    Other(String),
}

impl From<String> for ModelError {
    fn from(message: String) -> ModelError {
        ModelError::Other(message)
    }
}

/// How creating a VM went: its model, or why it failed with its report (the VM is torn down).
pub(super) type CreateResult = Result<(ModelView, VmStatus), (String, Box<VmReport>)>;

/// What the control plane asks of a VM.
pub(super) enum Command {
    /// Load the guest, start every vCPU thread; answered once every vCPU has left the guest once
    /// (`Running`), or has parked at its first exit (`Paused`).
    Start {
        mode: StartMode,
        answer: Answer<VmStatus>,
    },
    /// Answered once every vCPU has parked (or ended).
    Pause(Answer<VmStatus>),
    /// Answered once every parked vCPU is running again.
    Resume(Answer<VmStatus>),
    /// Answered once every vCPU thread has been joined.
    Stop(Answer<VmStatus>),
    Model(Answer<ModelView>),
    /// Rewrite every vCPU's CPUID with this model, through the lock.
    SetModel {
        hide: Vec<String>,
        answer: Answer<ModelView, ModelError>,
    },
    /// Stop if needed, tear the VM down, end the loop; answered with the VM's final report.
    Remove(Answer<VmReport>),
    /// Stop if needed and answer with the VM's final report, as `Remove` does, but keep every
    /// kernel object and thread: the process is about to exit and leaves them to the kernel
    /// (see the module's documentation). No `DESTROY` call is made, so none is recorded.
    Exit(Answer<VmReport>),
}

/// The control plane's end of a VM loop.
pub(super) struct VmLink {
    commands: Sender<Command>,
    wake: Arc<EventFd>,
    pub(super) status: watch::Receiver<VmStatus>,
    /// The VM's run control, shared with its loop: stopping a whole fleet kicks every vCPU from
    /// here at once instead of waiting for each loop to be scheduled (see [`VmLink::kick_stop`]).
    control: Arc<RunControl>,
    /// Shared with the loop and its vCPU threads: once set, a thread that ends parks for good
    /// instead of returning (see [`VmLink::linger`]).
    linger: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl VmLink {
    /// Send a command and wake the loop. Fails only if the loop is gone.
    pub(super) fn send(&self, command: Command) -> Result<(), String> {
        self.commands
            .send(command)
            .map_err(|_| "its event loop has ended".to_string())?;
        self.wake
            .write(1)
            .map_err(|e| format!("cannot wake its event loop: {e}"))
    }

    /// Want every vCPU of the VM stopped and kick them now, ahead of the `Stop` or `Remove`
    /// command that follows (which the loop carries out as usual). With a thousand VMs running,
    /// the guests stop spinning at once, and the loops that then handle their commands are not
    /// starved by them. The decisions are the same as the loop's own (stop), so traces and their
    /// replays do not change.
    pub(super) fn kick_stop(&self) {
        self.control.request(RunDecision::Stop);
    }

    /// From now on the VM's threads park for good when they end instead of returning (the
    /// process is about to exit; see the module's documentation). Set before the kicks of a
    /// shutdown for exit, so that no vCPU thread stopped by them returns.
    pub(super) fn linger(&self) {
        self.linger.store(true, Ordering::SeqCst);
    }

    /// Join the loop thread (after `Remove` was answered).
    pub(super) fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a VM loop needs to create its VM.
pub(super) struct VmSetup {
    pub id: VmId,
    pub spec: VmSpec,
    pub hv: Arc<dyn Hypervisor>,
    pub supported: Arc<super::supported::HostQueries>,
}

/// Start a VM loop thread: it creates and configures the VM, answers `created` (with the model,
/// or with the report of a VM that failed to come up, after tearing it down), then serves
/// commands until the VM is removed.
#[allow(
    clippy::result_large_err,
    reason = "called once per VM creation; the error carries the VM's final report"
)]
pub(super) fn spawn(
    setup: VmSetup,
    created: oneshot::Sender<CreateResult>,
) -> Result<VmLink, (String, VmReport)> {
    let report = VmReport::new(setup.id, &setup.spec);
    let fail = |why: String| {
        let mut report = report.clone();
        report.state = VmState::Failed(why.clone());
        (why, report)
    };
    let wake = EventFd::new(EFD_NONBLOCK)
        .map(Arc::new)
        .map_err(|e| fail(format!("cannot create its command eventfd: {e}")))?;
    let (commands_tx, commands) = mpsc::channel();
    let (status_tx, status) = watch::channel(VmStatus::new(Lifecycle::Creating));
    let name = setup.spec.name.clone();
    let loop_wake = Arc::clone(&wake);
    let control = Arc::new(RunControl::new());
    let linger = Arc::new(AtomicBool::new(false));
    let thread = std::thread::Builder::new()
        .name(format!("vm-{name}"))
        .stack_size(THREAD_STACK)
        .spawn({
            let control = Arc::clone(&control);
            let linger = Arc::clone(&linger);
            move || {
                vm_thread(
                    setup, control, &linger, loop_wake, commands, status_tx, created,
                )
            }
        })
        .map_err(|e| fail(format!("cannot start its event loop thread: {e}")))?;
    Ok(VmLink {
        commands: commands_tx,
        wake,
        status,
        control,
        linger,
        thread: Some(thread),
    })
}

/// The end of a thread of a process about to exit: it holds on to everything it owns until the
/// process ends (returning would unmap its stack, dropping would close and unmap its objects).
fn park_for_good() -> ! {
    loop {
        std::thread::park();
    }
}

fn vm_thread(
    setup: VmSetup,
    control: Arc<RunControl>,
    linger: &Arc<AtomicBool>,
    wake: Arc<EventFd>,
    commands: Receiver<Command>,
    status: watch::Sender<VmStatus>,
    created: oneshot::Sender<CreateResult>,
) {
    let mut report = VmReport::new(setup.id, &setup.spec);
    let mut fail = |why: String| {
        report.state = VmState::Failed(why.clone());
        status.send_replace(VmStatus::new(Lifecycle::Exited(ExitReason::Failed(
            why.clone(),
        ))));
        (why, Box::new(report.clone()))
    };
    let notices = match EventFd::new(EFD_NONBLOCK) {
        Ok(fd) => Arc::new(fd),
        Err(e) => {
            let _ = created.send(Err(fail(format!("cannot create its notice eventfd: {e}"))));
            return;
        }
    };
    let vm = match setup.hv.create_vm(setup.id, &setup.spec.name) {
        Ok(vm) => VmHandle::new(vm, setup.spec.name.clone(), setup.hv.arch()),
        Err(e) => {
            let _ = created.send(Err(fail(format!("CREATE_VM: {e}"))));
            return;
        }
    };
    let (notice_tx, notice_rx) = mpsc::channel();
    let mut this = VmLoop {
        arch: setup.hv.arch(),
        hv: Arc::clone(&setup.hv),
        arm64: None,
        spec: setup.spec,
        supported: setup.supported,
        vm,
        vcpus: Vec::new(),
        control,
        linger: Arc::clone(linger),
        threads: Vec::new(),
        pending_drift: Vec::new(),
        ready: Ok(Vec::new()),
        runs: Vec::new(),
        lifecycle: Lifecycle::Creating,
        status,
        report,
        points: Vec::new(),
        commands,
        command_fd: wake,
        notice_rx,
        notice_tx,
        notice_fd: notices,
        starting: Vec::new(),
        start_mode: StartMode::Running,
        pausing: Vec::new(),
        resuming: Vec::new(),
        stopping: Vec::new(),
        removing: None,
        model_change: None,
        failure: None,
        exiting: false,
        done: false,
        broken: None,
    };
    if let Err(why) = this.configure() {
        this.report.state = VmState::Failed(why.clone());
        this.teardown();
        this.set_lifecycle(Lifecycle::Exited(ExitReason::Failed(why.clone())));
        let _ = created.send(Err((why, Box::new(this.report.clone()))));
        return;
    }
    this.set_lifecycle(Lifecycle::Created);
    // What `create` answers is the VM as configured, whatever a queued command does next.
    let status = this.status_now();
    // A `start` queued behind the creation (`Fleet::launch_all`) is carried out right away, and
    // its vCPU threads find their launch waiting when they start; the drift lines, which nothing
    // on the way to a first exit needs, are worked out while the guests enter. Otherwise the
    // threads are started now, while the control plane handles the answer, and wait for a
    // `start`.
    let mut started_early = false;
    while let Ok(command) = this.commands.try_recv() {
        started_early |= matches!(command, Command::Start { .. });
        this.command(command);
        this.settle();
    }
    if this.lifecycle == Lifecycle::Created {
        this.spawn_ready_threads();
    }
    let mut view = this.model_view();
    if started_early {
        view.sealed = None;
    }
    let _ = created.send(Ok((view, status)));

    let shared = Rc::new(RefCell::new(this));
    let mut manager = match EventManager::<Rc<RefCell<VmLoop>>>::new() {
        Ok(manager) => manager,
        Err(e) => {
            shared
                .borrow_mut()
                .abandon(format!("cannot create its event manager: {e}"));
            return;
        }
    };
    manager.add_subscriber(Rc::clone(&shared));
    if let Some(why) = shared.borrow_mut().broken.take() {
        shared.borrow_mut().abandon(why);
        return;
    }
    while !shared.borrow().done {
        if let Err(e) = manager.run() {
            shared
                .borrow_mut()
                .abandon(format!("its event loop failed: {e}"));
            return;
        }
    }
    if shared.borrow().exiting {
        // Answered with the final report: keep the VM, its vCPUs and its memory (and this
        // thread's stack) until the process exits.
        park_for_good();
    }
}

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
        hide: Vec<String>,
        answer: Answer<ModelView, ModelError>,
    },
    WaitingForResume {
        result: Result<ModelView, ModelError>,
        answer: Answer<ModelView, ModelError>,
    },
}

/// Which eventfd woke the loop.
const COMMANDS: u32 = 1;
const NOTICES: u32 = 2;

/// A notice from a vCPU thread.
enum Notice {
    Run(VcpuNotice),
    /// The thread is about to end (sent from a drop guard, so a panic sends it too). With its
    /// outcome when the thread parks for good instead of returning it (the loop must not join
    /// it then).
    Ended(Option<Box<VcpuOutcome>>),
}

struct VmLoop {
    /// The guests' architecture (the backend's: the host's, or the recorded trace's).
    arch: GuestArch,
    /// For the scratch VMs of arm64 cross-checks.
    hv: Arc<dyn Hypervisor>,
    /// The arm64 model state (arm64 VMs, once configured).
    arm64: Option<super::arm64::Arm64Vm>,
    spec: VmSpec,
    supported: Arc<super::supported::HostQueries>,
    vm: VmHandle,
    vcpus: Vec<Arc<VcpuHandle>>,
    control: Arc<RunControl>,
    /// Set when the process is about to exit: threads that end park for good (see
    /// [`VmLink::linger`]).
    linger: Arc<AtomicBool>,
    /// Asked to [`Command::Exit`]: answer with the report and keep everything.
    exiting: bool,
    /// One per vCPU once started (`None` once joined).
    threads: Vec<Option<JoinHandle<Option<VcpuOutcome>>>>,
    /// Drift lines not worked out yet: (vCPU index, the table that was requested). They are the
    /// costliest CPU work of configuring a VM, and nothing on the way to its first exit needs
    /// them, so they are worked out when first read ([`VmLoop::finish_drift`]).
    pending_drift: Vec<(usize, CpuidTable)>,
    /// vCPU threads spawned ahead of `start`, waiting for their launch (or why they could not be
    /// spawned, which `start` reports).
    ready: Result<Vec<ReadyThread>, String>,
    runs: Vec<VcpuRun>,
    lifecycle: Lifecycle,
    status: watch::Sender<VmStatus>,
    report: VmReport,
    /// The probe table loaded into the guest (from vCPU 0's held table at start).
    points: Vec<(u32, u32)>,
    commands: Receiver<Command>,
    command_fd: Arc<EventFd>,
    notice_rx: Receiver<(usize, Notice)>,
    notice_tx: Sender<(usize, Notice)>,
    notice_fd: Arc<EventFd>,
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
    broken: Option<String>,
}

impl MutEventSubscriber for VmLoop {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            COMMANDS => {
                // Nonblocking: the count is irrelevant, the channel holds the commands.
                let _ = self.command_fd.read();
                while let Ok(command) = self.commands.try_recv() {
                    self.command(command);
                }
            }
            NOTICES => {
                let _ = self.notice_fd.read();
                // Settle after every single notice, not after a batch: a vCPU's notices arrive in
                // its own order (first exit before ended, unparked before ended), so answers that
                // are due at a notice are given in the state right after it, however the notices
                // of a live run happened to be batched. That is what makes them replayable.
                while let Ok((index, notice)) = self.notice_rx.try_recv() {
                    self.notice(index, notice);
                    self.settle();
                }
            }
            _ => {}
        }
        self.settle();
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (fd, data, what) in [
            (&self.command_fd, COMMANDS, "command"),
            (&self.notice_fd, NOTICES, "notice"),
        ] {
            if let Err(e) = ops.add(Events::with_data(fd.as_ref(), data, EventSet::IN)) {
                self.broken = Some(format!("cannot watch its {what} eventfd: {e}"));
            }
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
    fn abandon(&mut self, why: String) {
        tracing::error!(vm = self.name(), "{why}");
        self.control.request(RunDecision::Stop);
        self.join_all();
        self.report.fail_if_ok(why.clone());
        self.teardown();
        self.set_lifecycle(Lifecycle::Exited(ExitReason::Failed(why.clone())));
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
    fn configure(&mut self) -> Result<(), String> {
        let (base, least) = match self.arch {
            GuestArch::X86_64 => (0, guest::MEMORY_SIZE),
            GuestArch::Aarch64 => (arm64_guest::MEMORY_BASE, arm64_guest::MEMORY_SIZE),
        };
        let memory = (u64::from(self.spec.memory_mib) << 20).max(least);
        self.vm
            .add_memory(0, base, memory)
            .map_err(|e| e.to_string())?;
        for index in 0..self.spec.vcpus {
            let vcpu = Arc::new(
                self.vm
                    .create_vcpu(VcpuId(index))
                    .map_err(|e| e.to_string())?,
            );
            self.control.add_kick(vcpu.kicker());
            self.vcpus.push(vcpu);
            self.runs.push(VcpuRun::default());
        }
        match self.arch {
            GuestArch::X86_64 => self
                .apply_model(&self.spec.cpu.hide.clone(), false)
                .map_err(|e| match e {
                    ModelError::Refused { recorded, .. } => recorded,
                    ModelError::Other(message) => message,
                }),
            GuestArch::Aarch64 => self.configure_arm64(),
        }
    }

    /// The arm64 model: vCPU init, the host view, the judged plan, the writes, the read-back.
    fn configure_arm64(&mut self) -> Result<(), String> {
        let spec = self.spec.arm64.clone().unwrap_or_default();
        let ranges = self.supported.mask_ranges()?;
        let cross_check = self.spec.cross_check.then(|| super::arm64::CrossCheck {
            hv: &self.hv,
            vm: self.vm.id(),
        });
        let configured =
            super::arm64::configure(ranges, &self.vm, &self.vcpus, &spec, cross_check)?;
        self.report.vcpus = (0..self.vcpus.len())
            .map(|index| VcpuReport {
                id: index as u32,
                drift: Vec::new(),
                drift_changes: Vec::new(),
                not_honoured: Vec::new(),
                already_absent: Vec::new(),
                guest: None,
                arm64_guest: None,
                exits: 0,
                end: "not started".into(),
                run_end: RunEnd::NotStarted,
                held: vcpu::model::x86::CpuidTable::default(),
                hidden: Vec::new(),
            })
            .collect();
        self.report.arm64 = Some(configured.report.clone());
        self.arm64 = Some(configured);
        Ok(())
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
                    let _ = answer.send(Err(self.cannot("pause", other)));
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
                    let _ = answer.send(Err(self.cannot("resume", other)));
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
                    let _ = answer.send(Err(self.cannot("stop", &Lifecycle::Creating)));
                }
                _ => {
                    self.begin_stop();
                    self.stopping.push(answer);
                }
            },
            Command::Model(answer) => {
                let _ = answer.send(Ok(self.model_view()));
            }
            Command::SetModel { answer, .. } if self.arch == GuestArch::Aarch64 => {
                let _ = answer.send(Err(format!(
                    "{}: set-model hides x86 CPUID features; an arm64 VM's model is its spec's \
                     `arm64` table, fixed at create",
                    self.name()
                )
                .into()));
            }
            Command::SetModel { hide, answer } => match &self.lifecycle {
                // vCPU state is never written while its thread runs: pause, write, resume. (It
                // also keeps the write's calls at a recorded point of each vCPU's stream.)
                Lifecycle::Running => {
                    self.control.request(RunDecision::Pause);
                    self.set_lifecycle(Lifecycle::Pausing);
                    self.model_change = Some(ModelChange::WaitingForPause { hide, answer });
                }
                Lifecycle::Created | Lifecycle::Paused | Lifecycle::Exited(_) => {
                    let result = self.write_model(&hide);
                    let _ = answer.send(result);
                }
                other => {
                    let _ = answer.send(Err(self.cannot("change the CPU model of", other).into()));
                }
            },
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

    /// Why a request cannot be carried out in `state`. A VM that has exited gets the same words
    /// whether it had exited before the request came or did while carrying it out (which of the
    /// two happened is a matter of timing, and replies must not depend on timing).
    fn cannot(&self, what: &str, state: &Lifecycle) -> String {
        match state {
            Lifecycle::Exited(reason) => self.has_ended(what, reason),
            state => format!("cannot {what} {}: it is {state}", self.name()),
        }
    }

    fn has_ended(&self, what: &str, reason: &ExitReason) -> String {
        format!("cannot {what} {}: it has ended ({reason})", self.name())
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
                let _ = answer.send(Err(self.cannot("start", other)));
                return;
            }
        }
        self.start_mode = mode;
        if mode == StartMode::Paused {
            // Before any thread exists: no kick, so every vCPU enters its guest once.
            self.control.preset(RunDecision::Pause);
        }
        if let Err(why) = self.launch() {
            self.failure.get_or_insert(why.clone());
            self.report.fail_if_ok(why.clone());
            self.control.request(RunDecision::Stop);
            self.join_all();
            self.set_lifecycle(Lifecycle::Exited(ExitReason::Failed(why.clone())));
            let _ = answer.send(Err(format!("{}: {why}", self.name())));
            return;
        }
        self.set_lifecycle(Lifecycle::Starting);
        self.starting.push(answer);
    }

    fn launch(&mut self) -> Result<(), String> {
        let launch = match self.arch {
            GuestArch::X86_64 => self.load_x86()?,
            GuestArch::Aarch64 => self.load_arm64()?,
        };
        let ready = std::mem::replace(&mut self.ready, Ok(Vec::new()))?;
        if ready.is_empty() {
            // Not started ahead: each thread starts with its launch already waiting.
            for index in 0..self.vcpus.len() {
                let spawned = self.spawn_thread(index)?;
                let _ = spawned.launch.send(launch.clone());
                self.threads.push(Some(spawned.thread));
            }
            return Ok(());
        }
        for ready in ready {
            // A thread that cannot take its launch has ended; joining it says why.
            let _ = ready.launch.send(launch.clone());
            self.threads.push(Some(ready.thread));
        }
        Ok(())
    }

    /// Load the arm64 guest (generated from the model's register list), place every vCPU at its
    /// entry.
    fn load_arm64(&mut self) -> Result<Launch, String> {
        let arm64 = self
            .arm64
            .as_ref()
            .ok_or_else(|| "the arm64 model was not configured".to_string())?;
        let finish = super::arm64::finish_for(self.spec.vcpus);
        let program = arm64_guest::Arm64GuestProgram {
            id_regs: &arm64.id_regs,
            calls: &arm64.calls,
            repeats: self.spec.probe_repeats,
            finish,
        };
        self.vm
            .with_memory(|mem| arm64_guest::load(mem, &program))
            .map_err(|e| format!("loading the guest: {e}"))?;
        for vcpu in &self.vcpus {
            vcpu.set_boot_state(arm64_guest::ENTRY)
                .map_err(|e| e.to_string())?;
        }
        // Every pass is one tag and one value per register, a tag and four values per call,
        // and two pass markers; plus the final exit and room for kicks.
        let per_pass = 2 * arm64.id_regs.len() as u64 + 5 * arm64.calls.len() as u64 + 4;
        let exit_budget = program
            .passes()
            .map(|passes| u64::from(passes) * per_pass + 16);
        Ok(Launch::Arm64 {
            id_regs: arm64.id_regs.clone(),
            calls: arm64.calls.clone(),
            repeats: self.spec.probe_repeats,
            finish,
            limits: RunLimits {
                exit_budget,
                pause_at_first_exit: self.start_mode == StartMode::Paused,
            },
        })
    }

    /// Load the x86 probe guest with vCPU 0's table, place every vCPU at its entry.
    fn load_x86(&mut self) -> Result<Launch, String> {
        self.points = self
            .report
            .vcpus
            .first()
            .map(|v| v.held.probe_points())
            .unwrap_or_default();
        let points = self.points.clone();
        let repeats = self.spec.probe_repeats;
        let program = guest::GuestProgram {
            points: &points,
            repeats,
            fault_after: self.spec.fault_after_passes.unwrap_or(0),
        };
        self.vm
            .with_memory(|mem| guest::load_with(mem, &program))
            .map_err(|e| format!("loading the guest: {e}"))?;
        for vcpu in &self.vcpus {
            vcpu.set_boot_state(guest::ENTRY)
                .map_err(|e| e.to_string())?;
        }
        // A finite guest gets a budget a little above what its passes need; a guest that repeats
        // forever runs until it is stopped.
        let exit_budget = crate::job::exit_budget(&program);
        Ok(Launch::X86 {
            points,
            repeats,
            exit_budget,
            pause_at_first_exit: self.start_mode == StartMode::Paused,
        })
    }

    /// Spawn one thread per vCPU, each waiting for its [`Launch`]. Spawning is the costliest part
    /// of `start` that does not depend on it, so it is done while the control plane handles the
    /// `create` answer (measured by `vmfleet bench`: it is on the path to every VM's first exit).
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

    /// Spawn vCPU `index`'s thread, waiting for its [`Launch`].
    fn spawn_thread(&self, index: usize) -> Result<ReadyThread, String> {
        let vcpu = &self.vcpus[index];
        spawn_vcpu(
            index,
            Arc::clone(vcpu),
            Arc::clone(&self.control),
            Arc::clone(&self.linger),
            self.notice_tx.clone(),
            Arc::clone(&self.notice_fd),
            format!("{}-{}", self.name(), vcpu.id()),
        )
        .map_err(|e| format!("starting the thread of {}: {e}", vcpu.id()))
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
                vcpu_report.end = describe_end(outcome.end());
                vcpu_report.run_end = run_end(outcome.end());
                // A vCPU stopped before its guest finished one pass saw nothing to check; that
                // is not a mismatch.
                let saw_nothing =
                    matches!(outcome.end(), ProbeEnd::Stopped) && outcome.passes() == 0;
                match &outcome {
                    VcpuOutcome::X86(outcome) => {
                        vcpu_report.guest = (!saw_nothing).then(|| {
                            GuestSummary::from_report(
                                &vcpu_report.held,
                                &outcome.report,
                                &vcpu_report.hidden,
                            )
                        });
                    }
                    VcpuOutcome::Arm64(outcome) => {
                        let held = self.arm64.as_ref().and_then(|a| a.held.get(index));
                        vcpu_report.arm64_guest = match (saw_nothing, held) {
                            (false, Some(held)) => {
                                Some(super::arm64::judge_guest(&outcome.report, held))
                            }
                            _ => None,
                        };
                    }
                }
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
                if let Some(ModelChange::WaitingForPause { hide, answer }) =
                    self.model_change.take()
                {
                    let result = self.write_model(&hide);
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
                self.report.fail_if_ok(why);
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
            self.has_ended("pause", &reason),
            self.has_ended("resume", &reason),
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
            Some(ModelChange::WaitingForPause { hide, answer }) => {
                let result = self.write_model(&hide);
                let _ = answer.send(result);
            }
            Some(ModelChange::WaitingForResume { result, answer }) => {
                let _ = answer.send(result);
            }
            None => {}
        }
    }

    fn after_run(&mut self) -> Result<(), String> {
        for action in self.spec.after_run.clone() {
            let targets: Vec<u32> = match action.vcpu() {
                Some(v) => vec![v],
                None => (0..self.spec.vcpus).collect(),
            };
            for target in targets {
                let vcpu = &self.vcpus[target as usize];
                let result = match self.arch {
                    GuestArch::X86_64 => try_after_run(vcpu, &action)?,
                    GuestArch::Aarch64 => super::arm64::try_after_run(vcpu, &action)?,
                };
                self.report.after_run.push(result);
            }
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

/// Sends `Ended` when the vCPU thread ends, however it ends (with the outcome it hands over, if
/// it parks for good).
struct EndNotice {
    index: usize,
    tx: Sender<(usize, Notice)>,
    wake: Arc<EventFd>,
    handed_over: Option<Box<VcpuOutcome>>,
}

impl Drop for EndNotice {
    fn drop(&mut self) {
        let _ = self
            .tx
            .send((self.index, Notice::Ended(self.handed_over.take())));
        let _ = self.wake.write(1);
    }
}

/// What a vCPU thread is launched with at `start`: the guest program it runs.
#[derive(Clone, Debug)]
enum Launch {
    X86 {
        points: Vec<(u32, u32)>,
        repeats: u32,
        exit_budget: Option<u64>,
        pause_at_first_exit: bool,
    },
    Arm64 {
        id_regs: Vec<vcpu::model::arm64::SysReg>,
        calls: Vec<arm64_guest::smccc::SmcccCall>,
        repeats: u32,
        finish: arm64_guest::Finish,
        limits: RunLimits,
    },
}

impl Launch {
    fn pauses_at_first_exit(&self) -> bool {
        match self {
            Launch::X86 {
                pause_at_first_exit,
                ..
            } => *pause_at_first_exit,
            Launch::Arm64 { limits, .. } => limits.pause_at_first_exit,
        }
    }
}

/// How a vCPU thread's run went, by guest architecture.
#[derive(Debug)]
enum VcpuOutcome {
    X86(ProbeOutcome),
    Arm64(RunOutcome<Arm64GuestReport>),
}

impl VcpuOutcome {
    fn exits(&self) -> u64 {
        match self {
            VcpuOutcome::X86(o) => o.exits,
            VcpuOutcome::Arm64(o) => o.exits,
        }
    }

    fn end(&self) -> &ProbeEnd {
        match self {
            VcpuOutcome::X86(o) => &o.end,
            VcpuOutcome::Arm64(o) => &o.end,
        }
    }

    /// Complete passes the guest reported.
    fn passes(&self) -> u64 {
        match self {
            VcpuOutcome::X86(o) => o.report.passes,
            VcpuOutcome::Arm64(o) => o.report.passes,
        }
    }
}

/// A vCPU thread spawned ahead of `start`.
struct ReadyThread {
    launch: Sender<Launch>,
    thread: JoinHandle<Option<VcpuOutcome>>,
}

/// Spawn vCPU `index`'s thread: it waits for its [`Launch`] (ending with `None` if the VM is torn
/// down first), then runs the guest until the guest or the control plane ends the run.
fn spawn_vcpu(
    index: usize,
    vcpu: Arc<VcpuHandle>,
    control: Arc<RunControl>,
    linger: Arc<AtomicBool>,
    tx: Sender<(usize, Notice)>,
    wake: Arc<EventFd>,
    name: String,
) -> std::io::Result<ReadyThread> {
    let (launch, launched) = mpsc::channel::<Launch>();
    let thread = std::thread::Builder::new()
        .name(name)
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let launch = launched.recv().ok()?;
            let mut end = EndNotice {
                index,
                tx: tx.clone(),
                wake: Arc::clone(&wake),
                handed_over: None,
            };
            let parks_at_first_exit = launch.pauses_at_first_exit();
            let mut notify = |notice| {
                if notice == VcpuNotice::FirstExit {
                    // From here on the thread runs the guest, not the start path: let the VM
                    // loops and the control plane win the CPU from spinning guests.
                    if let Err(e) = vcpu::hypervisor::kvm::deprioritize_vcpu_thread() {
                        tracing::debug!("vCPU thread keeps its priority: {e}");
                    }
                }
                let _ = tx.send((index, Notice::Run(notice)));
                // A thread that parks right after its first exit wakes its loop once, for both
                // notices: the loop reads them in order either way, and has nothing to do at the
                // first one alone (a paused start is answered when every vCPU has parked). The
                // first-exit control point always ends in a park or a stop (each wakes the loop):
                // while a VM starts paused nothing can ask it to run (`resume` needs `paused`).
                if !(parks_at_first_exit && notice == VcpuNotice::FirstExit) {
                    let _ = wake.write(1);
                }
            };
            let outcome = match launch {
                Launch::X86 {
                    points,
                    repeats,
                    exit_budget,
                    pause_at_first_exit,
                } => {
                    let probe = Probe {
                        points: &points,
                        repeats,
                        exit_budget,
                        pause_at_first_exit,
                    };
                    VcpuOutcome::X86(runner::run_controlled(&vcpu, &probe, &control, &mut notify))
                }
                Launch::Arm64 {
                    id_regs,
                    calls,
                    repeats,
                    finish,
                    limits,
                } => {
                    let program = arm64_guest::Arm64GuestProgram {
                        id_regs: &id_regs,
                        calls: &calls,
                        repeats,
                        finish,
                    };
                    let decoder = arm64_guest::decoder::Arm64Decoder::new(&program);
                    VcpuOutcome::Arm64(runner::run_decoded(
                        &vcpu,
                        decoder,
                        limits,
                        &control,
                        &mut notify,
                    ))
                }
            };
            if linger.load(Ordering::SeqCst) {
                // The process is about to exit: hand the outcome over and keep this thread (its
                // stack) and the vCPU it holds until then.
                end.handed_over = Some(Box::new(outcome));
                drop(end);
                park_for_good();
            }
            drop(end);
            Some(outcome)
        })?;
    Ok(ReadyThread { launch, thread })
}

/// Attempt one after-run write and judge it against the lock's rule.
fn try_after_run(vcpu: &VcpuHandle, action: &AfterRun) -> Result<AfterRunReport, String> {
    let held = vcpu.get_cpuid().map_err(|e| e.to_string())?;
    let (label, table) = match action {
        AfterRun::SetField { .. } => {
            return Err("action \"set\" is for arm64 VMs".into());
        }
        AfterRun::RewriteIdentical { .. } => ("rewrite identical".to_string(), held.clone()),
        AfterRun::Hide {
            features: names, ..
        } => {
            let mut table = held.clone();
            for name in names {
                if let Some(f) = features::by_name(name) {
                    if let Some(entry) = table.lookup_mut(f.leaf, f.subleaf) {
                        *entry.reg_mut(f.reg) &= !(1u32 << f.bit);
                    }
                }
            }
            (format!("hide {}", names.join(",")), table)
        }
    };
    // The lock's rule: a write identical to what the kernel holds is allowed, anything else is
    // refused. Hiding a feature the kernel already hides is identical, hence allowed.
    let expected = if table == held {
        Verdict::Allowed
    } else {
        Verdict::RefusedByLock
    };
    let (outcome, message) = match vcpu.set_cpuid(&table) {
        Ok(_) => (Verdict::Allowed, None),
        Err(e) if e.is_lock_refusal() => (Verdict::RefusedByLock, Some(refusal_text(&e))),
        Err(e) => (Verdict::RefusedByKernel, Some(e.to_string())),
    };
    Ok(AfterRunReport {
        vcpu: vcpu.id().0,
        action: label,
        expected,
        outcome,
        message,
    })
}

/// A lock refusal as its own explanation, for people: what changed, old → new, and the rule on
/// the first line, the details below. Any other error with its call and target.
pub(super) fn refusal_text(e: &HandleError) -> String {
    match &e.source {
        vcpu::CallError::Refused(refusal) => refusal.to_string(),
        other => format!("{} on {}: {other}", e.call, e.target),
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
    }
}
