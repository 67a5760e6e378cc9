//! The x86_64 half of the KVM backend: CPUID tables and real-mode boot state.

use super::{kernel, other_arch};
use crate::hypervisor::call::{Reply, SystemCall, VcpuCall, VmCall};
use crate::hypervisor::cpuid::{CpuidEntry, CpuidTable, MAX_ENTRIES};
use crate::hypervisor::errno::Errno;
use crate::hypervisor::error::CallError;
use crate::hypervisor::ids::GuestArch;
use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, kvm_cpuid_entry2, kvm_regs};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

/// `RFLAGS` at boot: only the always-one bit 1 (interrupts disabled, direction up).
const BOOT_RFLAGS: u64 = 0x2;

/// `KVM_GET_SUPPORTED_CPUID` with room for the kernel's maximum of 256 entries.
pub(super) fn supported_cpuid(kvm: &Kvm, _call: &SystemCall) -> Result<Reply, CallError> {
    supported_table(kvm).map(Reply::Cpuid)
}

/// `KVM_GET_SUPPORTED_CPUID` as a table (shared with [`super::floor`]).
pub(super) fn supported_table(kvm: &Kvm) -> Result<CpuidTable, CallError> {
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kernel)?;
    Ok(from_kvm(&cpuid))
}

/// `KVM_GET_EMULATED_CPUID` with room for the kernel's maximum of 256 entries. `kvm-ioctls`
/// hands the kernel zeroed entries, so the kernel's check that every entry's padding is zero
/// (`EINVAL` otherwise) always passes.
pub(super) fn emulated_cpuid(kvm: &Kvm, _call: &SystemCall) -> Result<Reply, CallError> {
    let cpuid = kvm
        .get_emulated_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kernel)?;
    Ok(Reply::Cpuid(from_kvm(&cpuid)))
}

/// VM calls with an x86-specific implementation: none; the arm64 ones are refused.
pub(super) fn vm_call(_fd: &VmFd, call: &VmCall) -> Result<Reply, CallError> {
    match call {
        VmCall::ArmPreferredTarget | VmCall::ArmGetRegWritableMasks => {
            Err(other_arch(call, GuestArch::Aarch64))
        }
        _ => Err(CallError::Backend(format!(
            "{call} is not an architecture-specific VM call"
        ))),
    }
}

/// vCPU calls other than `Run` and `Destroy`.
pub(super) fn vcpu_call(fd: &VcpuFd, call: &VcpuCall) -> Result<Reply, CallError> {
    match call {
        VcpuCall::SetCpuid2 { table } => set_cpuid2(fd, table).map(|()| Reply::Done),
        VcpuCall::GetCpuid2 => get_cpuid2(fd).map(Reply::Cpuid),
        VcpuCall::SetBootState { entry } => set_boot_state(fd, call, *entry).map(|()| Reply::Done),
        VcpuCall::GetOneReg { .. }
        | VcpuCall::SetOneReg { .. }
        | VcpuCall::GetRegList
        | VcpuCall::ArmVcpuInit { .. }
        | VcpuCall::ArmVcpuFinalize { .. }
        | VcpuCall::ArmPmuV3Init => Err(other_arch(call, GuestArch::Aarch64)),
        VcpuCall::Run | VcpuCall::RunCounted | VcpuCall::Destroy => Err(CallError::Backend(
            format!("{call} is not an architecture-specific vCPU call"),
        )),
    }
}

/// `KVM_SET_CPUID2`. A table over the kernel's limit of 256 entries is answered with `E2BIG`,
/// the kernel's own answer, without calling it (`kvm-ioctls` could not even build the ioctl
/// argument).
pub(super) fn set_cpuid2(fd: &VcpuFd, table: &CpuidTable) -> Result<(), CallError> {
    if table.len() > MAX_ENTRIES {
        return Err(CallError::Kernel(Errno::E2BIG));
    }
    let entries: Vec<kvm_cpuid_entry2> = table.entries.iter().map(to_kvm_entry).collect();
    let cpuid = CpuId::from_entries(&entries)
        .map_err(|e| CallError::Backend(format!("cannot build a kvm_cpuid2: {e:?}")))?;
    fd.set_cpuid2(&cpuid).map_err(kernel)
}

/// `KVM_GET_CPUID2` with room for 256 entries (the most the kernel can hold).
pub(super) fn get_cpuid2(fd: &VcpuFd) -> Result<CpuidTable, CallError> {
    let cpuid = fd.get_cpuid2(KVM_MAX_CPUID_ENTRIES).map_err(kernel)?;
    Ok(from_kvm(&cpuid))
}

/// 16-bit real mode with flat segments, entering at `entry`:
/// - `KVM_GET_SREGS`, then CS/DS/ES/FS/GS/SS = selector 0, base 0 (CR0.PE stays 0 as after
///   reset), IDT limit 0 (no vector table, so an exception is a triple fault), `KVM_SET_SREGS`;
/// - `KVM_SET_REGS` with every general register 0 except `RIP = entry`, `RFLAGS = 0x2`
///   (interrupts off) and `RSP = entry`: the stack, should the guest use one, grows down from
///   just below the entry point, inside the memory that holds the code.
///
/// With CS base 0 the entry must be below 64 KiB (IP is 16 bits); other entries are a backend
/// error (`call` names the request in that error).
pub(super) fn set_boot_state(fd: &VcpuFd, call: &VcpuCall, entry: u64) -> Result<(), CallError> {
    if entry > 0xffff {
        return Err(CallError::Backend(format!(
            "{call}: a real-mode entry point with flat segments must be below 0x10000"
        )));
    }
    let mut sregs = fd.get_sregs().map_err(kernel)?;
    for segment in [
        &mut sregs.cs,
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.fs,
        &mut sregs.gs,
        &mut sregs.ss,
    ] {
        segment.base = 0;
        segment.selector = 0;
    }
    // No interrupt vector table: with an IDT limit of 0 any exception the guest raises cannot
    // be delivered and becomes a triple fault (a SHUTDOWN exit), instead of a jump through
    // whatever happens to be at address 0. KVM's real-mode emulation (kvm_pvm) ignores the limit
    // and does jump through address 0; the probe guest's deliberate fault therefore loads an IDT
    // of its own whose base is not guest memory (see `guests::x86`).
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    fd.set_sregs(&sregs).map_err(kernel)?;
    let regs = kvm_regs {
        rip: entry,
        rflags: BOOT_RFLAGS,
        rsp: entry,
        ..Default::default()
    };
    fd.set_regs(&regs).map_err(kernel)
}

fn to_kvm_entry(e: &CpuidEntry) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function: e.function,
        index: e.index,
        flags: e.flags,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
        ..Default::default()
    }
}

fn from_kvm(cpuid: &CpuId) -> CpuidTable {
    CpuidTable::new(
        cpuid
            .as_slice()
            .iter()
            .map(|e| CpuidEntry {
                function: e.function,
                index: e.index,
                flags: e.flags,
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_entries_round_trip() {
        let table = CpuidTable::new(vec![
            CpuidEntry {
                function: 0,
                index: 0,
                flags: 0,
                eax: 0xd,
                ebx: 1,
                ecx: 2,
                edx: 3,
            },
            CpuidEntry {
                function: 7,
                index: 1,
                flags: 1,
                eax: 4,
                ebx: 5,
                ecx: 6,
                edx: 7,
            },
        ]);
        let entries: Vec<_> = table.entries.iter().map(to_kvm_entry).collect();
        let cpuid = CpuId::from_entries(&entries).unwrap();
        assert_eq!(from_kvm(&cpuid), table);
    }
}
