//! The KVM backend: [`KvmHypervisor`], [`KvmVm`] and [`KvmVcpu`] implement the
//! [`crate::hypervisor::backend`] traits over `/dev/kvm` with `kvm-ioctls`.
//!
//! This module is the only place in vmfleet that uses `unsafe` and the only place that branches on
//! the *host* architecture (`cfg(target_arch)`). Every `unsafe` block carries a `SAFETY:` comment.
//!
//! Layout (rust-vmm style, one concern per file):
//! - `system`: opening `/dev/kvm`, the system ioctls, VM creation;
//! - `vm`: the VM fd, guest memory, VM ioctls, vCPU creation;
//! - `vcpu`: the vCPU fd and the ioctls common to both architectures (`KVM_RUN`);
//! - `kick`: interrupting `KVM_RUN` from another thread (`immediate_exit` + a signal);
//! - `exit`: translating `kvm_ioctls::VcpuExit` into vmfleet's [`crate::VcpuExit`];
//! - `x86_64` / `aarch64`: the architecture-specific ioctls, compiled only on that host;
//! - `thread`: the scheduling priority of vCPU threads and of the trace writer, and thread names;
//! - `unavailable`: why KVM cannot be used, worded for the person at the terminal;
//! - [`floor`]: the minimal start loop `vmfleet bench` measures vmfleet against (x86_64 hosts;
//!   a stub that says so elsewhere).
//!
//! On a host architecture KVM does not support here (anything but x86_64 and aarch64) the crate
//! still compiles: [`KvmHypervisor::open`] returns [`KvmUnavailable::UnsupportedArch`].
#![allow(unsafe_code)]

pub mod floor;
mod thread;
mod unavailable;

pub use thread::{VCPU_NICE, deprioritize_vcpu_thread, own_nice, set_own_name, set_own_nice};

pub use unavailable::KvmUnavailable;

use crate::hypervisor::ids::GuestArch;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod exit;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod kick;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod system;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod vcpu;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod vm;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

/// The architecture-specific half of the backend, under one name.
#[cfg(target_arch = "aarch64")]
use aarch64 as arch;
#[cfg(target_arch = "x86_64")]
use x86_64 as arch;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub use system::KvmHypervisor;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub use vcpu::KvmVcpu;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub use vm::KvmVm;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod unsupported;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub use unsupported::KvmHypervisor;

/// The default KVM device.
pub const KVM_PATH: &str = "/dev/kvm";

/// The guest architecture this binary runs under KVM, i.e. the host's, if vmfleet's KVM backend
/// supports it; `None` elsewhere (then only replay is available).
pub fn host_arch() -> Option<GuestArch> {
    #[cfg(target_arch = "x86_64")]
    {
        Some(GuestArch::X86_64)
    }
    #[cfg(target_arch = "aarch64")]
    {
        Some(GuestArch::Aarch64)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        None
    }
}

/// Map a failed `kvm-ioctls` call to the errno the kernel returned.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn kernel(error: vmm_sys_util::errno::Error) -> crate::hypervisor::error::CallError {
    crate::hypervisor::error::CallError::Kernel(crate::hypervisor::errno::Errno(error.errno()))
}

/// The errno left by the last failed system call on this thread, as a [`crate::hypervisor::error::CallError`].
/// Only for raw ioctls that returned a negative value just before.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn last_kernel_error() -> crate::hypervisor::error::CallError {
    kernel(vmm_sys_util::errno::Error::last())
}

/// A call that belongs to the other architecture's vocabulary.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn other_arch(
    call: &dyn std::fmt::Display,
    call_arch: GuestArch,
) -> crate::hypervisor::error::CallError {
    let host = host_arch().map_or_else(|| std::env::consts::ARCH.to_string(), |a| a.to_string());
    crate::hypervisor::error::CallError::Backend(format!(
        "{call} is an {call_arch} call, but this KVM host runs {host} guests"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_arch_matches_the_build() {
        let expected = match std::env::consts::ARCH {
            "x86_64" => Some(GuestArch::X86_64),
            "aarch64" => Some(GuestArch::Aarch64),
            _ => None,
        };
        assert_eq!(host_arch(), expected);
    }
}
