//! The fleet: many VMs under one async control plane.
//!
//! [`Fleet`] is the control plane. It lives on tokio and never blocks: every VM has its own event
//! loop (`vm_loop.rs`, built on `event-manager`; on a thread of its own for real guests, on a
//! shared loop host for a replay or a model) that owns the VM, its vCPU threads and its
//! lifecycle; the fleet sends it commands and awaits the answers. So VM lifecycles proceed
//! concurrently, a VM that misbehaves only delays requests about itself, and a guest spinning in
//! `KVM_RUN` is stopped by kicks, never waited for.
//!
//! Control requests ([`Fleet::handle`]) are carried out concurrently, and each is recorded on the
//! trace's control stream with its reply *when it completes*, while it still holds what orders it
//! against the requests it could interfere with: requests about one VM name take turns (a
//! per-name async mutex, held from the name's lookup to the record), `stop-all` and `shutdown`
//! exclude every other request (a fleet-wide gate, taken shared by the others), and `wait`
//! holds nothing while it waits: it takes the gate and its name's turn only to record its answer.
//! So the control stream's order is an order in which the requests could have run one after the
//! other with the same replies, which is how replay re-issues them. Together with the vCPU
//! threads' recorded decisions this is what makes a fleet's trace replay to the same transcript:
//! every answer depends only on recorded things (a pause is answered when the VM has paused *or
//! ended*, never "not yet").
//!
//! The parts: this file is the control plane's state and its lifecycle requests; `create.rs`
//! brings VMs up (all of a request or none), `control.rs` is [`Fleet::handle`] (turns, the gate,
//! the record), `vm_loop.rs` is one VM's event loop, `guest/` the one place that knows x86 from
//! arm64, `supported.rs` what the host is asked once per fleet, `lifecycle.rs` the states and
//! views handed out, and `error.rs` every error of the fleet.

mod control;
mod create;
mod error;
mod guest;
pub mod lifecycle;
pub(crate) mod probe;
mod supported;
pub(crate) mod threads;
mod vm_loop;

use crate::report::{JobReport, VmReport, VmState};
use crate::spec::{self, VmSpec};
pub use control::ControlValue;
use create::Refusal;
pub use error::{
    AfterRunError, ConfigureError, ControlError, CrossCheckError, FleetError, HostQueryError,
    LinkError, ModelError, StartError, UnknownFeature, VmError,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use guest::ModelRequest;
pub use guest::check_arch;
pub use lifecycle::StartMode;
use lifecycle::{Lifecycle, ModelView, VmInfo, VmStatus};
use protocol::Op;
use recorder::Recorder;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use supported::HostQueries;
use tokio::sync::oneshot;
use vcpu::{Hypervisor, VmId};
use vm_loop::{Command, VmLink, VmSetup};

/// The answer of a VM loop that was asked to create its VM.
type Created = oneshot::Receiver<vm_loop::CreateResult>;

/// How many VMs [`Fleet::start_all`] starts at a time.
pub const START_WAVE: usize = 8;

/// How long a control request waits for a VM to carry it out.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How [`Fleet::shutdown_as`] ends the fleet's VMs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Stop every VM, then close its vCPUs and the VM (`DESTROY_VCPU`, `DESTROY_VM`), join every
    /// thread and unmap guest memory: the process goes on (a library user, a test that shuts
    /// many fleets down). `Request::Shutdown`.
    #[default]
    Teardown,
    /// Stop every VM and collect its final report, and let go of nothing: no `DESTROY` call, no
    /// thread ends, no guest memory is unmapped; the process's exit releases it all. Every
    /// `munmap` in the process calls every live VM's MMU notifier, so a teardown one VM after
    /// another grows with the square of the fleet, while the exit releases each notifier once
    /// before unmapping anything. Only for a process that exits right after (`vmfleet serve`):
    /// the fleet's threads and objects stay until then. `Request::ShutdownForExit`.
    ProcessExit,
}

/// One VM the fleet knows about (removed VMs stay, with their final report).
struct Entry {
    id: VmId,
    name: String,
    vcpus: u32,
    link: Option<Arc<Mutex<VmLink>>>,
    status: Option<tokio::sync::watch::Receiver<VmStatus>>,
    started: Option<Instant>,
    /// The final report, once the VM is gone (removed, or failed to come up).
    report: Option<VmReport>,
    /// `wait` requests bound to this VM that have not recorded their answer yet. A new VM may
    /// take this one's name only when there are none (see [`Fleet::reserve`]).
    waits: usize,
}

