//! The fleet spec: which VMs to run, with which CPU model, and what to try on them after they ran.
//!
//! A spec is TOML. Every error, syntactic or semantic, names the file, line and column of the
//! offending value, because a fleet spec is hand-written and a bare "invalid value" wastes the
//! operator's time. Parsing is pure: the same text always gives the same spec, which is what lets
//! a trace carry its spec as text and replay re-parse it.
//!
//! ```toml
//! name = "web-tier"
//!
//! [[vm]]
//! name = "api"
//! vcpus = 2
//! memory_mib = 16
//! probe_repeats = 1
//! cpu = { base = "host", hide = ["avx512f", "pdpe1gb"] }
//!
//! [[vm.after_run]]          # checks of the pre-run lock, once the VM has run
//! action = "rewrite-identical"
//!
//! [[vm.after_run]]
//! action = "hide"
//! features = ["sse4_2"]
//! vcpu = 1
//! ```

use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use toml::Spanned;
use vcpu::cpuid::features;

/// Limits that keep one spec from asking for absurd resources by typo.
pub const MAX_VCPUS_PER_VM: u32 = 64;
pub const MAX_MEMORY_MIB: u32 = 16 * 1024;
pub const MAX_PROBE_REPEATS: u32 = 100_000;
pub const MAX_VMS: usize = 4096;

/// A parsed, validated fleet spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetSpec {
    pub name: String,
    pub vms: Vec<VmSpec>,
}

/// One VM of the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmSpec {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// How many times the guest runs its CPUID probe before halting.
    pub probe_repeats: u32,
    pub cpu: CpuSpec,
    pub after_run: Vec<AfterRun>,
}

/// The CPU model requested for every vCPU of a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuSpec {
    /// Catalog names of the features to hide from the guest (normalised to the catalog spelling).
    pub hide: Vec<String>,
}

/// A CPU-model write attempted once the VM has run, to exercise the pre-run lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterRun {
    /// Write back exactly what the kernel holds: must be allowed.
    RewriteIdentical { vcpu: Option<u32> },
    /// Hide more features: a change, so it must be refused.
    Hide {
        features: Vec<String>,
        vcpu: Option<u32>,
    },
}

impl AfterRun {
    /// The vCPUs the action targets (`None` = all).
    pub fn vcpu(&self) -> Option<u32> {
        match self {
            AfterRun::RewriteIdentical { vcpu } | AfterRun::Hide { vcpu, .. } => *vcpu,
        }
    }
}

/// A spec error at a position in a file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub source_name: String,
    /// 1-based; 0 when the error has no position (an empty fleet, say).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.source_name, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.source_name, self.line, self.column, self.message
            )
        }
    }
}

