//! What the fleet asks the host once, not once per VM: the supported CPUID table (x86,
//! `KVM_GET_SUPPORTED_CPUID`), the writable-mask ranges (arm64,
//! `KVM_CHECK_EXTENSION(KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES)`) and whether MIDR/REVIDR/AIDR can
//! be made writable (arm64, `KVM_CHECK_EXTENSION(KVM_CAP_ARM_WRITABLE_IMP_ID_REGS)`, asked only
//! when a VM's spec changes one of them) and the kernel rules no capability shows (arm64, a probe
//! write on a scratch VM each, [`super::probe`], asked only when a verdict depends on one), each
//! asked by whichever thread needs it first.
//!
//! Why once: these calls are on the trace's host stream, which every VM loop shares. Asked per
//! VM, they would interleave differently on every run; asked once, the stream is one call long
//! per query, and where two queries could race (arm64: the mask ranges and capability 239), the
//! later one asks the earlier first, so their order is fixed too.
//!
//! Why lazily: the first VM's loop thread can create its VM, memory and vCPUs without the
//! answer; only the CPU model needs it. So the control plane asks right after it has spawned the
//! loop threads, while they create their VMs, and a loop that gets to its CPU model first asks
//! itself or waits for the answer in flight. Asking up front instead puts a whole ioctl in front
//! of every fleet's first VM (measured by `vmfleet bench`).

use super::error::HostQueryError;
use super::probe::ProbeAnswer;
use std::sync::{Arc, OnceLock};
use vcpu::hypervisor::abi::{
    KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES, KVM_CAP_ARM_WRITABLE_IMP_ID_REGS,
};
use vcpu::hypervisor::cpuid::CpuidTable;
use vcpu::model::arm64::host::KernelProbe;
use vcpu::{Hypervisor, Reply, SystemCall};

/// The host's answers, or why they could not be had (the same answer for every VM).
pub(crate) struct HostQueries {
    hv: Arc<dyn Hypervisor>,
    supported_cpuid: OnceLock<Result<Arc<CpuidTable>, HostQueryError>>,
    mask_ranges: OnceLock<Result<u64, HostQueryError>>,
    writable_imp_id_regs: OnceLock<Result<bool, HostQueryError>>,
    probes: [OnceLock<Result<Option<ProbeAnswer>, HostQueryError>>; KernelProbe::ALL.len()],
}

impl HostQueries {
    pub(crate) fn new(hv: Arc<dyn Hypervisor>) -> Self {
        HostQueries {
            hv,
            supported_cpuid: OnceLock::new(),
            mask_ranges: OnceLock::new(),
            writable_imp_id_regs: OnceLock::new(),
            probes: Default::default(),
        }
    }

    /// x86: the supported CPUID table; the first caller asks, concurrent callers wait.
    pub(crate) fn supported_cpuid(&self) -> Result<Arc<CpuidTable>, HostQueryError> {
        self.supported_cpuid
            .get_or_init(|| match self.hv.call(&SystemCall::GetSupportedCpuid) {
                Ok(Reply::Cpuid(table)) => Ok(Arc::new(table)),
                Ok(other) => Err(HostQueryError::UnexpectedReply {
                    call: "KVM_GET_SUPPORTED_CPUID",
                    reply: other.to_string(),
                }),
                Err(e) => Err(HostQueryError::SupportedCpuid(e)),
            })
            .clone()
    }

    /// arm64: which ranges `KVM_ARM_GET_REG_WRITABLE_MASKS` covers (0: the ioctl does not exist).
    pub(crate) fn mask_ranges(&self) -> Result<u64, HostQueryError> {
        self.mask_ranges
            .get_or_init(|| {
                match self.hv.call(&SystemCall::CheckExtension {
                    cap: KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES,
                }) {
                    Ok(Reply::Value(v)) => Ok(v),
                    Ok(other) => Err(HostQueryError::UnexpectedReply {
                        call: "CHECK_EXTENSION",
                        reply: other.to_string(),
                    }),
                    Err(e) => Err(HostQueryError::MaskRanges(e)),
                }
            })
            .clone()
    }

    /// arm64: whether the host offers `KVM_CAP_ARM_WRITABLE_IMP_ID_REGS` (239), which a VM must
    /// enable before its first vCPU for MIDR_EL1, REVIDR_EL1 and AIDR_EL1 to be writable.
    ///
    /// Asked after [`HostQueries::mask_ranges`], always: the control plane's prefetch asks that
    /// one while the first VM's loop may already want this one, and two different queries on
    /// the host stream must not race, or a trace's host stream would hold them in either order
    /// and its replay would diverge (seen on Linux 7.2, whose first VM of `arm64-7.2-max+model`
    /// writes MIDR_EL1). An error of the mask query reaches the VM through its own call.
    pub(crate) fn writable_imp_id_regs(&self) -> Result<bool, HostQueryError> {
        let _ = self.mask_ranges();
        self.writable_imp_id_regs
            .get_or_init(|| {
                match self.hv.call(&SystemCall::CheckExtension {
                    cap: KVM_CAP_ARM_WRITABLE_IMP_ID_REGS,
                }) {
                    Ok(Reply::Value(v)) => Ok(v != 0),
                    Ok(other) => Err(HostQueryError::UnexpectedReply {
                        call: "CHECK_EXTENSION",
                        reply: other.to_string(),
                    }),
                    Err(e) => Err(HostQueryError::WritableImpIdRegs(e)),
                }
            })
            .clone()
    }

    /// arm64: the kernel's answer to `probe`, by a probe write on a scratch VM
    /// ([`super::probe::measure`]); `None` on x86.
    pub(crate) fn probe(&self, probe: KernelProbe) -> Result<Option<ProbeAnswer>, HostQueryError> {
        let slot = KernelProbe::ALL
            .iter()
            .position(|p| *p == probe)
            .and_then(|i| self.probes.get(i));
        match slot {
            Some(slot) => slot
                .get_or_init(|| {
                    super::probe::measure(&*self.hv, probe).map_err(HostQueryError::from)
                })
                .clone(),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use vcpu::{CallError, GuestArch, Vm, VmId};

    /// A host that only answers CHECK_EXTENSION (1), noting the capabilities asked in order.
    struct Asked(Mutex<Vec<u32>>);

    impl Hypervisor for Asked {
        fn arch(&self) -> GuestArch {
            GuestArch::Aarch64
        }
        fn call(&self, call: &SystemCall) -> Result<Reply, CallError> {
            if let SystemCall::CheckExtension { cap } = call {
                self.0.lock().unwrap().push(*cap);
            }
            Ok(Reply::Value(1))
        }
        fn create_vm(&self, _: VmId, _: &str) -> Result<Box<dyn Vm>, CallError> {
            unreachable!("no VM is created")
        }
    }

    #[test]
    fn cap_239_is_asked_after_the_mask_ranges_whoever_asks_first() {
        let hv = Arc::new(Asked(Mutex::new(Vec::new())));
        let host = HostQueries::new(hv.clone());
        assert!(host.writable_imp_id_regs().unwrap());
        assert_eq!(host.mask_ranges().unwrap(), 1);
        assert_eq!(
            *hv.0.lock().unwrap(),
            [
                KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES,
                KVM_CAP_ARM_WRITABLE_IMP_ID_REGS
            ]
        );
    }
}
