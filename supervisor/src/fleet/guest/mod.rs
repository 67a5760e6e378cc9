//! The fleet's one guest-architecture seam: everything a VM loop does that depends on whether
//! its guests are x86 or arm64, behind [`Guest`] (one variant per architecture, `x86.rs` and
//! `arm64.rs`). The guest's memory layout, configuring the CPU model (plan, validate, write,
//! read back), loading the guest program and placing every vCPU at its entry, what each vCPU
//! thread runs and how its exits are decoded ([`Launch`], [`VcpuOutcome`]), judging what a vCPU's
//! guest saw into the report, the after-run writes, changing the model of a created VM, and the
//! per-vCPU part of what `model` answers.
//!
//! Why one seam: the VM loop (`vm_loop.rs`) is the event loop and the lifecycle, the same for
//! every architecture; with the architecture matched here and only here, it has no arch branch,
//! and a third architecture is a third variant of this module, not a hunt through the loop.
//! This module never imports the loop: the loop hands it the parts of the VM it works on
//! ([`VmParts`]) and gets reports and errors back.

mod arm64;
mod shared;
mod x86;

use super::error::{AfterRunError, ConfigureError, FleetError, ModelError, StartError};
use super::lifecycle::VcpuModelView;
use super::supported::HostQueries;
use crate::report::{AfterRunCrossCheck, AfterRunReport, VcpuReport, VmReport};
use crate::spec::{AfterRun, VmSpec};
pub(in crate::fleet) use arm64::RefusedAfterRun;
pub(in crate::fleet) use shared::SharedModels;
use std::sync::Arc;
use vcpu::guests::arm64::decoder::Arm64GuestReport;
use vcpu::model::arm64::model::Assignments;
use vcpu::runtime::runner::{ProbeEnd, ProbeOutcome, RunOutcome, VcpuNotice};
use vcpu::{GuestArch, HandleError, Hypervisor, RunControl, VcpuHandle, VmHandle};

/// The parts of a VM that the per-architecture operations work on, lent by its loop.
pub(super) struct VmParts<'a> {
    /// For the scratch VMs of arm64 cross-checks.
    pub hv: &'a Arc<dyn Hypervisor>,
    pub supported: &'a HostQueries,
    pub spec: &'a mut VmSpec,
    pub vm: &'a VmHandle,
    pub vcpus: &'a [Arc<VcpuHandle>],
    pub report: &'a mut VmReport,
    /// What the fleet's VMs share of their models and reports (x86: held tables, drift).
    pub shared: &'a SharedModels,
}

/// What `set-model` asks of a VM: x86 features to hide, or arm64 writes (a VM refuses the
/// other architecture's half when it is not empty).
#[derive(Clone, Debug, Default)]
pub(in crate::fleet) struct ModelRequest {
    /// x86: the features the new model hides (the whole list).
    pub hide: Vec<String>,
    /// arm64: the fields and registers to write.
    pub arm64: Assignments,
}

/// One VM's guest architecture and the model state that goes with it.
pub(super) enum Guest {
    X86(x86::X86Guest),
    Arm64(arm64::Arm64Guest),
}

impl Guest {
    /// The guest of a VM on a backend for `arch` guests (the host's, or the recorded trace's).
    pub fn new(arch: GuestArch) -> Guest {
        match arch {
            GuestArch::X86_64 => Guest::X86(x86::X86Guest::default()),
            GuestArch::Aarch64 => Guest::Arm64(arm64::Arm64Guest::default()),
        }
    }

    /// Where guest memory starts, and how much of it a VM whose spec asks for `memory_mib` gets
    /// (at least what the guest program needs).
    pub fn memory(&self, memory_mib: u32) -> (u64, u64) {
        let (base, least) = match self {
            Guest::X86(_) => x86::MEMORY,
            Guest::Arm64(_) => arm64::MEMORY,
        };
        (base, (u64::from(memory_mib) << 20).max(least))
    }

    /// What the VM needs before its first vCPU is created (arm64: capability 239 when the spec
    /// changes MIDR/REVIDR/AIDR and the host offers it).
    pub fn before_vcpus(&mut self, vm: VmParts<'_>) -> Result<(), ConfigureError> {
        match self {
            Guest::X86(_) => Ok(()),
            Guest::Arm64(guest) => guest.before_vcpus(vm),
        }
    }

    /// Configure the CPU model of the VM's vCPUs (all created, none run): plan and judge it,
    /// write it through the lock, read it back into the report.
    pub fn configure(&mut self, vm: VmParts<'_>) -> Result<(), ConfigureError> {
        match self {
            Guest::X86(guest) => guest.configure(vm),
            Guest::Arm64(guest) => guest.configure(vm),
        }
    }

