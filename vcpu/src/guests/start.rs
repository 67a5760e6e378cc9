//! The x86 probe guest as a start workload ([`ProbeStart`]): what the floor of `vmfleet bench`
//! (`hypervisor::kvm::floor`) brings up, prepared here from the CPU model and the guest so
//! that the backend takes it as input instead of reaching up to either.
//!
//! It is what vmfleet's job starts for a VM of the default fleet spec: the default x86 model
//! (`X86CpuModel::default()`, APIC ids normalised per vCPU), 1 MiB of memory, the probe guest
//! loaded with the points of vCPU 0's read-back table and [`PROBE_REPEATS`] pass.

use crate::guests::x86;
use crate::hypervisor::call::VcpuExit;
use crate::hypervisor::cpuid::CpuidTable;
use crate::hypervisor::workload::{StartWorkload, WorkloadError};
use crate::model::x86::model::X86CpuModel;
use vm_memory::GuestMemoryMmap;

/// Guest memory per VM: what the job maps for a VM of the default spec (`memory_mib = 1`, and
/// never less than [`x86::MEMORY_SIZE`]).
pub const GUEST_MEMORY_SIZE: u64 = 1 << 20;
const _: () = assert!(GUEST_MEMORY_SIZE >= x86::MEMORY_SIZE);

/// Passes the probe guest is loaded with: the spec's default `probe_repeats`. Only the first
/// exit matters to a start, but the guest in memory is the one vmfleet loads.
pub const PROBE_REPEATS: u32 = 1;

/// The default x86 model and the probe guest, as a start workload.
#[derive(Debug, Default)]
pub struct ProbeStart {
    model: X86CpuModel,
}

impl StartWorkload for ProbeStart {
    fn memory_size(&self) -> u64 {
        GUEST_MEMORY_SIZE
    }

    fn cpuid_table(
        &self,
        supported: &CpuidTable,
        index: u32,
        count: u32,
    ) -> Result<CpuidTable, WorkloadError> {
        Ok(self.model.build(supported, index, count)?.table)
    }

    fn load(&self, memory: &GuestMemoryMmap, held: &CpuidTable) -> Result<(), WorkloadError> {
        Ok(x86::load(memory, &held.probe_points(), PROBE_REPEATS)?)
    }

    fn entry(&self) -> u64 {
        x86::ENTRY
    }

    fn is_first_exit(&self, exit: &VcpuExit) -> bool {
        is_first_pass_begin(exit)
    }
}

/// Whether `exit` is the probe guest's first exit: `OUT` of pass number 0 (4 bytes) to
/// [`x86::PORT_PASS_BEGIN`].
pub fn is_first_pass_begin(exit: &VcpuExit) -> bool {
    matches!(
        exit,
        VcpuExit::IoOut { port, data }
            if *port == x86::PORT_PASS_BEGIN && data.as_slice() == 0u32.to_le_bytes()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_pass_begin_is_recognised() {
        let begin = |port, data: &[u8]| VcpuExit::IoOut {
            port,
            data: data.into(),
        };
        assert!(is_first_pass_begin(&begin(0x510, &[0, 0, 0, 0])));
        assert!(!is_first_pass_begin(&begin(0x510, &[1, 0, 0, 0])));
        assert!(!is_first_pass_begin(&begin(0x510, &[0])));
        assert!(!is_first_pass_begin(&begin(0x511, &[0, 0, 0, 0])));
        assert!(!is_first_pass_begin(&VcpuExit::Hlt));
        assert!(!is_first_pass_begin(&VcpuExit::Shutdown));
        assert!(ProbeStart::default().is_first_exit(&begin(0x510, &[0, 0, 0, 0])));
    }
}
