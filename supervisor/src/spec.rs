//! The fleet spec: which VMs to run, with which CPU model, and what to try on them after they ran.
//!
//! A spec is TOML. Every error, syntactic or semantic, names the file, line and column of the
//! offending key or value, because a fleet spec is hand-written and a bare "invalid value" wastes
//! the operator's time; a misspelt key, action, arch or feature gets the nearest known name.
//! Parsing is pure: the same text always gives the same spec, which is what lets
//! a trace carry its spec as text and replay re-parse it.
//!
//! ```toml
//! name = "web-tier"
//!
//! [[vm]]
//! name = "api"
//! count = 3                 # three copies: api-0, api-1, api-2 (default 1: just `api`)
//! vcpus = 2
//! memory_mib = 16
//! probe_repeats = 1         # 0 = probe forever
//! # fault_after_passes = 1  # optional: the guest triple-faults after this many passes
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
//!
//! An arm64 fleet says `arch = "aarch64"` and gives each VM an `arm64` table (the model's own
//! spec, [`vcpu::model::arm64::Arm64ModelSpec`]) instead of `cpu`:
//!
//! ```toml
//! arch = "aarch64"
//!
//! [[vm]]
//! name = "edge"
//! [vm.arm64]
//! features = ["psci-0.2", "pmu-v3"]
//! psci_version = "1.0"
//! id_registers = { "ID_AA64ISAR0_EL1.AES" = 0 }
//! hypercalls = { trng = false }
//! unknown_registers = "clear"      # or "keep-host", "refuse"
//!
//! # cross_check = true             # (top level) also send each refused write to a scratch VM
//! # unknown_registers = "refuse"    # (top level) the fleet's policy; a VM's table may differ
//!
//! [[vm.after_run]]                 # after the run: refused by the lock (EBUSY class)
//! action = "set"
//! field = "ID_AA64PFR0_EL1.CSV3"
//! value = 0
//! ```

use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};
use vcpu::GuestArch;
use vcpu::guests::x86::FAULT_IDT_BASE;
use vcpu::model::arm64::{Arm64ModelSpec, FieldRef, UnknownRegisterPolicy};
use vcpu::model::x86::catalog as features;

/// Limits that keep one spec from asking for absurd resources by typo.
pub const MAX_VCPUS_PER_VM: u32 = 64;
pub const MAX_MEMORY_MIB: u32 = 16 * 1024;
/// The most passes `probe_repeats` and `fault_after_passes` can ask for (`probe_repeats = 0`
/// means forever).
pub const MAX_PROBE_REPEATS: u32 = 100_000;
/// The most VMs in a fleet, after `count` expansion.
pub const MAX_VMS: usize = 4096;
/// The most copies one `[[vm]]` entry can ask for with `count`.
pub const MAX_COUNT: u32 = 1000;
/// The most vCPUs in a fleet, all VMs together (each takes a thread and file descriptors).
pub const MAX_FLEET_VCPUS: u64 = 4096;
/// The most memory a VM with `fault_after_passes` can have: the guest's deliberate triple fault
/// points its IDT at [`FAULT_IDT_BASE`], which must lie above guest memory.
pub const MAX_FAULT_MEMORY_MIB: u32 = (FAULT_IDT_BASE >> 20) as u32;

/// A parsed, validated fleet spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetSpec {
    pub name: String,
    /// The guests' architecture (`arch`, default x86_64). A fleet runs on a host of its own
    /// architecture, and replays anywhere.
    pub arch: GuestArch,
    /// arm64: send every write vmfleet refuses to a scratch VM too, and report both verdicts.
    pub cross_check: bool,
    pub vms: Vec<VmSpec>,
}

/// One VM of the fleet (a `[[vm]]` entry with `count = N` gives N of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmSpec {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// How many times the guest runs its CPUID probe before halting; 0 = forever.
    pub probe_repeats: u32,
    /// The guest triple-faults on purpose after this many complete passes (never when `None`).
    /// At most `probe_repeats` unless that is 0, so the fault always happens.
    pub fault_after_passes: Option<u32>,
    pub cpu: CpuSpec,
    /// The arm64 CPU model (aarch64 fleets only; `None` there means the host's model).
    pub arm64: Option<Arm64ModelSpec>,
    /// The fleet's `cross_check`, for this VM.
    pub cross_check: bool,
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
    /// arm64: set one ID-register field; refused by the lock unless it is the value held.
    SetField {
        field: FieldRef,
        value: u64,
        vcpu: Option<u32>,
    },
}

