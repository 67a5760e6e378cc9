//! Drift as data: each difference between the CPU model vmfleet asked for and the one the kernel
//! holds, one change per bit (or value, or entry), for JSON and `ctl model`. The transcript
//! prints the same report as lines ([`DriftReport::lines`]); [`drift_changes`] mirrors them.

use super::Arm64Drift;
use serde::Serialize;
use vcpu::model::x86::drift::DriftReport;

/// Why a CPUID bit or entry differs between the table vmfleet set and the one the kernel holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// The kernel changed the model (nested PVM rewrites leaves 0x1, 0x7, 0xD).
    KernelRewrote,
    /// A bit KVM recomputes from guest state (OSXSAVE, APIC, OSPKE, XSAVE sizes).
    TracksGuestState,
    /// A requested `(leaf, subleaf)` the kernel's table lacks.
    EntryMissing,
    /// A `(leaf, subleaf)` the kernel's table has that was not requested.
    EntryAdded,
}

/// One difference between the CPU model asked for and the one the kernel holds, as data: what
/// `ctl model` sends for either architecture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ModelDrift {
    /// x86: one CPUID bit (or value, or entry).
    X86(DriftChange),
    /// arm64: one register.
    Arm64(Arm64Drift),
}

/// One difference between the requested and the held CPUID table, as data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DriftChange {
    /// `7.0.ebx` (leaf.subleaf.register) or, for a whole entry, `7.0`.
    pub register: String,
    /// The CPUID leaf.
    pub leaf: u32,
    /// The CPUID subleaf.
    pub subleaf: u32,
    /// `eax`, `ebx`, `ecx` or `edx`; `None` for a whole entry.
    pub reg: Option<&'static str>,
    /// The bit, for a one-bit change; `None` for a multi-bit value (a size, a count) or an entry.
    pub bit: Option<u8>,
    /// The bit's name in the feature catalog (`vmfleet host` lists them), if it has one.
    pub feature: Option<&'static str>,
    /// The bit (0 or 1) or, for a multi-bit value, the whole register as requested.
    pub from: Option<u32>,
    /// The bit or register as the kernel holds it.
    pub to: Option<u32>,
    /// Why it differs.
    pub kind: DriftKind,
}

/// The changes of a drift report as data: one per changed bit, except where none of a
/// register's changed bits has a name and several changed (a count, a size, an id: one change of
/// the whole value), and one per missing or added entry. Mirrors [`DriftReport::lines`].
pub fn drift_changes(report: &DriftReport) -> Vec<DriftChange> {
    let mut out = Vec::new();
    for d in &report.changed {
        let kind = if d.runtime {
            DriftKind::TracksGuestState
        } else {
            DriftKind::KernelRewrote
        };
        let register = vcpu::model::x86::catalog::position(d.leaf, d.subleaf, d.reg);
        let bits: Vec<u8> = (0..32u8).filter(|b| d.bits & (1 << b) != 0).collect();
        let named = bits
            .iter()
            .any(|&b| vcpu::model::x86::catalog::at(d.leaf, d.subleaf, d.reg, b).is_some());
        if !named && bits.len() > 1 {
            out.push(DriftChange {
                register,
                leaf: d.leaf,
                subleaf: d.subleaf,
                reg: Some(d.reg.name()),
                bit: None,
                feature: None,
                from: Some(d.requested),
                to: Some(d.held),
                kind,
            });
            continue;
        }
        for bit in bits {
            out.push(DriftChange {
                register: register.clone(),
                leaf: d.leaf,
                subleaf: d.subleaf,
                reg: Some(d.reg.name()),
                bit: Some(bit),
                feature: vcpu::model::x86::catalog::at(d.leaf, d.subleaf, d.reg, bit)
                    .map(|f| f.name),
                from: Some((d.requested >> bit) & 1),
                to: Some((d.held >> bit) & 1),
                kind,
            });
        }
    }
    let entries = report
        .missing_entries
        .iter()
        .map(|k| (k, DriftKind::EntryMissing))
        .chain(
            report
                .added_entries
                .iter()
                .map(|k| (k, DriftKind::EntryAdded)),
        );
    for (&(leaf, subleaf), kind) in entries {
        let register = vcpu::model::x86::catalog::position(
            leaf,
            subleaf,
            vcpu::hypervisor::cpuid::CpuidReg::Eax,
        );
        out.push(DriftChange {
            register: register
                .rsplit_once('.')
                .map_or(register.clone(), |(entry, _)| entry.to_string()),
            leaf,
            subleaf,
            reg: None,
            bit: None,
            feature: None,
            from: None,
            to: None,
            kind,
        });
    }
    out
}
