//! Unit tests of the engine: each call's answer from hand-made host facts.

use super::*;
use crate::hypervisor::cpuid::CpuidEntry;
use crate::model::arm64::catalog::{ID_AA64PFR0_EL1, MPIDR_EL1};

fn entry(function: u32, ecx: u32) -> CpuidEntry {
    CpuidEntry {
        function,
        index: 0,
        flags: 0,
        eax: 0,
        ebx: 0,
        ecx,
        edx: 0,
    }
}

fn x86_facts() -> HostFacts {
    HostFacts {
        arch: GuestArch::X86_64,
        capabilities: vec![(7, 1)],
        x86: X86HostFacts {
            supported: Some(CpuidTable::new(vec![entry(1, 0xff)])),
            emulated: Some(CpuidTable::new(vec![entry(1, 1 << 22)])),
            rewrites: vec![CpuidRewrite {
                function: 1,
                index: 0,
                register: CpuidReg::Ecx,
                mask: 1,
                value: 1,
            }],
        },
        arm64: Arm64HostFacts::default(),
    }
}

const VCPU: Stream = Stream::Vcpu(VmId(0), VcpuId(0));

fn vcpu(call: VcpuCall) -> Call {
    Call::Vcpu(call)
}

#[test]
fn x86_tables_are_held_with_the_measured_rewrites_and_locked_after_run() {
    let mut engine = Engine::new(x86_facts());
    assert_eq!(
        engine.call(
            Stream::Host,
            &Call::System(SystemCall::CheckExtension { cap: 7 })
        ),
        ok(Reply::Value(1))
    );
    assert_eq!(
        engine.call(
            Stream::Host,
            &Call::System(SystemCall::CheckExtension { cap: 8 })
        ),
        Prediction::NotJudged
    );
    let written = CpuidTable::new(vec![entry(1, 0xf0)]);
    let set = vcpu(VcpuCall::SetCpuid2 {
        table: written.clone(),
    });
    assert_eq!(engine.call(VCPU, &set), ok(Reply::Done));
    let held = CpuidTable::new(vec![entry(1, 0xf1)]);
    assert_eq!(
        engine.call(VCPU, &vcpu(VcpuCall::GetCpuid2)),
        ok(Reply::Cpuid(held.clone()))
    );
    assert_eq!(
        engine.call(VCPU, &vcpu(VcpuCall::Run)),
        Prediction::NotJudged
    );
    // After the run: the held table is identical, another one is the lock's EINVAL.
    let again = vcpu(VcpuCall::SetCpuid2 { table: held });
    assert_eq!(engine.call(VCPU, &again), ok(Reply::Done));
    let other = vcpu(VcpuCall::SetCpuid2 {
        table: CpuidTable::new(vec![entry(1, 0)]),
    });
    assert_eq!(engine.call(VCPU, &other), lock_error(Errno::EINVAL));
}

#[test]
fn x86_too_many_entries_is_e2big() {
    let mut engine = Engine::new(x86_facts());
    let table = CpuidTable::new((0..257).map(|i| entry(0x4000_0000 + i, 0)).collect());
    assert_eq!(
        engine.call(VCPU, &vcpu(VcpuCall::SetCpuid2 { table })),
        kernel_error(Errno::E2BIG)
    );
    assert_eq!(
        engine.call(VCPU, &vcpu(VcpuCall::GetCpuid2)),
        ok(Reply::Cpuid(CpuidTable::default()))
    );
}

#[test]
fn supported_cpuid_agrees_whatever_cpu_answered() {
    let engine = Engine::new(x86_facts());
    let call = Call::System(SystemCall::GetSupportedCpuid);
    let mut answered = entry(1, 0xff);
    answered.ebx = 3 << 24;
    let recorded = Ok(Reply::Cpuid(CpuidTable::new(vec![answered])));
    let predicted = Ok(Reply::Cpuid(
        engine.facts().x86.supported.clone().unwrap_or_default(),
    ));
    assert!(agrees(&call, &predicted, &recorded));
}

#[test]
fn emulated_cpuid_comes_from_the_facts_and_only_on_x86() {
    let call = Call::System(SystemCall::GetEmulatedCpuid);
    let mut engine = Engine::new(x86_facts());
    assert_eq!(
        engine.call(Stream::Host, &call),
        ok(Reply::Cpuid(CpuidTable::new(vec![entry(1, 1 << 22)])))
    );
    let mut unknown_table = x86_facts();
    unknown_table.x86.emulated = None;
    assert!(matches!(
        Engine::new(unknown_table).call(Stream::Host, &call),
        Prediction::Unknown { .. }
    ));
    assert_eq!(
        Engine::new(arm_facts()).call(Stream::Host, &call),
        kernel_error(Errno::ENOTTY)
    );
}

