//! `vmfleet template import-firecracker FILE.json [-o OUT.toml]` and `vmfleet template
//! export-firecracker TEMPLATE.toml [-o OUT.json]`: the conversions of [`super::convert`] as
//! commands. The result goes to stdout, or to OUT (an existing file is refused without
//! `--force`); each warning (an MSR vmfleet does not model, what Firecracker cannot express) is
//! one `warning:` line on stderr. Exit status: 0, 4 (bad_input) for an unreadable or malformed
//! input, 10 (error) for an output that cannot be written or exists.

use super::convert::{export, import};
use super::format::FirecrackerTemplate;
use crate::common::emit;
use crate::exit::{Status, StatusExt};
use anyhow::{Context, Result};
use std::path::Path;
use vcpu::model::template::CpuTemplate;

fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} {}", path.display()))
        .or_status(Status::BadInput)
}

fn write(output: Option<&Path>, force: bool, text: &str) -> Result<()> {
    match output {
        None => emit(text),
        Some(path) => {
            if path.exists() && !force {
                return Err(anyhow::anyhow!(
                    "{} exists; --force replaces it",
                    path.display()
                ))
                .or_status(Status::Error);
            }
            std::fs::write(path, text)
                .with_context(|| format!("writing {}", path.display()))
                .or_status(Status::Error)
        }
    }
}

fn warn(warnings: &[String]) {
    for w in warnings {
        crate::note!("warning: {w}");
    }
}

/// `vmfleet template import-firecracker FILE [-o OUT] [--name NAME]`: the template is named
/// NAME, else after FILE's stem (without a `.template` suffix).
pub fn import_firecracker(
    file: &Path,
    output: Option<&Path>,
    name: Option<&str>,
    force: bool,
) -> Result<Status> {
    let text = read(file, "Firecracker CPU template")?;
    let stem = file.file_stem().map_or_else(
        || "firecracker".to_string(),
        |s| {
            let stem = s.to_string_lossy();
            stem.strip_suffix(".template").unwrap_or(&stem).to_string()
        },
    );
    let name = name.unwrap_or(&stem);
    let fc = FirecrackerTemplate::parse(&text)
        .with_context(|| format!("{} is not a valid Firecracker CPU template", file.display()))
        .or_status(Status::BadInput)?;
    let converted = import(&fc, name)
        .with_context(|| format!("importing {}", file.display()))
        .or_status(Status::BadInput)?;
    warn(&converted.warnings);
    let mut toml = format!("# imported from {}\n", file.display());
    toml.push_str(&converted.template.to_toml());
    write(output, force, &toml)?;
    Ok(Status::Success)
}

/// `vmfleet template export-firecracker TEMPLATE [-o OUT]`.
pub fn export_firecracker(template: &Path, output: Option<&Path>, force: bool) -> Result<Status> {
    let text = read(template, "CPU template")?;
    let stem = template.file_stem().map_or_else(
        || "template".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let t = CpuTemplate::parse(&text, &template.display().to_string(), &stem)
        .map_err(anyhow::Error::from)
        .or_status(Status::BadInput)?;
    let converted = export(&t)
        .with_context(|| format!("exporting {}", template.display()))
        .or_status(Status::BadInput)?;
    warn(&converted.warnings);
    let text = converted.template.to_json_text(t.arch)?;
    write(output, force, &text)?;
    Ok(Status::Success)
}
