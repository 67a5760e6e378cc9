//! The job behind `vmfleet run` (and its replay): bring a whole fleet spec up on a [`Fleet`], let
//! it run, and report what every guest saw.
//!
//! The same code runs live (KVM under the recorder) and in replay (the replay backend under the
//! recorder), which is what makes replay a test of the supervisor and not of a copy of it. The job
//! never looks at which backend it has.
//!
//! Steps: create and configure every VM concurrently (every vCPU's CPU model is written before any
//! vCPU runs, so the initial configuration never races the lock); start them all concurrently;
//! carry out the control requests `control` yields (a signal's `shutdown for exit` live, the
//! recorded requests in a replay); wait until every VM has exited; shut the fleet down (unless a
//! request already did: its report is the job's).

use crate::fleet::{ControlError, ControlValue, Fleet, FleetError, StartMode};
use crate::report::JobReport;
use crate::spec::FleetSpec;
use std::sync::Arc;
use vcpu::guests::x86 as guest;
use vcpu::{ControlCall, Hypervisor};

pub use crate::fleet::FleetError as JobError;

/// What a job tells its caller as it goes (progress bars, logs).
pub trait JobProgress: Send {
    /// `created` of `total` VMs are configured.
    fn created(&mut self, _created: usize, _total: usize) {}
    /// A VM is running (or could not start).
    fn started(&mut self, _vm: &str, _result: &Result<(), ControlError>) {}
    /// Every VM is up; the fleet now runs until its guests finish or it is stopped.
    fn running(&mut self) {}
}

/// Reports nothing.
pub struct Quiet;
impl JobProgress for Quiet {}

/// Run every VM of `spec` and report on each, in spec order, with no control requests.
pub async fn run_job(hv: Arc<dyn Hypervisor>, spec: &FleetSpec) -> Result<JobReport, FleetError> {
    crate::fleet::check_arch(spec.arch, hv.arch())?;
    let fleet = Fleet::new(hv, &spec.name).await?;
    Ok(run_on(&fleet, spec, &mut Quiet, futures::stream::empty()).await)
}

/// [`run_job`] on a given fleet, carrying out `control` requests once every VM is up (through
/// [`Fleet::handle`], so they are recorded) until the stream ends or one shuts the fleet down,
/// then waiting for every VM.
pub async fn run_on(
    fleet: &Fleet,
    spec: &FleetSpec,
    progress: &mut dyn JobProgress,
    control: impl futures::Stream<Item = ControlCall>,
) -> JobReport {
    use futures::StreamExt;
    let total = spec.vms.len();
    let created = fleet.create_all(spec.vms.clone()).await;
    progress.created(created.iter().filter(|r| r.is_ok()).count(), total);
    for result in &created {
        if let Err(e) = result {
            tracing::warn!("{e}");
        }
    }
    fleet
        .start_all(StartMode::Running, |vm, result| {
            let result = result.as_ref().map(drop).map_err(Clone::clone);
            progress.started(vm, &result);
        })
        .await;
    progress.running();
    let mut control = std::pin::pin!(control);
    let all_exited = fleet.wait_all_exited();
    let mut all_exited = std::pin::pin!(all_exited);
    loop {
        tokio::select! {
            () = &mut all_exited => break,
            next = control.next() => match next {
                Some(call) => {
                    let shown = call.to_string();
                    match fleet.handle(call).await {
                        Ok(ControlValue::Shutdown(report)) => return *report,
                        Ok(_) => {}
                        Err(e) => tracing::warn!("{shown}: {e}"),
                    }
                }
                None => {
                    all_exited.await;
                    break;
                }
            },
        }
    }
    fleet.shutdown().await
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