    /// Load the guest program into memory and place every vCPU at its entry; what each vCPU
    /// thread is launched with.
    pub fn load(
        &mut self,
        vm: VmParts<'_>,
        pause_at_first_exit: bool,
    ) -> Result<Launch, StartError> {
        match self {
            Guest::X86(_) => x86::load(vm, pause_at_first_exit).map(Launch::X86),
            Guest::Arm64(guest) => guest.load(vm, pause_at_first_exit).map(Launch::Arm64),
        }
    }

    /// Judge what vCPU `index`'s guest saw into its report (`saw_nothing`: it was stopped before
    /// one whole pass, so there is nothing to check).
    pub fn judge(
        &self,
        index: usize,
        outcome: &VcpuOutcome,
        saw_nothing: bool,
        report: &mut VcpuReport,
    ) {
        match outcome {
            VcpuOutcome::X86(outcome) => x86::judge(outcome, saw_nothing, report),
            VcpuOutcome::Arm64(outcome) => {
                let held = match self {
                    Guest::Arm64(guest) => guest.held(index),
                    Guest::X86(_) => None,
                };
                arm64::judge(outcome, held, saw_nothing, report);
            }
        }
    }

    /// Attempt one after-run write on `vcpu` and judge it against the lock's rule; the report,
    /// and the write the lock refused, if it refused one the kernel can be asked about (arm64).
    pub fn after_run(
        &self,
        vm: VmParts<'_>,
        vcpu: usize,
        action: &AfterRun,
    ) -> Result<(AfterRunReport, Option<RefusedAfterRun>), AfterRunError> {
        let handle = vm.vcpus.get(vcpu).ok_or(AfterRunError::NoVcpu { vcpu })?;
        match self {
            Guest::X86(_) => x86::try_after_run(handle, action).map(|r| (r, None)),
            Guest::Arm64(_) => {
                let measure = |probe| vm.supported.probe(probe);
                let probing = arm64::Probing {
                    vm: vm.vm,
                    measure: &measure,
                };
                arm64::try_after_run(handle, action, Some(&probing))
            }
        }
    }

    /// The kernel's own answers to the after-run writes the lock refused, on a scratch VM that
    /// has run (arm64 with `cross_check`; see `arm64/after_run.rs`), one per write.
    pub fn cross_check_after_run(
        &self,
        vm: VmParts<'_>,
        refused: &[RefusedAfterRun],
    ) -> Result<Vec<AfterRunCrossCheck>, AfterRunError> {
        match self {
            Guest::Arm64(guest) if !refused.is_empty() => guest.cross_check_after_run(vm, refused),
            _ => Ok(Vec::new()),
        }
    }

    /// Why this guest's model cannot take `change`, if it cannot: it asks for the other
    /// architecture's kind of change.
    pub fn set_model_refused(&self, change: &ModelRequest) -> Option<&'static str> {
        match self {
            Guest::X86(_) if !change.arm64.is_empty() => Some(x86::SET_MODEL_REFUSED),
            Guest::Arm64(_) if !change.hide.is_empty() => Some(arm64::SET_MODEL_REFUSED),
            _ => None,
        }
    }

    /// Write the model `change` asks for to every vCPU (their threads are parked, ended or not
    /// started), through the lock, and refresh the report.
    pub fn write_model(
        &mut self,
        vm: VmParts<'_>,
        change: &ModelRequest,
    ) -> Result<(), ModelError> {
        let name = vm.spec.name.clone();
        let result = match self {
            Guest::X86(guest) => guest.apply_model(vm, &change.hide, true),
            Guest::Arm64(guest) => guest.write_model(vm, &change.arm64),
        };
        result.map_err(|e| match e {
            ConfigureError::Refused {
                vm,
                shown,
                recorded,
            } => ModelError::Refused {
                vm,
                shown,
                recorded,
            },
            source => ModelError::Write {
                vm: name,
                source: Box::new(source),
            },
        })
    }

    /// Work out what configuring left for later (x86's drift lines, or take them from `shared`),
    /// before the report is read.
    pub fn finish_drift(&mut self, shared: &SharedModels, report: &mut VmReport) {
        match self {
            Guest::X86(guest) => guest.finish_drift(shared, report),
            Guest::Arm64(_) => {}
        }
    }

    /// The guests' architecture.
    pub fn arch(&self) -> GuestArch {
        match self {
            Guest::X86(_) => GuestArch::X86_64,
            Guest::Arm64(_) => GuestArch::Aarch64,
        }
    }

    /// What `model` answers about one vCPU.
    pub fn vcpu_view(&self, vcpu: &VcpuReport, report: &VmReport) -> VcpuModelView {
        match self {
            Guest::Arm64(guest) => match guest.view(vcpu, report) {
                Some(view) => view,
                None => x86::view(vcpu),
            },
            Guest::X86(_) => x86::view(vcpu),
        }
    }
}

