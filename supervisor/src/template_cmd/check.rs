//! `vmfleet check TEMPLATE FP...`: per host, every bit or field the host cannot give, with the
//! value the template asks for, the host's limit, the rule and the name, asked of the rule engine
//! (`vcpu::model::engine::template`), so its answer is the kernel's. From fingerprints alone (no
//! /dev/kvm).
//!
//! JSON (`--json`, schema `vmfleet.check.v1`, supervisor/schemas/check.v1.schema.json). Exit
//! status: 0 every host can run the template, 7 (refused) one cannot, 4 (bad_input) an unreadable
//! template or fingerprint, or a fingerprint of the other architecture.

use super::{load_template, template_verdict};
use crate::common::{emit, emit_json};
use crate::exit::{Status, StatusExt};
use crate::model_cmd::{ModelHost, load_host};
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use vcpu::model::engine::template::{TemplateCheck, TemplateProblem};

/// The schema of `check TEMPLATE FP... --json`.
pub const CHECK_SCHEMA: &str = "vmfleet.check.v1";

/// The document `--json` prints.
#[derive(Debug, Serialize)]
struct CheckReport {
    schema: &'static str,
    template: TemplateLine,
    /// Whether every host can run it.
    runs_everywhere: bool,
    hosts: Vec<HostLine>,
}

#[derive(Debug, Serialize)]
struct TemplateLine {
    path: String,
    name: String,
    arch: String,
}

/// One host's answer.
#[derive(Debug, Serialize)]
pub struct HostLine {
    /// The fingerprint's path.
    pub fingerprint: String,
    /// Its kernel.
    pub kernel: String,
    /// Whether it can run the template.
    pub runs: bool,
    /// What it cannot give.
    pub problems: Vec<ProblemLine>,
    /// What is worth knowing and blocks nothing.
    pub notes: Vec<String>,
}

/// One bit or field a host cannot give.
#[derive(Debug, Serialize)]
pub struct ProblemLine {
    /// The bit, field or register, by name.
    pub what: String,
    /// `unsupported`, `rewritten`, `refused`, `unknown` or `invalid`.
    pub kind: &'static str,
    /// The value asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// The host's limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// The rule, in words.
    pub rule: String,
}

fn problem_line(p: &TemplateProblem) -> ProblemLine {
    ProblemLine {
        what: p.what.clone(),
        kind: p.kind.name(),
        requested: p.requested.map(|v| format!("{v:#x}")),
        limit: p.limit.map(|v| format!("{v:#x}")),
        rule: p.rule.clone(),
    }
}

/// A host's answer as a report line.
pub fn host_line(path: &Path, host: &ModelHost, verdict: &TemplateCheck) -> HostLine {
    HostLine {
        fingerprint: path.display().to_string(),
        kernel: host.host.kernel_release.clone(),
        runs: verdict.runs(),
        problems: verdict.problems.iter().map(problem_line).collect(),
        notes: host
            .partial
            .iter()
            .map(|lack| format!("the fingerprint is partial: {lack}"))
            .chain(verdict.notes.iter().cloned())
            .collect(),
    }
}

/// A host's answer for people, each line after `prefix`: the verdict, then one line per problem
/// (first the thing, limit → requested, then the rule), then the notes.
pub fn host_text(out: &mut String, host: &HostLine, prefix: &str) {
    let verdict = if host.runs {
        "runs it".to_string()
    } else {
        format!("cannot run it ({} problem(s))", host.problems.len())
    };
    let _ = writeln!(
        out,
        "{prefix}{} ({}): {verdict}",
        host.fingerprint, host.kernel
    );
    for p in &host.problems {
        let values = match (&p.limit, &p.requested) {
            (Some(limit), Some(requested)) => format!(" {limit} → {requested}"),
            (None, Some(requested)) => format!(" → {requested}"),
            _ => String::new(),
        };
        let _ = writeln!(out, "{prefix}  x {}{values} {}: {}", p.what, p.kind, p.rule);
    }
    for note in &host.notes {
        let _ = writeln!(out, "{prefix}  note: {note}");
    }
}

/// `vmfleet check TEMPLATE FP... [--json]`.
pub fn run(template_path: &Path, fingerprints: &[PathBuf], json: bool) -> Result<Status> {
    let template = load_template(template_path)?;
    let mut hosts = Vec::with_capacity(fingerprints.len());
    for path in fingerprints {
        let host = load_host(path)?;
        let verdict = template_verdict(&template, &host)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            .or_status(Status::BadInput)?;
        hosts.push(host_line(path, &host, &verdict));
    }
    let report = CheckReport {
        schema: CHECK_SCHEMA,
        template: TemplateLine {
            path: template_path.display().to_string(),
            name: template.name.clone(),
            arch: template.arch.to_string(),
        },
        runs_everywhere: hosts.iter().all(|h| h.runs),
        hosts,
    };
    if json {
        emit_json(&report)?;
    } else {
        let mut out = String::new();
        let runs = report.hosts.iter().filter(|h| h.runs).count();
        let _ = writeln!(
            out,
            "check {} ({}): {runs} of {} host(s) can run it",
            report.template.name,
            report.template.arch,
            report.hosts.len()
        );
        for host in &report.hosts {
            host_text(&mut out, host, "  ");
        }
        emit(&out)?;
    }
    Ok(if report.runs_everywhere {
        Status::Success
    } else {
        Status::Refused
    })
}