// ---- raw TOML shape -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    name: Option<Spanned<String>>,
    #[serde(default)]
    vm: Vec<Spanned<RawVm>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: Spanned<String>,
    vcpus: Option<Spanned<i64>>,
    memory_mib: Option<Spanned<i64>>,
    probe_repeats: Option<Spanned<i64>>,
    cpu: Option<RawCpu>,
    #[serde(default)]
    after_run: Vec<Spanned<RawAfterRun>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCpu {
    base: Option<Spanned<String>>,
    #[serde(default)]
    hide: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAfterRun {
    action: Spanned<String>,
    #[serde(default)]
    features: Vec<Spanned<String>>,
    vcpu: Option<Spanned<i64>>,
}

// ---- parsing ----------------------------------------------------------------------------------

/// Parse and validate a fleet spec. `source_name` is what errors call the text (a path).
pub fn parse(text: &str, source_name: &str) -> Result<FleetSpec, SpecError> {
    let at =
        |span: Option<Range<usize>>, message: String| error_at(text, source_name, span, message);
    let raw: RawFleet =
        toml::from_str(text).map_err(|e| at(e.span(), e.message().trim().to_string()))?;

    let name = match &raw.name {
        Some(n) => {
            check_name(n.get_ref()).map_err(|m| at(Some(n.span()), format!("fleet name: {m}")))?;
            n.get_ref().clone()
        }
        None => "fleet".to_string(),
    };
    if raw.vm.is_empty() {
        return Err(at(
            None,
            "the fleet has no VMs: add at least one [[vm]] table".into(),
        ));
    }
    if raw.vm.len() > MAX_VMS {
        return Err(at(
            raw.vm[MAX_VMS].span().into(),
            format!("more than {MAX_VMS} VMs"),
        ));
    }

    let mut vms: Vec<VmSpec> = Vec::with_capacity(raw.vm.len());
    for raw_vm in &raw.vm {
        let vm = raw_vm.get_ref();
        let name = vm.name.get_ref();
        check_name(name).map_err(|m| at(Some(vm.name.span()), format!("VM name: {m}")))?;
        if vms.iter().any(|v| &v.name == name) {
            return Err(at(
                Some(vm.name.span()),
                format!("duplicate VM name `{name}`"),
            ));
        }
        let vcpus = bounded(&vm.vcpus, 1, 1, u64::from(MAX_VCPUS_PER_VM), "vcpus", &at)?;
        let memory_mib = bounded(
            &vm.memory_mib,
            1,
            1,
            u64::from(MAX_MEMORY_MIB),
            "memory_mib",
            &at,
        )?;
        let probe_repeats = bounded(
            &vm.probe_repeats,
            1,
            1,
            u64::from(MAX_PROBE_REPEATS),
            "probe_repeats",
            &at,
        )?;

        let hide = match &vm.cpu {
            None => Vec::new(),
            Some(cpu) => {
                if let Some(base) = &cpu.base {
                    if base.get_ref() != "host" {
                        return Err(at(
                            Some(base.span()),
                            format!(
                                "unknown CPU base `{}`: the only base is \"host\"",
                                base.get_ref()
                            ),
                        ));
                    }
                }
                feature_list(&cpu.hide, "hide", &at)?
            }
        };

        let mut after_run = Vec::new();
        for action in &vm.after_run {
            let a = action.get_ref();
            let vcpu = match &a.vcpu {
                None => None,
                Some(v) => {
                    let index = *v.get_ref();
                    if index < 0 || index >= i64::from(vcpus) {
                        return Err(at(
                            Some(v.span()),
                            format!(
                                "vcpu {index} does not exist: `{name}` has vCPUs 0..={}",
                                vcpus - 1
                            ),
                        ));
                    }
                    Some(index as u32)
                }
            };
            after_run.push(match a.action.get_ref().as_str() {
                "rewrite-identical" => {
                    if let Some(f) = a.features.first() {
                        return Err(at(
                            Some(f.span()),
                            "`features` does not apply to action \"rewrite-identical\"".into(),
                        ));
                    }
                    AfterRun::RewriteIdentical { vcpu }
                }
                "hide" => {
                    if a.features.is_empty() {
                        return Err(at(
                            Some(a.action.span()),
                            "action \"hide\" needs a non-empty `features` list".into(),
                        ));
                    }
                    AfterRun::Hide {
                        features: feature_list(&a.features, "features", &at)?,
                        vcpu,
                    }
                }
                other => {
                    return Err(at(
                        Some(a.action.span()),
                        format!(
                            "unknown action `{other}`: expected \"rewrite-identical\" or \"hide\""
                        ),
                    ));
                }
            });
        }

        vms.push(VmSpec {
            name: name.clone(),
            vcpus,
            memory_mib,
            probe_repeats,
            cpu: CpuSpec { hide },
            after_run,
        });
    }
    Ok(FleetSpec { name, vms })
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 64 {
        return Err(format!("`{name}` is longer than 64 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "`{name}` contains {c:?}; use letters, digits, `-` and `_`"
        ));
    }
    Ok(())
}

fn bounded(
    value: &Option<Spanned<i64>>,
    default: u32,
    min: u64,
    max: u64,
    key: &str,
    at: &dyn Fn(Option<Range<usize>>, String) -> SpecError,
) -> Result<u32, SpecError> {
    let Some(v) = value else { return Ok(default) };
    let n = *v.get_ref();
    if n < min as i64 || n > max as i64 {
        return Err(at(
            Some(v.span()),
            format!("`{key}` is {n}; it must be between {min} and {max}"),
        ));
    }
    Ok(n as u32)
}

fn feature_list(
    names: &[Spanned<String>],
    key: &str,
    at: &dyn Fn(Option<Range<usize>>, String) -> SpecError,
) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let Some(feature) = features::by_name(n.get_ref()) else {
            let hint = features::suggest(n.get_ref())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(at(
                Some(n.span()),
                format!(
                    "unknown CPU feature `{}` in `{key}`{hint}; `vmfleet host` lists them",
                    n.get_ref()
                ),
            ));
        };
        if out.iter().any(|o| o == feature.name) {
            return Err(at(
                Some(n.span()),
                format!("feature `{}` is listed twice in `{key}`", feature.name),
            ));
        }
        out.push(feature.name.to_string());
    }
    Ok(out)
}

