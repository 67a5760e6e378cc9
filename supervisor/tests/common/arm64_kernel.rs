//! An in-memory arm64 KVM, so arm64 fleets run through the real fleet code on any host.
//!
//! It keeps each VM's registers (PFR0, ISAR0, DFR0 and MIDR at the host's values), logs every
//! system and VM call and every VM and vCPU it creates, and takes every register write except the
//! ones the tests are about: EL0 or EL1 = 0 in ID_AA64PFR0_EL1 when it enforces the floor newer
//! kernels have (`set_id_aa64pfr0_el1`: `EINVAL`); a changed MIDR_EL1 on a VM that did not enable
//! capability 239 (`set_imp_id_reg`: `EINVAL`); ID_AA64DFR0_EL1 as one of three kernels'
//! `set_id_aa64dfr0_el1` handles it ([`Rules::pmu`]: 6.7 on, with or without the DebugVer floor;
//! 6.3–6.6; 6.1). Nothing runs: `KVM_RUN` answers `Done`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use supervisor::fleet::Fleet;
use supervisor::spec;
use vcpu::hypervisor::abi::{
    KVM_ARM_FEATURE_ID_RANGE_SIZE, KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES,
    KVM_CAP_ARM_WRITABLE_IMP_ID_REGS,
};
use vcpu::hypervisor::backend::{Kick, Vcpu, Vm};
use vcpu::model::arm64::catalog::{ID_AA64DFR0_EL1, ID_AA64ISAR0_EL1, ID_AA64PFR0_EL1, MIDR_EL1};
use vcpu::model::arm64::host::PmuImpDef;
use vcpu::{
    CallError, Errno, GuestArch, Hypervisor, LockRefusal, NoKick, Reply, RunDecision, SystemCall,
    VcpuCall, VcpuId, VmCall, VmId,
};
use vm_memory::GuestMemoryMmap;

/// EL0 = EL1 = 1 (AArch64 only), FP/AdvSIMD implemented, GIC 1.
pub const HOST_PFR0: u64 = 0x0000_0000_0100_0011;
/// AES = 2 (PMULL), SHA1, SHA2, CRC32, atomics, ...
pub const HOST_ISAR0: u64 = 0x0221_1000_1000_2120;
/// A Neoverse-class MIDR_EL1.
pub const HOST_MIDR: u64 = 0x410f_d0c1;
/// DebugVer = 9 (Armv8.4 debug), PMUVer = 0 (the vCPUs have no PMU).
pub const HOST_DFR0: u64 = 0x0000_0000_0000_0009;

/// How the kernel judges what the tests are about.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// EL0 or EL1 = 0 in ID_AA64PFR0_EL1 → `EINVAL` (kernels after 6.12).
    pub el_floor: bool,
    /// Capability 239 offered (6.15 on).
    pub offers_239: bool,
    /// ID_AA64DFR0_EL1's handler: `ReadsAsNotImplemented` = 6.7 on (writable masks, PMUVer 0xF
    /// stored as 0); `Kept` = 6.3–6.6 (no masks; only PMUVer may change, kept as written);
    /// `Refused` = 6.1 (no masks; invariant).
    pub pmu: PmuImpDef,
    /// With the 6.7 handler: DebugVer below 6 → `EINVAL`.
    pub debug_ver_floor: bool,
}

impl Rules {
    /// A 6.12-like kernel, with the EL0/EL1 floor or not and capability 239 or not.
    pub fn new(el_floor: bool, offers_239: bool) -> Rules {
        Rules {
            el_floor,
            offers_239,
            pmu: PmuImpDef::ReadsAsNotImplemented,
            debug_ver_floor: true,
        }
    }

    fn has_masks(&self) -> bool {
        self.pmu == PmuImpDef::ReadsAsNotImplemented
    }

    /// What the kernel does with a write of ID_AA64DFR0_EL1 over `held`: the value it keeps.
    fn set_dfr0(&self, held: u64, value: u64) -> Result<u64, CallError> {
        let refused = Err(CallError::Kernel(Errno::EINVAL));
        let pmuver = (value >> 8) & 0xF;
        match self.pmu {
            PmuImpDef::ReadsAsNotImplemented => {
                let value = if pmuver == 0xF {
                    value & !(0xF << 8)
                } else {
                    value
                };
                if self.debug_ver_floor && value & 0xF < 6 {
                    return refused;
                }
                Ok(value)
            }
            PmuImpDef::Kept if (held ^ value) & !(0xF << 8) == 0 => Ok(value),
            _ if held == value => Ok(value),
            _ => refused,
        }
    }
}

