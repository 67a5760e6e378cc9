//! The only way the supervisor reaches a VM or a vCPU.
//!
//! [`VmHandle`] and [`VcpuHandle`] own the backend objects (KVM, recording, replay: it does not
//! matter which) and the VM's [`ModelLock`]. Every CPU-model write goes through
//! [`VcpuHandle::set_cpuid`], which judges it under the lock, and every run goes through
//! [`VcpuHandle::run`], which seals the lock first. Nothing else hands out the backend objects, so
//! no code path can write the CPU model without the lock seeing it.

use crate::hypervisor::backend::{Kick, TakeExit, Vcpu, Vm};
use crate::hypervisor::call::{Call, Reply, RunDecision, VcpuCall, VcpuExit, VmCall};
use crate::hypervisor::cpuid::CpuidTable;
use crate::hypervisor::errno::Errno;
use crate::hypervisor::error::{CallError, ReplayFailure};
use crate::hypervisor::ids::{GuestArch, Stream, VcpuId, VmId};
use crate::hypervisor::refusal::LockRefusal;
use crate::model::arm64::host::KernelProbes;
use crate::model::lock_policy::{self, Arm64LockContext, Mismatch, OneRegLockRule};
use crate::runtime::control::RunControl;
use crate::runtime::lock::{ModelLock, Seal};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use thiserror::Error;

/// How long a replayed vCPU thread waits for its control plane to want what the recorded run
/// decided at the same control point, before calling the replay diverged.
pub const REPLAY_CATCH_UP: Duration = Duration::from_secs(30);
use vm_memory::GuestMemoryMmap;

/// A call through a handle failed; says which call on which object.
#[derive(Debug, Clone, Error)]
#[error("{call} on {target}: {source}")]
pub struct HandleError {
    /// `vm0` or `vm0/vcpu1`.
    pub target: String,
    /// The call, as the transcript prints it.
    pub call: String,
    /// Why it failed: the kernel's errno, the lock's refusal, or the backend's own error.
    #[source]
    pub source: CallError,
}

impl HandleError {
    /// The errno the call failed with, if it has one (a kernel error or a lock refusal, which
    /// carries the errno the kernel would have given).
    pub fn errno(&self) -> Option<Errno> {
        self.source.errno()
    }

    /// Whether vmfleet's lock (not the kernel) refused the call.
    pub fn is_lock_refusal(&self) -> bool {
        matches!(self.source, CallError::Refused(_))
    }
}

/// A VM, its guest memory and its CPU-model lock.
pub struct VmHandle {
    id: VmId,
    name: String,
    /// The guests' architecture: which writes the lock holds after the first run depends on it.
    arch: GuestArch,
    lock: Arc<ModelLock>,
    /// What the lock judges an arm64 write after the run with, once the VM is configured; shared
    /// with every vCPU handle.
    arm64_context: Arc<Arm64Context>,
    vm: Mutex<Box<dyn Vm>>,
}

impl VmHandle {
    /// A handle on `vm`, whose guests are of `arch` (the backend's: [`crate::Hypervisor::arch`]).
    /// A kernel probe's scratch VM ([`VmId::is_kernel_probe`]) gets a lock that never seals, so
    /// a write after its one (kicked, guest-less) `KVM_RUN` reaches the kernel.
    pub fn new(vm: Box<dyn Vm>, name: impl Into<String>, arch: GuestArch) -> Self {
        let id = vm.id();
        let lock = if id.is_kernel_probe() {
            ModelLock::for_kernel_probe(id)
        } else {
            ModelLock::new(id)
        };
        VmHandle {
            id,
            name: name.into(),
            arch,
            lock: Arc::new(lock),
            arm64_context: Arc::new(Arm64Context::default()),
            vm: Mutex::new(vm),
        }
    }

    /// The VM's logical id.
    pub fn id(&self) -> VmId {
        self.id
    }

    /// The VM's name in the fleet spec.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The guests' architecture.
    pub fn arch(&self) -> GuestArch {
        self.arch
    }

