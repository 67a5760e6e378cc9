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

pub mod arm64;
pub mod backend;
pub mod call;
pub mod control;
pub mod cpuid;
pub mod errno;
pub mod error;
pub mod guest;
pub mod handle;
pub mod headline;
pub mod ids;
pub mod kvm;
pub mod lock;
pub mod runner;
pub mod skip;
pub mod suggest;

use serde::{Deserialize, Serialize};
use std::fmt;

pub use backend::{Hypervisor, Kick, NoKick, Vcpu, Vm};
pub use call::{
    Call, Failure, Origin, Outcome, Reply, RunDecision, SystemCall, VcpuCall, VcpuExit, VmCall,
};
pub use control::RunControl;
pub use errno::Errno;
pub use error::{CallError, ReplayFailure};
pub use handle::{CpuidWrite, HandleError, OneRegLockRule, OneRegWrite, VcpuHandle, VmHandle};
pub use ids::{Stream, VcpuId, VmId};
pub use lock::{LockRefusal, ModelLock, Seal};

/// The architecture a guest runs; data, not a `cfg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GuestArch {
    X86_64,
    Aarch64,
}

impl fmt::Display for GuestArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuestArch::X86_64 => "x86_64",
            GuestArch::Aarch64 => "aarch64",
        })
    }
}
