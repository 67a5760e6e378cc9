//! The arm64 half of the guest seam: bring the VM's vCPUs up (`KVM_ARM_VCPU_INIT`), read what the
//! kernel offers (the register list, the untouched values, the writable masks), plan the spec's
//! model with `vcpu::model::arm64` (every write judged by the kernel's rules before the kernel sees
//! it), write the accepted part through the lock, read it back, build the guest program that reads
//! the model back from inside, judge what the guest saw, and carry out the after-run writes.
//!
//! Nothing here is `cfg(target_arch)`: on an x86 host these run against the replay backend of a
//! trace recorded on real arm64 KVM, exactly as they ran there.

use super::{VmParts, refusal_text};
use crate::fleet::error::{
    AfterRunError, ConfigureError, CrossCheckError, HostQueryError, StartError,
};
use crate::fleet::lifecycle::{ModelDrifts, VcpuModelView};
use crate::fleet::probe::ProbeAnswer;
use crate::report::{
    AfterRunCrossCheck, Arm64Drift, Arm64GuestSummary, Arm64VmReport, Arm64WriteReport, DriftKind,
    VcpuReport, VmReport,
};
pub(in crate::fleet) use after_run::{Probing, RefusedAfterRun, try_after_run};
use std::collections::BTreeMap;
use std::sync::Arc;
use vcpu::guests::arm64::SmcccCall;
use vcpu::guests::arm64::decoder::Arm64GuestReport;
use vcpu::guests::arm64::{self as guest, Finish};
use vcpu::model::arm64::drift::{self, SeenCall, SeenRegister};
use vcpu::model::arm64::host::{KernelProbe, KernelProbes};
use vcpu::model::arm64::smccc;
use vcpu::model::arm64::{
    Arm64ModelSpec, Arm64Plan, HostView, RegClass, SysReg, VcpuFeatureSet, Verdict, WritableMasks,
    reg_id,
};
use vcpu::model::lock_policy;
use vcpu::runtime::runner::{self, RunLimits, RunOutcome, VcpuNotice};
use vcpu::{
    Errno, GuestArch, HandleError, Hypervisor, Reply, RunControl, VcpuCall, VcpuHandle, VcpuId,
    VmCall, VmHandle, VmId,
};

/// `KVM_ARM_VCPU_SVE`: the feature `KVM_ARM_VCPU_FINALIZE` takes for an SVE vCPU.
const KVM_ARM_VCPU_SVE: i32 = 4;

/// The arm64 state of one configured VM.
struct Arm64Vm {
    /// The model registers each vCPU holds after configuration, by id.
    held: Vec<BTreeMap<u64, u64>>,
    /// What the guest reads with `MRS`, in order.
    id_regs: Vec<SysReg>,
    /// What the guest calls with `HVC`, in order.
    calls: Vec<SmcccCall>,
    report: Arm64VmReport,
    /// What the kernel reported before any write (what every write is judged against).
    host: HostView,
    /// The vCPUs' VCPU_INIT features.
    features: VcpuFeatureSet,
    /// `KVM_ARM_PREFERRED_TARGET`'s target, which the vCPUs were initialised with.
    target: u32,
}

/// Where guest memory starts, and the least there is of it.
pub(super) const MEMORY: (u64, u64) = (guest::MEMORY_BASE, guest::MEMORY_SIZE);

/// Why `set-model --hide` does not apply to an arm64 VM (the reply puts the VM's name in front).
pub(super) const SET_MODEL_REFUSED: &str = "set-model --hide hides x86 CPUID features; an arm64 \
     VM's model is changed with --set REGISTER.FIELD=VALUE or REGISTER=VALUE";

/// How to run an arm64 fleet spec on a backend for other guests.
pub(super) const MISMATCH_HINT: &str = "; record it on an arm64 host, or in the arm64 lab \
     (`cargo xtask arm64-lab`), and replay the trace here";

