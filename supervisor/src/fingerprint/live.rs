//! The facts of a fingerprint asked of this host: the header's host facts
//! ([`crate::host::fingerprint`], which on x86 include `KVM_GET_EMULATED_CPUID`, as a trace's
//! header of format 2 does) and the same calls a recorded run makes, on a scratch VM through
//! the handles (so the pre-run lock sees every write, as in a run).
//!
//! x86: `KVM_GET_SUPPORTED_CPUID`, then the default model (nothing hidden, one vCPU) built from
//! it written to a scratch vCPU and read back — what the first vCPU of the default fleet does;
//! then two probes of the bits the host forces, each on its own scratch vCPU: the default model
//! with every bit of every feature register cleared, and with every one set (bits the guest's
//! state drives left alone). A bit that comes back otherwise is one the host rewrites whatever it
//! is given (a nested PVM host sets features of leaves 0x1, 0x7 and 0xD); the default model alone
//! shows only the bits it happened to write differently. A fleet never asks these (a trace's
//! fingerprint has no `forced_bits`).
//! arm64: the scratch VM's `KVM_ARM_PREFERRED_TARGET`, `KVM_ARM_VCPU_INIT` with the default
//! model's features, `KVM_GET_REG_LIST`, every model register read before any write, and the
//! writable masks when the kernel has them — what a VM with the default model does first; and
//! the EL0/EL1 floor probe (`crate::fleet::probe`, its own scratch VM), which a fleet asks only
//! when a plan lowers EL0 or EL1.

use super::{Arm64Facts, Facts, X86Facts};
use anyhow::{Context, Result, bail};
use vcpu::hypervisor::cpuid::CpuidTable;
use vcpu::hypervisor::kvm::KvmHypervisor;
use vcpu::model::arm64::Arm64ModelSpec;
use vcpu::model::arm64::host::{KernelProbe, KernelProbes};
use vcpu::model::lock_policy;
use vcpu::model::x86::model::X86CpuModel;
use vcpu::{
    GuestArch, Hypervisor, Reply, SystemCall, VcpuCall, VcpuHandle, VcpuId, VmCall, VmHandle, VmId,
};

/// The name the scratch VM is created with.
const SCRATCH: &str = "host-fingerprint";

/// `KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES`: nonzero when the kernel answers
/// `KVM_ARM_GET_REG_WRITABLE_MASKS`.
const CAP_MASK_RANGES: u32 = 230;

/// Ask this host, through `kvm`, for every fact of its fingerprint. Errors name the call that
/// failed.
pub fn facts(kvm: &KvmHypervisor) -> Result<Facts> {
    let arch = kvm.arch();
    let host = crate::host::fingerprint(kvm);
    let (x86, arm64) = match arch {
        GuestArch::X86_64 => (x86_facts(kvm)?, Arm64Facts::default()),
        GuestArch::Aarch64 => (X86Facts::default(), arm64_facts(kvm)?),
    };
    Ok(Facts {
        arch,
        host,
        x86,
        arm64,
    })
}

/// A scratch VM with one vCPU, through the handles.
fn scratch(kvm: &KvmHypervisor) -> Result<(VmHandle, VcpuHandle)> {
    let vm = kvm
        .create_vm(VmId(0), SCRATCH)
        .context("KVM_CREATE_VM of a scratch VM")?;
    let vm = VmHandle::new(vm, SCRATCH, kvm.arch());
    let vcpu = vm
        .create_vcpu(VcpuId(0))
        .context("KVM_CREATE_VCPU of a scratch vCPU")?;
    Ok((vm, vcpu))
}

fn destroy(vm: &VmHandle, vcpu: &VcpuHandle) {
    // Closing: nothing to learn from a failure here.
    let _ = vcpu.plain_call(VcpuCall::Destroy);
    let _ = vm.call(VmCall::Destroy);
}

fn x86_facts(kvm: &KvmHypervisor) -> Result<X86Facts> {
    let supported: CpuidTable = match kvm.call(&SystemCall::GetSupportedCpuid) {
        Ok(Reply::Cpuid(table)) => table,
        Ok(other) => bail!("KVM_GET_SUPPORTED_CPUID answered {other}, not a CPUID table"),
        Err(e) => bail!("KVM_GET_SUPPORTED_CPUID failed: {e}"),
    };
    let (written, held) = default_model_write(kvm, &supported)?;
    let mut probes = Vec::new();
    for all_set in [false, true] {
        let probe = forced_bits_probe(&written, all_set);
        // A kernel that refuses a probe table shows nothing forced by it: not an error.
        if let Ok(held) = write_and_read(kvm, &probe) {
            probes.push((probe, held));
        }
    }
    Ok(X86Facts {
        supported: Some(supported),
        written: Some(written),
        held: Some(held),
        probes,
    })
}

