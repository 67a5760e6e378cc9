//! `vmfleet run --model FP SPEC`: the fleet over the model backend ([`super::backend`]), with no
//! `/dev/kvm`: every VM is created and its CPU model set up as on the fingerprinted host, each
//! call answered by the model; guests cannot run, so each VM ends at its first `KVM_RUN`.
//!
//! Prints the transcript (the report, then every call of each stream with what it got) or, with
//! `--json`, the run report (`vmfleet.run.v1`). Exit status: 0 when every VM got to its first
//! run (failing only there, as it must), 1 (vm_failed) when one failed before (a CPU-model call
//! refused, or one the fingerprint cannot predict), 4 (bad_input) for a bad spec or fingerprint.

use super::backend::{CANNOT_RUN, ModelHypervisor};
use super::load_host;
use crate::cli::RunArgs;
use crate::common::{COMMAND_RUN, RunInputs, emit, emit_json, run_inputs, runtime};
use crate::exit::Status;
use crate::fleet::Fleet;
use crate::job::{Quiet, run_on};
use crate::report::{self, VmState};
use anyhow::{Context, Result};
use recorder::{JobInputs, Recorder, RecordingHypervisor, TraceHeader};
use std::path::Path;
use std::sync::Arc;
use vcpu::Hypervisor;
use vcpu::model::engine::Engine;

/// `vmfleet run --model FP [SPEC]`.
pub fn run(fingerprint: &Path, args: &RunArgs) -> Result<Status> {
    let host = load_host(fingerprint)?;
    let RunInputs {
        source,
        text,
        spec,
        transcript: transcript_file,
    } = run_inputs(args)?;
    let arch = host.facts.arch;
    crate::fleet::check_arch(spec.arch, arch)?;
    let header = TraceHeader::new(
        env!("CARGO_PKG_VERSION"),
        arch,
        host.host.clone(),
        JobInputs {
            command: COMMAND_RUN.into(),
            spec_source: source,
            spec_text: text,
        },
    );
    let recorder = Recorder::folding();
    let model = ModelHypervisor::new(Engine::new(host.facts));
    let hv: Arc<dyn Hypervisor> =
        Arc::new(RecordingHypervisor::new(Box::new(model), recorder.clone()));
    let mut report = runtime()?.block_on(async {
        let fleet = Fleet::new(hv, &spec.name).await?;
        anyhow::Ok(run_on(&fleet, &spec, &mut Quiet, futures::stream::empty()).await)
    })?;
    // A VM whose only failure is the model's refusal to run a guest got as far as it can: its
    // CPU model is set up and it reached its first KVM_RUN.
    for vm in &mut report.vms {
        if matches!(&vm.state, VmState::Failed(why) if why.contains(CANNOT_RUN)) {
            vm.state = VmState::AtFirstRun;
        }
    }
    let calls = recorder.transcript().unwrap_or_default();
    let transcript = report::transcript_folded(&report, &header.host, &calls);
    if let Some(output) = &transcript_file {
        output
            .write_all(transcript.as_bytes())
            .with_context(|| format!("writing transcript {}", output.target().display()))?;
    }
    if args.json {
        emit_json(&report::json(&report))?;
    } else {
        emit(&transcript)?;
    }
    Ok(if report.any_failed() {
        Status::VmFailed
    } else {
        Status::Success
    })
}
