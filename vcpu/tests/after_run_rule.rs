//! One after-run rule for arm64 (issue 12): every write to a sealed VM is judged by the model's
//! function (`lock_policy::judge_one_reg`, i.e. `arm64::validate::judge_after_run`) and sent
//! through a `VcpuHandle` over a tiny in-memory kernel, and the two must give one answer: the
//! same errno, from the same origin (vmfleet's lock, the kernel never seeing the write; or the
//! kernel, the lock passing the write on). The host is the 6.12 VM of the reference log
//! (`data/arm64-kvm-6.12-cpu-max.log`), which freezes ID registers itself, and the same VM as a
//! 6.1 kernel (no writable masks), which does not.

mod common;

use common::reference;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use vcpu::model::arm64::catalog::{
    self, ID_AA64DFR0_EL1, ID_AA64ISAR0_EL1, ID_AA64PFR0_EL1, ID_DFR0_EL1, MIDR_EL1,
};
use vcpu::model::arm64::features::{VcpuFeature, VcpuFeatureSet};
use vcpu::model::arm64::host::HostView;
use vcpu::model::arm64::validate::{Verdict, WritableMasks, judge_after_run};
use vcpu::model::lock_policy::{self, Arm64LockContext, STRICTER_THAN_KERNEL};
use vcpu::{
    CallError, Errno, GuestArch, Kick, LockRefusal, NoKick, Reply, RunDecision, Vcpu, VcpuCall,
    VcpuExit, VcpuId, Vm, VmCall, VmHandle, VmId,
};
use vm_memory::GuestMemoryMmap;

/// The 6.12 VM of the log as vmfleet sees it right after the first VCPU_INIT; with `reported`
/// false, the same VM on a kernel without writable masks (6.1), which does not freeze ID
/// registers after the first run.
fn host(reported: bool) -> HostView {
    reference::host_6_12(if reported {
        reference::masks_after_init()
    } else {
        WritableMasks::PreWritableIdRegisters
    })
}

fn context(reported: bool) -> Arm64LockContext {
    Arm64LockContext {
        host: host(reported),
        features: VcpuFeatureSet::of(&[VcpuFeature::Psci0_2]),
    }
}

// ---- a tiny in-memory kernel ----------------------------------------------------------------

/// What reached the kernel, and what the lock reported refusing.
#[derive(Default)]
struct Log {
    regs: BTreeMap<u64, u64>,
    sets: Vec<(u64, u64)>,
    refused: Vec<(u64, Errno)>,
}

/// A vCPU whose registers hold what they are given (any value, at any time: only the lock stands
/// between a sealed VM and a change), and that runs by halting.
struct MemoryVcpu(Arc<Mutex<Log>>);

impl Vcpu for MemoryVcpu {
    fn id(&self) -> (VmId, VcpuId) {
        (VmId(0), VcpuId(0))
    }
    fn call(&mut self, call: &VcpuCall) -> Result<Reply, CallError> {
        let mut log = self.0.lock().unwrap();
        Ok(match call {
            VcpuCall::GetOneReg { id } => Reply::Value(log.regs.get(id).copied().unwrap_or(0)),
            VcpuCall::SetOneReg { id, value } => {
                log.regs.insert(*id, *value);
                log.sets.push((*id, *value));
                Reply::Done
            }
            VcpuCall::Run => Reply::Exit(VcpuExit::Hlt),
            _ => Reply::Done,
        })
    }
    fn note_refused(&mut self, call: &VcpuCall, refusal: &LockRefusal) -> Result<(), CallError> {
        let VcpuCall::SetOneReg { id, .. } = call else {
            panic!("refused {call}");
        };
        self.0.lock().unwrap().refused.push((*id, refusal.errno));
        Ok(())
    }
    fn kicker(&self) -> Arc<dyn Kick> {
        Arc::new(NoKick)
    }
    fn control_point(&mut self, wanted: RunDecision) -> Result<RunDecision, CallError> {
        Ok(wanted)
    }
}

struct MemoryVm(GuestMemoryMmap, Arc<Mutex<Log>>);

