//! A VM's `cpu` table, the x86 CPUID model: the base (only `host`) and the features to `hide`,
//! by their catalog names (normalised to the catalog's spelling, each at most once). Also the
//! feature-list rule the after-run `hide` action shares.

use super::SpecError;
use super::position::Source;
use super::raw::RawVm;
use toml::Spanned;
use vcpu::GuestArch;
use vcpu::model::x86::catalog as features;

/// The features a VM's `cpu` hides (none without a `cpu` table); a `cpu` table on an aarch64
/// fleet is refused.
pub(super) fn cpu(vm: &RawVm, arch: GuestArch, src: &Source<'_>) -> Result<Vec<String>, SpecError> {
    if let (Some(cpu), GuestArch::Aarch64) = (&vm.cpu, arch) {
        let span = cpu
            .hide
            .first()
            .map(|h| h.span())
            .or_else(|| cpu.base.as_ref().map(|b| b.span()))
            .unwrap_or_else(|| vm.name.span());
        return Err(src.at(
            Some(span),
            "`cpu` is the x86 CPUID model; an aarch64 VM's model is its `arm64` table".into(),
        ));
    }
    let Some(cpu) = &vm.cpu else {
        return Ok(Vec::new());
    };
    if let Some(base) = &cpu.base {
        if base.get_ref() != "host" {
            return Err(src.at(
                Some(base.span()),
                format!(
                    "unknown CPU base `{}`: the only base is \"host\"",
                    base.get_ref()
                ),
            ));
        }
    }
    feature_list(&cpu.hide, "hide", src)
}

/// The catalog names of a list of features (`key` names the list in errors): each known, each
/// once.
pub(super) fn feature_list(
    names: &[Spanned<String>],
    key: &str,
    src: &Source<'_>,
) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let Some(feature) = features::by_name(n.get_ref()) else {
            let hint = features::suggest(n.get_ref())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(src.at(
                Some(n.span()),
                format!(
                    "unknown CPU feature `{}` in `{key}`{hint}; `vmfleet host` lists them",
                    n.get_ref()
                ),
            ));
        };
        if out.iter().any(|o| o == feature.name) {
            return Err(src.at(
                Some(n.span()),
                format!("feature `{}` is listed twice in `{key}`", feature.name),
            ));
        }
        out.push(feature.name.to_string());
    }
    Ok(out)
}
