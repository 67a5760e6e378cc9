//! Kernel rules no capability shows, measured by asking the kernel: a probe write on a scratch
//! VM ([`KernelProbe`]):
//!
//! - the EL0/EL1 floor: whether `set_id_aa64pfr0_el1` refuses ID_AA64PFR0_EL1.EL1 = 0 (it
//!   arrived after 6.12; 6.12 accepts the lowering);
//! - the DebugVer floor: whether `set_id_aa64dfr0_el1` refuses ID_AA64DFR0_EL1.DebugVer = 5
//!   (every kernel vmfleet knows does; measured so that one that does not is followed);
//! - PMUVer = 0xF on a vCPU without a PMU: stored as 0 (6.7 on), kept (6.3–6.6) or refused
//!   (6.1), which also tells the two kinds of kernel without writable ID registers apart.
//!
//! The fleet asks a probe once, only when a verdict depends on it (a plan or a `set-model` write
//! vmfleet would refuse for want of the measurement: [`crate::fleet`]'s host queries), and
//! `host --fingerprint` asks them all live; both through the handles of whatever backend they
//! run on, so a recording records the probe's calls and a replay answers them.
//!
//! A probe: `KVM_CREATE_VM` (a logical id of its own, [`probe_vm`], the same in every run so a
//! replay finds the same stream), `KVM_ARM_PREFERRED_TARGET`, one vCPU, `KVM_ARM_VCPU_INIT`
//! with the default model's features (fixed, not the asking VM's: the answer is one per fleet,
//! the checks do not depend on the features, and the fingerprint's main vCPU facts are for the
//! same features, so the model engine can judge the probe's write too; the default has no PMU,
//! which the PMUVer probe needs), `KVM_GET_ONE_REG` of the register, `KVM_SET_ONE_REG` of it
//! with the one field changed (and for PMUVer, `KVM_GET_ONE_REG` again: what the kernel kept).
//! Then the vCPU and the VM are closed.
//!
//! On a kernel whose register is not writable at all (before 6.7) a floor write is refused too,
//! and reads as "enforced": vmfleet's prediction, `EINVAL`, is the kernel's answer either way.

use vcpu::model::arm64::host::{KernelProbe, KernelProbes, PmuImpDef};
use vcpu::model::arm64::{Arm64ModelSpec, catalog, fields};
use vcpu::{
    CallError, Errno, GuestArch, HandleError, Hypervisor, Reply, VcpuCall, VcpuHandle, VcpuId,
    VmCall, VmHandle, VmId,
};

/// A probe's scratch VM: its logical id (and so its trace stream) and the name it is created
/// with (a trace shows it). Fixed, kernel-probe ids ([`VmId::is_kernel_probe`]) at the top of the
/// range, far from the fleet's VMs and from the cross-checks' scratch VMs.
pub(crate) fn probe_vm(probe: KernelProbe) -> (VmId, &'static str) {
    match probe {
        KernelProbe::ElFloor => (VmId(u32::MAX), "el-floor-probe"),
        KernelProbe::DebugVerFloor => (VmId(u32::MAX - 1), "debug-ver-floor-probe"),
        KernelProbe::PmuImpDef => (VmId(u32::MAX - 2), "pmu-imp-def-probe"),
    }
}

/// What a probe measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeAnswer {
    /// A floor probe: whether the kernel refused the value below the floor (`EINVAL`).
    Floor(bool),
    /// The PMUVer probe.
    PmuImpDef(PmuImpDef),
}

impl ProbeAnswer {
    /// Put the answer of `probe` into `probes`.
    pub(crate) fn record(self, probe: KernelProbe, probes: &mut KernelProbes) {
        match (probe, self) {
            (KernelProbe::ElFloor, ProbeAnswer::Floor(f)) => probes.el_floor = Some(f),
            (KernelProbe::DebugVerFloor, ProbeAnswer::Floor(f)) => probes.debug_ver_floor = Some(f),
            (KernelProbe::PmuImpDef, ProbeAnswer::PmuImpDef(p)) => probes.pmu_imp_def = Some(p),
            // `measure` answers each probe with its own kind.
            _ => {}
        }
    }
}

/// What a probe says about itself in errors.
fn title(probe: KernelProbe) -> &'static str {
    match probe {
        KernelProbe::ElFloor => "the EL0/EL1 floor probe",
        KernelProbe::DebugVerFloor => "the DebugVer floor probe",
        KernelProbe::PmuImpDef => "the PMUVer = 0xF probe",
    }
}

/// A failed call of `probe`'s, as its error (the call names itself).
fn call_error(probe: KernelProbe) -> impl Fn(HandleError) -> ProbeError + Copy {
    move |source| ProbeError::Call {
        probe: title(probe),
        source,
    }
}

