//! The engine's arm64 answers: `KVM_ARM_VCPU_INIT`, `KVM_GET_REG_LIST`, and `KVM_GET_ONE_REG` /
//! `KVM_SET_ONE_REG` of CPU-model registers, judged by the arm64 model's rules (before the first
//! run [`judge_before_run`], after it the lock's [`lock_policy::judge_one_reg`] and then
//! [`judge_after_run`]).

use super::{HostFacts, Prediction, VmState, kernel_error, lock_error, ok, unknown};
use crate::hypervisor::call::Reply;
use crate::hypervisor::errno::Errno;
use crate::hypervisor::ids::{GuestArch, VcpuId, VmId};
use crate::model::arm64::catalog::{self, RegisterRole};
use crate::model::arm64::validate::{Arm64Rule, judge_after_run, judge_before_run};
use crate::model::arm64::{
    HostView, RegClass, VcpuFeature, VcpuFeatureSet, Verdict, WritableMasks, reg_id,
};
use crate::model::arm64::{SysReg, fields};
use crate::model::lock_policy::{self, Arm64LockContext, OneRegLockRule};
use std::collections::BTreeMap;

/// Whether register `id` is held per vCPU (MPIDR_EL1, the cache description) rather than per VM.
fn per_vcpu(id: u64) -> bool {
    match reg_id::classify(id) {
        RegClass::SysReg(reg) => matches!(
            catalog::by_reg(reg).map(|r| r.role),
            Some(RegisterRole::Affinity | RegisterRole::CacheLevels)
        ),
        RegClass::Demux => true,
        _ => false,
    }
}

/// MPIDR_EL1 as KVM resets it for vCPU `vcpu` (`reset_mpidr`: Aff0 = id\[3:0\], Aff1 =
/// id\[11:4\], Aff2 = id\[19:12\]), on top of the bits vCPU 0's value has above the affinity.
fn reset_mpidr(vcpu0: u64, vcpu: VcpuId) -> u64 {
    let id = u64::from(vcpu.0);
    (vcpu0 & !0x00ff_ffff) | (id & 0xf) | ((id >> 4) & 0xff) << 8 | ((id >> 12) & 0xff) << 16
}

pub(super) fn features_of(bits: u32) -> VcpuFeatureSet {
    let features: Vec<VcpuFeature> = VcpuFeature::ALL
        .into_iter()
        .filter(|f| bits & (1 << f.bit()) != 0)
        .collect();
    VcpuFeatureSet::of(&features)
}

/// The register list and initial values for a vCPU initialised with `init`, if the facts have
/// that feature set.
/// A feature set's facts: its register list (if known) and its values after init.
pub(super) type InitView<'a> = (Option<&'a Vec<u64>>, &'a BTreeMap<u64, u64>);

pub(super) fn init_facts(facts: &HostFacts, init: u32) -> Option<InitView<'_>> {
    let arm64 = &facts.arm64;
    if arm64.init_features == Some(init) {
        return Some((arm64.reg_list.as_ref(), &arm64.values));
    }
    arm64
        .other_inits
        .iter()
        .find(|o| o.init_features == init)
        .map(|o| (o.reg_list.as_ref(), &o.values))
}

fn vcpu_facts<'a>(facts: &'a HostFacts, vm: &VmState, vcpu: VcpuId) -> Option<InitView<'a>> {
    vm.vcpus
        .get(&vcpu)
        .and_then(|v| v.init)
        .and_then(|init| init_facts(facts, init))
}

/// At the VM's first run, on a kernel with writable ID registers (it reports masks), KVM clears
/// the vGIC-dependent fields of the ID registers of a VM without an in-kernel irqchip.
pub(super) fn first_run(facts: &HostFacts, vm: &mut VmState, vcpu: VcpuId) {
    if facts.arm64.masks.is_none() {
        return;
    }
    let Some((_, values)) = vcpu_facts(facts, vm, vcpu) else {
        return;
    };
    let ids: Vec<u64> = values.keys().chain(vm.regs.keys()).copied().collect();
    for id in ids {
        let Ok(reg) = SysReg::from_kvm_reg_id(id) else {
            continue;
        };
        let mask = fields::first_run_mutable_mask(reg);
        if mask == 0 || per_vcpu(id) {
            continue;
        }
        if let Some(value) = held(facts, vm, vcpu, id) {
            vm.regs.insert(id, value & !mask);
        }
    }
}

