//! Tests of `spec` (arm64_tests), kept beside it so the module itself stays short.

use super::*;
use vcpu::model::arm64::{HypercallService, VcpuFeature};

const ARM64: &str = r#"
arch = "aarch64"

[[vm]]
name = "edge"
[vm.arm64]
features = ["psci-0.2", "pmu-v3"]
psci_version = "1.0"
id_registers = { "ID_AA64ISAR0_EL1.AES" = 0 }
hypercalls = { trng = false }

[[vm.after_run]]
action = "set"
field = "ID_AA64PFR0_EL1.CSV3"
value = 0

[[vm]]
name = "plain"
"#;

#[test]
fn cross_check_from_the_command_line_goes_into_the_text() {
    let (text, spec) = parse_cross_checked(ARM64, "arm64.toml").unwrap();
    assert!(spec.cross_check && spec.vms.iter().all(|vm| vm.cross_check));
    assert!(text.starts_with("cross_check = true") && text.ends_with(ARM64));
    // Already there: the text is kept.
    let with = format!("cross_check = true\n{ARM64}");
    assert_eq!(parse_cross_checked(&with, "arm64.toml").unwrap().0, with);
    // An x86 fleet: the error points at its `arch`, or at the start without one.
    let e = parse_cross_checked("arch = \"x86_64\"\n[[vm]]\nname = \"a\"\n", "x.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("x.toml:1:8: `--cross-check` applies to aarch64 fleets"),
        "{e}"
    );
    let e = parse_cross_checked("[[vm]]\nname = \"a\"\n", "x.toml").unwrap_err();
    assert_eq!((e.line, e.column), (1, 1), "{e}");
    // A spec that says no: the error is at its own line, not one shifted by the flag.
    let e = parse_cross_checked(&format!("{ARM64}\n"), "arm64.toml").map(|_| ());
    assert!(e.is_ok());
    let no = ARM64.replacen(
        "arch = \"aarch64\"\n",
        "arch = \"aarch64\"\ncross_check = false\n",
        1,
    );
    let e = parse_cross_checked(&no, "arm64.toml").unwrap_err();
    assert_eq!((e.line, e.column), (3, 15), "{e}");
    assert!(e.message.contains("contradicts `--cross-check`"), "{e}");
}

#[test]
fn an_arm64_fleet_carries_its_model() {
    let spec = parse(ARM64, "arm64.toml").unwrap();
    assert_eq!(spec.arch, GuestArch::Aarch64);
    let edge = spec.vms[0].arm64.as_ref().unwrap();
    assert!(edge.features.contains(VcpuFeature::PmuV3));
    assert_eq!(edge.hypercalls.get(HypercallService::Trng), Some(false));
    assert_eq!(edge.id_registers.len(), 1);
    assert!(matches!(
        spec.vms[0].after_run[0],
        AfterRun::SetField { value: 0, .. }
    ));
    // A VM without a table gets the host's model.
    assert_eq!(spec.vms[1].arm64, Some(Arm64ModelSpec::default()));
}

#[test]
fn the_fleet_sets_the_unknown_register_policy_a_vm_does_not_choose() {
    let text = "arch = \"aarch64\"\nunknown_registers = \"refuse\"\n[[vm]]\nname = \"a\"\n[[vm]]\nname = \"b\"\n[vm.arm64]\nunknown_registers = \"keep-host\"\n";
    let spec = parse(text, "f.toml").unwrap();
    let policy = |i: usize| spec.vms[i].arm64.as_ref().unwrap().unknown_registers;
    assert_eq!(policy(0), UnknownRegisterPolicy::Refuse);
    assert_eq!(policy(1), UnknownRegisterPolicy::KeepHost);
    let e = parse(
        "unknown_registers = \"clear\"\n[[vm]]\nname = \"a\"\n",
        "f.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("f.toml:1:") && e.contains("aarch64"), "{e}");
}

fn err(text: &str) -> String {
    parse(text, "arm64.toml").unwrap_err().to_string()
}

#[test]
fn arm64_mistakes_are_named_where_they_are() {
    let e = err("[[vm]]\nname = \"a\"\n[vm.arm64]\nhypercalls = { trng = false }\n");
    assert!(
        e.contains("arm64.toml:3:") && e.contains("arch = \"aarch64\""),
        "{e}"
    );
    let e = err("arch = \"sparc\"\n[[vm]]\nname = \"a\"\n");
    assert!(
        e.contains("arm64.toml:1:") && e.contains("unknown arch `sparc`"),
        "{e}"
    );
    let e = err("arch = \"aarch64\"\n[[vm]]\nname = \"a\"\ncpu = { hide = [\"avx2\"] }\n");
    assert!(e.contains("`cpu` is the x86 CPUID model"), "{e}");
    let e = err(
        "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[vm.arm64]\nid_registers = { \"ID_AA64ISAR0_EL1.AESX\" = 0 }\n",
    );
    assert!(e.contains("AESX"), "{e}");
    let e = err(
        "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[[vm.after_run]]\naction = \"set\"\nfield = \"ID_AA64PFR0_EL1.CSV3\"\n",
    );
    assert!(e.contains("needs `value`"), "{e}");
    let e = err(
        "[[vm]]\nname = \"a\"\n[[vm.after_run]]\naction = \"set\"\nfield = \"ID_AA64PFR0_EL1.CSV3\"\nvalue = 0\n",
    );
    assert!(e.contains("is for aarch64 fleets"), "{e}");
    let e = err("arch = \"aarch64\"\n[[vm]]\nname = \"a\"\nfault_after_passes = 1\n");
    assert!(e.contains("x86 guest"), "{e}");
}

#[test]
fn raw_register_writes_are_read_and_their_mistakes_placed() {
    let spec = parse(
        "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[vm.arm64.registers]\nMPIDR_EL1 = \"0x80000001\"\n\"0x603000000013c000\" = \"0x410fd4f1\"\n",
        "arm64.toml",
    )
    .unwrap();
    let model = spec.vms[0].arm64.as_ref().unwrap();
    assert_eq!(model.registers.len(), 2);
    assert!(model.writes_implementation_id());
    let e = err(
        "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[vm.arm64.registers]\nMPIDR_EL2 = \"0x1\"\n",
    );
    assert!(
        e.starts_with("arm64.toml:5:1:") && e.contains("did you mean `MPIDR_EL1`"),
        "{e}"
    );
    let e = err(
        "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[vm.arm64.registers]\nMPIDR_EL1 = \"0xg\"\n",
    );
    assert!(
        e.starts_with("arm64.toml:5:13:") && e.contains("not a 64-bit register value"),
        "{e}"
    );
    let e = err(
        "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[vm.arm64]\nid_registers = { \"ID_AA64ISAR0_EL1.AES\" = 0 }\nregisters = { ID_AA64ISAR0_EL1 = \"0x0\" }\n",
    );
    assert!(
        e.starts_with("arm64.toml:6:13:") && e.contains("written whole by `registers`"),
        "{e}"
    );
}