impl Vm for MemoryVm {
    fn id(&self) -> VmId {
        VmId(0)
    }
    fn call(&mut self, _: &VmCall) -> Result<Reply, CallError> {
        Ok(Reply::Done)
    }
    fn create_vcpu(&mut self, _: VcpuId) -> Result<Box<dyn Vcpu>, CallError> {
        Ok(Box::new(MemoryVcpu(Arc::clone(&self.1))))
    }
    fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.0
    }
}

// ---- one answer -----------------------------------------------------------------------------

/// Who answered a write, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// Passed on to the kernel, which took it.
    Kernel,
    /// Refused by vmfleet's lock with this errno; the kernel never saw it.
    Lock(Errno),
}

/// One case: after the run, write `value` to `id`, which holds the host's value.
struct Case {
    what: &'static str,
    id: u64,
    value: fn(u64) -> u64,
    /// The answer on 6.12.
    expected: Answer,
    /// The answer on 6.1, when it differs: 6.1 judges a change of a register it does not
    /// freeze by its before-run rule (only CSV2/CSV3 may change), so AES is `EINVAL` there.
    on_6_1: Option<Answer>,
}

impl Case {
    fn expected(&self, reported: bool) -> Answer {
        match (reported, self.on_6_1) {
            (false, Some(answer)) => answer,
            _ => self.expected,
        }
    }
}

/// The model's answer and the handle's, for `case` on a sealed VM whose kernel is `reported`
/// (6.12) or not (6.1); both must be `case.expected`. Returns the lock's refusal text, if any.
fn one_answer(case: &Case, reported: bool) -> Option<String> {
    let ctx = context(reported);
    let held = ctx
        .host
        .value(case.id)
        .expect("the host holds the register");
    let value = (case.value)(held);
    let label = format!("{} ({})", case.what, if reported { "6.12" } else { "6.1" });

    // The model: the lock's policy, and the arm64 after-run judgement under it.
    let policy = lock_policy::judge_one_reg(case.id, held, value, &ctx);
    let verdict = judge_after_run(case.id, value, held, &ctx.host, ctx.features);
    let model = match (&policy, &verdict) {
        (None, Verdict::Accepted { .. }) => Answer::Kernel,
        (Some(m), Verdict::Refused(r)) if m.errno == r.errno => Answer::Lock(m.errno),
        other => panic!("{label}: the policy and the arm64 judgement differ: {other:?}"),
    };

    // The handle, over the in-memory kernel holding the host's values.
    let log = Arc::new(Mutex::new(Log {
        regs: ctx.host.values.clone(),
        ..Log::default()
    }));
    let vm = VmHandle::new(
        Box::new(MemoryVm(GuestMemoryMmap::new(), Arc::clone(&log))),
        "one-answer",
        GuestArch::Aarch64,
    );
    vm.set_arm64_lock_context(ctx).unwrap();
    let vcpu = vm.create_vcpu(VcpuId(0)).unwrap();
    vcpu.run().unwrap();
    let predicted = vcpu.judge_after_run(case.id, value, held).unwrap();
    assert_eq!(predicted, policy, "{label}: the handle's prediction");
    let result = vcpu.set_one_reg(case.id, value);
    let log = log.lock().unwrap();
    let sent = log.sets.contains(&(case.id, value));
    let (handle, text) = match &result {
        Ok(write) => {
            assert!(write.after_run && sent, "{label}");
            assert!(log.refused.is_empty(), "{label}");
            (Answer::Kernel, None)
        }
        Err(e) => {
            assert!(e.is_lock_refusal(), "{label}: {e}");
            assert!(!sent, "{label}: a refused write reached the kernel");
            let errno = e.errno().expect("a lock refusal carries an errno");
            assert_eq!(log.refused, [(case.id, errno)], "{label}");
            (Answer::Lock(errno), Some(e.to_string()))
        }
    };
    assert_eq!(model, handle, "{label}: the model and the lock differ");
    assert_eq!(handle, case.expected(reported), "{label}");
    text
}

