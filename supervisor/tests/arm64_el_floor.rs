//! The EL0/EL1 floor on an in-memory arm64 kernel (this host need not be arm64): a spec that
//! lowers ID_AA64PFR0_EL1.EL1 to 0 makes the fleet ask the kernel once, by a probe write on a
//! scratch VM, and plan by its answer: a kernel that accepts the lowering (6.12) → vmfleet
//! accepts and writes it; one that refuses it (after 6.12) → vmfleet refuses it with `EINVAL`,
//! naming the field, the minimum and that the host enforces it, and does not send it. A spec
//! that lowers nothing asks nothing (so recorded traces replay as they did).
//!
//! Recorded, the probe's calls are in the trace like every call: the trace replays with them,
//! and `trace fingerprint`'s facts carry its answer.
//!
//! Each VM has its own registers here (a probe VM's write must not reach the fleet's VMs).

use recorder::{
    HostFingerprint, JobInputs, Recorder, RecordingHypervisor, ReplayHypervisor, Trace, TraceEnd,
    TraceHeader,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use supervisor::fleet::Fleet;
use supervisor::spec;
use vcpu::hypervisor::abi::{KVM_ARM_FEATURE_ID_RANGE_SIZE, KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES};
use vcpu::hypervisor::backend::{Kick, Vcpu, Vm};
use vcpu::model::arm64::catalog::{ID_AA64ISAR0_EL1, ID_AA64PFR0_EL1};
use vcpu::{
    CallError, Errno, GuestArch, Hypervisor, LockRefusal, NoKick, Reply, RunDecision, SystemCall,
    VcpuCall, VcpuId, VmCall, VmId,
};
use vm_memory::GuestMemoryMmap;

/// EL0 = EL1 = 1 (AArch64 only), FP/AdvSIMD implemented, GIC 1.
const HOST_PFR0: u64 = 0x0000_0000_0100_0011;
const HOST_ISAR0: u64 = 0x0221_1000_1000_2120;

/// The kernel: whether it refuses EL0/EL1 = 0, what it was asked, and every VM's registers.
struct Kernel {
    enforces_floor: bool,
    calls: Mutex<Vec<String>>,
    regs: Mutex<BTreeMap<VmId, BTreeMap<u64, u64>>>,
}

impl Kernel {
    fn log(&self, call: impl ToString) {
        self.calls.lock().unwrap().push(call.to_string());
    }
}

struct Host(Arc<Kernel>);

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
        self.0.log(call);
        Ok(match call {
            SystemCall::CheckExtension { cap } if *cap == KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES => {
                Reply::Value(1)
            }
            SystemCall::CheckExtension { .. } => Reply::Value(0),
            _ => Reply::Done,
        })
    }
    fn create_vm(&self, id: VmId, name: &str) -> Result<Box<dyn Vm>, CallError> {
        self.0.log(format!("CREATE_VM {} {name}", id.0));
        self.0.regs.lock().unwrap().insert(
            id,
            [
                (ID_AA64PFR0_EL1.kvm_reg_id(), HOST_PFR0),
                (ID_AA64ISAR0_EL1.kvm_reg_id(), HOST_ISAR0),
            ]
            .into(),
        );
        Ok(Box::new(FakeVm {
            id,
            kernel: Arc::clone(&self.0),
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
            _ => Reply::Done,
        })
    }
    fn create_vcpu(&mut self, vcpu: VcpuId) -> Result<Box<dyn Vcpu>, CallError> {
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
        let mut all = self.kernel.regs.lock().unwrap();
        let regs = all.get_mut(&self.id.0).unwrap();
        Ok(match call {
            VcpuCall::GetRegList => Reply::RegList(regs.keys().copied().collect()),
            VcpuCall::GetOneReg { id } => Reply::Value(regs.get(id).copied().unwrap_or(0)),
            VcpuCall::SetOneReg { id, value } => {
                // set_id_aa64pfr0_el1 after 6.12: EL0 == 0 || EL1 == 0 → EINVAL.
                if *id == ID_AA64PFR0_EL1.kvm_reg_id()
                    && self.kernel.enforces_floor
                    && (value & 0xf == 0 || (value >> 4) & 0xf == 0)
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

/// EL1 lowered from 1 to 0, in two VMs.
const LOWERS_EL1: &str = r#"
arch = "aarch64"

[[vm]]
name = "a"
[vm.arm64.registers]
ID_AA64PFR0_EL1 = "0x0000000001000001"

[[vm]]
name = "b"
[vm.arm64.registers]
ID_AA64PFR0_EL1 = "0x0000000001000001"
"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn new_kernel(enforces_floor: bool) -> Arc<Kernel> {
    Arc::new(Kernel {
        enforces_floor,
        calls: Mutex::new(Vec::new()),
        regs: Mutex::new(BTreeMap::new()),
    })
}

/// Create the spec's VMs on a kernel that enforces the floor or not.
async fn create(text: &str, enforces_floor: bool) -> (Fleet, Arc<Kernel>) {
    let kernel = new_kernel(enforces_floor);
    let hv: Arc<dyn Hypervisor> = Arc::new(Host(Arc::clone(&kernel)));
    (create_on(hv, text).await, kernel)
}

/// Create the spec's VMs on `hv`.
async fn create_on(hv: Arc<dyn Hypervisor>, text: &str) -> Fleet {
    let spec = spec::parse(text, "test.toml").unwrap();
    let fleet = Fleet::new(hv, "t").await.unwrap();
    for created in fleet.create_all(spec.vms.clone()).await {
        created.unwrap();
    }
    fleet
}

fn probes(calls: &[String]) -> usize {
    calls
        .iter()
        .filter(|c| c.starts_with("CREATE_VM") && c.ends_with("el-floor-probe"))
        .count()
}

/// The fleet VMs' PFR0 (the probe VM left out).
fn fleet_pfr0(kernel: &Kernel) -> Vec<u64> {
    kernel
        .regs
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, _)| id.0 != u32::MAX)
        .map(|(_, regs)| regs[&ID_AA64PFR0_EL1.kvm_reg_id()])
        .collect()
}

#[test]
fn a_kernel_that_accepts_the_lowering_is_followed_after_one_probe() {
    runtime().block_on(async {
        let (fleet, kernel) = create(LOWERS_EL1, false).await;
        let calls = kernel.calls.lock().unwrap().clone();
        assert_eq!(probes(&calls), 1, "{calls:?}");
        assert_eq!(fleet_pfr0(&kernel), vec![0x0100_0001; 2]);
        for name in ["a", "b"] {
            let report = fleet.remove(name).await.unwrap();
            let write = &report.arm64.as_ref().unwrap().writes[0];
            assert!(
                write.sent && write.agrees && write.verdict.starts_with("accepted"),
                "{write:?}"
            );
        }
        fleet.shutdown().await;
    });
}

#[test]
fn a_kernel_that_refuses_it_is_refused_with_einval_saying_the_host_enforces_it() {
    runtime().block_on(async {
        let (fleet, kernel) = create(LOWERS_EL1, true).await;
        let calls = kernel.calls.lock().unwrap().clone();
        assert_eq!(probes(&calls), 1, "{calls:?}");
        assert_eq!(fleet_pfr0(&kernel), vec![HOST_PFR0; 2]);
        let report = fleet.remove("a").await.unwrap();
        let write = &report.arm64.as_ref().unwrap().writes[0];
        assert!(!write.sent, "{write:?}");
        for part in [
            "EINVAL",
            "ID_AA64PFR0_EL1.EL1",
            "below 0x1",
            "this host's kernel enforces it",
        ] {
            assert!(write.verdict.contains(part), "{part}: {write:?}");
        }
        fleet.shutdown().await;
    });
}

#[test]
fn a_spec_that_lowers_nothing_asks_nothing() {
    runtime().block_on(async {
        let (fleet, kernel) = create(
            "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[vm.arm64.registers]\nID_AA64ISAR0_EL1 = \"0x0221100010002100\"\n",
            true,
        )
        .await;
        let calls = kernel.calls.lock().unwrap().clone();
        assert_eq!(probes(&calls), 0, "{calls:?}");
        assert_eq!(calls.iter().filter(|c| c.starts_with("CREATE_VM")).count(), 1);
        fleet.shutdown().await;
    });
}

#[test]
fn the_probe_is_recorded_replayed_and_read_by_trace_fingerprint() {
    for enforces in [false, true] {
        let recorder = Recorder::in_memory();
        let hv: Arc<dyn Hypervisor> = Arc::new(RecordingHypervisor::new(
            Box::new(Host(new_kernel(enforces))),
            recorder.clone(),
        ));
        let verdicts = |fleet: Fleet| async move {
            let mut verdicts = Vec::new();
            for name in ["a", "b"] {
                let report = fleet.remove(name).await.unwrap();
                verdicts.push(report.arm64.unwrap().writes[0].verdict.clone());
            }
            fleet.shutdown().await;
            verdicts
        };
        let live = runtime().block_on(async { verdicts(create_on(hv, LOWERS_EL1).await).await });
        let events = recorder.events();
        let trace = Trace {
            header: TraceHeader::new(
                "test",
                GuestArch::Aarch64,
                HostFingerprint::default(),
                JobInputs {
                    command: "run".into(),
                    spec_source: "test.toml".into(),
                    spec_text: LOWERS_EL1.into(),
                },
            ),
            end: TraceEnd::Complete {
                events: events.len() as u64,
            },
            events,
        };
        let facts = supervisor::fingerprint::from_trace::facts(&trace);
        assert_eq!(facts.arm64.el_floor, Some(enforces));
        // replay --model with the trace's own fingerprint predicts the probe and the plan.
        let document =
            serde_json::to_string(&supervisor::fingerprint::Fingerprint::build(&facts)).unwrap();
        let model = supervisor::model_cmd::facts_from_str(&document, "fingerprint").unwrap();
        assert_eq!(model.arm64.probes.el_floor, Some(enforces));
        let compared = supervisor::model_cmd::replay::compare(&trace, model.clone());
        assert!(
            compared.judged > 0 && compared.differences.is_empty(),
            "enforces {enforces}: {compared:?}"
        );
        // Without the fact, the default (the floor assumed) mispredicts a 6.12 host's answers.
        let mut unmeasured = model;
        unmeasured.arm64.probes.el_floor = None;
        let compared = supervisor::model_cmd::replay::compare(&trace, unmeasured);
        assert_eq!(compared.differences.is_empty(), enforces, "{compared:?}");
        let replay = ReplayHypervisor::new(&trace).unwrap();
        let monitor = replay.monitor();
        let replayed = runtime()
            .block_on(async { verdicts(create_on(Arc::new(replay), LOWERS_EL1).await).await });
        monitor.finish().unwrap();
        assert_eq!(replayed, live, "enforces {enforces}");
    }
}

#[test]
fn set_model_lowering_el1_asks_the_kernel_too() {
    for enforces in [false, true] {
        runtime().block_on(async {
            let (fleet, kernel) =
                create("arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n", enforces).await;
            assert_eq!(probes(&kernel.calls.lock().unwrap()), 0);
            let reply = fleet
                .handle(protocol::Request::SetModel {
                    vm: "a".into(),
                    hide: vec![],
                    set: vec!["ID_AA64PFR0_EL1.EL1=0".into()],
                })
                .await;
            assert_eq!(probes(&kernel.calls.lock().unwrap()), 1);
            match (enforces, reply) {
                (false, Ok(_)) => assert_eq!(fleet_pfr0(&kernel), vec![0x0100_0001]),
                (true, Err(e)) => {
                    let e = e.to_string();
                    assert!(
                        e.contains("ID_AA64PFR0_EL1.EL1")
                            && e.contains("EINVAL")
                            && e.contains("this host's kernel enforces it"),
                        "{e}"
                    );
                    assert_eq!(fleet_pfr0(&kernel), vec![HOST_PFR0]);
                }
                (enforces, reply) => panic!("enforces {enforces}: {:?}", reply.map(|_| ())),
            }
            fleet.shutdown().await;
        });
    }
}
