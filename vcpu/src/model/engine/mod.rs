//! The model backend's engine: a pure per-VM/vCPU state machine that answers each CPU-model call
//! the way the kernel (and vmfleet's pre-run lock) did on the host a fingerprint describes.
//!
//! Why: with a host's facts alone (its fingerprint, no `/dev/kvm`), vmfleet can say what that
//! host would answer: `vmfleet replay --model` checks a trace against it, `vmfleet model judge`
//! answers scripts. The facts are plain data ([`HostFacts`]); the supervisor reads them from a
//! fingerprint document. The rules are the models' own: x86 [`crate::model::x86::model::check_kernel_rules`]
//! and [`crate::model::lock_policy::judge_cpuid`]; arm64
//! [`crate::model::arm64::validate::judge_before_run`] and
//! [`crate::model::lock_policy::judge_one_reg`] /
//! [`crate::model::arm64::validate::judge_after_run`].
//!
//! Judged (CPU-model) calls: `GET_SUPPORTED_CPUID`, `GET_EMULATED_CPUID`, `SET_CPUID2`,
//! `GET_CPUID2` (x86);
//! `ARM_PREFERRED_TARGET`, `ARM_GET_REG_WRITABLE_MASKS`, `ARM_VCPU_INIT`, `GET_REG_LIST`,
//! `GET_ONE_REG` and `SET_ONE_REG` of CPU-model registers (ID registers, cache description,
//! MPIDR_EL1, firmware registers and bitmaps) (arm64); `CHECK_EXTENSION` of a capability the
//! fingerprint lists. Every other call (API version, memory, vCPU and VM creation and
//! destruction, `ENABLE_CAP`, boot state, `RUN`, finalize, PMU init, core registers, decisions)
//! is answered trivially as a success and not judged ([`Prediction::NotJudged`]); a `RUN` marks
//! the VM as having run, `ENABLE_CAP` 239 makes the implementation registers writable.
//!
//! arm64 first run: on a kernel that reports writable masks (6.7 and later), the first `RUN` of
//! a VM without an in-kernel irqchip (vmfleet never creates one) clears the vGIC-dependent fields
//! (`ClearedAtFirstRunWithoutVgic`: ID_AA64PFR0_EL1.GIC, ID_PFR1_EL1.GIC, …) of the values the VM
//! holds; older kernels keep them.
//!
//! x86 host rewrites: only the bits the fingerprint measured (one `SET_CPUID2` + `GET_CPUID2`
//! pair) are predicted: after a `SET_CPUID2`, each measured bit (or whole register) of the same
//! leaf, subleaf and register is set to the value the host held; every other bit is held as
//! written.
//!
//! Must not: do I/O (it is part of [`crate::model`]).

mod arm64;
pub mod baseline;
pub mod migrate;
pub mod template;
mod x86;

use crate::hypervisor::call::{
    Call, Failure, Origin, Outcome, Reply, SystemCall, VcpuCall, VmCall,
};
use crate::hypervisor::cpuid::{CpuidReg, CpuidTable};
use crate::hypervisor::errno::Errno;
use crate::hypervisor::ids::{GuestArch, Stream, VcpuId, VmId};
use std::collections::BTreeMap;

pub use x86::without_caller_apic_id;

/// One measured host rewrite of x86 CPUID: after `KVM_SET_CPUID2`, the bits of `mask` in
/// `register` of leaf `function`, subleaf `index` read back as `value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidRewrite {
    /// The leaf.
    pub function: u32,
    /// The subleaf.
    pub index: u32,
    /// The register.
    pub register: CpuidReg,
    /// The bits rewritten (`u32::MAX` for a whole register).
    pub mask: u32,
    /// Their value after the write (only the bits of `mask` count).
    pub value: u32,
}

/// What the engine knows of an x86 host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct X86HostFacts {
    /// `KVM_GET_SUPPORTED_CPUID`, without the answering CPU's APIC ids
    /// ([`without_caller_apic_id`]); `None` if unknown.
    pub supported: Option<CpuidTable>,
    /// `KVM_GET_EMULATED_CPUID`; `None` if unknown.
    pub emulated: Option<CpuidTable>,
    /// The measured rewrites after `KVM_SET_CPUID2`.
    pub rewrites: Vec<CpuidRewrite>,
}

