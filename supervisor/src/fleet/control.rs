//! The fleet's control API: [`Fleet::handle`] carries out one [`Request`], answers with a
//! [`ControlValue`] and records both on the control stream when it completes (see the module
//! documentation of [`super`] for what orders the records). Apart from the lifecycle methods it
//! calls, because this is where requests meet each other: turns per VM name, waits that hold
//! nothing, creates that reserve.

use super::*;
use protocol::Request;
use recorder::TraceCall;
use vcpu::{Reply, Stream};

/// What a control request produced.
#[derive(Clone, Debug)]
pub enum ControlValue {
    /// `list`'s answer, read from the fleet's state (never recorded).
    Listed(Vec<VmInfo>),
    /// `create`'s answer: each new VM's CPU model as the kernel holds it.
    Created(Vec<ModelView>),
    /// A lifecycle request's answer (`start`, `pause`, `resume`, `stop`, `wait`): the VM's
    /// status once it was carried out.
    Status {
        /// The VM's name.
        vm: String,
        /// What was asked (`start`, `pause`, ...).
        request: &'static str,
        /// The VM's status after it.
        status: VmStatus,
    },
    /// `model`'s and `set-model`'s answer: the VM's CPU model as the kernel holds it.
    Model(ModelView),
    /// `remove`'s answer: the VM's final report.
    Removed(Box<VmReport>),
    /// `stop-all`'s answer: each VM stopped, by name, with its status.
    Stopped(Vec<(String, VmStatus)>),
    /// `shutdown`'s answer: the fleet's final report.
    Shutdown(Box<JobReport>),
}