/// Why a probe could not be made.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProbeError {
    /// The probe VM could not be created.
    #[error("{probe}: creating the scratch VM {name}: {source}")]
    CreateVm {
        /// The probe.
        probe: &'static str,
        /// The scratch VM's name.
        name: &'static str,
        /// The call's error.
        source: CallError,
    },
    /// A call on the probe VM failed (it names the call).
    #[error("{probe}: {source}")]
    Call {
        /// The probe.
        probe: &'static str,
        /// The call's error.
        source: HandleError,
    },
    /// A call answered with a reply of the wrong kind.
    #[error("{probe}: {call} on {name}: unexpected reply {reply}")]
    UnexpectedReply {
        /// The probe.
        probe: &'static str,
        /// The scratch VM's name.
        name: &'static str,
        /// The call.
        call: &'static str,
        /// The reply it got, as text.
        reply: String,
    },
    /// The register's value leaves nothing to probe (e.g. EL1 = 0 already).
    #[error("{probe}: {name}'s {register} = {value:#018x} {why}")]
    NothingToProbe {
        /// The probe.
        probe: &'static str,
        /// The scratch VM's name.
        name: &'static str,
        /// The register.
        register: String,
        /// Its value after init.
        value: u64,
        /// What about it.
        why: &'static str,
    },
}

/// The answer of `probe`, measured on a scratch VM of `hv`. `None` on an x86 host (the rules are
/// arm64's).
pub(crate) fn measure(
    hv: &dyn Hypervisor,
    probe: KernelProbe,
) -> Result<Option<ProbeAnswer>, ProbeError> {
    if hv.arch() != GuestArch::Aarch64 {
        return Ok(None);
    }
    let (id, name) = probe_vm(probe);
    let vm = VmHandle::new(
        hv.create_vm(id, name)
            .map_err(|source| ProbeError::CreateVm {
                probe: title(probe),
                name,
                source,
            })?,
        name,
        hv.arch(),
    );
    let answer = probe_on(&vm, probe, name);
    let closed = vm.call(VmCall::Destroy).map_err(call_error(probe));
    let answer = answer?;
    closed?;
    Ok(Some(answer))
}

fn probe_on(
    vm: &VmHandle,
    probe: KernelProbe,
    name: &'static str,
) -> Result<ProbeAnswer, ProbeError> {
    let failed = call_error(probe);
    let target = match vm.call(VmCall::ArmPreferredTarget) {
        Ok(Reply::VcpuInit { target, .. }) => target,
        Ok(other) => {
            return Err(ProbeError::UnexpectedReply {
                probe: title(probe),
                name,
                call: "ARM_PREFERRED_TARGET",
                reply: other.to_string(),
            });
        }
        Err(e) => return Err(failed(e)),
    };
    let vcpu = vm.create_vcpu(VcpuId(0)).map_err(failed)?;
    let mut features = [0u32; 7];
    features[0] = Arm64ModelSpec::default().features.bits();
    let answer = vcpu
        .plain_call(VcpuCall::ArmVcpuInit { target, features })
        .map_err(failed)
        .and_then(|_| write_and_judge(&vcpu, probe, name));
    let closed = vcpu.plain_call(VcpuCall::Destroy).map_err(failed);
    let answer = answer?;
    closed?;
    Ok(answer)
}

/// The probe's write on an initialised vCPU, and what the kernel's answer says.
fn write_and_judge(
    vcpu: &VcpuHandle,
    probe: KernelProbe,
    name: &'static str,
) -> Result<ProbeAnswer, ProbeError> {
    let failed = call_error(probe);
    let (register, field, value) = match probe {
        KernelProbe::ElFloor => (catalog::ID_AA64PFR0_EL1, "EL1", 0),
        KernelProbe::DebugVerFloor => (catalog::ID_AA64DFR0_EL1, "DebugVer", 5),
        KernelProbe::PmuImpDef => (catalog::ID_AA64DFR0_EL1, "PMUVer", 0xF),
    };
    let nothing = |limit, why| ProbeError::NothingToProbe {
        probe: title(probe),
        name,
        register: register.to_string(),
        value: limit,
        why,
    };
    let id = register.kvm_reg_id();
    let limit = vcpu.get_one_reg(id).map_err(failed)?;
    let Some(f) = fields::field_of(register, field).map(|f| f.field()) else {
        return Err(nothing(limit, "has no such field in vmfleet's tables"));
    };
    match probe {
        KernelProbe::ElFloor if f.raw(limit) == 0 => return Err(nothing(limit, "has EL1 = 0")),
        KernelProbe::DebugVerFloor if f.raw(limit) <= value => {
            return Err(nothing(limit, "has DebugVer at or below 5"));
        }
        KernelProbe::PmuImpDef if f.raw(limit) != 0 => {
            return Err(nothing(limit, "has a PMU version without a PMU"));
        }
        _ => {}
    }
    let refused = match vcpu.set_one_reg(id, f.with(limit, value)) {
        Ok(_) => false,
        Err(e) if e.errno() == Some(Errno::EINVAL) => true,
        Err(e) => return Err(failed(e)),
    };
    if probe != KernelProbe::PmuImpDef {
        return Ok(ProbeAnswer::Floor(refused));
    }
    if refused {
        return Ok(ProbeAnswer::PmuImpDef(PmuImpDef::Refused));
    }
    let held = vcpu.get_one_reg(id).map_err(failed)?;
    match f.raw(held) {
        0 => Ok(ProbeAnswer::PmuImpDef(PmuImpDef::ReadsAsNotImplemented)),
        0xF => Ok(ProbeAnswer::PmuImpDef(PmuImpDef::Kept)),
        _ => Err(nothing(
            held,
            "after PMUVer = 0xF was accepted holds another PMUVer",
        )),
    }
}
