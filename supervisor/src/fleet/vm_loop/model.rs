//! A VM loop's CPU model: writing the model a request asks for through the lock (every vCPU,
//! read back), the drift between asked and held, and the view of it that `model` answers. Apart
//! from the loop's event handling in its parent, which only decides when these run.

use super::*;

impl VmLoop {
    /// Write the model that hides `hide` to every vCPU, through the lock, and refresh the report.
    /// `identical_if_unchanged`: when `hide` is the current model, rewrite what the kernel holds
    /// (an identical write, which the lock allows after the first run) rather than rebuilding it
    /// from the supported table (which the host may have rewritten).
    pub(super) fn apply_model(
        &mut self,
        hide: &[String],
        identical_if_unchanged: bool,
    ) -> Result<(), ModelError> {
        let unchanged = identical_if_unchanged && hide == self.spec.cpu.hide.as_slice();
        let supported = self.supported.supported_cpuid()?;
        let model = X86CpuModel {
            hide: hide.to_vec(),
        };
        let mut reports = Vec::with_capacity(self.vcpus.len());
        let mut pending = Vec::with_capacity(self.vcpus.len());
        for (index, vcpu) in self.vcpus.iter().enumerate() {
            let requested = model
                .build(&supported, index as u32, self.spec.vcpus)
                .map_err(|e| format!("{}/{}: CPU model: {e}", self.vm.id(), vcpu.id()))?;
            let table = match (unchanged, self.report.vcpus.get(index)) {
                (true, Some(current)) => current.held.clone(),
                _ => requested.table.clone(),
            };
            let write = vcpu.set_cpuid(&table).map_err(|e| match &e.source {
                vcpu::CallError::Refused(refusal) => ModelError::Refused {
                    vm: self.spec.name.clone(),
                    shown: refusal.to_string(),
                    recorded: refusal.recorded(),
                },
                _ => ModelError::Other(refusal_text(&e)),
            })?;
            let hidden = requested.hidden.clone();
            let previous = self.report.vcpus.get(index);
            pending.push((index, requested.table.clone()));
            reports.push(VcpuReport {
                id: index as u32,
                drift: Vec::new(),
                drift_changes: Vec::new(),
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
                guest: previous.and_then(|p| p.guest.clone()),
                arm64_guest: None,
                exits: previous.map_or(0, |p| p.exits),
                run_end: previous.map_or(RunEnd::NotStarted, |p| p.run_end),
                end: previous.map_or_else(|| "not started".into(), |p| p.end.clone()),
            });
        }
        self.report.vcpus = reports;
        self.pending_drift = pending;
        self.report.requested_hidden = hide.to_vec();
        self.spec.cpu.hide = hide.to_vec();
        Ok(())
    }

    /// Write the model that hides `hide` (the VM's vCPU threads are parked, ended or not
    /// started) and describe the result.
    pub(super) fn write_model(&mut self, hide: &[String]) -> Result<ModelView, ModelError> {
        match self.apply_model(hide, true) {
            Ok(()) => Ok(self.model_view()),
            Err(ModelError::Other(e)) => Err(ModelError::Other(format!("{}: {e}", self.name()))),
            Err(refused) => Err(refused),
        }
    }

    /// Work out the drift lines still pending (see `pending_drift`).
    pub(super) fn finish_drift(&mut self) {
        for (index, requested) in std::mem::take(&mut self.pending_drift) {
            if let Some(vcpu) = self.report.vcpus.get_mut(index) {
                let report = drift::drift(&requested, &vcpu.held);
                vcpu.set_drift(&report);
            }
        }
    }

    pub(super) fn model_view(&mut self) -> ModelView {
        self.finish_drift();
        ModelView {
            vm: self.name().to_string(),
            sealed: match self.vm.lock().state() {
                Seal::Open => None,
                Seal::Sealed { first_run } => Some(first_run.0),
            },
            hide: self.spec.cpu.hide.clone(),
            vcpus: self
                .report
                .vcpus
                .iter()
                .map(|v| VcpuModelView {
                    vcpu: v.id,
                    entries: match &self.arm64 {
                        Some(arm64) => arm64.held.get(v.id as usize).map_or(0, |h| h.len()),
                        None => v.held.len(),
                    },
                    digest: match &self.arm64 {
                        Some(arm64) => format!(
                            "{:08x}",
                            arm64
                                .held
                                .get(v.id as usize)
                                .map_or(0, crate::fleet::arm64::digest)
                        ),
                        None => format!("{:08x}", v.held.digest()),
                    },
                    drift: match &self.report.arm64 {
                        Some(arm64) => arm64.drift.iter().map(ToString::to_string).collect(),
                        None => v.drift.clone(),
                    },
                    drift_changes: match &self.report.arm64 {
                        Some(arm64) => arm64.drift.iter().cloned().map(ModelDrift::Arm64).collect(),
                        None => v
                            .drift_changes
                            .iter()
                            .cloned()
                            .map(ModelDrift::X86)
                            .collect(),
                    },
                    not_honoured: v.not_honoured.clone(),
                    already_absent: v.already_absent.clone(),
                })
                .collect(),
        }
    }
}
