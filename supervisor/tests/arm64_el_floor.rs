//! The EL0/EL1 floor on an in-memory arm64 kernel (this host need not be arm64): a spec that
//! lowers ID_AA64PFR0_EL1.EL1 to 0 makes the fleet ask the kernel once, by a probe write on a
//! scratch VM, and plan by its answer: a kernel that accepts the lowering (6.12) → vmfleet
//! accepts and writes it; one that refuses it (after 6.12) → vmfleet refuses it with `EINVAL`,
//! naming the field, the minimum and that the host enforces it, and does not send it. A spec
//! that lowers nothing asks nothing (so recorded traces replay as they did).
//!
//! Recorded, the probe's calls are in the trace like every call: the trace replays with them,
//! and `trace fingerprint`'s facts carry its answer.
//!
//! The kernel is `common::arm64_kernel`'s: each VM has its own registers there (a probe VM's
//! write must not reach the fleet's VMs).

mod common;

use common::arm64_kernel::{HOST_PFR0, Kernel, create_on, runtime};
use recorder::{
    HostFingerprint, JobInputs, Recorder, RecordingHypervisor, ReplayHypervisor, Trace, TraceEnd,
    TraceHeader,
};
use std::sync::Arc;
use supervisor::fleet::Fleet;
use vcpu::model::arm64::catalog::ID_AA64PFR0_EL1;
use vcpu::{GuestArch, Hypervisor};

/// EL1 lowered from 1 to 0, in two VMs.
const LOWERS_EL1: &str = r#"
arch = "aarch64"

[[vm]]
name = "a"
[vm.arm64.registers]
ID_AA64PFR0_EL1 = "0x0000000001000001"

[[vm]]
name = "b"
[vm.arm64.registers]
ID_AA64PFR0_EL1 = "0x0000000001000001"
"#;

/// Create the spec's VMs on a kernel that enforces the floor or not.
async fn create(text: &str, enforces_floor: bool) -> (Fleet, Arc<Kernel>) {
    let kernel = Kernel::new(enforces_floor, false);
    (create_on(kernel.host(), text).await, kernel)
}

fn probes(calls: &[String]) -> usize {
    calls
        .iter()
        .filter(|c| c.starts_with("CREATE_VM") && c.ends_with("el-floor-probe"))
        .count()
}

/// The fleet VMs' PFR0 (the probe VM left out).
fn fleet_pfr0(kernel: &Kernel) -> Vec<u64> {
    kernel.fleet_values(ID_AA64PFR0_EL1.kvm_reg_id())
}

#[test]
fn a_kernel_that_accepts_the_lowering_is_followed_after_one_probe() {
    runtime().block_on(async {
        let (fleet, kernel) = create(LOWERS_EL1, false).await;
        let calls = kernel.calls();
        assert_eq!(probes(&calls), 1, "{calls:?}");
        assert_eq!(fleet_pfr0(&kernel), vec![0x0100_0001; 2]);
        for name in ["a", "b"] {
            let report = fleet.remove(name).await.unwrap();
            let write = &report.arm64.as_ref().unwrap().writes[0];
            assert!(
                write.sent && write.agrees && write.verdict.starts_with("accepted"),
                "{write:?}"
            );
        }
        fleet.shutdown().await;
    });
}

#[test]
fn a_kernel_that_refuses_it_is_refused_with_einval_saying_the_host_enforces_it() {
    runtime().block_on(async {
        let (fleet, kernel) = create(LOWERS_EL1, true).await;
        let calls = kernel.calls();
        assert_eq!(probes(&calls), 1, "{calls:?}");
        assert_eq!(fleet_pfr0(&kernel), vec![HOST_PFR0; 2]);
        let report = fleet.remove("a").await.unwrap();
        let write = &report.arm64.as_ref().unwrap().writes[0];
        assert!(!write.sent, "{write:?}");
        for part in [
            "EINVAL",
            "ID_AA64PFR0_EL1.EL1",
            "below 0x1",
            "this host's kernel enforces it",
        ] {
            assert!(write.verdict.contains(part), "{part}: {write:?}");
        }
        fleet.shutdown().await;
    });
}