impl AfterRun {
    /// The vCPUs the action targets (`None` = all).
    pub fn vcpu(&self) -> Option<u32> {
        match self {
            AfterRun::RewriteIdentical { vcpu }
            | AfterRun::Hide { vcpu, .. }
            | AfterRun::SetField { vcpu, .. } => *vcpu,
        }
    }
}

/// A spec error at a position in a file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub source_name: String,
    /// 1-based, like `column`: [`parse`] always names a position (the start of the file when
    /// nothing narrower is to blame); 0 only in errors made elsewhere, displayed without one.
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
    arch: Option<Spanned<String>>,
    cross_check: Option<Spanned<bool>>,
    unknown_registers: Option<Spanned<UnknownRegisterPolicy>>,
    #[serde(default)]
    vm: Vec<Spanned<RawVm>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: Spanned<String>,
    count: Option<Spanned<i64>>,
    vcpus: Option<Spanned<i64>>,
    memory_mib: Option<Spanned<i64>>,
    probe_repeats: Option<Spanned<i64>>,
    fault_after_passes: Option<Spanned<i64>>,
    cpu: Option<RawCpu>,
    arm64: Option<Spanned<Arm64ModelSpec>>,
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
    field: Option<Spanned<String>>,
    value: Option<Spanned<i64>>,
    vcpu: Option<Spanned<i64>>,
}

// ---- parsing ----------------------------------------------------------------------------------

