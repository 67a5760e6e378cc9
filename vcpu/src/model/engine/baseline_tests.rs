//! Unit tests of `baseline` on hand-made hosts (the fixtures' real fingerprints are in
//! `supervisor/tests/baseline.rs`): each rule picks its value, names the hosts that limit it, and
//! the result passes `check_template` on every host.

use super::*;
use crate::hypervisor::cpuid::CpuidEntry;
use crate::model::arm64::catalog::{ID_AA64ISAR0_EL1, ID_AA64MMFR0_EL1};
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

fn x86_host(ebx: u32, forced: u32) -> HostFacts {
    HostFacts {
        arch: GuestArch::X86_64,
        capabilities: Vec::new(),
        x86: X86HostFacts {
            supported: Some(CpuidTable::new(vec![leaf7(ebx)])),
            emulated: None,
            rewrites: (forced != 0)
                .then_some(CpuidRewrite {
                    function: 7,
                    index: 0,
                    register: CpuidReg::Ebx,
                    mask: forced,
                    value: forced,
                })
                .into_iter()
                .collect(),
        },
        arm64: Arm64HostFacts::default(),
    }
}

#[test]
fn x86_feature_bits_are_the_intersection_and_forced_conflicts_are_named() {
    // avx2 (bit 5) on both; avx512f (16) only on the first; bmi1 (3) forced on the second only.
    let a = x86_host(1 << 5 | 1 << 16, 0);
    let b = x86_host(1 << 5, 1 << 3);
    let base = baseline(&[&a, &b], "b").unwrap();
    let ebx = base
        .template
        .x86
        .cpuid
        .iter()
        .find(|c| (c.leaf, c.subleaf, c.register) == (7, 0, CpuidReg::Ebx))
        .unwrap();
    assert_eq!(ebx.bits.bit(5), Some(true));
    assert_eq!(ebx.bits.bit(16), Some(false));
    assert_eq!(ebx.bits.bit(3), None, "no value holds on both");
    let avx512f = base
        .limited
        .iter()
        .find(|l| l.what.starts_with("avx512f"))
        .unwrap();
    assert_eq!(avx512f.hosts, [1]);
    assert!(base.not_uniform.iter().any(|l| l.what.starts_with("bmi1")));
    for host in [&a, &b] {
        let check = check_template(&base.template, host).unwrap();
        assert!(check.runs(), "{check:?}");
    }
}

#[test]
fn mixed_architectures_and_no_hosts_are_refused() {
    let x = x86_host(0, 0);
    let a = arm_host(0x20, 0x5, None);
    let e = baseline(&[&x, &a], "b").unwrap_err().to_string();
    assert!(
        e.contains("x86_64 guests") && e.contains("aarch64 guests"),
        "{e}"
    );
    assert_eq!(baseline(&[], "b").unwrap_err(), BaselineError::NoHosts);
}

fn arm_host(isar0: u64, mmfr0: u64, masks: Option<Vec<u64>>) -> HostFacts {
    let (i, m) = (ID_AA64ISAR0_EL1.kvm_reg_id(), ID_AA64MMFR0_EL1.kvm_reg_id());
    HostFacts {
        arch: GuestArch::Aarch64,
        capabilities: Vec::new(),
        x86: X86HostFacts::default(),
        arm64: Arm64HostFacts {
            preferred_target: Some(5),
            init_features: Some(1 << 2),
            reg_list: Some(vec![i, m]),
            values: [(i, isar0), (m, mmfr0)].into(),
            masks,
            other_inits: Vec::new(),
            probes: Default::default(),
            registers_from_values: false,
        },
    }
}

#[test]
fn arm64_fields_follow_their_safe_type_and_refusals_are_left_to_each_host() {
    // AES (7:4, lower-safe) 2 and 1: the baseline is 1, limited by the second host. Without
    // writable masks (the pre-6.7 rule) the first host cannot lower it, so it is left to each
    // host and named.
    let a = arm_host(0x20, 0x5, None);
    let b = arm_host(0x10, 0x5, None);
    let base = baseline(&[&a, &b], "b").unwrap();
    let aes = fields::resolve("ID_AA64ISAR0_EL1.AES").unwrap();
    assert_eq!(base.template.arm64.id_registers.get(aes), None);
    let named = base
        .not_uniform
        .iter()
        .find(|l| l.what == "ID_AA64ISAR0_EL1.AES")
        .unwrap();
    assert!(named.rule.contains("host 0 cannot change it"), "{named:?}");
    let parange = fields::resolve("ID_AA64MMFR0_EL1.PARANGE").unwrap();
    assert_eq!(base.template.arm64.id_registers.get(parange), Some(5));
    for host in [&a, &b] {
        assert!(check_template(&base.template, host).unwrap().runs());
    }
}
