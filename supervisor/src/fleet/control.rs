//! The fleet's control API: [`Fleet::handle`] carries out one [`ControlCall`] and records it
//! on the control stream when it completes (see the module documentation of [`super`] for what
//! orders the records). Apart from the lifecycle methods it calls, because this is where
//! requests meet each other: turns per VM name, waits that hold nothing, creates that reserve.

use super::*;

impl Fleet {
    /// Carry out one control request and record it with its reply when it completes (see the
    /// module's documentation for what orders the records). Requests about different VMs run
    /// concurrently; `wait` blocks nobody while it waits.
    ///
    /// Dropping the future of a `wait` ends it unrecorded. Any other request must be driven to
    /// its end (`vmfleet serve` runs each in a task of its own): dropped half-way, it would leave
    /// the fleet with half a request, unrecorded.
    pub async fn handle(&self, call: ControlCall) -> Result<ControlValue, ControlError> {
        match &call {
            ControlCall::StopAll | ControlCall::Shutdown | ControlCall::ShutdownForExit => {
                let _all = self.gate.write().await;
                let result = self.carry_out(&call).await;
                self.record(call, &result)
            }
            ControlCall::Wait { vm } => {
                let vm = vm.clone();
                self.wait_request(call, &vm).await
            }
            ControlCall::Create { spec } => {
                let spec = spec.clone();
                self.create_request(call, &spec).await
            }
            ControlCall::Start { vm }
            | ControlCall::StartPaused { vm }
            | ControlCall::Pause { vm }
            | ControlCall::Resume { vm }
            | ControlCall::Stop { vm }
            | ControlCall::Remove { vm }
            | ControlCall::Model { vm }
            | ControlCall::SetModel { vm, .. } => {
                let _shared = self.gate.read().await;
                let _turn = self.turn(vm).lock_owned().await;
                let result = self.carry_out(&call).await;
                self.record(call, &result)
            }
        }
    }

    /// Record a request and its reply on the control stream; the reply.
    fn record(
        &self,
        call: ControlCall,
        result: &Result<ControlValue, ControlError>,
    ) -> Result<ControlValue, ControlError> {
        if let Some(recorder) = &self.control_log {
            recorder.record(
                Stream::Control,
                Call::Control(call),
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
        call: ControlCall,
        name: &str,
    ) -> Result<ControlValue, ControlError> {
        let turn = self.turn(name);
        let bound = {
            let _shared = self.gate.read().await;
            let _turn = turn.lock().await;
            let mut entries = self.entries();
            let bound = match entries.iter_mut().rev().find(|e| e.name == name) {
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
                    return self.record(call, &Err(e));
                }
            }
        };
        let result =
            Self::exited(name, bound.watch.clone())
                .await
                .map(|status| ControlValue::Status {
                    vm: name.to_string(),
                    request: "wait",
                    status,
                });
        let _shared = self.gate.read().await;
        let _turn = turn.lock().await;
        let result = self.record(call, &result);
        drop(bound);
        result
    }

    /// `create`: reserve every VM's name and room at once (under their turns), create them all
    /// or none, record under the same turns.
    async fn create_request(
        &self,
        call: ControlCall,
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
                return self.record(call, &Err(e));
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
            return self.record(call, &result);
        }
    }

    async fn carry_out(&self, call: &ControlCall) -> Result<ControlValue, ControlError> {
        let status = |vm: &str, request: &'static str, status: VmStatus| ControlValue::Status {
            vm: vm.to_string(),
            request,
            status,
        };
        Ok(match call {
            // `handle` carries it out itself (it reserves under the names' turns).
            ControlCall::Create { .. } => {
                return Err(ControlError::CreateOutsideHandle);
            }
            ControlCall::Start { vm } => status(vm, "start", self.start(vm).await?),
            ControlCall::StartPaused { vm } => status(
                vm,
                "start --paused",
                self.start_as(vm, StartMode::Paused).await?,
            ),
            ControlCall::Pause { vm } => status(vm, "pause", self.pause(vm).await?),
            ControlCall::Resume { vm } => status(vm, "resume", self.resume(vm).await?),
            ControlCall::Stop { vm } => status(vm, "stop", self.stop(vm).await?),
            ControlCall::Wait { vm } => status(vm, "wait", self.wait_exited(vm).await?),
            ControlCall::Remove { vm } => ControlValue::Removed(Box::new(self.remove(vm).await?)),
            ControlCall::Model { vm } => ControlValue::Model(self.model(vm).await?),
            ControlCall::SetModel { vm, hide } => {
                ControlValue::Model(self.set_model(vm, hide.clone()).await?)
            }
            ControlCall::StopAll => ControlValue::Stopped(self.stop_all().await),
            ControlCall::Shutdown => ControlValue::Shutdown(Box::new(self.shutdown().await)),
            ControlCall::ShutdownForExit => {
                ControlValue::Shutdown(Box::new(self.shutdown_as(ShutdownMode::ProcessExit).await))
            }
        })
    }
}
