//! The typed shape of a spec's TOML, as serde reads it: every value [`Spanned`], so that each rule
//! checked after the typed parse can point at the key or value it is about. Unknown keys never
//! reach serde's `deny_unknown_fields` in practice: `keys::check_keys` refuses them first, with a
//! suggestion.

use serde::Deserialize;
use toml::Spanned;
use vcpu::model::arm64::{Arm64ModelSpec, UnknownRegisterPolicy};

/// The top level.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    pub(super) name: Option<Spanned<String>>,
    pub(super) arch: Option<Spanned<String>>,
    pub(super) cross_check: Option<Spanned<bool>>,
    pub(super) unknown_registers: Option<Spanned<UnknownRegisterPolicy>>,
    #[serde(default)]
    pub(super) vm: Vec<Spanned<RawVm>>,
    /// The text of each template the VMs name, by the name they use (`spec::template`).
    #[serde(default)]
    pub(super) templates: std::collections::BTreeMap<String, String>,
}

/// One `[[vm]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVm {
    pub(super) name: Spanned<String>,
    pub(super) count: Option<Spanned<i64>>,
    pub(super) vcpus: Option<Spanned<i64>>,
    pub(super) memory_mib: Option<Spanned<i64>>,
    pub(super) probe_repeats: Option<Spanned<i64>>,
    pub(super) fault_after_passes: Option<Spanned<i64>>,
    /// An integer >= 1 or `"all"` (checked in `vm::record_exits`).
    pub(super) record_exits: Option<Spanned<toml::Value>>,
    pub(super) cpu: Option<RawCpu>,
    pub(super) arm64: Option<Spanned<Arm64ModelSpec>>,
    pub(super) template: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) after_run: Vec<Spanned<RawAfterRun>>,
}

/// A VM's `cpu` (x86).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCpu {
    pub(super) base: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) hide: Vec<Spanned<String>>,
}

/// One `[[vm.after_run]]` action.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAfterRun {
    pub(super) action: Spanned<String>,
    #[serde(default)]
    pub(super) features: Vec<Spanned<String>>,
    pub(super) field: Option<Spanned<String>>,
    pub(super) value: Option<Spanned<i64>>,
    pub(super) vcpu: Option<Spanned<i64>>,
}
