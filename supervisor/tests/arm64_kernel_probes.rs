//! The kernel rules no capability shows, beyond the EL0/EL1 floor (`arm64_el_floor.rs`), on an
//! in-memory arm64 kernel (this host need not be arm64): ID_AA64DFR0_EL1.DebugVer's floor and
//! what `set_id_aa64dfr0_el1` does with PMUVer = 0xF on a vCPU without a PMU (6.7 on: stored as
//! 0; 6.3–6.6: kept; 6.1: refused). A spec whose verdict depends on one makes the fleet ask the
//! kernel once, by a probe write on a scratch VM, and plan by its answer; the probe's calls are
//! recorded, `trace fingerprint` reads its answer, and `replay --model` with that fingerprint
//! predicts every call.

mod common;

use common::arm64_kernel::{HOST_DFR0, Kernel, Rules, create_on, runtime};
use recorder::{
    HostFingerprint, JobInputs, Recorder, RecordingHypervisor, ReplayHypervisor, Trace, TraceEnd,
    TraceHeader,
};
use std::sync::Arc;
use supervisor::fleet::Fleet;
use vcpu::model::arm64::catalog::ID_AA64DFR0_EL1;
use vcpu::model::arm64::host::PmuImpDef;
use vcpu::{GuestArch, Hypervisor};

/// DebugVer lowered from 9 to 5.
const DEBUG_VER_5: &str = r#"
arch = "aarch64"

[[vm]]
name = "a"
[vm.arm64]
id_registers = { "ID_AA64DFR0_EL1.DebugVer" = 5 }
"#;

/// PMUVer = 0xF on a vCPU without a PMU (PMUVer reads 0).
const PMUVER_IMP_DEF: &str = r#"
arch = "aarch64"

[[vm]]
name = "a"
[vm.arm64]
id_registers = { "ID_AA64DFR0_EL1.PMUVer" = 15 }
"#;

/// How many scratch VMs named `name` the kernel saw created.
fn probes(kernel: &Kernel, name: &str) -> usize {
    kernel
        .calls()
        .iter()
        .filter(|c| c.starts_with("CREATE_VM") && c.ends_with(name))
        .count()
}

/// The fleet VM's ID_AA64DFR0_EL1 and the verdict of its one write.
async fn outcome(fleet: Fleet, kernel: &Kernel) -> (u64, String, bool) {
    let held = kernel.fleet_values(ID_AA64DFR0_EL1.kvm_reg_id())[0];
    let report = fleet.remove("a").await.unwrap();
    let write = report.arm64.unwrap().writes[0].clone();
    fleet.shutdown().await;
    (held, write.verdict, write.sent)
}

fn rules(pmu: PmuImpDef, debug_ver_floor: bool) -> Rules {
    Rules {
        pmu,
        debug_ver_floor,
        ..Rules::new(true, false)
    }
}

#[test]
fn the_debug_ver_floor_is_asked_once_and_followed() {
    for floor in [false, true] {
        let kernel = Kernel::with(rules(PmuImpDef::ReadsAsNotImplemented, floor));
        let (held, verdict, sent) = runtime().block_on(async {
            let fleet = create_on(kernel.host(), DEBUG_VER_5).await;
            outcome(fleet, &kernel).await
        });
        assert_eq!(probes(&kernel, "debug-ver-floor-probe"), 1, "floor {floor}");
        if floor {
            assert!(!sent, "{verdict}");
            assert_eq!(held, HOST_DFR0);
            for part in ["EINVAL", "ID_AA64DFR0_EL1.DebugVer", "enforces it"] {
                assert!(verdict.contains(part), "{part}: {verdict}");
            }
        } else {
            assert!(sent && verdict.starts_with("accepted"), "{verdict}");
            assert_eq!(held & 0xF, 5);
        }
    }
}