/// What a whole fleet may hold at once, across every request (VMs removed no longer count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FleetLimits {
    /// VMs at once.
    pub vms: u64,
    /// vCPUs at once, summed over the VMs.
    pub vcpus: u64,
}

impl Default for FleetLimits {
    /// The limits a fleet spec is held to.
    fn default() -> Self {
        FleetLimits {
            vms: spec::MAX_VMS as u64,
            vcpus: spec::MAX_FLEET_VCPUS,
        }
    }
}

/// The control plane of a fleet of VMs.
pub struct Fleet {
    limits: FleetLimits,
    name: String,
    hv: Arc<dyn Hypervisor>,
    supported: Arc<HostQueries>,
    /// What its VMs share of their models and reports (`guest/shared.rs`).
    shared: Arc<guest::SharedModels>,
    entries: Mutex<Entries>,
    next_id: AtomicU32,
    control_log: Option<Recorder>,
    /// Taken shared by every recorded request, exclusively by `stop-all` and `shutdown`.
    gate: tokio::sync::RwLock<()>,
    /// One turn per VM name: requests about a name are carried out one at a time.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Signalled whenever a `wait` is done with its VM (a reused name may then be free).
    waits_done: tokio::sync::Notify,
    shutting_down: std::sync::atomic::AtomicBool,
}

impl Fleet {
    /// A fleet on `hv`: reads what the host supports (`KVM_GET_SUPPORTED_CPUID`) once.
    pub async fn new(hv: Arc<dyn Hypervisor>, name: &str) -> Result<Fleet, FleetError> {
        let supported = Arc::new(HostQueries::new(Arc::clone(&hv)));
        Ok(Fleet {
            limits: FleetLimits::default(),
            name: name.to_string(),
            hv,
            supported,
            shared: Arc::default(),
            entries: Mutex::new(Entries::default()),
            next_id: AtomicU32::new(0),
            control_log: None,
            gate: tokio::sync::RwLock::new(()),
            turns: Mutex::new(HashMap::new()),
            waits_done: tokio::sync::Notify::new(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Record every control request carried out by [`Fleet::handle`] on `recorder`'s control
    /// stream.
    pub fn with_control_log(mut self, recorder: Recorder) -> Self {
        self.control_log = Some(recorder);
        self
    }

    /// Hold `create` requests to `limits` instead of the spec's (tests use small ones).
    pub fn with_limits(mut self, limits: FleetLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The fleet's name (its spec's `name`), for logs and reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- lifecycle ----------------------------------------------------------------------------

    fn link(&self, name: &str) -> Result<Arc<Mutex<VmLink>>, ControlError> {
        let entries = self.entries();
        let entry =
            newest(&entries, name).ok_or_else(|| ControlError::UnknownVm(name.to_string()))?;
        entry.link.clone().ok_or_else(|| ControlError::Removed {
            vm: name.to_string(),
        })
    }

    /// Send a command to a VM's loop and await its answer.
    async fn ask<T, E: Into<ControlError>>(
        &self,
        name: &str,
        request: &str,
        command: impl FnOnce(vm_loop::Answer<T, E>) -> Command,
    ) -> Result<T, ControlError> {
        let rx = self.send(name, command)?;
        Self::answer(name, request, rx).await
    }

    /// Send a command to a VM's loop; the receiver gets its answer.
    fn send<T, E>(
        &self,
        name: &str,
        command: impl FnOnce(vm_loop::Answer<T, E>) -> Command,
    ) -> Result<oneshot::Receiver<Result<T, E>>, ControlError> {
        let link = self.link(name)?;
        let (tx, rx) = oneshot::channel();
        lock(&link)
            .send(command(tx))
            .map_err(|source| ControlError::Link {
                vm: name.to_string(),
                source,
            })?;
        Ok(rx)
    }

    /// Await the answer to a command sent with [`Fleet::send`].
    async fn answer<T, E: Into<ControlError>>(
        name: &str,
        request: &str,
        rx: oneshot::Receiver<Result<T, E>>,
    ) -> Result<T, ControlError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(why))) => Err(why.into()),
            Ok(Err(_)) => Err(ControlError::LoopEnded {
                vm: name.to_string(),
            }),
            Err(_) => Err(ControlError::Timeout {
                vm: name.to_string(),
                request: request.to_string(),
            }),
        }
    }

