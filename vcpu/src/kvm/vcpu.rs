//! The vCPU layer: the vCPU fd, `KVM_RUN`, and dispatch of the architecture-specific calls.

use super::vm::MemoryKeepAlive;
use super::{arch, exit};
use crate::backend::Vcpu;
use crate::call::{Reply, VcpuCall};
use crate::error::CallError;
use crate::ids::{VcpuId, VmId};
use crate::lock::LockRefusal;
use kvm_ioctls::VcpuFd;
use std::sync::Arc;

/// A KVM vCPU. Implements [`Vcpu`].
///
/// Field order is drop order: the vCPU fd (and its `kvm_run` mapping) goes before the guest
/// memory it may still reference.
#[derive(Debug)]
pub struct KvmVcpu {
    /// `None` once [`VcpuCall::Destroy`] closed it.
    fd: Option<VcpuFd>,
    vm: VmId,
    id: VcpuId,
    _memory: Arc<MemoryKeepAlive>,
}

impl KvmVcpu {
    pub(super) fn new(vm: VmId, id: VcpuId, fd: VcpuFd, memory: Arc<MemoryKeepAlive>) -> Self {
        KvmVcpu {
            fd: Some(fd),
            vm,
            id,
            _memory: memory,
        }
    }
}

impl Vcpu for KvmVcpu {
    fn id(&self) -> (VmId, VcpuId) {
        (self.vm, self.id)
    }

    fn call(&mut self, call: &VcpuCall) -> Result<Reply, CallError> {
        let Some(fd) = self.fd.as_mut() else {
            return Err(CallError::Backend(format!(
                "{call} on {}/{}: the vCPU was already destroyed",
                self.vm, self.id
            )));
        };
        match call {
            // KVM_RUN until the next exit to userspace (see `exit::run`).
            VcpuCall::Run => exit::run(fd).map(Reply::Exit),
            // Close the vCPU fd and unmap its `kvm_run` area.
            VcpuCall::Destroy => {
                self.fd = None;
                Ok(Reply::Done)
            }
            _ => arch::vcpu_call(fd, call),
        }
    }

    /// The lock refused `call`, so nothing reaches the kernel: there is nothing for the KVM
    /// backend to do (the recorder is the layer that writes refusals down).
    fn note_refused(&mut self, _call: &VcpuCall, _refusal: &LockRefusal) -> Result<(), CallError> {
        Ok(())
    }
}