/// One arm64 VM's guest: its model state, once configured.
#[derive(Default)]
pub(in crate::fleet) struct Arm64Guest {
    configured: Option<Box<Arm64Vm>>,
    /// Whether `KVM_CAP_ARM_WRITABLE_IMP_ID_REGS` was enabled on the VM before its vCPUs.
    writable_imp_id_regs: bool,
}

impl Arm64Guest {
    /// Before the first vCPU exists: when the spec changes MIDR_EL1, REVIDR_EL1 or AIDR_EL1 and
    /// the host offers `KVM_CAP_ARM_WRITABLE_IMP_ID_REGS` (239), enable it on the VM (the kernel
    /// takes it only while no vCPU has been created, flags 0). Without the capability the plan
    /// judges such a change refused (`EINVAL`), saying the capability is missing. A spec that
    /// changes none of them asks nothing, so its trace is what it was.
    pub(super) fn before_vcpus(&mut self, vm: VmParts<'_>) -> Result<(), ConfigureError> {
        let wants = vm
            .spec
            .arm64
            .as_ref()
            .is_some_and(|spec| spec.writes_implementation_id());
        if !wants || !vm.supported.writable_imp_id_regs()? {
            return Ok(());
        }
        match vm.vm.call(VmCall::EnableCap {
            cap: vcpu::hypervisor::abi::KVM_CAP_ARM_WRITABLE_IMP_ID_REGS,
            flags: 0,
            args: [0; 4],
        }) {
            Ok(Reply::Value(_)) => {
                self.writable_imp_id_regs = true;
                Ok(())
            }
            Ok(other) => Err(unexpected(
                "ENABLE_CAP(KVM_CAP_ARM_WRITABLE_IMP_ID_REGS)",
                &other,
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The arm64 model: vCPU init, the host view, the judged plan, the writes, the read-back.
    pub(super) fn configure(&mut self, vm: VmParts<'_>) -> Result<(), ConfigureError> {
        let spec = vm.spec.arm64.clone().unwrap_or_default();
        let ranges = vm.supported.mask_ranges()?;
        let cross_check = vm.spec.cross_check.then(|| CrossCheck {
            hv: vm.hv,
            vm: vm.vm.id(),
        });
        let measure = |probe| vm.supported.probe(probe);
        let configured = configure(
            ranges,
            self.writable_imp_id_regs,
            &measure,
            vm.vm,
            vm.vcpus,
            &spec,
            cross_check,
        )?;
        vm.report.vcpus = (0..vm.vcpus.len())
            .map(|index| super::unstarted_vcpu(index as u32))
            .collect();
        vm.report.arm64 = Some(configured.report.clone());
        self.configured = Some(Box::new(configured));
        Ok(())
    }

    /// The kernel's answers to after-run writes the lock refused, on a scratch VM that has run
    /// (`after_run.rs`); none unless the fleet cross-checks.
    pub(super) fn cross_check_after_run(
        &self,
        vm: VmParts<'_>,
        refused: &[RefusedAfterRun],
    ) -> Result<Vec<AfterRunCrossCheck>, AfterRunError> {
        let Some(arm64) = self.configured.as_ref().filter(|_| vm.spec.cross_check) else {
            return Ok(Vec::new());
        };
        let cross = CrossCheck {
            hv: vm.hv,
            vm: vm.vm.id(),
        };
        let like = after_run::ScratchLike {
            target: arm64.target,
            features: arm64.features,
            writable_imp_id_regs: self.writable_imp_id_regs,
        };
        let answers = after_run::kernel_answers(&cross, &vm.spec.name, &like, refused)?;
        Ok(answers
            .into_iter()
            .map(|(answer, agrees)| AfterRunCrossCheck { answer, agrees })
            .collect())
    }

    /// `set-model`'s writes (see `set_model.rs`), and the report's part of them.
    pub(super) fn write_model(
        &mut self,
        vm: VmParts<'_>,
        writes: &vcpu::model::arm64::model::Assignments,
    ) -> Result<(), ConfigureError> {
        let arm64 = self.configured.as_mut().ok_or(ConfigureError::NoVcpu)?;
        let measure = |probe| vm.supported.probe(probe);
        let reports = set_model::write(&vm.spec.name, vm.vm, vm.vcpus, arm64, writes, &measure)?;
        arm64.report.writes.extend(reports);
        vm.report.arm64 = Some(arm64.report.clone());
        Ok(())
    }

    /// Load the arm64 guest (generated from the model's register list), place every vCPU at its
    /// entry.
    pub(super) fn load(
        &self,
        vm: VmParts<'_>,
        pause_at_first_exit: bool,
    ) -> Result<Launch, StartError> {
        let arm64 = self.configured.as_ref().ok_or(StartError::NotConfigured)?;
        let finish = finish_for(vm.spec.vcpus);
        let program = guest::Arm64GuestProgram {
            id_regs: &arm64.id_regs,
            calls: &arm64.calls,
            repeats: vm.spec.probe_repeats,
            finish,
        };
        vm.vm
            .with_memory(|mem| guest::load(mem, &program, super::placement(vm.hv)))
            .map_err(|e| StartError::Load(Arc::new(e)))?;
        for vcpu in vm.vcpus {
            vcpu.set_boot_state(guest::ENTRY)?;
        }
        // Every pass is one tag and one value per register, a tag and four values per call,
        // and two pass markers; plus the final exit and room for kicks.
        let per_pass = 2 * arm64.id_regs.len() as u64 + 5 * arm64.calls.len() as u64 + 4;
        let exit_budget = program
            .passes()
            .map(|passes| u64::from(passes) * per_pass + 16);
        Ok(Launch {
            id_regs: arm64.id_regs.clone(),
            calls: arm64.calls.clone(),
            repeats: vm.spec.probe_repeats,
            finish,
            limits: RunLimits {
                exit_budget,
                record_exits: vm.spec.record_exits,
                pause_at_first_exit,
            },
        })
    }

    /// The model registers vCPU `index` holds, once configured.
    pub(super) fn held(&self, index: usize) -> Option<&BTreeMap<u64, u64>> {
        self.configured.as_ref().and_then(|a| a.held.get(index))
    }

    /// What `model` answers about one arm64 vCPU (`None` before the model is configured): its
    /// held registers' count and digest, the VM's drift.
    pub(super) fn view(&self, v: &VcpuReport, report: &VmReport) -> Option<VcpuModelView> {
        let arm64 = self.configured.as_ref()?;
        let held = arm64.held.get(v.id as usize);
        let (drift, drift_changes) = match &report.arm64 {
            Some(arm64) => (
                arm64.drift.iter().map(ToString::to_string).collect(),
                ModelDrifts::Arm64(arm64.drift.as_slice().into()),
            ),
            None => (
                Arc::clone(&v.drift),
                ModelDrifts::X86(Arc::clone(&v.drift_changes)),
            ),
        };
        Some(VcpuModelView {
            vcpu: v.id,
            entries: held.map_or(0, |h| h.len()),
            digest: format!("{:08x}", held.map_or(0, drift::digest)),
            drift,
            drift_changes,
            not_honoured: v.not_honoured.clone(),
            already_absent: v.already_absent.clone(),
        })
    }
}

/// What an arm64 vCPU thread runs: the guest generated from the model's register list.
#[derive(Clone, Debug)]
pub(in crate::fleet) struct Launch {
    id_regs: Vec<SysReg>,
    calls: Vec<SmcccCall>,
    repeats: u32,
    finish: Finish,
    pub(super) limits: RunLimits,
}

impl Launch {
    pub(super) fn run(
        self,
        vcpu: &VcpuHandle,
        control: &RunControl,
        notify: &mut dyn FnMut(VcpuNotice),
    ) -> RunOutcome<Arm64GuestReport> {
        let program = guest::Arm64GuestProgram {
            id_regs: &self.id_regs,
            calls: &self.calls,
            repeats: self.repeats,
            finish: self.finish,
        };
        let decoder = guest::decoder::Arm64Decoder::new(&program);
        runner::run_decoded(vcpu, decoder, self.limits, control, notify)
    }
}

/// What the guest saw, against what the vCPU holds (nothing to judge without a held model).
pub(super) fn judge(
    outcome: &RunOutcome<Arm64GuestReport>,
    held: Option<&BTreeMap<u64, u64>>,
    saw_nothing: bool,
    report: &mut VcpuReport,
) {
    report.arm64_guest = match (saw_nothing, held) {
        (false, Some(held)) => Some(guest_summary(&outcome.report, held)),
        _ => None,
    };
}

/// Where cross-checks run: a scratch VM of the same host, created for the purpose.
struct CrossCheck<'a> {
    pub hv: &'a Arc<dyn Hypervisor>,
    /// The VM being configured; its scratch VM gets a logical id derived from it.
    pub vm: VmId,
}

impl CrossCheck<'_> {
    /// Create the scratch VM `id` called `name` (its trace stream is its id's).
    fn scratch_vm(&self, id: VmId, name: String) -> Result<VmHandle, CrossCheckError> {
        let vm = self
            .hv
            .create_vm(id, &name)
            .map_err(CrossCheckError::CreateVm)?;
        Ok(VmHandle::new(vm, name, self.hv.arch()))
    }
}

/// Scratch VMs' logical ids: the configured VM's id with the top bit set, so that a replay gives
/// them the same streams.
const SCRATCH_VM_ID_BIT: u32 = 1 << 31;

/// Bring up the vCPUs and configure the model. Errors name the call or the rule that failed.
fn configure(
    mask_ranges: u64,
    writable_imp_id_regs: bool,
    measure: Measure<'_>,
    vm: &VmHandle,
    vcpus: &[Arc<VcpuHandle>],
    spec: &Arm64ModelSpec,
    cross_check: Option<CrossCheck<'_>>,
) -> Result<Arm64Vm, ConfigureError> {
    let target = match vm.call(VmCall::ArmPreferredTarget) {
        Ok(Reply::VcpuInit { target, .. }) => target,
        Ok(other) => return Err(unexpected("ARM_PREFERRED_TARGET", &other)),
        Err(e) => return Err(e.into()),
    };
    let mut features = [0u32; 7];
    features[0] = spec.features.bits();
    for vcpu in vcpus {
        vcpu.plain_call(VcpuCall::ArmVcpuInit { target, features })?;
        if spec.features.contains(vcpu::model::arm64::VcpuFeature::Sve) {
            vcpu.plain_call(VcpuCall::ArmVcpuFinalize {
                feature: KVM_ARM_VCPU_SVE,
            })?;
        }
        if spec
            .features
            .contains(vcpu::model::arm64::VcpuFeature::PmuV3)
        {
            vcpu.plain_call(VcpuCall::ArmPmuV3Init)?;
        }
    }
    let first = vcpus.first().ok_or(ConfigureError::NoVcpu)?;
    let mut host = HostView {
        writable_imp_id_regs,
        ..read_host_view(mask_ranges, vm, first)?
    };
    let mut plan = vcpu::model::arm64::plan(spec, &host).map_err(ConfigureError::Plan)?;
    // A write only some kernels refuse, with nothing to tell them apart: ask the kernel (once
    // per fleet, a probe write on a scratch VM) and plan again with its answer. A plan without
    // such a write asks nothing, so its trace is what it was.
    for _ in KernelProbe::ALL {
        let wanted = unmeasured_probes(&plan, &host.probes);
        if !measure_into(&wanted, measure, &mut host.probes)? {
            break;
        }
        plan = vcpu::model::arm64::plan(spec, &host).map_err(ConfigureError::Plan)?;
    }
    // The lock judges writes after the run by the same rules as the plan, against the same view.
    vm.set_arm64_lock_context(lock_policy::Arm64LockContext {
        host: host.clone(),
        features: spec.features,
    })?;

    let mut writes = Vec::new();
    for write in &plan.writes {
        // vmfleet's prediction and the kernel's answer must agree on every write it sent: a
        // write predicted accepted that the kernel refuses is a disagreement.
        let (sent, outcome, agrees) = match &write.verdict {
            Verdict::Refused(_) => (false, "not sent to the kernel".to_string(), true),
            verdict => match write_all(vcpus, write.reg_id, write.value) {
                Ok(()) => (true, "written".to_string(), true),
                Err(e) => (
                    true,
                    format!("the kernel refused it: {e}"),
                    !verdict.is_accepted(),
                ),
            },
        };
        writes.push(Arm64WriteReport {
            register: write.register.clone(),
            value: write.value,
            reason: write.reason.clone(),
            verdict: write.verdict.to_string(),
            sent,
            outcome,
            agrees,
            cross_check: None,
        });
    }
    if let Some(cross) = cross_check {
        let refused: Vec<(usize, u64, u64, Errno)> = plan
            .writes
            .iter()
            .enumerate()
            .filter_map(|(index, w)| {
                w.verdict
                    .refusal()
                    .map(|r| (index, w.reg_id, w.value, r.errno))
            })
            .collect();
        if !refused.is_empty() {
            let verdicts = scratch_verdicts(&cross, vm.name(), target, features, spec, &refused)?;
            for ((index, ..), (verdict, agrees)) in refused.iter().zip(verdicts) {
                writes[*index].cross_check = Some(verdict);
                writes[*index].agrees = agrees;
            }
        }
    }
    let mut unknown = Vec::new();
    for decision in &plan.unknown_registers {
        if decision.action == vcpu::model::arm64::model::plan::UnknownRegisterAction::WriteZero {
            write_all(vcpus, decision.reg_id, 0).map_err(|source| {
                ConfigureError::ClearUnknown {
                    register: decision.register.to_string(),
                    source,
                }
            })?;
        }
        unknown.push(decision.to_string());
    }

    let mut held = Vec::with_capacity(vcpus.len());
    for vcpu in vcpus {
        let mut values = BTreeMap::new();
        for &id in host.values.keys() {
            values.insert(id, vcpu.get_one_reg(id)?);
        }
        held.push(values);
    }
    let drift = drift_lines(&plan, &held[0]);

    let id_regs: Vec<SysReg> = host
        .register_ids
        .iter()
        .filter_map(|&id| match reg_id::classify(id) {
            RegClass::SysReg(reg) if lock_policy::is_model_register(GuestArch::Aarch64, id) => {
                Some(reg)
            }
            _ => None,
        })
        .take(guest::MAX_ID_REGS)
        .collect();
    let report = Arm64VmReport {
        features: spec.features.iter().map(|f| f.to_string()).collect(),
        registers_listed: host.register_ids.len(),
        registers_read: host.values.len(),
        masks: host.masks.source().to_string(),
        writes,
        unchanged: plan.unchanged.iter().map(ToString::to_string).collect(),
        unknown_policy: spec.unknown_registers.to_string(),
        unknown,
        drift,
    };
    Ok(Arm64Vm {
        held,
        id_regs,
        calls: guest_calls(),
        report,
        host,
        features: spec.features,
        target,
    })
}

/// How the fleet asks the host a kernel probe (once per fleet: [`super::super::supported`]).
pub(super) type Measure<'a> =
    &'a dyn Fn(KernelProbe) -> Result<Option<ProbeAnswer>, HostQueryError>;

/// The probes the plan's refusals wait for: writes refused only because a kernel rule was not
/// measured on this host.
fn unmeasured_probes(plan: &Arm64Plan, probes: &KernelProbes) -> Vec<KernelProbe> {
    let mut wanted: Vec<KernelProbe> = plan
        .writes
        .iter()
        .filter_map(|w| w.verdict.refusal().and_then(|r| r.rule.unmeasured_probe()))
        .filter(|p| !probes.is_measured(*p))
        .collect();
    wanted.sort();
    wanted.dedup();
    wanted
}

/// Measure each of `wanted` into `probes`; whether any answer was added.
pub(super) fn measure_into(
    wanted: &[KernelProbe],
    measure: Measure<'_>,
    probes: &mut KernelProbes,
) -> Result<bool, HostQueryError> {
    let mut added = false;
    for &probe in wanted {
        if let Some(answer) = measure(probe)? {
            answer.record(probe, probes);
            added |= probes.is_measured(probe);
        }
    }
    Ok(added)
}

/// Send each refused write to a scratch VM (a fresh VM, one vCPU initialised like the VM's):
/// the kernel's own verdict, and whether it is vmfleet's (the same errno). A write the kernel
/// accepts is undone (the host value written back) before the next one.
fn scratch_verdicts(
    cross: &CrossCheck<'_>,
    name: &str,
    target: u32,
    features: [u32; 7],
    spec: &Arm64ModelSpec,
    refused: &[(usize, u64, u64, Errno)],
) -> Result<Vec<(String, bool)>, CrossCheckError> {
    let scratch = cross.scratch_vm(
        VmId(cross.vm.0 | SCRATCH_VM_ID_BIT),
        format!("{name}-cross-check"),
    )?;
    let result = (|| {
        let vcpu = scratch
            .create_vcpu(VcpuId(0))
            .map_err(CrossCheckError::Call)?;
        vcpu.plain_call(VcpuCall::ArmVcpuInit { target, features })
            .map_err(CrossCheckError::Call)?;
        if spec.features.contains(vcpu::model::arm64::VcpuFeature::Sve) {
            vcpu.plain_call(VcpuCall::ArmVcpuFinalize {
                feature: KVM_ARM_VCPU_SVE,
            })
            .map_err(CrossCheckError::Call)?;
        }
        let mut verdicts = Vec::with_capacity(refused.len());
        for &(_, reg, value, errno) in refused {
            let before = vcpu.get_one_reg(reg).map_err(CrossCheckError::Call)?;
            let verdict = match vcpu.set_one_reg(reg, value) {
                Ok(_) => {
                    vcpu.set_one_reg(reg, before)
                        .map_err(CrossCheckError::Undo)?;
                    ("the kernel accepted it".to_string(), false)
                }
                Err(e) => match e.errno() {
                    Some(kernel) => (
                        format!("the kernel refused it too ({kernel})"),
                        kernel == errno,
                    ),
                    None => return Err(CrossCheckError::Call(e)),
                },
            };
            verdicts.push(verdict);
        }
        vcpu.plain_call(VcpuCall::Destroy)
            .map_err(CrossCheckError::Call)?;
        Ok(verdicts)
    })();
    scratch
        .call(VmCall::Destroy)
        .map_err(CrossCheckError::Close)?;
    result
}

/// Write `value` to register `id` of every vCPU, through the lock.
fn write_all(vcpus: &[Arc<VcpuHandle>], id: u64, value: u64) -> Result<(), HandleError> {
    for vcpu in vcpus {
        vcpu.set_one_reg(id, value)?;
    }
    Ok(())
}

/// The register list, every model register's untouched value, and the writable masks.
fn read_host_view(
    ranges: u64,
    vm: &VmHandle,
    vcpu: &VcpuHandle,
) -> Result<HostView, ConfigureError> {
    let register_ids = match vcpu.plain_call(VcpuCall::GetRegList) {
        Ok(Reply::RegList(ids)) => ids,
        Ok(other) => return Err(unexpected("GET_REG_LIST", &other)),
        Err(e) => return Err(e.into()),
    };
    let mut values = BTreeMap::new();
    for &id in register_ids
        .iter()
        .filter(|&&id| lock_policy::is_model_register(GuestArch::Aarch64, id))
    {
        values.insert(id, vcpu.get_one_reg(id)?);
    }
    let reported = if ranges != 0 {
        match vm.call(VmCall::ArmGetRegWritableMasks) {
            Ok(Reply::Masks(masks)) => Some(masks),
            Ok(other) => {
                return Err(unexpected("ARM_GET_REG_WRITABLE_MASKS", &other));
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let masks =
        WritableMasks::for_kernel(ranges, reported.as_deref()).map_err(ConfigureError::Masks)?;
    Ok(HostView {
        register_ids,
        values,
        masks,
        writable_imp_id_regs: false,
        probes: Default::default(),
    })
}

/// A reply that is not the one `call` answers with.
fn unexpected(call: &'static str, reply: &Reply) -> ConfigureError {
    ConfigureError::UnexpectedReply {
        call,
        reply: reply.to_string(),
    }
}

/// The SMCCC calls the guest makes: the versions, the workaround discovery, and one call of each
/// gated service, so that a service the model hides is seen as NOT_SUPPORTED from inside.
fn guest_calls() -> Vec<SmcccCall> {
    vec![
        SmcccCall::new(smccc::PSCI_VERSION),
        SmcccCall::new(smccc::SMCCC_VERSION),
        SmcccCall::with_arg(smccc::SMCCC_ARCH_FEATURES, 0x8000_8000),
        SmcccCall::with_arg(smccc::SMCCC_ARCH_FEATURES, 0x8000_7fff),
        SmcccCall::with_arg(smccc::SMCCC_ARCH_FEATURES, 0x8000_3fff),
        SmcccCall::new(smccc::TRNG_VERSION),
        SmcccCall::with_arg(smccc::PV_TIME_FEATURES, u64::from(smccc::PV_TIME_FEATURES)),
        SmcccCall::new(smccc::VENDOR_HYP_KVM_FEATURES),
        SmcccCall::new(smccc::VENDOR_HYP_CALL_UID),
    ]
}

/// How the guest ends: one vCPU powers the VM off; several park (a `SYSTEM_OFF` would freeze the
/// others mid-pass).
pub(super) fn finish_for(vcpus: u32) -> Finish {
    if vcpus == 1 {
        Finish::PowerOff
    } else {
        Finish::Park
    }
}

/// What the guest saw, judged by the model ([`drift::check_guest_view`]) against what its vCPU
/// holds, with the guest's own account of its passes and calls.
fn guest_summary(report: &Arm64GuestReport, held: &BTreeMap<u64, u64>) -> Arm64GuestSummary {
    let calls: Vec<String> = report.calls.iter().map(|c| c.describe()).collect();
    let registers: Vec<SeenRegister> = report
        .id_regs
        .iter()
        .map(|seen| SeenRegister {
            id: seen.id,
            value: seen.value,
        })
        .collect();
    let seen_calls: Vec<SeenCall> = report
        .calls
        .iter()
        .zip(&calls)
        .map(|(call, description)| SeenCall {
            function_id: call.function_id,
            x0: call.ret[0],
            description: description.clone(),
        })
        .collect();
    let check = drift::check_guest_view(&registers, &seen_calls, held);
    Arm64GuestSummary {
        passes: report.passes,
        registers_read: report.id_regs.len(),
        calls,
        passes_agree: report.passes_agree(),
        mismatches: check.mismatches,
    }
}

/// Where vCPU 0 holds something other than the plan expected to read back, as report lines.
fn drift_lines(plan: &Arm64Plan, held: &BTreeMap<u64, u64>) -> Vec<Arm64Drift> {
    drift::readback_drift(plan, held)
        .into_iter()
        .map(|d| Arm64Drift {
            register: d.register,
            from: d.expected,
            to: d.held,
            kind: DriftKind::KernelRewrote,
        })
        .collect()
}

mod after_run;
mod set_model;

#[cfg(test)]
mod tests;
