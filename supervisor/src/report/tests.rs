//! Tests of `report` (tests), kept beside it so the module itself stays short.

use super::*;
use vcpu::guests::{GuestReport, PassDifference};
use vcpu::hypervisor::cpuid::{CpuidEntry, FLAG_SIGNIFICANT_INDEX};
use vcpu::model::x86::drift::{self, GuestSeen};

fn entry(function: u32, index: u32, ebx: u32) -> CpuidEntry {
    CpuidEntry {
        function,
        index,
        flags: FLAG_SIGNIFICANT_INDEX,
        eax: 0,
        ebx,
        ecx: 0,
        edx: 0,
    }
}

fn seen(e: &CpuidEntry) -> GuestSeen {
    GuestSeen {
        leaf: e.function,
        subleaf: e.index,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
    }
}

fn held() -> CpuidTable {
    CpuidTable::new(vec![entry(0x7, 0, 0x29), entry(0x8000_0001, 0, 0)])
}

#[test]
fn passes_that_agree() {
    let held = held();
    let report = GuestReport {
        first_pass: held.entries.iter().map(seen).collect(),
        passes: 100_000,
        differing_passes: 0,
        first_differences: Vec::new(),
    };
    let summary = GuestSummary::from_report(&held, &report, &[]);
    assert_eq!(summary.passes, 100_000);
    assert!(summary.passes_agree);
    assert!(summary.mismatches.is_empty(), "{:?}", summary.mismatches);
    assert!(summary.consistent());
}

#[test]
fn a_repeated_guest_view_is_judged_as_a_new_one_would_be() {
    // Views that alternate (as a VM's vCPUs do) and differ in one register or in what is
    // hidden: each judged as the check itself judges it, however often it came before.
    let tables = [
        held(),
        CpuidTable::new(vec![entry(0x7, 0, 0x28), entry(0x8000_0001, 0, 0)]),
    ];
    let views: Vec<Vec<GuestSeen>> = tables
        .iter()
        .map(|t| t.entries.iter().map(seen).collect())
        .collect();
    let hidden = [vcpu::model::x86::catalog::by_name("avx2").expect("avx2 is in the catalog")];
    for round in 0..3 {
        for (held, first_pass) in tables.iter().zip(&views) {
            for view in [&views[0], first_pass] {
                for hidden in [&hidden[..], &[]] {
                    let judged = guest::check_guest_view(held, view, hidden);
                    let fresh = drift::check_guest_view(held, view, hidden);
                    assert_eq!(
                        judged, fresh,
                        "round {round}, view {view:?}, hidden {hidden:?}"
                    );
                }
            }
        }
    }
    // The first table seen as the second one is: a mismatch, found again from the cache.
    let judged = guest::check_guest_view(&tables[0], &views[1], &[]);
    assert_eq!(judged.mismatches.len(), 1, "{:?}", judged.mismatches);
}

#[test]
fn passes_that_differ_are_mismatches() {
    let held = held();
    let first = seen(&held.entries[0]);
    let report = GuestReport {
        first_pass: held.entries.iter().map(seen).collect(),
        passes: 20,
        differing_passes: 11,
        first_differences: vec![PassDifference {
            pass: 3,
            first,
            seen: GuestSeen { ebx: 0x28, ..first },
        }],
    };
    let summary = GuestSummary::from_report(&held, &report, &[]);
    assert!(!summary.passes_agree);
    assert_eq!(summary.differing_passes, 11);
    assert_eq!(
        summary.mismatches,
        ["pass 3 saw 0x7.0 ebx=0x00000028 where pass 0 saw ebx=0x00000029"]
    );
    assert!(!summary.consistent());
}

