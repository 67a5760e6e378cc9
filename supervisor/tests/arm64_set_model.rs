//! An arm64 fleet on an in-memory kernel (this host need not be arm64): capability 239 enabled
//! before the first vCPU when a spec changes MIDR_EL1 and the host offers it (and not asked for
//! otherwise), the spec's raw register writes judged and written, and `set-model` carrying arm64
//! writes (refused `--hide`, refused bad names, judged writes before the first run).
//!
//! The kernel here takes any write except a changed MIDR_EL1 on a VM without the capability
//! (`EINVAL`, as `set_imp_id_reg` answers); nothing runs, so the lock's after-run rule is tested
//! in the fleet's unit tests (`fleet/guest/arm64/tests.rs`), not here.

use protocol::Request;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use supervisor::fleet::{ControlValue, Fleet};
use supervisor::spec;
use vcpu::hypervisor::abi::{
    KVM_ARM_FEATURE_ID_RANGE_SIZE, KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES,
    KVM_CAP_ARM_WRITABLE_IMP_ID_REGS,
};
use vcpu::hypervisor::backend::{Kick, Vcpu, Vm};
use vcpu::model::arm64::catalog::{ID_AA64ISAR0_EL1, MIDR_EL1};
use vcpu::{
    CallError, Errno, GuestArch, Hypervisor, LockRefusal, NoKick, Reply, RunDecision, SystemCall,
    VcpuCall, VcpuId, VmCall, VmId,
};
use vm_memory::GuestMemoryMmap;

const HOST_MIDR: u64 = 0x410f_d0c1;
const HOST_ISAR0: u64 = 0x0221_1000_1000_2120;

/// What the kernel was asked, in order, and the registers it holds (one set for every vCPU).
#[derive(Default)]
struct Kernel {
    calls: Mutex<Vec<String>>,
    regs: Mutex<BTreeMap<u64, u64>>,
    cap_enabled: Mutex<bool>,
}

impl Kernel {
    fn log(&self, call: impl ToString) {
        self.calls.lock().unwrap().push(call.to_string());
    }
}

struct Host {
    kernel: Arc<Kernel>,
    offers_239: bool,
}

struct FakeVm {
    id: VmId,
    kernel: Arc<Kernel>,
    memory: GuestMemoryMmap,
}

struct FakeVcpu {
    id: (VmId, VcpuId),
    kernel: Arc<Kernel>,
}

impl Hypervisor for Host {
    fn arch(&self) -> GuestArch {
        GuestArch::Aarch64
    }
    fn call(&self, call: &SystemCall) -> Result<Reply, CallError> {
        self.kernel.log(call);
        Ok(match call {
            SystemCall::CheckExtension { cap } if *cap == KVM_CAP_ARM_WRITABLE_IMP_ID_REGS => {
                Reply::Value(u64::from(self.offers_239))
            }
            SystemCall::CheckExtension { cap } if *cap == KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES => {
                Reply::Value(1)
            }
            SystemCall::CheckExtension { .. } => Reply::Value(0),
            _ => Reply::Done,
        })
    }
    fn create_vm(&self, id: VmId, _: &str) -> Result<Box<dyn Vm>, CallError> {
        Ok(Box::new(FakeVm {
            id,
            kernel: Arc::clone(&self.kernel),
            memory: GuestMemoryMmap::new(),
        }))
    }
}

impl Vm for FakeVm {
    fn id(&self) -> VmId {
        self.id
    }
    fn call(&mut self, call: &VmCall) -> Result<Reply, CallError> {
        self.kernel.log(call);
        Ok(match call {
            VmCall::ArmPreferredTarget => Reply::VcpuInit {
                target: 5,
                features: [0; 7],
            },
            VmCall::ArmGetRegWritableMasks => {
                Reply::Masks(vec![u64::MAX; KVM_ARM_FEATURE_ID_RANGE_SIZE])
            }
            VmCall::EnableCap { cap, .. } if *cap == KVM_CAP_ARM_WRITABLE_IMP_ID_REGS => {
                *self.kernel.cap_enabled.lock().unwrap() = true;
                Reply::Value(0)
            }
            _ => Reply::Done,
        })
    }
    fn create_vcpu(&mut self, vcpu: VcpuId) -> Result<Box<dyn Vcpu>, CallError> {
        self.kernel.log(VmCall::CreateVcpu { vcpu });
        Ok(Box::new(FakeVcpu {
            id: (self.id, vcpu),
            kernel: Arc::clone(&self.kernel),
        }))
    }
    fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }
}