/// How a guest program goes into a VM's memory: written where a guest runs from it, only
/// checked where none ever runs (a replay, a model: see [`Hypervisor::runs_guests`]).
pub(super) fn placement(hv: &Arc<dyn Hypervisor>) -> vcpu::guests::Placement {
    if hv.runs_guests() {
        vcpu::guests::Placement::Write
    } else {
        vcpu::guests::Placement::Check
    }
}

/// Ask the host, ahead of the VM loops, what VMs of `arch` will need for their CPU models (see
/// `supported.rs`). Errors reach every VM through its own loop, which asks the same cell.
pub(super) fn prefetch(arch: GuestArch, host: &HostQueries) {
    let _ = match arch {
        GuestArch::X86_64 => host.supported_cpuid().map(drop),
        GuestArch::Aarch64 => host.mask_ranges().map(drop),
    };
}

/// A fleet spec for `spec` guests can run on a backend for `backend` guests only if they agree;
/// if not, the error says how to run it anyway.
pub fn check_arch(spec: GuestArch, backend: GuestArch) -> Result<(), FleetError> {
    if spec == backend {
        return Ok(());
    }
    Err(FleetError::ArchMismatch {
        spec,
        backend,
        hint: match spec {
            GuestArch::Aarch64 => arm64::MISMATCH_HINT,
            GuestArch::X86_64 => "",
        },
    })
}

/// What a vCPU thread is launched with at `start`: the guest program it runs.
#[derive(Clone, Debug)]
pub(super) enum Launch {
    X86(x86::Launch),
    Arm64(arm64::Launch),
}

impl Launch {
    /// Whether the thread parks at its first exit (a paused start).
    pub fn pauses_at_first_exit(&self) -> bool {
        match self {
            Launch::X86(launch) => launch.pause_at_first_exit,
            Launch::Arm64(launch) => launch.limits.pause_at_first_exit,
        }
    }

    /// Run the guest on `vcpu` until the guest or the control plane ends the run, decoding its
    /// exits; `notify` hears of its first exit, parks and unparks.
    pub fn run(
        self,
        vcpu: &VcpuHandle,
        control: &RunControl,
        notify: &mut dyn FnMut(VcpuNotice),
    ) -> VcpuOutcome {
        match self {
            Launch::X86(launch) => VcpuOutcome::X86(launch.run(vcpu, control, notify)),
            Launch::Arm64(launch) => VcpuOutcome::Arm64(launch.run(vcpu, control, notify)),
        }
    }
}

/// How a vCPU thread's run went, by guest architecture.
#[derive(Debug)]
pub(super) enum VcpuOutcome {
    X86(ProbeOutcome),
    Arm64(RunOutcome<Arm64GuestReport>),
}

impl VcpuOutcome {
    pub fn exits(&self) -> u64 {
        match self {
            VcpuOutcome::X86(o) => o.exits,
            VcpuOutcome::Arm64(o) => o.exits,
        }
    }

    /// Of [`VcpuOutcome::exits`], those past the `record_exits` budget.
    pub fn counted(&self) -> u64 {
        match self {
            VcpuOutcome::X86(o) => o.counted,
            VcpuOutcome::Arm64(o) => o.counted,
        }
    }

    pub fn end(&self) -> &ProbeEnd {
        match self {
            VcpuOutcome::X86(o) => &o.end,
            VcpuOutcome::Arm64(o) => &o.end,
        }
    }

    /// Complete passes the guest reported.
    pub fn passes(&self) -> u64 {
        match self {
            VcpuOutcome::X86(o) => o.report.passes,
            VcpuOutcome::Arm64(o) => o.report.passes,
        }
    }
}

/// A lock refusal as its own explanation, for people: what changed, old → new, and the rule on
/// the first line, the details below. Any other error with its call and target.
pub(super) fn refusal_text(e: &HandleError) -> String {
    match &e.source {
        vcpu::CallError::Refused(refusal) => refusal.to_string(),
        other => format!("{} on {}: {other}", e.call, e.target),
    }
}

/// A vCPU report of a VM just configured, before its guest has run.
fn unstarted_vcpu(id: u32) -> VcpuReport {
    VcpuReport {
        id,
        drift: Arc::new([]),
        drift_changes: Arc::new([]),
        not_honoured: Vec::new(),
        already_absent: Vec::new(),
        guest: None,
        arm64_guest: None,
        exits: 0,
        exits_counted: 0,
        end: "not started".into(),
        run_end: crate::report::RunEnd::NotStarted,
        held: Arc::default(),
        hidden: Vec::new(),
    }
}