fn error_at(
    text: &str,
    source_name: &str,
    span: Option<Range<usize>>,
    message: String,
) -> SpecError {
    let (line, column) = match span {
        Some(span) => line_column(text, span.start),
        None => (0, 0),
    };
    SpecError {
        source_name: source_name.to_string(),
        line,
        column,
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> SpecError {
        parse(text, "f.toml").expect_err("spec should be rejected")
    }

    #[test]
    fn a_full_spec_parses() {
        let spec = parse(
            r#"
name = "t"
[[vm]]
name = "a"
vcpus = 2
memory_mib = 4
probe_repeats = 3
cpu = { base = "host", hide = ["AVX512F", "x2apic"] }
[[vm.after_run]]
action = "rewrite-identical"
[[vm.after_run]]
action = "hide"
features = ["sse4_2"]
vcpu = 1
"#,
            "f.toml",
        )
        .unwrap();
        assert_eq!(spec.name, "t");
        let vm = &spec.vms[0];
        assert_eq!((vm.vcpus, vm.memory_mib, vm.probe_repeats), (2, 4, 3));
        assert_eq!(
            vm.cpu.hide,
            vec!["avx512f".to_string(), "x2apic".to_string()]
        );
        assert_eq!(
            vm.after_run,
            vec![
                AfterRun::RewriteIdentical { vcpu: None },
                AfterRun::Hide {
                    features: vec!["sse4_2".into()],
                    vcpu: Some(1)
                }
            ]
        );
    }

    #[test]
    fn defaults_apply() {
        let spec = parse("[[vm]]\nname = \"a\"\n", "f.toml").unwrap();
        assert_eq!(spec.name, "fleet");
        assert_eq!(
            (
                spec.vms[0].vcpus,
                spec.vms[0].memory_mib,
                spec.vms[0].probe_repeats
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = err("[[vm]]\nname = \"a\"\nvcpus = = 2\n");
        assert_eq!((e.line, e.source_name.as_str()), (3, "f.toml"));
        assert!(e.to_string().starts_with("f.toml:3:"), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_position() {
        let e = err("[[vm]]\nname = \"a\"\nvcpu = 2\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("vcpu"), "{e}");
    }

    #[test]
    fn unknown_features_point_at_the_name_and_suggest() {
        let e = err("[[vm]]\nname = \"a\"\ncpu = { hide = [\"x2apic\", \"avx512\"] }\n");
        assert_eq!((e.line, e.column), (3, 27), "{e}");
        assert!(e.message.contains("`avx512`"), "{e}");
        assert!(e.message.contains("did you mean"), "{e}");
    }

    #[test]
    fn semantic_errors_have_positions() {
        assert_eq!(err("[[vm]]\nname = \"a\"\nvcpus = 0\n").line, 3);
        assert_eq!(err("[[vm]]\nname = \"a\"\nvcpus = 65\n").line, 3);
        assert_eq!(err("[[vm]]\nname = \"a b\"\n").line, 2);
        assert_eq!(err("[[vm]]\nname = \"a\"\n[[vm]]\nname = \"a\"\n").line, 4);
        assert_eq!(
            err("[[vm]]\nname = \"a\"\ncpu = { base = \"skylake\" }\n").line,
            3
        );
        let e = err(
            "[[vm]]\nname = \"a\"\nvcpus = 2\n[[vm.after_run]]\naction = \"hide\"\nfeatures = [\"sse4_2\"]\nvcpu = 2\n",
        );
        assert_eq!(e.line, 7, "{e}");
        assert_eq!(
            err("[[vm]]\nname = \"a\"\n[[vm.after_run]]\naction = \"explode\"\n").line,
            4
        );
        assert_eq!(
            err("[[vm]]\nname = \"a\"\n[[vm.after_run]]\naction = \"hide\"\n").line,
            4
        );
    }

    #[test]
    fn an_empty_fleet_is_an_error_without_position() {
        let e = err("name = \"x\"\n");
        assert_eq!(e.line, 0);
        assert!(e.to_string().contains("no VMs"), "{e}");
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "\u{0}\u{1}",
            "[[vm]",
            "vm = 3",
            "[[vm]]\nname = 3",
            "\"",
            "[vm]\nname=\"a\"",
        ] {
            let _ = parse(text, "g.toml");
        }
    }
}
