//! The hypervisor boundary, one trait per layer: [`Hypervisor`] (the system), [`Vm`], [`Vcpu`].
//!
//! Each layer has a single `call` entry point taking a [`SystemCall`] / [`VmCall`] / [`VcpuCall`],
//! plus the few operations that hand back a new object. That shape is deliberate: a decorator
//! (the recorder) or an alternative implementation (the replay backend) handles every call in one
//! place, and adding a call to the vocabulary cannot silently bypass either of them.
//!
//! Implementations: the KVM backend ([`crate::hypervisor::kvm`]), and, in the `recorder` crate, the recording
//! decorator and the replay backend. The supervisor never holds these objects directly; it goes
//! through the runtime's handles (`runtime::handle`), which routes every CPU-model write through the pre-run lock.

use crate::hypervisor::call::{Reply, RunDecision, SystemCall, VcpuCall, VcpuExit, VmCall};
use crate::hypervisor::error::CallError;
use crate::hypervisor::ids::GuestArch;
use crate::hypervisor::ids::{VcpuId, VmId};
use crate::hypervisor::refusal::LockRefusal;
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

/// The system layer: what `/dev/kvm` answers, and VM creation.
pub trait Hypervisor: Send + Sync {
    /// The architecture of the guests this backend runs (the host's, for KVM; the trace's, for
    /// replay).
    fn arch(&self) -> GuestArch;

    /// Issue a system call. [`SystemCall::CreateVm`] is refused here: use [`Hypervisor::create_vm`].
    fn call(&self, call: &SystemCall) -> Result<Reply, CallError>;

    /// `KVM_CREATE_VM`, naming the VM by the supervisor's logical id.
    fn create_vm(&self, vm: VmId, name: &str) -> Result<Box<dyn Vm>, CallError>;

    /// Whether a created VM's vCPU threads are worth spawning before it is started, so that a
    /// `start` is a message to threads already up rather than a spawn (KVM: yes, a start's
    /// latency is what a fleet waits for). A replay answers from its trace at once and says no:
    /// its threads are spawned when a VM starts, so a replayed fleet holds threads for the VMs its
    /// trace has running, not for every VM it created.
    fn spawns_vcpu_threads_ahead(&self) -> bool {
        true
    }

    /// Whether its vCPUs run real guests, which may spin for ever: their threads then give up
    /// their priority at the first exit, so that the control plane wins the CPU from them (KVM:
    /// yes). A replay or a model answers from data, its threads never spin, and says no: a
    /// thousand-VM replay saves two `setpriority` calls per vCPU and the pool's restoring them,
    /// and its VM loops share a few threads instead of one each (the supervisor's loop hosts),
    /// and its guest programs are only checked against guest memory, not written into it
    /// ([`crate::guests::Placement::Check`]).
    fn runs_guests(&self) -> bool {
        true
    }
}

/// The VM layer.
pub trait Vm: Send {
    /// The VM's logical id, as given to [`Hypervisor::create_vm`].
    fn id(&self) -> VmId;

    /// Issue a VM call. [`VmCall::CreateVcpu`] is refused here: use [`Vm::create_vcpu`].
    fn call(&mut self, call: &VmCall) -> Result<Reply, CallError>;

    /// `KVM_CREATE_VCPU`.
    fn create_vcpu(&mut self, vcpu: VcpuId) -> Result<Box<dyn Vcpu>, CallError>;

    /// The guest memory registered so far with [`VmCall::AddMemory`] (empty before that).
    fn guest_memory(&self) -> &GuestMemoryMmap;
}

/// The vCPU layer. One vCPU is driven by one thread at a time (KVM serialises vCPU ioctls anyway).
pub trait Vcpu: Send {
    /// The VM's and the vCPU's logical ids, as given at creation.
    fn id(&self) -> (VmId, VcpuId);

    /// Issue a vCPU call.
    fn call(&mut self, call: &VcpuCall) -> Result<Reply, CallError>;

    /// The pre-run lock refused `call` before it reached this backend. The kernel never sees it;
    /// the recorder writes it down as refused by vmfleet, and the replay backend checks that the
    /// recorded run refused the same write at the same point.
    fn note_refused(&mut self, call: &VcpuCall, refusal: &LockRefusal) -> Result<(), CallError>;

    /// What another thread uses to make this vCPU's `KVM_RUN` return promptly (taken once, before
    /// the vCPU's thread starts running it).
    fn kicker(&self) -> Arc<dyn Kick>;

    /// A control point (see [`RunDecision`]): `wanted` is what the control plane wants now. A live
    /// backend decides `wanted`; the recorder writes the decision down; the replay backend answers
    /// the recorded decision instead, which the caller then waits for its control plane to reach.
    fn control_point(&mut self, wanted: RunDecision) -> Result<RunDecision, CallError>;

    /// Whether a run from here to the guest's end is known already and waits for nothing: every
    /// exit up to one that ends the guest is at hand, and none is a kick (whose control point may
    /// wait for the control plane). Then the run may go on a thread that serves other work too,
    /// since it cannot block it. A replay can say yes (its exits are in the trace); a real vCPU
    /// never does (`KVM_RUN` waits on the guest).
    fn run_is_at_hand(&self) -> bool {
        false
    }

    /// Serve `RUN`s whose exits the backend knows already without a call each: offer each coming
    /// run's exit to `take`, in order and by reference, until it leaves one or takes its last,
    /// or the backend knows no more; how many it took. A taken exit is the answer of one `RUN`,
    /// exactly as [`Vcpu::call`] would have given it; a left one is still to come. A replay
    /// knows the exits its queue holds, and a thousand-VM replay's runs are mostly such exits,
    /// which one call each (a lock, a check and a copy of the exit, at every layer) would serve
    /// many times slower. A real vCPU knows none (`KVM_RUN` asks the guest), and never offers.
    fn run_known(&mut self, take: &mut dyn FnMut(&VcpuExit) -> TakeExit) -> u64 {
        let _ = take;
        0
    }
}

/// What the caller of [`Vcpu::run_known`] does with an exit it is offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeExit {
    /// Take it (its `RUN` returned it), and be offered the next.
    Take,
    /// Take it, and be offered no more: the run ends here.
    Last,
    /// Leave it: the caller runs this one with a call of its own ([`Vcpu::call`]), because it
    /// does more with it than the offer allows (a kick's control point, a first exit's notice).
    Leave,
}

/// Interrupting a vCPU that may be inside `KVM_RUN`, from any thread.
///
/// The KVM implementation is the one established VMMs use: set `kvm_run.immediate_exit` (so a
/// `KVM_RUN` that has not started yet returns at once) and send the vCPU's thread a signal (so one
/// that is blocked in the guest returns). Either way the run returns the exit
/// [`crate::VcpuExit::Interrupted`]. Backends without a kernel (replay) do nothing: their exits,
/// kicks included, come from the trace.
pub trait Kick: Send + Sync {
    /// Make the vCPU leave `KVM_RUN` now, or not enter it next time.
    fn kick(&self);
    /// The calling thread is the one that runs this vCPU from now on (it receives the signal).
    fn bind_current_thread(&self);
    /// The bound thread stops running this vCPU; no signal is sent to it after this returns.
    fn unbind_thread(&self);
}

/// The [`Kick`] of backends whose runs never block.
#[derive(Debug, Default)]
pub struct NoKick;

impl Kick for NoKick {
    fn kick(&self) {}
    fn bind_current_thread(&self) {}
    fn unbind_thread(&self) {}
}
