//! The vCPU layer: the vCPU fd, `KVM_RUN`, and dispatch of the architecture-specific calls.

use super::kick::KvmKick;
use super::vm::MemoryKeepAlive;
use super::{arch, exit};
use crate::hypervisor::backend::{Kick, Vcpu};
use crate::hypervisor::call::{Reply, RunDecision, VcpuCall, VcpuExit};
use crate::hypervisor::error::CallError;
use crate::hypervisor::ids::{VcpuId, VmId};
use crate::hypervisor::refusal::LockRefusal;
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
    kick: Arc<KvmKick>,
    _memory: Arc<MemoryKeepAlive>,
}

impl KvmVcpu {
    pub(super) fn new(vm: VmId, id: VcpuId, mut fd: VcpuFd, memory: Arc<MemoryKeepAlive>) -> Self {
        let immediate_exit: *mut u8 = &mut fd.get_kvm_run().immediate_exit;
        KvmVcpu {
            fd: Some(fd),
            vm,
            id,
            kick: Arc::new(KvmKick::new(immediate_exit)),
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
            // A kick leaves `immediate_exit` set: clear it before anyone decides what comes next.
            // `RunCounted` is the same `KVM_RUN`: only its caller and the recorder treat it apart.
            VcpuCall::Run | VcpuCall::RunCounted => {
                let exit = exit::run(fd)?;
                if exit == VcpuExit::Interrupted {
                    self.kick.clear_after_exit();
                }
                Ok(Reply::Exit(exit))
            }
            // Close the vCPU fd and unmap its `kvm_run` area (the kicker lets go of it first).
            VcpuCall::Destroy => {
                self.kick.forget_mapping();
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

    fn kicker(&self) -> Arc<dyn Kick> {
        Arc::clone(&self.kick) as Arc<dyn Kick>
    }

    /// Live, the control plane's wish is the decision.
    fn control_point(&mut self, wanted: RunDecision) -> Result<RunDecision, CallError> {
        Ok(wanted)
    }
}

impl Drop for KvmVcpu {
    fn drop(&mut self) {
        // The kicker may outlive this vCPU (the control plane holds it): it must not write into
        // the `kvm_run` mapping the fd's drop unmaps.
        self.kick.forget_mapping();
    }
}
