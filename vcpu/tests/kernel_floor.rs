//! The EL0/EL1 floor (issue 12): `set_id_aa64pfr0_el1` refuses ID_AA64PFR0_EL1.EL0 or .EL1 = 0
//! on kernels after 6.12 and accepts it on 6.12, and no capability tells the two apart. vmfleet
//! judges it as the host was measured (`HostView::probes.el_floor`, a probe write on a scratch
//! VM): measured accepting → accepted; measured refusing → `EINVAL` saying the host enforces it;
//! not measured → the documented default, the newer kernels' refusal, saying it was not measured
//! (and counted as vmfleet's cautious reading). The host is the 6.12 VM of the reference log.
//!
//! The same for the other rules no capability shows: ID_AA64DFR0_EL1.DebugVer's floor
//! (`probes.debug_ver_floor`) and what the kernel does with PMUVer = 0xF on a vCPU without a
//! PMU (`probes.pmu_imp_def`: stored as 0 from 6.7, kept by 6.3–6.6, refused by 6.1).

mod common;

use common::reference;
use vcpu::Errno;
use vcpu::model::arm64::catalog::ID_AA64DFR0_EL1;
use vcpu::model::arm64::catalog::ID_AA64PFR0_EL1;
use vcpu::model::arm64::features::{VcpuFeature, VcpuFeatureSet};
use vcpu::model::arm64::fields;
use vcpu::model::arm64::host::{HostView, KernelProbe, KernelProbes, PmuImpDef};
use vcpu::model::arm64::validate::WritableMasks;
use vcpu::model::arm64::validate::{Arm64Rule, Verdict, judge_after_run, judge_before_run};

/// The 6.12 VM of the log right after the first VCPU_INIT, with `el_floor` as measured.
fn host(el_floor: Option<bool>) -> HostView {
    HostView {
        probes: KernelProbes {
            el_floor,
            ..KernelProbes::NOT_MEASURED
        },
        ..reference::host_6_12(reference::masks_after_init())
    }
}

/// The 6.12 VM with `probes` measured and `masks` (the reported ones, or a kernel without them).
fn host_with(probes: KernelProbes, masks: WritableMasks) -> HostView {
    HostView {
        probes,
        ..reference::host_6_12(masks)
    }
}

fn features() -> VcpuFeatureSet {
    VcpuFeatureSet::of(&[VcpuFeature::Psci0_2])
}

/// PFR0 of the log's VM with `name` set to 0.
fn lowered(host: &HostView, name: &str) -> (u64, u64) {
    let id = ID_AA64PFR0_EL1.kvm_reg_id();
    let limit = host.value(id).unwrap();
    let f = fields::field_of(ID_AA64PFR0_EL1, name).unwrap().field();
    assert!(f.raw(limit) >= 1, "{name} of the limit {limit:#x}");
    (id, f.with(limit, 0))
}

#[test]
fn a_kernel_measured_to_accept_the_lowering_is_followed() {
    let host = host(Some(false));
    for name in ["EL1", "EL0"] {
        let (id, value) = lowered(&host, name);
        assert_eq!(
            judge_before_run(id, value, &host, features()),
            Verdict::Accepted { readback: value },
            "{name}"
        );
    }
}

#[test]
fn a_kernel_measured_to_refuse_it_is_refused_with_einval_naming_the_field() {
    let host = host(Some(true));
    for name in ["EL1", "EL0"] {
        let (id, value) = lowered(&host, name);
        let verdict = judge_before_run(id, value, &host, features());
        let refusal = verdict.refusal().expect("refused");
        assert_eq!(refusal.errno, Errno::EINVAL);
        assert_eq!(
            refusal.rule,
            Arm64Rule::KernelFloor {
                minimum: 1,
                measured: true,
                probe: KernelProbe::ElFloor,
            }
        );
        assert!(!refusal.rule.is_conservative());
        let text = refusal.to_string();
        assert!(text.contains(&format!("ID_AA64PFR0_EL1.{name}")), "{text}");
        assert!(text.contains("below 0x1"), "{text}");
        assert!(text.contains("this host's kernel enforces it"), "{text}");
    }
}