impl ControlValue {
    /// One deterministic line for the trace and the transcript.
    pub fn summary(&self) -> String {
        match self {
            ControlValue::Listed(vms) => format!("{} VM(s)", vms.len()),
            ControlValue::Created(models) => format!(
                "created {}",
                models
                    .iter()
                    .map(|m| m.vm.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            // A start is answered once every vCPU has been in the guest; whether a quick guest has
            // already halted by then is timing, so the line does not say.
            ControlValue::Status { vm, request, .. } if *request == Op::Start.name() => {
                format!("{vm} started")
            }
            ControlValue::Status { vm, status, .. } => format!("{vm} {}", status.lifecycle),
            ControlValue::Model(model) => model.summary(),
            ControlValue::Removed(report) => format!("removed {}", report.name),
            ControlValue::Stopped(vms) => format!(
                "stopped {} VM(s): {}",
                vms.len(),
                vms.iter()
                    .map(|(vm, status)| format!("{vm} {}", status.lifecycle))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            ControlValue::Shutdown(report) => format!("shut down {} VM(s)", report.vms.len()),
        }
    }
}

impl Fleet {
    /// Carry out one control request and record it with its reply when it completes (see the
    /// module's documentation for what orders the records). Requests about different VMs run
    /// concurrently; `wait` blocks nobody while it waits.
    ///
    /// Dropping the future of a `wait` ends it unrecorded. Any other request must be driven to
    /// its end (`vmfleet serve` runs each in a task of its own): dropped half-way, it would leave
    /// the fleet with half a request, unrecorded.
    ///
    /// `list` is answered from the fleet's state at once, under no lock, and not recorded.
    pub async fn handle(&self, request: Request) -> Result<ControlValue, ControlError> {
        match &request {
            Request::List => Ok(ControlValue::Listed(self.list())),
            Request::StopAll | Request::Shutdown | Request::ShutdownForExit => {
                let _all = self.gate.write().await;
                let result = self.carry_out(&request).await;
                self.record(request, &result)
            }
            Request::Wait { vm } => {
                let vm = vm.clone();
                self.wait_request(request, &vm).await
            }
            Request::Create { spec } => {
                let spec = spec.clone();
                self.create_request(request, &spec).await
            }
            Request::Start { vm, .. }
            | Request::Pause { vm }
            | Request::Resume { vm }
            | Request::Stop { vm }
            | Request::Remove { vm }
            | Request::Model { vm }
            | Request::SetModel { vm, .. } => {
                let _shared = self.gate.read().await;
                let _turn = self.turn(vm).lock_owned().await;
                let result = self.carry_out(&request).await;
                self.record(request, &result)
            }
        }
    }

    /// Record a request and its reply on the control stream; the reply.
    fn record(
        &self,
        request: Request,
        result: &Result<ControlValue, ControlError>,
    ) -> Result<ControlValue, ControlError> {
        if let Some(recorder) = &self.control_log {
            recorder.record(
                Stream::Control,
                TraceCall::Control(request),
                Ok(Reply::Control(reply_line(result))),
                None,
            );
        }
        result.clone()
    }

    /// The turn of requests about `name`.
    fn turn(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = lock(&self.turns);
        Arc::clone(turns.entry(name.to_string()).or_default())
    }

    /// `wait`: bound to the newest VM of that name (under its turn), then waiting with no lock
    /// held, then recorded under the gate and the turn, so after the request that ended the VM.
    async fn wait_request(
        &self,
        request: Request,
        name: &str,
    ) -> Result<ControlValue, ControlError> {
        let turn = self.turn(name);
        let bound = {
            let _shared = self.gate.read().await;
            let _turn = turn.lock().await;
            let mut entries = self.entries();
            let bound = match entries.newest_mut(name) {
                None => Err(ControlError::UnknownVm(name.to_string())),
                Some(entry) => match entry.status.clone() {
                    None => Err(ControlError::Removed {
                        vm: name.to_string(),
                    }),
                    Some(watch) => {
                        entry.waits += 1;
                        Ok(WaitBinding {
                            fleet: self,
                            id: entry.id,
                            watch,
                        })
                    }
                },
            };
            match bound {
                Ok(bound) => bound,
                Err(e) => {
                    drop(entries);
                    return self.record(request, &Err(e));
                }
            }
        };
        let result =
            Self::exited(name, bound.watch.clone())
                .await
                .map(|status| ControlValue::Status {
                    vm: name.to_string(),
                    request: Op::Wait.name(),
                    status,
                });
        let _shared = self.gate.read().await;
        let _turn = turn.lock().await;
        let result = self.record(request, &result);
        drop(bound);
        result
    }

    /// `create`: reserve every VM's name and room at once (under their turns), create them all
    /// or none, record under the same turns.
    async fn create_request(
        &self,
        request: Request,
        spec: &str,
    ) -> Result<ControlValue, ControlError> {
        let parsed = spec::parse(spec, "the create request")
            .map_err(|e| ControlError::Spec(e.to_string()))
            .and_then(|parsed| {
                check_arch(parsed.arch, self.hv.arch())
                    .map_err(|e| ControlError::Spec(e.to_string()))?;
                Ok(parsed)
            });
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                let _shared = self.gate.read().await;
                return self.record(request, &Err(e));
            }
        };
        let names: BTreeSet<&str> = parsed.vms.iter().map(|v| v.name.as_str()).collect();
        loop {
            let _shared = self.gate.read().await;
            // In name order: two creates never wait for each other's turns in a cycle.
            let mut turns = Vec::with_capacity(names.len());
            for name in &names {
                turns.push(self.turn(name).lock_owned().await);
            }
            let result = match self.reserve(parsed.vms.clone()) {
                Err(Refusal::WaitsPending(done)) => {
                    // Let those waits take the turns and record, then try again.
                    drop(turns);
                    drop(_shared);
                    done.await;
                    continue;
                }
                Err(Refusal::Error(e)) => Err(e),
                Ok(begun) => {
                    self.ask_supported_while_loops_create();
                    self.finish_request(begun).await.map(ControlValue::Created)
                }
            };
            return self.record(request, &result);
        }
    }

    async fn carry_out(&self, request: &Request) -> Result<ControlValue, ControlError> {
        let status = |vm: &str, what: &'static str, status: VmStatus| ControlValue::Status {
            vm: vm.to_string(),
            request: what,
            status,
        };
        let op = request.op();
        Ok(match request {
            Request::List => ControlValue::Listed(self.list()),
            // `handle` carries it out itself (it reserves under the names' turns).
            Request::Create { .. } => {
                return Err(ControlError::CreateOutsideHandle);
            }
            Request::Start { vm, paused: false } => status(vm, op, self.start(vm).await?),
            Request::Start { vm, paused: true } => status(
                vm,
                StartMode::Paused.request(),
                self.start_as(vm, StartMode::Paused).await?,
            ),
            Request::Pause { vm } => status(vm, op, self.pause(vm).await?),
            Request::Resume { vm } => status(vm, op, self.resume(vm).await?),
            Request::Stop { vm } => status(vm, op, self.stop(vm).await?),
            Request::Wait { vm } => status(vm, op, self.wait_exited(vm).await?),
            Request::Remove { vm } => ControlValue::Removed(Box::new(self.remove(vm).await?)),
            Request::Model { vm } => ControlValue::Model(self.model(vm).await?),
            Request::SetModel { vm, hide, set } => {
                ControlValue::Model(self.set_model_writes(vm, hide.clone(), set).await?)
            }
            Request::StopAll => ControlValue::Stopped(self.stop_all().await),
            Request::Shutdown => ControlValue::Shutdown(Box::new(self.shutdown().await)),
            Request::ShutdownForExit => {
                ControlValue::Shutdown(Box::new(self.shutdown_as(ShutdownMode::ProcessExit).await))
            }
        })
    }
}
