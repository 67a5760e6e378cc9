//! What a start benchmark brings up, handed to the backend as input: the CPU model each vCPU gets
//! and the guest image its memory holds ([`StartWorkload`]).
//!
//! The floor ([`crate::hypervisor::kvm::floor`]) issues the ioctls vmfleet issues to start a VM,
//! but what it writes with them (a CPUID table built by the x86 model, the probe guest) is the
//! models' and the guests' to prepare. The backend must not reach up to them, so the caller
//! prepares a workload from the model and the guest and passes it in; the floor only calls it at
//! the points where vmfleet's job does the same work, so the timing is unchanged.

use crate::hypervisor::call::VcpuExit;
use crate::hypervisor::cpuid::CpuidTable;
use vm_memory::GuestMemoryMmap;

/// Why a workload could not prepare a table or load its guest (shown after the step it failed in).
pub type WorkloadError = Box<dyn std::error::Error + Send + Sync>;

/// A guest and the CPU model its vCPUs run, as a start benchmark needs them.
pub trait StartWorkload: Send + Sync {
    /// Guest memory per VM, mapped at guest-physical 0.
    fn memory_size(&self) -> u64;

    /// The CPUID table for vCPU `index` of `count`, from the host's supported table (the one
    /// `KVM_GET_SUPPORTED_CPUID` answered).
    fn cpuid_table(
        &self,
        supported: &CpuidTable,
        index: u32,
        count: u32,
    ) -> Result<CpuidTable, WorkloadError>;

    /// Write the guest into `memory`, given the table the kernel holds for vCPU 0 (read back
    /// after `KVM_SET_CPUID2`, as vmfleet's job loads it).
    fn load(&self, memory: &GuestMemoryMmap, held: &CpuidTable) -> Result<(), WorkloadError>;

    /// The guest-physical address every vCPU starts at.
    fn entry(&self) -> u64;

    /// Whether `exit` is the first exit the guest is meant to make: anything else means a run
    /// measured something other than a start.
    fn is_first_exit(&self, exit: &VcpuExit) -> bool;
}
