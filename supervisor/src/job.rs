//! The job: run a fleet spec against a hypervisor backend and report what every guest saw.
//!
//! The same code runs live (KVM under the recorder) and in replay (the replay backend under the
//! recorder), which is what makes replay a test of the supervisor and not of a copy of it. The job
//! never looks at which backend it has.
//!
//! Per VM, on its own blocking task: create the VM and its guest memory; create every vCPU and
//! write its CPU model (all before any vCPU runs, so the initial configuration can never race
//! with the lock); load the guest; run every vCPU on its own OS thread until the guest halts (or
//! faults, when the spec asks it to: `fault_after_passes`);
//! compare what the guest saw with the table the kernel holds; try the spec's after-run writes
//! against the lock; tear down.

use crate::report::{
    AfterRunReport, GuestSummary, JobReport, RunEnd, VcpuReport, Verdict, VmReport, VmState,
};
use crate::spec::{AfterRun, FleetSpec, VmSpec};
use std::sync::Arc;
use vcpu::cpuid::CpuidTable;
use vcpu::cpuid::drift;
use vcpu::cpuid::features;
use vcpu::cpuid::model::X86CpuModel;
use vcpu::guest::x86 as guest;
use vcpu::runner::{self, ProbeEnd};
use vcpu::{
    GuestArch, HandleError, Hypervisor, Reply, SystemCall, VcpuCall, VcpuHandle, VcpuId, VmCall,
    VmHandle, VmId,
};

/// Why a job could not start at all (as opposed to a VM failing inside it).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("this backend runs {0} guests; vmfleet's built-in fleet jobs run x86_64 guests")]
    UnsupportedArch(GuestArch),
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    SupportedCpuid(vcpu::CallError),
    #[error("a VM task died: {0}")]
    Task(String),
}

/// Run every VM of `spec` concurrently and report on each, in spec order.
pub async fn run_job(hv: Arc<dyn Hypervisor>, spec: &FleetSpec) -> Result<JobReport, JobError> {
    if hv.arch() != GuestArch::X86_64 {
        return Err(JobError::UnsupportedArch(hv.arch()));
    }
    let supported = match hv.call(&SystemCall::GetSupportedCpuid) {
        Ok(Reply::Cpuid(table)) => Arc::new(table),
        Ok(other) => {
            return Err(JobError::SupportedCpuid(vcpu::CallError::Backend(format!(
                "unexpected reply {other}"
            ))));
        }
        Err(e) => return Err(JobError::SupportedCpuid(e)),
    };

    let tasks: Vec<_> = spec
        .vms
        .iter()
        .enumerate()
        .map(|(index, vm_spec)| {
            let hv = Arc::clone(&hv);
            let supported = Arc::clone(&supported);
            let vm_spec = vm_spec.clone();
            let id = VmId(index as u32);
            tokio::task::spawn_blocking(move || run_vm(hv.as_ref(), id, &vm_spec, &supported))
        })
        .collect();

    let mut vms = Vec::with_capacity(tasks.len());
    for task in tasks {
        vms.push(task.await.map_err(|e| JobError::Task(e.to_string()))?);
    }
    Ok(JobReport {
        fleet: spec.name.clone(),
        vms,
    })
}

/// One VM's whole life. Never panics on a backend answer: every failure ends up in the report.
pub fn run_vm(hv: &dyn Hypervisor, id: VmId, spec: &VmSpec, supported: &CpuidTable) -> VmReport {
    let mut report = VmReport::new(id, spec);
    let vm = match hv.create_vm(id, &spec.name) {
        Ok(vm) => VmHandle::new(vm, spec.name.clone()),
        Err(e) => {
            report.state = VmState::Failed(format!("CREATE_VM: {e}"));
            return report;
        }
    };
    let mut vcpus: Vec<Arc<VcpuHandle>> = Vec::new();
    if let Err(failure) = drive_vm(&vm, spec, supported, &mut vcpus, &mut report) {
        report.state = VmState::Failed(failure);
    }
    // Tear down in reverse order of creation, even after a failure; a failed teardown is reported
    // but does not hide an earlier failure.
    for vcpu in vcpus.iter().rev() {
        if let Err(e) = vcpu.plain_call(VcpuCall::Destroy) {
            report.fail_if_ok(format!("teardown: {e}"));
        }
    }
    drop(vcpus);
    if let Err(e) = vm.call(VmCall::Destroy) {
        report.fail_if_ok(format!("teardown: {e}"));
    }
    report
}