    fn mark_started(&self, name: &str) {
        if let Some(entry) = self.entries().newest_mut(name) {
            entry.started.get_or_insert_with(Instant::now);
        }
    }

    /// Start a created VM; answered once every vCPU has left the guest once.
    pub async fn start(&self, name: &str) -> Result<VmStatus, ControlError> {
        self.start_as(name, StartMode::Running).await
    }

    /// Start a created VM in `mode`: running on, or paused at every vCPU's first exit (answered
    /// once every vCPU has parked there; `resume` lets them run on).
    pub async fn start_as(&self, name: &str, mode: StartMode) -> Result<VmStatus, ControlError> {
        let status = self
            .ask(name, mode.request(), |answer| Command::Start {
                mode,
                answer,
            })
            .await?;
        self.mark_started(name);
        Ok(status)
    }

    /// Start every VM that is created and not started, concurrently; calls `started` as each
    /// one is running.
    pub async fn start_all(
        &self,
        mode: StartMode,
        mut started: impl FnMut(&str, &Result<VmStatus, ControlError>),
    ) -> Vec<(String, Result<VmStatus, ControlError>)> {
        let names: Vec<String> = self
            .entries()
            .iter()
            .filter(|e| {
                e.status
                    .as_ref()
                    .is_some_and(|s| s.borrow().lifecycle == Lifecycle::Created)
            })
            .map(|e| e.name.clone())
            .collect();
        // Waves of START_WAVE VMs: a VM that starts competes for the CPU with every guest that
        // already runs, so starting them all at once only makes every start slow.
        let mut pending = futures::stream::iter(
            names
                .iter()
                .map(|name| async move { (name.clone(), self.start_as(name, mode).await) }),
        )
        .buffer_unordered(START_WAVE);
        let mut results = Vec::new();
        while let Some((name, result)) = pending.next().await {
            started(&name, &result);
            results.push((name, result));
        }
        results
    }

    /// Pause a running VM; answered once every vCPU has parked.
    pub async fn pause(&self, name: &str) -> Result<VmStatus, ControlError> {
        self.ask(name, Op::Pause.name(), Command::Pause).await
    }

    /// Resume a paused VM; answered once every vCPU runs again.
    pub async fn resume(&self, name: &str) -> Result<VmStatus, ControlError> {
        self.ask(name, Op::Resume.name(), Command::Resume).await
    }

    /// Stop a VM; answered once every vCPU thread has been joined.
    pub async fn stop(&self, name: &str) -> Result<VmStatus, ControlError> {
        self.ask(name, Op::Stop.name(), Command::Stop).await
    }

    /// A VM's CPU model as the kernel holds it, with its drift from what was asked.
    pub async fn model(&self, name: &str) -> Result<ModelView, ControlError> {
        self.ask(name, Op::Model.name(), Command::Model).await
    }

    /// Change a VM's CPU model to one that hides `hide`; the lock refuses a change once the VM
    /// has run.
    pub async fn set_model(
        &self,
        name: &str,
        hide: Vec<String>,
    ) -> Result<ModelView, ControlError> {
        self.set_model_writes(name, hide, &[]).await
    }

    /// Change a VM's CPU model: an x86 VM's to one that hides `hide`, an arm64 VM's by the
    /// writes `set` (`REGISTER.FIELD=VALUE`, `REGISTER=VALUE`), judged by the arm64 model before
    /// the first run and by the lock after it (only identical rewrites pass). A VM refuses the
    /// other architecture's half when it is not empty.
    pub async fn set_model_writes(
        &self,
        name: &str,
        hide: Vec<String>,
        set: &[String],
    ) -> Result<ModelView, ControlError> {
        let hide = hide
            .iter()
            .map(|n| feature_name(n).map_err(ControlError::UnknownFeature))
            .collect::<Result<Vec<_>, _>>()?;
        let arm64 =
            vcpu::model::arm64::model::Assignments::parse(set).map_err(ControlError::BadWrite)?;
        self.ask(name, Op::SetModel.name(), |answer| Command::SetModel {
            change: ModelRequest { hide, arm64 },
            answer,
        })
        .await
    }

