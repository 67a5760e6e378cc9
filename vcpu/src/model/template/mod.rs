//! CPU templates: a named CPU model in a file of its own, which any number of VMs, hosts and
//! commands share (`template = "baseline.toml"` in a fleet spec, `vmfleet template show`,
//! `vmfleet check TEMPLATE FP...`, and what `vmfleet baseline` writes).
//!
//! ```toml
//! name = "web-baseline"               # default: the file's stem
//! arch = "x86_64"                     # or "aarch64"
//! description = "what every web host can give"
//!
//! [x86.features]                      # by catalog name: true = the guest sees it, false = hidden
//! avx2 = true
//! avx512f = false
//!
//! [[x86.cpuid]]                       # raw bits, per leaf/subleaf/register, tri-state bitmaps:
//! leaf = 0x7                          # 0 clear, 1 set, x the host's bit (Firecracker's form)
//! subleaf = 0
//! ebx = "0bxxxxxxxxxxxxxxx0xxxxxxxxxxxxxxxx"
//!
//! [arm64]                             # an arm64 model spec (`Arm64ModelSpec`), as in a fleet spec:
//! features = ["psci-0.2"]             # VCPU_INIT features
//! psci_version = "1.1"
//! unknown_registers = "clear"
//! id_registers = { "ID_AA64ISAR0_EL1.AES" = 1 }
//! hypercalls = { trng = false }
//! registers = { ID_AA64ISAR1_EL1 = "0bxxxx0000" }   # tri-state bitmaps or whole values
//!
//! [firecracker]                       # kept from a Firecracker template, not modelled
//! kvm_capabilities = ["171"]          # ([`unmodelled`]: MSRs are refused at run time)
//! ```
//!
//! The format is documented by a JSON Schema (`supervisor/schemas/template.v1.schema.json`,
//! checked against the TOML read as JSON). Names are checked while the file is read; whether a
//! host can give what a template asks is the rule engine's business (`check`).
//!
//! Must not: do I/O (the caller reads the file; it is part of [`crate::model`]).

use crate::hypervisor::cpuid::CpuidReg;
use crate::hypervisor::ids::GuestArch;
use crate::model::arm64::Arm64ModelSpec;
use crate::model::tristate::TriState;
use crate::model::x86::catalog;
use crate::model::x86::model::{CpuidBits, X86CpuModel};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use toml::Spanned;

pub mod unmodelled;
pub use unmodelled::Unmodelled;

/// The format's name, which `template show --json` prints as `schema`.
pub const TEMPLATE_SCHEMA: &str = "vmfleet.template.v1";

/// A CPU template, read and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuTemplate {
    /// Its name (`name`, or the file's stem).
    pub name: String,
    /// What it is for, in the author's words.
    pub description: Option<String>,
    /// The guests' architecture.
    pub arch: GuestArch,
    /// The x86 model (empty on aarch64): features shown and hidden, raw CPUID bits.
    pub x86: X86CpuModel,
    /// The arm64 model (the default one on x86, unused there).
    pub arm64: Arm64ModelSpec,
    /// What a Firecracker template had that vmfleet keeps but does not model (its
    /// `kvm_capabilities`, MSR bitmaps).
    pub firecracker: Unmodelled,
}

/// What is wrong with a template, where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}{}: {message}", position(*.line, *.column))]
pub struct TemplateError {
    /// What the text is called (a path).
    pub source_name: String,
    /// 1-based line, 0 when the whole file is at fault.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

fn position(line: usize, column: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}:{column}")
    }
}