impl Vcpu for FakeVcpu {
    fn id(&self) -> (VmId, VcpuId) {
        self.id
    }
    fn call(&mut self, call: &VcpuCall) -> Result<Reply, CallError> {
        let mut regs = self.kernel.regs.lock().unwrap();
        Ok(match call {
            VcpuCall::GetRegList => Reply::RegList(regs.keys().copied().collect()),
            VcpuCall::GetOneReg { id } => Reply::Value(regs.get(id).copied().unwrap_or(0)),
            VcpuCall::SetOneReg { id, value } => {
                let midr = MIDR_EL1.kvm_reg_id();
                if *id == midr
                    && regs.get(&midr) != Some(value)
                    && !*self.kernel.cap_enabled.lock().unwrap()
                {
                    return Err(CallError::Kernel(Errno::EINVAL));
                }
                regs.insert(*id, *value);
                Reply::Done
            }
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

fn kernel() -> Arc<Kernel> {
    let kernel = Kernel::default();
    *kernel.regs.lock().unwrap() = [
        (MIDR_EL1.kvm_reg_id(), HOST_MIDR),
        (ID_AA64ISAR0_EL1.kvm_reg_id(), HOST_ISAR0),
    ]
    .into();
    Arc::new(kernel)
}

const SPEC: &str = r#"
arch = "aarch64"

[[vm]]
name = "a"
vcpus = 2
[vm.arm64.registers]
MIDR_EL1 = "0x410fd4f2"
"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Create the spec's VMs on a host that offers capability 239 or not; the fleet and the kernel.
async fn create(text: &str, offers_239: bool) -> (Fleet, Arc<Kernel>) {
    let kernel = kernel();
    let hv: Arc<dyn Hypervisor> = Arc::new(Host {
        kernel: Arc::clone(&kernel),
        offers_239,
    });
    let spec = spec::parse(text, "test.toml").unwrap();
    let fleet = Fleet::new(hv, "t").await.unwrap();
    for created in fleet.create_all(spec.vms.clone()).await {
        created.unwrap();
    }
    (fleet, kernel)
}

fn position(calls: &[String], prefix: &str) -> Option<usize> {
    calls.iter().position(|c| c.starts_with(prefix))
}

#[test]
fn capability_239_is_enabled_before_the_first_vcpu_when_the_spec_changes_midr() {
    runtime().block_on(async {
        let (fleet, kernel) = create(SPEC, true).await;
        let calls = kernel.calls.lock().unwrap().clone();
        let enable = position(&calls, "ENABLE_CAP cap=239").expect("capability 239 enabled");
        let first_vcpu = position(&calls, "CREATE_VCPU").unwrap();
        assert!(enable < first_vcpu, "{calls:?}");
        let midr = kernel.regs.lock().unwrap()[&MIDR_EL1.kvm_reg_id()];
        assert_eq!(midr, 0x410f_d4f2);
        let report = fleet.remove("a").await.unwrap();
        let writes = &report.arm64.as_ref().unwrap().writes;
        assert!(
            writes.iter().any(|w| w.register == "MIDR_EL1"
                && w.sent
                && w.agrees
                && w.verdict.starts_with("accepted")),
            "{writes:?}"
        );
        fleet.shutdown().await;
    });
}

#[test]
fn without_capability_239_midr_is_refused_saying_so() {
    runtime().block_on(async {
        let (fleet, kernel) = create(SPEC, false).await;
        let calls = kernel.calls.lock().unwrap().clone();
        assert!(position(&calls, "ENABLE_CAP").is_none(), "{calls:?}");
        assert_eq!(
            kernel.regs.lock().unwrap()[&MIDR_EL1.kvm_reg_id()],
            HOST_MIDR
        );
        let report = fleet.remove("a").await.unwrap();
        let write = &report.arm64.as_ref().unwrap().writes[0];
        assert!(!write.sent, "{write:?}");
        assert!(
            write.verdict.contains("EINVAL")
                && write
                    .verdict
                    .contains("does not offer KVM_CAP_ARM_WRITABLE_IMP_ID_REGS"),
            "{write:?}"
        );
        fleet.shutdown().await;
    });
}

#[test]
fn a_spec_that_leaves_midr_alone_asks_nothing_about_capability_239() {
    runtime().block_on(async {
        let (fleet, kernel) = create(
            "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[vm.arm64.registers]\nID_AA64ISAR0_EL1 = \"0x0221100010002100\"\n",
            true,
        )
        .await;
        let calls = kernel.calls.lock().unwrap().clone();
        assert!(
            !calls.iter().any(|c| c.contains("239")),
            "capability 239 asked about: {calls:?}"
        );
        assert_eq!(
            kernel.regs.lock().unwrap()[&ID_AA64ISAR0_EL1.kvm_reg_id()],
            0x0221_1000_1000_2100
        );
        fleet.shutdown().await;
    });
}

#[test]
fn set_model_takes_arm64_writes_before_the_first_run() {
    runtime().block_on(async {
        let (fleet, kernel) = create(SPEC, false).await;
        let set = |items: &[&str]| Request::SetModel {
            vm: "a".into(),
            hide: vec![],
            set: items.iter().map(|s| s.to_string()).collect(),
        };
        // A lowered field: judged, written to every vCPU.
        let reply = fleet
            .handle(set(&["ID_AA64ISAR0_EL1.AES=0"]))
            .await
            .unwrap();
        assert!(matches!(reply, ControlValue::Model(_)));
        assert_eq!(
            kernel.regs.lock().unwrap()[&ID_AA64ISAR0_EL1.kvm_reg_id()],
            HOST_ISAR0 & !0xF0
        );
        // A raised one: refused by the model, the kernel never sees it.
        let before = kernel.calls.lock().unwrap().len();
        let e = fleet
            .handle(set(&["ID_AA64ISAR0_EL1.AES=3"]))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("AES") && e.contains("EINVAL"), "{e}");
        assert_eq!(kernel.calls.lock().unwrap().len(), before);
        // MIDR on a VM created without the capability.
        let e = fleet
            .handle(set(&["MIDR_EL1=0x410fd4f2"]))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("created without KVM_CAP_ARM_WRITABLE_IMP_ID_REGS"),
            "{e}"
        );
        // A typo, and x86's half of the request.
        let e = fleet
            .handle(set(&["MIDR_EL2=0"]))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `MIDR_EL1`"), "{e}");
        let e = fleet
            .handle(Request::SetModel {
                vm: "a".into(),
                hide: vec!["avx2".into()],
                set: vec![],
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("--hide hides x86 CPUID features"), "{e}");
        fleet.shutdown().await;
    });
}
