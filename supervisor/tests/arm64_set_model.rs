//! An arm64 fleet on an in-memory kernel (this host need not be arm64): capability 239 enabled
//! before the first vCPU when a spec changes MIDR_EL1 and the host offers it (and not asked for
//! otherwise), the spec's raw register writes judged and written, and `set-model` carrying arm64
//! writes (refused `--hide`, refused bad names, judged writes before the first run).
//!
//! The kernel (`common::arm64_kernel`) takes any write here except a changed MIDR_EL1 on a VM
//! without the capability (`EINVAL`, as `set_imp_id_reg` answers); nothing runs, so the lock's after-run rule is tested
//! in the fleet's unit tests (`fleet/guest/arm64/tests.rs`), not here.

mod common;

use common::arm64_kernel::{HOST_ISAR0, HOST_MIDR, Kernel, create_on, runtime};
use protocol::Request;
use std::sync::Arc;
use supervisor::fleet::{ControlValue, Fleet};
use vcpu::VmId;
use vcpu::model::arm64::catalog::{ID_AA64ISAR0_EL1, MIDR_EL1};

const SPEC: &str = r#"
arch = "aarch64"

[[vm]]
name = "a"
vcpus = 2
[vm.arm64.registers]
MIDR_EL1 = "0x410fd4f2"
"#;

/// Create the spec's VMs on a host that offers capability 239 or not; the fleet and the kernel.
async fn create(text: &str, offers_239: bool) -> (Fleet, Arc<Kernel>) {
    let kernel = Kernel::new(false, offers_239);
    (create_on(kernel.host(), text).await, kernel)
}

fn position(calls: &[String], prefix: &str) -> Option<usize> {
    calls.iter().position(|c| c.starts_with(prefix))
}

#[test]
fn capability_239_is_enabled_before_the_first_vcpu_when_the_spec_changes_midr() {
    runtime().block_on(async {
        let (fleet, kernel) = create(SPEC, true).await;
        let calls = kernel.calls();
        let enable = position(&calls, "ENABLE_CAP cap=239").expect("capability 239 enabled");
        let first_vcpu = position(&calls, "CREATE_VCPU").unwrap();
        assert!(enable < first_vcpu, "{calls:?}");
        let midr = kernel.reg(VmId(0), MIDR_EL1.kvm_reg_id());
        assert_eq!(midr, 0x410f_d4f2);
        let report = fleet.remove("a").await.unwrap();
        let writes = &report.arm64.as_ref().unwrap().writes;
        assert!(
            writes.iter().any(|w| w.register == "MIDR_EL1"
                && w.sent
                && w.agrees
                && w.verdict.starts_with("accepted")),
            "{writes:?}"
        );
        fleet.shutdown().await;
    });
}

#[test]
fn without_capability_239_midr_is_refused_saying_so() {
    runtime().block_on(async {
        let (fleet, kernel) = create(SPEC, false).await;
        let calls = kernel.calls();
        assert!(position(&calls, "ENABLE_CAP").is_none(), "{calls:?}");
        assert_eq!(kernel.reg(VmId(0), MIDR_EL1.kvm_reg_id()), HOST_MIDR);
        let report = fleet.remove("a").await.unwrap();
        let write = &report.arm64.as_ref().unwrap().writes[0];
        assert!(!write.sent, "{write:?}");
        assert!(
            write.verdict.contains("EINVAL")
                && write
                    .verdict
                    .contains("does not offer KVM_CAP_ARM_WRITABLE_IMP_ID_REGS"),
            "{write:?}"
        );
        fleet.shutdown().await;
    });
}

#[test]
fn a_spec_that_leaves_midr_alone_asks_nothing_about_capability_239() {
    runtime().block_on(async {
        let (fleet, kernel) = create(
            "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[vm.arm64.registers]\nID_AA64ISAR0_EL1 = \"0x0221100010002100\"\n",
            true,
        )
        .await;
        let calls = kernel.calls();
        assert!(
            !calls.iter().any(|c| c.contains("239")),
            "capability 239 asked about: {calls:?}"
        );
        assert_eq!(
            kernel.reg(VmId(0), ID_AA64ISAR0_EL1.kvm_reg_id()),
            0x0221_1000_1000_2100
        );
        fleet.shutdown().await;
    });
}

#[test]
fn set_model_takes_arm64_writes_before_the_first_run() {
    runtime().block_on(async {
        let (fleet, kernel) = create(SPEC, false).await;
        let set = |items: &[&str]| Request::SetModel {
            vm: "a".into(),
            hide: vec![],
            set: items.iter().map(|s| s.to_string()).collect(),
        };
        // A lowered field: judged, written to every vCPU.
        let reply = fleet
            .handle(set(&["ID_AA64ISAR0_EL1.AES=0"]))
            .await
            .unwrap();
        assert!(matches!(reply, ControlValue::Model(_)));
        assert_eq!(
            kernel.reg(VmId(0), ID_AA64ISAR0_EL1.kvm_reg_id()),
            HOST_ISAR0 & !0xF0
        );
        // A raised one: refused by the model, the kernel never sees it.
        let before = kernel.call_count();
        let e = fleet
            .handle(set(&["ID_AA64ISAR0_EL1.AES=3"]))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("AES") && e.contains("EINVAL"), "{e}");
        assert_eq!(kernel.call_count(), before);
        // MIDR on a VM created without the capability.
        let e = fleet
            .handle(set(&["MIDR_EL1=0x410fd4f2"]))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("created without KVM_CAP_ARM_WRITABLE_IMP_ID_REGS"),
            "{e}"
        );
        // A typo, and x86's half of the request.
        let e = fleet
            .handle(set(&["MIDR_EL2=0"]))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `MIDR_EL1`"), "{e}");
        let e = fleet
            .handle(Request::SetModel {
                vm: "a".into(),
                hide: vec!["avx2".into()],
                set: vec![],
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("--hide hides x86 CPUID features"), "{e}");
        fleet.shutdown().await;
    });
}

#[test]
fn midr_fields_by_name_enable_capability_239_and_compose_the_register() {
    // MIDR_EL1's fields have names (Implementer, Variant, Architecture, PartNum, Revision); the
    // kernel judges the register whole, so the fields only compose the value.
    let spec = "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[vm.arm64]\n\
                id_registers = { \"MIDR_EL1.PartNum\" = 0xd4f, \"MIDR_EL1.Revision\" = 2 }\n";
    runtime().block_on(async {
        let (fleet, kernel) = create(spec, true).await;
        assert!(position(&kernel.calls(), "ENABLE_CAP cap=239").is_some());
        // HOST_MIDR 0x410fd0c1: PartNum 0xd0c -> 0xd4f, Revision 1 -> 2.
        assert_eq!(kernel.reg(VmId(0), MIDR_EL1.kvm_reg_id()), 0x410f_d4f2);
        let report = fleet.remove("a").await.unwrap();
        let write = &report.arm64.as_ref().unwrap().writes[0];
        assert!(
            write.sent && write.verdict.starts_with("accepted"),
            "{write:?}"
        );
        assert!(write.reason.contains("PartNum"), "{write:?}");
        fleet.shutdown().await;
    });
}