    /// The VM's pre-run lock, shared by all its vCPUs.
    pub fn lock(&self) -> &ModelLock {
        &self.lock
    }

    /// Give the lock what it judges arm64 writes after the first run with: what the kernel
    /// reported about this VM and its vCPUs' features ([`lock_policy::judge_one_reg`]). Called
    /// once, when the model is configured and before any vCPU runs; until then a write to a held
    /// register of a sealed VM fails (the lock cannot judge it). A second call is an error: the
    /// rules a VM is judged by do not change.
    pub fn set_arm64_lock_context(&self, context: Arm64LockContext) -> Result<(), HandleError> {
        self.arm64_context
            .given
            .set(context)
            .map_err(|_| HandleError {
                target: self.id.to_string(),
                call: "set the lock's arm64 context".into(),
                source: CallError::Backend("the VM's lock already has its arm64 context".into()),
            })
    }

    /// Tell the lock kernel probes measured after the context was given (a `set-model` write
    /// that waited for one): they fill in what the context had not measured and never change an
    /// answer it has, so the lock keeps judging by the host's behaviour, not by the default it
    /// assumed before the measurement.
    pub fn learn_kernel_probes(&self, probes: &KernelProbes) {
        self.arm64_context
            .learned
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .fill_from(probes);
    }

    /// Allocate guest memory and register it at `guest_phys_addr`.
    pub fn add_memory(
        &self,
        slot: u32,
        guest_phys_addr: u64,
        size: u64,
    ) -> Result<(), HandleError> {
        self.call(VmCall::AddMemory {
            slot,
            guest_phys_addr,
            size,
        })
        .map(drop)
    }

    /// Run `f` on the VM's guest memory (to load a guest program).
    pub fn with_memory<R>(&self, f: impl FnOnce(&GuestMemoryMmap) -> R) -> R {
        f(self.backend().guest_memory())
    }

    /// Issue a VM call that is not a creation.
    pub fn call(&self, call: VmCall) -> Result<Reply, HandleError> {
        self.backend().call(&call).map_err(|source| HandleError {
            target: self.id.to_string(),
            call: call.to_string(),
            source,
        })
    }

    /// `KVM_CREATE_VCPU`: a handle on the new vCPU, sharing this VM's lock.
    pub fn create_vcpu(&self, vcpu: VcpuId) -> Result<VcpuHandle, HandleError> {
        let backend = self
            .backend()
            .create_vcpu(vcpu)
            .map_err(|source| HandleError {
                target: self.id.to_string(),
                call: VmCall::CreateVcpu { vcpu }.to_string(),
                source,
            })?;
        Ok(VcpuHandle {
            vm: self.id,
            id: vcpu,
            arch: self.arch,
            lock: Arc::clone(&self.lock),
            arm64_context: Arc::clone(&self.arm64_context),
            kick: backend.kicker(),
            vcpu: Mutex::new(backend),
        })
    }

    fn backend(&self) -> MutexGuard<'_, Box<dyn Vm>> {
        self.vm.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// What a CPU-model write left in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuidWrite {
    /// The table read back right after the write (`KVM_GET_CPUID2`).
    pub held: CpuidTable,
    /// Whether the VM was already sealed, i.e. this was an (allowed) identical rewrite.
    pub after_run: bool,
}

/// What an arm64 register write left in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OneRegWrite {
    /// The value read back right after the write (`KVM_GET_ONE_REG`).
    pub held: u64,
    /// Whether the VM was already sealed when it was written.
    pub after_run: bool,
}

/// The lock's arm64 context: given once, when the model is configured; kernel probes measured
/// later fill in its unmeasured answers ([`VmHandle::learn_kernel_probes`]).
#[derive(Default)]
struct Arm64Context {
    given: OnceLock<Arm64LockContext>,
    learned: Mutex<KernelProbes>,
}

impl Arm64Context {
    /// The context the lock judges by now, if it was given.
    fn current(&self) -> Option<Arm64LockContext> {
        let mut context = self.given.get()?.clone();
        let learned = self
            .learned
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        context.host.probes.fill_from(&learned);
        Some(context)
    }
}

