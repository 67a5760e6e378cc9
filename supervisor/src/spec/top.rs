//! The top level of a spec: [`parse`] itself (the document, its keys, the typed shape, then each
//! section in file order: the fleet's own keys here, each `[[vm]]` in `vm`), the fleet's name,
//! arch and the defaults it gives every VM (`cross_check`, `unknown_registers`), the rule every
//! name follows, and [`parse_cross_checked`]. The order of the checks is the order of the errors
//! an operator meets, so it is kept as it always was.

use super::keys::{check_keys, did_you_mean, narrow};
use super::position::{Source, toml_message};
use super::raw::RawFleet;
use super::{FleetSpec, MAX_VMS, SpecError, vm};
use toml::de::DeTable;
use vcpu::GuestArch;
use vcpu::model::arm64::UnknownRegisterPolicy;

/// What the top level of a spec says about the whole fleet, as every `[[vm]]` needs it.
pub(super) struct TopLevel {
    /// The fleet's name (`name`, default `fleet`).
    pub(super) name: String,
    /// The guests' architecture (`arch`).
    pub(super) arch: GuestArch,
    /// `cross_check` (aarch64 only).
    pub(super) cross_check: bool,
    /// The fleet's policy for registers vmfleet does not know: every VM's, unless its own `arm64`
    /// table chooses another.
    pub(super) unknown_registers: Option<UnknownRegisterPolicy>,
}

/// Parse and validate a fleet spec. `source_name` is what errors call the text (a path).
///
/// Every error carries the line and column of the key or value at fault (the start of the file
/// when nothing narrower is to blame, e.g. a spec without VMs).
pub fn parse(text: &str, source_name: &str) -> Result<FleetSpec, SpecError> {
    let src = Source {
        text,
        name: source_name,
    };
    // First the document with the span of every key and value: syntax errors, and unknown keys
    // with a suggestion. Then the typed shape, then the rules.
    let doc = DeTable::parse(text).map_err(|e| src.at(e.span(), toml_message(&e)))?;
    check_keys(doc.get_ref(), &src)?;
    let raw: RawFleet = toml::from_str(text)
        .map_err(|e| src.at(e.span().map(|s| narrow(doc.get_ref(), s)), toml_message(&e)))?;
    let fleet = top_level(&raw, doc.get_ref(), &src)?;
    let vms = vm::vms(&raw, &fleet, doc.get_ref(), &src)?;
    Ok(FleetSpec {
        name: fleet.name,
        arch: fleet.arch,
        cross_check: fleet.cross_check,
        vms,
    })
}

/// The top-level keys: the fleet's name and arch, that it has VMs (and not too many), and the
/// defaults it gives them.
fn top_level(raw: &RawFleet, doc: &DeTable<'_>, src: &Source<'_>) -> Result<TopLevel, SpecError> {
    let name = match &raw.name {
        Some(n) => {
            check_name(n.get_ref())
                .map_err(|m| src.at(Some(n.span()), format!("fleet name: {m}")))?;
            n.get_ref().clone()
        }
        None => "fleet".to_string(),
    };
    let arch = arch(raw, src)?;
    if raw.vm.is_empty() {
        let vm_key = doc.get("vm").map(|v| v.span());
        return Err(src.at(
            vm_key.or(Some(0..0)),
            "the fleet has no VMs: add at least one [[vm]] table".into(),
        ));
    }
    if raw.vm.len() > MAX_VMS {
        return Err(src.at(
            raw.vm[MAX_VMS].span().into(),
            format!("more than {MAX_VMS} VMs"),
        ));
    }
    let cross_check = match &raw.cross_check {
        Some(c) if *c.get_ref() && arch != GuestArch::Aarch64 => {
            return Err(src.at(
                Some(c.span()),
                "`cross_check` applies to aarch64 fleets (x86 writes are not judged before the \
                 kernel)"
                    .into(),
            ));
        }
        Some(c) => *c.get_ref(),
        None => false,
    };
    let unknown_registers = match &raw.unknown_registers {
        Some(p) if arch != GuestArch::Aarch64 => {
            return Err(src.at(
                Some(p.span()),
                "`unknown_registers` applies to aarch64 fleets".into(),
            ));
        }
        Some(p) => Some(*p.get_ref()),
        None => None,
    };
    Ok(TopLevel {
        name,
        arch,
        cross_check,
        unknown_registers,
    })
}

/// `arch`: x86_64 unless it says `aarch64` (or `arm64`).
fn arch(raw: &RawFleet, src: &Source<'_>) -> Result<GuestArch, SpecError> {
    let Some(a) = &raw.arch else {
        return Ok(GuestArch::X86_64);
    };
    match a.get_ref().as_str() {
        "x86_64" => Ok(GuestArch::X86_64),
        "aarch64" | "arm64" => Ok(GuestArch::Aarch64),
        other => Err(src.at(
            Some(a.span()),
            format!(
                "unknown arch `{other}`{}: expected \"x86_64\" or \"aarch64\"",
                did_you_mean(other, &["x86_64", "aarch64"])
            ),
        )),
    }
}

/// Why a name is refused (the text after `fleet name: ` or `VM name: `).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum NameError {
    /// The empty name.
    #[error("must not be empty")]
    Empty,
    /// A name a command line would take for an option.
    #[error(
        "`{0}` starts with `-`, so a command line would take it for an option; start it with a \
         letter, a digit or `_`"
    )]
    StartsWithDash(String),
    /// More than 64 bytes.
    #[error("`{0}` is longer than 64 characters")]
    TooLong(String),
    /// A character other than a letter, a digit, `-` or `_`.
    #[error("`{name}` contains {character:?}; use letters, digits, `-` and `_`")]
    Character {
        /// The name.
        name: String,
        /// Its first refused character.
        character: char,
    },
}

/// Names are addressed on command lines (`vmfleet ctl stop NAME`) and printed in tables, so they
/// are 1 to 64 letters, digits, `-` and `_`, and never start with `-` (a command line would take
/// them for an option).
pub(super) fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.starts_with('-') {
        return Err(NameError::StartsWithDash(name.to_string()));
    }
    if name.len() > 64 {
        return Err(NameError::TooLong(name.to_string()));
    }
    if let Some(character) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(NameError::Character {
            name: name.to_string(),
            character,
        });
    }
    Ok(())
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
    let src = Source {
        text,
        name: source_name,
    };
    let doc = DeTable::parse(text).map_err(|e| src.at(e.span(), toml_message(&e)))?;
    let top = |key: &str| doc.get_ref().get(key).map(|v| v.span());
    if spec.arch != GuestArch::Aarch64 {
        return Err(src.at(
            top("arch"),
            format!(
                "`--cross-check` applies to aarch64 fleets (x86 writes are not judged before the \
                 kernel); this one is {}",
                spec.arch
            ),
        ));
    }
    if let Some(span) = top("cross_check") {
        return Err(src.at(
            Some(span),
            "`cross_check = false` contradicts `--cross-check`: drop one of them".into(),
        ));
    }
    let text = format!("cross_check = true  # vmfleet run --cross-check\n{text}");
    let spec = parse(&text, source_name)?;
    Ok((text, spec))
}
