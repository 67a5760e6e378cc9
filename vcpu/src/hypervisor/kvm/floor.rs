//! The floor: the least work that brings VMs from nothing to their guest's first exit, straight on
//! `kvm-ioctls`, for `vmfleet bench` to measure vmfleet's own start path against.
//!
//! # What it does
//!
//! [`Floor::start_to_first_exit`] issues the ioctls vmfleet's job issues for a VM of the default
//! fleet spec (`supervisor/src/job.rs`; each VM's loop creates and configures its VM in
//! `supervisor/src/fleet/vm_loop/setup.rs`), in the same order, with the same parallelism:
//!
//! 1. `KVM_GET_SUPPORTED_CPUID`, once per run, on the calling thread (the job asks once per job);
//! 2. for each VM, one thread of its own (as vmfleet's VM loop thread), all VMs at once:
//!    - `KVM_CREATE_VM` (`kvm-ioctls` also asks `KVM_GET_VCPU_MMAP_SIZE` here, as it does for
//!      vmfleet);
//!    - [`StartWorkload::memory_size`] bytes of anonymous memory at guest-physical 0, registered as slot 0
//!      with `KVM_SET_USER_MEMORY_REGION`;
//!    - for each vCPU: `KVM_CREATE_VCPU`, the model table the workload builds for it
//!      ([`StartWorkload::cpuid_table`]; vmfleet's is `X86CpuModel::default().build(..)`, which
//!      normalises the APIC ids per vCPU), `KVM_SET_CPUID2`, then `KVM_GET_CPUID2` (vmfleet reads
//!      every table back);
//!    - for each vCPU, one thread of its own (as vmfleet's vCPU thread, which its VM loop spawns
//!      once the VM is configured, ahead of the start), waiting for the start;
//!    - the workload's guest ([`StartWorkload::load`], given vCPU 0's read-back table), as the job
//!      loads the probe guest;
//!    - for each vCPU, the real-mode boot state (`KVM_GET_SREGS`, `KVM_SET_SREGS`,
//!      `KVM_SET_REGS`), the very code vmfleet's backend runs for `SetBootState`;
//!    - each vCPU handed to its thread, which calls `KVM_RUN` once: the guest runs until its
//!      first exit (for the probe guest, its `OUT` of pass number 0 to its pass-begin port), and
//!      hands the exit back to the VM's thread.
//! 3. Every VM, and every thread of the run, stays alive until the last vCPU has exited once, so
//!    that, as in vmfleet, all of them exist at the same time: vmfleet's start (paused, as the
//!    bench measures it) parks each vCPU thread at its first exit, and its VM loop threads live
//!    on with their VMs. Then the threads are let go and joined, and all VMs are closed (timed
//!    separately as teardown).
//!
//! Why the threads stay, too: `KVM_CREATE_VM` registers an MMU notifier, which walks every
//! mapping of the process (`mm_take_all_locks`) under the `mmap` lock, and each thread holds
//! four mappings (its stack and guard page, Rust's signal stack and its guard page). A floor
//! whose threads ended at their first exit created its later VMs in a process with a third of
//! the mappings of any VMM whose VMs can run on, and at 1,000 VMs that alone made it start
//! about 1.5 times as fast: a difference of shape, not of anything vmfleet adds.
//!
//! The ioctls are the backend's own helpers (the `x86_64`, `vm` and `exit` modules), so the floor
//! and vmfleet differ only in what vmfleet adds around them. What the ioctls write (the tables,
//! the guest) is the caller's [`StartWorkload`], prepared from the CPU model and the guest
//! (vmfleet's is `vcpu::guests::start::ProbeStart`): the backend does not reach up to either.
//!
//! # What it leaves out, on purpose
//!
//! Everything that is vmfleet rather than KVM: no [`crate::Hypervisor`]/[`crate::Vm`]/
//! [`crate::Vcpu`] trait objects, no handles, no pre-run lock, no recorder, no drift checks, no
//! reports, no channels and no async runtime. The threads are vmfleet's shape (one per VM that
//! creates and configures it, one per vCPU that runs it, with vmfleet's stack size
//! [`THREAD_STACK`]) so that the start figure compares like with like: a floor that started the
//! VMs one after the other would lose to vmfleet on any host with more than one core, and the
//! ratio would say nothing about vmfleet's own cost.
//!
//! # What is timed
//!
//! [`FloorRun::elapsed`] runs from just before `KVM_GET_SUPPORTED_CPUID` to the first exit of the
//! last vCPU. Opening `/dev/kvm` is not part of it (vmfleet opens it before its job, too), nor is
//! the teardown ([`FloorRun::teardown`]). [`FloorRun::phases`] times each step on the thread that
//! runs it and sums it over all VMs; as the VMs start in parallel, that sum can exceed `elapsed`
//! (it is the time the steps took, not a split of the wall clock); the clock reads cost a few per
//! vCPU. Spawning the threads is part of `elapsed` (vmfleet spawns its threads, too) but of no
//! step.
//!
//! Only x86_64 hosts run the floor (the probe guest is x86 real-mode code); elsewhere
//! [`Floor::open`] fails with [`FloorError::UnsupportedArch`].