fn arm_facts() -> HostFacts {
    let pfr0 = ID_AA64PFR0_EL1.kvm_reg_id();
    let mpidr = MPIDR_EL1.kvm_reg_id();
    HostFacts {
        arch: GuestArch::Aarch64,
        capabilities: Vec::new(),
        x86: X86HostFacts::default(),
        arm64: Arm64HostFacts {
            preferred_target: Some(5),
            init_features: Some(0),
            reg_list: Some(vec![pfr0, mpidr]),
            values: [(pfr0, 1 << 60 | 0x11), (mpidr, 0x8000_0000)].into(),
            masks: None,
            other_inits: Vec::new(),
            probes: Default::default(),
            registers_from_values: false,
        },
    }
}

#[test]
fn arm64_reads_writes_and_the_lock() {
    let pfr0 = ID_AA64PFR0_EL1.kvm_reg_id();
    let mpidr = MPIDR_EL1.kvm_reg_id();
    let mut engine = Engine::new(arm_facts());
    let second = Stream::Vcpu(VmId(0), VcpuId(1));
    let get = |id| vcpu(VcpuCall::GetOneReg { id });
    let set = |id, value| vcpu(VcpuCall::SetOneReg { id, value });
    assert_eq!(engine.call(VCPU, &get(pfr0)), kernel_error(Errno::ENOEXEC));
    let init = |target| {
        vcpu(VcpuCall::ArmVcpuInit {
            target,
            features: [0; 7],
        })
    };
    assert_eq!(engine.call(VCPU, &init(4)), kernel_error(Errno::EINVAL));
    assert_eq!(engine.call(VCPU, &init(5)), ok(Reply::Done));
    assert_eq!(engine.call(second, &init(5)), ok(Reply::Done));
    assert_eq!(
        engine.call(second, &get(mpidr)),
        ok(Reply::Value(0x8000_0001))
    );
    assert_eq!(
        engine.call(VCPU, &get(0x6030_0000_0013_c021)),
        kernel_error(Errno::ENOENT)
    );
    // CSV3 1 → 0 before the run: accepted (6.1 rules: no masks), and held VM-wide.
    assert_eq!(engine.call(VCPU, &set(pfr0, 0x11)), ok(Reply::Done));
    assert_eq!(engine.call(second, &get(pfr0)), ok(Reply::Value(0x11)));
    engine.call(VCPU, &vcpu(VcpuCall::Run));
    assert_eq!(engine.call(VCPU, &set(pfr0, 0x11)), ok(Reply::Done));
    assert_eq!(
        engine.call(VCPU, &set(pfr0, 1 << 60 | 0x11)),
        lock_error(Errno::EBUSY)
    );
    assert_eq!(
        engine.call(VCPU, &vcpu(VcpuCall::GetRegList)),
        ok(Reply::RegList(vec![pfr0, mpidr]))
    );
}

#[test]
fn a_vcpu_with_features_the_fingerprint_never_measured_is_unknown_not_enoent() {
    // The fingerprint measured features 0 only; a PMU vCPU's register list and limits are not
    // known, so neither is a write's answer (a cross-kernel replay must not call it ENOENT).
    let mut engine = Engine::new(arm_facts());
    let mut features = [0u32; 7];
    features[0] = 1 << 3;
    let init = vcpu(VcpuCall::ArmVcpuInit {
        target: 5,
        features,
    });
    assert_eq!(engine.call(VCPU, &init), ok(Reply::Done));
    let set = vcpu(VcpuCall::SetOneReg {
        id: 0x6030_0000_0013_c00a,
        value: 6,
    });
    let Prediction::Unknown { why } = engine.call(VCPU, &set) else {
        panic!("predicted instead of unknown");
    };
    assert!(why.contains("features 0x8"), "{why}");
    assert!(matches!(
        engine.call(VCPU, &vcpu(VcpuCall::GetRegList)),
        Prediction::Unknown { .. }
    ));
}

#[test]
fn the_other_architectures_calls_are_enotty_and_x86_registers_are_not_judged() {
    let mut engine = Engine::new(x86_facts());
    let init = vcpu(VcpuCall::ArmVcpuInit {
        target: 5,
        features: [0; 7],
    });
    assert_eq!(engine.call(VCPU, &init), kernel_error(Errno::ENOTTY));
    let get = vcpu(VcpuCall::GetOneReg {
        id: ID_AA64PFR0_EL1.kvm_reg_id(),
    });
    assert_eq!(engine.call(VCPU, &get), Prediction::NotJudged);
    let mut engine = Engine::new(arm_facts());
    assert_eq!(
        engine.call(VCPU, &vcpu(VcpuCall::GetCpuid2)),
        kernel_error(Errno::ENOTTY)
    );
}

