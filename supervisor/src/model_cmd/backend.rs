//! The model backend: the hypervisor boundary (`Hypervisor` → `Vm` → `Vcpu`) answered by the
//! model engine of a fingerprinted host instead of `/dev/kvm`, for `vmfleet run --model FP
//! SPEC`.
//!
//! CPU-model calls get the engine's prediction (a refusal is the kernel's errno; a call the
//! fingerprint cannot predict fails as a backend error saying which fact is missing). Other calls
//! succeed trivially: `KVM_GET_API_VERSION` is 12, an unlisted capability 0, a core register
//! reads 0; guest memory is real (the guest loader writes its program there). Guests cannot run:
//! `KVM_RUN` fails with a backend error, so each VM ends at its first run.

use std::sync::{Arc, Mutex, MutexGuard};
use vcpu::model::engine::{Engine, Prediction};
use vcpu::{
    Call, CallError, GuestArch, Hypervisor, Kick, LockRefusal, NoKick, Reply, RunDecision, Stream,
    SystemCall, Vcpu, VcpuCall, VcpuId, Vm, VmCall, VmId,
};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

/// What the backend error of `KVM_RUN` says.
pub const CANNOT_RUN: &str = "the model backend cannot run guests (KVM_RUN is not modelled)";

type Shared = Arc<Mutex<Engine>>;

fn lock(engine: &Shared) -> MutexGuard<'_, Engine> {
    // A panic elsewhere cannot leave the engine half-updated in a way that matters here.
    engine
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Ask the engine; `trivial` is the answer to a call it does not judge.
fn ask(engine: &Shared, stream: Stream, call: Call, trivial: Reply) -> Result<Reply, CallError> {
    match lock(engine).call(stream, &call) {
        Prediction::Judged(Ok(reply)) => Ok(reply),
        Prediction::Judged(Err(failure)) => Err(CallError::Kernel(failure.errno)),
        Prediction::Unknown { why } => Err(CallError::Backend(format!(
            "the model cannot predict {call:?} on {stream}: {why}"
        ))),
        Prediction::NotJudged => Ok(trivial),
    }
}

/// The model backend's system object.
pub struct ModelHypervisor {
    arch: GuestArch,
    engine: Shared,
}

impl ModelHypervisor {
    /// A backend over `engine`.
    pub fn new(engine: Engine) -> ModelHypervisor {
        ModelHypervisor {
            arch: engine.facts().arch,
            engine: Arc::new(Mutex::new(engine)),
        }
    }
}

impl Hypervisor for ModelHypervisor {
    fn arch(&self) -> GuestArch {
        self.arch
    }

    /// No: the model answers every exit from data.
    fn runs_guests(&self) -> bool {
        false
    }

    fn call(&self, call: &SystemCall) -> Result<Reply, CallError> {
        let trivial = match call {
            SystemCall::GetApiVersion => Reply::Value(12),
            SystemCall::GetVcpuMmapSize => Reply::Value(0x3000),
            SystemCall::CheckExtension { .. } => Reply::Value(0),
            _ => Reply::Done,
        };
        ask(
            &self.engine,
            Stream::Host,
            Call::System(call.clone()),
            trivial,
        )
    }

    fn create_vm(&self, vm: VmId, name: &str) -> Result<Box<dyn Vm>, CallError> {
        let call = Call::System(SystemCall::CreateVm {
            vm,
            name: name.to_string(),
        });
        ask(&self.engine, Stream::Vm(vm), call, Reply::Done)?;
        Ok(Box::new(ModelVm {
            id: vm,
            engine: self.engine.clone(),
            memory: GuestMemoryMmap::new(),
        }))
    }
}

/// A VM of the model backend.
struct ModelVm {
    id: VmId,
    engine: Shared,
    memory: GuestMemoryMmap,
}

impl Vm for ModelVm {
    fn id(&self) -> VmId {
        self.id
    }

    fn call(&mut self, call: &VmCall) -> Result<Reply, CallError> {
        if let VmCall::AddMemory {
            guest_phys_addr,
            size,
            ..
        } = call
        {
            let size = usize::try_from(*size).map_err(|_| {
                CallError::Backend(format!("guest memory size {size:#x} does not fit"))
            })?;
            let region = GuestRegionMmap::from_range(GuestAddress(*guest_phys_addr), size, None)
                .map_err(|e| CallError::Backend(format!("cannot allocate guest memory: {e}")))?;
            self.memory = self
                .memory
                .insert_region(Arc::new(region))
                .map_err(|e| CallError::Backend(format!("cannot add guest memory: {e}")))?;
        }
        let trivial = match call {
            VmCall::EnableCap { .. } => Reply::Value(0),
            _ => Reply::Done,
        };
        ask(
            &self.engine,
            Stream::Vm(self.id),
            Call::Vm(call.clone()),
            trivial,
        )
    }

    fn create_vcpu(&mut self, vcpu: VcpuId) -> Result<Box<dyn Vcpu>, CallError> {
        let call = Call::Vm(VmCall::CreateVcpu { vcpu });
        ask(&self.engine, Stream::Vm(self.id), call, Reply::Done)?;
        Ok(Box::new(ModelVcpu {
            vm: self.id,
            id: vcpu,
            engine: self.engine.clone(),
        }))
    }

    fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }
}

/// A vCPU of the model backend.
struct ModelVcpu {
    vm: VmId,
    id: VcpuId,
    engine: Shared,
}

impl Vcpu for ModelVcpu {
    fn id(&self) -> (VmId, VcpuId) {
        (self.vm, self.id)
    }

    fn call(&mut self, call: &VcpuCall) -> Result<Reply, CallError> {
        let stream = Stream::Vcpu(self.vm, self.id);
        let trivial = match call {
            VcpuCall::GetOneReg { .. } => Reply::Value(0),
            _ => Reply::Done,
        };
        let reply = ask(&self.engine, stream, Call::Vcpu(call.clone()), trivial)?;
        if matches!(call, VcpuCall::Run | VcpuCall::RunCounted) {
            return Err(CallError::Backend(CANNOT_RUN.to_string()));
        }
        Ok(reply)
    }

    fn note_refused(&mut self, _call: &VcpuCall, _refusal: &LockRefusal) -> Result<(), CallError> {
        Ok(())
    }

    fn kicker(&self) -> Arc<dyn Kick> {
        Arc::new(NoKick)
    }

    fn control_point(&mut self, wanted: RunDecision) -> Result<RunDecision, CallError> {
        Ok(wanted)
    }
}
