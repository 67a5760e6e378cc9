//! `vmfleet baseline FP...`: the most capable CPU template every given host can run
//! (`vcpu::model::engine::baseline`), from fingerprints alone, with the hosts that limit each
//! choice and what no value can make the same everywhere.
//!
//! Without `--json` it prints the template (or writes it to `--out`) with the findings as
//! comments on top, so `vmfleet baseline a.json b.json > base.toml` is a template `vmfleet check`
//! accepts for those hosts. `--json` (schema `vmfleet.baseline.v1`,
//! supervisor/schemas/baseline.v1.schema.json) carries the same, the template as TOML text.
//! Exit status: 0 a baseline was made, 4 (bad_input) an unreadable fingerprint, hosts of both
//! architectures, or a host without what a baseline needs.

use crate::common::{emit, emit_json};
use crate::exit::{Status, StatusExt};
use crate::model_cmd::{ModelHost, load_host};
use anyhow::{Context, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use vcpu::model::engine::HostFacts;
use vcpu::model::engine::baseline::{Baseline, Limit, baseline};

/// The schema of `baseline --json`.
pub const BASELINE_SCHEMA: &str = "vmfleet.baseline.v1";

#[derive(Serialize)]
struct BaselineReport {
    schema: &'static str,
    hosts: Vec<HostLine>,
    name: String,
    arch: String,
    /// The template, as the TOML file `--out` writes.
    template: String,
    /// Choices some host could give more of, and the hosts that limit them.
    limited: Vec<LimitLine>,
    /// What no value makes the same on every host (left to each host).
    not_uniform: Vec<LimitLine>,
    /// Registers or leaves only some hosts have (left out).
    only_some: Vec<LimitLine>,
    /// Where the template was written, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    written_to: Option<String>,
}

#[derive(Serialize)]
struct HostLine {
    fingerprint: String,
    kernel: String,
    /// What the fingerprint lacks (a Firecracker fingerprint), where the rules took the
    /// conservative side.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partial: Vec<String>,
}

#[derive(Serialize)]
struct LimitLine {
    what: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    rule: String,
    /// The fingerprints that limit it (or disagree, or have it).
    hosts: Vec<String>,
}

fn limit_lines(limits: &[Limit], paths: &[PathBuf]) -> Vec<LimitLine> {
    limits
        .iter()
        .map(|l| LimitLine {
            what: l.what.clone(),
            value: l.value.map(|v| format!("{v:#x}")),
            rule: l.rule.clone(),
            hosts: l
                .hosts
                .iter()
                .filter_map(|&i| paths.get(i))
                .map(|p| p.display().to_string())
                .collect(),
        })
        .collect()
}

/// The baseline of the hosts `paths` name, called `name`, from their loaded facts.
pub fn make(hosts: &[ModelHost], name: &str) -> Result<Baseline> {
    let facts: Vec<&HostFacts> = hosts.iter().map(|h| &h.facts).collect();
    baseline(&facts, name)
        .map_err(anyhow::Error::new)
        .or_status(Status::BadInput)
}

/// `vmfleet baseline FP... [--name NAME] [--out FILE] [--json]`.
pub fn run(paths: &[PathBuf], name: &str, out: Option<&Path>, json: bool) -> Result<Status> {
    let hosts: Vec<ModelHost> = paths.iter().map(|p| load_host(p)).collect::<Result<_>>()?;
    // The engine names hosts by index; people know them by their fingerprint's path.
    let name_hosts = |text: String| {
        paths.iter().enumerate().fold(text, |t, (i, p)| {
            t.replace(&format!("host {i} "), &format!("{} ", p.display()))
        })
    };
    let found = make(&hosts, name)
        .map_err(|e| anyhow::anyhow!(name_hosts(format!("{e:#}"))))
        .or_status(Status::BadInput)?;
    let mut report = BaselineReport {
        schema: BASELINE_SCHEMA,
        hosts: paths
            .iter()
            .zip(&hosts)
            .map(|(p, h)| HostLine {
                fingerprint: p.display().to_string(),
                kernel: h.host.kernel_release.clone(),
                partial: h.partial.clone(),
            })
            .collect(),
        name: found.template.name.clone(),
        arch: found.template.arch.to_string(),
        template: String::new(),
        limited: limit_lines(&found.limited, paths),
        not_uniform: limit_lines(&found.not_uniform, paths),
        only_some: limit_lines(&found.only_some, paths),
        written_to: out.map(|p| p.display().to_string()),
    };
    for line in report.not_uniform.iter_mut() {
        line.rule = name_hosts(std::mem::take(&mut line.rule));
    }
    report.template = format!("{}{}", comments(&report), found.template.to_toml());
    if let Some(path) = out {
        std::fs::write(path, &report.template)
            .with_context(|| format!("writing the template to {}", path.display()))
            .or_status(Status::Error)?;
    }
    if json {
        emit_json(&report)?;
    } else if out.is_some() {
        emit(&comments(&report).replace("# ", ""))?;
    } else {
        emit(&report.template)?;
    }
    Ok(Status::Success)
}

/// The findings, as TOML comments.
fn comments(report: &BaselineReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# baseline {} ({}) of {} host(s):",
        report.name,
        report.arch,
        report.hosts.len()
    );
    for h in &report.hosts {
        let _ = writeln!(out, "#   {} ({})", h.fingerprint, h.kernel);
        for lack in &h.partial {
            let _ = writeln!(out, "#     partial: {lack}");
        }
    }
    let sections = [
        ("limited by", &report.limited),
        ("left to each host", &report.not_uniform),
        ("only on some hosts, left out", &report.only_some),
    ];
    for (title, lines) in sections {
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# {title} ({}):", lines.len());
        for l in lines.iter() {
            let value = l
                .value
                .as_ref()
                .map(|v| format!(" = {v}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "#   {}{value}: {} [{}]",
                l.what,
                l.rule,
                l.hosts.join(", ")
            );
        }
    }
    out
}
