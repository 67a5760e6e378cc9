//! The arm64 half of the KVM backend: vCPU init, ONE_REG, the register list, writable ID-register
//! masks and the boot state.

use super::{kernel, last_kernel_error, other_arch};
use crate::hypervisor::abi;
use crate::hypervisor::call::{Reply, SystemCall, VcpuCall, VmCall};
use crate::hypervisor::errno::Errno;
use crate::hypervisor::error::CallError;
use crate::hypervisor::ids::GuestArch;
use kvm_bindings::{
    KVM_ARM_FEATURE_ID_RANGE, KVM_ARM_FEATURE_ID_RANGE_SIZE, KVM_ARM_VCPU_PMU_V3_CTRL,
    KVM_ARM_VCPU_PMU_V3_INIT, KVM_REG_ARM_CORE, KVM_REG_ARM64, KVM_REG_SIZE_U64, kvm_device_attr,
    kvm_regs, kvm_vcpu_init, reg_mask_range, user_pt_regs,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd, reg_size};
use std::mem::offset_of;

/// [`abi::KVM_ARM_GET_REG_WRITABLE_MASKS`], as `ioctl` takes it; `kvm-ioctls` 0.25 has no
/// wrapper for it.
const KVM_ARM_GET_REG_WRITABLE_MASKS: libc::c_ulong = abi::KVM_ARM_GET_REG_WRITABLE_MASKS as _;

/// [`abi::KVM_GET_REG_LIST`], as `ioctl` takes it. Issued directly rather than through
/// `kvm_bindings::RegList`, whose capacity is capped at 500 ids.
const KVM_GET_REG_LIST: libc::c_ulong = abi::KVM_GET_REG_LIST as _;

/// Number of masks in the feature-ID range (`KVM_ARM_FEATURE_ID_RANGE_SIZE`).
const MASKS: usize = KVM_ARM_FEATURE_ID_RANGE_SIZE as usize;

/// The register list buffer to try first (6.12 reports 259 ids, 362 with SVE/PTRAUTH/PMU).
const REG_LIST_FIRST_GUESS: usize = 512;

/// The id of a 64-bit core register at byte `offset` in `struct kvm_regs`
/// (`KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | offset / 4`).
const fn core_reg(offset: usize) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE as u64 | (offset / 4) as u64
}

/// The program counter (`regs.pc`).
const PC: u64 = core_reg(offset_of!(kvm_regs, regs) + offset_of!(user_pt_regs, pc));
/// The processor state (`regs.pstate`).
const PSTATE: u64 = core_reg(offset_of!(kvm_regs, regs) + offset_of!(user_pt_regs, pstate));
const _: () = assert!(PC == 0x6030_0000_0010_0040);
const _: () = assert!(PSTATE == 0x6030_0000_0010_0042);

/// PSTATE at boot: EL1h (M = 0b0101, EL1 with SP_EL1) with D, A, I and F masked (bits 9..6).
const BOOT_PSTATE: u64 = 0x3c5;

/// `KVM_GET_SUPPORTED_CPUID` does not exist on arm64.
pub(super) fn supported_cpuid(_kvm: &Kvm, call: &SystemCall) -> Result<Reply, CallError> {
    Err(other_arch(call, GuestArch::X86_64))
}

/// `KVM_GET_EMULATED_CPUID` does not exist on arm64.
pub(super) fn emulated_cpuid(_kvm: &Kvm, call: &SystemCall) -> Result<Reply, CallError> {
    Err(other_arch(call, GuestArch::X86_64))
}

/// The arm64 VM calls.
pub(super) fn vm_call(fd: &VmFd, call: &VmCall) -> Result<Reply, CallError> {
    match call {
        VmCall::ArmPreferredTarget => preferred_target(fd),
        VmCall::ArmGetRegWritableMasks => writable_masks(fd),
        _ => Err(CallError::Backend(format!(
            "{call} is not an architecture-specific VM call"
        ))),
    }
}

/// vCPU calls other than `Run` and `Destroy`.
pub(super) fn vcpu_call(fd: &VcpuFd, call: &VcpuCall) -> Result<Reply, CallError> {
    match call {
        // KVM_ARM_VCPU_INIT.
        VcpuCall::ArmVcpuInit { target, features } => {
            let init = kvm_vcpu_init {
                target: *target,
                features: *features,
            };
            fd.vcpu_init(&init).map_err(kernel)?;
            Ok(Reply::Done)
        }
        VcpuCall::GetOneReg { id } => get_one_reg(fd, call, *id).map(Reply::Value),
        VcpuCall::SetOneReg { id, value } => {
            set_one_reg(fd, call, *id, *value)?;
            Ok(Reply::Done)
        }
        VcpuCall::GetRegList => reg_list(fd).map(Reply::RegList),
        // KVM_ARM_VCPU_FINALIZE.
        VcpuCall::ArmVcpuFinalize { feature } => {
            fd.vcpu_finalize(feature).map_err(kernel)?;
            Ok(Reply::Done)
        }
        // KVM_SET_DEVICE_ATTR on the vCPU: PMU v3 INIT (no attribute payload).
        VcpuCall::ArmPmuV3Init => {
            let attr = kvm_device_attr {
                flags: 0,
                group: KVM_ARM_VCPU_PMU_V3_CTRL,
                attr: u64::from(KVM_ARM_VCPU_PMU_V3_INIT),
                addr: 0,
            };
            fd.set_device_attr(&attr).map_err(kernel)?;
            Ok(Reply::Done)
        }
        // Two KVM_SET_ONE_REGs: PC = entry, PSTATE = EL1h with DAIF masked.
        VcpuCall::SetBootState { entry } => {
            set_one_reg(fd, call, PC, *entry)?;
            set_one_reg(fd, call, PSTATE, BOOT_PSTATE)?;
            Ok(Reply::Done)
        }
        VcpuCall::SetCpuid2 { .. } | VcpuCall::GetCpuid2 => {
            Err(other_arch(call, GuestArch::X86_64))
        }
        VcpuCall::Run | VcpuCall::RunCounted | VcpuCall::Destroy => Err(CallError::Backend(
            format!("{call} is not an architecture-specific vCPU call"),
        )),
    }
}

