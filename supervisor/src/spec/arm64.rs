//! A VM's `arm64` table: the arm64 CPU model ([`Arm64ModelSpec`], read by serde: `features`,
//! `psci_version`, `id_registers`, `hypercalls`, `registers`, `unknown_registers`), checked by the model's
//! own rules ([`Arm64ModelSpec::check`]) with the error pointed at the key it is about, and
//! given the fleet's `unknown_registers` policy when it chooses none of its own. The rules of
//! the model live in `vcpu::model::arm64`; this module only places them in the spec.

use super::SpecError;
use super::keys::vm_value_span;
use super::position::Source;
use super::raw::RawVm;
use super::top::TopLevel;
use toml::de::DeTable;
use vcpu::GuestArch;
use vcpu::model::arm64::{Arm64ModelSpec, UnknownRegisterPolicy};

/// The arm64 model of the `index`th `[[vm]]` entry: its `arm64` table, or the host's model
/// (the default spec) on an aarch64 fleet; `None` on x86, where an `arm64` table is refused.
pub(super) fn model(
    vm: &RawVm,
    index: usize,
    fleet: &TopLevel,
    doc: &DeTable<'_>,
    src: &Source<'_>,
) -> Result<Option<Arm64ModelSpec>, SpecError> {
    let name = vm.name.get_ref();
    let model = match (&vm.arm64, fleet.arch) {
        (None, _) => None,
        (Some(model), GuestArch::Aarch64) => {
            model.get_ref().check().map_err(|e| {
                // Point at the key the contradiction is about, not the whole table.
                let key = match e {
                    vcpu::model::arm64::SpecError::PsciVersionNeedsPsci02 { .. }
                    | vcpu::model::arm64::SpecError::Psci01WithPsci02 => "psci_version",
                    vcpu::model::arm64::SpecError::RawWriteConflict { .. } => "registers",
                    _ => "features",
                };
                let span = vm_value_span(doc, index, &["arm64", key]);
                src.at(
                    span.or(Some(model.span())),
                    format!("arm64 model of `{name}`: {e}"),
                )
            })?;
            Some(model.get_ref().clone())
        }
        (Some(model), GuestArch::X86_64) => {
            return Err(src.at(
                Some(model.span()),
                "an `arm64` table needs `arch = \"aarch64\"` at the top of the spec".into(),
            ));
        }
    };
    Ok(model
        .or_else(|| (fleet.arch == GuestArch::Aarch64).then(Arm64ModelSpec::default))
        .map(|model| with_fleet_policy(model, fleet.unknown_registers)))
}

/// The fleet's `unknown_registers` policy for a model that leaves it at the default.
pub(super) fn with_fleet_policy(
    mut model: Arm64ModelSpec,
    fleet: Option<UnknownRegisterPolicy>,
) -> Arm64ModelSpec {
    if let Some(policy) = fleet {
        if model.unknown_registers == UnknownRegisterPolicy::default() {
            model.unknown_registers = policy;
        }
    }
    model
}
