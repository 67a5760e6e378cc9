//! A VM's `[[vm.after_run]]` actions: the CPU-model writes tried once the VM has run, to
//! exercise the pre-run lock. `rewrite-identical` (either arch), `hide` (x86: more features
//! hidden) and `set` (arm64: one ID-register field), each with the keys it needs and no key it
//! does not take, aimed at one vCPU that exists or at all of them.

use super::keys::did_you_mean;
use super::position::Source;
use super::raw::{RawAfterRun, RawVm};
use super::x86::feature_list;
use super::{AfterRun, SpecError};
use vcpu::GuestArch;

/// Every after-run action of a VM of `vcpus` vCPUs, in file order.
pub(super) fn actions(
    vm: &RawVm,
    vcpus: u32,
    arch: GuestArch,
    src: &Source<'_>,
) -> Result<Vec<AfterRun>, SpecError> {
    vm.after_run
        .iter()
        .map(|action| self::action(action.get_ref(), vm.name.get_ref(), vcpus, arch, src))
        .collect()
}

/// One action of the VM `name`.
fn action(
    a: &RawAfterRun,
    name: &str,
    vcpus: u32,
    arch: GuestArch,
    src: &Source<'_>,
) -> Result<AfterRun, SpecError> {
    let vcpu = target(a, name, vcpus, src)?;
    let only_for = |what: &str, wanted: GuestArch| {
        (arch != wanted).then(|| {
            src.at(
                Some(a.action.span()),
                format!("action \"{what}\" is for {wanted} fleets; this one is {arch}"),
            )
        })
    };
    if a.action.get_ref() != "set" {
        if let Some(f) = a.field.as_ref() {
            return Err(src.at(
                Some(f.span()),
                "`field` only applies to action \"set\"".into(),
            ));
        }
    }
    match a.action.get_ref().as_str() {
        "set" => {
            if let Some(e) = only_for("set", GuestArch::Aarch64) {
                return Err(e);
            }
            set_field(a, vcpu, src)
        }
        "rewrite-identical" => {
            if let Some(f) = a.features.first() {
                return Err(src.at(
                    Some(f.span()),
                    "`features` does not apply to action \"rewrite-identical\"".into(),
                ));
            }
            Ok(AfterRun::RewriteIdentical { vcpu })
        }
        "hide" => {
            if let Some(e) = only_for("hide", GuestArch::X86_64) {
                return Err(e);
            }
            if a.features.is_empty() {
                return Err(src.at(
                    Some(a.action.span()),
                    "action \"hide\" needs a non-empty `features` list".into(),
                ));
            }
            Ok(AfterRun::Hide {
                features: feature_list(&a.features, "features", src)?,
                vcpu,
            })
        }
        other => Err(src.at(
            Some(a.action.span()),
            format!(
                "unknown action `{other}`{}: expected \"rewrite-identical\", \
                 \"hide\" (x86) or \"set\" (arm64)",
                did_you_mean(other, &["rewrite-identical", "hide", "set"])
            ),
        )),
    }
}

/// The vCPU an action aims at (`None` = all), which must exist.
fn target(
    a: &RawAfterRun,
    name: &str,
    vcpus: u32,
    src: &Source<'_>,
) -> Result<Option<u32>, SpecError> {
    let Some(v) = &a.vcpu else {
        return Ok(None);
    };
    let index = *v.get_ref();
    if index < 0 || index >= i64::from(vcpus) {
        return Err(src.at(
            Some(v.span()),
            format!(
                "vcpu {index} does not exist: `{name}` has vCPUs 0..={}",
                vcpus - 1
            ),
        ));
    }
    Ok(Some(index as u32))
}

/// `action = "set"` (arm64): a known ID-register `field` and a `value` that fits in it.
fn set_field(a: &RawAfterRun, vcpu: Option<u32>, src: &Source<'_>) -> Result<AfterRun, SpecError> {
    let field = a.field.as_ref().ok_or_else(|| {
        src.at(
            Some(a.action.span()),
            "action \"set\" needs `field` (e.g. \"ID_AA64PFR0_EL1.CSV3\") and `value`".into(),
        )
    })?;
    let field_ref = vcpu::model::arm64::fields::resolve(field.get_ref())
        .map_err(|e| src.at(Some(field.span()), e.to_string()))?;
    let value = a
        .value
        .as_ref()
        .ok_or_else(|| src.at(Some(a.action.span()), "action \"set\" needs `value`".into()))?;
    let max = field_ref.field().max_raw();
    if *value.get_ref() < 0 || *value.get_ref() as u64 > max {
        return Err(src.at(
            Some(value.span()),
            format!(
                "`value` is {}; {} is {} bits wide, so its values are 0..={max:#x}",
                value.get_ref(),
                field_ref.full_name(),
                field_ref.field().width
            ),
        ));
    }
    Ok(AfterRun::SetField {
        field: field_ref,
        value: *value.get_ref() as u64,
        vcpu,
    })
}