/// `KVM_ARM_PREFERRED_TARGET`: the target (and default features) for `KVM_ARM_VCPU_INIT`.
fn preferred_target(fd: &VmFd) -> Result<Reply, CallError> {
    let mut init = kvm_vcpu_init::default();
    fd.get_preferred_target(&mut init).map_err(kernel)?;
    Ok(Reply::VcpuInit {
        target: init.target,
        features: init.features,
    })
}

/// `KVM_ARM_GET_REG_WRITABLE_MASKS` for the feature-ID range: 192 masks, indexed as the kernel
/// indexes them (`KVM_ARM_FEATURE_ID_RANGE_IDX`).
fn writable_masks(fd: &VmFd) -> Result<Reply, CallError> {
    let mut masks = vec![0u64; MASKS];
    let range = reg_mask_range {
        addr: masks.as_mut_ptr() as u64,
        range: KVM_ARM_FEATURE_ID_RANGE,
        reserved: [0; 13],
    };
    // SAFETY: `fd` is a VM fd and the request number is KVM_ARM_GET_REG_WRITABLE_MASKS, whose
    // argument is a `struct reg_mask_range` (64 bytes, which `range` is, read by the kernel).
    // `range.addr` points to `masks`, 192 u64 owned by this function and alive until after the
    // ioctl; the kernel writes exactly KVM_ARM_FEATURE_ID_RANGE_SIZE (192) u64 there, and nothing
    // else aliases the buffer meanwhile.
    let ret =
        unsafe { vmm_sys_util::ioctl::ioctl_with_ref(fd, KVM_ARM_GET_REG_WRITABLE_MASKS, &range) };
    if ret < 0 {
        return Err(last_kernel_error());
    }
    Ok(Reply::Masks(masks))
}

/// Registers vmfleet reads and writes as `u64`: at most 8 bytes (smaller ones, such as the
/// 32-bit DEMUX CCSIDR ids, are zero-extended).
fn check_size(call: &VcpuCall, id: u64) -> Result<(), CallError> {
    let size = reg_size(id);
    if size > 8 {
        return Err(CallError::Backend(format!(
            "{call}: register {id:#018x} is {size} bytes wide; vmfleet's ONE_REG calls carry u64"
        )));
    }
    Ok(())
}

/// `KVM_GET_ONE_REG` into an 8-byte little-endian buffer.
fn get_one_reg(fd: &VcpuFd, call: &VcpuCall, id: u64) -> Result<u64, CallError> {
    check_size(call, id)?;
    let mut bytes = [0u8; 8];
    fd.get_one_reg(id, &mut bytes).map_err(kernel)?;
    Ok(u64::from_le_bytes(bytes))
}

/// `KVM_SET_ONE_REG` from an 8-byte little-endian buffer (the kernel reads the register's size).
fn set_one_reg(fd: &VcpuFd, call: &VcpuCall, id: u64, value: u64) -> Result<(), CallError> {
    check_size(call, id)?;
    fd.set_one_reg(id, &value.to_le_bytes()).map_err(kernel)?;
    Ok(())
}

/// `KVM_GET_REG_LIST`, growing the buffer when the kernel answers `E2BIG` (it writes the count it
/// needs into `n` even then).
fn reg_list(fd: &VcpuFd) -> Result<Vec<u64>, CallError> {
    let mut capacity = REG_LIST_FIRST_GUESS;
    for _ in 0..4 {
        // `struct kvm_reg_list { __u64 n; __u64 reg[]; }` as one u64 array: [n, reg...].
        let mut buffer = vec![0u64; capacity + 1];
        buffer[0] = capacity as u64;
        // SAFETY: `fd` is a vCPU fd and the request is KVM_GET_REG_LIST, whose argument is a
        // `struct kvm_reg_list`: a u64 count followed by that many u64 slots. `buffer` is exactly
        // that (1 + capacity u64, count = capacity), owned here and alive for the whole call; the
        // kernel writes `n` and at most `capacity` ids after it.
        let ret = unsafe {
            vmm_sys_util::ioctl::ioctl_with_mut_ptr(fd, KVM_GET_REG_LIST, buffer.as_mut_ptr())
        };
        if ret >= 0 {
            let n = usize::try_from(buffer[0])
                .unwrap_or(usize::MAX)
                .min(capacity);
            buffer.truncate(n + 1);
            buffer.remove(0);
            return Ok(buffer);
        }
        let error = vmm_sys_util::errno::Error::last();
        if error.errno() != libc::E2BIG {
            return Err(kernel(error));
        }
        let needed = usize::try_from(buffer[0]).unwrap_or(usize::MAX);
        capacity = if needed > capacity && needed <= 1 << 20 {
            needed
        } else {
            capacity * 2
        };
    }
    Err(CallError::Kernel(Errno::E2BIG))
}
