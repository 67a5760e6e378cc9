//! Bringing a VM loop up: its thread, the VM it creates and configures before it answers
//! `create`, a `start` queued behind the creation, and the event manager it then serves commands
//! from until the VM is removed. Apart from the loop's event handling in [`super`] because it
//! runs once, before there are any events.

use super::*;
use vcpu::VmId;

/// How creating a VM went: its model, or why it failed with its report (the VM is torn down).
pub(in crate::fleet) type CreateResult = Result<(ModelView, VmStatus), (VmError, Box<VmReport>)>;

/// What a VM loop needs to create its VM.
pub(in crate::fleet) struct VmSetup {
    pub id: VmId,
    pub spec: VmSpec,
    pub hv: Arc<dyn Hypervisor>,
    pub supported: Arc<crate::fleet::supported::HostQueries>,
    /// What the fleet's VMs share of their models and reports.
    pub shared: Arc<crate::fleet::guest::SharedModels>,
}

/// Start a VM loop (on a thread of its own or on a loop host, see `host.rs`): it creates and
/// configures the VM, answers `created` (with the model,
/// or with the report of a VM that failed to come up, after tearing it down), then serves
/// commands until the VM is removed.
#[allow(
    clippy::result_large_err,
    reason = "called once per VM creation; the error carries the VM's final report"
)]
pub(in crate::fleet) fn spawn(
    setup: VmSetup,
    created: oneshot::Sender<CreateResult>,
) -> Result<VmLink, (VmError, VmReport)> {
    let report = VmReport::new(setup.id, &setup.spec);
    let fail = |why: VmError| {
        let mut report = report.clone();
        report.state = VmState::Failed(why.to_string());
        (why, report)
    };
    let wake = EventFd::new(EFD_NONBLOCK)
        .map(Arc::new)
        .map_err(|e| fail(VmError::WakeEventfd(Arc::new(e))))?;
    let (commands_tx, commands) = mpsc::channel();
    let (status_tx, status) = watch::channel(VmStatus::new(Lifecycle::Creating));
    let name = setup.spec.name.clone();
    let loop_wake = Arc::clone(&wake);
    let control = Arc::new(RunControl::new());
    let linger = Arc::new(AtomicBool::new(false));
    // Closed when the loop is dropped (or its setup ends early), wherever it was served.
    let (ended_tx, ended) = oneshot::channel();
    let hosted = !setup.hv.runs_guests();
    host::run(&name, hosted, {
        let control = Arc::clone(&control);
        let linger = Arc::clone(&linger);
        move || {
            set_up(
                setup, control, &linger, loop_wake, commands, status_tx, created, ended_tx,
            )
        }
    })
    .map_err(|e| fail(VmError::LoopThread(Arc::new(e))))?;
    Ok(VmLink {
        commands: commands_tx,
        wake,
        status,
        control,
        linger,
        ended: Some(ended),
    })
}

/// The end of a thread of a process about to exit: it holds on to everything it owns until the
/// process ends (returning would unmap its stack, dropping would close and unmap its objects).
pub(super) fn park_for_good() -> ! {
    loop {
        std::thread::park();
    }
}

/// Create and configure the VM, answer `created`, carry out the commands queued behind the
/// creation: the loop, ready to serve its events, or `None` if the VM did not come up (its
/// report went with the answer).
#[allow(clippy::too_many_arguments)]
fn set_up(
    setup: VmSetup,
    control: Arc<RunControl>,
    linger: &Arc<AtomicBool>,
    wake: Arc<EventFd>,
    commands: Receiver<Command>,
    status: watch::Sender<VmStatus>,
    created: oneshot::Sender<CreateResult>,
    ended: oneshot::Sender<()>,
) -> Option<Box<VmLoop>> {
    let mut report = VmReport::new(setup.id, &setup.spec);
    let mut fail = |why: VmError| {
        report.state = VmState::Failed(why.to_string());
        status.send_replace(VmStatus::new(Lifecycle::Exited(ExitReason::Failed(
            why.to_string(),
        ))));
        (why, Box::new(report.clone()))
    };
    let vm = match setup.hv.create_vm(setup.id, &setup.spec.name) {
        Ok(vm) => VmHandle::new(vm, setup.spec.name.clone(), setup.hv.arch()),
        Err(e) => {
            let _ = created.send(Err(fail(VmError::CreateVm(e))));
            return None;
        }
    };
    let (notice_tx, notice_rx) = mpsc::channel();
    // Boxed from the start: the loop is large, and each copy of it on a loop thread's stack
    // costs a page on each of a fleet's ~1,000 loop threads (measured: +4.6 KiB per VM).
    let mut this = Box::new(VmLoop {
        guest: Guest::new(setup.hv.arch()),
        hv: Arc::clone(&setup.hv),
        spec: setup.spec,
        supported: setup.supported,
        shared: setup.shared,
        vm,
        vcpus: Vec::new(),
        control,
        linger: Arc::clone(linger),
        threads: Vec::new(),
        ready: Ok(Vec::new()),
        runs: Vec::new(),
        lifecycle: Lifecycle::Creating,
        status,
        report,
        commands,
        wake,
        notice_rx,
        notice_tx,
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
        _ended: ended,
    });
    if let Err(why) = this.configure() {
        this.report.state = VmState::Failed(why.to_string());
        this.teardown();
        this.set_lifecycle(Lifecycle::Exited(ExitReason::Failed(why.to_string())));
        let _ = created.send(Err((why.into(), Box::new(this.report.clone()))));
        return None;
    }
    this.set_lifecycle(Lifecycle::Created);
    // What `create` answers is the VM as configured, whatever a queued command does next.
    let status = this.status_now();
    // A `start` queued behind the creation (`Fleet::launch_all`) is carried out right away, and
    // its vCPU threads find their launch waiting when they start; the drift lines, which nothing
    // on the way to a first exit needs, are worked out while the guests enter. Otherwise the
    // threads are started now, while the control plane handles the answer, and wait for a
    // `start` (unless the backend says a start need not wait for them: a replay).
    let mut started_early = false;
    while let Ok(command) = this.commands.try_recv() {
        started_early |= matches!(command, Command::Start { .. });
        this.command(command);
        this.settle();
    }
    if this.lifecycle == Lifecycle::Created && this.hv.spawns_vcpu_threads_ahead() {
        this.spawn_ready_threads();
    }
    let mut view = this.model_view();
    if started_early {
        view.sealed = None;
    }
    let _ = created.send(Ok((view, status)));

    Some(this)
}