/// A vCPU, sharing its VM's lock.
pub struct VcpuHandle {
    vm: VmId,
    id: VcpuId,
    arch: GuestArch,
    lock: Arc<ModelLock>,
    /// The VM's: see [`VmHandle::set_arm64_lock_context`].
    arm64_context: Arc<Arm64Context>,
    /// Taken from the backend at creation: usable while the run thread holds `vcpu`.
    kick: Arc<dyn Kick>,
    vcpu: Mutex<Box<dyn Vcpu>>,
}

impl VcpuHandle {
    /// The vCPU's logical id within its VM.
    pub fn id(&self) -> VcpuId {
        self.id
    }

    /// The VM the vCPU belongs to.
    pub fn vm(&self) -> VmId {
        self.vm
    }

    /// The guest's architecture.
    pub fn arch(&self) -> GuestArch {
        self.arch
    }

    /// Write the vCPU's CPUID table, judged by the pre-run lock, and read it back.
    ///
    /// Before any vCPU of the VM has run, the kernel decides. Afterwards vmfleet first reads what
    /// the kernel holds and refuses (as `EINVAL`, the kernel's class for this call) any table that
    /// is not identical to it by KVM's own rule ([`lock_policy::judge_cpuid`]); an identical table
    /// is passed on to the kernel.
    pub fn set_cpuid(&self, table: &CpuidTable) -> Result<CpuidWrite, HandleError> {
        let call = VcpuCall::SetCpuid2 {
            table: table.clone(),
        };
        let gate = self.lock.write_gate();
        let mut vcpu = self.backend();
        let after_run = match gate.seal() {
            Seal::Open => false,
            Seal::Sealed { first_run } => {
                let held = self.expect_cpuid(&mut vcpu, &VcpuCall::GetCpuid2)?;
                if let Some(mismatch) = lock_policy::judge_cpuid(&held, table) {
                    return Err(self.refuse(&mut vcpu, &call, first_run, mismatch));
                }
                true
            }
        };
        vcpu.call(&call).map_err(|e| self.error(&call, e))?;
        let held = self.expect_cpuid(&mut vcpu, &VcpuCall::GetCpuid2)?;
        drop(gate);
        Ok(CpuidWrite { held, after_run })
    }

    /// Write one arm64 register (`KVM_SET_ONE_REG`), judged by the pre-run lock by the rule the
    /// policy gives the register on this guest's architecture ([`lock_policy::one_reg_rule`]).
    ///
    /// `AlwaysWritable` registers (PSCI_VERSION, the SMCCC workaround registers, MPIDR) go to the
    /// kernel whatever the seal says, as the kernel allows. `LockedAfterRun` registers (the ID
    /// registers and hypercall bitmaps, which are VM-wide) are judged once the VM is sealed:
    /// vmfleet reads what the kernel holds and asks [`VcpuHandle::judge_after_run`], the arm64
    /// model's after-run rule. A write the kernel's set handlers refuse is refused with their
    /// errno (MIDR_EL1 without capability 239: `EINVAL`); a real change is refused as `EBUSY`,
    /// the class the newest kernels use, even on kernels that would accept it (6.1 takes a
    /// changed `ID_AA64PFR0_EL1.CSV3` after the run); a write identical once the set handlers
    /// have rewritten it (PMUVer 0xF where the VM holds 0) is passed on. Every refusal is the
    /// lock's: the kernel never sees the write.
    pub fn set_one_reg(&self, id: u64, value: u64) -> Result<OneRegWrite, HandleError> {
        let call = VcpuCall::SetOneReg { id, value };
        let rule = lock_policy::one_reg_rule(self.arch, id);
        let gate = self.lock.write_gate();
        let mut vcpu = self.backend();
        let after_run = match (gate.seal(), rule) {
            (Seal::Open, _) => false,
            (Seal::Sealed { .. }, OneRegLockRule::AlwaysWritable) => true,
            (Seal::Sealed { first_run }, OneRegLockRule::LockedAfterRun) => {
                let context = self.arm64_context(&call)?;
                let held = self.expect_one_reg(&mut vcpu, id)?;
                if let Some(mismatch) = lock_policy::judge_one_reg(id, held, value, &context) {
                    return Err(self.refuse(&mut vcpu, &call, first_run, mismatch));
                }
                true
            }
        };
        vcpu.call(&call).map_err(|e| self.error(&call, e))?;
        let held = self.expect_one_reg(&mut vcpu, id)?;
        drop(gate);
        Ok(OneRegWrite { held, after_run })
    }

