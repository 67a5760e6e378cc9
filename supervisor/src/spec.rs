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
//! spec, [`vcpu::arm64::Arm64ModelSpec`]) instead of `cpu`:
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
use vcpu::arm64::{Arm64ModelSpec, FieldRef, UnknownRegisterPolicy};
use vcpu::cpuid::features;
use vcpu::guest::x86::FAULT_IDT_BASE;

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
                        vcpu::arm64::SpecError::PsciVersionNeedsPsci02 { .. }
                        | vcpu::arm64::SpecError::Psci01WithPsci02 => "psci_version",
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
                    let field_ref = vcpu::arm64::fields::resolve(field.get_ref())
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
    vcpu::suggest::closest(name, known.iter().copied())
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
                DeValue::String(name) => vcpu::arm64::VcpuFeature::from_name(name).is_none(),
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
        assert_eq!(spec.vms[0].fault_after_passes, None);
        assert_eq!(spec.vms.len(), 1, "count defaults to 1");
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
    fn count_expands_into_named_copies() {
        let spec = parse(
            "[[vm]]\nname = \"web\"\ncount = 3\nvcpus = 2\nfault_after_passes = 1\n\
             [[vm.after_run]]\naction = \"rewrite-identical\"\n\
             [[vm]]\nname = \"db\"\ncount = 1\n",
            "f.toml",
        )
        .unwrap();
        let names: Vec<&str> = spec.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["web-0", "web-1", "web-2", "db"]);
        for vm in &spec.vms[..3] {
            assert_eq!(vm.vcpus, 2);
            assert_eq!(vm.fault_after_passes, Some(1));
            assert_eq!(
                vm.after_run,
                vec![AfterRun::RewriteIdentical { vcpu: None }]
            );
        }
        assert_eq!(spec.vms[3].vcpus, 1);
        assert_eq!(spec.vms[3].fault_after_passes, None);
    }

    #[test]
    fn count_is_bounded() {
        for bad in ["0", "1001", "-1"] {
            let e = err(&format!("[[vm]]\nname = \"a\"\ncount = {bad}\n"));
            assert_eq!((e.line, e.column), (3, 9), "{e}");
            assert!(e.message.contains("between 1 and 1000"), "{e}");
        }
        let spec = parse("[[vm]]\nname = \"a\"\ncount = 1000\n", "f.toml").unwrap();
        assert_eq!(spec.vms.len(), 1000);
        assert_eq!(spec.vms[999].name, "a-999");
    }

    #[test]
    fn expanded_names_must_be_unique() {
        // A later plain name that a count already made: points at the later entry's name.
        let e = err("[[vm]]\nname = \"a\"\ncount = 2\n[[vm]]\nname = \"a-1\"\n");
        assert_eq!((e.line, e.column), (5, 8), "{e}");
        assert_eq!(
            e.message,
            "duplicate VM name `a-1`: line 5 names a VM `a-1`, but `count = 2` on `a` at line 2 \
             makes a VM `a-1` already"
        );
        // A later count that makes a name already taken.
        let e = err("[[vm]]\nname = \"b-0\"\n[[vm]]\nname = \"b\"\ncount = 4\n");
        assert_eq!((e.line, e.column), (4, 8), "{e}");
        assert!(
            e.message
                .starts_with("duplicate VM name `b-0`: `count = 4` on `b` at line 4"),
            "{e}"
        );
        assert!(
            e.message.ends_with("line 2 names a VM `b-0` already"),
            "{e}"
        );
        // A plain duplicate still says where the first one is.
        let e = err("[[vm]]\nname = \"a\"\n[[vm]]\nname = \"a\"\n");
        assert_eq!((e.line, e.column), (4, 8), "{e}");
        assert!(e.message.contains("line 2 names a VM `a` already"), "{e}");
        // With count = 1 the name is not suffixed, so `a` and `a-0` can coexist.
        parse(
            "[[vm]]\nname = \"a\"\ncount = 1\n[[vm]]\nname = \"a-0\"\n",
            "f.toml",
        )
        .unwrap();
    }

    #[test]
    fn expanded_names_must_stay_short() {
        let long = "x".repeat(62);
        parse(
            &format!("[[vm]]\nname = \"{long}\"\ncount = 10\n"),
            "f.toml",
        )
        .unwrap();
        let e = err(&format!("[[vm]]\nname = \"{long}\"\ncount = 11\n"));
        assert_eq!((e.line, e.column), (2, 8), "{e}");
        assert!(e.message.contains("-10` is longer than 64"), "{e}");
    }

    #[test]
    fn the_fleet_is_bounded_in_vms_and_vcpus() {
        // 4096 VMs of one vCPU are fine; one more VM is not.
        let mut text = String::new();
        for i in 0..4 {
            text += &format!("[[vm]]\nname = \"v{i}\"\ncount = 1000\n");
        }
        text += "[[vm]]\nname = \"w\"\ncount = 96\n";
        assert_eq!(parse(&text, "f.toml").unwrap().vms.len(), 4096);
        let e = err(&(text.clone() + "[[vm]]\nname = \"z\"\n"));
        assert_eq!((e.line, e.column), (17, 8), "points at the VM's name: {e}");
        assert!(e.message.contains("4097 VMs"), "{e}");
        let e = err(&text.replace("count = 96", "count = 97"));
        assert_eq!((e.line, e.column), (15, 9), "points at count: {e}");

        // As many [[vm]] tables: the one past the limit is named.
        let tables: String = (0..=MAX_VMS)
            .map(|i| format!("[[vm]]\nname = \"t{i}\"\n"))
            .collect();
        let e = err(&tables);
        assert_eq!((e.line, e.column), (2 * MAX_VMS + 1, 1), "{e}");
        assert_eq!(e.message, "more than 4096 VMs");

        // vCPUs: 64 x 64 = 4096 is the most.
        let vcpus = "[[vm]]\nname = \"a\"\ncount = 64\nvcpus = 64\n";
        parse(vcpus, "f.toml").unwrap();
        let e = err(&format!("{vcpus}[[vm]]\nname = \"b\"\nvcpus = 1\n"));
        assert_eq!((e.line, e.column), (7, 9), "points at vcpus: {e}");
        assert_eq!(
            e.message,
            "the fleet has 4097 vCPUs with `b` (1 VM(s) x 1 vCPU(s)); at most 4096 vCPUs in a fleet"
        );
        let e = err(&format!("{vcpus}[[vm]]\nname = \"b\"\ncount = 2\n"));
        assert_eq!(
            (e.line, e.column),
            (7, 9),
            "no vcpus key: points at count: {e}"
        );
        assert!(e.message.contains("4098 vCPUs"), "{e}");
        let e = err(&format!("{vcpus}[[vm]]\nname = \"b\"\n"));
        assert_eq!(
            (e.line, e.column),
            (6, 8),
            "neither: points at the name: {e}"
        );
    }

    #[test]
    fn probe_repeats_zero_means_forever() {
        let spec = parse("[[vm]]\nname = \"a\"\nprobe_repeats = 0\n", "f.toml").unwrap();
        assert_eq!(spec.vms[0].probe_repeats, 0);
        let e = err("[[vm]]\nname = \"a\"\nprobe_repeats = -1\n");
        assert_eq!((e.line, e.column), (3, 17), "{e}");
        assert_eq!(
            e.message,
            "`probe_repeats` is -1; it must be between 0 and 100000 (0 = repeat forever)"
        );
        let e = err("[[vm]]\nname = \"a\"\nprobe_repeats = 100001\n");
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn fault_after_passes_rules() {
        let ok = |text: &str| parse(text, "f.toml").unwrap().vms[0].fault_after_passes;
        assert_eq!(
            ok("[[vm]]\nname = \"a\"\nfault_after_passes = 1\n"),
            Some(1)
        );
        assert_eq!(
            ok("[[vm]]\nname = \"a\"\nprobe_repeats = 0\nfault_after_passes = 7\n"),
            Some(7)
        );
        assert_eq!(
            ok("[[vm]]\nname = \"a\"\nprobe_repeats = 3\nfault_after_passes = 3\n"),
            Some(3)
        );
        assert_eq!(
            ok("[[vm]]\nname = \"a\"\nmemory_mib = 4095\nfault_after_passes = 1\n"),
            Some(1)
        );

        let e = err("[[vm]]\nname = \"a\"\nfault_after_passes = 0\n");
        assert_eq!((e.line, e.column), (3, 22), "{e}");
        assert!(e.message.contains("between 1 and 100000"), "{e}");
        // It would never happen: the guest halts first.
        let e = err("[[vm]]\nname = \"a\"\nfault_after_passes = 2\n");
        assert_eq!((e.line, e.column), (3, 22), "{e}");
        assert!(
            e.message.contains("never happens")
                && e.message.contains("`probe_repeats = 1`")
                && e.message.contains("set it to 0"),
            "{e}"
        );
        // Guest memory must stay below the deliberate fault's IDT.
        let e = err("[[vm]]\nname = \"a\"\nmemory_mib = 4096\nfault_after_passes = 1\n");
        assert_eq!((e.line, e.column), (4, 22), "{e}");
        assert!(
            e.message.contains("`memory_mib` <= 4095 (it is 4096)")
                && e.message.contains("0xffff0000"),
            "{e}"
        );
        assert_eq!(MAX_FAULT_MEMORY_MIB, 4095);
    }

    #[test]
    fn an_empty_fleet_points_at_the_start_of_the_file_or_its_vm_key() {
        let e = err("name = \"x\"\n");
        assert_eq!((e.line, e.column), (1, 1), "{e}");
        assert!(
            e.to_string()
                .starts_with("f.toml:1:1: the fleet has no VMs"),
            "{e}"
        );
        let e = err("name = \"x\"\nvm = []\n");
        assert_eq!((e.line, e.column), (2, 6), "{e}");
    }

    /// One spec per kind of error `parse` can give, with where it must point (line, column) and
    /// a piece of its message. The position is the offending key or value, never just the table.
    #[test]
    fn every_kind_of_error_points_at_its_key_or_value() {
        const X: &str = "[[vm]]\nname = \"a\"\n";
        const A: &str = "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n";
        let x = |rest: &str| format!("{X}{rest}");
        let a = |rest: &str| format!("{A}{rest}");
        let cases: Vec<(String, usize, usize, &str)> = vec![
            // TOML itself.
            (x("vcpus = = 2\n"), 3, 9, "extra `=`"),
            (
                x("vcpus = \"2\"\n"),
                3,
                9,
                "invalid type: string \"2\", expected i64",
            ),
            ("[[vm]]\nname = 3\n".into(), 2, 8, "expected a string"),
            ("vm = 3\n".into(), 1, 6, "expected a sequence"),
            ("[[vm]]\nvcpus = 2\n".into(), 1, 1, "missing key `name`"),
            (
                x("[[vm.after_run]]\nvcpu = 0\n"),
                3,
                1,
                "missing key `action`",
            ),
            (
                x("cross_check = 1\n"),
                3,
                1,
                "unknown key `cross_check` in [[vm]]: `cross_check` belongs at the top level",
            ),
            // Unknown keys, in every table.
            (
                format!("nme = \"x\"\n{X}"),
                1,
                1,
                "unknown key `nme` at the top level (did you mean `name`?)",
            ),
            (
                x("vcpu = 2\n"),
                3,
                1,
                "unknown key `vcpu` in [[vm]] (did you mean `vcpus`?)",
            ),
            (x("memorymib = 2\n"), 3, 1, "(did you mean `memory_mib`?)"),
            (x("hide = []\n"), 3, 1, "`hide` belongs in a VM's `cpu`"),
            (
                x("colour = 1\n"),
                3,
                1,
                "the keys there are `name`, `count`",
            ),
            (
                x("cpu = { hid = [] }\n"),
                3,
                9,
                "unknown key `hid` in a VM's `cpu` (did you mean `hide`?)",
            ),
            (
                x("[[vm.after_run]]\nacton = \"hide\"\n"),
                4,
                1,
                "in [[vm.after_run]] (did you mean `action`?)",
            ),
            (
                a("[vm.arm64]\nfeature = []\n"),
                5,
                1,
                "in [vm.arm64] (did you mean `features`?)",
            ),
            (
                a("[vm.arm64]\npsci = \"1.0\"\n"),
                5,
                1,
                "unknown key `psci` in [vm.arm64]",
            ),
            // The fleet.
            (
                format!("name = \"a b\"\n{X}"),
                1,
                8,
                "fleet name: `a b` contains ' '",
            ),
            (
                format!("name = \"-x\"\n{X}"),
                1,
                8,
                "fleet name: `-x` starts with `-`",
            ),
            (
                format!("arch = \"sparc\"\n{X}"),
                1,
                8,
                "unknown arch `sparc`: expected",
            ),
            (
                format!("arch = \"aarch46\"\n{X}"),
                1,
                8,
                "unknown arch `aarch46` (did you mean `aarch64`?)",
            ),
            (
                format!("cross_check = true\n{X}"),
                1,
                15,
                "`cross_check` applies to aarch64 fleets",
            ),
            (
                format!("unknown_registers = \"clear\"\n{X}"),
                1,
                21,
                "`unknown_registers` applies to aarch64 fleets",
            ),
            (
                format!("arch = \"aarch64\"\nunknown_registers = \"nope\"\n{X}"),
                2,
                21,
                "unknown variant `nope`",
            ),
            // A VM's name and sizes.
            (
                "[[vm]]\nname = \"\"\n".into(),
                2,
                8,
                "VM name: must not be empty",
            ),
            (
                "[[vm]]\nname = \"-x\"\n".into(),
                2,
                8,
                "VM name: `-x` starts with `-`, so a command line would take it for an option",
            ),
            (
                "[[vm]]\nname = \"a.b\"\n".into(),
                2,
                8,
                "VM name: `a.b` contains '.'",
            ),
            (
                format!("[[vm]]\nname = \"{}\"\n", "y".repeat(65)),
                2,
                8,
                "is longer than 64 characters",
            ),
            (
                format!("[[vm]]\nname = \"{}\"\ncount = 10\n", "y".repeat(63)),
                2,
                8,
                "VM name with `count = 10`",
            ),
            (
                x("count = 0\n"),
                3,
                9,
                "`count` is 0; it must be between 1 and 1000",
            ),
            (
                x("vcpus = 65\n"),
                3,
                9,
                "`vcpus` is 65; it must be between 1 and 64",
            ),
            (
                x("memory_mib = 0\n"),
                3,
                14,
                "`memory_mib` is 0; it must be between 1 and 16384",
            ),
            (x("probe_repeats = 100001\n"), 3, 17, "(0 = repeat forever)"),
            (
                x("fault_after_passes = 0\n"),
                3,
                22,
                "`fault_after_passes` is 0",
            ),
            (x("fault_after_passes = 2\n"), 3, 22, "never happens"),
            (
                x("memory_mib = 4096\nfault_after_passes = 1\n"),
                4,
                22,
                "needs `memory_mib` <= 4095",
            ),
            (a("fault_after_passes = 1\n"), 4, 22, "is for the x86 guest"),
            (
                format!("{X}[[vm]]\nname = \"b\"\n[[vm]]\nname = \"a\"\n"),
                6,
                8,
                "duplicate VM name `a`: line 6 names a VM `a`, but line 2",
            ),
            (
                x("count = 1000\nvcpus = 5\n"),
                4,
                9,
                "at most 4096 vCPUs in a fleet",
            ),
            // The x86 model.
            (
                x("cpu = { base = \"skylake\" }\n"),
                3,
                16,
                "unknown CPU base `skylake`",
            ),
            (
                x("cpu = { hide = [\"x2apic\", \"avx512\"] }\n"),
                3,
                27,
                "unknown CPU feature `avx512` in `hide` (did you mean `avx512f`?)",
            ),
            (
                x("cpu = { hide = [\"avx2\", \"AVX2\"] }\n"),
                3,
                25,
                "feature `avx2` is listed twice in `hide`",
            ),
            (
                x("[vm.arm64]\n"),
                3,
                1,
                "an `arm64` table needs `arch = \"aarch64\"`",
            ),
            (
                a("cpu = { hide = [\"avx2\"] }\n"),
                4,
                17,
                "`cpu` is the x86 CPUID model",
            ),
            // After the run.
            (
                x(
                    "vcpus = 2\n[[vm.after_run]]\naction = \"hide\"\nfeatures = [\"avx2\"]\nvcpu = 2\n",
                ),
                7,
                8,
                "vcpu 2 does not exist: `a` has vCPUs 0..=1",
            ),
            (
                x("[[vm.after_run]]\naction = \"explode\"\n"),
                4,
                10,
                "unknown action `explode`: expected",
            ),
            (
                x("[[vm.after_run]]\naction = \"rewrite_identical\"\n"),
                4,
                10,
                "unknown action `rewrite_identical` (did you mean `rewrite-identical`?)",
            ),
            (
                x("[[vm.after_run]]\naction = \"hide\"\n"),
                4,
                10,
                "action \"hide\" needs a non-empty `features` list",
            ),
            (
                x("[[vm.after_run]]\naction = \"hide\"\nfeatures = [\"avx\", \"sse9\"]\n"),
                5,
                20,
                "unknown CPU feature `sse9` in `features`",
            ),
            (
                x("[[vm.after_run]]\naction = \"rewrite-identical\"\nfeatures = [\"avx2\"]\n"),
                5,
                13,
                "`features` does not apply to action \"rewrite-identical\"",
            ),
            (
                x("[[vm.after_run]]\naction = \"hide\"\nfield = \"X.Y\"\nfeatures = [\"avx2\"]\n"),
                5,
                9,
                "`field` only applies to action \"set\"",
            ),
            (
                x("[[vm.after_run]]\naction = \"set\"\n"),
                4,
                10,
                "action \"set\" is for aarch64 fleets; this one is x86_64",
            ),
            (
                a("[[vm.after_run]]\naction = \"hide\"\nfeatures = [\"avx2\"]\n"),
                5,
                10,
                "action \"hide\" is for x86_64 fleets",
            ),
            (
                a("[[vm.after_run]]\naction = \"set\"\nvalue = 0\n"),
                5,
                10,
                "action \"set\" needs `field`",
            ),
            (
                a("[[vm.after_run]]\naction = \"set\"\nfield = \"ID_AA64PFR0_EL1.CSV3\"\n"),
                5,
                10,
                "action \"set\" needs `value`",
            ),
            (
                a(
                    "[[vm.after_run]]\naction = \"set\"\nfield = \"ID_AA64PFR0_EL1.CSV9\"\nvalue = 0\n",
                ),
                6,
                9,
                "ID_AA64PFR0_EL1 has no field `CSV9`",
            ),
            (
                a(
                    "[[vm.after_run]]\naction = \"set\"\nfield = \"ID_AA64PFR0_EL1.CSV3\"\nvalue = -1\n",
                ),
                7,
                9,
                "`value` is -1; ID_AA64PFR0_EL1.CSV3 is 4 bits wide",
            ),
            (
                a(
                    "[[vm.after_run]]\naction = \"set\"\nfield = \"ID_AA64PFR0_EL1.CSV3\"\nvalue = 16\n",
                ),
                7,
                9,
                "so its values are 0..=0xf",
            ),
            // The arm64 model: what is wrong within the table points at its key.
            (
                a("[vm.arm64]\nfeatures = [\"power-off\"]\n"),
                5,
                12,
                "arm64 model of `a`: features: `power-off` is per-vCPU boot state",
            ),
            (
                a("[vm.arm64]\nfeatures = [\"psci-0.2\", \"ptrauth-address\"]\n"),
                5,
                12,
                "ptrauth-address and ptrauth-generic must be requested together",
            ),
            (
                a("[vm.arm64]\nfeatures = []\npsci_version = \"1.0\"\n"),
                6,
                16,
                "psci_version = \"1.0\" needs the psci-0.2 feature",
            ),
            (
                a("[vm.arm64]\npsci_version = \"0.1\"\n"),
                5,
                16,
                "psci_version = \"0.1\" is KVM's legacy PSCI",
            ),
            (
                a("[vm.arm64]\npsci_version = \"9.9\"\n"),
                5,
                16,
                "unknown PSCI version `9.9`",
            ),
            (
                a("[vm.arm64]\nfeatures = [\"sve\", \"pmuv3\"]\n"),
                5,
                20,
                "unknown vCPU feature `pmuv3`",
            ),
            (
                a("[vm.arm64]\nunknown_registers = \"nope\"\n"),
                5,
                21,
                "unknown variant `nope`",
            ),
            (
                a("[vm.arm64]\nid_registers = { \"ID_AA64ISAR0_EL1.AESX\" = 0 }\n"),
                5,
                18,
                "has no field `AESX`",
            ),
            (
                a("[vm.arm64]\nid_registers = { \"ID_AA64ISR0_EL1.AES\" = 0 }\n"),
                5,
                18,
                "unknown register `ID_AA64ISR0_EL1` — did you mean `ID_AA64ISAR0_EL1.AES`?",
            ),
            (
                a("[vm.arm64]\nid_registers = { \"ID_AA64ISAR0_EL1.AES\" = 16 }\n"),
                5,
                43,
                "ID_AA64ISAR0_EL1.AES is 4 bits wide",
            ),
            (
                a("[vm.arm64]\nid_registers = { \"ID_AA64ISAR0_EL1.AES\" = \"x\" }\n"),
                5,
                43,
                "expected an integer field value",
            ),
            (
                a("[vm.arm64]\nid_registers = { ID_AA64ISAR0_EL1 = { AESX = 0 } }\n"),
                5,
                39,
                "has no field `AESX`",
            ),
            (
                a(
                    "[vm.arm64]\nid_registers = { \"ID_AA64ISAR0_EL1.AES\" = 1, ID_AA64ISAR0_EL1 = { AES = 0 } }\n",
                ),
                5,
                16,
                "both set ID_AA64ISAR0_EL1.AES",
            ),
            (
                a("[vm.arm64]\nid_registers = { CSV3 = 0 }\n"),
                5,
                18,
                "`CSV3` is not of the form REGISTER.FIELD (e.g. ID_AA64ISAR0_EL1.AES) — did you mean `ID_AA64PFR0_EL1.CSV3`?",
            ),
            (
                a("[vm.arm64]\nid_registers = { \"MIDR_EL1.Revision\" = 0 }\n"),
                5,
                18,
                "vmfleet has no field table for MIDR_EL1",
            ),
            (
                a("[[vm.after_run]]\naction = \"set\"\nfield = \"CSV3\"\nvalue = 0\n"),
                6,
                9,
                "`CSV3` is not of the form REGISTER.FIELD",
            ),
            (
                a("[vm.arm64]\nhypercalls = { trg = false }\n"),
                5,
                16,
                "unknown hypercall service `trg` — did you mean `trng`?",
            ),
            (
                a("[vm.arm64]\nhypercalls = { trng = false, TRNG = true }\n"),
                5,
                14,
                "hypercalls: `trng` and `TRNG` both set trng",
            ),
            (
                a("[vm.arm64]\nhypercalls = { trng = 1 }\n"),
                5,
                23,
                "expected a boolean",
            ),
        ];
        let mut wrong = Vec::new();
        for (text, line, column, fragment) in &cases {
            let e = err(text);
            let shown = e.to_string();
            let prefix = format!("f.toml:{line}:{column}: ");
            if !shown.starts_with(&prefix) || !shown.contains(fragment) {
                wrong.push(format!(
                    "{text:?}\n  want {prefix}…{fragment}…\n  got  {shown}"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// The key lists that unknown keys are checked against are the keys the typed parse reads:
    /// each known key, in its table, gets no "unknown key" error.
    #[test]
    fn the_known_keys_are_the_keys_read() {
        let value = |key: &str| match key {
            "name" => "\"n\"",
            "arch" => "\"aarch64\"",
            "cross_check" => "true",
            "unknown_registers" => "\"clear\"",
            "vm" | "after_run" => "[]",
            "cpu" => "{}",
            "arm64" => "{}",
            "hide" | "features" => "[]",
            "base" => "\"host\"",
            "action" => "\"set\"",
            "field" => "\"ID_AA64PFR0_EL1.CSV3\"",
            "id_registers" | "hypercalls" => "{}",
            "psci_version" => "\"1.0\"",
            _ => "1",
        };
        for (kind, (_, keys)) in TABLES.iter().enumerate() {
            for key in *keys {
                let line = format!("{key} = {}\n", value(key));
                let text = match kind {
                    0 => format!("{line}[[vm]]\nname = \"a\"\n"),
                    1 => format!(
                        "arch = \"aarch64\"\n[[vm]]\n{}{line}",
                        if *key == "name" { "" } else { "name = \"a\"\n" }
                    ),
                    2 => format!("[[vm]]\nname = \"a\"\n[vm.cpu]\n{line}"),
                    3 => format!(
                        "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[[vm.after_run]]\n{}{line}",
                        if *key == "action" {
                            ""
                        } else {
                            "action = \"set\"\n"
                        }
                    ),
                    _ => format!("arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[vm.arm64]\n{line}"),
                };
                if let Err(e) = parse(&text, "f.toml") {
                    assert!(
                        !e.message.contains("unknown key"),
                        "{key} in table {kind}: {e}"
                    );
                }
            }
        }
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

#[cfg(test)]
mod arm64_tests {
    use super::*;
    use vcpu::arm64::{HypercallService, VcpuFeature};

    const ARM64: &str = r#"
arch = "aarch64"

[[vm]]
name = "edge"
[vm.arm64]
features = ["psci-0.2", "pmu-v3"]
psci_version = "1.0"
id_registers = { "ID_AA64ISAR0_EL1.AES" = 0 }
hypercalls = { trng = false }

[[vm.after_run]]
action = "set"
field = "ID_AA64PFR0_EL1.CSV3"
value = 0

[[vm]]
name = "plain"
"#;

    #[test]
    fn cross_check_from_the_command_line_goes_into_the_text() {
        let (text, spec) = parse_cross_checked(ARM64, "arm64.toml").unwrap();
        assert!(spec.cross_check && spec.vms.iter().all(|vm| vm.cross_check));
        assert!(text.starts_with("cross_check = true") && text.ends_with(ARM64));
        // Already there: the text is kept.
        let with = format!("cross_check = true\n{ARM64}");
        assert_eq!(parse_cross_checked(&with, "arm64.toml").unwrap().0, with);
        // An x86 fleet: the error points at its `arch`, or at the start without one.
        let e = parse_cross_checked("arch = \"x86_64\"\n[[vm]]\nname = \"a\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("x.toml:1:8: `--cross-check` applies to aarch64 fleets"),
            "{e}"
        );
        let e = parse_cross_checked("[[vm]]\nname = \"a\"\n", "x.toml").unwrap_err();
        assert_eq!((e.line, e.column), (1, 1), "{e}");
        // A spec that says no: the error is at its own line, not one shifted by the flag.
        let e = parse_cross_checked(&format!("{ARM64}\n"), "arm64.toml").map(|_| ());
        assert!(e.is_ok());
        let no = ARM64.replacen(
            "arch = \"aarch64\"\n",
            "arch = \"aarch64\"\ncross_check = false\n",
            1,
        );
        let e = parse_cross_checked(&no, "arm64.toml").unwrap_err();
        assert_eq!((e.line, e.column), (3, 15), "{e}");
        assert!(e.message.contains("contradicts `--cross-check`"), "{e}");
    }

    #[test]
    fn an_arm64_fleet_carries_its_model() {
        let spec = parse(ARM64, "arm64.toml").unwrap();
        assert_eq!(spec.arch, GuestArch::Aarch64);
        let edge = spec.vms[0].arm64.as_ref().unwrap();
        assert!(edge.features.contains(VcpuFeature::PmuV3));
        assert_eq!(edge.hypercalls.get(HypercallService::Trng), Some(false));
        assert_eq!(edge.id_registers.len(), 1);
        assert!(matches!(
            spec.vms[0].after_run[0],
            AfterRun::SetField { value: 0, .. }
        ));
        // A VM without a table gets the host's model.
        assert_eq!(spec.vms[1].arm64, Some(Arm64ModelSpec::default()));
    }

    #[test]
    fn the_fleet_sets_the_unknown_register_policy_a_vm_does_not_choose() {
        let text = "arch = \"aarch64\"\nunknown_registers = \"refuse\"\n[[vm]]\nname = \"a\"\n[[vm]]\nname = \"b\"\n[vm.arm64]\nunknown_registers = \"keep-host\"\n";
        let spec = parse(text, "f.toml").unwrap();
        let policy = |i: usize| spec.vms[i].arm64.as_ref().unwrap().unknown_registers;
        assert_eq!(policy(0), UnknownRegisterPolicy::Refuse);
        assert_eq!(policy(1), UnknownRegisterPolicy::KeepHost);
        let e = parse(
            "unknown_registers = \"clear\"\n[[vm]]\nname = \"a\"\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("f.toml:1:") && e.contains("aarch64"), "{e}");
    }

    fn err(text: &str) -> String {
        parse(text, "arm64.toml").unwrap_err().to_string()
    }

    #[test]
    fn arm64_mistakes_are_named_where_they_are() {
        let e = err("[[vm]]\nname = \"a\"\n[vm.arm64]\nhypercalls = { trng = false }\n");
        assert!(
            e.contains("arm64.toml:3:") && e.contains("arch = \"aarch64\""),
            "{e}"
        );
        let e = err("arch = \"sparc\"\n[[vm]]\nname = \"a\"\n");
        assert!(
            e.contains("arm64.toml:1:") && e.contains("unknown arch `sparc`"),
            "{e}"
        );
        let e = err("arch = \"aarch64\"\n[[vm]]\nname = \"a\"\ncpu = { hide = [\"avx2\"] }\n");
        assert!(e.contains("`cpu` is the x86 CPUID model"), "{e}");
        let e = err(
            "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[vm.arm64]\nid_registers = { \"ID_AA64ISAR0_EL1.AESX\" = 0 }\n",
        );
        assert!(e.contains("AESX"), "{e}");
        let e = err(
            "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[[vm.after_run]]\naction = \"set\"\nfield = \"ID_AA64PFR0_EL1.CSV3\"\n",
        );
        assert!(e.contains("needs `value`"), "{e}");
        let e = err(
            "[[vm]]\nname = \"a\"\n[[vm.after_run]]\naction = \"set\"\nfield = \"ID_AA64PFR0_EL1.CSV3\"\nvalue = 0\n",
        );
        assert!(e.contains("is for aarch64 fleets"), "{e}");
        let e = err("arch = \"aarch64\"\n[[vm]]\nname = \"a\"\nfault_after_passes = 1\n");
        assert!(e.contains("x86 guest"), "{e}");
    }
}

/// Property tests: valid specs (the fixtures' and the demo's) mutated at random, by bytes, lines,
/// values and keys, either parse or fail with an error that names `file:line:col` inside the
/// text; `parse` never panics.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    const VALID: &[&str] = &[
        include_str!("demo.toml"),
        include_str!("../../fixtures/specs/single.toml"),
        include_str!("../../fixtures/specs/fleet.toml"),
        include_str!("../../fixtures/specs/hidden.toml"),
        include_str!("../../fixtures/specs/lock.toml"),
        include_str!("../../fixtures/specs/control.toml"),
        include_str!("../../fixtures/specs/arm64-6.1-max.toml"),
        include_str!("../../fixtures/specs/arm64-6.12-max.toml"),
        include_str!("../../fixtures/specs/arm64-6.12-neoverse-n1.toml"),
    ];

    /// Keys, values and bits of TOML that mutations insert: the spec's own words (so mutants get
    /// past the syntax into the rules) and some that are wrong.
    const KEYS: &[&str] = &[
        "name",
        "arch",
        "cross_check",
        "unknown_registers",
        "vm",
        "count",
        "vcpus",
        "memory_mib",
        "probe_repeats",
        "fault_after_passes",
        "cpu",
        "arm64",
        "after_run",
        "base",
        "hide",
        "action",
        "features",
        "field",
        "value",
        "vcpu",
        "id_registers",
        "hypercalls",
        "psci_version",
        "vcpu_count",
        "nmae",
        "-x",
        "\"quoted key\"",
        "a.b",
    ];
    const VALUES: &[&str] = &[
        "0",
        "1",
        "-1",
        "65",
        "4096",
        "100001",
        "9223372036854775807",
        "\"\"",
        "\"-x\"",
        "\"a b\"",
        "\"aarch64\"",
        "\"x86_64\"",
        "\"host\"",
        "\"hide\"",
        "\"set\"",
        "\"rewrite-identical\"",
        "[\"avx2\"]",
        "[\"avx512\"]",
        "[\"psci-0.2\", \"pmu-v3\"]",
        "[\"power-off\"]",
        "\"ID_AA64PFR0_EL1.CSV3\"",
        "{ \"ID_AA64ISAR0_EL1.AES\" = 16 }",
        "{ trng = 1 }",
        "\"1.0\"",
        "\"0.1\"",
        "true",
        "1.5",
        "[]",
        "{}",
        "[[1]]",
        "\"\\u00e9\"",
    ];
    const LINES: &[&str] = &[
        "[[vm]]",
        "[vm]",
        "[[vm.after_run]]",
        "[vm.arm64]",
        "[vm.cpu]",
        "[[vm]",
        "[",
        "=",
        "name = ",
        "\"unterminated",
        "# comment",
        "",
        "é = 1",
        "\t",
        "a = 1 = 2",
    ];

    #[derive(Clone, Debug)]
    enum Mutation {
        /// XOR one byte (the text is made UTF-8 again, lossily).
        FlipByte {
            at: usize,
            bits: u8,
        },
        /// Put any character somewhere.
        InsertChar {
            at: usize,
            c: char,
        },
        DeleteLine(usize),
        DuplicateLine(usize),
        /// Swap the values (right of `=`) of two lines.
        SwapValues(usize, usize),
        /// Give a line's key another value.
        SetValue {
            line: usize,
            value: usize,
        },
        /// Add `key = value` before a line.
        AddKey {
            line: usize,
            key: usize,
            value: usize,
        },
        /// Rename a line's key.
        RenameKey {
            line: usize,
            key: usize,
        },
        /// Add a line of TOML structure before a line.
        AddLine {
            line: usize,
            text: usize,
        },
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let i = || any::<prop::sample::Index>().prop_map(|i| i.index(1 << 16));
        prop_oneof![
            (i(), 1..=255u8).prop_map(|(at, bits)| Mutation::FlipByte { at, bits }),
            (i(), any::<char>()).prop_map(|(at, c)| Mutation::InsertChar { at, c }),
            i().prop_map(Mutation::DeleteLine),
            i().prop_map(Mutation::DuplicateLine),
            (i(), i()).prop_map(|(a, b)| Mutation::SwapValues(a, b)),
            (i(), i()).prop_map(|(line, value)| Mutation::SetValue { line, value }),
            (i(), i(), i()).prop_map(|(line, key, value)| Mutation::AddKey { line, key, value }),
            (i(), i()).prop_map(|(line, key)| Mutation::RenameKey { line, key }),
            (i(), i()).prop_map(|(line, text)| Mutation::AddLine { line, text }),
        ]
    }

    fn apply(text: &str, m: &Mutation) -> String {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let n = lines.len().max(1);
        let split = |line: &str| -> Option<(String, String)> {
            line.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        };
        match m {
            Mutation::FlipByte { at, bits } => {
                let mut bytes = text.as_bytes().to_vec();
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] ^= bits;
                }
                return String::from_utf8_lossy(&bytes).into_owned();
            }
            Mutation::InsertChar { at, c } => {
                let mut chars: Vec<char> = text.chars().collect();
                chars.insert(at % (chars.len() + 1), *c);
                return chars.into_iter().collect();
            }
            Mutation::DeleteLine(line) => {
                if !lines.is_empty() {
                    lines.remove(line % n);
                }
            }
            Mutation::DuplicateLine(line) => {
                if !lines.is_empty() {
                    let copy = lines[line % n].clone();
                    lines.insert(line % n, copy);
                }
            }
            Mutation::SwapValues(a, b) => {
                if let (Some((ka, va)), Some((kb, vb))) = (
                    lines.get(a % n).and_then(|l| split(l)),
                    lines.get(b % n).and_then(|l| split(l)),
                ) {
                    lines[a % n] = format!("{ka}={vb}");
                    lines[b % n] = format!("{kb}={va}");
                }
            }
            Mutation::SetValue { line, value } => {
                if let Some((k, _)) = lines.get(line % n).and_then(|l| split(l)) {
                    lines[line % n] = format!("{k}= {}", VALUES[value % VALUES.len()]);
                }
            }
            Mutation::AddKey { line, key, value } => {
                let at = line % (lines.len() + 1);
                lines.insert(
                    at,
                    format!(
                        "{} = {}",
                        KEYS[key % KEYS.len()],
                        VALUES[value % VALUES.len()]
                    ),
                );
            }
            Mutation::RenameKey { line, key } => {
                if let Some((_, v)) = lines.get(line % n).and_then(|l| split(l)) {
                    lines[line % n] = format!("{} ={v}", KEYS[key % KEYS.len()]);
                }
            }
            Mutation::AddLine { line, text } => {
                let at = line % (lines.len() + 1);
                lines.insert(at, LINES[text % LINES.len()].to_string());
            }
        }
        lines.join("\n") + "\n"
    }

    /// `Ok`, or an error whose text starts with `f.toml:LINE:COL: ` for a position in `text`.
    fn check(text: &str) -> Result<(), TestCaseError> {
        let Err(e) = parse(text, "f.toml") else {
            return Ok(());
        };
        let shown = e.to_string();
        let prefix = format!("f.toml:{}:{}: ", e.line, e.column);
        prop_assert!(shown.starts_with(&prefix), "{shown}");
        prop_assert!(!e.message.trim().is_empty(), "{shown}");
        let lines: Vec<&str> = text.split('\n').collect();
        prop_assert!(e.line >= 1 && e.line <= lines.len(), "{shown}\n{text}");
        prop_assert!(
            e.column >= 1 && e.column <= lines[e.line - 1].chars().count() + 1,
            "{shown}\n{text}"
        );
        Ok(())
    }

    #[test]
    fn the_valid_specs_parse() {
        for text in VALID {
            parse(text, "f.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn mutated_specs_parse_or_name_a_position(
            spec in 0..VALID.len(),
            mutations in prop::collection::vec(mutation(), 1..4),
        ) {
            let mut text = VALID[spec].to_string();
            for m in &mutations {
                text = apply(&text, m);
            }
            check(&text)?;
        }

        #[test]
        fn arbitrary_text_parses_or_names_a_position(text in "\\PC{0,200}") {
            check(&text)?;
        }
    }
}