fn cases() -> Vec<Case> {
    let pmuver = |v: u64| v | 0xF << 8;
    vec![
        Case {
            what: "MIDR_EL1 changed (no capability 239)",
            id: MIDR_EL1.kvm_reg_id(),
            value: |v| v ^ 1,
            expected: Answer::Lock(Errno::EINVAL),
            on_6_1: None,
        },
        Case {
            what: "MIDR_EL1 identical",
            id: MIDR_EL1.kvm_reg_id(),
            value: |v| v,
            expected: Answer::Kernel,
            on_6_1: None,
        },
        Case {
            what: "ID_AA64DFR0_EL1.PMUVer 0xF over a held 0",
            id: ID_AA64DFR0_EL1.kvm_reg_id(),
            value: pmuver,
            expected: Answer::Kernel,
            // 6.1 has no PMUVer handler (its ID_AA64DFR0_EL1 is invariant): unmeasured, vmfleet
            // assumes the refusal (`probes.pmu_imp_def`).
            on_6_1: Some(Answer::Lock(Errno::EINVAL)),
        },
        Case {
            what: "ID_DFR0_EL1.PerfMon 0xF over a held 0",
            id: ID_DFR0_EL1.kvm_reg_id(),
            value: |v| v | 0xF << 24,
            expected: Answer::Kernel,
            on_6_1: None,
        },
        Case {
            what: "ID_AA64PFR0_EL1.EL0 = 0",
            id: ID_AA64PFR0_EL1.kvm_reg_id(),
            value: |v| v & !0xF,
            expected: Answer::Lock(Errno::EINVAL),
            on_6_1: None,
        },
        Case {
            what: "ID_AA64PFR0_EL1.EL1 = 0",
            id: ID_AA64PFR0_EL1.kvm_reg_id(),
            value: |v| v & !0xF0,
            expected: Answer::Lock(Errno::EINVAL),
            on_6_1: None,
        },
        Case {
            what: "ID_AA64PFR0_EL1.CSV3 changed",
            id: ID_AA64PFR0_EL1.kvm_reg_id(),
            value: |v| v ^ 1 << 60,
            expected: Answer::Lock(Errno::EBUSY),
            on_6_1: None,
        },
        Case {
            what: "ID_AA64ISAR0_EL1.AES lowered",
            id: ID_AA64ISAR0_EL1.kvm_reg_id(),
            value: |v| v & !0xF0,
            expected: Answer::Lock(Errno::EBUSY),
            on_6_1: Some(Answer::Lock(Errno::EINVAL)),
        },
        Case {
            what: "ID_AA64PFR0_EL1 identical",
            id: ID_AA64PFR0_EL1.kvm_reg_id(),
            value: |v| v,
            expected: Answer::Kernel,
            on_6_1: None,
        },
        Case {
            what: "CLIDR_EL1 identical",
            id: catalog::CLIDR_EL1.kvm_reg_id(),
            value: |v| v,
            expected: Answer::Kernel,
            on_6_1: None,
        },
    ]
}

#[test]
fn the_model_and_the_lock_give_one_answer_on_a_kernel_that_freezes_id_registers() {
    let host = host(true);
    let dfr0 = host.value(ID_AA64DFR0_EL1.kvm_reg_id()).unwrap();
    assert_eq!((dfr0 >> 8) & 0xF, 0, "the 6.12 max VM holds PMUVer 0");
    assert_eq!(
        (host.value(ID_DFR0_EL1.kvm_reg_id()).unwrap() >> 24) & 0xF,
        0,
        "and PerfMon 0"
    );
    for case in cases() {
        if let Some(text) = one_answer(&case, true) {
            // 6.12 freezes these itself: nothing is flagged as vmfleet's own rule.
            assert!(
                !text.contains(STRICTER_THAN_KERNEL),
                "{}: {text}",
                case.what
            );
        }
    }
}

#[test]
fn the_model_and_the_lock_give_one_answer_on_a_kernel_that_does_not() {
    for case in cases() {
        let text = one_answer(&case, false);
        // Only a change 6.1 would take is vmfleet's stricter rule, and says so.
        let flagged = text
            .as_deref()
            .is_some_and(|t| t.contains(&format!("rule: {STRICTER_THAN_KERNEL}")));
        assert_eq!(
            flagged,
            case.expected(false) == Answer::Lock(Errno::EBUSY),
            "{}: {text:?}",
            case.what
        );
    }
}

