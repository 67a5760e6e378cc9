//! What an x86 guest saw: its CPUID probe's report judged against the table the kernel holds
//! ([`GuestSummary`]), each pass against the first.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use vcpu::guests::{GuestReport, PassDifference};
use vcpu::hypervisor::cpuid::{CpuidReg, CpuidTable};
use vcpu::model::x86::catalog::Feature;
use vcpu::model::x86::drift::{self, GuestSeen};

/// What the guest saw, against the table the kernel holds.
#[derive(Clone, Debug, Serialize)]
pub struct GuestSummary {
    /// Complete passes of the guest's CPUID probe.
    pub passes: u64,
    /// Whether every pass saw the same values (a CPU model must not flicker).
    pub passes_agree: bool,
    /// How many passes saw something other than the first pass.
    pub differing_passes: u64,
    /// Differences with the held table (of the first pass), then one line per pass that differed
    /// from the first (the first few of them).
    pub mismatches: Vec<String>,
    /// Entries of the held table the guest never probed.
    pub unseen: usize,
    /// Registers whose only differences are bits KVM recomputes from guest state (expected).
    pub runtime_differences: usize,
    /// Requested-hidden features the guest still sees.
    pub hidden_but_visible: Vec<String>,
}

impl GuestSummary {
    /// Check the guest's first complete pass against the `held` table (and the `hidden`
    /// features), and every later pass against the first.
    pub fn from_report(
        held: &CpuidTable,
        report: &GuestReport,
        hidden: &[&'static Feature],
    ) -> Self {
        if report.passes == 0 {
            return GuestSummary {
                passes: 0,
                passes_agree: true,
                differing_passes: 0,
                mismatches: vec!["the guest reported nothing".into()],
                unseen: held.len(),
                runtime_differences: 0,
                hidden_but_visible: Vec::new(),
            };
        }
        let check = check_guest_view(held, &report.first_pass, hidden);
        let mut mismatches = check.mismatches.clone();
        mismatches.extend(report.first_differences.iter().map(describe_difference));
        GuestSummary {
            passes: report.passes,
            passes_agree: report.passes_agree(),
            differing_passes: report.differing_passes,
            mismatches,
            unseen: check.unseen.len(),
            runtime_differences: check.runtime_differences,
            hidden_but_visible: check
                .hidden_but_visible
                .iter()
                .map(|f| f.name.to_string())
                .collect(),
        }
    }

    /// The guest saw exactly what the kernel holds (runtime bits aside), every pass alike.
    pub fn consistent(&self) -> bool {
        self.passes > 0 && self.passes_agree && self.mismatches.is_empty() && self.unseen == 0
    }
}

/// The checks of the last few guest views judged in this process ([`RECENT_CHECKS`]), with
/// what each judged: a fleet's VMs of one spec hold the same table per vCPU index (the tables of
/// one VM's vCPUs differ, in their APIC IDs) and see the same first pass, so most checks repeat
/// one of them (judged anew each time, 2,000 vCPUs' checks were ~5% of the instructions of a
/// 1,000-VM replay; comparing the inputs stops at their first difference). Kept for the
/// process, not per thread: a real fleet judges on each VM's own loop thread.
struct RecentCheck {
    held: CpuidTable,
    first_pass: Vec<GuestSeen>,
    hidden: Vec<&'static Feature>,
    check: drift::GuestViewCheck,
}

/// How many checks [`RecentCheck`] keeps: a few vCPU indexes' worth.
const RECENT_CHECKS: usize = 8;

static RECENT: Mutex<VecDeque<RecentCheck>> = Mutex::new(VecDeque::new());

/// [`drift::check_guest_view`], or the same check made recently (see [`RecentCheck`]).
pub(super) fn check_guest_view(
    held: &CpuidTable,
    first_pass: &[GuestSeen],
    hidden: &[&'static Feature],
) -> drift::GuestViewCheck {
    let recent = || RECENT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = recent()
        .iter()
        .find(|r| r.held == *held && r.first_pass == first_pass && r.hidden == hidden)
    {
        return found.check.clone();
    }
    let check = drift::check_guest_view(held, first_pass, hidden);
    let mut recent = recent();
    if recent.len() >= RECENT_CHECKS {
        recent.pop_front();
    }
    recent.push_back(RecentCheck {
        held: held.clone(),
        first_pass: first_pass.to_vec(),
        hidden: hidden.to_vec(),
        check: check.clone(),
    });
    check
}

/// `pass 3 saw 0x7.0 ebx=0x00000001 where pass 0 saw ebx=0x00000000`: the registers of the first
/// point where a later pass differed from the first.
fn describe_difference(d: &PassDifference) -> String {
    let regs = |seen: &GuestSeen| {
        CpuidReg::ALL
            .iter()
            .filter(|&&reg| d.first.reg(reg) != d.seen.reg(reg))
            .map(|&reg| format!("{reg}={:#010x}", seen.reg(reg)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "pass {} saw {:#x}.{} {} where pass 0 saw {}",
        d.pass,
        d.seen.leaf,
        d.seen.subleaf,
        regs(&d.seen),
        regs(&d.first)
    )
}
