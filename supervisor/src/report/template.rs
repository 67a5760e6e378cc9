//! A VM whose CPU model comes from a CPU template: does the guest see exactly the template? The
//! run reads every register back and takes the guest's own view (the rest of the report); this
//! says, per VM, whether both match what the template asked for, and names each bit the host
//! changed (on a nested PVM host, bits of CPUID leaves 0x1, 0x7 and 0xD), marking those the
//! template itself fixed.

use super::{DriftChange, DriftKind, VmReport};
use serde::Serialize;
use std::fmt::Write as _;
use vcpu::hypervisor::cpuid::CpuidReg;

/// The template a VM's model comes from, and the bits it fixes (x86), to compare against.
#[derive(Clone, Debug, Default)]
pub struct TemplateUse {
    /// The template's name.
    pub name: String,
    /// x86: per (leaf, subleaf, register), the bits the template fixes (features shown or hidden,
    /// raw bits that are not `x`).
    pub fixed: Vec<(u32, u32, CpuidReg, u32)>,
}

impl TemplateUse {
    /// What `spec`'s template fixes; `None` for a VM without a template.
    pub fn of(spec: &crate::spec::VmSpec) -> Option<TemplateUse> {
        let name = spec.template.clone()?;
        let mut fixed: Vec<(u32, u32, CpuidReg, u32)> = Vec::new();
        let mut add = |leaf, subleaf, reg, mask: u32| match fixed
            .iter_mut()
            .find(|(l, s, r, _)| (*l, *s, *r) == (leaf, subleaf, reg))
        {
            Some(entry) => entry.3 |= mask,
            None => fixed.push((leaf, subleaf, reg, mask)),
        };
        for bits in &spec.cpu.cpuid {
            add(
                bits.leaf,
                bits.subleaf,
                bits.register,
                bits.bits.mask as u32,
            );
        }
        for name in spec.cpu.show.iter().chain(&spec.cpu.hide) {
            if let Some(f) = vcpu::model::x86::catalog::by_name(name) {
                add(f.leaf, f.subleaf, f.reg, f.mask());
            }
        }
        Some(TemplateUse { name, fixed })
    }

    fn fixes(&self, change: &DriftChange) -> bool {
        let Some(bit) = change.bit else {
            return false;
        };
        self.fixed.iter().any(|(l, s, r, mask)| {
            (*l, *s) == (change.leaf, change.subleaf)
                && change.reg == Some(r.name())
                && mask & (1 << bit) != 0
        })
    }
}

/// Whether the guest sees the template, as `--json` prints it (`template` of a VM).
#[derive(Clone, Debug, Serialize)]
pub struct TemplateVerdict {
    /// The template's name.
    pub name: String,
    /// The kernel holds what the template asked for, on every vCPU, except bits the template
    /// leaves to the host, and the guest ran and saw what the kernel holds.
    pub guest_sees_template: bool,
    /// Whether a guest ran and reported what it saw (`run --model` runs none).
    pub guest_ran: bool,
    /// x86: every bit the host changed between the table asked for and the one it holds (on any
    /// vCPU, each once), by name.
    pub changed_by_host: Vec<DriftChange>,
    /// How many of those the template itself fixed.
    pub fixed_bits_changed: usize,
}

impl VmReport {
    /// Whether the guest saw the template (`None` for a VM without one, or one that never ran
    /// its guest).
    pub fn template_verdict(&self) -> Option<TemplateVerdict> {
        let template = self.template.as_ref()?;
        let mut changed: Vec<DriftChange> = Vec::new();
        for vcpu in &self.vcpus {
            for change in vcpu.drift_changes.iter() {
                if change.kind == DriftKind::TracksGuestState {
                    continue;
                }
                if !changed.iter().any(|c| c == change) {
                    changed.push(change.clone());
                }
            }
        }
        let fixed_bits_changed = changed.iter().filter(|c| template.fixes(c)).count();
        let guest_consistent = self.vcpus.iter().all(|v| {
            v.guest.as_ref().is_none_or(|g| g.consistent())
                && v.arm64_guest.as_ref().is_none_or(|g| g.consistent())
        });
        let arm64_ok = self.arm64.as_ref().is_none_or(|a| a.disagreements() == 0);
        let guest_ran = self.state != super::VmState::AtFirstRun
            && self
                .vcpus
                .iter()
                .any(|v| v.guest.is_some() || v.arm64_guest.is_some());
        Some(TemplateVerdict {
            name: template.name.clone(),
            guest_sees_template: fixed_bits_changed == 0
                && guest_consistent
                && arm64_ok
                && guest_ran,
            guest_ran,
            changed_by_host: changed,
            fixed_bits_changed,
        })
    }
}

/// The verdict in words: one line, then one line per bit the host changed.
pub fn template_lines(out: &mut String, verdict: &TemplateVerdict, indent: &str) {
    let head = if !verdict.guest_ran && verdict.changed_by_host.is_empty() {
        "no guest ran; the kernel holds exactly the template".to_string()
    } else if !verdict.guest_ran {
        format!(
            "no guest ran; the kernel holds it, but for {} bit(s) the host changed ({} the \
             template fixes)",
            verdict.changed_by_host.len(),
            verdict.fixed_bits_changed
        )
    } else if verdict.guest_sees_template && verdict.changed_by_host.is_empty() {
        "the guest sees exactly the template".to_string()
    } else if verdict.guest_sees_template {
        format!(
            "the guest sees the template; the host changed {} bit(s) it leaves to the host",
            verdict.changed_by_host.len()
        )
    } else {
        format!(
            "the guest does not see the template: the host changed {} bit(s) the template fixes",
            verdict.fixed_bits_changed
        )
    };
    let _ = writeln!(out, "{indent}template {}: {head}", verdict.name);
    for c in &verdict.changed_by_host {
        let name = match (c.feature, c.bit) {
            (Some(f), Some(b)) => format!("{f} ({}[{b}])", c.register),
            (None, Some(b)) => format!("{}[{b}]", c.register),
            _ => c.register.clone(),
        };
        let values = match (c.from, c.to) {
            (Some(from), Some(to)) if c.bit.is_some() => format!(" {from} → {to}"),
            (Some(from), Some(to)) => format!(" {from:#x} → {to:#x}"),
            _ => String::new(),
        };
        let _ = writeln!(out, "{indent}  host changed {name}{values}");
    }
}
