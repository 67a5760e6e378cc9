//! The host's supported CPUID table (`KVM_GET_SUPPORTED_CPUID`), asked once per fleet by
//! whichever thread needs it first.
//!
//! Why lazily and shared: the first VM's loop thread can create its VM, memory and vCPUs without
//! the table; only the CPU model needs it. So the control plane asks for it right after it has
//! spawned the loop threads, while they create their VMs, and a loop that gets to its CPU model
//! first asks itself or waits for the answer in flight. Asking up front instead puts a whole
//! ioctl in front of every fleet's first VM (measured by `vmfleet bench`).

use std::sync::{Arc, OnceLock};
use vcpu::cpuid::CpuidTable;
use vcpu::{Hypervisor, Reply, SystemCall};

/// The supported table, or why it could not be read (the same answer for every VM).
pub(crate) struct SupportedCpuid {
    hv: Arc<dyn Hypervisor>,
    table: OnceLock<Result<Arc<CpuidTable>, String>>,
}

impl SupportedCpuid {
    pub(crate) fn new(hv: Arc<dyn Hypervisor>) -> Self {
        SupportedCpuid {
            hv,
            table: OnceLock::new(),
        }
    }

    /// The table; the first caller asks the hypervisor, concurrent callers wait for its answer.
    pub(crate) fn get(&self) -> Result<Arc<CpuidTable>, String> {
        self.table
            .get_or_init(|| match self.hv.call(&SystemCall::GetSupportedCpuid) {
                Ok(Reply::Cpuid(table)) => Ok(Arc::new(table)),
                Ok(other) => Err(format!("KVM_GET_SUPPORTED_CPUID: unexpected reply {other}")),
                Err(e) => Err(format!("KVM_GET_SUPPORTED_CPUID failed: {e}")),
            })
            .clone()
    }
}