#[test]
fn unmeasured_the_floor_is_assumed_and_the_refusal_says_so() {
    let host = host(None);
    let (id, value) = lowered(&host, "EL1");
    let verdict = judge_before_run(id, value, &host, features());
    let refusal = verdict.refusal().expect("refused");
    assert_eq!(refusal.errno, Errno::EINVAL);
    assert!(refusal.rule.is_conservative());
    let text = refusal.to_string();
    assert!(text.contains("ID_AA64PFR0_EL1.EL1"), "{text}");
    assert!(text.contains("not measured on this host"), "{text}");
}

/// ID_AA64DFR0_EL1 of the log's VM with `name` set to `raw`, and its id.
fn dfr0_with(host: &HostView, name: &str, raw: u64) -> (u64, u64) {
    let id = ID_AA64DFR0_EL1.kvm_reg_id();
    let limit = host.value(id).unwrap();
    let f = fields::field_of(ID_AA64DFR0_EL1, name).unwrap().field();
    (id, f.with(limit, raw))
}

#[test]
fn other_minimums_do_not_depend_on_the_el_floor_probe() {
    // DebugVer < 6 has its own probe; the EL0/EL1 answer changes nothing about it.
    for el_floor in [None, Some(false), Some(true)] {
        let host = host(el_floor);
        let (id, value) = dfr0_with(&host, "DebugVer", 5);
        let verdict = judge_before_run(id, value, &host, features());
        assert!(
            matches!(
                verdict.refusal().map(|r| &r.rule),
                Some(Arm64Rule::KernelFloor {
                    minimum: 6,
                    measured: false,
                    probe: KernelProbe::DebugVerFloor,
                })
            ),
            "{el_floor:?}: {verdict}"
        );
    }
}

#[test]
fn the_debug_ver_floor_follows_its_probe() {
    let probes = |debug_ver_floor| KernelProbes {
        debug_ver_floor,
        ..KernelProbes::NOT_MEASURED
    };
    let verdict = |debug_ver_floor| {
        let host = host_with(probes(debug_ver_floor), reference::masks_after_init());
        let (id, value) = dfr0_with(&host, "DebugVer", 5);
        (value, judge_before_run(id, value, &host, features()))
    };
    let (value, accepted) = verdict(Some(false));
    assert_eq!(accepted, Verdict::Accepted { readback: value });
    let (_, enforced) = verdict(Some(true));
    let refusal = enforced.refusal().expect("refused");
    assert_eq!(refusal.errno, Errno::EINVAL);
    assert!(!refusal.rule.is_conservative());
    let text = refusal.to_string();
    assert!(text.contains("ID_AA64DFR0_EL1.DebugVer"), "{text}");
    assert!(text.contains("this host's kernel enforces it"), "{text}");
    let (_, unmeasured) = verdict(None);
    let refusal = unmeasured.refusal().expect("refused");
    assert!(refusal.rule.is_conservative());
    assert!(refusal.to_string().contains("not measured"), "{refusal}");
}

