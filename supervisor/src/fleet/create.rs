//! Creating a fleet's VMs: reserving names and room for a request (all of it or none), spawning
//! each VM's loop (which creates and configures the VM), and awaiting what each loop answers,
//! tearing down a request's VMs again when one of them failed to come up. Apart from the rest
//! of the control plane in [`super`] because this is the one path where many VMs are begun at
//! once and answered for one by one.

use super::*;
use error::VmError;

/// Why [`Fleet::reserve`] did not reserve.
pub(super) enum Refusal<'a> {
    Error(ControlError),
    /// A name is free only once the `wait`s on its previous VM have answered; signalled when one
    /// has.
    WaitsPending(tokio::sync::futures::Notified<'a>),
}

impl Fleet {
    /// Create and configure the VMs of `specs`, concurrently; ids follow the order of `specs`.
    /// Every VM is answered for: its model, or why it could not come up (it then stays in the
    /// fleet as failed, so the final report shows it).
    pub async fn create_all(&self, specs: Vec<VmSpec>) -> Vec<Result<ModelView, ControlError>> {
        let pending: Vec<_> = specs
            .into_iter()
            .map(|spec| self.begin_create(spec))
            .collect();
        self.ask_supported_while_loops_create();
        let mut results = Vec::with_capacity(pending.len());
        for begun in pending {
            results.push(match begun {
                Ok((name, created)) => self.finish_create(&name, created).await,
                Err(e) => Err(e),
            });
        }
        results
    }

    /// Create and configure one VM (not started).
    pub async fn create(&self, spec: VmSpec) -> Result<ModelView, ControlError> {
        let (name, created) = self.begin_create(spec)?;
        self.ask_supported_while_loops_create();
        self.finish_create(&name, created).await
    }

    /// Read the supported CPUID table (once per fleet) while the loop threads just spawned create
    /// their VMs; they need it only for their CPU models. It blocks this task for one ioctl, once
    /// per fleet; handing it to a blocking-pool thread costs as much again in thread hand-offs.
    pub(super) fn ask_supported_while_loops_create(&self) {
        guest::prefetch(self.hv.arch(), &self.supported);
    }