/// Parse and validate a fleet spec. `source_name` is what errors call the text (a path).
///
/// Every error carries the line and column of the key or value at fault (the start of the file
/// when nothing narrower is to blame, e.g. a spec without VMs).
pub fn parse(text: &str, source_name: &str) -> Result<FleetSpec, SpecError> {
    let at =
        |span: Option<Range<usize>>, message: String| error_at(text, source_name, span, message);
    // First the document with the span of every key and value: syntax errors, and unknown keys
    // with a suggestion. Then the typed shape, then the rules.
    let doc = DeTable::parse(text).map_err(|e| at(e.span(), toml_message(&e)))?;
    check_keys(doc.get_ref(), &at)?;
    let raw: RawFleet = toml::from_str(text)
        .map_err(|e| at(e.span().map(|s| narrow(doc.get_ref(), s)), toml_message(&e)))?;

    let name = match &raw.name {
        Some(n) => {
            check_name(n.get_ref()).map_err(|m| at(Some(n.span()), format!("fleet name: {m}")))?;
            n.get_ref().clone()
        }
        None => "fleet".to_string(),
    };
    let arch = match &raw.arch {
        None => GuestArch::X86_64,
        Some(a) => match a.get_ref().as_str() {
            "x86_64" => GuestArch::X86_64,
            "aarch64" | "arm64" => GuestArch::Aarch64,
            other => {
                return Err(at(
                    Some(a.span()),
                    format!(
                        "unknown arch `{other}`{}: expected \"x86_64\" or \"aarch64\"",
                        did_you_mean(other, &["x86_64", "aarch64"])
                    ),
                ));
            }
        },
    };
    if raw.vm.is_empty() {
        let vm_key = doc.get_ref().get("vm").map(|v| v.span());
        return Err(at(
            vm_key.or(Some(0..0)),
            "the fleet has no VMs: add at least one [[vm]] table".into(),
        ));
    }
    if raw.vm.len() > MAX_VMS {
        return Err(at(
            raw.vm[MAX_VMS].span().into(),
            format!("more than {MAX_VMS} VMs"),
        ));
    }

    let cross_check = match &raw.cross_check {
        Some(c) if *c.get_ref() && arch != GuestArch::Aarch64 => {
            return Err(at(
                Some(c.span()),
                "`cross_check` applies to aarch64 fleets (x86 writes are not judged before the \
                 kernel)"
                    .into(),
            ));
        }
        Some(c) => *c.get_ref(),
        None => false,
    };
    // The fleet's policy for registers vmfleet does not know: every VM's, unless its own `arm64`
    // table chooses another.
    let fleet_unknown = match &raw.unknown_registers {
        Some(p) if arch != GuestArch::Aarch64 => {
            return Err(at(
                Some(p.span()),
                "`unknown_registers` applies to aarch64 fleets".into(),
            ));
        }
        Some(p) => Some(*p.get_ref()),
        None => None,
    };
    let mut vms: Vec<VmSpec> = Vec::with_capacity(raw.vm.len());
    // Every VM name so far, with what made it (for the duplicate-name error).
    let mut names: HashMap<String, String> = HashMap::new();
    let mut fleet_vcpus: u64 = 0;
    for (index, raw_vm) in raw.vm.iter().enumerate() {
        let vm = raw_vm.get_ref();
        let name = vm.name.get_ref();
        let name_line = line_column(text, vm.name.span().start).0;
        check_name(name).map_err(|m| at(Some(vm.name.span()), format!("VM name: {m}")))?;
        let count = bounded(&vm.count, 1, 1, u64::from(MAX_COUNT), "count", &at)?;
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
            0,
            u64::from(MAX_PROBE_REPEATS),
            "probe_repeats",
            &at,
        )
        .map_err(|mut e| {
            e.message += " (0 = repeat forever)";
            e
        })?;
        let fault_after_passes = match &vm.fault_after_passes {
            None => None,
            Some(f) if arch == GuestArch::Aarch64 => {
                return Err(at(
                    Some(f.span()),
                    "`fault_after_passes` is for the x86 guest; the arm64 guest has no \
                     deliberate fault"
                        .into(),
                ));
            }
            Some(f) => {
                let passes = bounded(
                    &vm.fault_after_passes,
                    1,
                    1,
                    u64::from(MAX_PROBE_REPEATS),
                    "fault_after_passes",
                    &at,
                )?;
                if probe_repeats != 0 && passes > probe_repeats {
                    return Err(at(
                        Some(f.span()),
                        format!(
                            "`fault_after_passes = {passes}` never happens: the guest halts after \
                             `probe_repeats = {probe_repeats}` pass(es); raise `probe_repeats`, or \
                             set it to 0 (repeat forever)"
                        ),
                    ));
                }
                if memory_mib > MAX_FAULT_MEMORY_MIB {
                    return Err(at(
                        Some(f.span()),
                        format!(
                            "`fault_after_passes` needs `memory_mib` <= {MAX_FAULT_MEMORY_MIB} \
                             (it is {memory_mib}): the guest's deliberate triple fault points its \
                             IDT at {FAULT_IDT_BASE:#x}, which must not be guest memory"
                        ),
                    ));
                }
                Some(passes)
            }
        };

        // The fleet-wide limits, counting every copy.
        let total_vms = vms.len() + count as usize;
        let count_or_name = vm
            .count
            .as_ref()
            .map_or_else(|| vm.name.span(), |c| c.span());
        if total_vms > MAX_VMS {
            return Err(at(
                Some(count_or_name),
                format!(
                    "the fleet has {total_vms} VMs with `{name}` ({count} of them); at most \
                     {MAX_VMS} VMs in a fleet"
                ),
            ));
        }
        fleet_vcpus += u64::from(count) * u64::from(vcpus);
        if fleet_vcpus > MAX_FLEET_VCPUS {
            let span = vm
                .vcpus
                .as_ref()
                .map_or(count_or_name.clone(), |v| v.span());
            return Err(at(
                Some(span),
                format!(
                    "the fleet has {fleet_vcpus} vCPUs with `{name}` ({count} VM(s) x {vcpus} \
                     vCPU(s)); at most {MAX_FLEET_VCPUS} vCPUs in a fleet"
                ),
            ));
        }

        // The names of the copies, unique across the fleet.
        let copies: Vec<String> = if count == 1 {
            vec![name.clone()]
        } else {
            (0..count).map(|i| format!("{name}-{i}")).collect()
        };
        for copy in &copies {
            check_name(copy).map_err(|m| {
                at(
                    Some(vm.name.span()),
                    format!("VM name with `count = {count}`: {m}"),
                )
            })?;
            let made_here = if count == 1 {
                format!("line {name_line} names a VM `{copy}`")
            } else {
                format!("`count = {count}` on `{name}` at line {name_line} makes a VM `{copy}`")
            };
            if let Some(first) = names.get(copy) {
                return Err(at(
                    Some(vm.name.span()),
                    format!("duplicate VM name `{copy}`: {made_here}, but {first} already"),
                ));
            }
            names.insert(copy.clone(), made_here);
        }

        let arm64 = match (&vm.arm64, arch) {
            (None, _) => None,
            (Some(model), GuestArch::Aarch64) => {
                model.get_ref().check().map_err(|e| {
                    // Point at the key the contradiction is about, not the whole table.
                    let key = match e {
                        vcpu::model::arm64::SpecError::PsciVersionNeedsPsci02 { .. }
                        | vcpu::model::arm64::SpecError::Psci01WithPsci02 => "psci_version",
                        _ => "features",
                    };
                    let span = vm_value_span(doc.get_ref(), index, &["arm64", key]);
                    at(
                        span.or(Some(model.span())),
                        format!("arm64 model of `{name}`: {e}"),
                    )
                })?;
                Some(model.get_ref().clone())
            }
            (Some(model), GuestArch::X86_64) => {
                return Err(at(
                    Some(model.span()),
                    "an `arm64` table needs `arch = \"aarch64\"` at the top of the spec".into(),
                ));
            }
        };
        if let (Some(cpu), GuestArch::Aarch64) = (&vm.cpu, arch) {
            let span = cpu
                .hide
                .first()
                .map(|h| h.span())
                .or_else(|| cpu.base.as_ref().map(|b| b.span()))
                .unwrap_or_else(|| vm.name.span());
            return Err(at(
                Some(span),
                "`cpu` is the x86 CPUID model; an aarch64 VM's model is its `arm64` table".into(),
            ));
        }
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
            let only_for = |what: &str, wanted: GuestArch| {
                (arch != wanted).then(|| {
                    at(
                        Some(a.action.span()),
                        format!("action \"{what}\" is for {wanted} fleets; this one is {arch}"),
                    )
                })
            };
            if a.action.get_ref() != "set" {
                if let Some(f) = a.field.as_ref() {
                    return Err(at(
                        Some(f.span()),
                        "`field` only applies to action \"set\"".into(),
                    ));
                }
            }
            after_run.push(match a.action.get_ref().as_str() {
                "set" => {
                    if let Some(e) = only_for("set", GuestArch::Aarch64) {
                        return Err(e);
                    }
                    let field = a.field.as_ref().ok_or_else(|| {
                        at(
                            Some(a.action.span()),
                            "action \"set\" needs `field` (e.g. \"ID_AA64PFR0_EL1.CSV3\") and `value`"
                                .into(),
                        )
                    })?;
                    let field_ref = vcpu::model::arm64::fields::resolve(field.get_ref())
                        .map_err(|e| at(Some(field.span()), e.to_string()))?;
                    let value = a.value.as_ref().ok_or_else(|| {
                        at(
                            Some(a.action.span()),
                            "action \"set\" needs `value`".into(),
                        )
                    })?;
                    let max = field_ref.field().max_raw();
                    if *value.get_ref() < 0 || *value.get_ref() as u64 > max {
                        return Err(at(
                            Some(value.span()),
                            format!(
                                "`value` is {}; {} is {} bits wide, so its values are 0..={max:#x}",
                                value.get_ref(),
                                field_ref.full_name(),
                                field_ref.field().width
                            ),
                        ));
                    }
                    AfterRun::SetField {
                        field: field_ref,
                        value: *value.get_ref() as u64,
                        vcpu,
                    }
                }
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
                    if let Some(e) = only_for("hide", GuestArch::X86_64) {
                        return Err(e);
                    }
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
                            "unknown action `{other}`{}: expected \"rewrite-identical\", \
                             \"hide\" (x86) or \"set\" (arm64)",
                            did_you_mean(other, &["rewrite-identical", "hide", "set"])
                        ),
                    ));
                }
            });
        }

        let vm_spec = VmSpec {
            name: name.clone(),
            vcpus,
            memory_mib,
            probe_repeats,
            fault_after_passes,
            cpu: CpuSpec { hide },
            arm64: arm64
                .or_else(|| (arch == GuestArch::Aarch64).then(Arm64ModelSpec::default))
                .map(|mut model| {
                    if let Some(policy) = fleet_unknown {
                        if model.unknown_registers == UnknownRegisterPolicy::default() {
                            model.unknown_registers = policy;
                        }
                    }
                    model
                }),
            cross_check,
            after_run,
        };
        vms.extend(copies.into_iter().map(|copy| VmSpec {
            name: copy,
            ..vm_spec.clone()
        }));
    }
    Ok(FleetSpec {
        name,
        arch,
        cross_check,
        vms,
    })
}