use crate::hypervisor::call::VcpuExit;
use crate::hypervisor::error::CallError;
use crate::hypervisor::ids::{Stream, VcpuId, VmId};
use crate::hypervisor::kvm::KvmUnavailable;
use crate::hypervisor::workload::{StartWorkload, WorkloadError};
use serde::Serialize;
use std::time::Duration;
use thiserror::Error;

pub use imp::Floor;
#[cfg(target_arch = "x86_64")]
pub use imp::start_to_first_exit;

/// The stack of each VM and vCPU thread of a floor run: vmfleet's (`supervisor/src/fleet/vm_loop.rs`).
pub const THREAD_STACK: usize = 256 << 10;

/// One floor run: how long it took and what each vCPU's first exit was.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FloorRun {
    /// How many VMs were started.
    pub vms: u32,
    /// How many vCPUs each VM had.
    pub vcpus_per_vm: u32,
    /// From just before `KVM_GET_SUPPORTED_CPUID` to the first exit of the last vCPU.
    pub elapsed: Duration,
    /// Each step's time, summed over every VM (may exceed `elapsed`: the VMs start in parallel).
    pub phases: FloorPhases,
    /// Closing every vCPU and VM fd and unmapping the guest memory (not part of `elapsed`).
    pub teardown: Duration,
    /// Every vCPU's first exit, VM by VM, vCPU by vCPU.
    pub first_exits: Vec<FirstExit>,
}

impl FloorRun {
    /// VMs brought from nothing to their first exit per second of `elapsed`.
    pub fn vms_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            f64::from(self.vms) / seconds
        } else {
            f64::INFINITY
        }
    }

    /// The first first exit that is not the one `workload`'s guest is meant to make
    /// ([`StartWorkload::is_first_exit`]), if any: a run where a guest did anything else measured
    /// something other than a start.
    pub fn unexpected_first_exit(&self, workload: &dyn StartWorkload) -> Option<&FirstExit> {
        self.first_exits
            .iter()
            .find(|first| !workload.is_first_exit(&first.exit))
    }
}

/// Time spent in each step of a floor run, each timed on its VM's thread and summed over all VMs
/// (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FloorPhases {
    /// `KVM_GET_SUPPORTED_CPUID` (once).
    pub supported_cpuid: Duration,
    /// `KVM_CREATE_VM` (with `KVM_GET_VCPU_MMAP_SIZE`).
    pub create_vm: Duration,
    /// Mapping the guest memory and `KVM_SET_USER_MEMORY_REGION`.
    pub guest_memory: Duration,
    /// `KVM_CREATE_VCPU` (with the `kvm_run` mmap).
    pub create_vcpu: Duration,
    /// Building each vCPU's model, `KVM_SET_CPUID2` and `KVM_GET_CPUID2`.
    pub cpuid: Duration,
    /// Spawning each vCPU's thread (it waits for the start, as vmfleet's do).
    pub vcpu_threads: Duration,
    /// Writing the probe program and table into guest memory.
    pub load_guest: Duration,
    /// `KVM_GET_SREGS`, `KVM_SET_SREGS`, `KVM_SET_REGS`.
    pub boot_state: Duration,
    /// Handing each vCPU to its thread, `KVM_RUN` until its first exit, joining the threads.
    pub first_run: Duration,
}

