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
use protocol::Request;
use std::sync::Arc;
use vcpu::Hypervisor;

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
    control: impl futures::Stream<Item = Request>,
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
    // The models `create` answered are not needed past here (with 1,000s of VMs, not kept for
    // the whole run).
    drop(created);
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
                Some(request) => {
                    let shown = request.to_string();
                    match fleet.handle(request).await {
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