#[test]
fn drift_is_data_bit_by_bit_and_matches_the_lines() {
    let requested = CpuidTable::new(vec![
        entry(0x7, 0, 0x0000_0000),
        entry(0xd, 1, 0),
        entry(0x8000_0001, 0, 0),
    ]);
    let mut held = CpuidTable::new(vec![entry(0x7, 0, 0x0001_0020), entry(0xd, 1, 0)]);
    // 0xd.1.ebx (an XSAVE size: unnamed bits that track guest state) becomes 0x240.
    held.entries[1].ebx = 0x240;
    held.entries.push(entry(0x4000_0000, 0, 0));
    let report = drift::drift(&requested, &held);
    let changes = drift_changes(&report);
    let avx2 = changes
        .iter()
        .find(|c| c.feature == Some("avx2"))
        .expect("avx2 (7.0.ebx[5]) is named");
    assert_eq!(
        (
            avx2.register.as_str(),
            avx2.reg,
            avx2.bit,
            avx2.from,
            avx2.to,
            avx2.kind
        ),
        (
            "7.0.ebx",
            Some("ebx"),
            Some(5),
            Some(0),
            Some(1),
            DriftKind::KernelRewrote
        )
    );
    assert!(
        changes
            .iter()
            .any(|c| c.feature == Some("avx512f") && c.bit == Some(16))
    );
    let size = changes
        .iter()
        .find(|c| c.leaf == 0xd)
        .expect("the XSAVE size change");
    assert_eq!(
        (size.bit, size.from, size.to, size.kind),
        (None, Some(0), Some(0x240), DriftKind::TracksGuestState)
    );
    let kinds: Vec<DriftKind> = changes.iter().map(|c| c.kind).collect();
    assert!(kinds.contains(&DriftKind::EntryMissing) && kinds.contains(&DriftKind::EntryAdded));
    let missing = changes
        .iter()
        .find(|c| c.kind == DriftKind::EntryMissing)
        .unwrap();
    assert_eq!(
        (missing.register.as_str(), missing.reg),
        ("0x80000001.0", None)
    );
    let json = serde_json::to_value(avx2).unwrap();
    assert_eq!(json["kind"], "kernel_rewrote");
    // The transcript keeps its lines.
    let mut vcpu = VcpuReport {
        id: 0,
        drift: Default::default(),
        drift_changes: Default::default(),
        not_honoured: Vec::new(),
        already_absent: Vec::new(),
        guest: None,
        arm64_guest: None,
        exits: 0,
        exits_counted: 0,
        end: String::new(),
        run_end: RunEnd::Halted,
        held: Default::default(),
        hidden: Vec::new(),
    };
    vcpu.set_drift(&report);
    assert_eq!(*vcpu.drift, *report.lines());
    assert_eq!(*vcpu.drift_changes, *changes);
}

#[test]
fn counted_exits_are_said_only_when_there_are_some() {
    let mut vcpu = VcpuReport {
        id: 0,
        drift: Default::default(),
        drift_changes: Default::default(),
        not_honoured: Vec::new(),
        already_absent: Vec::new(),
        guest: None,
        arm64_guest: None,
        exits: 339,
        exits_counted: 0,
        end: String::new(),
        run_end: RunEnd::EndedBeyondBudget,
        held: Default::default(),
        hidden: Vec::new(),
    };
    assert_eq!(vcpu.exits_text(), "339 exits");
    vcpu.exits = 1_234_567;
    vcpu.exits_counted = 1_224_567;
    assert_eq!(
        vcpu.exits_text(),
        "1234567 exits (1224567 beyond the record_exits budget: counted, not decoded)"
    );
    let json = serde_json::to_value(&vcpu).unwrap();
    assert_eq!(json["exits_counted"], 1_224_567);
    assert_eq!(json["run_end"], "ended_beyond_budget");
    assert_eq!(RunEnd::EndedBeyondBudget.label(), "ended beyond budget");
}

#[test]
fn states_and_verdicts_are_snake_case() {
    let json = |v: &dyn erased::Ser| v.value();
    assert_eq!(
        json(&VmState::Completed),
        serde_json::json!({"status": "completed"})
    );
    assert_eq!(
        json(&VmState::Failed("guest fault".into())),
        serde_json::json!({"status": "failed", "detail": "guest fault"})
    );
    assert_eq!(
        json(&Verdict::RefusedByLock),
        serde_json::json!("refused_by_lock")
    );
    assert_eq!(json(&RunEnd::GuestFault), serde_json::json!("guest_fault"));
    let drift = Arm64Drift {
        register: "ID_AA64PFR0_EL1".into(),
        from: 1,
        to: 0x10,
        kind: DriftKind::KernelRewrote,
    };
    assert_eq!(
        drift.to_string(),
        "ID_AA64PFR0_EL1: expected 0x0000000000000001 after the write, the kernel holds 0x0000000000000010"
    );
    assert_eq!(json(&drift)["kind"], "kernel_rewrote");
}

mod erased {
    pub trait Ser {
        fn value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap()
        }
    }
}

#[test]
fn no_pass_at_all() {
    let held = held();
    let summary = GuestSummary::from_report(&held, &GuestReport::default(), &[]);
    assert_eq!(summary.passes, 0);
    assert_eq!(summary.unseen, 2);
    assert!(!summary.consistent());
}