/// The value the kernel holds for `id` on `vcpu` now, if known.
fn held(facts: &HostFacts, vm: &VmState, vcpu: VcpuId, id: u64) -> Option<u64> {
    let written = if per_vcpu(id) {
        vm.vcpus.get(&vcpu).and_then(|v| v.regs.get(&id))
    } else {
        vm.regs.get(&id)
    };
    if let Some(&value) = written {
        return Some(value);
    }
    let (_, values) = vcpu_facts(facts, vm, vcpu)?;
    let initial = values.get(&id).copied()?;
    Some(if id == catalog::MPIDR_EL1.kvm_reg_id() {
        reset_mpidr(initial, vcpu)
    } else {
        initial
    })
}

fn host_view(facts: &HostFacts, vm: &VmState, vcpu: VcpuId) -> HostView {
    let (list, values) = vcpu_facts(facts, vm, vcpu).unwrap_or((None, &facts.arm64.values));
    let mut values = values.clone();
    let mpidr = catalog::MPIDR_EL1.kvm_reg_id();
    if let Some(v) = values.get_mut(&mpidr) {
        *v = reset_mpidr(*v, vcpu);
    }
    view_of(facts, list, values, vm.writable_imp_id_regs)
}

/// Whether the host `facts` describe offers `KVM_CAP_ARM_WRITABLE_IMP_ID_REGS` (239): a VM that
/// enables it may set MIDR_EL1, REVIDR_EL1 and AIDR_EL1.
pub(super) fn offers_writable_imp_id_regs(facts: &HostFacts) -> bool {
    facts
        .capabilities
        .iter()
        .any(|&(cap, v)| cap == crate::hypervisor::abi::KVM_CAP_ARM_WRITABLE_IMP_ID_REGS && v != 0)
}

/// The host view of a vCPU of the host `facts` describe whose register list and values after
/// init are `list` and `values`: with the host's writable masks (the pre-6.7 rule without them)
/// and its kernel probes.
pub(super) fn view_of(
    facts: &HostFacts,
    list: Option<&Vec<u64>>,
    values: BTreeMap<u64, u64>,
    writable_imp_id_regs: bool,
) -> HostView {
    let masks = facts
        .arm64
        .masks
        .as_deref()
        .and_then(|m| WritableMasks::from_reported(m).ok())
        .unwrap_or(WritableMasks::PreWritableIdRegisters);
    HostView {
        register_ids: list.cloned().unwrap_or_default(),
        values,
        masks,
        writable_imp_id_regs,
        probes: facts.arm64.probes,
    }
}

/// `KVM_ARM_VCPU_INIT`: the preferred target and a consistent feature set are accepted.
pub(super) fn vcpu_init(
    facts: &HostFacts,
    vm: &mut VmState,
    vcpu: VcpuId,
    target: u32,
    features: &[u32; 7],
) -> Prediction {
    let Some(preferred) = facts.arm64.preferred_target else {
        // The answer is unknown; the vCPU's later calls are judged as if the kernel took the
        // target (a partial fingerprint, Firecracker's, must not make each of them ENOEXEC).
        if features_of(features[0]).conflict().is_none() {
            vm.vcpus.entry(vcpu).or_default().init = Some(features[0]);
        }
        return unknown("the fingerprint has no preferred target");
    };
    if target != preferred {
        return kernel_error(Errno::EINVAL);
    }
    if let Some(conflict) = features_of(features[0]).conflict() {
        return kernel_error(conflict.errno());
    }
    vm.vcpus.entry(vcpu).or_default().init = Some(features[0]);
    ok(Reply::Done)
}

/// `KVM_GET_REG_LIST`: the fingerprint's list, for a vCPU initialised with its features.
pub(super) fn reg_list(facts: &HostFacts, vm: &mut VmState, vcpu: VcpuId) -> Prediction {
    let Some(init) = vm.vcpus.get(&vcpu).and_then(|v| v.init) else {
        return kernel_error(Errno::ENOEXEC);
    };
    match init_facts(facts, init) {
        Some((Some(list), _)) => ok(Reply::RegList(list.clone())),
        Some((None, _)) => unknown("the fingerprint has no register list"),
        None => unknown(format!(
            "the fingerprint has no vCPU initialised with features {init:#x}"
        )),
    }
}

