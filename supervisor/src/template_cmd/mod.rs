//! The CPU-template commands: reading a template file ([`load_template`]), `vmfleet template
//! show` (the template resolved: names in the catalog's spelling, every bitmap at full width, and
//! with `--fingerprint`, what it becomes on that host), `vmfleet check TEMPLATE FP...`
//! ([`check`]) and `vmfleet baseline FP...` ([`baseline`]).
//!
//! The rules live in `vcpu::model::template` (the format) and `vcpu::model::engine::template`
//! (can a host give it): these commands read files and print.

pub mod baseline;
pub mod check;

use crate::common::{emit, emit_json};
use crate::exit::{Status, StatusExt};
use crate::model_cmd::{ModelHost, load_host};
use anyhow::{Context, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use vcpu::GuestArch;
use vcpu::model::engine::template::{TemplateCheck, TemplateCheckError, check_template};
use vcpu::model::template::CpuTemplate;

/// The schema of `template show --json`.
pub const SHOW_SCHEMA: &str = "vmfleet.template-show.v1";

/// Read the template at `path` (its stem names it when it has no `name`). Exit status 4
/// (bad_input) for an unreadable or invalid file.
pub fn load_template(path: &Path) -> Result<CpuTemplate> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading template {}", path.display()))
        .or_status(Status::BadInput)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "template".into());
    CpuTemplate::parse(&text, &path.display().to_string(), &stem)
        .map_err(anyhow::Error::new)
        .or_status(Status::BadInput)
}

/// Whether the host `host` can run `template`, by the rule engine (what `check`, `baseline`
/// and `nfd` all ask).
pub fn template_verdict(
    template: &CpuTemplate,
    host: &ModelHost,
) -> Result<TemplateCheck, TemplateCheckError> {
    check_template(template, &host.facts)
}

/// `template show --json`.
#[derive(Serialize)]
struct ShowDocument {
    schema: &'static str,
    name: String,
    arch: String,
    description: Option<String>,
    /// The template as TOML, resolved (what `to_toml` writes).
    toml: String,
    /// x86: the named features, `true` shown, `false` hidden.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    features: Vec<FeatureLine>,
    /// x86: the raw bitmaps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cpuid: Vec<CpuidLine>,
    /// With `--fingerprint`: what the template becomes on that host.
    #[serde(skip_serializing_if = "Option::is_none")]
    on_host: Option<check::HostLine>,
}

#[derive(Serialize)]
struct FeatureLine {
    name: String,
    position: String,
    on: bool,
}

#[derive(Serialize)]
struct CpuidLine {
    register: String,
    bits: String,
}

/// `vmfleet template show TEMPLATE [--fingerprint FP] [--json]`.
pub fn show(path: &Path, fingerprint: Option<&Path>, json: bool) -> Result<Status> {
    let template = load_template(path)?;
    for unsupported in template.firecracker.unsupported() {
        crate::note!("warning: {unsupported}");
    }
    let on_host = match fingerprint {
        Some(fp) => {
            let host = load_host(fp)?;
            let verdict = template_verdict(&template, &host)
                .map_err(anyhow::Error::new)
                .or_status(Status::BadInput)?;
            Some(check::host_line(fp, &host, &verdict))
        }
        None => None,
    };
    let features: Vec<FeatureLine> = template
        .x86_features()
        .into_iter()
        .filter_map(|(name, on)| {
            vcpu::model::x86::catalog::by_name(&name).map(|f| FeatureLine {
                position: f.position(),
                name,
                on,
            })
        })
        .collect();
    let cpuid: Vec<CpuidLine> = template
        .x86
        .cpuid
        .iter()
        .map(|b| CpuidLine {
            register: b.position(),
            bits: b.bits.to_string(),
        })
        .collect();
    let doc = ShowDocument {
        schema: SHOW_SCHEMA,
        name: template.name.clone(),
        arch: template.arch.to_string(),
        description: template.description.clone(),
        toml: template.to_toml(),
        features,
        cpuid,
        on_host,
    };
    if json {
        emit_json(&doc)?;
        return Ok(Status::Success);
    }
    let mut out = doc.toml.clone();
    if template.arch == GuestArch::X86_64 && !doc.features.is_empty() {
        let _ = writeln!(out, "\n# features, by position:");
        for f in &doc.features {
            let _ = writeln!(
                out,
                "#   {} {} ({})",
                if f.on { "+" } else { "-" },
                f.name,
                f.position
            );
        }
    }
    if let Some(host) = &doc.on_host {
        let _ = writeln!(out);
        check::host_text(&mut out, host, "# ");
    }
    emit(&out)?;
    Ok(Status::Success)
}