    /// What the lock answers, once the VM has run, to writing `value` to register `id` where the
    /// vCPU holds `held`: `None` when it passes the write on to the kernel (a register the lock
    /// does not hold, or a value identical after the kernel's set handlers), else the refusal.
    /// The same judgement [`VcpuHandle::set_one_reg`] makes, for callers that report what they
    /// expect before they write.
    pub fn judge_after_run(
        &self,
        id: u64,
        value: u64,
        held: u64,
    ) -> Result<Option<Mismatch>, HandleError> {
        match lock_policy::one_reg_rule(self.arch, id) {
            OneRegLockRule::AlwaysWritable => Ok(None),
            OneRegLockRule::LockedAfterRun => {
                let call = VcpuCall::SetOneReg { id, value };
                let context = self.arm64_context(&call)?;
                Ok(lock_policy::judge_one_reg(id, held, value, &context))
            }
        }
    }

    /// The VM's arm64 context, which a judged write needs.
    fn arm64_context(&self, call: &VcpuCall) -> Result<Arm64LockContext, HandleError> {
        self.arm64_context.current().ok_or_else(|| {
            self.error(
                call,
                CallError::Backend(
                    "the lock cannot judge a write to a held register after the run: the VM's \
                     arm64 context was never given (VmHandle::set_arm64_lock_context)"
                        .into(),
                ),
            )
        })
    }

    /// Refuse `call` on the policy's `mismatch`: the backend notes the refusal (the recorder
    /// writes it down, the replay backend checks it), the kernel never sees the call.
    fn refuse(
        &self,
        vcpu: &mut Box<dyn Vcpu>,
        call: &VcpuCall,
        first_run: VcpuId,
        mismatch: Mismatch,
    ) -> HandleError {
        let refusal = LockRefusal {
            vm: self.vm,
            vcpu: self.id,
            first_run,
            errno: mismatch.errno,
            write: call.to_string(),
            differences: mismatch.differences,
            changes: mismatch.changes,
            note: mismatch.note,
        };
        if let Err(e) = vcpu.note_refused(call, &refusal) {
            return self.error(call, e);
        }
        self.error(call, CallError::Refused(Box::new(refusal)))
    }

    /// `KVM_GET_ONE_REG`: the value the kernel holds now.
    pub fn get_one_reg(&self, id: u64) -> Result<u64, HandleError> {
        let mut vcpu = self.backend();
        self.expect_one_reg(&mut vcpu, id)
    }

    fn expect_one_reg(&self, vcpu: &mut Box<dyn Vcpu>, id: u64) -> Result<u64, HandleError> {
        let call = VcpuCall::GetOneReg { id };
        match vcpu.call(&call).map_err(|e| self.error(&call, e))? {
            Reply::Value(value) => Ok(value),
            other => Err(self.unexpected(&call, &other)),
        }
    }

    /// `KVM_GET_CPUID2`: the table the kernel holds now.
    pub fn get_cpuid(&self) -> Result<CpuidTable, HandleError> {
        let mut vcpu = self.backend();
        self.expect_cpuid(&mut vcpu, &VcpuCall::GetCpuid2)
    }

    /// Place the vCPU at the guest's entry point.
    pub fn set_boot_state(&self, entry: u64) -> Result<(), HandleError> {
        self.plain_call(VcpuCall::SetBootState { entry }).map(drop)
    }

