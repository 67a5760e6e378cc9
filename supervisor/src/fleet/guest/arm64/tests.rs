//! The fleet's after-run writes on arm64 against the lock: what `try_after_run` expects is what
//! the lock answers, for the cases of issue 12 (PMUVer 0xF over a held 0 is identical, EL0 = 0
//! and a changed MIDR_EL1 are the kernel's EINVAL, a changed CSV3 is EBUSY), over an in-memory
//! kernel that would take any value.

use super::*;
use crate::report::Verdict as LockVerdict;
use crate::spec::AfterRun;
use std::sync::Mutex;
use vcpu::model::arm64::catalog::{ID_AA64DFR0_EL1, ID_AA64PFR0_EL1, MIDR_EL1};
use vcpu::model::arm64::fields;
use vcpu::model::lock_policy::Arm64LockContext;
use vcpu::{CallError, Kick, LockRefusal, NoKick, RunDecision, Vcpu, VcpuExit, Vm};
use vm_memory::GuestMemoryMmap;

/// Registers that hold what they are given, shared by the VM's vCPUs.
struct Registers(Arc<Mutex<BTreeMap<u64, u64>>>);

impl Vcpu for Registers {
    fn id(&self) -> (VmId, VcpuId) {
        (VmId(0), VcpuId(0))
    }
    fn call(&mut self, call: &VcpuCall) -> Result<Reply, CallError> {
        let mut regs = self.0.lock().unwrap();
        Ok(match call {
            VcpuCall::GetRegList => Reply::RegList(regs.keys().copied().collect()),
            VcpuCall::GetOneReg { id } => Reply::Value(regs.get(id).copied().unwrap_or(0)),
            VcpuCall::SetOneReg { id, value } => {
                regs.insert(*id, *value);
                Reply::Done
            }
            VcpuCall::Run => Reply::Exit(VcpuExit::Hlt),
            _ => Reply::Done,
        })
    }
    fn note_refused(&mut self, _: &VcpuCall, _: &LockRefusal) -> Result<(), CallError> {
        Ok(())
    }
    fn kicker(&self) -> Arc<dyn Kick> {
        Arc::new(NoKick)
    }
    fn control_point(&mut self, wanted: RunDecision) -> Result<RunDecision, CallError> {
        Ok(wanted)
    }
}

struct OneVm(GuestMemoryMmap, Arc<Mutex<BTreeMap<u64, u64>>>);

impl Vm for OneVm {
    fn id(&self) -> VmId {
        VmId(0)
    }
    fn call(&mut self, _: &VmCall) -> Result<Reply, CallError> {
        Ok(Reply::Done)
    }
    fn create_vcpu(&mut self, _: VcpuId) -> Result<Box<dyn Vcpu>, CallError> {
        Ok(Box::new(Registers(Arc::clone(&self.1))))
    }
    fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.0
    }
}

/// A sealed VM whose kernel (6.12-like: it reports writable masks) holds PFR0 with EL0 = EL1 =
/// 1 and CSV3 = 1, AA64DFR0 with PMUVer 0 and DebugVer 8, and a MIDR.
fn sealed_vcpu() -> VcpuHandle {
    let values: BTreeMap<u64, u64> = [
        (ID_AA64PFR0_EL1.kvm_reg_id(), 1 << 60 | 0x11),
        (ID_AA64DFR0_EL1.kvm_reg_id(), 0x8),
        (MIDR_EL1.kvm_reg_id(), 0x410f_d0c1),
    ]
    .into();
    let masks = vec![u64::MAX; vcpu::hypervisor::abi::KVM_ARM_FEATURE_ID_RANGE_SIZE];
    let vm = VmHandle::new(
        Box::new(OneVm(
            GuestMemoryMmap::new(),
            Arc::new(Mutex::new(values.clone())),
        )),
        "after-run",
        GuestArch::Aarch64,
    );
    vm.set_arm64_lock_context(Arm64LockContext {
        host: HostView {
            register_ids: values.keys().copied().collect(),
            values,
            masks: WritableMasks::from_reported(&masks).unwrap(),
            writable_imp_id_regs: false,
            probes: Default::default(),
        },
        features: Default::default(),
    })
    .unwrap();
    let vcpu = vm.create_vcpu(VcpuId(0)).unwrap();
    vcpu.run().unwrap();
    vcpu
}