fn drive_vm(
    vm: &VmHandle,
    spec: &VmSpec,
    supported: &CpuidTable,
    vcpus: &mut Vec<Arc<VcpuHandle>>,
    report: &mut VmReport,
) -> Result<(), String> {
    let memory = (u64::from(spec.memory_mib) << 20).max(guest::MEMORY_SIZE);
    vm.add_memory(0, 0, memory).map_err(|e| e.to_string())?;

    // Configure every vCPU before any of them runs.
    let model = X86CpuModel {
        hide: spec.cpu.hide.clone(),
    };
    for index in 0..spec.vcpus {
        let vcpu = Arc::new(vm.create_vcpu(VcpuId(index)).map_err(|e| e.to_string())?);
        vcpus.push(Arc::clone(&vcpu));
        let requested = model
            .build(supported, index, spec.vcpus)
            .map_err(|e| format!("{}/{}: CPU model: {e}", vm.id(), vcpu.id()))?;
        let write = vcpu
            .set_cpuid(&requested.table)
            .map_err(|e| e.to_string())?;
        let hidden: Vec<&'static features::Feature> = requested.hidden.clone();
        report.vcpus.push(VcpuReport {
            id: index,
            drift: drift::drift(&requested.table, &write.held).lines(),
            not_honoured: drift::not_honoured(&hidden, &write.held)
                .iter()
                .map(|f| f.name.to_string())
                .collect(),
            already_absent: requested
                .already_absent
                .iter()
                .map(|f| f.name.to_string())
                .collect(),
            held: write.held,
            hidden,
            guest: None,
            exits: 0,
            end: "not started".into(),
            run_end: RunEnd::NotStarted,
        });
    }

    // One probe table for the VM: the points of vCPU 0's table as the kernel holds it.
    let points = report
        .vcpus
        .first()
        .map(|v| v.held.probe_points())
        .unwrap_or_default();
    let program = guest::GuestProgram {
        points: &points,
        repeats: spec.probe_repeats,
        fault_after: spec.fault_after_passes.unwrap_or(0),
    };
    vm.with_memory(|mem| guest::load_with(mem, &program))
        .map_err(|e| format!("loading the guest: {e}"))?;
    for vcpu in vcpus.iter() {
        vcpu.set_boot_state(guest::ENTRY)
            .map_err(|e| e.to_string())?;
    }

    let budget = exit_budget(&program);
    let threads: Vec<_> = vcpus
        .iter()
        .map(|vcpu| {
            runner::spawn_probe(
                Arc::clone(vcpu),
                format!("{}-{}", vm.name(), vcpu.id()),
                points.clone(),
                spec.probe_repeats,
                budget,
            )
            .map_err(|e| format!("starting the thread of {}: {e}", vcpu.id()))
        })
        .collect::<Result<_, _>>()?;

    let mut failures = Vec::new();
    for (thread, vcpu_report) in threads.into_iter().zip(report.vcpus.iter_mut()) {
        let outcome = match thread.join() {
            Ok(outcome) => outcome,
            Err(_) => {
                failures.push(format!("vcpu{}: its thread panicked", vcpu_report.id));
                vcpu_report.end = "thread panicked".into();
                vcpu_report.run_end = RunEnd::ThreadPanicked;
                continue;
            }
        };
        vcpu_report.exits = outcome.exits;
        vcpu_report.end = describe_end(&outcome.end);
        vcpu_report.run_end = run_end(&outcome.end);
        if !matches!(outcome.end, ProbeEnd::Halted) {
            failures.push(format!("vcpu{}: {}", vcpu_report.id, vcpu_report.end));
        }
        vcpu_report.guest = Some(GuestSummary::from_report(
            &vcpu_report.held,
            &outcome.report,
            &vcpu_report.hidden,
        ));
    }
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }

    for action in &spec.after_run {
        let targets: Vec<u32> = match action.vcpu() {
            Some(v) => vec![v],
            None => (0..spec.vcpus).collect(),
        };
        for target in targets {
            let vcpu = &vcpus[target as usize];
            report.after_run.push(try_after_run(vcpu, action)?);
        }
    }
    Ok(())
}

