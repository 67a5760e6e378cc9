//! `vmfleet check --migrate FROM TO`: can a guest started on host FROM move to host TO, also to
//! an older kernel? From two host fingerprints alone (no /dev/kvm), register by register, by the
//! rule engine ([`vcpu::model::engine::migrate`]), so the answer is the destination kernel's.
//!
//! Each register that does not carry over is named with what happens to it: one FROM lists and
//! TO does not (a restore gets `ENOENT`; harmless only when the guest's value is 0, "not
//! implemented"), one TO lists and FROM did not (the guest meets it: a note, not a blocker), one
//! whose value TO's kernel refuses (the field, the values and the rule). The guest's model is
//! FROM's default one for a feature set both fingerprints measured (CPU templates will bring
//! others).
//!
//! A partial fingerprint (Firecracker's) is compared by the conservative side of each rule it
//! lacks the facts for; what it lacks is printed first (`note:` lines; in JSON, each host's
//! `partial`). Without a register list, which registers a host has is judged from the registers
//! whose values it holds.
//!
//! JSON (`--json`, schema `vmfleet.migrate.v1`, supervisor/schemas/migrate.v1.schema.json).
//! Exit status: 0 when the guest carries over, 7 (refused) when something blocks it, 4
//! (bad_input) for an unreadable fingerprint or two that cannot be compared.
//!
//! x86: KVM takes any CPUID table, so what blocks a move is a named feature the guest sees on
//! FROM that a guest on TO does not get (supported CPUID with each host's measured rewrites).

use crate::common::{emit, emit_json};
use crate::exit::{Status, StatusExt};
use crate::model_cmd::load_host;
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use vcpu::GuestArch;
use vcpu::model::arm64::{FirmwareRegister, UnknownRegisterPolicy};
use vcpu::model::engine::migrate::{
    Carryover, CarryoverProblem, arm64_carryover, x86_lost_features,
};
use vcpu::model::x86::catalog::Feature;

/// The schema of `check --migrate --json`.
pub const MIGRATE_SCHEMA: &str = "vmfleet.migrate.v1";

/// The document `--json` prints.
#[derive(Debug, Serialize)]
struct MigrateReport {
    schema: &'static str,
    from: HostLine,
    to: HostLine,
    /// The template the guest's model comes from (`--template`), by name; else FROM's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    /// Whether nothing blocks the move.
    carries_over: bool,
    /// Every register that does not carry over as it is.
    registers: Vec<RegisterLine>,
}

#[derive(Debug, Serialize)]
struct HostLine {
    fingerprint: String,
    kernel: String,
    /// What the fingerprint lacks and the rule's fallback (a Firecracker fingerprint), one
    /// sentence each; absent for a complete one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partial: Vec<String>,
}

#[derive(Debug, Serialize)]
struct RegisterLine {
    /// arm64: the KVM register id; x86: the feature's CPUID bit (`7.0.ebx[5]`).
    id: String,
    register: String,
    /// `gone`, `new`, `refused` (arm64) or `lost` (x86).
    problem: &'static str,
    /// Whether it blocks the move.
    blocks: bool,
    /// The guest's value (FROM's), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    /// TO's value, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    destination_value: Option<String>,
    /// What happens, in words.
    detail: String,
    /// A hypercall bitmap: the services concerned (gone or refused: those the guest loses; new:
    /// those the destination offers), by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    services: Option<Vec<String>>,
    /// A firmware register or bitmap only TO lists: what happens under each unknown-register
    /// policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<PolicyLine>,
}

#[derive(Debug, Serialize)]
struct PolicyLine {
    in_effect: String,
    known: bool,
    clear: String,
    keep_host: String,
    refuse: String,
}

/// The services of bitmap register `id` whose bits are set in `bits`, by name.
fn services(id: u64, bits: u64) -> Option<Vec<String>> {
    let register = FirmwareRegister::from_id(id).filter(|r| r.is_bitmap())?;
    Some(vcpu::model::arm64::firmware::service_names(register, bits))
}

