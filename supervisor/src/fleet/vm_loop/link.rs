//! The control plane's end of a VM loop: the commands it sends ([`Command`], each with the
//! oneshot its answer comes back on) and the link it sends them over ([`VmLink`]: the channel,
//! the eventfd that wakes the loop, the run control it kicks from, the loop's thread). Apart
//! from the loop because this is all the control plane sees of it.

use super::*;

/// A reply to the control plane: the result, or why not (naming the VM where the request needs
/// it).
pub(in crate::fleet) type Answer<T, E = VmError> = oneshot::Sender<Result<T, E>>;

/// What the control plane asks of a VM.
pub(in crate::fleet) enum Command {
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
        change: ModelRequest,
        answer: Answer<ModelView, ModelError>,
    },
    /// Stop if needed, tear the VM down, end the loop; answered with the VM's final report.
    Remove(Answer<VmReport>),
    /// Stop if needed and answer with the VM's final report, as `Remove` does, but keep every
    /// kernel object and thread: the process is about to exit and leaves them to the kernel
    /// (see the module's documentation). No `DESTROY` call is made, so none is recorded.
    Exit(Answer<VmReport>),
}

/// The end of a VM loop, to be awaited: see [`VmLink::take_end`].
pub(in crate::fleet) struct LoopEnd(oneshot::Receiver<()>);

impl LoopEnd {
    /// Wait until the loop has been dropped.
    pub(in crate::fleet) async fn wait(self) {
        let _ = self.0.await;
    }
}

/// The control plane's end of a VM loop.
pub(in crate::fleet) struct VmLink {
    pub(super) commands: Sender<Command>,
    pub(super) wake: Arc<EventFd>,
    pub(in crate::fleet) status: watch::Receiver<VmStatus>,
    /// The VM's run control, shared with its loop: stopping a whole fleet kicks every vCPU from
    /// here at once instead of waiting for each loop to be scheduled (see [`VmLink::kick_stop`]).
    pub(super) control: Arc<RunControl>,
    /// Shared with the loop and its vCPU threads: once set, a thread that ends parks for good
    /// instead of returning (see [`VmLink::linger`]).
    pub(super) linger: Arc<AtomicBool>,
    /// Closed when the loop has been dropped: its VM and everything it held are gone.
    pub(super) ended: Option<oneshot::Receiver<()>>,
}

impl VmLink {
    /// Send a command and wake the loop. Fails only if the loop is gone.
    pub(in crate::fleet) fn send(&self, command: Command) -> Result<(), LinkError> {
        self.commands
            .send(command)
            .map_err(|_| LinkError::LoopEnded)?;
        self.wake.write(1).map_err(|e| LinkError::Wake(Arc::new(e)))
    }

    /// Want every vCPU of the VM stopped and kick them now, ahead of the `Stop` or `Remove`
    /// command that follows (which the loop carries out as usual). With a thousand VMs running,
    /// the guests stop spinning at once, and the loops that then handle their commands are not
    /// starved by them. The decisions are the same as the loop's own (stop), so traces and their
    /// replays do not change.
    pub(in crate::fleet) fn kick_stop(&self) {
        self.control.request(RunDecision::Stop);
    }

    /// From now on the VM's threads park for good when they end instead of returning (the
    /// process is about to exit; see the module's documentation). Set before the kicks of a
    /// shutdown for exit, so that no vCPU thread stopped by them returns.
    pub(in crate::fleet) fn linger(&self) {
        self.linger.store(true, Ordering::SeqCst);
    }

    /// What tells that the loop has been dropped, on its own thread or on a loop host (await it
    /// after `Remove` was answered: the VM and everything it held are gone then). Nothing is
    /// ever sent on it: it closes when the loop drops its end. `None` once taken.
    pub(in crate::fleet) fn take_end(&mut self) -> Option<LoopEnd> {
        self.ended.take().map(LoopEnd)
    }
}