fn set(register: SysReg, field: &str, value: u64) -> AfterRun {
    AfterRun::SetField {
        field: fields::field_of(register, field).unwrap(),
        value,
        vcpu: None,
    }
}

#[test]
fn what_the_fleet_expects_is_what_the_lock_answers() {
    let vcpu = sealed_vcpu();
    // Rewrite-identical first: this kernel keeps PMUVer 0xF as written, where KVM stores 0.
    let cases = [
        (
            AfterRun::RewriteIdentical { vcpu: None },
            LockVerdict::Allowed,
            None,
        ),
        (
            set(ID_AA64DFR0_EL1, "PMUVer", 0xF),
            LockVerdict::Allowed,
            None,
        ),
        (
            set(ID_AA64PFR0_EL1, "EL0", 0),
            LockVerdict::RefusedByLock,
            Some("errno: EINVAL"),
        ),
        (
            set(ID_AA64PFR0_EL1, "CSV3", 0),
            LockVerdict::RefusedByLock,
            Some("errno: EBUSY"),
        ),
    ];
    for (action, verdict, errno) in cases {
        let (report, _) = try_after_run(&vcpu, &action, None).unwrap();
        assert_eq!(report.expected, verdict, "{}", report.action);
        assert_eq!(report.outcome, verdict, "{}", report.action);
        match errno {
            Some(errno) => {
                let message = report.message.unwrap();
                assert!(message.contains(errno), "{message}");
            }
            None => assert_eq!(report.message, None, "{}", report.action),
        }
    }
    // A changed MIDR_EL1 (no capability 239): the kernel's EINVAL, from the lock.
    let midr = MIDR_EL1.kvm_reg_id();
    let refused = vcpu.set_one_reg(midr, 0x410f_d0c2).unwrap_err();
    assert!(refused.is_lock_refusal(), "{refused}");
    assert_eq!(refused.errno(), Some(Errno::EINVAL));
    assert!(vcpu.set_one_reg(midr, 0x410f_d0c1).is_ok());
}

/// An open VM of one vCPU over the same in-memory kernel as [`sealed_vcpu`], and the state
/// `configure` would have left for it.
fn open_vm() -> (VmHandle, Arc<VcpuHandle>, Arm64Vm) {
    let values: BTreeMap<u64, u64> = [
        (ID_AA64PFR0_EL1.kvm_reg_id(), 1 << 60 | 0x11),
        (MIDR_EL1.kvm_reg_id(), 0x410f_d0c1),
    ]
    .into();
    let masks = vec![u64::MAX; vcpu::hypervisor::abi::KVM_ARM_FEATURE_ID_RANGE_SIZE];
    let host = HostView {
        register_ids: values.keys().copied().collect(),
        values: values.clone(),
        masks: WritableMasks::from_reported(&masks).unwrap(),
        writable_imp_id_regs: false,
        probes: Default::default(),
    };
    let vm = VmHandle::new(
        Box::new(OneVm(
            GuestMemoryMmap::new(),
            Arc::new(Mutex::new(values.clone())),
        )),
        "set-model",
        GuestArch::Aarch64,
    );
    vm.set_arm64_lock_context(Arm64LockContext {
        host: host.clone(),
        features: Default::default(),
    })
    .unwrap();
    let vcpu = Arc::new(vm.create_vcpu(VcpuId(0)).unwrap());
    let state = Arm64Vm {
        target: 5,
        held: vec![values],
        id_regs: Vec::new(),
        calls: Vec::new(),
        report: Arm64VmReport {
            features: Vec::new(),
            registers_listed: 2,
            registers_read: 2,
            masks: String::new(),
            writes: Vec::new(),
            unchanged: Vec::new(),
            unknown_policy: String::new(),
            unknown: Vec::new(),
            drift: Vec::new(),
        },
        host,
        features: Default::default(),
    };
    (vm, vcpu, state)
}