/// `vmfleet check` with its arguments: `--migrate FROM TO`, or `TEMPLATE FP...`.
pub fn run(args: &crate::cli::CheckArgs) -> Result<Status> {
    if !args.migrate {
        let (template, fingerprints) = args
            .files
            .split_first()
            .ok_or_else(|| anyhow::anyhow!("check takes a template and fingerprints"))
            .or_status(Status::Usage)?;
        return crate::template_cmd::check::run(template, fingerprints, args.json);
    }
    match args.files.as_slice() {
        [from, to] => migrate(from, to, args.template.as_deref(), args.json),
        other => Err(anyhow::anyhow!(
            "check --migrate takes two fingerprints, FROM and TO; {} were given",
            other.len()
        ))
        .or_status(Status::Usage),
    }
}

/// `vmfleet check --migrate FROM TO [--template T] [--json]`.
pub fn migrate(from: &Path, to: &Path, template: Option<&Path>, json: bool) -> Result<Status> {
    let source = load_host(from)?;
    let destination = load_host(to)?;
    let template = template
        .map(crate::template_cmd::load_template)
        .transpose()?;
    if let Some(t) = &template {
        if t.arch != source.facts.arch {
            return Err(anyhow::anyhow!(
                "template {} is for {} guests and {} runs {} ones",
                t.name,
                t.arch,
                from.display(),
                source.facts.arch
            ))
            .or_status(Status::BadInput);
        }
    }
    let template = template.as_ref();
    let lines: Vec<RegisterLine> = match source.facts.arch {
        GuestArch::Aarch64 => arm64_carryover(&source.facts, &destination.facts, template)
            .or_status(Status::BadInput)?
            .iter()
            .map(|c| {
                line(
                    c,
                    source.facts.arm64.registers_from_values,
                    destination.facts.arm64.registers_from_values,
                )
            })
            .collect(),
        GuestArch::X86_64 => x86_lost_features(&source.facts, &destination.facts, template)
            .or_status(Status::BadInput)?
            .into_iter()
            .map(lost)
            .collect(),
    };
    let report = MigrateReport {
        schema: MIGRATE_SCHEMA,
        from: HostLine {
            fingerprint: from.display().to_string(),
            kernel: source.host.kernel_release.clone(),
            partial: source.partial.clone(),
        },
        to: HostLine {
            fingerprint: to.display().to_string(),
            kernel: destination.host.kernel_release.clone(),
            partial: destination.partial.clone(),
        },
        template: template.map(|t| t.name.clone()),
        carries_over: !lines.iter().any(|l| l.blocks),
        registers: lines,
    };
    if json {
        emit_json(&report)?;
    } else {
        emit(&text(&report))?;
    }
    Ok(if report.carries_over {
        Status::Success
    } else {
        Status::Refused
    })
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

/// One register's line: what happens to it, and whether it blocks the move. A side whose
/// register list is unknown (`*_unlisted`: judged from the registers its fingerprint holds values
/// for) is said so in the words.
fn line(c: &Carryover, from_unlisted: bool, to_unlisted: bool) -> RegisterLine {
    let unknown = |which: &str| {
        format!(
            " ({which}'s register list is unknown: judged from the registers its fingerprint \
             holds values for)"
        )
    };
    let base =
        |problem, blocks, value: Option<u64>, dest: Option<u64>, detail: String| RegisterLine {
            id: format!("{:#018x}", c.id),
            register: c.register.clone(),
            problem,
            blocks,
            value: value.map(hex),
            destination_value: dest.map(hex),
            detail,
            services: None,
            policy: None,
        };
    match &c.problem {
        CarryoverProblem::Gone { value } => {
            let harmless = *value == Some(0);
            let detail = if harmless {
                "the destination does not list it; the guest's value is 0, so dropping it takes \
                 nothing from the guest"
                    .to_string()
            } else {
                "the destination does not list it: restoring it gets ENOENT, and dropping it takes \
                 it from the guest"
                    .to_string()
            };
            let detail = if to_unlisted {
                detail + &unknown("the destination")
            } else {
                detail
            };
            RegisterLine {
                services: value.and_then(|v| services(c.id, v)),
                ..base("gone", !harmless, *value, None, detail)
            }
        }
        CarryoverProblem::New { value } => {
            let policy = c.policy.as_ref();
            let detail = match policy {
                Some(p) => format!(
                    "only the destination lists it; under unknown_registers = \"{}\": {}",
                    p.in_effect,
                    match p.in_effect {
                        UnknownRegisterPolicy::Clear => &p.clear,
                        UnknownRegisterPolicy::KeepHost => &p.keep_host,
                        UnknownRegisterPolicy::Refuse => &p.refuse,
                    }
                ),
                None => "only the destination lists it: the guest meets it after the move, with \
                         the destination's value"
                    .to_string(),
            };
            let detail = if from_unlisted {
                detail + &unknown("the source")
            } else {
                detail
            };
            RegisterLine {
                services: value.and_then(|v| services(c.id, v)),
                policy: policy.map(|p| PolicyLine {
                    in_effect: p.in_effect.to_string(),
                    known: p.known,
                    clear: p.clear.clone(),
                    keep_host: p.keep_host.clone(),
                    refuse: p.refuse.clone(),
                }),
                ..base(
                    "new",
                    policy.is_some_and(|p| p.blocks),
                    None,
                    *value,
                    detail,
                )
            }
        }
        CarryoverProblem::Refused {
            value,
            limit,
            errno,
            why,
        } => RegisterLine {
            services: services(c.id, value & !limit.unwrap_or(0)),
            ..base(
                "refused",
                true,
                Some(*value),
                *limit,
                format!("the destination's kernel refuses the guest's value ({errno}): {why}"),
            )
        },
    }
}

/// An x86 feature the guest has on the source and the destination cannot give.
fn lost(feature: &'static Feature) -> RegisterLine {
    RegisterLine {
        id: feature.position(),
        register: feature.name.to_string(),
        problem: "lost",
        blocks: true,
        value: None,
        destination_value: None,
        detail: format!(
            "the guest sees {} ({}) on the source, and a guest on the destination does not get \
             it (its supported CPUID with its host's rewrites): using it there would fault",
            feature.name,
            feature.position()
        ),
        services: None,
        policy: None,
    }
}

fn text(report: &MigrateReport) -> String {
    let mut out = String::new();
    let blocking = report.registers.iter().filter(|l| l.blocks).count();
    let _ = writeln!(
        out,
        "migrate {} ({}) -> {} ({}){}: {}",
        report.from.fingerprint,
        report.from.kernel,
        report.to.fingerprint,
        report.to.kernel,
        report
            .template
            .as_ref()
            .map(|t| format!(" with template {t}"))
            .unwrap_or_default(),
        if report.carries_over {
            "the guest carries over".to_string()
        } else {
            let what = if report.registers.iter().any(|l| l.problem == "lost") {
                "feature(s)"
            } else {
                "register(s)"
            };
            format!("{blocking} {what} block the move")
        }
    );
    for host in [&report.from, &report.to] {
        for note in &host.partial {
            let _ = writeln!(out, "note: {}: {note}", host.fingerprint);
        }
    }
    for l in &report.registers {
        let value = match (&l.value, &l.destination_value) {
            (Some(v), Some(d)) => format!(" = {v} (destination {d})"),
            (Some(v), None) => format!(" = {v}"),
            (None, Some(d)) => format!(" (destination {d})"),
            (None, None) => String::new(),
        };
        let services = match &l.services {
            Some(names) if !names.is_empty() => format!(" [services: {}]", names.join(", ")),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {} {:<8} {}{value}{services}: {}",
            if l.blocks { "x" } else { "-" },
            l.problem,
            l.register,
            l.detail
        );
        if let Some(p) = &l.policy {
            if !p.known {
                let _ = writeln!(
                    out,
                    "      clear: {}; keep-host: {}; refuse: {}",
                    p.clear, p.keep_host, p.refuse
                );
            }
        }
    }
    out
}
