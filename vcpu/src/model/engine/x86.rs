//! The engine's x86 answers: supported and emulated CPUID from the facts, `KVM_SET_CPUID2` by
//! KVM's acceptance rules and the lock, the measured host rewrites, `KVM_GET_CPUID2` from what is
//! held.

use super::{HostFacts, Prediction, VmState, kernel_error, lock_error, ok, unknown};
use crate::hypervisor::call::Reply;
use crate::hypervisor::cpuid::CpuidTable;
use crate::hypervisor::ids::VcpuId;
use crate::model::lock_policy;
use crate::model::x86::model::{ModelError, check_kernel_rules};

/// `table` without the APIC ids of the CPU that answered `KVM_GET_SUPPORTED_CPUID` (leaf 1
/// EBX\[31:24\], leaves 0xb and 0x1f EDX): they say which host CPU ran the calling thread, not
/// what the host offers, and vmfleet's model overwrites them per vCPU anyway.
pub fn without_caller_apic_id(table: &CpuidTable) -> CpuidTable {
    let mut table = table.clone();
    for entry in &mut table.entries {
        match entry.function {
            0x1 => entry.ebx &= 0x00ff_ffff,
            0xb | 0x1f => entry.edx = 0,
            _ => {}
        }
    }
    table
}

/// `KVM_GET_SUPPORTED_CPUID`.
pub(super) fn supported(facts: &HostFacts) -> Prediction {
    match &facts.x86.supported {
        Some(table) => ok(Reply::Cpuid(table.clone())),
        None => unknown("the fingerprint has no supported CPUID table"),
    }
}

/// `KVM_GET_EMULATED_CPUID`.
pub(super) fn emulated(facts: &HostFacts) -> Prediction {
    match &facts.x86.emulated {
        Some(table) => ok(Reply::Cpuid(table.clone())),
        None => unknown("the fingerprint has no emulated CPUID table"),
    }
}

/// What the kernel holds after accepting `table`: the measured rewrites applied.
fn held_after(facts: &HostFacts, table: &CpuidTable) -> CpuidTable {
    let mut held = table.clone();
    for rewrite in &facts.x86.rewrites {
        for entry in held
            .entries
            .iter_mut()
            .filter(|e| e.function == rewrite.function && e.index == rewrite.index)
        {
            let reg = entry.reg_mut(rewrite.register);
            *reg = (*reg & !rewrite.mask) | (rewrite.value & rewrite.mask);
        }
    }
    held
}

/// `KVM_SET_CPUID2`: after the first run, the lock (and KVM) take only the identical table;
/// before it, KVM's acceptance rules, then the table is held with the host's rewrites.
pub(super) fn set_cpuid2(
    facts: &HostFacts,
    vm: &mut VmState,
    vcpu: VcpuId,
    table: &CpuidTable,
) -> Prediction {
    let ran = vm.ran;
    let state = vm.vcpus.entry(vcpu).or_default();
    if ran {
        let held = state.cpuid.clone().unwrap_or_default();
        return match lock_policy::judge_cpuid(&held, table) {
            Some(mismatch) => lock_error(mismatch.errno),
            None => ok(Reply::Done),
        };
    }
    match check_kernel_rules(table) {
        Err(ModelError::KernelRule { errno, .. }) => kernel_error(errno),
        Err(other) => unknown(format!("KVM_SET_CPUID2: {other}")),
        Ok(()) => {
            state.cpuid = Some(held_after(facts, table));
            ok(Reply::Done)
        }
    }
}

/// `KVM_GET_CPUID2`: the table held (none yet: an empty table).
pub(super) fn get_cpuid2(vm: &mut VmState, vcpu: VcpuId) -> Prediction {
    let held = vm.vcpus.get(&vcpu).and_then(|v| v.cpuid.clone());
    ok(Reply::Cpuid(held.unwrap_or_default()))
}
