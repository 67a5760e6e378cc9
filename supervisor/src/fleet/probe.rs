//! Kernel rules no capability shows, measured by asking the kernel: a probe write on a scratch
//! VM. Today one: whether `set_id_aa64pfr0_el1` refuses ID_AA64PFR0_EL1.EL1 = 0 (the EL0/EL1
//! floor, which arrived after 6.12; 6.12 accepts the lowering). The fleet asks it once, only when
//! a plan lowers EL0 or EL1 ([`crate::fleet`]'s host queries), and `host --fingerprint` asks it
//! live; both through the handles of whatever backend they run on, so a recording records the
//! probe's calls and a replay answers them.
//!
//! The probe: `KVM_CREATE_VM` (logical id [`PROBE_VM`], the same in every run so a replay finds
//! the same stream), `KVM_ARM_PREFERRED_TARGET`, one vCPU, `KVM_ARM_VCPU_INIT` with the default
//! model's features (fixed, not the asking VM's: the answer is one per fleet, the floor's check
//! does not depend on the features, and the fingerprint's main vCPU facts are for the same
//! features, so the model engine can judge the probe's write too), `KVM_GET_ONE_REG`
//! ID_AA64PFR0_EL1, `KVM_SET_ONE_REG` of it with EL1 = 0: accepted → the host does not enforce
//! the floor; `EINVAL` → it does. Then the vCPU and the VM are closed.
//!
//! On a kernel whose ID_AA64PFR0_EL1 is not writable at all (before 6.7) the write is refused
//! too, and reads as "enforced": vmfleet's prediction, `EINVAL`, is the kernel's answer either way.

use vcpu::model::arm64::{Arm64ModelSpec, catalog, fields};
use vcpu::{
    CallError, Errno, GuestArch, HandleError, Hypervisor, Reply, VcpuCall, VcpuId, VmCall,
    VmHandle, VmId,
};

/// The probe VM's logical id (and so its trace stream): fixed, and far from the fleet's VMs
/// and from the cross-checks' scratch VMs (a VM's id with bit 31 set).
pub(crate) const PROBE_VM: VmId = VmId(u32::MAX);

/// The name the probe VM is created with (a trace shows it; `trace fingerprint` finds it by it).
pub(crate) const PROBE_VM_NAME: &str = "el-floor-probe";

/// Why a probe could not be made.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProbeError {
    /// The probe VM could not be created.
    #[error("the EL0/EL1 floor probe: creating the scratch VM {PROBE_VM_NAME}: {0}")]
    CreateVm(CallError),
    /// A call on the probe VM failed (it names the call).
    #[error("the EL0/EL1 floor probe: {0}")]
    Call(HandleError),
    /// A call answered with a reply of the wrong kind.
    #[error("the EL0/EL1 floor probe: {call} on {PROBE_VM_NAME}: unexpected reply {reply}")]
    UnexpectedReply {
        /// The call.
        call: &'static str,
        /// The reply it got, as text.
        reply: String,
    },
    /// The host's ID_AA64PFR0_EL1.EL1 is already 0, so there is nothing to lower.
    #[error(
        "the EL0/EL1 floor probe: {PROBE_VM_NAME}'s ID_AA64PFR0_EL1 = {0:#018x} has EL1 = 0 \
         already"
    )]
    NothingToLower(u64),
}

/// Whether the host's kernel refuses ID_AA64PFR0_EL1.EL1 = 0 (`EINVAL`), measured on a scratch
/// VM of `hv`. `None` on an x86 host (the rule is arm64's).
pub(crate) fn el_floor(hv: &dyn Hypervisor) -> Result<Option<bool>, ProbeError> {
    if hv.arch() != GuestArch::Aarch64 {
        return Ok(None);
    }
    let vm = VmHandle::new(
        hv.create_vm(PROBE_VM, PROBE_VM_NAME)
            .map_err(ProbeError::CreateVm)?,
        PROBE_VM_NAME,
        hv.arch(),
    );
    let answer = probe_on(&vm);
    let closed = vm.call(VmCall::Destroy).map_err(ProbeError::Call);
    let answer = answer?;
    closed?;
    Ok(Some(answer))
}

fn probe_on(vm: &VmHandle) -> Result<bool, ProbeError> {
    let target = match vm.call(VmCall::ArmPreferredTarget) {
        Ok(Reply::VcpuInit { target, .. }) => target,
        Ok(other) => {
            return Err(ProbeError::UnexpectedReply {
                call: "ARM_PREFERRED_TARGET",
                reply: other.to_string(),
            });
        }
        Err(e) => return Err(ProbeError::Call(e)),
    };
    let vcpu = vm.create_vcpu(VcpuId(0)).map_err(ProbeError::Call)?;
    let mut features = [0u32; 7];
    features[0] = Arm64ModelSpec::default().features.bits();
    let answer = (|| {
        vcpu.plain_call(VcpuCall::ArmVcpuInit { target, features })
            .map_err(ProbeError::Call)?;
        let id = catalog::ID_AA64PFR0_EL1.kvm_reg_id();
        let limit = vcpu.get_one_reg(id).map_err(ProbeError::Call)?;
        let el1 = fields::field_of(catalog::ID_AA64PFR0_EL1, "EL1")
            .map(|f| f.field())
            .ok_or(ProbeError::NothingToLower(limit))?;
        if el1.raw(limit) == 0 {
            return Err(ProbeError::NothingToLower(limit));
        }
        match vcpu.set_one_reg(id, el1.with(limit, 0)) {
            Ok(_) => Ok(false),
            Err(e) if e.errno() == Some(Errno::EINVAL) => Ok(true),
            Err(e) => Err(ProbeError::Call(e)),
        }
    })();
    let closed = vcpu.plain_call(VcpuCall::Destroy).map_err(ProbeError::Call);
    let answer = answer?;
    closed?;
    Ok(answer)
}