    pub(super) fn begin_create(&self, spec: VmSpec) -> Result<(String, Created), ControlError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ControlError::ShuttingDown);
        }
        let mut entries = self.entries();
        if live(&entries, &spec.name).is_some() {
            return Err(ControlError::NameTaken(spec.name));
        }
        Ok(self.push_vm(&mut entries, spec))
    }

    /// Reserve room and names for every VM of a `create` request at once, and spawn their loops:
    /// all of them, or none (the first VM that would break a fleet-wide limit is named). The
    /// caller holds the turns of every name in `specs`.
    pub(super) fn reserve(
        &self,
        specs: Vec<VmSpec>,
    ) -> Result<Vec<(String, VmId, Created)>, Refusal<'_>> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(Refusal::Error(ControlError::ShuttingDown));
        }
        let mut entries = self.entries();
        for (index, spec) in specs.iter().enumerate() {
            if live(&entries, &spec.name).is_some()
                || specs[..index].iter().any(|s| s.name == spec.name)
            {
                return Err(Refusal::Error(ControlError::NameTaken(spec.name.clone())));
            }
        }
        // A name is reused only once every `wait` bound to its previous VM has answered: their
        // records must come before this request's (a replay binds `wait NAME` to the newest VM
        // of that name).
        if entries
            .iter()
            .any(|e| e.waits > 0 && specs.iter().any(|s| s.name == e.name))
        {
            return Err(Refusal::WaitsPending(self.waits_done.notified()));
        }
        let live_entries = entries.iter().filter(|e| e.link.is_some());
        let (mut vms, mut vcpus) =
            live_entries.fold((0u64, 0u64), |(n, v), e| (n + 1, v + u64::from(e.vcpus)));
        for spec in &specs {
            let limit = |what, current, total, limit| {
                Refusal::Error(ControlError::Limit {
                    vm: spec.name.clone(),
                    what,
                    current,
                    total,
                    limit,
                })
            };
            if vms + 1 > self.limits.vms {
                return Err(limit("VMs", vms, vms + 1, self.limits.vms));
            }
            let more = vcpus + u64::from(spec.vcpus);
            if more > self.limits.vcpus {
                return Err(limit("vCPUs", vcpus, more, self.limits.vcpus));
            }
            vms += 1;
            vcpus = more;
        }
        Ok(specs
            .into_iter()
            .map(|spec| {
                let (name, created) = self.push_vm(&mut entries, spec);
                let id = entries.last().map_or(VmId(u32::MAX), |e| e.id);
                (name, id, created)
            })
            .collect())
    }

    /// Add a VM to the fleet and spawn its loop (which creates it).
    pub(super) fn push_vm(&self, entries: &mut Entries, spec: VmSpec) -> (String, Created) {
        let id = VmId(self.next_id.fetch_add(1, Ordering::SeqCst));
        let name = spec.name.clone();
        let vcpus = spec.vcpus;
        let (tx, rx) = oneshot::channel();
        let setup = VmSetup {
            id,
            spec,
            hv: Arc::clone(&self.hv),
            supported: Arc::clone(&self.supported),
            shared: Arc::clone(&self.shared),
        };
        let mut entry = Entry {
            id,
            name: name.clone(),
            vcpus,
            link: None,
            status: None,
            started: None,
            report: None,
            waits: 0,
        };
        match vm_loop::spawn(setup, tx) {
            Ok(link) => {
                entry.status = Some(link.status.clone());
                entry.link = Some(Arc::new(Mutex::new(link)));
            }
            Err((_, report)) => entry.report = Some(report),
        }
        entries.push(entry);
        (name, rx)
    }

    /// Await the VMs a `create` request reserved: all of them configured, or, if one failed to
    /// come up, every one of them torn down and forgotten (the first failure in spec order is
    /// the answer).
    pub(super) async fn finish_request(
        &self,
        begun: Vec<(String, VmId, Created)>,
    ) -> Result<Vec<ModelView>, ControlError> {
        let mut models = Vec::with_capacity(begun.len());
        let mut failure = None;
        let mut ids = Vec::with_capacity(begun.len());
        for (name, id, created) in begun {
            ids.push((name.clone(), id));
            let why = match created.await {
                Ok(Ok((model, _))) => {
                    models.push(model);
                    continue;
                }
                Ok(Err((why, _))) => why,
                Err(_) => VmError::LoopEnded,
            };
            failure.get_or_insert(ControlError::CreateFailed { vm: name, why });
        }
        let Some(failure) = failure else {
            return Ok(models);
        };
        // All or nothing: tear down what came up, wait until every loop is dropped, forget the
        // request's VMs.
        let teardowns = ids.iter().map(|(name, id)| async move {
            let link = {
                let entries = self.entries();
                entries
                    .iter()
                    .find(|e| e.id == *id)
                    .and_then(|e| e.link.clone())
            };
            let Some(link) = link else { return };
            let (tx, rx) = oneshot::channel();
            if lock(&link).send(Command::Remove(tx)).is_ok() {
                if let Err(e) = Self::answer(name, Op::Remove.name(), rx).await {
                    tracing::debug!("tearing down {name} after a failed create: {e}");
                }
            }
            loop_dropped(&link).await;
        });
        futures::future::join_all(teardowns).await;
        self.entries()
            .retain(|e| !ids.iter().any(|(_, id)| *id == e.id));
        Err(failure)
    }

    pub(super) async fn finish_create(
        &self,
        name: &str,
        created: Created,
    ) -> Result<ModelView, ControlError> {
        let (why, report) = match created.await {
            Ok(Ok((model, _status))) => return Ok(model),
            Ok(Err((why, report))) => (why, Some(*report)),
            Err(_) => (VmError::LoopEnded, None),
        };
        self.retire(name, report).await;
        Err(ControlError::NotCreated {
            vm: name.to_string(),
            source: why,
        })
    }

    /// A VM that failed to come up: its loop has ended; keep its report.
    pub(super) async fn retire(&self, name: &str, report: Option<VmReport>) {
        if let Ok(link) = self.link(name) {
            loop_dropped(&link).await;
        }
        let mut entries = self.entries();
        if let Some(entry) = entries.newest_mut(name) {
            entry.link = None;
            if report.is_some() {
                entry.report = report;
            }
        }
    }

    /// Create every VM of `specs` and start it in `mode`, without a round trip in between: each
    /// VM's `start` is queued behind its creation, so its loop starts it as soon as it is
    /// configured. A VM that fails to come up answers its start with why. In spec order.
    pub async fn launch_all(
        &self,
        specs: Vec<VmSpec>,
        mode: StartMode,
    ) -> Vec<(String, Result<VmStatus, ControlError>)> {
        let begun: Vec<_> = specs
            .into_iter()
            .map(|spec| {
                let name = spec.name.clone();
                let begun = self.begin_create(spec).map(|(_, created)| {
                    let start = self.send(&name, |answer| Command::Start { mode, answer });
                    (created, start)
                });
                (name, begun)
            })
            .collect::<Vec<_>>();
        self.ask_supported_while_loops_create();
        let mut results = Vec::with_capacity(begun.len());
        for (name, begun) in begun {
            let (created, start) = match begun {
                Ok(begun) => begun,
                Err(e) => {
                    results.push((name, Err(e)));
                    continue;
                }
            };
            let result = match self.finish_create(&name, created).await {
                Err(e) => Err(e),
                Ok(_) => match start {
                    Ok(rx) => Self::answer(&name, mode.request(), rx).await,
                    Err(e) => Err(e),
                },
            };
            if result.is_ok() {
                self.mark_started(&name);
            }
            results.push((name, result));
        }
        results
    }
}
