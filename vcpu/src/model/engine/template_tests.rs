//! Unit tests of the template check, on hand-made host facts (the fixtures' real fingerprints
//! are checked in `supervisor/tests/check.rs`).

use super::*;
use crate::hypervisor::cpuid::{CpuidEntry, CpuidTable};
use crate::model::arm64::catalog::ID_AA64ISAR0_EL1;
use crate::model::engine::{Arm64HostFacts, CpuidRewrite, X86HostFacts};

fn leaf7(ebx: u32) -> CpuidEntry {
    CpuidEntry {
        function: 7,
        index: 0,
        flags: 1,
        eax: 0,
        ebx,
        ecx: 0,
        edx: 0,
    }
}

/// A host offering avx2 (7.0.ebx[5]) and not avx512f (bit 16), whose kernel forces bmi1 (bit 3)
/// set whatever it is given.
fn x86_host() -> HostFacts {
    HostFacts {
        arch: GuestArch::X86_64,
        capabilities: Vec::new(),
        x86: X86HostFacts {
            supported: Some(CpuidTable::new(vec![leaf7(1 << 5)])),
            emulated: None,
            rewrites: vec![CpuidRewrite {
                function: 7,
                index: 0,
                register: CpuidReg::Ebx,
                mask: 1 << 3,
                value: 1 << 3,
            }],
        },
        arm64: Arm64HostFacts::default(),
    }
}

fn template(text: &str) -> CpuTemplate {
    CpuTemplate::parse(text, "t.toml", "t").unwrap()
}

#[test]
fn x86_features_the_host_offers_or_forces_pass() {
    let t = template("arch = \"x86_64\"\n[x86.features]\navx2 = true\nbmi1 = true\n");
    let check = check_template(&t, &x86_host()).unwrap();
    assert!(check.runs(), "{check:?}");
}

#[test]
fn x86_problems_name_the_feature_the_limit_and_the_rule() {
    let t = template(
        "arch = \"x86_64\"\n[x86.features]\navx512f = true\nbmi1 = false\n\
         [[x86.cpuid]]\nleaf = 7\nebx = \"0b1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"\n",
    );
    let check = check_template(&t, &x86_host()).unwrap();
    assert!(!check.runs());
    let what: Vec<(&str, &str)> = check
        .problems
        .iter()
        .map(|p| (p.what.as_str(), p.kind.name()))
        .collect();
    assert_eq!(
        what,
        [
            ("bmi1 (7.0.ebx[3])", "rewritten"),
            ("avx512f (7.0.ebx[16])", "unsupported"),
            ("avx512vl (7.0.ebx[31])", "unsupported"),
        ],
        "{check:?}"
    );
    let avx512f = &check.problems[1];
    assert_eq!((avx512f.requested, avx512f.limit), (Some(1), Some(0)));
    assert!(avx512f.rule.contains("KVM_GET_SUPPORTED_CPUID"));
}

#[test]
fn non_feature_bits_take_any_value_and_missing_leaves_are_invalid() {
    let t = template("arch = \"x86_64\"\n[[x86.cpuid]]\nleaf = 7\neax = \"0b1111\"\n");
    assert!(check_template(&t, &x86_host()).unwrap().runs());
    let t = template("arch = \"x86_64\"\n[[x86.cpuid]]\nleaf = 0xd\neax = \"0b1\"\n");
    let check = check_template(&t, &x86_host()).unwrap();
    assert_eq!(check.problems[0].kind, ProblemKind::Invalid);
    assert!(check.problems[0].rule.contains("no leaf 0xd"));
}

#[test]
fn the_wrong_architecture_is_refused() {
    let t = template("arch = \"aarch64\"\n");
    let e = check_template(&t, &x86_host()).unwrap_err().to_string();
    assert!(e.contains("aarch64 guests and the host runs x86_64"), "{e}");
}

fn arm_host(masks: Option<Vec<u64>>) -> HostFacts {
    let isar0 = ID_AA64ISAR0_EL1.kvm_reg_id();
    HostFacts {
        arch: GuestArch::Aarch64,
        capabilities: Vec::new(),
        x86: X86HostFacts::default(),
        arm64: Arm64HostFacts {
            preferred_target: Some(5),
            init_features: Some(1 << 2),
            reg_list: Some(vec![isar0]),
            values: [(isar0, 0x20)].into(),
            masks,
            other_inits: Vec::new(),
            probes: Default::default(),
            registers_from_values: false,
        },
    }
}

#[test]
fn arm64_is_the_plan_on_the_hosts_view() {
    let lower =
        template("arch = \"aarch64\"\n[arm64]\nid_registers = { \"ID_AA64ISAR0_EL1.AES\" = 1 }\n");
    // No masks: the pre-6.7 rule, no field may change.
    let check = check_template(&lower, &arm_host(None)).unwrap();
    assert_eq!(check.problems.len(), 1, "{check:?}");
    let p = &check.problems[0];
    assert_eq!(p.what, "ID_AA64ISAR0_EL1.AES");
    assert_eq!((p.requested, p.limit), (Some(1), Some(2)));
    assert!(check.notes.iter().any(|n| n.contains("no writable masks")));
    // A feature set the fingerprint never measured is unknown, not guessed.
    let pmu = template("arch = \"aarch64\"\n[arm64]\nfeatures = [\"psci-0.2\", \"pmu-v3\"]\n");
    let check = check_template(&pmu, &arm_host(None)).unwrap();
    assert_eq!(check.problems[0].kind, ProblemKind::Unknown);
    // Asking for what the host holds passes.
    let same =
        template("arch = \"aarch64\"\n[arm64]\nid_registers = { \"ID_AA64ISAR0_EL1.AES\" = 2 }\n");
    assert!(check_template(&same, &arm_host(None)).unwrap().runs());
}
