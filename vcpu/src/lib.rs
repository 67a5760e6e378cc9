//! # vcpu: vmfleet's hypervisor boundary, guest CPU models, built-in guests and vCPU runtime
//!
//! Four parts, each depending only on the ones before it (`hypervisor` ← `model` ← `guests` ←
//! `runtime`), plus the test-skip helper:
//!
//! - [`hypervisor`], the boundary: the vocabulary of calls, replies and exits, the three backend
//!   traits (system, VM, vCPU), the errors and ids, the CPUID table the calls carry, the lock's
//!   refusal as it crosses the boundary, every KVM number vmfleet names ([`hypervisor::abi`]), and
//!   the KVM backend ([`hypervisor::kvm`], with the floor `vmfleet bench` measures against). It
//!   must not import the models, the guests or the runtime; `hypervisor::kvm` is the only code in
//!   vmfleet with `unsafe` and `cfg(target_arch)`.
//! - [`model`], the guest CPU models as data and rules: x86 ([`model::x86`]: the feature catalog,
//!   model building, drift) and arm64 ([`model::arm64`]: register ids, catalog, field tables,
//!   firmware registers, KVM's write rules, the spec and its planner), the lock policy
//!   ([`model::lock_policy`]: which writes are held after the first run and how identity is
//!   judged) and the one "did you mean" rule ([`model::suggest`]). It must not do I/O or import
//!   anything but the boundary's types (never `hypervisor::kvm`, the guests or the runtime).
//! - [`guests`], the built-in guest programs, their loaders and the decoders of their reports
//!   ([`guests::ExitDecoder`]), and the start workload the floor runs ([`guests::start`]). They
//!   use the boundary and the models, never the runtime or the KVM backend.
//! - [`runtime`], what drives a VM: the pre-run lock, the handles that route every call and every
//!   CPU-model write through it, run control, and the vCPU run loop. It may use every part but
//!   the KVM backend, which it reaches only through the backend traits.
//! - [`skip`]: the helper every test crate uses to say a test cannot run here (it asks the KVM
//!   backend, so it sits at the root, outside the four parts).
//!
//! The common types are re-exported here (`vcpu::Hypervisor`, `vcpu::VcpuHandle`, …). Must not,
//! as a whole: know about fleets, specs, traces or async runtimes (that is `supervisor` and
//! `recorder`), or branch on the *host* architecture anywhere but `hypervisor::kvm`: a guest
//! architecture is a value ([`GuestArch`]), so every model and check here compiles and is tested
//! on any host.

#![deny(missing_docs)]

pub mod guests;
pub mod hypervisor;
pub mod model;
pub mod runtime;
pub mod skip;

pub use hypervisor::backend::{Hypervisor, Kick, NoKick, TakeExit, Vcpu, Vm};
pub use hypervisor::call::{
    Call, ExitSummary, Failure, Origin, Outcome, Reply, RunDecision, SystemCall, VcpuCall,
    VcpuExit, VmCall,
};
pub use hypervisor::errno::Errno;
pub use hypervisor::error::{CallError, ReplayFailure};
pub use hypervisor::ids::{GuestArch, Stream, VcpuId, VmId};
pub use hypervisor::refusal::LockRefusal;
pub use model::lock_policy::OneRegLockRule;
pub use runtime::control::RunControl;
pub use runtime::handle::{CpuidWrite, HandleError, OneRegWrite, VcpuHandle, VmHandle};
pub use runtime::lock::{ModelLock, Seal};