    /// `KVM_RUN` once; seals the VM's CPU model first.
    pub fn run(&self) -> Result<VcpuExit, HandleError> {
        self.lock.seal_for_run(self.id);
        match self.backend_call(&VcpuCall::Run)? {
            Reply::Exit(exit) => Ok(exit),
            other => Err(self.unexpected(&VcpuCall::Run, &other)),
        }
    }

    /// `KVM_RUN` once, as a run past its `record_exits` budget ([`VcpuCall::RunCounted`]): the
    /// caller counts its I/O and MMIO exits without decoding them. Live it is the same `KVM_RUN`
    /// as [`VcpuHandle::run`]; a replay may answer with [`VcpuExit::Counted`], many exits at once.
    /// Seals the VM's CPU model first.
    pub fn run_counted(&self) -> Result<VcpuExit, HandleError> {
        self.lock.seal_for_run(self.id);
        match self.backend_call(&VcpuCall::RunCounted)? {
            Reply::Exit(exit) => Ok(exit),
            other => Err(self.unexpected(&VcpuCall::RunCounted, &other)),
        }
    }

    /// Serve the runs whose exits the backend knows already, each exit offered to `take` by
    /// reference until it leaves one (see [`crate::hypervisor::backend::Vcpu::run_known`]); how
    /// many it took. Seals the VM's CPU model first, as [`VcpuHandle::run`] does.
    pub fn run_known(&self, take: &mut dyn FnMut(&VcpuExit) -> TakeExit) -> u64 {
        self.lock.seal_for_run(self.id);
        self.backend().run_known(take)
    }

    /// Whether its backend knows the whole run from here and nothing in it waits (see
    /// [`crate::hypervisor::backend::Vcpu::run_is_at_hand`]).
    pub fn run_is_at_hand(&self) -> bool {
        self.backend().run_is_at_hand()
    }

    /// What makes this vCPU leave `KVM_RUN` from another thread.
    pub fn kicker(&self) -> Arc<dyn Kick> {
        Arc::clone(&self.kick)
    }

    /// A control point: decide what the run thread does next, given what `control` wants.
    ///
    /// The backend has the last word (live: the wish; replay: the recorded decision). When the
    /// decision is to pause or stop but the control plane does not want that (yet), this is a
    /// replay running ahead of its control plane: wait for it to catch up, so the replayed
    /// control plane sees the same states as the recorded one. A decision to run never waits (a
    /// kick the recorded run found nothing to do for).
    pub fn control_point(&self, control: &RunControl) -> Result<RunDecision, HandleError> {
        let wanted = control.wanted();
        let decision = self
            .backend()
            .control_point(wanted)
            .map_err(|source| self.control_error(source))?;
        if decision != RunDecision::Run
            && decision != wanted
            && !control.wait_for(decision, REPLAY_CATCH_UP)
        {
            let failure = ReplayFailure {
                seq: None,
                stream: Stream::Vcpu(self.vm, self.id),
                expected: format!("{} (the recorded decision)", Call::Decision),
                actual: format!("the control plane wants {}", control.wanted()),
                detail: format!(
                    "the recorded run decided to {decision} here; this run's control plane did not \
                     ask for that within {}s",
                    REPLAY_CATCH_UP.as_secs()
                ),
            };
            return Err(self.control_error(CallError::Replay(Box::new(failure))));
        }
        Ok(decision)
    }

    fn control_error(&self, source: CallError) -> HandleError {
        HandleError {
            target: format!("{}/{}", self.vm, self.id),
            call: Call::Decision.to_string(),
            source,
        }
    }

    /// Issue a vCPU call that does not write the CPU model (those must use the typed methods
    /// above, which the lock judges).
    pub fn plain_call(&self, call: VcpuCall) -> Result<Reply, HandleError> {
        if call.is_cpu_model_write() {
            return Err(self.error(
                &call,
                CallError::Backend(
                    "CPU-model writes must go through the lock-aware methods".into(),
                ),
            ));
        }
        if matches!(call, VcpuCall::Run | VcpuCall::RunCounted) {
            return Err(self.error(
                &call,
                CallError::Backend(
                    "KVM_RUN must go through run() or run_counted(), which seal the lock".into(),
                ),
            ));
        }
        self.backend_call(&call)
    }