#[test]
fn a_spec_that_lowers_nothing_asks_nothing() {
    runtime().block_on(async {
        let (fleet, kernel) = create(
            "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[vm.arm64.registers]\nID_AA64ISAR0_EL1 = \"0x0221100010002100\"\n",
            true,
        )
        .await;
        let calls = kernel.calls();
        assert_eq!(probes(&calls), 0, "{calls:?}");
        assert_eq!(calls.iter().filter(|c| c.starts_with("CREATE_VM")).count(), 1);
        fleet.shutdown().await;
    });
}

#[test]
fn the_probe_is_recorded_replayed_and_read_by_trace_fingerprint() {
    for enforces in [false, true] {
        let recorder = Recorder::in_memory();
        let hv: Arc<dyn Hypervisor> = Arc::new(RecordingHypervisor::new(
            Box::new(common::arm64_kernel::Host(Kernel::new(enforces, false))),
            recorder.clone(),
        ));
        let verdicts = |fleet: Fleet| async move {
            let mut verdicts = Vec::new();
            for name in ["a", "b"] {
                let report = fleet.remove(name).await.unwrap();
                verdicts.push(report.arm64.unwrap().writes[0].verdict.clone());
            }
            fleet.shutdown().await;
            verdicts
        };
        let live = runtime().block_on(async { verdicts(create_on(hv, LOWERS_EL1).await).await });
        let events = recorder.events();
        let trace = Trace {
            header: TraceHeader::new(
                "test",
                GuestArch::Aarch64,
                HostFingerprint::default(),
                JobInputs {
                    command: "run".into(),
                    spec_source: "test.toml".into(),
                    spec_text: LOWERS_EL1.into(),
                },
            ),
            end: TraceEnd::Complete {
                events: events.len() as u64,
            },
            events,
        };
        let facts = supervisor::fingerprint::from_trace::facts(&trace);
        assert_eq!(facts.arm64.probes.el_floor, Some(enforces));
        // replay --model with the trace's own fingerprint predicts the probe and the plan.
        let document =
            serde_json::to_string(&supervisor::fingerprint::Fingerprint::build(&facts)).unwrap();
        let model = supervisor::model_cmd::facts_from_str(&document, "fingerprint").unwrap();
        assert_eq!(model.arm64.probes.el_floor, Some(enforces));
        let compared = supervisor::model_cmd::replay::compare(&trace, model.clone());
        assert!(
            compared.judged > 0 && compared.differences.is_empty(),
            "enforces {enforces}: {compared:?}"
        );
        // Without the fact, the default (the floor assumed) mispredicts a 6.12 host's answers.
        let mut unmeasured = model;
        unmeasured.arm64.probes.el_floor = None;
        let compared = supervisor::model_cmd::replay::compare(&trace, unmeasured);
        assert_eq!(compared.differences.is_empty(), enforces, "{compared:?}");
        let replay = ReplayHypervisor::new(&trace).unwrap();
        let monitor = replay.monitor();
        let replayed = runtime()
            .block_on(async { verdicts(create_on(Arc::new(replay), LOWERS_EL1).await).await });
        monitor.finish().unwrap();
        assert_eq!(replayed, live, "enforces {enforces}");
    }
}

#[test]
fn set_model_lowering_el1_asks_the_kernel_too() {
    for enforces in [false, true] {
        runtime().block_on(async {
            let (fleet, kernel) =
                create("arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n", enforces).await;
            assert_eq!(probes(&kernel.calls()), 0);
            let reply = fleet
                .handle(protocol::Request::SetModel {
                    vm: "a".into(),
                    hide: vec![],
                    set: vec!["ID_AA64PFR0_EL1.EL1=0".into()],
                })
                .await;
            assert_eq!(probes(&kernel.calls()), 1);
            match (enforces, reply) {
                (false, Ok(_)) => assert_eq!(fleet_pfr0(&kernel), vec![0x0100_0001]),
                (true, Err(e)) => {
                    let e = e.to_string();
                    assert!(
                        e.contains("ID_AA64PFR0_EL1.EL1")
                            && e.contains("EINVAL")
                            && e.contains("this host's kernel enforces it"),
                        "{e}"
                    );
                    assert_eq!(fleet_pfr0(&kernel), vec![HOST_PFR0]);
                }
                (enforces, reply) => panic!("enforces {enforces}: {:?}", reply.map(|_| ())),
            }
            fleet.shutdown().await;
        });
    }
}