fn assignments(items: &[&str]) -> vcpu::model::arm64::model::Assignments {
    let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    vcpu::model::arm64::model::Assignments::parse(&items).unwrap()
}

#[test]
fn set_model_writes_before_the_run_and_only_identical_rewrites_after() {
    let (vm, vcpu, mut state) = open_vm();
    let vcpus = [Arc::clone(&vcpu)];
    let pfr0 = ID_AA64PFR0_EL1.kvm_reg_id();
    // Before the run: a lowered field is judged by the model, written, and read back.
    let reports = set_model::write(
        "a",
        &vm,
        &vcpus,
        &mut state,
        &assignments(&["ID_AA64PFR0_EL1.CSV3=0"]),
        &|probe| panic!("no kernel probe is needed here: {probe:?}"),
    )
    .unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].register, "ID_AA64PFR0_EL1");
    assert!(
        reports[0].verdict.starts_with("accepted"),
        "{:?}",
        reports[0]
    );
    assert_eq!(state.held[0][&pfr0], 0x11);
    assert_eq!(vcpu.get_one_reg(pfr0).unwrap(), 0x11);
    // MIDR_EL1 on a VM created without capability 239: refused before anything is written,
    // saying why, and the other write of the request is not made either.
    let e = set_model::write(
        "a",
        &vm,
        &vcpus,
        &mut state,
        &assignments(&["MIDR_EL1=0x410fd0c2", "ID_AA64PFR0_EL1=0x1000000000000011"]),
        &|probe| panic!("no kernel probe is needed here: {probe:?}"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("EINVAL") && e.contains("created without KVM_CAP_ARM_WRITABLE_IMP_ID_REGS"),
        "{e}"
    );
    assert_eq!(vcpu.get_one_reg(pfr0).unwrap(), 0x11);
    // After the run: a change is the lock's EBUSY, an identical rewrite passes.
    vcpu.run().unwrap();
    let e = set_model::write(
        "a",
        &vm,
        &vcpus,
        &mut state,
        &assignments(&["ID_AA64PFR0_EL1.CSV3=1"]),
        &|probe| panic!("no kernel probe is needed here: {probe:?}"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("EBUSY"), "{e}");
    let reports = set_model::write(
        "a",
        &vm,
        &vcpus,
        &mut state,
        &assignments(&["ID_AA64PFR0_EL1=0x11"]),
        &|probe| panic!("no kernel probe is needed here: {probe:?}"),
    )
    .unwrap();
    assert!(reports[0].verdict.contains("identical"), "{:?}", reports[0]);
}

/// After the run `set-model` composes its field writes over what the kernel holds then, not over
/// what was read back before the run: KVM clears ID_AA64PFR0_EL1.GIC at the first run of a VM
/// without a vGIC, and rewriting CSV3 with the value it holds must stay an identical rewrite.
#[test]
fn after_the_run_set_model_writes_over_what_the_kernel_holds_now() {
    let (vm, vcpu, mut state) = open_vm();
    let vcpus = [Arc::clone(&vcpu)];
    let pfr0 = ID_AA64PFR0_EL1.kvm_reg_id();
    // Read back before the run with GIC = 1; the kernel holds GIC = 0 since.
    state.held[0].insert(pfr0, 1 << 60 | 1 << 24 | 0x11);
    vcpu.run().unwrap();
    let reports = set_model::write(
        "a",
        &vm,
        &vcpus,
        &mut state,
        &assignments(&["ID_AA64PFR0_EL1.CSV3=1"]),
        &|probe| panic!("no kernel probe is needed here: {probe:?}"),
    )
    .unwrap();
    assert!(reports[0].verdict.contains("identical"), "{:?}", reports[0]);
    assert_eq!(reports[0].value, 1 << 60 | 0x11);
    assert_eq!(state.held[0][&pfr0], 1 << 60 | 0x11);
    // A change is still the lock's EBUSY.
    let e = set_model::write(
        "a",
        &vm,
        &vcpus,
        &mut state,
        &assignments(&["ID_AA64PFR0_EL1.CSV3=0"]),
        &|probe| panic!("no kernel probe is needed here: {probe:?}"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("EBUSY"), "{e}");
}