    /// Stop (if needed) and tear down a VM; its final report stays with the fleet.
    pub async fn remove(&self, name: &str) -> Result<VmReport, ControlError> {
        let report = self.ask(name, Op::Remove.name(), Command::Remove).await?;
        self.forget_loop(name, report).await
    }

    /// A VM whose removal was answered: wait until its loop is dropped, keep its final report.
    async fn forget_loop(&self, name: &str, report: VmReport) -> Result<VmReport, ControlError> {
        let link = self.link(name)?;
        loop_dropped(&link).await;
        if let Some(entry) = self.entries().newest_mut(name) {
            entry.link = None;
            entry.report = Some(report.clone());
        }
        Ok(report)
    }

    /// A VM whose loop answered [`Command::Exit`]: keep its final report; its loop (its thread
    /// parked, or kept by its loop host) stays until the process exits (nothing is waited for).
    fn leave_loop(&self, name: &str, report: VmReport) -> VmReport {
        if let Some(entry) = self.entries().newest_mut(name) {
            entry.link = None;
            entry.report = Some(report.clone());
        }
        report
    }

    /// Call `each` on the link of every one of these VMs that has not been removed.
    fn each_link(&self, names: &[String], each: impl Fn(&VmLink)) {
        let links: Vec<_> = {
            let entries = self.entries();
            names
                .iter()
                .filter_map(|name| live(&entries, name).and_then(|e| e.link.clone()))
                .collect()
        };
        for link in links {
            each(&lock(&link));
        }
    }

    /// Want every vCPU of these VMs stopped and kick them all now, from here (see
    /// `VmLink::kick_stop`): a loop thread woken by its `stop` competes for the CPU with every
    /// guest still spinning, so a thousand loops kicking their own vCPUs one after the other
    /// take seconds. The caller holds the gate (nothing else is in flight) or is the job's end;
    /// the loops then carry out their `stop` as usual.
    fn kick_stop(&self, names: &[String]) {
        self.each_link(names, VmLink::kick_stop);
    }

    /// Stop every VM that has not exited, concurrently.
    /// Every VM that has not been removed is answered for, exited ones included: which VMs had
    /// exited by the time the request came is a matter of timing, the final states are not.
    pub async fn stop_all(&self) -> Vec<(String, VmStatus)> {
        let names = self.live_names(|_| true);
        self.kick_stop(&names);
        let mut pending = FuturesUnordered::from_iter(
            names
                .iter()
                .map(|name| async move { (name.clone(), self.stop(name).await) }),
        );
        let mut stopped = Vec::new();
        while let Some((name, result)) = pending.next().await {
            match result {
                Ok(status) => stopped.push((name, status)),
                Err(e) => tracing::warn!("stopping {name}: {e}"),
            }
        }
        // Report in fleet order, not completion order: replies must not depend on timing.
        let order = self.live_names(|_| true);
        stopped.sort_by_key(|(name, _)| order.iter().position(|n| n == name));
        stopped
    }

    fn live_names(&self, keep: impl Fn(&Lifecycle) -> bool) -> Vec<String> {
        self.entries()
            .iter()
            .filter(|e| e.link.is_some())
            .filter(|e| {
                e.status
                    .as_ref()
                    .is_some_and(|s| keep(&s.borrow().lifecycle))
            })
            .map(|e| e.name.clone())
            .collect()
    }

    /// Wait until one VM has exited (halted, stopped or failed); its final status.
    pub async fn wait_exited(&self, name: &str) -> Result<VmStatus, ControlError> {
        let watch = {
            let entries = self.entries();
            let entry =
                newest(&entries, name).ok_or_else(|| ControlError::UnknownVm(name.to_string()))?;
            entry.status.clone()
        };
        let watch = watch.ok_or_else(|| ControlError::Removed {
            vm: name.to_string(),
        })?;
        Self::exited(name, watch).await
    }

    /// Wait until the VM behind `watch` has exited; its final status.
    async fn exited(
        name: &str,
        mut watch: tokio::sync::watch::Receiver<VmStatus>,
    ) -> Result<VmStatus, ControlError> {
        let status = watch
            .wait_for(|s| s.lifecycle.is_exited())
            .await
            .map_err(|_| ControlError::LoopEnded {
                vm: name.to_string(),
            })?;
        Ok(status.clone())
    }