/// The file's shape, as serde reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    name: Option<Spanned<String>>,
    arch: Spanned<String>,
    description: Option<String>,
    x86: Option<Spanned<RawX86>>,
    arm64: Option<Spanned<Arm64ModelSpec>>,
    firecracker: Option<Spanned<unmodelled::RawUnmodelled>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawX86 {
    #[serde(default)]
    features: BTreeMap<String, Spanned<bool>>,
    #[serde(default)]
    cpuid: Vec<Spanned<RawCpuid>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCpuid {
    leaf: u32,
    #[serde(default)]
    subleaf: u32,
    eax: Option<Spanned<String>>,
    ebx: Option<Spanned<String>>,
    ecx: Option<Spanned<String>>,
    edx: Option<Spanned<String>>,
}

/// Where a byte offset of `text` is, 1-based (line, column in characters).
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl CpuTemplate {
    /// Read a template from `text`; `source_name` is what errors call it (a path), `stem` the
    /// name it gets without a `name` key.
    pub fn parse(text: &str, source_name: &str, stem: &str) -> Result<CpuTemplate, TemplateError> {
        let at = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = span.map_or((0, 0), |s| line_col(text, s.start));
            TemplateError {
                source_name: source_name.to_string(),
                line,
                column,
                message,
            }
        };
        let raw: RawTemplate = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_string();
            at(e.span(), message)
        })?;
        let arch = match raw.arch.get_ref().as_str() {
            "x86_64" => GuestArch::X86_64,
            "aarch64" => GuestArch::Aarch64,
            other => {
                return Err(at(
                    Some(raw.arch.span()),
                    format!("arch {other:?} is neither \"x86_64\" nor \"aarch64\""),
                ));
            }
        };
        let name = match &raw.name {
            Some(name) => {
                check_name(name.get_ref())
                    .map_err(|m| at(Some(name.span()), format!("name: {m}")))?;
                name.get_ref().clone()
            }
            None => stem.to_string(),
        };
        let mut template = CpuTemplate {
            name,
            description: raw.description,
            arch,
            x86: X86CpuModel::default(),
            arm64: Arm64ModelSpec::default(),
            firecracker: Unmodelled::default(),
        };
        if let Some(raw) = raw.firecracker {
            let span = raw.span();
            template.firecracker = raw
                .into_inner()
                .typed()
                .map_err(|m| at(Some(span.clone()), m))?;
            if arch == GuestArch::Aarch64 && !template.firecracker.msrs.is_empty() {
                return Err(at(
                    Some(span),
                    "firecracker.msrs: MSRs in an aarch64 template".into(),
                ));
            }
        }
        match (arch, raw.x86, raw.arm64) {
            (GuestArch::X86_64, _, Some(arm64)) => {
                return Err(at(
                    Some(arm64.span()),
                    "an `arm64` table in an x86_64 template".into(),
                ));
            }
            (GuestArch::Aarch64, Some(x86), _) => {
                return Err(at(
                    Some(x86.span()),
                    "an `x86` table in an aarch64 template".into(),
                ));
            }
            (GuestArch::X86_64, x86, None) => {
                if let Some(x86) = x86 {
                    template.x86 = x86_model(x86.into_inner(), &at)?;
                }
            }
            (GuestArch::Aarch64, None, arm64) => {
                if let Some(arm64) = arm64 {
                    let span = arm64.span();
                    let model = arm64.into_inner();
                    model
                        .check()
                        .map_err(|e| at(Some(span), format!("arm64: {e}")))?;
                    template.arm64 = model;
                }
            }
        }
        Ok(template)
    }

    /// The template as a TOML file (what `baseline` writes and `template show` prints): names
    /// in the catalog's spelling, every bitmap at its full width. Reading it back gives the same
    /// template.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# vmfleet CPU template ({TEMPLATE_SCHEMA})");
        let _ = writeln!(out, "name = {}", quote(&self.name));
        let _ = writeln!(out, "arch = {}", quote(&self.arch.to_string()));
        if let Some(description) = &self.description {
            let _ = writeln!(out, "description = {}", quote(description));
        }
        match self.arch {
            GuestArch::X86_64 => {
                let features = self.x86_features();
                if !features.is_empty() {
                    out.push_str("\n[x86.features]\n");
                    for (name, on) in features {
                        let _ = writeln!(out, "{name} = {on}");
                    }
                }
                for bits in &self.x86.cpuid {
                    let _ = writeln!(
                        out,
                        "\n[[x86.cpuid]]\nleaf = {:#x}\nsubleaf = {}\n{} = \"{}\"",
                        bits.leaf, bits.subleaf, bits.register, bits.bits
                    );
                }
            }
            GuestArch::Aarch64 => {
                #[derive(Serialize)]
                struct Section<'a> {
                    arm64: &'a Arm64ModelSpec,
                }
                if let Ok(text) = toml::to_string(&Section { arm64: &self.arm64 }) {
                    out.push('\n');
                    out.push_str(&text);
                }
            }
        }
        out.push_str(&self.firecracker.to_toml());
        out
    }

    /// Refuse to run a VM with this template when it asks for what vmfleet does not model:
    /// the error names each MSR.
    pub fn refuse_unmodelled(&self) -> Result<(), String> {
        if self.firecracker.msrs.is_empty() {
            return Ok(());
        }
        let msrs: Vec<String> = self
            .firecracker
            .msrs
            .iter()
            .map(|m| format!("{:#x}", m.addr))
            .collect();
        Err(format!(
            "template {self} sets MSR {}: vmfleet does not model MSRs (they were kept from a \
             Firecracker template for export); remove the [[firecracker.msrs]] entries to run it",
            msrs.join(", ")
        ))
    }

    /// The named x86 features, by catalog name: `true` shown, `false` hidden.
    pub fn x86_features(&self) -> BTreeMap<String, bool> {
        self.x86
            .show
            .iter()
            .map(|n| (n.clone(), true))
            .chain(self.x86.hide.iter().map(|n| (n.clone(), false)))
            .collect()
    }
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A template name: what labels and reports carry, so printable and short.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 100 {
        return Err(format!("{name:?} must be 1 to 100 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{name:?} has `{c}`; a template name uses letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// The x86 section: names resolved (unknown → the nearest known one), each bitmap read at its
/// register's width, a leaf/subleaf/register at most once.
fn x86_model(
    raw: RawX86,
    at: &impl Fn(Option<std::ops::Range<usize>>, String) -> TemplateError,
) -> Result<X86CpuModel, TemplateError> {
    let mut model = X86CpuModel::default();
    for (name, on) in &raw.features {
        let Some(feature) = catalog::by_name(name) else {
            let hint = catalog::suggest(name)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(at(
                Some(on.span()),
                format!("x86.features: unknown CPU feature `{name}`{hint}"),
            ));
        };
        let canonical = feature.name.to_string();
        if model.show.contains(&canonical) || model.hide.contains(&canonical) {
            return Err(at(
                Some(on.span()),
                format!("x86.features: `{name}` names {canonical}, which is already set"),
            ));
        }
        if *on.get_ref() {
            model.show.push(canonical);
        } else {
            model.hide.push(canonical);
        }
    }
    let mut seen: BTreeMap<(u32, u32, CpuidReg), ()> = BTreeMap::new();
    for entry in raw.cpuid {
        let span = entry.span();
        let entry = entry.into_inner();
        let regs = [
            (CpuidReg::Eax, entry.eax),
            (CpuidReg::Ebx, entry.ebx),
            (CpuidReg::Ecx, entry.ecx),
            (CpuidReg::Edx, entry.edx),
        ];
        if regs.iter().all(|(_, text)| text.is_none()) {
            return Err(at(
                Some(span),
                format!(
                    "x86.cpuid: leaf {:#x} subleaf {} sets no register (eax, ebx, ecx, edx)",
                    entry.leaf, entry.subleaf
                ),
            ));
        }
        for (register, text) in regs {
            let Some(text) = text else { continue };
            let bits = TriState::parse(text.get_ref(), 32)
                .map_err(|e| at(Some(text.span()), format!("x86.cpuid: {e}")))?;
            if seen
                .insert((entry.leaf, entry.subleaf, register), ())
                .is_some()
            {
                return Err(at(
                    Some(text.span()),
                    format!(
                        "x86.cpuid: {} is set twice",
                        catalog::position(entry.leaf, entry.subleaf, register)
                    ),
                ));
            }
            model.cpuid.push(CpuidBits {
                leaf: entry.leaf,
                subleaf: entry.subleaf,
                register,
                bits,
            });
        }
    }
    model.cpuid.sort();
    Ok(model)
}

impl fmt::Display for CpuTemplate {
    /// The name and architecture: `web-baseline (x86_64)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.arch)
    }
}

#[cfg(test)]
mod tests;