/// What the engine knows of an arm64 host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Arm64HostFacts {
    /// `KVM_ARM_PREFERRED_TARGET`'s target.
    pub preferred_target: Option<u32>,
    /// The `kvm_vcpu_init.features[0]` the register list and values were read with.
    pub init_features: Option<u32>,
    /// `KVM_GET_REG_LIST` of such a vCPU, in the kernel's order.
    pub reg_list: Option<Vec<u64>>,
    /// The values of CPU-model registers right after `KVM_ARM_VCPU_INIT` (limits and firmware
    /// defaults), by id (MPIDR_EL1's is vCPU 0's: other vCPUs' follow from their index).
    pub values: BTreeMap<u64, u64>,
    /// `KVM_ARM_GET_REG_WRITABLE_MASKS`; `None` on a kernel without it (or when unrecorded).
    pub masks: Option<Vec<u64>>,
    /// The register list and values of vCPUs initialised with other feature sets.
    pub other_inits: Vec<Arm64InitFacts>,
    /// The kernel's answers to probe writes (the rules no capability shows), as the
    /// fingerprint recorded them; unmeasured ones are judged by vmfleet's documented default.
    pub probes: crate::model::arm64::host::KernelProbes,
    /// Whether `values` (and each other init's) hold every CPU-model register the host lists
    /// though `reg_list` is unknown (`None`): a Firecracker fingerprint, whose dump has every
    /// register `KVM_GET_REG_LIST` gives but PC and two timer registers. The vCPU calls still
    /// answer `KVM_GET_REG_LIST` as unknown; [`migrate`] judges which registers the host has
    /// from the values (else it refuses to compare without a list).
    pub registers_from_values: bool,
}

/// What a vCPU initialised with one feature set reports: its register list and the values of its
/// CPU-model registers right after the init.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Arm64InitFacts {
    /// `kvm_vcpu_init.features[0]`.
    pub init_features: u32,
    /// `KVM_GET_REG_LIST`, in the kernel's order.
    pub reg_list: Option<Vec<u64>>,
    /// The values right after the init, by id.
    pub values: BTreeMap<u64, u64>,
}

/// Everything the engine answers from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// The guest architecture.
    pub arch: GuestArch,
    /// `KVM_CHECK_EXTENSION` answers: (capability, value).
    pub capabilities: Vec<(u32, u64)>,
    /// The x86 facts (empty on arm64).
    pub x86: X86HostFacts,
    /// The arm64 facts (empty on x86).
    pub arm64: Arm64HostFacts,
}

/// The engine's answer to one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// A CPU-model call: what the kernel (or the lock) would answer.
    Judged(Outcome),
    /// A CPU-model call whose answer depends on a fact the host facts lack.
    Unknown {
        /// Which fact is missing.
        why: String,
    },
    /// Not a CPU-model call: answered as a success, not judged.
    NotJudged,
}

/// The state of one vCPU.
#[derive(Clone, Debug, Default)]
struct VcpuState {
    /// x86: the table the kernel holds (after the host's rewrites).
    cpuid: Option<CpuidTable>,
    /// arm64: `kvm_vcpu_init.features[0]` once initialised.
    init: Option<u32>,
    /// arm64: per-vCPU registers written (MPIDR_EL1, the cache description).
    regs: BTreeMap<u64, u64>,
}

/// The state of one VM.
#[derive(Clone, Debug, Default)]
struct VmState {
    /// Whether a vCPU has entered `KVM_RUN`.
    ran: bool,
    /// Whether `KVM_CAP_ARM_WRITABLE_IMP_ID_REGS` was enabled.
    writable_imp_id_regs: bool,
    /// arm64: VM-wide registers written (ID registers, firmware registers, bitmaps).
    regs: BTreeMap<u64, u64>,
    /// The vCPUs.
    vcpus: BTreeMap<VcpuId, VcpuState>,
}

/// The engine: host facts plus the state of every VM and vCPU seen so far.
#[derive(Clone, Debug)]
pub struct Engine {
    facts: HostFacts,
    vms: BTreeMap<VmId, VmState>,
}

fn kernel_error(errno: Errno) -> Prediction {
    Prediction::Judged(Err(Failure {
        errno,
        origin: Origin::Kernel,
    }))
}

fn lock_error(errno: Errno) -> Prediction {
    Prediction::Judged(Err(Failure {
        errno,
        origin: Origin::Lock,
    }))
}

fn ok(reply: Reply) -> Prediction {
    Prediction::Judged(Ok(reply))
}

fn unknown(why: impl Into<String>) -> Prediction {
    Prediction::Unknown { why: why.into() }
}

impl Engine {
    /// A fresh engine: no VM exists yet.
    pub fn new(facts: HostFacts) -> Engine {
        Engine {
            facts,
            vms: BTreeMap::new(),
        }
    }

    /// The facts it answers from.
    pub fn facts(&self) -> &HostFacts {
        &self.facts
    }

    /// Answer `call` made on `stream`, and update the state as the answer implies (a write the
    /// engine predicts accepted is held; a write it refuses changes nothing).
    pub fn call(&mut self, stream: Stream, call: &Call) -> Prediction {
        if let Some(arch) = arch_of(call) {
            if arch != self.facts.arch {
                // The other architecture's ioctl: the kernel does not know it.
                return kernel_error(Errno::ENOTTY);
            }
        }
        match (call, stream) {
            (Call::System(SystemCall::CheckExtension { cap }), _) => self
                .facts
                .capabilities
                .iter()
                .find(|(c, _)| c == cap)
                .map_or(Prediction::NotJudged, |&(_, v)| ok(Reply::Value(v))),
            (Call::System(SystemCall::GetSupportedCpuid), _) => x86::supported(&self.facts),
            (Call::System(SystemCall::GetEmulatedCpuid), _) => x86::emulated(&self.facts),
            (Call::System(SystemCall::CreateVm { vm, .. }), _) => {
                self.vms.insert(*vm, VmState::default());
                Prediction::NotJudged
            }
            (Call::Vm(call), Stream::Vm(vm)) => self.vm_call(vm, call),
            (Call::Vcpu(call), Stream::Vcpu(vm, vcpu)) => self.vcpu_call(vm, vcpu, call),
            _ => Prediction::NotJudged,
        }
    }