    /// Wait until every VM has exited (halted, stopped or failed).
    pub async fn wait_all_exited(&self) {
        let watches: Vec<_> = self
            .entries()
            .iter()
            .filter_map(|e| e.status.clone())
            .collect();
        for mut watch in watches {
            let _ = watch.wait_for(|s| s.lifecycle.is_exited()).await;
        }
    }

    /// Stop and remove every VM (torn down); the report of every VM the fleet ever had, in id
    /// order.
    pub async fn shutdown(&self) -> JobReport {
        self.shutdown_as(ShutdownMode::Teardown).await
    }

    /// Stop every VM and end it as `mode` says; the report of every VM the fleet ever had, in id
    /// order. After [`ShutdownMode::ProcessExit`] the caller must end the process soon: the
    /// fleet's threads and kernel objects stay until then.
    pub async fn shutdown_as(&self, mode: ShutdownMode) -> JobReport {
        self.shutting_down.store(true, Ordering::SeqCst);
        let clock = Instant::now();
        let names = self.live_names(|_| true);
        if mode == ShutdownMode::ProcessExit {
            // Before the kicks: every vCPU thread they stop parks instead of returning.
            self.each_link(&names, VmLink::linger);
        }
        self.kick_stop(&names);
        // Every VM at once, and each VM's `stop` and `remove` sent together so that its loop
        // carries out both in one wake-up: a thousand VMs one round trip after another, or two
        // rounds of wake-ups, take seconds. The loop answers `stop` first, exactly as if the two
        // had come one after the other.
        let removals = names.iter().map(|name| async move {
            let stop = self.send(name, Command::Stop);
            let remove = match mode {
                ShutdownMode::Teardown => self.send(name, Command::Remove),
                ShutdownMode::ProcessExit => self.send(name, Command::Exit),
            };
            let removed = async {
                // A stop that fails (the VM failed meanwhile, say) does not keep it from removal.
                if let Err(e) = async { Self::answer(name, Op::Stop.name(), stop?).await }.await {
                    tracing::warn!("stopping {name}: {e}");
                }
                let report = Self::answer(name, Op::Remove.name(), remove?).await?;
                match mode {
                    ShutdownMode::Teardown => self.forget_loop(name, report).await,
                    ShutdownMode::ProcessExit => Ok(self.leave_loop(name, report)),
                }
            };
            if let Err(e) = removed.await {
                tracing::warn!("removing {name}: {e}");
            }
        });
        futures::future::join_all(removals).await;
        tracing::debug!(
            "shutdown ({mode:?}): {} VM(s) stopped and removed in {:?}",
            names.len(),
            clock.elapsed()
        );
        self.report()
    }

    /// The reports of the VMs that are gone, in id order (all of them after a shutdown).
    pub fn report(&self) -> JobReport {
        let mut entries: Vec<(VmId, VmReport)> = self
            .entries()
            .iter()
            .filter_map(|e| e.report.clone().map(|r| (e.id, r)))
            .collect();
        entries.sort_by_key(|(id, _)| *id);
        JobReport {
            fleet: self.name.clone(),
            vms: entries.into_iter().map(|(_, r)| r).collect(),
        }
    }

    /// Every VM with its state and uptime, in id order (removed VMs included, as `removed`).
    pub fn list(&self) -> Vec<VmInfo> {
        self.entries()
            .iter()
            .map(|e| {
                // For people, and for machines (phase, exit reason: snake_case).
                let (state, phase, exit_reason) = match (&e.link, &e.status) {
                    (None, _) => match e.report.as_ref().map(|r| &r.state) {
                        Some(VmState::RemovedBeforeStart) => (
                            "removed before start".to_string(),
                            "removed",
                            Some("removed_before_start"),
                        ),
                        Some(VmState::Failed(_)) if e.started.is_none() => (
                            "failed to come up".to_string(),
                            "removed",
                            Some("failed_to_come_up"),
                        ),
                        _ => ("removed".to_string(), "removed", None),
                    },
                    (Some(_), Some(status)) => {
                        let lifecycle = &status.borrow().lifecycle;
                        (
                            lifecycle.to_string(),
                            lifecycle.phase(),
                            lifecycle.exit_reason(),
                        )
                    }
                    (Some(_), None) => ("unknown".to_string(), "unknown", None),
                };
                let running = e.link.is_some()
                    && e.status
                        .as_ref()
                        .is_some_and(|s| !s.borrow().lifecycle.is_exited());
                VmInfo {
                    id: e.id.0,
                    name: e.name.clone(),
                    vcpus: e.vcpus,
                    state,
                    phase: phase.to_string(),
                    exit_reason: exit_reason.map(str::to_string),
                    uptime_ms: e
                        .started
                        .filter(|_| running)
                        .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
                }
            })
            .collect()
    }
}

