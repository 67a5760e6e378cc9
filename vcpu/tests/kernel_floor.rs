//! The EL0/EL1 floor (issue 12): `set_id_aa64pfr0_el1` refuses ID_AA64PFR0_EL1.EL0 or .EL1 = 0
//! on kernels after 6.12 and accepts it on 6.12, and no capability tells the two apart. vmfleet
//! judges it as the host was measured (`HostView::probes.el_floor`, a probe write on a scratch
//! VM): measured accepting → accepted; measured refusing → `EINVAL` saying the host enforces it;
//! not measured → the documented default, the newer kernels' refusal, saying it was not measured
//! (and counted as vmfleet's cautious reading). The host is the 6.12 VM of the reference log.

mod common;

use common::reference;
use vcpu::Errno;
use vcpu::model::arm64::catalog::ID_AA64PFR0_EL1;
use vcpu::model::arm64::features::{VcpuFeature, VcpuFeatureSet};
use vcpu::model::arm64::fields;
use vcpu::model::arm64::host::{HostView, KernelProbes};
use vcpu::model::arm64::validate::{Arm64Rule, Verdict, judge_after_run, judge_before_run};

/// The 6.12 VM of the log right after the first VCPU_INIT, with `el_floor` as measured.
fn host(el_floor: Option<bool>) -> HostView {
    HostView {
        probes: KernelProbes { el_floor },
        ..reference::host_6_12(reference::masks_after_init())
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
                measured: true
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

#[test]
fn other_minimums_do_not_depend_on_the_probe() {
    // DebugVer < 6 is refused by every kernel with writable ID registers, measured or not.
    for el_floor in [None, Some(false), Some(true)] {
        let host = host(el_floor);
        let id = vcpu::model::arm64::catalog::ID_AA64DFR0_EL1.kvm_reg_id();
        let limit = host.value(id).unwrap();
        let debug = fields::field_of(vcpu::model::arm64::catalog::ID_AA64DFR0_EL1, "DebugVer")
            .unwrap()
            .field();
        let verdict = judge_before_run(id, debug.with(limit, 5), &host, features());
        assert!(
            matches!(
                verdict.refusal().map(|r| &r.rule),
                Some(Arm64Rule::BelowMinimum { minimum: 6, .. })
            ),
            "{el_floor:?}: {verdict}"
        );
    }
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
}
