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

/// A vCPU thread spawned ahead of `start`.
pub(super) struct ReadyThread {
    pub launch: Sender<Launch>,
    pub thread: PooledThread<Option<VcpuOutcome>>,
}

/// Spawn vCPU `index`'s thread: it waits for its [`Launch`] (ending with `None` if the VM is torn
/// down first), then runs the guest until the guest or the control plane ends the run. It gives
/// up its priority at the first exit when `runs_guest` (see [`vcpu::Hypervisor::runs_guests`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn_vcpu(
    index: usize,
    vcpu: Arc<VcpuHandle>,
    control: Arc<RunControl>,
    linger: Arc<AtomicBool>,
    tx: Sender<(usize, Notice)>,
    wake: Arc<EventFd>,
    name: String,
    runs_guest: bool,
) -> std::io::Result<ReadyThread> {
    let (launch, launched) = mpsc::channel::<Launch>();
    let thread = threads::pool().spawn(name, move || {
        let launch = launched.recv().ok()?;
        let mut end = EndNotice {
            index,
            tx: tx.clone(),
            wake: Arc::clone(&wake),
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
            if !(parks_at_first_exit && notice == VcpuNotice::FirstExit) {
                let _ = wake.write(1);
            }
        };
        let outcome = launch.run(&vcpu, &control, &mut notify);
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