    fn vm_call(&mut self, vm: VmId, call: &VmCall) -> Prediction {
        let state = self.vms.entry(vm).or_default();
        match call {
            VmCall::CreateVcpu { vcpu } => {
                state.vcpus.insert(*vcpu, VcpuState::default());
                Prediction::NotJudged
            }
            VmCall::EnableCap { cap, .. } => {
                if *cap == crate::hypervisor::abi::KVM_CAP_ARM_WRITABLE_IMP_ID_REGS {
                    state.writable_imp_id_regs = true;
                }
                Prediction::NotJudged
            }
            VmCall::ArmPreferredTarget => match self.facts.arm64.preferred_target {
                Some(target) => ok(Reply::VcpuInit {
                    target,
                    features: [0; 7],
                }),
                None => unknown("the fingerprint has no preferred target"),
            },
            VmCall::ArmGetRegWritableMasks => match &self.facts.arm64.masks {
                Some(masks) => ok(Reply::Masks(masks.clone())),
                None => unknown("the fingerprint has no writable masks"),
            },
            VmCall::AddMemory { .. } | VmCall::Destroy => Prediction::NotJudged,
        }
    }

    fn vcpu_call(&mut self, vm: VmId, vcpu: VcpuId, call: &VcpuCall) -> Prediction {
        let facts = &self.facts;
        let state = self.vms.entry(vm).or_default();
        match call {
            VcpuCall::Run | VcpuCall::RunCounted => {
                if !state.ran && facts.arch == GuestArch::Aarch64 {
                    arm64::first_run(facts, state, vcpu);
                }
                state.ran = true;
                Prediction::NotJudged
            }
            VcpuCall::SetCpuid2 { table } => x86::set_cpuid2(facts, state, vcpu, table),
            VcpuCall::GetCpuid2 => x86::get_cpuid2(state, vcpu),
            VcpuCall::ArmVcpuInit { target, features } => {
                arm64::vcpu_init(facts, state, vcpu, *target, features)
            }
            // x86 has no CPU-model registers (its model is the CPUID table).
            VcpuCall::GetRegList | VcpuCall::GetOneReg { .. } | VcpuCall::SetOneReg { .. }
                if facts.arch != GuestArch::Aarch64 =>
            {
                Prediction::NotJudged
            }
            VcpuCall::GetRegList => arm64::reg_list(facts, state, vcpu),
            VcpuCall::GetOneReg { id } => arm64::get_one_reg(facts, state, vcpu, *id),
            VcpuCall::SetOneReg { id, value } => {
                arm64::set_one_reg(facts, state, (vm, vcpu), *id, *value)
            }
            VcpuCall::ArmVcpuFinalize { .. }
            | VcpuCall::SetBootState { .. }
            | VcpuCall::Destroy
            | VcpuCall::ArmPmuV3Init => Prediction::NotJudged,
        }
    }
}

/// The architecture whose ioctl `call` is, for the calls that exist on one only.
fn arch_of(call: &Call) -> Option<GuestArch> {
    match call {
        Call::System(SystemCall::GetSupportedCpuid | SystemCall::GetEmulatedCpuid)
        | Call::Vcpu(VcpuCall::SetCpuid2 { .. } | VcpuCall::GetCpuid2) => Some(GuestArch::X86_64),
        Call::Vm(VmCall::ArmPreferredTarget | VmCall::ArmGetRegWritableMasks)
        | Call::Vcpu(
            VcpuCall::ArmVcpuInit { .. }
            | VcpuCall::ArmVcpuFinalize { .. }
            | VcpuCall::ArmPmuV3Init,
        ) => Some(GuestArch::Aarch64),
        _ => None,
    }
}

/// Whether `predicted` says the same as `recorded` for `call`: equal outcomes, except that a
/// `GET_SUPPORTED_CPUID` reply is compared without the answering CPU's APIC ids (they say which
/// host CPU ran the caller, not what the host offers; the fingerprint drops them).
pub fn agrees(call: &Call, predicted: &Outcome, recorded: &Outcome) -> bool {
    match (call, predicted, recorded) {
        (Call::System(SystemCall::GetSupportedCpuid), Ok(Reply::Cpuid(p)), Ok(Reply::Cpuid(r))) => {
            without_caller_apic_id(p) == without_caller_apic_id(r)
        }
        _ => predicted == recorded,
    }
}

#[cfg(test)]
mod tests;
