//! What identical VMs' x86 reports repeat is held once per fleet: VMs of one spec share their
//! vCPUs' held tables and drift (the same `Arc`s), VMs whose models differ do not, and sharing
//! changes nothing a report says. Runs on the model backend (a saved fingerprint), so it needs no
//! `/dev/kvm`.

use std::sync::Arc;
use supervisor::fleet::Fleet;
use supervisor::job::{Quiet, run_on};
use supervisor::model_cmd::backend::ModelHypervisor;
use supervisor::report::{JobReport, VcpuReport};
use vcpu::Hypervisor;
use vcpu::model::engine::Engine;

const FINGERPRINT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/fingerprints/x86-amd-family25-model17.host.json"
);

/// Three VMs of one spec, and one that hides features.
const SPEC: &str = r#"
name = "shared"

[[vm]]
name = "same"
count = 3
vcpus = 2

[[vm]]
name = "hiding"
vcpus = 2
cpu = { hide = ["avx2", "x2apic"] }
"#;

fn run(spec: &str) -> JobReport {
    let host = supervisor::model_cmd::load_host(std::path::Path::new(FINGERPRINT)).unwrap();
    let spec = supervisor::spec::parse(spec, "shared.toml").unwrap();
    let hv: Arc<dyn Hypervisor> = Arc::new(ModelHypervisor::new(Engine::new(host.facts)));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let fleet = Fleet::new(hv, &spec.name).await.unwrap();
            run_on(&fleet, &spec, &mut Quiet, futures::stream::empty()).await
        })
}

fn shares(a: &VcpuReport, b: &VcpuReport) -> bool {
    Arc::ptr_eq(&a.held, &b.held)
        && Arc::ptr_eq(&a.drift, &b.drift)
        && Arc::ptr_eq(&a.drift_changes, &b.drift_changes)
}

#[test]
fn vms_of_one_spec_share_their_drift_and_others_do_not() {
    let report = run(SPEC);
    let vm = |name: &str| report.vms.iter().find(|v| v.name == name).unwrap();
    let (first, second, third, hiding) = (vm("same-0"), vm("same-1"), vm("same-2"), vm("hiding"));
    for other in [second, third] {
        for (a, b) in first.vcpus.iter().zip(&other.vcpus) {
            assert!(shares(a, b), "{} vCPU {} does not share", other.name, b.id);
        }
    }
    for (a, b) in first.vcpus.iter().zip(&hiding.vcpus) {
        assert!(!Arc::ptr_eq(&a.held, &b.held));
        assert!(!Arc::ptr_eq(&a.drift_changes, &b.drift_changes));
        assert_ne!(*a.held, *b.held);
    }
    // A VM's vCPUs are not one another's (their APIC ids differ).
    assert!(!Arc::ptr_eq(&first.vcpus[0].held, &first.vcpus[1].held));
}

#[test]
fn a_shared_report_says_what_the_vm_would_have_worked_out_itself() {
    let report = run(SPEC);
    let alone = run(r#"
name = "alone"

[[vm]]
name = "hiding"
vcpus = 2
cpu = { hide = ["avx2", "x2apic"] }
"#);
    let hiding = report.vms.iter().find(|v| v.name == "hiding").unwrap();
    for (shared, own) in hiding.vcpus.iter().zip(&alone.vms[0].vcpus) {
        assert_eq!(*shared.held, *own.held);
        assert_eq!(*shared.drift, *own.drift);
        assert_eq!(*shared.drift_changes, *own.drift_changes);
        assert_eq!(shared.not_honoured, own.not_honoured);
        assert_eq!(shared.already_absent, own.already_absent);
        // JSON's `drift`, byte for byte.
        assert_eq!(
            serde_json::to_string(&shared.drift_changes).unwrap(),
            serde_json::to_string(&own.drift_changes).unwrap()
        );
    }
    assert!(!hiding.vcpus[0].drift.is_empty(), "this host drifts");
}
