//! # vcpu: vmfleet's hypervisor boundary and guest CPU model
//!
//! Owns:
//! - the vocabulary of calls to a hypervisor ([`call`]) and the three-layer backend interface
//!   ([`backend`]: system, VM, vCPU);
//! - the KVM implementation of that interface ([`kvm`]), the only code in vmfleet with `unsafe`
//!   and with `cfg(target_arch)`;
//! - the guest CPU model as data: x86 CPUID tables and the named feature catalog ([`cpuid`]);
//!   the arm64 ID registers, their field tables, the firmware pseudo-registers and hypercall
//!   bitmaps, KVM's rules for writing them and the planner that turns a spec into judged writes
//!   ([`arm64`]);
//! - the pre-run lock ([`lock`]) and the handles that route every CPU-model write through it
//!   ([`handle`]);
//! - a VM's run control ([`control`]): what its control plane wants of the vCPU threads;
//! - the built-in guest programs and the protocol they report through ([`guest`]), and the vCPU run
//!   loop that drives them on one OS thread per vCPU ([`runner`]);
//! - the skip helper every test crate uses to say a test cannot run here ([`skip`]).
//!
//! Must not: know about fleets, specs, traces or async runtimes (that is `supervisor` and
//! `recorder`), or branch on the *host* architecture anywhere but [`kvm`]: a guest architecture is
//! a value ([`GuestArch`]), so every model and check here compiles and is tested on any host.

pub mod guests;
pub mod hypervisor;
pub mod model;
pub mod runtime;
pub mod skip;

pub use hypervisor::backend::{Hypervisor, Kick, NoKick, Vcpu, Vm};
pub use hypervisor::call::{
    Call, ControlCall, Failure, Origin, Outcome, Reply, RunDecision, SystemCall, VcpuCall,
    VcpuExit, VmCall,
};
pub use hypervisor::errno::Errno;
pub use hypervisor::error::{CallError, ReplayFailure};
pub use hypervisor::ids::{GuestArch, Stream, VcpuId, VmId};
pub use runtime::control::RunControl;
pub use runtime::handle::{
    CpuidWrite, HandleError, OneRegLockRule, OneRegWrite, VcpuHandle, VmHandle,
};
pub use runtime::lock::{LockRefusal, ModelLock, Seal};