/// A control reply as the trace records it. A lock refusal keeps its one-line recorded words
/// (people are shown its headline and details instead), so replies stay comparable with the
/// ones traces hold.
pub fn reply_line(result: &Result<ControlValue, ControlError>) -> String {
    match result {
        Ok(value) => format!("ok: {}", value.summary()),
        Err(ControlError::Refused { vm, recorded, .. }) => format!("error: {vm}: {recorded}"),
        Err(e) => format!("error: {e}"),
    }
}

/// A feature's catalog spelling, or why the name is not one.
fn feature_name(name: &str) -> Result<String, UnknownFeature> {
    match vcpu::model::x86::catalog::by_name(name) {
        Some(feature) => Ok(feature.name.to_string()),
        None => Err(UnknownFeature {
            name: name.to_string(),
            suggestion: vcpu::model::x86::catalog::suggest(name),
        }),
    }
}

/// A `wait` bound to a VM: counted on its entry until dropped (answered, or its client gone).
struct WaitBinding<'a> {
    fleet: &'a Fleet,
    id: VmId,
    watch: tokio::sync::watch::Receiver<VmStatus>,
}

impl Drop for WaitBinding<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.fleet.entries().iter_mut().find(|e| e.id == self.id) {
            entry.waits = entry.waits.saturating_sub(1);
        }
        self.fleet.waits_done.notify_waiters();
    }
}

/// Every VM the fleet ever had, in creation order, with the newest VM of each name indexed: a
/// request finds its VM by name, and a scan per request made a 1,000-VM fleet's start and
/// shutdown quadratic (string compares were ~5% of a 1,000-VM replay, on the control plane's
/// thread). Entries are added and dropped only through [`Entries::push`] and
/// [`Entries::retain`], which keep the index; the slice they deref to can change an entry, not
/// the list.
#[derive(Default)]
struct Entries {
    list: Vec<Entry>,
    /// Where the newest VM of each name is in `list`.
    newest: HashMap<String, usize>,
}

impl std::ops::Deref for Entries {
    type Target = [Entry];

    fn deref(&self) -> &[Entry] {
        &self.list
    }
}

impl std::ops::DerefMut for Entries {
    fn deref_mut(&mut self) -> &mut [Entry] {
        &mut self.list
    }
}

impl Entries {
    fn push(&mut self, entry: Entry) {
        self.newest.insert(entry.name.clone(), self.list.len());
        self.list.push(entry);
    }

    fn retain(&mut self, keep: impl FnMut(&Entry) -> bool) {
        self.list.retain(keep);
        self.newest.clear();
        for (at, entry) in self.list.iter().enumerate() {
            self.newest.insert(entry.name.clone(), at);
        }
    }

    /// The newest VM of that name (a removed VM's name can be taken again).
    fn newest_mut(&mut self, name: &str) -> Option<&mut Entry> {
        let at = *self.newest.get(name)?;
        self.list.get_mut(at)
    }
}

/// The newest VM of that name (a removed VM's name can be taken again).
fn newest<'a>(entries: &'a Entries, name: &str) -> Option<&'a Entry> {
    entries.list.get(*entries.newest.get(name)?)
}

/// The VM of that name that has not been removed, if any: the newest of its name, since a name
/// is taken again only once its VM was removed.
fn live<'a>(entries: &'a Entries, name: &str) -> Option<&'a Entry> {
    newest(entries, name).filter(|e| e.link.is_some())
}

/// Wait until the loop behind `link` has been dropped (after it answered `Remove`, or failed to
/// come up), wherever it ran; at once if it was waited for already.
async fn loop_dropped(link: &Mutex<VmLink>) {
    let end = lock(link).take_end();
    if let Some(end) = end {
        end.wait().await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fleet's VMs by name, for callers that need a lookup.
pub fn by_name(list: &[VmInfo]) -> HashMap<&str, &VmInfo> {
    list.iter().map(|vm| (vm.name.as_str(), vm)).collect()
}