#[test]
fn arm64_other_feature_sets_answer_from_their_own_facts_and_gic_clears_at_first_run() {
    let pfr0 = ID_AA64PFR0_EL1.kvm_reg_id();
    let mut facts = arm_facts();
    facts.arm64.masks = Some(vec![
        0;
        crate::hypervisor::abi::KVM_ARM_FEATURE_ID_RANGE_SIZE
    ]);
    facts.arm64.other_inits.push(Arm64InitFacts {
        init_features: 0x4,
        reg_list: Some(vec![pfr0]),
        values: [(pfr0, 0x0100_0011)].into(),
    });
    let mut engine = Engine::new(facts);
    let init = |bits| {
        vcpu(VcpuCall::ArmVcpuInit {
            target: 5,
            features: [bits, 0, 0, 0, 0, 0, 0],
        })
    };
    assert_eq!(engine.call(VCPU, &init(0x4)), ok(Reply::Done));
    assert_eq!(
        engine.call(VCPU, &vcpu(VcpuCall::GetRegList)),
        ok(Reply::RegList(vec![pfr0]))
    );
    let get = vcpu(VcpuCall::GetOneReg { id: pfr0 });
    assert_eq!(engine.call(VCPU, &get), ok(Reply::Value(0x0100_0011)));
    engine.call(VCPU, &vcpu(VcpuCall::Run));
    // PFR0.GIC (bits 27:24) is cleared at the first run of a VM without a vGIC.
    assert_eq!(engine.call(VCPU, &get), ok(Reply::Value(0x11)));
    // A feature set the facts lack: unknown, not guessed.
    let other = Stream::Vcpu(VmId(1), VcpuId(0));
    assert_eq!(engine.call(other, &init(0x74)), ok(Reply::Done));
    assert!(matches!(
        engine.call(other, &vcpu(VcpuCall::GetRegList)),
        Prediction::Unknown { .. }
    ));
}

#[test]
fn arm64_the_el_floor_follows_the_recorded_probe() {
    let pfr0 = ID_AA64PFR0_EL1.kvm_reg_id();
    let lowered = 1 << 60 | 0x01;
    let answer = |el_floor| {
        let mut facts = arm_facts();
        facts.arm64.masks = Some(vec![
            u64::MAX;
            crate::hypervisor::abi::KVM_ARM_FEATURE_ID_RANGE_SIZE
        ]);
        facts.arm64.probes.el_floor = el_floor;
        let mut engine = Engine::new(facts);
        let init = vcpu(VcpuCall::ArmVcpuInit {
            target: 5,
            features: [0; 7],
        });
        assert_eq!(engine.call(VCPU, &init), ok(Reply::Done));
        engine.call(
            VCPU,
            &vcpu(VcpuCall::SetOneReg {
                id: pfr0,
                value: lowered,
            }),
        )
    };
    // Measured accepting (6.12): accepted. Measured refusing: EINVAL. Not measured: the newer
    // kernels' refusal, vmfleet's documented default.
    assert_eq!(answer(Some(false)), ok(Reply::Done));
    assert_eq!(answer(Some(true)), kernel_error(Errno::EINVAL));
    assert_eq!(answer(None), kernel_error(Errno::EINVAL));
}

#[test]
fn migrate_without_a_register_list_compares_only_when_the_values_hold_every_register() {
    use crate::model::arm64::catalog::{ID_AA64ISAR0_EL1, MIDR_EL1};
    use migrate::{CarryoverProblem, MigrateError, arm64_carryover};
    let (pfr0, isar0, midr) = (
        ID_AA64PFR0_EL1.kvm_reg_id(),
        ID_AA64ISAR0_EL1.kvm_reg_id(),
        MIDR_EL1.kvm_reg_id(),
    );
    let unlisted = |values: &[(u64, u64)], from_values: bool| {
        let mut facts = arm_facts();
        facts.arm64.reg_list = None;
        facts.arm64.values = values.iter().copied().collect();
        facts.arm64.registers_from_values = from_values;
        facts
    };
    // No list and values that may not hold every register: no comparison.
    let source = unlisted(&[(pfr0, 0x11), (midr, 1)], false);
    assert!(matches!(
        arm64_carryover(&source, &source, None),
        Err(MigrateError::Missing { .. })
    ));
    // Values that hold every register: presence from them, values by the rules.
    let source = unlisted(&[(pfr0, 0x11), (isar0, 0x10), (midr, 1)], true);
    let destination = unlisted(&[(pfr0, 0x11), (midr, 1)], true);
    let found = arm64_carryover(&source, &destination, None).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].id, isar0);
    assert_eq!(
        found[0].problem,
        CarryoverProblem::Gone { value: Some(0x10) }
    );
    assert!(arm64_carryover(&source, &source, None).unwrap().is_empty());
}

#[test]
fn without_a_preferred_target_init_is_unknown_and_the_vcpu_is_still_judged() {
    // A partial fingerprint (Firecracker's) has no preferred target: KVM_ARM_VCPU_INIT's answer
    // is unknown, and the vCPU's later calls are answered from the values, not ENOEXEC.
    let pfr0 = ID_AA64PFR0_EL1.kvm_reg_id();
    let mut facts = arm_facts();
    facts.arm64.preferred_target = None;
    let mut engine = Engine::new(facts);
    let init = vcpu(VcpuCall::ArmVcpuInit {
        target: 5,
        features: [0; 7],
    });
    assert!(matches!(
        engine.call(VCPU, &init),
        Prediction::Unknown { .. }
    ));
    assert_eq!(
        engine.call(VCPU, &vcpu(VcpuCall::GetOneReg { id: pfr0 })),
        ok(Reply::Value(1 << 60 | 0x11))
    );
}
