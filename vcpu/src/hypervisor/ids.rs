//! Logical identities of the objects vmfleet talks to.
//!
//! File descriptors are not stable across runs, so everything that is recorded or replayed names
//! objects by these ids instead. The supervisor chooses them (a VM's index in the fleet, a vCPU's
//! index in its VM), which is what makes a trace replayable on another machine. The guest's
//! architecture ([`GuestArch`]) is a value of the same kind: a trace names it, a host reports it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The architecture a guest runs; data, not a `cfg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GuestArch {
    /// x86-64: the model is a CPUID table (`KVM_SET_CPUID2`).
    X86_64,
    /// arm64: the model is ID and firmware registers (`KVM_SET_ONE_REG`) and vCPU features
    /// (`KVM_ARM_VCPU_INIT`).
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

/// A VM, by the order in which the supervisor created it (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VmId(pub u32);

impl VmId {
    /// The first logical id of vmfleet's kernel probes: scratch VMs that exist to ask the kernel
    /// something and run no guest code (the probes of rules no capability shows, the after-run
    /// cross-check). Their lock never seals (`runtime::lock::ModelLock::for_kernel_probe`), and
    /// the model engine judges their writes by the kernel's rule alone. Fleet VMs count up from
    /// 0 and never get here; the pre-run cross-check's scratch VMs (a VM's id with bit 31 set)
    /// stay below it too.
    pub const KERNEL_PROBES: u32 = 0xC000_0000;

    /// Whether this is a kernel probe's scratch VM ([`VmId::KERNEL_PROBES`]).
    pub fn is_kernel_probe(self) -> bool {
        self.0 >= VmId::KERNEL_PROBES
    }
}

/// A vCPU within its VM (0-based; also its KVM vCPU id and APIC id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VcpuId(pub u32);

/// Which object a backend call is issued on.
///
/// Calls are totally ordered *within* a stream (one object is only ever driven by one thread at a
/// time) but not across streams, so record/replay compare streams, never the global interleaving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// `/dev/kvm` itself: capabilities, supported CPUID.
    Host,
    /// A VM file descriptor (and the call that created it).
    Vm(VmId),
    /// A vCPU file descriptor (and the call that created it), and its thread's control decisions.
    Vcpu(VmId, VcpuId),
    /// The fleet's control plane: requests in the order the supervisor carried them out.
    Control,
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vm{}", self.0)
    }
}

impl fmt::Display for VcpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vcpu{}", self.0)
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stream::Host => f.write_str("host"),
            Stream::Vm(vm) => write!(f, "{vm}"),
            Stream::Vcpu(vm, vcpu) => write!(f, "{vm}/{vcpu}"),
            Stream::Control => f.write_str("control"),
        }
    }
}