#[test]
fn pmuver_imp_def_follows_its_probe_on_a_vcpu_without_a_pmu() {
    let judge = |pmu_imp_def, masks: WritableMasks| {
        let host = host_with(
            KernelProbes {
                pmu_imp_def,
                ..KernelProbes::NOT_MEASURED
            },
            masks,
        );
        let (id, value) = dfr0_with(&host, "PMUVer", 0xF);
        let limit = host.value(id).unwrap();
        assert_eq!(
            (limit >> 8) & 0xF,
            0,
            "PMUVer reads 0 without a PMU: {limit:#x}"
        );
        (value, limit, judge_before_run(id, value, &host, features()))
    };
    let reported = reference::masks_after_init;
    let pre = || WritableMasks::PreWritableIdRegisters;
    // The 6.7 handler: stored as 0, whether measured or assumed from the reported masks.
    for measured in [None, Some(PmuImpDef::ReadsAsNotImplemented)] {
        let (_, limit, verdict) = judge(measured, reported());
        assert_eq!(
            verdict,
            Verdict::Accepted { readback: limit },
            "{measured:?}"
        );
    }
    // 6.3–6.6, measured: kept as written, even without writable masks.
    for masks in [reported(), pre()] {
        let (value, _, verdict) = judge(Some(PmuImpDef::Kept), masks);
        assert_eq!(verdict, Verdict::Accepted { readback: value });
    }
    // 6.1, measured: EINVAL, not cautious.
    let (_, _, verdict) = judge(Some(PmuImpDef::Refused), pre());
    let refusal = verdict.refusal().expect("refused");
    assert_eq!(refusal.errno, Errno::EINVAL);
    assert!(!refusal.rule.is_conservative());
    assert!(
        refusal.to_string().contains("ID_AA64DFR0_EL1.PMUVer"),
        "{refusal}"
    );
    // Without masks and not measured: refused as vmfleet's cautious reading, saying so.
    let (_, _, verdict) = judge(None, pre());
    let refusal = verdict.refusal().expect("refused");
    assert_eq!(refusal.rule, Arm64Rule::PmuImpDef { measured: None });
    assert!(refusal.rule.is_conservative());
    assert!(refusal.to_string().contains("not measured"), "{refusal}");
}

#[test]
fn a_kept_pmuver_imp_def_needs_a_vcpu_without_a_pmu() {
    let host = host_with(
        KernelProbes {
            pmu_imp_def: Some(PmuImpDef::Kept),
            ..KernelProbes::NOT_MEASURED
        },
        WritableMasks::PreWritableIdRegisters,
    );
    let pmu = VcpuFeatureSet::of(&[VcpuFeature::Psci0_2, VcpuFeature::PmuV3]);
    // The limit with a PMU carries a PMU version; 0xF is no version.
    let id = ID_AA64DFR0_EL1.kvm_reg_id();
    let f = fields::field_of(ID_AA64DFR0_EL1, "PMUVer").unwrap().field();
    let limit = f.with(host.value(id).unwrap(), 1);
    let mut values = host.values.clone();
    values.insert(id, limit);
    let host = HostView { values, ..host };
    let verdict = judge_before_run(id, f.with(limit, 0xF), &host, pmu);
    assert!(
        matches!(
            verdict.refusal().map(|r| &r.rule),
            Some(Arm64Rule::PmuImpDef {
                measured: Some(PmuImpDef::Kept)
            })
        ),
        "{verdict}"
    );
}

#[test]
fn after_the_run_the_lock_applies_the_measured_floor_too() {
    // The set handler's check runs before the has-run comparison: a kernel that enforces the
    // floor answers EINVAL, not EBUSY, after the run as well.
    let host = host(Some(true));
    let (id, value) = lowered(&host, "EL1");
    let held = host.value(id).unwrap();
    let verdict = judge_after_run(id, value, held, &host, features());
    assert_eq!(
        verdict.refusal().map(|r| r.errno),
        Some(Errno::EINVAL),
        "{verdict}"
    );
    let accepting = self::host(Some(false));
    let verdict = judge_after_run(id, value, held, &accepting, features());
    assert_eq!(
        verdict.refusal().map(|r| r.errno),
        Some(Errno::EBUSY),
        "{verdict}"
    );
}

#[test]
fn the_newer_kernels_table_names_the_floor_and_how_it_shows() {
    use vcpu::model::arm64::kernels::{CHANGES, HostSign};
    let floor: Vec<_> = CHANGES
        .iter()
        .filter(|c| c.shows_as.contains(&HostSign::Probe("el_floor")))
        .collect();
    assert_eq!(floor.len(), 1);
    assert!(floor[0].what.contains("EL0") && floor[0].what.contains("EL1"));
    // Every probe the table names is one vmfleet measures.
    for change in CHANGES {
        for sign in change.shows_as {
            if let HostSign::Probe(name) = sign {
                assert!(
                    KernelProbe::ALL.iter().any(|p| p.name() == *name),
                    "{}: {name}",
                    change.since
                );
            }
        }
    }
}