/// Whether the call is about a CPU-model register of an uninitialised or unlisting vCPU: the
/// kernel's answer before any rule (`ENOEXEC` before `KVM_ARM_VCPU_INIT`, `ENOENT` for an id the
/// register list lacks).
fn precheck(facts: &HostFacts, vm: &VmState, vcpu: VcpuId, id: u64) -> Option<Prediction> {
    if vm.vcpus.get(&vcpu).and_then(|v| v.init).is_none() {
        return Some(kernel_error(Errno::ENOEXEC));
    }
    match vcpu_facts(facts, vm, vcpu) {
        Some((Some(list), _)) if !list.contains(&id) => Some(kernel_error(Errno::ENOENT)),
        _ => None,
    }
}

/// `KVM_GET_ONE_REG` of a CPU-model register: what was written, else its value after init.
pub(super) fn get_one_reg(
    facts: &HostFacts,
    vm: &mut VmState,
    vcpu: VcpuId,
    id: u64,
) -> Prediction {
    if !lock_policy::is_model_register(GuestArch::Aarch64, id) {
        return Prediction::NotJudged;
    }
    if let Some(answer) = precheck(facts, vm, vcpu, id) {
        return answer;
    }
    match held(facts, vm, vcpu, id) {
        Some(value) => ok(Reply::Value(value)),
        None => unknown(format!(
            "the fingerprint has no value of {}",
            reg_id::describe(id)
        )),
    }
}

/// `KVM_SET_ONE_REG` of a CPU-model register.
pub(super) fn set_one_reg(
    facts: &HostFacts,
    vm: &mut VmState,
    (vm_id, vcpu): (VmId, VcpuId),
    id: u64,
    value: u64,
) -> Prediction {
    if !lock_policy::is_model_register(GuestArch::Aarch64, id) {
        return Prediction::NotJudged;
    }
    if let Some(answer) = precheck(facts, vm, vcpu, id) {
        return answer;
    }
    // A vCPU initialised with features the fingerprint never measured: its register list and
    // limits are not known, and a write is judged against them.
    if let Some(init) = vm.vcpus.get(&vcpu).and_then(|v| v.init)
        && init_facts(facts, init).is_none()
    {
        return unknown(format!(
            "the fingerprint has no vCPU initialised with features {init:#x}"
        ));
    }
    let host = host_view(facts, vm, vcpu);
    let features = features_of(vm.vcpus.get(&vcpu).and_then(|v| v.init).unwrap_or(0));
    let current = held(facts, vm, vcpu, id);
    let verdict = match (vm.ran, current) {
        (true, Some(current)) => {
            // vmfleet's lock stands before the kernel, except on a kernel probe's scratch VM,
            // whose lock never seals (it asks the kernel what it answers after a run).
            if lock_policy::one_reg_rule(GuestArch::Aarch64, id) == OneRegLockRule::LockedAfterRun
                && !vm_id.is_kernel_probe()
            {
                let context = Arm64LockContext {
                    host: host.clone(),
                    features,
                };
                if let Some(mismatch) = lock_policy::judge_one_reg(id, current, value, &context) {
                    return lock_error(mismatch.errno);
                }
            }
            match judge_after_run(id, value, current, &host, features) {
                // The change only vmfleet's own rule refuses (a kernel that does not freeze the
                // register): on a kernel probe's VM it reaches the kernel, which judges it as
                // before the run.
                Verdict::Refused(refusal)
                    if vm_id.is_kernel_probe()
                        && matches!(
                            refusal.rule,
                            Arm64Rule::ChangedAfterRun {
                                kernel_enforces: false
                            }
                        ) =>
                {
                    judge_before_run(id, value, &host, features)
                }
                verdict => verdict,
            }
        }
        _ => judge_before_run(id, value, &host, features),
    };
    match verdict {
        Verdict::Accepted { readback } => {
            store(vm, vcpu, id, readback);
            ok(Reply::Done)
        }
        Verdict::Refused(refusal) => kernel_error(refusal.errno),
        // Every set handler takes the value it holds.
        Verdict::Unjudged { .. } if current == Some(value) => ok(Reply::Done),
        Verdict::Unjudged { why } => unknown(why),
    }
}

fn store(vm: &mut VmState, vcpu: VcpuId, id: u64, value: u64) {
    if per_vcpu(id) {
        vm.vcpus.entry(vcpu).or_default().regs.insert(id, value);
    } else {
        vm.regs.insert(id, value);
    }
}
