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
//! JSON (`--json`, schema `vmfleet.migrate.v1`, supervisor/schemas/migrate.v1.schema.json).
//! Exit status: 0 when the guest carries over, 7 (refused) when something blocks it, 4
//! (bad_input) for an unreadable fingerprint or two that cannot be compared.

use crate::common::{emit, emit_json};
use crate::exit::{Status, StatusExt};
use crate::model_cmd::load_host;
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use vcpu::model::engine::migrate::{Carryover, CarryoverProblem, arm64_carryover};

/// The schema of `check --migrate --json`.
pub const MIGRATE_SCHEMA: &str = "vmfleet.migrate.v1";

/// The document `--json` prints.
#[derive(Debug, Serialize)]
struct MigrateReport {
    schema: &'static str,
    from: HostLine,
    to: HostLine,
    /// Whether nothing blocks the move.
    carries_over: bool,
    /// Every register that does not carry over as it is.
    registers: Vec<RegisterLine>,
}

#[derive(Debug, Serialize)]
struct HostLine {
    fingerprint: String,
    kernel: String,
}

#[derive(Debug, Serialize)]
struct RegisterLine {
    id: String,
    register: String,
    /// `gone`, `new` or `refused`.
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
}

/// `vmfleet check` with its arguments.
pub fn run(args: &crate::cli::CheckArgs) -> Result<Status> {
    match args.fingerprints.as_slice() {
        [from, to] => migrate(from, to, args.json),
        other => Err(anyhow::anyhow!(
            "check --migrate takes two fingerprints, FROM and TO; {} were given",
            other.len()
        ))
        .or_status(Status::Usage),
    }
}

/// `vmfleet check --migrate FROM TO [--json]`.
pub fn migrate(from: &Path, to: &Path, json: bool) -> Result<Status> {
    let source = load_host(from)?;
    let destination = load_host(to)?;
    let found = arm64_carryover(&source.facts, &destination.facts).or_status(Status::BadInput)?;
    let lines: Vec<RegisterLine> = found.iter().map(line).collect();
    let report = MigrateReport {
        schema: MIGRATE_SCHEMA,
        from: HostLine {
            fingerprint: from.display().to_string(),
            kernel: source.host.kernel_release.clone(),
        },
        to: HostLine {
            fingerprint: to.display().to_string(),
            kernel: destination.host.kernel_release.clone(),
        },
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

/// One register's line: what happens to it, and whether it blocks the move.
fn line(c: &Carryover) -> RegisterLine {
    let base =
        |problem, blocks, value: Option<u64>, dest: Option<u64>, detail: String| RegisterLine {
            id: format!("{:#018x}", c.id),
            register: c.register.clone(),
            problem,
            blocks,
            value: value.map(hex),
            destination_value: dest.map(hex),
            detail,
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
            base("gone", !harmless, *value, None, detail)
        }
        CarryoverProblem::New { value } => base(
            "new",
            false,
            None,
            *value,
            "only the destination lists it: the guest meets it after the move, with the \
             destination's value"
                .to_string(),
        ),
        CarryoverProblem::Refused {
            value,
            limit,
            errno,
            why,
        } => base(
            "refused",
            true,
            Some(*value),
            *limit,
            format!("the destination's kernel refuses the guest's value ({errno}): {why}"),
        ),
    }
}

fn text(report: &MigrateReport) -> String {
    let mut out = String::new();
    let blocking = report.registers.iter().filter(|l| l.blocks).count();
    let _ = writeln!(
        out,
        "migrate {} ({}) -> {} ({}): {}",
        report.from.fingerprint,
        report.from.kernel,
        report.to.fingerprint,
        report.to.kernel,
        if report.carries_over {
            "the guest carries over".to_string()
        } else {
            format!("{blocking} register(s) block the move")
        }
    );
    for l in &report.registers {
        let value = match (&l.value, &l.destination_value) {
            (Some(v), Some(d)) => format!(" = {v} (destination {d})"),
            (Some(v), None) => format!(" = {v}"),
            (None, Some(d)) => format!(" (destination {d})"),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "  {} {:<8} {}{value}: {}",
            if l.blocks { "x" } else { "-" },
            l.problem,
            l.register,
            l.detail
        );
    }
    out
}
