//! A VM loop's CPU model, as the loop asks for it: writing the model a request asks for (the
//! guest's own operation, see `fleet/guest`), and the view of it that `model` answers. Apart
//! from the loop's event handling in its parent, which only decides when these run.

use super::*;

impl VmLoop {
    /// The guest, and the parts of the VM it works on (borrowed apart, so that both can be used
    /// at once).
    pub(super) fn guest_and_parts(&mut self) -> (&mut Guest, VmParts<'_>) {
        (
            &mut self.guest,
            VmParts {
                hv: &self.hv,
                supported: &self.supported,
                spec: &mut self.spec,
                vm: &self.vm,
                vcpus: &self.vcpus,
                report: &mut self.report,
                shared: &self.shared,
            },
        )
    }

    /// Write the model `change` asks for (the VM's vCPU threads are parked, ended or not
    /// started) and describe the result.
    pub(super) fn write_model(&mut self, change: &ModelRequest) -> Result<ModelView, ModelError> {
        let (guest, vm) = self.guest_and_parts();
        guest.write_model(vm, change)?;
        Ok(self.model_view())
    }

    /// Work out what configuring left for later (see [`Guest::finish_drift`]).
    pub(super) fn finish_drift(&mut self) {
        self.guest.finish_drift(&self.shared, &mut self.report);
    }

    pub(super) fn model_view(&mut self) -> ModelView {
        self.finish_drift();
        ModelView {
            vm: self.name().to_string(),
            arch: self.guest.arch().to_string(),
            sealed: match self.vm.lock().state() {
                Seal::Open => None,
                Seal::Sealed { first_run } => Some(first_run.0),
            },
            hide: self.spec.cpu.hide.clone(),
            vcpus: self
                .report
                .vcpus
                .iter()
                .map(|v| self.guest.vcpu_view(v, &self.report))
                .collect::<Vec<VcpuModelView>>(),
        }
    }
}