/// The kernel's rules, what it was asked, and every VM's registers.
pub struct Kernel {
    rules: Rules,
    calls: Mutex<Vec<String>>,
    regs: Mutex<BTreeMap<VmId, BTreeMap<u64, u64>>>,
    cap_239: Mutex<BTreeSet<VmId>>,
}

impl Kernel {
    /// A kernel that enforces the EL0/EL1 floor or not, and offers capability 239 or not.
    pub fn new(enforces_el_floor: bool, offers_239: bool) -> Arc<Kernel> {
        Kernel::with(Rules::new(enforces_el_floor, offers_239))
    }

    /// A kernel with these rules.
    pub fn with(rules: Rules) -> Arc<Kernel> {
        Arc::new(Kernel {
            rules,
            calls: Mutex::new(Vec::new()),
            regs: Mutex::new(BTreeMap::new()),
            cap_239: Mutex::new(BTreeSet::new()),
        })
    }

    fn log(&self, call: impl ToString) {
        self.calls.lock().unwrap().push(call.to_string());
    }

    /// Every call logged so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// How many calls were logged so far.
    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// Register `id` of VM `vm`.
    pub fn reg(&self, vm: VmId, id: u64) -> u64 {
        self.regs.lock().unwrap()[&vm][&id]
    }

    /// Register `id` of every VM but the kernel probes' (logical ids from `u32::MAX - 2`), in
    /// VM order.
    pub fn fleet_values(&self, id: u64) -> Vec<u64> {
        self.regs
            .lock()
            .unwrap()
            .iter()
            .filter(|(vm, _)| vm.0 < u32::MAX - 2)
            .map(|(_, regs)| regs[&id])
            .collect()
    }

    /// A hypervisor on this kernel.
    pub fn host(self: &Arc<Self>) -> Arc<dyn Hypervisor> {
        Arc::new(Host(Arc::clone(self)))
    }
}

/// `/dev/kvm` of a [`Kernel`].
pub struct Host(pub Arc<Kernel>);

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
            SystemCall::CheckExtension { cap } if *cap == KVM_CAP_ARM_WRITABLE_IMP_ID_REGS => {
                Reply::Value(u64::from(self.0.rules.offers_239))
            }
            SystemCall::CheckExtension { cap } if *cap == KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES => {
                Reply::Value(u64::from(self.0.rules.has_masks()))
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
                (MIDR_EL1.kvm_reg_id(), HOST_MIDR),
                (ID_AA64DFR0_EL1.kvm_reg_id(), HOST_DFR0),
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
            VmCall::EnableCap { cap, .. } if *cap == KVM_CAP_ARM_WRITABLE_IMP_ID_REGS => {
                self.kernel.cap_239.lock().unwrap().insert(self.id);
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
        let vm = self.id.0;
        let mut all = self.kernel.regs.lock().unwrap();
        let regs = all.get_mut(&vm).unwrap();
        Ok(match call {
            VcpuCall::GetRegList => Reply::RegList(regs.keys().copied().collect()),
            VcpuCall::GetOneReg { id } => Reply::Value(regs.get(id).copied().unwrap_or(0)),
            VcpuCall::SetOneReg { id, value } => {
                // set_id_aa64pfr0_el1 after 6.12: EL0 == 0 || EL1 == 0 → EINVAL.
                let below_el_floor = *id == ID_AA64PFR0_EL1.kvm_reg_id()
                    && self.kernel.rules.el_floor
                    && (value & 0xf == 0 || (value >> 4) & 0xf == 0);
                // set_imp_id_reg: a changed MIDR_EL1 needs capability 239 on the VM.
                let midr = MIDR_EL1.kvm_reg_id();
                let midr_without_239 = *id == midr
                    && regs.get(&midr) != Some(value)
                    && !self.kernel.cap_239.lock().unwrap().contains(&vm);
                if below_el_floor || midr_without_239 {
                    return Err(CallError::Kernel(Errno::EINVAL));
                }
                let dfr0 = ID_AA64DFR0_EL1.kvm_reg_id();
                let value = if *id == dfr0 {
                    self.kernel.rules.set_dfr0(regs[&dfr0], *value)?
                } else {
                    *value
                };
                regs.insert(*id, value);
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

/// A multi-threaded tokio runtime for one test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Create (not start) the VMs of spec `text` on `hv`.
pub async fn create_on(hv: Arc<dyn Hypervisor>, text: &str) -> Fleet {
    let spec = spec::parse(text, "test.toml").unwrap();
    let fleet = Fleet::new(hv, "t").await.unwrap();
    for created in fleet.create_all(spec.vms.clone()).await {
        created.unwrap();
    }
    fleet
}
