//! What a CPU template keeps from a Firecracker template that vmfleet does not model, so an
//! imported template exports back to the same JSON: Firecracker's `kvm_capabilities` checks and
//! its MSR bitmaps. A template's `[firecracker]` table:
//!
//! ```toml
//! [firecracker]
//! kvm_capabilities = ["171", "!172"]   # decimal; ! drops one of Firecracker's built-in checks
//!
//! [[firecracker.msrs]]                 # unsupported: vmfleet does not model MSRs
//! addr = 0x10a
//! bits = "0b0000…"                     # a tri-state bitmap of 64 bits
//! ```
//!
//! The capabilities are checks Firecracker makes of its host (vmfleet asks its own of the
//! kernel); MSRs are refused when a VM would run with the template
//! ([`super::CpuTemplate::refuse_unmodelled`]), naming each one.
//!
//! Must not: do I/O (it is part of [`crate::model`]).

use crate::model::tristate::TriState;
use std::fmt::Write as _;

/// The Firecracker parts of a template vmfleet keeps but does not model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unmodelled {
    /// Firecracker's `kvm_capabilities`, as written (`"171"`, `"!172"`).
    pub kvm_capabilities: Vec<String>,
    /// MSR bitmaps (x86), in the file's order.
    pub msrs: Vec<MsrBits>,
}

/// One MSR's tri-state bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrBits {
    /// The MSR's address.
    pub addr: u32,
    /// Its bits (width 64).
    pub bits: TriState,
}

/// The `[firecracker]` table as serde reads it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUnmodelled {
    #[serde(default)]
    kvm_capabilities: Vec<String>,
    #[serde(default)]
    msrs: Vec<RawMsr>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMsr {
    addr: u32,
    bits: String,
}

/// Whether `text` is one of Firecracker's capability entries: a decimal number, `!` before it
/// to drop a built-in check.
pub fn check_capability(text: &str) -> Result<(), String> {
    let digits = text.strip_prefix('!').unwrap_or(text);
    if digits.is_empty()
        || !digits.chars().all(|c| c.is_ascii_digit())
        || digits.parse::<u32>().is_err()
    {
        return Err(format!(
            "{text:?} is not a capability: a decimal KVM capability number, with ! before it to \
             drop one of Firecracker's checks"
        ));
    }
    Ok(())
}

impl RawUnmodelled {
    /// The checked table; an error says what is wrong.
    pub(super) fn typed(self) -> Result<Unmodelled, String> {
        for cap in &self.kvm_capabilities {
            check_capability(cap).map_err(|e| format!("firecracker.kvm_capabilities: {e}"))?;
        }
        let mut msrs = Vec::new();
        for (i, msr) in self.msrs.iter().enumerate() {
            let bits = TriState::parse(&msr.bits, 64)
                .map_err(|e| format!("firecracker.msrs[{i}] (MSR {:#x}): {e}", msr.addr))?;
            msrs.push(MsrBits {
                addr: msr.addr,
                bits,
            });
        }
        Ok(Unmodelled {
            kvm_capabilities: self.kvm_capabilities,
            msrs,
        })
    }
}

impl Unmodelled {
    /// Whether there is nothing.
    pub fn is_empty(&self) -> bool {
        self.kvm_capabilities.is_empty() && self.msrs.is_empty()
    }

    /// One line per unsupported part: each MSR (what `template show` and import warn of).
    pub fn unsupported(&self) -> Vec<String> {
        self.msrs
            .iter()
            .map(|m| {
                format!(
                    "MSR {:#x} = {}: unsupported (vmfleet does not model MSRs); kept for \
                     export, refused at run time",
                    m.addr, m.bits
                )
            })
            .collect()
    }

    /// The `[firecracker]` table in TOML (empty when there is nothing).
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        if self.is_empty() {
            return out;
        }
        out.push_str("\n[firecracker]\n");
        if !self.kvm_capabilities.is_empty() {
            let caps: Vec<String> = self
                .kvm_capabilities
                .iter()
                .map(|c| format!("{c:?}"))
                .collect();
            let _ = writeln!(out, "kvm_capabilities = [{}]", caps.join(", "));
        }
        for msr in &self.msrs {
            let _ = writeln!(
                out,
                "\n[[firecracker.msrs]]  # unsupported: vmfleet does not model MSRs\naddr = {:#x}\nbits = \"{}\"",
                msr.addr, msr.bits
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::CpuTemplate;

    const X86: &str = r#"
arch = "x86_64"

[firecracker]
kvm_capabilities = ["!56"]

[[firecracker.msrs]]
addr = 0x10a
bits = "0b0_1xx"
"#;

    #[test]
    fn a_firecracker_table_reads_writes_back_and_refuses_to_run_its_msrs() {
        let t = CpuTemplate::parse(X86, "t.toml", "t").unwrap();
        assert_eq!(t.firecracker.kvm_capabilities, ["!56"]);
        let msr = t.firecracker.msrs[0];
        assert_eq!(
            (msr.addr, msr.bits.mask, msr.bits.value),
            (0x10a, 0b1100, 0b0100)
        );
        let written = t.to_toml();
        let again = CpuTemplate::parse(&written, "out.toml", "t").unwrap();
        assert_eq!(again, t, "{written}");
        assert!(t.firecracker.unsupported()[0].starts_with("MSR 0x10a = 0b"));
        let refusal = t.refuse_unmodelled().unwrap_err();
        assert!(refusal.contains("MSR 0x10a") && refusal.contains("does not model MSRs"));
        let plain = CpuTemplate::parse("arch = \"x86_64\"\n", "p.toml", "p").unwrap();
        assert!(plain.refuse_unmodelled().is_ok());
        assert!(!plain.to_toml().contains("firecracker"));
    }

    #[test]
    fn a_bad_firecracker_table_names_what_and_where() {
        let error = |text: &str| {
            CpuTemplate::parse(text, "t.toml", "t")
                .unwrap_err()
                .to_string()
        };
        let e = error("arch = \"x86_64\"\n[firecracker]\nkvm_capabilities = [\"0x10\"]\n");
        assert!(
            e.contains("t.toml:2:1") && e.contains("\"0x10\" is not a capability"),
            "{e}"
        );
        let e = error("arch = \"x86_64\"\n[[firecracker.msrs]]\naddr = 16\nbits = \"0b2\"\n");
        assert!(
            e.contains("firecracker.msrs[0] (MSR 0x10)") && e.contains("character 3"),
            "{e}"
        );
        let e = error("arch = \"aarch64\"\n[[firecracker.msrs]]\naddr = 16\nbits = \"0b1\"\n");
        assert!(e.contains("MSRs in an aarch64 template"), "{e}");
    }
}