#[test]
fn pmuver_imp_def_follows_the_kernel_measured() {
    // 6.7 on (writable masks): stored as 0, no probe needed.
    // 6.3–6.6 and 6.1 (no masks): the probe tells them apart.
    let cases = [
        (PmuImpDef::ReadsAsNotImplemented, 0, Some(HOST_DFR0)),
        (PmuImpDef::Kept, 1, Some(HOST_DFR0 | 0xF << 8)),
        (PmuImpDef::Refused, 1, None),
    ];
    for (pmu, asked, held_after) in cases {
        let kernel = Kernel::with(rules(pmu, true));
        let (held, verdict, sent) = runtime().block_on(async {
            let fleet = create_on(kernel.host(), PMUVER_IMP_DEF).await;
            outcome(fleet, &kernel).await
        });
        assert_eq!(probes(&kernel, "pmu-imp-def-probe"), asked, "{pmu:?}");
        match held_after {
            Some(expected) => {
                assert!(
                    sent && verdict.starts_with("accepted"),
                    "{pmu:?}: {verdict}"
                );
                assert_eq!(held, expected, "{pmu:?}");
            }
            None => {
                assert!(!sent, "{pmu:?}: {verdict}");
                assert_eq!(held, HOST_DFR0);
                for part in ["EINVAL", "ID_AA64DFR0_EL1.PMUVer", "refuses PMUVer = 0xF"] {
                    assert!(verdict.contains(part), "{part}: {verdict}");
                }
            }
        }
    }
}

/// Record `spec` on a kernel with `rules`; the trace and the VM's write verdict.
fn record(rules: Rules, spec: &str) -> (Trace, Vec<String>) {
    let recorder = Recorder::in_memory();
    let hv: Arc<dyn Hypervisor> = Arc::new(RecordingHypervisor::new(
        Box::new(common::arm64_kernel::Host(Kernel::with(rules))),
        recorder.clone(),
    ));
    let verdicts = runtime().block_on(async { verdicts(create_on(hv, spec).await).await });
    let events = recorder.events();
    let trace = Trace {
        header: TraceHeader::new(
            "test",
            GuestArch::Aarch64,
            HostFingerprint::default(),
            JobInputs {
                command: "run".into(),
                spec_source: "test.toml".into(),
                spec_text: spec.into(),
            },
        ),
        end: TraceEnd::Complete {
            events: events.len() as u64,
        },
        events,
    };
    (trace, verdicts)
}

async fn verdicts(fleet: Fleet) -> Vec<String> {
    let report = fleet.remove("a").await.unwrap();
    fleet.shutdown().await;
    report
        .arm64
        .unwrap()
        .writes
        .iter()
        .map(|w| w.verdict.clone())
        .collect()
}

#[test]
fn the_probes_are_recorded_replayed_read_and_predicted() {
    let cases = [
        (rules(PmuImpDef::ReadsAsNotImplemented, false), DEBUG_VER_5),
        (rules(PmuImpDef::ReadsAsNotImplemented, true), DEBUG_VER_5),
        (rules(PmuImpDef::Kept, true), PMUVER_IMP_DEF),
        (rules(PmuImpDef::Refused, true), PMUVER_IMP_DEF),
    ];
    for (rules, spec) in cases {
        let (trace, live) = record(rules, spec);
        let facts = supervisor::fingerprint::from_trace::facts(&trace);
        let probes = facts.arm64.probes;
        if spec == DEBUG_VER_5 {
            assert_eq!(
                probes.debug_ver_floor,
                Some(rules.debug_ver_floor),
                "{rules:?}"
            );
            assert_eq!(probes.pmu_imp_def, None);
        } else {
            assert_eq!(probes.pmu_imp_def, Some(rules.pmu), "{rules:?}");
            assert_eq!(probes.debug_ver_floor, None);
        }
        // replay --model with the trace's own fingerprint predicts the probe and the plan.
        let document =
            serde_json::to_string(&supervisor::fingerprint::Fingerprint::build(&facts)).unwrap();
        let model = supervisor::model_cmd::facts_from_str(&document, "fingerprint").unwrap();
        assert_eq!(model.arm64.probes, probes);
        let compared = supervisor::model_cmd::replay::compare(&trace, model);
        assert!(
            compared.judged > 0 && compared.differences.is_empty(),
            "{rules:?}: {compared:?}"
        );
        // The replay takes the same path, probe included.
        let replay = ReplayHypervisor::new(&trace).unwrap();
        let monitor = replay.monitor();
        let replayed =
            runtime().block_on(async { verdicts(create_on(Arc::new(replay), spec).await).await });
        monitor.finish().unwrap();
        assert_eq!(replayed, live, "{rules:?}");
    }
}