/// Names are addressed on command lines (`vmfleet ctl stop NAME`) and printed in tables, so they
/// are 1 to 64 letters, digits, `-` and `_`, and never start with `-` (a command line would take
/// them for an option).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.starts_with('-') {
        return Err(format!(
            "`{name}` starts with `-`, so a command line would take it for an option; start it \
             with a letter, a digit or `_`"
        ));
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

/// `vmfleet run --cross-check`: the spec with `cross_check = true` written into its text (the
/// text a trace keeps, so that replays cross-check the same writes), and the text. Refused, at
/// the key that contradicts it, for an x86 fleet and for a spec that says `cross_check = false`.
pub fn parse_cross_checked(
    text: &str,
    source_name: &str,
) -> Result<(String, FleetSpec), SpecError> {
    let spec = parse(text, source_name)?;
    if spec.cross_check {
        return Ok((text.to_string(), spec));
    }
    let at =
        |span: Option<Range<usize>>, message: String| error_at(text, source_name, span, message);
    let doc = DeTable::parse(text).map_err(|e| at(e.span(), toml_message(&e)))?;
    let top = |key: &str| doc.get_ref().get(key).map(|v| v.span());
    if spec.arch != GuestArch::Aarch64 {
        return Err(at(
            top("arch"),
            format!(
                "`--cross-check` applies to aarch64 fleets (x86 writes are not judged before the \
                 kernel); this one is {}",
                spec.arch
            ),
        ));
    }
    if let Some(span) = top("cross_check") {
        return Err(at(
            Some(span),
            "`cross_check = false` contradicts `--cross-check`: drop one of them".into(),
        ));
    }
    let text = format!("cross_check = true  # vmfleet run --cross-check\n{text}");
    let spec = parse(&text, source_name)?;
    Ok((text, spec))
}