impl FloorPhases {
    /// Add `other`'s time to each step.
    pub fn add(&mut self, other: &FloorPhases) {
        self.supported_cpuid += other.supported_cpuid;
        self.create_vm += other.create_vm;
        self.guest_memory += other.guest_memory;
        self.create_vcpu += other.create_vcpu;
        self.cpuid += other.cpuid;
        self.vcpu_threads += other.vcpu_threads;
        self.load_guest += other.load_guest;
        self.boot_state += other.boot_state;
        self.first_run += other.first_run;
    }
}

/// One vCPU's first exit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FirstExit {
    /// The VM.
    pub vm: VmId,
    /// The vCPU, within that VM.
    pub vcpu: VcpuId,
    /// What `KVM_RUN` returned with the first time.
    pub exit: VcpuExit,
}

/// Why a floor run could not be done.
#[derive(Debug, Error)]
pub enum FloorError {
    /// The KVM device cannot be used.
    #[error(transparent)]
    Unavailable(#[from] KvmUnavailable),

    /// The floor runs the x86 probe guest, so it needs an x86_64 host.
    #[error(
        "the floor runs vmfleet's x86 probe guest and needs an x86_64 host; this one is {arch}"
    )]
    UnsupportedArch {
        /// The host architecture (`std::env::consts::ARCH`).
        arch: String,
    },

    /// Nothing to start.
    #[error(
        "a floor run needs at least one VM with at least one vCPU \
         (asked for {vms} VM(s) with {vcpus_per_vm} vCPU(s) each)"
    )]
    Empty {
        /// The VMs asked for.
        vms: u32,
        /// The vCPUs per VM asked for.
        vcpus_per_vm: u32,
    },

    /// A step failed: the kernel refused an ioctl, or memory could not be mapped.
    #[error("{stream}: {step}: {source}")]
    Step {
        /// The object the step was on (system, a VM or a vCPU).
        stream: Stream,
        /// The step, by its ioctl or action (`"KVM_CREATE_VM"`, …).
        step: &'static str,
        /// The call's error (the kernel's errno, or the backend's own).
        #[source]
        source: CallError,
    },

    /// The workload's model builder refused the host's table for this vCPU.
    #[error("{vm}/{vcpu}: building the CPU model: {source}")]
    Model {
        /// The VM.
        vm: VmId,
        /// The vCPU.
        vcpu: VcpuId,
        /// The workload's reason.
        #[source]
        source: WorkloadError,
    },

    /// The workload's guest did not fit into the guest memory.
    #[error("{vm}: loading the probe guest: {source}")]
    Guest {
        /// The VM.
        vm: VmId,
        /// The workload's reason.
        #[source]
        source: WorkloadError,
    },

    /// A VM's or vCPU's thread could not be started, or ended by panicking.
    #[error("{stream}: {what}")]
    Thread {
        /// The VM or vCPU the thread was for.
        stream: Stream,
        /// What went wrong (the spawn error, or that the thread panicked).
        what: String,
    },
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::*;
    use crate::hypervisor::call::VcpuCall;
    use crate::hypervisor::cpuid::CpuidTable;
    use crate::hypervisor::kvm::system::open_device;
    use crate::hypervisor::kvm::vm::register_region;
    use crate::hypervisor::kvm::{KVM_PATH, exit, kernel, x86_64};
    use kvm_ioctls::{Kvm, VcpuFd, VmFd};
    use std::path::Path;
    use std::sync::{RwLock, mpsc};
    use std::time::Instant;
    use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap};

    /// An open KVM device to run the floor on.
    #[derive(Debug)]
    pub struct Floor {
        kvm: Kvm,
    }

    impl Floor {
        /// Open `/dev/kvm`, with the same checks as [`crate::hypervisor::kvm::KvmHypervisor::open`].
        pub fn open() -> Result<Floor, FloorError> {
            Self::open_path(Path::new(KVM_PATH))
        }

        /// Open the KVM device at `path`, with the same checks as
        /// [`crate::hypervisor::kvm::KvmHypervisor::open_path`].
        pub fn open_path(path: &Path) -> Result<Floor, FloorError> {
            let (kvm, _arch) = open_device(path)?;
            Ok(Floor { kvm })
        }

        /// A floor on a KVM device opened elsewhere.
        pub fn from_kvm(kvm: Kvm) -> Floor {
            Floor { kvm }
        }

        /// See [`start_to_first_exit`].
        pub fn start_to_first_exit(
            &self,
            workload: &dyn StartWorkload,
            vms: u32,
            vcpus_per_vm: u32,
        ) -> Result<FloorRun, FloorError> {
            start_to_first_exit(&self.kvm, workload, vms, vcpus_per_vm)
        }
    }

    /// One VM of a floor run. Field order is drop order: the vCPU fds, then the VM fd, then the
    /// guest memory that the kernel may use for as long as any of those fds is open.
    struct FloorVm {
        vcpus: Vec<VcpuFd>,
        fd: VmFd,
        memory: GuestMemoryMmap,
    }

    /// Bring `vms` VMs with `vcpus_per_vm` vCPUs each from nothing to `workload`'s first exit,
    /// each VM on a thread of its own and each vCPU's first run on a thread of its own, keeping
    /// all of them alive until the last one has exited once (see the module docs for exactly
    /// which ioctls, and what is timed).
    ///
    /// The first exits are returned, not judged: check them with
    /// [`FloorRun::unexpected_first_exit`]. When several VMs fail, the error is the first VM's.
    pub fn start_to_first_exit(
        kvm: &Kvm,
        workload: &dyn StartWorkload,
        vms: u32,
        vcpus_per_vm: u32,
    ) -> Result<FloorRun, FloorError> {
        if vms == 0 || vcpus_per_vm == 0 {
            return Err(FloorError::Empty { vms, vcpus_per_vm });
        }
        let mut phases = FloorPhases::default();
        let mut first_exits = Vec::with_capacity((vms as usize) * (vcpus_per_vm as usize));
        let mut alive = Vec::with_capacity(vms as usize);

        let start = Instant::now();
        let supported = x86_64::supported_table(kvm).map_err(|source| FloorError::Step {
            stream: Stream::Host,
            step: "KVM_GET_SUPPORTED_CPUID",
            source,
        })?;
        phases.supported_cpuid = start.elapsed();
        let input = RunInput {
            kvm,
            workload,
            supported: &supported,
        };
        // Every thread of the run, once its VM or vCPU has got where the run takes it, waits here
        // until the last vCPU has exited once: as in vmfleet, where every VM loop and vCPU thread
        // lives on (paused) with its VM.
        let release = RwLock::new(());
        let (done_tx, done_rx) = mpsc::channel::<(u32, Result<StartedVm, FloorError>)>();
        let (elapsed, mut started, mut failed) = std::thread::scope(|scope| {
            let gate = release.write().unwrap_or_else(|p| p.into_inner());
            let mut failed = None;
            let mut threads = Vec::with_capacity(vms as usize);
            for index in 0..vms {
                let vm = VmId(index);
                let (input, release, done) = (&input, &release, done_tx.clone());
                let thread = std::thread::Builder::new()
                    .name(format!("floor-vm{index}"))
                    .stack_size(THREAD_STACK)
                    .spawn_scoped(scope, move || {
                        let mut vcpu_threads = Vec::with_capacity(vcpus_per_vm as usize);
                        let started =
                            start_vm(scope, input, vm, vcpus_per_vm, release, &mut vcpu_threads);
                        let _ = done.send((index, started));
                        drop(done);
                        hold(release);
                        // A vCPU thread that panicked did not answer: `start_vm` said so.
                        for thread in vcpu_threads {
                            let _ = thread.join();
                        }
                    });
                match thread {
                    Ok(thread) => threads.push((vm, thread)),
                    Err(e) => {
                        failed.get_or_insert(spawn_failed(Stream::Vm(vm), &e));
                    }
                }
            }
            drop(done_tx);
            let mut started = Vec::with_capacity(threads.len());
            while started.len() < threads.len() {
                // All senders gone before every VM answered: a thread panicked (joined below).
                let Ok(answer) = done_rx.recv() else { break };
                started.push(answer);
            }
            let elapsed = start.elapsed();
            drop(gate);
            for (vm, thread) in threads {
                if thread.join().is_err() {
                    failed.get_or_insert(panicked(Stream::Vm(vm)));
                }
            }
            (elapsed, started, failed)
        });
        started.sort_by_key(|(index, _)| *index);
        for (_, vm) in started {
            match vm {
                Ok(vm) => {
                    phases.add(&vm.phases);
                    first_exits.extend(vm.first_exits);
                    alive.push(vm.vm);
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }

        let teardown = Instant::now();
        drop(alive);
        let teardown = teardown.elapsed();

        Ok(FloorRun {
            vms,
            vcpus_per_vm,
            elapsed,
            phases,
            teardown,
            first_exits,
        })
    }

    /// One VM of a run, started by its thread: the VM, its steps' times, its vCPUs' first exits.
    struct StartedVm {
        vm: FloorVm,
        phases: FloorPhases,
        first_exits: Vec<FirstExit>,
    }

    /// Wait until the run lets its threads go (the last vCPU has exited once).
    fn hold(release: &RwLock<()>) {
        drop(release.read().unwrap_or_else(|p| p.into_inner()));
    }

    /// A thread for `stream` could not be spawned.
    fn spawn_failed(stream: Stream, error: &std::io::Error) -> FloorError {
        FloorError::Thread {
            stream,
            what: format!("spawning its thread: {error}"),
        }
    }

    /// The thread for `stream` panicked.
    fn panicked(stream: Stream) -> FloorError {
        FloorError::Thread {
            stream,
            what: "its thread panicked".into(),
        }
    }

    /// A stopwatch that hands out the time since its last lap.
    struct Lap(Instant);

    impl Lap {
        fn new(start: Instant) -> Self {
            Lap(start)
        }

        fn lap(&mut self) -> Duration {
            let now = Instant::now();
            let lap = now.duration_since(self.0);
            self.0 = now;
            lap
        }
    }

    /// What every VM of a run starts from.
    struct RunInput<'a> {
        kvm: &'a Kvm,
        workload: &'a dyn StartWorkload,
        supported: &'a CpuidTable,
    }

    /// One VM from `KVM_CREATE_VM` to the first exit of each of its vCPUs, on the calling thread
    /// (the VM's), each vCPU's `KVM_RUN` on a thread of its own (in `scope`, handed out in
    /// `threads` for the caller to join), which then holds on until `release` lets it go.
    fn start_vm<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        input: &'scope RunInput<'_>,
        vm: VmId,
        vcpus: u32,
        release: &'scope RwLock<()>,
        threads: &mut Vec<std::thread::ScopedJoinHandle<'scope, ()>>,
    ) -> Result<StartedVm, FloorError> {
        let mut phases = FloorPhases::default();
        let mut clock = Lap::new(Instant::now());
        let vm_step = |step, source| FloorError::Step {
            stream: Stream::Vm(vm),
            step,
            source,
        };
        let vcpu_step = |vcpu, step, source| FloorError::Step {
            stream: Stream::Vcpu(vm, vcpu),
            step,
            source,
        };

        let RunInput {
            kvm,
            workload,
            supported,
        } = *input;
        let fd = kvm
            .create_vm()
            .map_err(|e| vm_step("KVM_CREATE_VM", kernel(e)))?;
        phases.create_vm += clock.lap();

        let memory =
            guest_memory(workload.memory_size()).map_err(|e| vm_step("mapping guest memory", e))?;
        let mut floor_vm = FloorVm {
            vcpus: Vec::with_capacity(vcpus as usize),
            fd,
            memory,
        };
        for region in floor_vm.memory.iter() {
            // SAFETY: `register_region`'s contract: the region belongs to `floor_vm.memory`,
            // which `FloorVm` declares after the VM fd and every vCPU fd, so it is unmapped only
            // after all of them are closed, also when a later step fails and `floor_vm` is
            // dropped early.
            unsafe { register_region(&floor_vm.fd, 0, region) }
                .map_err(|e| vm_step("KVM_SET_USER_MEMORY_REGION", e))?;
        }
        phases.guest_memory += clock.lap();

        let mut vcpu0_held = None;
        for index in 0..vcpus {
            let id = VcpuId(index);
            let fd = floor_vm
                .fd
                .create_vcpu(u64::from(index))
                .map_err(|e| vcpu_step(id, "KVM_CREATE_VCPU", kernel(e)))?;
            phases.create_vcpu += clock.lap();

            let requested = workload
                .cpuid_table(supported, index, vcpus)
                .map_err(|source| FloorError::Model {
                    vm,
                    vcpu: id,
                    source,
                })?;
            x86_64::set_cpuid2(&fd, &requested).map_err(|e| vcpu_step(id, "KVM_SET_CPUID2", e))?;
            let held = x86_64::get_cpuid2(&fd).map_err(|e| vcpu_step(id, "KVM_GET_CPUID2", e))?;
            if index == 0 {
                vcpu0_held = Some(held);
            }
            // Until here a failure drops `fd` before `floor_vm`, i.e. before the memory.
            floor_vm.vcpus.push(fd);
            phases.cpuid += clock.lap();
        }

        // As vmfleet's VM loop does once its VM is configured: one thread per vCPU, spawned
        // ahead of the start and waiting for it (here: for its vCPU's fd, handed over once the
        // guest is loaded and every boot state set). After its first exit it hands the fd and the
        // exit back and stays, as a vCPU of vmfleet's paused start parks at its first exit.
        let vcpu0_held = vcpu0_held.unwrap_or_default();
        type Back = (usize, Option<(VcpuFd, Result<VcpuExit, CallError>)>);
        let (back_tx, back_rx) = mpsc::channel::<Back>();
        let mut launches = Vec::with_capacity(vcpus as usize);
        for index in 0..vcpus {
            let (launch, launched) = mpsc::channel::<VcpuFd>();
            let back = back_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("floor-vm{}-vcpu{index}", vm.0))
                .stack_size(THREAD_STACK)
                .spawn_scoped(scope, move || {
                    // No fd: the VM failed before its start and the thread just ends.
                    let Ok(mut fd) = launched.recv() else {
                        let _ = back.send((index as usize, None));
                        return;
                    };
                    let exit = exit::run(&mut fd);
                    let _ = back.send((index as usize, Some((fd, exit))));
                    drop(back);
                    hold(release);
                })
                .map_err(|e| spawn_failed(Stream::Vcpu(vm, VcpuId(index)), &e))?;
            launches.push(launch);
            threads.push(thread);
        }
        drop(back_tx);
        phases.vcpu_threads += clock.lap();

        workload
            // Always vCPU 0's table: a run has at least one vCPU (checked first).
            .load(&floor_vm.memory, &vcpu0_held)
            .map_err(|source| FloorError::Guest { vm, source })?;
        phases.load_guest += clock.lap();

        let entry = workload.entry();
        let boot = VcpuCall::SetBootState { entry };
        for (index, fd) in floor_vm.vcpus.iter().enumerate() {
            x86_64::set_boot_state(fd, &boot, entry)
                .map_err(|e| vcpu_step(VcpuId(index as u32), "boot state", e))?;
        }
        phases.boot_state += clock.lap();

        for (launch, fd) in launches.iter().zip(floor_vm.vcpus.drain(..)) {
            // A thread that cannot take its fd has ended; its missing answer says so.
            let _ = launch.send(fd);
        }
        let mut answers: Vec<Option<Back>> = (0..vcpus).map(|_| None).collect();
        // Ends early only when every thread is gone: one panicked before it answered.
        while let Ok(answer) = back_rx.recv() {
            let index = answer.0;
            if let Some(slot) = answers.get_mut(index) {
                *slot = Some(answer);
            }
        }
        let mut first_exits = Vec::with_capacity(vcpus as usize);
        let mut failed = None;
        for (index, answer) in answers.into_iter().enumerate() {
            let vcpu = VcpuId(index as u32);
            let stream = Stream::Vcpu(vm, vcpu);
            match answer {
                Some((_, Some((fd, exit)))) => {
                    floor_vm.vcpus.push(fd);
                    match exit {
                        Ok(exit) => first_exits.push(FirstExit { vm, vcpu, exit }),
                        Err(e) => {
                            failed.get_or_insert(vcpu_step(vcpu, "KVM_RUN", e));
                        }
                    }
                }
                Some((_, None)) => {
                    failed.get_or_insert(FloorError::Thread {
                        stream,
                        what: "its thread ended before it was handed its vCPU".into(),
                    });
                }
                None => {
                    failed.get_or_insert(panicked(stream));
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        phases.first_run += clock.lap();
        Ok(StartedVm {
            vm: floor_vm,
            phases,
            first_exits,
        })
    }

    /// `size` bytes of anonymous memory at guest-physical 0, mapped the way the backend maps a
    /// VM's memory.
    fn guest_memory(size: u64) -> Result<GuestMemoryMmap, CallError> {
        let size = usize::try_from(size)
            .map_err(|_| CallError::Backend("guest memory size does not fit this host".into()))?;
        let region = GuestRegionMmap::from_range(GuestAddress(0), size, None)
            .map_err(|e| CallError::Backend(format!("cannot map guest memory: {e}")))?;
        GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| CallError::Backend(format!("cannot build the guest memory map: {e}")))
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use super::*;
    use std::path::Path;

    /// No values: the floor runs only on x86_64 hosts.
    #[derive(Debug)]
    enum Never {}

    /// The floor on a host that cannot run it; cannot be constructed.
    #[derive(Debug)]
    pub struct Floor {
        never: Never,
    }

    impl Floor {
        /// Always [`FloorError::UnsupportedArch`].
        pub fn open() -> Result<Floor, FloorError> {
            Self::open_path(Path::new(crate::hypervisor::kvm::KVM_PATH))
        }

        /// Always [`FloorError::UnsupportedArch`].
        pub fn open_path(_path: &Path) -> Result<Floor, FloorError> {
            Err(FloorError::UnsupportedArch {
                arch: std::env::consts::ARCH.to_string(),
            })
        }

        /// Unreachable: there is no [`Floor`] to call it on.
        pub fn start_to_first_exit(
            &self,
            _workload: &dyn StartWorkload,
            _vms: u32,
            _vcpus_per_vm: u32,
        ) -> Result<FloorRun, FloorError> {
            match self.never {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workload whose guest is meant to exit first with `HLT`; only its judgement is used.
    struct HaltFirst;

    impl StartWorkload for HaltFirst {
        fn memory_size(&self) -> u64 {
            4096
        }
        fn cpuid_table(
            &self,
            supported: &crate::hypervisor::cpuid::CpuidTable,
            _index: u32,
            _count: u32,
        ) -> Result<crate::hypervisor::cpuid::CpuidTable, WorkloadError> {
            Ok(supported.clone())
        }
        fn load(
            &self,
            _memory: &vm_memory::GuestMemoryMmap,
            _held: &crate::hypervisor::cpuid::CpuidTable,
        ) -> Result<(), WorkloadError> {
            Ok(())
        }
        fn entry(&self) -> u64 {
            0
        }
        fn is_first_exit(&self, exit: &VcpuExit) -> bool {
            *exit == VcpuExit::Hlt
        }
    }

    #[test]
    fn rates_and_unexpected_exits() {
        let exit = |vcpu, exit| FirstExit {
            vm: VmId(0),
            vcpu: VcpuId(vcpu),
            exit,
        };
        let mut run = FloorRun {
            vms: 4,
            vcpus_per_vm: 2,
            elapsed: Duration::from_millis(500),
            phases: FloorPhases::default(),
            teardown: Duration::ZERO,
            first_exits: vec![exit(0, VcpuExit::Hlt), exit(1, VcpuExit::Shutdown)],
        };
        assert_eq!(run.vms_per_second(), 8.0);
        assert_eq!(
            run.unexpected_first_exit(&HaltFirst).map(|f| f.vcpu),
            Some(VcpuId(1))
        );
        run.first_exits.pop();
        assert_eq!(run.unexpected_first_exit(&HaltFirst), None);
        run.elapsed = Duration::ZERO;
        assert!(run.vms_per_second().is_infinite());
    }
}
