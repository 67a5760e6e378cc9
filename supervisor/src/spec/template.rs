//! A VM's `template = "file.toml"`: its CPU model from a CPU template
//! ([`vcpu::model::template::CpuTemplate`]), in place of a `cpu` or `arm64` table.
//!
//! Parsing stays pure (the same text always gives the same spec), so a spec does not read files:
//! the text of every template a spec names travels inside it, in a top-level `[templates]` table
//! (`"file.toml" = "…the template's text…"`), which [`embed_templates`] appends when a spec is
//! read from a file. A trace keeps that text, so its replays (anywhere, without the template
//! files) run the very models that ran. A spec may also write the table itself.

use super::SpecError;
use super::position::Source;
use super::raw::{RawFleet, RawVm};
use super::top::TopLevel;
use std::collections::BTreeMap;
use std::path::Path;
use toml::de::{DeTable, DeValue};
use vcpu::GuestArch;
use vcpu::model::template::CpuTemplate;

/// The template a `[[vm]]` entry names, read from the spec's `[templates]` table and checked
/// against the fleet's architecture; `None` without `template`.
pub(super) fn template(
    vm: &RawVm,
    raw: &RawFleet,
    fleet: &TopLevel,
    src: &Source<'_>,
) -> Result<Option<CpuTemplate>, SpecError> {
    let Some(name) = &vm.template else {
        return Ok(None);
    };
    if vm.cpu.is_some() || vm.arm64.is_some() {
        return Err(src.at(
            Some(name.span()),
            "`template` gives the VM its whole CPU model: drop its `cpu` or `arm64` table, or \
             the template"
                .into(),
        ));
    }
    let Some(text) = raw.templates.get(name.get_ref()) else {
        return Err(src.at(
            Some(name.span()),
            format!(
                "template `{}` is not in the spec's [templates] table: a spec read from a file \
                 gets the text of each template it names (relative to the spec's directory); a \
                 spec sent as text must carry it there",
                name.get_ref()
            ),
        ));
    };
    let stem = Path::new(name.get_ref())
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.get_ref().clone());
    let template = CpuTemplate::parse(text, name.get_ref(), &stem)
        .map_err(|e| src.at(Some(name.span()), format!("template: {e}")))?;
    if template.arch != fleet.arch {
        return Err(src.at(
            Some(name.span()),
            format!(
                "template `{}` is for {} guests and the fleet runs {} ones",
                template.name, template.arch, fleet.arch
            ),
        ));
    }
    // A template imported from Firecracker may carry MSR bitmaps: vmfleet does not model MSRs.
    template
        .refuse_unmodelled()
        .map_err(|e| src.at(Some(name.span()), e))?;
    if template.arch == GuestArch::Aarch64 {
        template.arm64.check().map_err(|e| {
            src.at(
                Some(name.span()),
                format!("template `{}`: {e}", template.name),
            )
        })?;
    }
    Ok(Some(template))
}

/// Why a spec's templates could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The spec is not TOML (the parse that follows names the place).
    #[error("{0}")]
    Spec(#[from] SpecError),
    /// A file could not be read.
    #[error("{spec}: reading {name} ({path}): {source}")]
    Read {
        /// The spec's name.
        spec: String,
        /// The template as the spec names it.
        name: String,
        /// Where it was looked for.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
}

/// `text` with the text of every template its VMs name appended in a `[templates]` table, each
/// read relative to `base_dir` (the spec's directory). A spec that names none, or has its own
/// `[templates]` table already, is returned as it is.
pub fn embed_templates(
    text: &str,
    source_name: &str,
    base_dir: &Path,
) -> Result<String, EmbedError> {
    let src = Source {
        text,
        name: source_name,
    };
    let doc =
        DeTable::parse(text).map_err(|e| src.at(e.span(), super::position::toml_message(&e)))?;
    let doc = doc.get_ref();
    if doc.contains_key("templates") {
        return Ok(text.to_string());
    }
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    if let Some(DeValue::Array(vms)) = doc.get("vm").map(|v| v.get_ref()) {
        for vm in vms {
            if let DeValue::Table(vm) = vm.get_ref() {
                if let Some(DeValue::String(name)) = vm.get("template").map(|v| v.get_ref()) {
                    names.insert(name.to_string(), String::new());
                }
            }
        }
    }
    if names.is_empty() {
        return Ok(text.to_string());
    }
    for (name, body) in names.iter_mut() {
        let path = base_dir.join(name);
        *body = std::fs::read_to_string(&path).map_err(|source| EmbedError::Read {
            spec: source_name.to_string(),
            name: format!("template `{name}`"),
            path: path.display().to_string(),
            source,
        })?;
    }
    let mut out = text.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(
        "\n# The templates this spec names, as they were when it was read (vmfleet adds this).\n\
         [templates]\n",
    );
    for (name, body) in &names {
        out.push_str(&format!(
            "{} = {}\n",
            toml::Value::String(name.clone()),
            toml::Value::String(body.clone())
        ));
    }
    Ok(out)
}

/// Read the spec file at `path` and embed the templates it names ([`embed_templates`], relative
/// to the file's directory).
pub fn read_spec_file(path: &Path) -> Result<String, EmbedError> {
    let text = std::fs::read_to_string(path).map_err(|source| EmbedError::Read {
        spec: path.display().to_string(),
        name: "the spec itself".into(),
        path: path.display().to_string(),
        source,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    embed_templates(&text, &path.display().to_string(), dir)
}