/// The refusal texts: a change keeps the lock's wording (what the kernel holds); a write a set
/// handler refuses says which rule, with the kernel's errno, in the lock's details.
#[test]
fn refusals_say_which_rule_refused() {
    let midr = one_answer(&cases()[0], true).unwrap();
    assert!(
        midr.contains("difference: MIDR_EL1: requested ")
            && midr.contains("KVM_CAP_ARM_WRITABLE_IMP_ID_REGS (239)")
            && midr.contains("errno: EINVAL"),
        "{midr}"
    );
    let el0 = one_answer(&cases()[4], true).unwrap();
    assert!(
        el0.contains("vm0/vcpu0: ID_AA64PFR0_EL1.EL0 2 → 0 refused: ")
            && el0.contains("the set handler refuses values below 0x1")
            && el0.contains("errno: EINVAL"),
        "{el0}"
    );
    let csv3 = one_answer(&cases()[6], true).unwrap();
    assert!(
        csv3.contains("difference: the kernel holds 0x") && csv3.contains("errno: EBUSY"),
        "{csv3}"
    );
}

#[test]
fn a_probe_measured_after_configure_reaches_the_lock() {
    // The context is given unmeasured; a set-model write before the run then measured the
    // EL0/EL1 floor (this host accepts the lowering, as 6.12 does). After the run, EL1 = 0 is a
    // change of a frozen register (EBUSY), not the floor the lock assumed before (EINVAL).
    let ctx = context(true);
    let id = ID_AA64PFR0_EL1.kvm_reg_id();
    let held = ctx.host.value(id).unwrap();
    let log = Arc::new(Mutex::new(Log {
        regs: ctx.host.values.clone(),
        ..Log::default()
    }));
    let vm = VmHandle::new(
        Box::new(MemoryVm(GuestMemoryMmap::new(), Arc::clone(&log))),
        "learns",
        GuestArch::Aarch64,
    );
    vm.set_arm64_lock_context(ctx).unwrap();
    let vcpu = vm.create_vcpu(VcpuId(0)).unwrap();
    vcpu.run().unwrap();
    let lowered = held & !0xF0;
    let errno = |vcpu: &vcpu::VcpuHandle| {
        vcpu.judge_after_run(id, lowered, held)
            .unwrap()
            .map(|m| m.errno)
    };
    assert_eq!(
        errno(&vcpu),
        Some(Errno::EINVAL),
        "unmeasured: the floor assumed"
    );
    let accepts = vcpu::model::arm64::host::KernelProbes {
        el_floor: Some(false),
        ..Default::default()
    };
    vm.learn_kernel_probes(&accepts);
    assert_eq!(
        errno(&vcpu),
        Some(Errno::EBUSY),
        "measured: frozen, not below a floor"
    );
    // An answer once learned stays: the host's kernel does not change its mind.
    vm.learn_kernel_probes(&vcpu::model::arm64::host::KernelProbes {
        el_floor: Some(true),
        ..Default::default()
    });
    assert_eq!(errno(&vcpu), Some(Errno::EBUSY));
    let refused = vcpu.set_one_reg(id, lowered).unwrap_err();
    assert_eq!(refused.errno(), Some(Errno::EBUSY), "{refused}");
}

#[test]
fn kvm_run_goes_through_run_which_seals_the_lock() {
    let log = Arc::new(Mutex::new(Log::default()));
    let vm = VmHandle::new(
        Box::new(MemoryVm(GuestMemoryMmap::new(), Arc::clone(&log))),
        "runs",
        GuestArch::Aarch64,
    );
    let vcpu = vm.create_vcpu(VcpuId(0)).unwrap();
    // A plain call cannot run the vCPU around the lock.
    let e = vcpu.plain_call(VcpuCall::Run).unwrap_err();
    assert!(e.to_string().contains("must go through run()"), "{e}");
    assert_eq!(vm.lock().state(), vcpu::Seal::Open);
    vcpu.run().unwrap();
    assert!(matches!(vm.lock().state(), vcpu::Seal::Sealed { .. }));
}