// ---- keys ----------------------------------------------------------------------------------

/// The tables of a spec and their keys. An unknown key is refused with the nearest known one, or
/// with the table it belongs in when it is a key of another table.
const TOP_KEYS: &[&str] = &["name", "arch", "cross_check", "unknown_registers", "vm"];
const VM_KEYS: &[&str] = &[
    "name",
    "count",
    "vcpus",
    "memory_mib",
    "probe_repeats",
    "fault_after_passes",
    "cpu",
    "arm64",
    "after_run",
];
const CPU_KEYS: &[&str] = &["base", "hide"];
const AFTER_RUN_KEYS: &[&str] = &["action", "features", "field", "value", "vcpu"];
const ARM64_KEYS: &[&str] = &[
    "features",
    "id_registers",
    "hypercalls",
    "psci_version",
    "unknown_registers",
];
/// Every table, where an error says a key is, with its keys.
const TABLES: &[(&str, &[&str])] = &[
    ("at the top level", TOP_KEYS),
    ("in [[vm]]", VM_KEYS),
    ("in a VM's `cpu`", CPU_KEYS),
    ("in [[vm.after_run]]", AFTER_RUN_KEYS),
    ("in [vm.arm64]", ARM64_KEYS),
];

/// Refuse the first unknown key (in file order) of every table whose keys are fixed. Values of
/// the wrong shape are left to the typed parse, which names them.
fn check_keys(
    doc: &DeTable<'_>,
    at: &dyn Fn(Option<Range<usize>>, String) -> SpecError,
) -> Result<(), SpecError> {
    let mut tables: Vec<(&DeTable<'_>, usize)> = vec![(doc, 0)];
    for vm in array_tables(doc.get("vm")) {
        tables.push((vm, 1));
        if let Some(DeValue::Table(cpu)) = vm.get("cpu").map(|v| v.get_ref()) {
            tables.push((cpu, 2));
        }
        tables.extend(array_tables(vm.get("after_run")).map(|a| (a, 3)));
        if let Some(DeValue::Table(arm64)) = vm.get("arm64").map(|v| v.get_ref()) {
            tables.push((arm64, 4));
        }
    }
    let mut unknown: Vec<(Range<usize>, String)> = Vec::new();
    for (table, kind) in tables {
        let (_, known) = TABLES[kind];
        if let Some(key) = table
            .keys()
            .filter(|k| !known.contains(&k.get_ref().as_ref()))
            .min_by_key(|k| k.span().start)
        {
            unknown.push((key.span(), unknown_key(key.get_ref(), kind)));
        }
    }
    match unknown.into_iter().min_by_key(|(span, _)| span.start) {
        Some((span, message)) => Err(at(Some(span), message)),
        None => Ok(()),
    }
}

/// The tables of an array of tables (`[[vm]]`), or none when the value is something else.
fn array_tables<'a, 'i>(
    value: Option<&'a Spanned<DeValue<'i>>>,
) -> impl Iterator<Item = &'a DeTable<'i>> {
    let items: &[Spanned<DeValue<'i>>] = match value.map(|v| v.get_ref()) {
        Some(DeValue::Array(items)) => items,
        _ => &[],
    };
    items.iter().filter_map(|v| match v.get_ref() {
        DeValue::Table(t) => Some(t),
        _ => None,
    })
}

fn unknown_key(key: &str, kind: usize) -> String {
    let (table, known) = TABLES[kind];
    let mut message = format!("unknown key `{key}` {table}");
    let near = did_you_mean(key, known);
    if !near.is_empty() {
        message += &near;
    } else if let Some((elsewhere, _)) = TABLES.iter().find(|(_, keys)| keys.contains(&key)) {
        message += &format!(": `{key}` belongs {elsewhere}");
    } else {
        message += &format!("; the keys there are {}", backticked(known));
    }
    message
}

/// ` (did you mean `x`?)` when a known name is close to `name`, else nothing.
fn did_you_mean(name: &str, known: &[&str]) -> String {
    vcpu::model::suggest::closest(name, known.iter().copied())
        .map(|near| format!(" (did you mean `{near}`?)"))
        .unwrap_or_default()
}

fn backticked(names: &[&str]) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    names.join(", ")
}