    fn backend_call(&self, call: &VcpuCall) -> Result<Reply, HandleError> {
        self.backend().call(call).map_err(|e| self.error(call, e))
    }

    fn expect_cpuid(
        &self,
        vcpu: &mut Box<dyn Vcpu>,
        call: &VcpuCall,
    ) -> Result<CpuidTable, HandleError> {
        match vcpu.call(call).map_err(|e| self.error(call, e))? {
            Reply::Cpuid(table) => Ok(table),
            other => Err(self.unexpected(call, &other)),
        }
    }

    fn unexpected(&self, call: &VcpuCall, reply: &Reply) -> HandleError {
        self.error(
            call,
            CallError::Backend(format!("unexpected reply {reply}")),
        )
    }

    fn error(&self, call: &VcpuCall, source: CallError) -> HandleError {
        HandleError {
            target: format!("{}/{}", self.vm, self.id),
            call: call.to_string(),
            source,
        }
    }

    fn backend(&self) -> MutexGuard<'_, Box<dyn Vcpu>> {
        self.vcpu
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::backend::NoKick;
    use std::collections::HashMap;

    /// A vCPU with a register file that, like arm64 6.1, accepts any value at any time, and runs
    /// by returning `HLT`. Only the lock stands between a sealed VM and a changed register.
    #[derive(Default)]
    struct LenientRegisters {
        regs: HashMap<u64, u64>,
        refused: Vec<String>,
    }

    impl Vcpu for LenientRegisters {
        fn id(&self) -> (VmId, VcpuId) {
            (VmId(0), VcpuId(0))
        }
        fn call(&mut self, call: &VcpuCall) -> Result<Reply, CallError> {
            Ok(match call {
                VcpuCall::GetOneReg { id } => Reply::Value(self.regs.get(id).copied().unwrap_or(0)),
                VcpuCall::SetOneReg { id, value } => {
                    self.regs.insert(*id, *value);
                    Reply::Done
                }
                VcpuCall::Run => Reply::Exit(VcpuExit::Hlt),
                _ => Reply::Done,
            })
        }
        fn note_refused(
            &mut self,
            call: &VcpuCall,
            refusal: &LockRefusal,
        ) -> Result<(), CallError> {
            self.refused.push(format!("{call}: {}", refusal.errno));
            Ok(())
        }
        fn kicker(&self) -> Arc<dyn Kick> {
            Arc::new(NoKick)
        }
        fn control_point(&mut self, wanted: RunDecision) -> Result<RunDecision, CallError> {
            Ok(wanted)
        }
    }

    struct OneVcpuVm(GuestMemoryMmap);

    impl Vm for OneVcpuVm {
        fn id(&self) -> VmId {
            VmId(0)
        }
        fn call(&mut self, _: &VmCall) -> Result<Reply, CallError> {
            Ok(Reply::Done)
        }
        fn create_vcpu(&mut self, _: VcpuId) -> Result<Box<dyn Vcpu>, CallError> {
            Ok(Box::<LenientRegisters>::default())
        }
        fn guest_memory(&self) -> &GuestMemoryMmap {
            &self.0
        }
    }

    const ID_AA64PFR0_EL1: u64 = 0x6030_0000_0013_c020;
    const PSCI_VERSION: u64 = 0x6030_0000_0014_0000;

    /// The 6.1-like VM of [`LenientRegisters`]: its kernel lists ID_AA64PFR0_EL1 and
    /// PSCI_VERSION, and reports no writable masks (it does not freeze ID registers itself).
    fn lenient_context() -> Arm64LockContext {
        use crate::model::arm64::{HostView, WritableMasks};
        Arm64LockContext {
            host: HostView {
                register_ids: vec![ID_AA64PFR0_EL1, PSCI_VERSION],
                values: [(ID_AA64PFR0_EL1, PFR0), (PSCI_VERSION, 0x1_0001)].into(),
                masks: WritableMasks::PreWritableIdRegisters,
                writable_imp_id_regs: false,
                probes: Default::default(),
            },
            features: Default::default(),
        }
    }

