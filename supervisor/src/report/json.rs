//! The report as `vmfleet run --json` and `vmfleet replay --json` print it: the [`JobReport`]
//! under its schema ([`RUN_SCHEMA`], `supervisor/schemas/run.v1.schema.json`), with each VM's
//! `failed` verdict spelled out. The data model is serialized as it is; this module only adds
//! what JSON states that the text renderings leave to their reader.

use super::{JobReport, VmReport};
use serde::Serialize;

/// The schema of `vmfleet run --json` and `vmfleet replay --json`
/// (`supervisor/schemas/run.v1.schema.json`). Bump the version when a field changes meaning or
/// goes away; adding a field is not a new version.
pub const RUN_SCHEMA: &str = "vmfleet.run.v1";

/// The report as `vmfleet run --json` prints it: the [`JobReport`] with its `schema`, and each
/// VM's `failed` verdict (the exit status's reason) spelled out. Serialize it with `serde_json`.
#[derive(Serialize)]
pub struct JobJson<'a> {
    /// [`RUN_SCHEMA`].
    pub schema: &'static str,
    /// The fleet's name.
    pub fleet: &'a str,
    /// Every VM, in fleet order.
    pub vms: Vec<VmJson<'a>>,
}

/// One VM of [`JobJson`].
#[derive(Serialize)]
pub struct VmJson<'a> {
    /// The VM's report, its fields inline.
    #[serde(flatten)]
    pub vm: &'a VmReport,
    /// Whether the VM failed: its state, a guest that saw something else than the kernel holds,
    /// or a lock judgement against the rule.
    pub failed: bool,
    /// A VM whose model comes from a CPU template: whether the guest sees it, and each bit the
    /// host changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<super::TemplateVerdict>,
}

/// [`JobJson`] of `report`.
pub fn json(report: &JobReport) -> JobJson<'_> {
    JobJson {
        schema: RUN_SCHEMA,
        fleet: &report.fleet,
        vms: report
            .vms
            .iter()
            .map(|vm| VmJson {
                vm,
                failed: vm.failed(),
                template: vm.template_verdict(),
            })
            .collect(),
    }
}