/// `table` with every bit of every feature register (the catalog's) set or cleared, except the
/// bits the guest's own state drives.
fn forced_bits_probe(table: &CpuidTable, all_set: bool) -> CpuidTable {
    let mut probe = table.clone();
    for entry in &mut probe.entries {
        for reg in vcpu::hypervisor::cpuid::CpuidReg::ALL {
            if !vcpu::model::engine::template::is_feature_register(entry.function, entry.index, reg)
            {
                continue;
            }
            let keep = vcpu::model::x86::drift::runtime_mask(entry, reg);
            let value = entry.reg_mut(reg);
            *value = *value & keep | if all_set { !keep } else { 0 };
        }
    }
    probe
}

/// Write `table` to a fresh scratch vCPU through the lock's handle and read it back.
fn write_and_read(kvm: &KvmHypervisor, table: &CpuidTable) -> Result<CpuidTable> {
    let (vm, vcpu) = scratch(kvm)?;
    let write = vcpu
        .set_cpuid(table)
        .context("KVM_SET_CPUID2 then KVM_GET_CPUID2 on the scratch vCPU");
    destroy(&vm, &vcpu);
    Ok(write?.held)
}

/// Write the default model (nothing hidden, one vCPU) built from `supported` to a scratch vCPU
/// through the lock's handle and read it back: the table written and the one the kernel holds.
/// (`vmfleet host` measures what guests are given with it too.)
pub fn default_model_write(
    kvm: &KvmHypervisor,
    supported: &CpuidTable,
) -> Result<(CpuidTable, CpuidTable)> {
    let written = X86CpuModel::default()
        .build(supported, 0, 1)
        .context("building the default model from the supported table")?
        .table;
    let held = write_and_read(kvm, &written)?;
    Ok((written, held))
}

fn arm64_facts(kvm: &KvmHypervisor) -> Result<Arm64Facts> {
    let mask_ranges = match kvm.call(&SystemCall::CheckExtension {
        cap: CAP_MASK_RANGES,
    }) {
        Ok(Reply::Value(v)) => v,
        _ => 0,
    };
    let (vm, vcpu) = scratch(kvm)?;
    let facts = arm64_on(&vm, &vcpu, mask_ranges);
    destroy(&vm, &vcpu);
    let mut probes = KernelProbes::NOT_MEASURED;
    for probe in KernelProbe::ALL {
        if let Some(answer) = crate::fleet::probe::measure(kvm, probe)? {
            answer.record(probe, &mut probes);
        }
    }
    Ok(Arm64Facts { probes, ..facts? })
}

fn arm64_on(vm: &VmHandle, vcpu: &VcpuHandle, mask_ranges: u64) -> Result<Arm64Facts> {
    let target = match vm.call(VmCall::ArmPreferredTarget) {
        Ok(Reply::VcpuInit { target, .. }) => target,
        Ok(other) => bail!("KVM_ARM_PREFERRED_TARGET answered {other}, not a kvm_vcpu_init"),
        Err(e) => bail!("KVM_ARM_PREFERRED_TARGET on the scratch VM failed: {e}"),
    };
    let mut features = [0u32; 7];
    features[0] = Arm64ModelSpec::default().features.bits();
    vcpu.plain_call(VcpuCall::ArmVcpuInit { target, features })
        .context("KVM_ARM_VCPU_INIT of the scratch vCPU")?;
    let reg_list = match vcpu.plain_call(VcpuCall::GetRegList) {
        Ok(Reply::RegList(ids)) => ids,
        Ok(other) => bail!("KVM_GET_REG_LIST answered {other}, not a register list"),
        Err(e) => bail!("KVM_GET_REG_LIST on the scratch vCPU failed: {e}"),
    };
    let mut initial_reads = Vec::new();
    for &id in reg_list
        .iter()
        .filter(|&&id| lock_policy::is_model_register(GuestArch::Aarch64, id))
    {
        let value = vcpu
            .get_one_reg(id)
            .with_context(|| format!("KVM_GET_ONE_REG {id:#018x} on the scratch vCPU"))?;
        initial_reads.push((id, value));
    }
    let masks = if mask_ranges != 0 {
        match vm.call(VmCall::ArmGetRegWritableMasks) {
            Ok(Reply::Masks(masks)) => Some(masks),
            Ok(other) => bail!("KVM_ARM_GET_REG_WRITABLE_MASKS answered {other}, not masks"),
            Err(e) => bail!("KVM_ARM_GET_REG_WRITABLE_MASKS on the scratch VM failed: {e}"),
        }
    } else {
        None
    };
    Ok(Arm64Facts {
        preferred_target: Some(target),
        vcpu_init_features: Some(features),
        reg_list: Some(reg_list),
        initial_reads,
        other_inits: Vec::new(),
        masks,
        probes: KernelProbes::NOT_MEASURED,
    })
}
