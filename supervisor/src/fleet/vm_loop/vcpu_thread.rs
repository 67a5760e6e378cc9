//! A VM's vCPU threads: one OS thread per vCPU, spawned ahead of `start` and waiting for its
//! [`Launch`], then running the guest (`KVM_RUN` blocks) and telling the VM loop what happened
//! (first exit, parked, unparked, ended) over a channel and an eventfd. Apart from the loop
//! because a thread shares nothing with the loop but these notices and the run control.

use super::park_for_good;
use crate::fleet::guest::{Launch, VcpuOutcome};
use crate::fleet::threads::{self, PooledThread};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use vcpu::runtime::runner::VcpuNotice;
use vcpu::{RunControl, VcpuHandle};
use vmm_sys_util::eventfd::EventFd;

/// A notice from a vCPU thread.
pub(super) enum Notice {
    Run(VcpuNotice),
    /// The thread is about to end (sent from a drop guard, so a panic sends it too). With its
    /// outcome when the thread parks for good instead of returning it (the loop must not join
    /// it then).
    Ended(Option<Box<VcpuOutcome>>),
}

/// Sends `Ended` when the vCPU thread ends, however it ends (with the outcome it hands over, if
/// it parks for good).
pub(super) struct EndNotice {
    index: usize,
    tx: Sender<(usize, Notice)>,
    /// The loop's wake-up; `None` for a run on the loop's own thread (see [`VcpuRunner::run`]).
    wake: Option<Arc<EventFd>>,
    handed_over: Option<Box<VcpuOutcome>>,
}

impl Drop for EndNotice {
    fn drop(&mut self) {
        let _ = self
            .tx
            .send((self.index, Notice::Ended(self.handed_over.take())));
        if let Some(wake) = &self.wake {
            let _ = wake.write(1);
        }
    }
}

/// A vCPU thread spawned ahead of `start`.
pub(super) struct ReadyThread {
    pub launch: Sender<Launch>,
    pub thread: PooledThread<Option<VcpuOutcome>>,
}

/// What a vCPU's run needs besides its launch: its vCPU, the VM's run control, where its notices
/// go, and how its thread behaves.
pub(super) struct VcpuRunner {
    pub index: usize,
    pub vcpu: Arc<VcpuHandle>,
    pub control: Arc<RunControl>,
    pub linger: Arc<AtomicBool>,
    pub tx: Sender<(usize, Notice)>,
    pub wake: Arc<EventFd>,
    /// It gives up its priority at the first exit (see [`vcpu::Hypervisor::runs_guests`]).
    pub runs_guest: bool,
}

impl VcpuRunner {
    /// Run the guest until the guest or the control plane ends the run, telling the loop what
    /// happens. On a thread of its own (`own_thread`) that ends while the process is about to
    /// exit, hand the outcome over and park for good; else return it.
    ///
    /// A run on the loop's own thread (not `own_thread`: [`VcpuRunner::run_here`], served by the
    /// loop's `start` command) queues its notices without waking the loop: the loop takes them
    /// in the same round, after its commands (a wake-up would only bring it back to an empty
    /// queue: two `write`s, an `epoll_wait` and a `read` per vCPU of a replay).
    fn run(self, launch: Launch, own_thread: bool) -> Option<VcpuOutcome> {
        let VcpuRunner {
            index,
            vcpu,
            control,
            linger,
            tx,
            wake,
            runs_guest,
        } = self;
        let wake = own_thread.then_some(wake);
        let mut end = EndNotice {
            index,
            tx: tx.clone(),
            wake: wake.clone(),
            handed_over: None,
        };
        let parks_at_first_exit = launch.pauses_at_first_exit();
        let mut notify = |notice| {
            if runs_guest && notice == VcpuNotice::FirstExit {
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
            if let Some(wake) = &wake
                && !(parks_at_first_exit && notice == VcpuNotice::FirstExit)
            {
                let _ = wake.write(1);
            }
        };
        let outcome = launch.run(&vcpu, &control, &mut notify);
        if own_thread && linger.load(Ordering::SeqCst) {
            // The process is about to exit: hand the outcome over and keep this thread (its
            // stack) and the vCPU it holds until then.
            end.handed_over = Some(Box::new(outcome));
            drop(end);
            park_for_good();
        }
        drop(end);
        Some(outcome)
    }

    /// Run it on the calling thread, now (for a run that cannot block: see
    /// [`vcpu::VcpuHandle::run_is_at_hand`]); its notices are queued for the loop as a thread's
    /// are, and the result is held as a finished thread's.
    pub fn run_here(self, launch: Launch) -> PooledThread<Option<VcpuOutcome>> {
        PooledThread::run_here(move || self.run(launch, false))
    }
}

/// Spawn vCPU `index`'s thread (named `name`): it waits for its [`Launch`] (ending with `None` if
/// the VM is torn down first), then runs the guest until the guest or the control plane ends the
/// run.
pub(super) fn spawn_vcpu(runner: VcpuRunner, name: String) -> std::io::Result<ReadyThread> {
    let (launch, launched) = mpsc::channel::<Launch>();
    let thread = threads::pool().spawn(name, move || {
        let launch = launched.recv().ok()?;
        runner.run(launch, true)
    })?;
    Ok(ReadyThread { launch, thread })
}