    /// CSV3 = 1, EL1 = EL0 = 1 (AArch64 only).
    const PFR0: u64 = 1 << 60 | 0x11;

    #[test]
    fn after_the_first_run_a_locked_register_only_takes_its_own_value() {
        let vm = VmHandle::new(
            Box::new(OneVcpuVm(GuestMemoryMmap::new())),
            "lenient",
            GuestArch::Aarch64,
        );
        vm.set_arm64_lock_context(lenient_context()).unwrap();
        assert!(vm.set_arm64_lock_context(lenient_context()).is_err());
        let vcpu = vm.create_vcpu(VcpuId(0)).unwrap();
        // The policy holds the ID register and leaves PSCI_VERSION writable; no caller says so.
        assert_eq!(
            lock_policy::one_reg_rule(vcpu.arch(), ID_AA64PFR0_EL1),
            OneRegLockRule::LockedAfterRun
        );
        // Before the run anything the kernel takes is fine.
        assert_eq!(
            vcpu.set_one_reg(ID_AA64PFR0_EL1, PFR0).unwrap(),
            OneRegWrite {
                held: PFR0,
                after_run: false
            }
        );
        vcpu.run().unwrap();
        // A changed value is refused by vmfleet (EBUSY) although this kernel would take it, and
        // the refusal says whose rule that is...
        let csv3_lowered = PFR0 & !(0xF << 60);
        assert!(
            vcpu.judge_after_run(ID_AA64PFR0_EL1, csv3_lowered, PFR0)
                .unwrap()
                .is_some()
        );
        let refused = vcpu.set_one_reg(ID_AA64PFR0_EL1, csv3_lowered).unwrap_err();
        assert!(refused.is_lock_refusal(), "{refused}");
        assert_eq!(refused.errno(), Some(Errno::EBUSY));
        let text = refused.to_string();
        assert!(text.contains("0x1000000000000011"), "{text}");
        assert!(
            text.contains(&format!("rule: {}", lock_policy::STRICTER_THAN_KERNEL)),
            "{text}"
        );
        assert_eq!(vcpu.get_one_reg(ID_AA64PFR0_EL1).unwrap(), PFR0);
        // ...the identical value is passed on...
        assert!(vcpu.set_one_reg(ID_AA64PFR0_EL1, PFR0).unwrap().after_run);
        // ...and a register that stays writable in the kernel stays writable here.
        let psci = vcpu.set_one_reg(PSCI_VERSION, 0x1_0000).unwrap();
        assert_eq!(psci.held, 0x1_0000);
        // Plain calls cannot write the model behind the lock's back.
        assert!(
            vcpu.plain_call(VcpuCall::SetOneReg {
                id: ID_AA64PFR0_EL1,
                value: 0x2000
            })
            .is_err()
        );
    }

    /// Without the VM's arm64 context the lock cannot judge a held register after the run: the
    /// write fails before the kernel sees it, and says what is missing.
    #[test]
    fn a_sealed_vm_without_its_context_refuses_to_guess() {
        let vm = VmHandle::new(
            Box::new(OneVcpuVm(GuestMemoryMmap::new())),
            "no-context",
            GuestArch::Aarch64,
        );
        let vcpu = vm.create_vcpu(VcpuId(0)).unwrap();
        vcpu.set_one_reg(ID_AA64PFR0_EL1, PFR0).unwrap();
        vcpu.run().unwrap();
        let e = vcpu.set_one_reg(ID_AA64PFR0_EL1, PFR0).unwrap_err();
        assert!(!e.is_lock_refusal());
        assert!(e.to_string().contains("set_arm64_lock_context"), "{e}");
        // A register the lock does not hold needs no context.
        assert!(vcpu.set_one_reg(PSCI_VERSION, 0x1_0000).is_ok());
    }
}