/// The exits a guest running `program` needs, with room to spare for kicks: every pass is
/// `PASS_BEGIN`, six `OUT`s per point and `PASS_END`, and one final exit (`HLT` or the fault).
/// `None` (no budget) for a guest that repeats forever and never faults.
pub fn exit_budget(program: &guest::GuestProgram<'_>) -> Option<u64> {
    let per_pass = 6 * program.points.len() as u64 + 2;
    program
        .passes()
        .map(|passes| u64::from(passes) * per_pass + 16)
}

/// Attempt one after-run write and judge it against the lock's rule.
fn try_after_run(vcpu: &VcpuHandle, action: &AfterRun) -> Result<AfterRunReport, String> {
    let held = vcpu.get_cpuid().map_err(|e| e.to_string())?;
    let (label, table) = match action {
        AfterRun::RewriteIdentical { .. } => ("rewrite identical".to_string(), held.clone()),
        AfterRun::Hide {
            features: names, ..
        } => {
            let mut table = held.clone();
            for name in names {
                if let Some(f) = features::by_name(name) {
                    if let Some(entry) = table.lookup_mut(f.leaf, f.subleaf) {
                        *entry.reg_mut(f.reg) &= !(1u32 << f.bit);
                    }
                }
            }
            (format!("hide {}", names.join(",")), table)
        }
    };
    // The lock's rule: a write identical to what the kernel holds is allowed, anything else is
    // refused. Hiding a feature the kernel already hides is identical, hence allowed.
    let expected = if table == held {
        Verdict::Allowed
    } else {
        Verdict::RefusedByLock
    };
    let (outcome, message) = match vcpu.set_cpuid(&table) {
        Ok(_) => (Verdict::Allowed, None),
        Err(e) if e.is_lock_refusal() => (Verdict::RefusedByLock, Some(refusal_text(&e))),
        Err(e) => (Verdict::RefusedByKernel, Some(e.to_string())),
    };
    Ok(AfterRunReport {
        vcpu: vcpu.id().0,
        action: label,
        expected,
        outcome,
        message,
    })
}

fn refusal_text(e: &HandleError) -> String {
    match &e.source {
        vcpu::CallError::Refused(refusal) => refusal.to_string(),
        other => other.to_string(),
    }
}

fn run_end(end: &ProbeEnd) -> RunEnd {
    match end {
        ProbeEnd::Halted => RunEnd::Halted,
        ProbeEnd::GuestFault(_) => RunEnd::GuestFault,
        ProbeEnd::Protocol(_) => RunEnd::ProtocolError,
        ProbeEnd::Call(_) => RunEnd::CallFailed,
        ProbeEnd::ExitBudget => RunEnd::ExitBudget,
    }
}

fn describe_end(end: &ProbeEnd) -> String {
    match end {
        ProbeEnd::Halted => "halted".into(),
        ProbeEnd::GuestFault(what) => format!("guest fault: {what}"),
        ProbeEnd::Protocol(e) => format!("guest protocol error: {e}"),
        ProbeEnd::Call(e) => format!("call failed: {e}"),
        ProbeEnd::ExitBudget => "exit budget exhausted before the guest halted".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_budget_covers_the_passes_the_guest_runs() {
        let points = [(0, 0), (1, 0)];
        let program = |repeats, fault_after| guest::GuestProgram {
            points: &points,
            repeats,
            fault_after,
        };
        // 2 points: 14 exits a pass, plus room for the final exit and kicks.
        assert_eq!(exit_budget(&program(1, 0)), Some(14 + 16));
        assert_eq!(exit_budget(&program(3, 0)), Some(3 * 14 + 16));
        // A fault bounds a guest that would otherwise repeat forever, or cuts it short.
        assert_eq!(exit_budget(&program(0, 2)), Some(2 * 14 + 16));
        assert_eq!(exit_budget(&program(5, 2)), Some(2 * 14 + 16));
        // Forever without a fault: no budget.
        assert_eq!(exit_budget(&program(0, 0)), None);
    }
}