/// The span of the value at `path` inside the `index`th `[[vm]]` table.
fn vm_value_span(doc: &DeTable<'_>, index: usize, path: &[&str]) -> Option<Range<usize>> {
    let mut value = match doc.get("vm")?.get_ref() {
        DeValue::Array(items) => items.get(index)?,
        _ => return None,
    };
    for key in path {
        value = match value.get_ref() {
            DeValue::Table(t) => t.get(*key)?,
            _ => return None,
        };
    }
    Some(value.span())
}

/// The TOML parser puts an error in an arm64 `features` list on the whole list: narrow it to
/// the first element that is not a vCPU feature's name.
fn narrow(doc: &DeTable<'_>, span: Range<usize>) -> Range<usize> {
    for vm in array_tables(doc.get("vm")) {
        let Some(DeValue::Table(arm64)) = vm.get("arm64").map(|v| v.get_ref()) else {
            continue;
        };
        let Some(features) = arm64.get("features").filter(|f| f.span() == span) else {
            continue;
        };
        if let DeValue::Array(items) = features.get_ref() {
            if let Some(bad) = items.iter().find(|item| match item.get_ref() {
                DeValue::String(name) => vcpu::model::arm64::VcpuFeature::from_name(name).is_none(),
                _ => true,
            }) {
                return bad.span();
            }
        }
    }
    span
}

/// A TOML error's message, in the spec's words (`missing field` is a key here).
fn toml_message(e: &toml::de::Error) -> String {
    e.message()
        .trim()
        .replace("missing field", "missing key")
        .replace("unknown field", "unknown key")
}

fn error_at(
    text: &str,
    source_name: &str,
    span: Option<Range<usize>>,
    message: String,
) -> SpecError {
    // Nothing narrower to blame: the start of the file.
    let (line, column) = line_column(text, span.map_or(0, |s| s.start));
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
mod tests;

#[cfg(test)]
#[path = "spec/tests/arm64.rs"]
mod arm64_tests;

/// Property tests: valid specs (the fixtures' and the demo's) mutated at random, by bytes, lines,
/// values and keys, either parse or fail with an error that names `file:line:col` inside the
/// text; `parse` never panics.
#[cfg(test)]
#[path = "spec/tests/props.rs"]
mod props;
