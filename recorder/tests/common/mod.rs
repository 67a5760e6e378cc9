//! Shared test fixtures: a scripted backend with canned answers (the recorder, not KVM, is the unit
//! under test), a driver that exercises it through vcpu's handles like the supervisor does, and
//! sample headers and tables.
#![allow(dead_code)]

use recorder::{HostFingerprint, JobInputs, TraceHeader};
use std::path::PathBuf;
use vcpu::hypervisor::cpuid::{CpuidEntry, CpuidTable};
use vcpu::{
    CallError, Errno, GuestArch, HandleError, Hypervisor, LockRefusal, ReplayFailure, Reply,
    SystemCall, Vcpu, VcpuCall, VcpuExit, VcpuHandle, VcpuId, Vm, VmCall, VmHandle, VmId,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

pub fn header() -> TraceHeader {
    TraceHeader::new(
        "0.1.0-test",
        GuestArch::X86_64,
        HostFingerprint {
            kernel_release: "6.8.0-test".into(),
            kvm_module: Some("kvm_intel".into()),
            cpu_vendor: "GenuineIntel".into(),
            cpu_family: 6,
            cpu_model: 85,
            cpu_stepping: 7,
            cpu_model_name: "Test CPU @ 2.00GHz".into(),
            microcode: Some("0x5003604".into()),
            kvm_api_version: Some(12),
            capabilities: vec![recorder::Capability {
                number: 70,
                name: "KVM_CAP_ONE_REG".into(),
                value: 1,
            }],
            emulated_cpuid: None,
        },
        JobInputs {
            command: "run".into(),
            spec_source: "<built-in demo>".into(),
            spec_text: "[[vm]]\nname = \"alpha\"\nvcpus = 2\n".into(),
        },
    )
}

/// A unique scratch path for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("recorder-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

pub fn entry(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
    CpuidEntry {
        function,
        index,
        flags: 0,
        eax,
        ebx,
        ecx,
        edx,
    }
}

pub fn table() -> CpuidTable {
    CpuidTable::new(vec![
        entry(0, 0, 0xd, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
        entry(1, 0, 0x50657, 0x0010_0800, 0x7ffa_fbff, 0xbfeb_fbff),
        entry(7, 0, 0, 0xd19f_4fbb, 0x0000_0008, 0xbc00_0400),
    ])
}

/// `table()` with AVX2 (leaf 7 ebx bit 5) cleared.
pub fn table_without_avx2() -> CpuidTable {
    let mut t = table();
    t.entries[2].ebx &= !(1 << 5);
    t
}

// ---------------------------------------------------------------------------------------------
// The scripted backend.

/// Canned answers; `runs_before_halt` `OUT`s, then `HLT`, on every vCPU.
pub struct Scripted {
    pub runs_before_halt: u32,
}

impl Hypervisor for Scripted {
    fn arch(&self) -> GuestArch {
        GuestArch::X86_64
    }

    fn call(&self, call: &SystemCall) -> Result<Reply, CallError> {
        match call {
            SystemCall::GetApiVersion => Ok(Reply::Value(12)),
            SystemCall::CheckExtension { cap } if *cap == 0xdead => {
                Err(CallError::Kernel(Errno::EINVAL))
            }
            SystemCall::CheckExtension { cap } => Ok(Reply::Value(u64::from(*cap & 1))),
            SystemCall::GetVcpuMmapSize => Ok(Reply::Value(0x3000)),
            SystemCall::GetSupportedCpuid => Ok(Reply::Cpuid(table())),
            SystemCall::GetEmulatedCpuid => Ok(Reply::Cpuid(CpuidTable::default())),
            SystemCall::CreateVm { .. } => Err(CallError::Backend("use create_vm".into())),
        }
    }

    fn create_vm(&self, vm: VmId, _name: &str) -> Result<Box<dyn Vm>, CallError> {
        if vm.0 >= 4 {
            return Err(CallError::Kernel(Errno::ENOMEM));
        }
        Ok(Box::new(ScriptedVm {
            id: vm,
            memory: GuestMemoryMmap::new(),
            runs_before_halt: self.runs_before_halt,
        }))
    }
}

pub struct ScriptedVm {
    id: VmId,
    memory: GuestMemoryMmap,
    runs_before_halt: u32,
}

impl Vm for ScriptedVm {
    fn id(&self) -> VmId {
        self.id
    }

    fn call(&mut self, call: &VmCall) -> Result<Reply, CallError> {
        match call {
            VmCall::AddMemory {
                guest_phys_addr,
                size,
                ..
            } => {
                let region = GuestRegionMmap::from_range(
                    GuestAddress(*guest_phys_addr),
                    *size as usize,
                    None,
                )
                .map_err(|e| CallError::Backend(e.to_string()))?;
                self.memory = self
                    .memory
                    .insert_region(std::sync::Arc::new(region))
                    .map_err(|e| CallError::Backend(e.to_string()))?;
                Ok(Reply::Done)
            }
            VmCall::EnableCap { cap: 0, .. } => Err(CallError::Kernel(Errno::EINVAL)),
            VmCall::EnableCap { .. } => Ok(Reply::Value(0)),
            VmCall::CreateVcpu { .. } => Err(CallError::Backend("use create_vcpu".into())),
            VmCall::ArmPreferredTarget | VmCall::ArmGetRegWritableMasks => {
                Err(CallError::Kernel(Errno::ENOSYS))
            }
            VmCall::Destroy => Ok(Reply::Done),
        }
    }

    fn create_vcpu(&mut self, vcpu: VcpuId) -> Result<Box<dyn Vcpu>, CallError> {
        if vcpu.0 >= 8 {
            return Err(CallError::Kernel(Errno::EINVAL));
        }
        Ok(Box::new(ScriptedVcpu {
            id: (self.id, vcpu),
            cpuid: CpuidTable::default(),
            runs: 0,
            runs_before_halt: self.runs_before_halt,
        }))
    }

    fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }
}

pub struct ScriptedVcpu {
    id: (VmId, VcpuId),
    cpuid: CpuidTable,
    runs: u32,
    runs_before_halt: u32,
}

impl Vcpu for ScriptedVcpu {
    fn id(&self) -> (VmId, VcpuId) {
        self.id
    }

    fn kicker(&self) -> std::sync::Arc<dyn vcpu::Kick> {
        std::sync::Arc::new(vcpu::NoKick)
    }

    /// Decides what is wanted, like a live backend.
    fn control_point(&mut self, wanted: vcpu::RunDecision) -> Result<vcpu::RunDecision, CallError> {
        Ok(wanted)
    }

    fn call(&mut self, call: &VcpuCall) -> Result<Reply, CallError> {
        match call {
            VcpuCall::SetCpuid2 { table } if table.len() > vcpu::hypervisor::cpuid::MAX_ENTRIES => {
                Err(CallError::Kernel(Errno::E2BIG))
            }
            VcpuCall::SetCpuid2 { table } => {
                self.cpuid = table.clone();
                Ok(Reply::Done)
            }
            VcpuCall::GetCpuid2 => Ok(Reply::Cpuid(self.cpuid.clone())),
            VcpuCall::GetOneReg { id: 0 } => Err(CallError::Kernel(Errno::ENOENT)),
            VcpuCall::GetOneReg { id } => Ok(Reply::Value(id ^ 0xffff)),
            VcpuCall::SetOneReg { .. } | VcpuCall::SetBootState { .. } | VcpuCall::Destroy => {
                Ok(Reply::Done)
            }
            VcpuCall::GetRegList => Ok(Reply::RegList(vec![1, 2, 3])),
            VcpuCall::ArmVcpuInit { .. }
            | VcpuCall::ArmVcpuFinalize { .. }
            | VcpuCall::ArmPmuV3Init => Err(CallError::Kernel(Errno::ENOSYS)),
            VcpuCall::Run | VcpuCall::RunCounted => {
                let n = self.runs;
                self.runs += 1;
                if n < self.runs_before_halt {
                    let data = vec![b'a' + (n % 26) as u8].into();
                    Ok(Reply::Exit(VcpuExit::IoOut { port: 0x3f8, data }))
                } else {
                    Ok(Reply::Exit(VcpuExit::Hlt))
                }
            }
        }
    }

    fn note_refused(&mut self, _call: &VcpuCall, _refusal: &LockRefusal) -> Result<(), CallError> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The driver: what a supervisor does, through vcpu's handles.

/// How a driven run departs from the reference one (to provoke divergences).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Reference,
    /// vCPU `n` boots at a different entry point.
    OtherEntry(u32),
    /// vCPU 0 sets a table with a different bit before running.
    OtherTable,
    /// vCPU 0 issues an extra `GET_ONE_REG` before running.
    ExtraCall,
    /// The VM is not destroyed at the end.
    MissingDestroy,
    /// Every vCPU thread issues an extra `GET_REG_LIST` before its first run.
    ExtraCallInEveryThread,
}

pub struct Drive {
    pub vcpus: u32,
    pub threads: bool,
    pub variant: Variant,
}

/// What one step came to, for comparing a live run with its replay; a replay divergence ends the
/// drive.
fn log<T: std::fmt::Debug>(
    log: &mut Vec<String>,
    what: &str,
    result: Result<T, HandleError>,
) -> Result<Option<T>, ReplayFailure> {
    match result {
        Ok(v) => {
            log.push(format!("{what}: ok {v:?}"));
            Ok(Some(v))
        }
        Err(HandleError {
            source: CallError::Replay(failure),
            ..
        }) => Err(*failure),
        Err(e) => {
            log.push(format!("{what}: error {e}"));
            Ok(None)
        }
    }
}

fn system(
    hv: &dyn Hypervisor,
    out: &mut Vec<String>,
    call: SystemCall,
) -> Result<(), ReplayFailure> {
    match hv.call(&call) {
        Ok(reply) => out.push(format!("{call}: ok {reply}")),
        Err(CallError::Replay(failure)) => return Err(*failure),
        Err(e) => out.push(format!("{call}: error {e}")),
    }
    Ok(())
}

/// Drive one VM with `opts.vcpus` vCPUs to the end of its guest program and back, returning every
/// step's result (vCPU logs are appended in vCPU order, whatever the thread timing).
pub fn drive(hv: &dyn Hypervisor, opts: &Drive) -> Result<Vec<String>, ReplayFailure> {
    let mut out = Vec::new();
    system(hv, &mut out, SystemCall::GetApiVersion)?;
    system(hv, &mut out, SystemCall::CheckExtension { cap: 7 })?;
    system(hv, &mut out, SystemCall::CheckExtension { cap: 0xdead })?;
    system(hv, &mut out, SystemCall::GetSupportedCpuid)?;

    let vm = match hv.create_vm(VmId(0), "alpha") {
        Ok(vm) => VmHandle::new(vm, "alpha", hv.arch()),
        Err(CallError::Replay(failure)) => return Err(*failure),
        Err(e) => panic!("create_vm: {e}"),
    };
    log(&mut out, "add_memory", vm.add_memory(0, 0, 0x10000))?;
    let byte = vm.with_memory(|m| {
        m.write_obj(0xf4u8, GuestAddress(0x100)).unwrap();
        m.read_obj::<u8>(GuestAddress(0x100)).unwrap()
    });
    out.push(format!("guest memory byte: {byte:#x}"));
    log(
        &mut out,
        "enable_cap 0",
        vm.call(VmCall::EnableCap {
            cap: 0,
            flags: 0,
            args: [0; 4],
        }),
    )?;

    let mut vcpus: Vec<VcpuHandle> = Vec::new();
    for i in 0..opts.vcpus {
        match vm.create_vcpu(VcpuId(i)) {
            Ok(v) => {
                out.push(format!("create_vcpu {i}: ok"));
                vcpus.push(v);
            }
            Err(e) => log::<()>(&mut out, "create_vcpu", Err(e)).map(drop)?,
        }
    }
    log(
        &mut out,
        "create_vcpu 9",
        vm.create_vcpu(VcpuId(9)).map(|_| ()),
    )?;

    // Set-up is sequential: a vCPU whose first table write came after another vCPU's first run
    // would be judged by the sealed lock, and the drive would depend on thread timing.
    let mut setup = Vec::new();
    for vcpu in &vcpus {
        let mut out = Vec::new();
        let i = vcpu.id().0;
        let table = if opts.variant == Variant::OtherTable && i == 0 {
            table_without_avx2()
        } else {
            table()
        };
        log(&mut out, "set_cpuid", vcpu.set_cpuid(&table))?;
        if opts.variant == Variant::ExtraCall && i == 0 {
            log(
                &mut out,
                "get_one_reg",
                vcpu.plain_call(VcpuCall::GetOneReg { id: 5 }),
            )?;
        }
        let entry = if opts.variant == Variant::OtherEntry(i) {
            0x2000
        } else {
            0x1000
        };
        log(&mut out, "boot", vcpu.set_boot_state(entry))?;
        log(
            &mut out,
            "get_one_reg 0",
            vcpu.plain_call(VcpuCall::GetOneReg { id: 0 }),
        )?;
        setup.push(out);
    }

    let per_vcpu = |vcpu: &VcpuHandle| -> Result<Vec<String>, ReplayFailure> {
        let mut out = Vec::new();
        if opts.variant == Variant::ExtraCallInEveryThread {
            log(
                &mut out,
                "get_reg_list",
                vcpu.plain_call(VcpuCall::GetRegList),
            )?;
        }
        loop {
            match log(&mut out, "run", vcpu.run())? {
                Some(VcpuExit::Hlt) | None => break,
                Some(_) => {}
            }
        }
        // After the run: an identical rewrite passes, a changed one is refused by the lock.
        log(
            &mut out,
            "set_cpuid again",
            vcpu.set_cpuid(&table()).map(|w| w.after_run),
        )?;
        log(
            &mut out,
            "set_cpuid changed",
            vcpu.set_cpuid(&table_without_avx2()).map(|w| w.after_run),
        )?;
        log(&mut out, "destroy vcpu", vcpu.plain_call(VcpuCall::Destroy))?;
        Ok(out)
    };

    let logs: Vec<Result<Vec<String>, ReplayFailure>> = if opts.threads {
        std::thread::scope(|s| {
            let handles: Vec<_> = vcpus.iter().map(|v| s.spawn(move || per_vcpu(v))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    } else {
        vcpus.iter().map(per_vcpu).collect()
    };
    for (setup, run) in setup.into_iter().zip(logs) {
        out.extend(setup);
        out.extend(run?);
    }
    if opts.variant != Variant::MissingDestroy {
        log(&mut out, "destroy vm", vm.call(VmCall::Destroy))?;
    }
    Ok(out)
}

/// The lock's refusal of an avx2 change on vm0/vcpu0's `SET_CPUID2`, with `errno`.
pub fn refusal(errno: Errno) -> LockRefusal {
    LockRefusal {
        vm: VmId(0),
        vcpu: VcpuId(0),
        first_run: VcpuId(0),
        errno,
        write: "SET_CPUID2".into(),
        differences: vec!["0x7.0.ebx: avx2 1->0".into()],
        changes: vec!["CPUID 0x7.0.ebx avx2 1 → 0".into()],
        note: None,
    }
}

/// Record [`drive`] of a scripted backend (5 runs per vCPU) to the trace `name`: the trace read
/// back, and the drive's log.
pub fn record_trace(name: &str, opts: &Drive) -> (recorder::Trace, Vec<String>) {
    let path = scratch(name);
    let (recorder, writer) = recorder::TraceWriter::create(&path, &header()).unwrap();
    let hv = recorder::RecordingHypervisor::new(
        Box::new(Scripted {
            runs_before_halt: 5,
        }),
        recorder,
    );
    let log = drive(&hv, opts).unwrap();
    writer.finish().unwrap();
    (recorder::Trace::open(&path).unwrap(), log)
}
