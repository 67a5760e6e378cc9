//! vmfleet's arm64 CPU model against what a real 6.12 kernel answered (`data/arm64-kvm-6.12-cpu-
//! max.log`, qemu `-cpu max`): every recorded write is judged by the model and the prediction must
//! be the kernel's answer. Then the planner and the spec on that host.

mod common;

use common::reference;
use vcpu::Errno;
use vcpu::model::arm64::catalog;
use vcpu::model::arm64::features::{VcpuFeature, VcpuFeatureSet};
use vcpu::model::arm64::fields::{self, first_run_mutable_mask};
use vcpu::model::arm64::firmware::{FirmwareFamily, FirmwareRegister, PsciVersion};
use vcpu::model::arm64::host::HostView;
use vcpu::model::arm64::model::{
    Arm64ModelSpec, PlanError, SpecError, UnknownRegisterAction, UnknownRegisterPolicy, plan,
};
use vcpu::model::arm64::reg_id::{self, RegClass};
use vcpu::model::arm64::validate::{
    Arm64Rule, LockClass, MaskSource, Verdict, WritableMasks, judge_after_run, judge_before_run,
    lock_class,
};

use common::reference::{LOG, field, hex};

// ---- reading the log ------------------------------------------------------------------------

/// The lines between the first line starting with `from` and the next starting with `to`.
fn section(from: &str, to: &str) -> Vec<&'static str> {
    LOG.lines()
        .skip_while(|l| !l.starts_with(from))
        .skip(1)
        .take_while(|l| !l.starts_with(to))
        .collect()
}

/// The kernel's answer as a result: `OK` or an errno.
fn answer(text: &str) -> Result<(), Errno> {
    match text {
        "OK" => Ok(()),
        "EINVAL" => Err(Errno::EINVAL),
        "EBUSY" => Err(Errno::EBUSY),
        "ENOENT" => Err(Errno::ENOENT),
        other => panic!("unexpected answer {other}"),
    }
}

fn predicted(verdict: &Verdict) -> Result<(), Errno> {
    match verdict {
        Verdict::Accepted { .. } => Ok(()),
        Verdict::Refused(refusal) => Err(refusal.errno),
        Verdict::Unjudged { why } => panic!("unjudged: {why}"),
    }
}

/// The 6.12 VM of the log, as vmfleet sees it right after the first VCPU_INIT.
fn host_6_12() -> HostView {
    reference::host_6_12(reference::masks_after_init())
}

/// The log's default vCPU: `KVM_ARM_VCPU_INIT(features[0]=0x4 PSCI_0_2)`.
fn psci_only() -> VcpuFeatureSet {
    VcpuFeatureSet::of(&[VcpuFeature::Psci0_2])
}

fn id_of(name: &str) -> u64 {
    catalog::by_name(name)
        .unwrap_or_else(|| panic!("{name} is catalogued"))
        .kvm_reg_id()
}

/// One `WRITE …` line: id, value, the kernel's answer, the read-back after it.
struct LoggedWrite {
    line: &'static str,
    id: u64,
    value: u64,
    answer: Result<(), Errno>,
    readback: Option<u64>,
}

fn writes(lines: &[&'static str]) -> Vec<LoggedWrite> {
    lines
        .iter()
        .filter(|l| l.starts_with("WRITE "))
        .map(|&line| {
            let (_, result) = line.split_once("-> ").unwrap();
            let result = result.split_whitespace().next().unwrap();
            let readback = field(line, "readback=")
                .filter(|r| r.starts_with("0x"))
                .map(hex);
            LoggedWrite {
                line,
                id: hex(field(line, "id=").unwrap()),
                value: hex(field(line, "val=").unwrap()),
                answer: answer(result),
                readback,
            }
        })
        .collect()
}

// ---- the host view itself ------------------------------------------------------------------

#[test]
fn the_log_gives_a_complete_host_view() {
    let host = host_6_12();
    assert_eq!(host.register_ids.len(), 259, "REGLIST total=259");
    assert_eq!(
        host.value(id_of("ID_AA64PFR0_EL1")),
        Some(0x1101_0010_2111_0222)
    );
    assert_eq!(
        host.value(id_of("ID_AA64ISAR0_EL1")),
        Some(0x1221_1111_1021_2120)
    );
    assert_eq!(
        host.value(FirmwareRegister::PsciVersion.id()),
        Some(PsciVersion::V1_1.reg_value())
    );
    assert_eq!(
        host.masks.mask_for(catalog::ID_AA64PFR0_EL1),
        0xffff_00f0_0f00_ffff
    );
    assert_eq!(host.masks.mask_for(catalog::CTR_EL0), 0x300f_000f);
    // Every system register of the list classifies as one, and every feature-ID slot listed is
    // catalogued.
    for &id in &host.register_ids {
        if let RegClass::SysReg(reg) = reg_id::classify(id)
            && reg.is_feature_id()
            && reg.op1() == 0
        {
            assert!(catalog::by_reg(reg).is_some(), "{id:#x}");
        }
    }
    // 4 firmware registers and 3 bitmaps, all known: nothing for the unknown-register policy.
    assert!(vcpu::model::arm64::firmware::unknown_registers(&host.register_ids).is_empty());
}

// ---- every answer of the log, predicted ------------------------------------------------------

/// `SWEEP REG [hi:lo]=v down=x:RES up=y:RES`: each 4-bit field set to its value -1 and +1.
#[test]
fn every_field_of_the_sweep_gets_the_kernels_answer() {
    let host = host_6_12();
    let mut judged = 0;
    let mut accepted = 0;
    for line in LOG
        .lines()
        .filter(|l| l.starts_with("SWEEP ") && l.contains('['))
    {
        let mut words = line.split_whitespace().skip(1);
        let register = words.next().unwrap();
        let id = id_of(register);
        let limit = host.value(id).unwrap();
        let (bits, rest) = line.split_once('[').unwrap().1.split_once(']').unwrap();
        let low: u32 = bits.split(':').nth(1).unwrap().trim().parse().unwrap();
        for try_ in rest.split_whitespace().skip(1) {
            let (_, attempt) = try_.split_once('=').unwrap();
            if attempt == "-" {
                continue;
            }
            let (value, result) = attempt.split_once(':').unwrap();
            let value = u64::from_str_radix(value, 16).unwrap();
            let requested = (limit & !(0xF << low)) | value << low;
            let verdict = judge_before_run(id, requested, &host, psci_only());
            assert_eq!(
                predicted(&verdict),
                answer(result),
                "{line} ({try_}): vmfleet says {verdict}"
            );
            judged += 1;
            accepted += usize::from(verdict.is_accepted());
        }
    }
    assert_eq!(
        judged,
        2 * 11 * 16 - 89,
        "every attempt of the sweep is judged"
    );
    assert!(
        accepted > 40,
        "{accepted} accepted: the sweep exercises both outcomes"
    );
}

/// The targeted writes before the first run, ID and firmware registers.
#[test]
fn every_targeted_write_before_the_run_gets_the_kernels_answer() {
    let host = host_6_12();
    let lines = section(
        "--- targeted writes (pre-run)",
        "IOCTL KVM_ARM_GET_REG_WRITABLE_MASKS",
    );
    let writes = writes(&lines);
    assert_eq!(writes.len(), 47);
    for write in &writes {
        let verdict = judge_before_run(write.id, write.value, &host, psci_only());
        assert_eq!(
            predicted(&verdict),
            write.answer,
            "{}: {verdict}",
            write.line
        );
        if let Verdict::Accepted { readback } = verdict {
            assert_eq!(Some(readback), write.readback, "{}", write.line);
        }
    }
}

/// The writes after the first `KVM_RUN`, judged by the lock against what the VM held at each
/// moment: the state left by the accepted pre-run writes, with PFR0.GIC cleared at the first run
/// (no vGIC was created).
#[test]
fn every_write_after_the_run_gets_the_kernels_answer() {
    let host = host_6_12();
    let mut held = host.values.clone();
    let before = section(
        "--- targeted writes (pre-run)",
        "IOCTL KVM_ARM_GET_REG_WRITABLE_MASKS",
    );
    for write in writes(&before).iter().filter(|w| w.answer.is_ok()) {
        held.insert(write.id, write.readback.unwrap());
    }
    for (id, value) in held.iter_mut() {
        if let RegClass::SysReg(reg) = reg_id::classify(*id) {
            *value &= !first_run_mutable_mask(reg);
        }
    }
    // The writes through vCPU 0, then the one through vCPU 1 created after the run.
    let after = section(
        "--- writes after first KVM_RUN",
        "IOCTL KVM_ARM_GET_REG_WRITABLE_MASKS",
    );
    let vcpu1: Vec<&str> = LOG
        .lines()
        .filter(|l| l.starts_with("WRITE POST vcpu1"))
        .collect();
    let mut unjudged = Vec::new();
    let writes = writes(&after).into_iter().chain(writes(&vcpu1));
    let mut count = 0;
    for write in writes {
        count += 1;
        let now = held.get(&write.id).copied().unwrap_or(0);
        let verdict = judge_after_run(write.id, write.value, now, &host, psci_only());
        if let Verdict::Unjudged { .. } = verdict {
            assert_eq!(
                lock_class(write.id),
                LockClass::NotCpuModel,
                "{}",
                write.line
            );
            unjudged.push(reg_id::classify(write.id));
            continue;
        }
        assert_eq!(
            predicted(&verdict),
            write.answer,
            "{}: {verdict}",
            write.line
        );
        match verdict {
            Verdict::Accepted { readback } => {
                assert_eq!(Some(readback), write.readback, "{}", write.line);
                held.insert(write.id, readback);
            }
            _ => assert_eq!(Some(now), write.readback, "{}: unchanged", write.line),
        }
    }
    assert_eq!(count, 20);
    // TIMER_CNT and a core register: not the lock's business.
    assert_eq!(unjudged.len(), 2);
    assert!(unjudged.contains(&RegClass::Core));
}

// ---- the rules the brief singles out, on the 6.12 values --------------------------------------

#[test]
fn lowering_isar0_aes_is_accepted_and_raising_it_is_refused_naming_the_field() {
    let host = host_6_12();
    let id = id_of("ID_AA64ISAR0_EL1");
    let limit = host.value(id).unwrap();
    let aes = fields::by_name("ID_AA64ISAR0_EL1.AES").unwrap().field();
    assert_eq!(
        judge_before_run(id, aes.with(limit, 0), &host, psci_only()),
        Verdict::Accepted {
            readback: 0x1221_1111_1021_2100
        }
    );
    let verdict = judge_before_run(id, aes.with(limit, 3), &host, psci_only());
    let refusal = verdict.refusal().unwrap();
    assert_eq!(refusal.field.as_ref().unwrap().name, "AES");
    assert_eq!((refusal.requested, refusal.limit), (3, 2));
    assert_eq!(refusal.rule, Arm64Rule::AboveLimit);
    assert_eq!(refusal.errno, Errno::EINVAL);
    assert_eq!(
        refusal.to_string(),
        "ID_AA64ISAR0_EL1.AES (bits 7:4): requested 0x3, host limit 0x2: a lower-safe field may \
         be lowered, not raised above the host limit (EINVAL)"
    );
}

#[test]
fn every_field_table_splits_along_the_6_12_masks() {
    // KVM only lets a field move when it lies wholly inside the writable mask; a table whose
    // fields straddled a reported mask would be misaligned with the kernel's fields.
    let host = host_6_12();
    for table in fields::TABLES {
        let mask = host.masks.mask_for(table.register);
        for field in table.fields {
            let inside = mask & field.mask();
            assert!(
                inside == 0 || inside == field.mask(),
                "{}.{} straddles the mask {mask:#x}",
                table.register_name(),
                field.name
            );
        }
    }
    // ID_AA64FPFR0_EL1: the 6.12 mask is exactly the six FP8 fields 6.12's table has.
    let fpfr0 = fields::resolve_table("ID_AA64FPFR0_EL1").unwrap();
    let mask = host.masks.mask_for(fpfr0.register);
    let inside: Vec<&str> = fpfr0
        .fields
        .iter()
        .filter(|f| f.mask() & mask != 0)
        .map(|f| f.name)
        .collect();
    assert_eq!(
        inside,
        ["F8CVT", "F8FMA", "F8DP4", "F8DP2", "F8E4M3", "F8E5M2"]
    );
}

#[test]
fn aarch32_fields_are_judged_by_their_kernel_type_on_the_6_12_values() {
    let host = host_6_12();
    let id = id_of("ID_ISAR5_EL1");
    let limit = host.value(id).unwrap();
    assert_eq!(limit, 0x0101_1121);
    let aes = fields::by_name("ID_ISAR5_EL1.AES").unwrap().field();
    assert_eq!(
        judge_before_run(id, aes.with(limit, 1), &host, psci_only()),
        Verdict::Accepted {
            readback: 0x0101_1111
        }
    );
    let verdict = judge_before_run(id, aes.with(limit, 3), &host, psci_only());
    let refusal = verdict.refusal().unwrap();
    assert_eq!(refusal.errno, Errno::EINVAL);
    assert_eq!(
        refusal.to_string(),
        "ID_ISAR5_EL1.AES (bits 7:4): requested 0x3, host limit 0x2: a lower-safe field may be \
         lowered, not raised above the host limit (EINVAL)"
    );
    // ID_DFR0_EL1's debug fields other than PerfMon and CopDbg were fixed at the limit before.
    let id = id_of("ID_DFR0_EL1");
    let limit = host.value(id).unwrap();
    let cop_s_dbg = fields::by_name("ID_DFR0_EL1.CopSDbg").unwrap().field();
    let refusal = judge_before_run(id, cop_s_dbg.with(limit, 1), &host, psci_only());
    assert_eq!(
        refusal.refusal().map(|r| r.rule.clone()),
        Some(Arm64Rule::AboveLimit)
    );
}

#[test]
fn spec_sei_may_be_raised_because_it_is_higher_safe() {
    let host = host_6_12();
    let id = id_of("ID_AA64MMFR1_EL1");
    let limit = host.value(id).unwrap();
    let spec_sei = fields::by_name("ID_AA64MMFR1_EL1.SpecSEI").unwrap().field();
    assert_eq!(spec_sei.raw(limit), 0);
    assert!(judge_before_run(id, spec_sei.with(limit, 1), &host, psci_only()).is_accepted());
    assert!(judge_before_run(id, spec_sei.with(limit, 0xF), &host, psci_only()).is_accepted());
}

#[test]
fn a_change_outside_the_mask_is_refused_with_the_mask_named() {
    let host = host_6_12();
    // MMFR1.HCX: writable in the newest kernels, not in 6.12's mask.
    let id = id_of("ID_AA64MMFR1_EL1");
    let limit = host.value(id).unwrap();
    let hcx = fields::by_name("ID_AA64MMFR1_EL1.HCX").unwrap().field();
    let refusal = judge_before_run(id, hcx.with(limit, 0), &host, psci_only())
        .refusal()
        .cloned()
        .unwrap();
    assert_eq!(refusal.field.unwrap().name, "HCX");
    assert_eq!(
        refusal.rule,
        Arm64Rule::OutsideWritableMask {
            changed: 1 << 40, // HCX 1 -> 0
            mask: 0xfffff0f00ffff00f,
            source: MaskSource::Reported
        }
    );
    // PFR0.SVE: outside the mask because VCPU_INIT decides it; the refusal says so.
    let pfr0 = id_of("ID_AA64PFR0_EL1");
    let sve = fields::by_name("ID_AA64PFR0_EL1.SVE").unwrap().field();
    let refusal = judge_before_run(
        pfr0,
        sve.with(host.value(pfr0).unwrap(), 1),
        &host,
        psci_only(),
    )
    .refusal()
    .cloned()
    .unwrap();
    assert!(
        refusal
            .to_string()
            .contains("VCPU_INIT feature sve decides this field"),
        "{refusal}"
    );
}

#[test]
fn the_6_1_rule_opens_only_csv2_and_csv3() {
    let mut host = host_6_12();
    host.masks = WritableMasks::PreWritableIdRegisters;
    let pfr0 = id_of("ID_AA64PFR0_EL1");
    let limit = host.value(pfr0).unwrap();
    // CSV3 = 0 (the reference lab's 6.1 write), CSV2 = 0: accepted.
    assert!(judge_before_run(pfr0, limit & !(0xF << 60), &host, psci_only()).is_accepted());
    assert!(judge_before_run(pfr0, limit & !(0xF << 56), &host, psci_only()).is_accepted());
    // Raising CSV3 is still refused, as is any other field, even a lowering.
    let raised = judge_before_run(pfr0, limit | 0x2 << 60, &host, psci_only());
    assert_eq!(raised.refusal().unwrap().rule, Arm64Rule::AboveLimit);
    let el0 = judge_before_run(pfr0, (limit & !0xF) | 1, &host, psci_only());
    let refusal = el0.refusal().unwrap();
    assert_eq!(refusal.field.as_ref().unwrap().name, "EL0");
    assert!(matches!(
        refusal.rule,
        Arm64Rule::OutsideWritableMask {
            source: MaskSource::PreWritableIdRegisters,
            ..
        }
    ));
    let isar0 = id_of("ID_AA64ISAR0_EL1");
    let aes_lowered = host.value(isar0).unwrap() & !0xF0;
    assert!(
        judge_before_run(isar0, aes_lowered, &host, psci_only())
            .refusal()
            .unwrap()
            .to_string()
            .contains("only ID_AA64PFR0_EL1.CSV2/CSV3 are writable")
    );
    // 6.1 itself lets CSV3 change after the run; vmfleet's lock does not, and says whose rule
    // it is.
    let after = judge_after_run(pfr0, limit & !(0xF << 60), limit, &host, psci_only());
    assert_eq!(
        after.refusal().unwrap().rule,
        Arm64Rule::ChangedAfterRun {
            kernel_enforces: false
        }
    );
    assert_eq!(after.refusal().unwrap().errno, Errno::EBUSY);
}

#[test]
fn sve_vcpus_get_zfr0_fields_and_others_get_a_read_as_zero_register() {
    // Variant B of the log: SVE, ptrauth, PMU.
    let mut host = host_6_12();
    let zfr0 = id_of("ID_AA64ZFR0_EL1");
    let features = VcpuFeatureSet::of(&[
        VcpuFeature::Psci0_2,
        VcpuFeature::PmuV3,
        VcpuFeature::Sve,
        VcpuFeature::PtrauthAddress,
        VcpuFeature::PtrauthGeneric,
    ]);
    assert_eq!(features.conflict(), None);
    host.values.insert(zfr0, 0x0110_1101_0021_0021);
    let aes_off = 0x0110_1101_0021_0001;
    assert!(judge_before_run(zfr0, aes_off, &host, features).is_accepted());
    let without_sve = features.without(VcpuFeature::Sve);
    host.values.insert(zfr0, 0);
    assert_eq!(
        judge_before_run(zfr0, aes_off, &host, without_sve)
            .refusal()
            .unwrap()
            .rule,
        Arm64Rule::ReadAsZero {
            unless: VcpuFeature::Sve
        }
    );
    // Variant B's DFR0 has PMUVer 6: lowering to PMUv3 (1) is accepted, IMP DEF is stored as 0.
    let dfr0 = id_of("ID_AA64DFR0_EL1");
    host.values.insert(dfr0, 0x0000_0000_1030_560a);
    assert!(judge_before_run(dfr0, 0x1030_510a, &host, features).is_accepted());
    assert_eq!(
        judge_before_run(dfr0, 0x1030_5f0a, &host, features),
        Verdict::Accepted {
            readback: 0x1030_500a
        }
    );
}

#[test]
fn lock_classes() {
    assert_eq!(
        lock_class(id_of("ID_AA64ISAR0_EL1")),
        LockClass::FrozenAtFirstRun
    );
    assert_eq!(lock_class(id_of("CTR_EL0")), LockClass::FrozenAtFirstRun);
    assert_eq!(lock_class(id_of("MIDR_EL1")), LockClass::FrozenAtFirstRun);
    assert_eq!(
        lock_class(id_of("S3_0_C0_C5_2")),
        LockClass::FrozenAtFirstRun
    );
    assert_eq!(lock_class(id_of("CLIDR_EL1")), LockClass::FrozenAtFirstRun);
    assert_eq!(lock_class(id_of("MPIDR_EL1")), LockClass::WritableAfterRun);
    assert_eq!(
        lock_class(FirmwareRegister::PsciVersion.id()),
        LockClass::WritableAfterRun
    );
    assert_eq!(
        lock_class(FirmwareRegister::SmcccArchWorkaround2.id()),
        LockClass::WritableAfterRun
    );
    assert_eq!(
        lock_class(FirmwareRegister::StdBitmap.id()),
        LockClass::FrozenAtFirstRun
    );
    assert_eq!(
        lock_class(0x6030_0000_0016_0009),
        LockClass::FrozenAtFirstRun
    );
    assert_eq!(
        lock_class(0x6030_0000_0014_0009),
        LockClass::FrozenAtFirstRun
    );
    assert_eq!(
        lock_class(0x6020_0000_0011_0000),
        LockClass::FrozenAtFirstRun,
        "CCSIDR"
    );
    assert_eq!(lock_class(0x6030_0000_0010_0000), LockClass::NotCpuModel);
    assert_eq!(
        lock_class(0x6030_0000_0013_df1a),
        LockClass::NotCpuModel,
        "TIMER_CNT"
    );
    assert_eq!(
        lock_class(0x6030_0000_0013_c080),
        LockClass::NotCpuModel,
        "SCTLR_EL1"
    );
}

#[test]
fn after_the_run_the_set_handlers_checks_still_come_first() {
    let host = host_6_12();
    let dfr0 = id_of("ID_AA64DFR0_EL1");
    let held = host.value(dfr0).unwrap(); // PMUVer 0, DebugVer 0xa
    // PMUVer 0xF is rewritten to 0 before the comparison: identical, accepted.
    assert!(judge_after_run(dfr0, held | 0xF << 8, held, &host, psci_only()).is_accepted());
    // DebugVer below 6 is EINVAL, not EBUSY.
    let refusal = judge_after_run(dfr0, held & !0xF, held, &host, psci_only());
    assert_eq!(refusal.refusal().unwrap().errno, Errno::EINVAL);
    // A bitmap bit beyond the host is EINVAL even after the run.
    let std = FirmwareRegister::StdBitmap.id();
    let beyond = judge_after_run(std, 0x2, 0x1, &host, psci_only());
    assert_eq!(beyond.refusal().unwrap().errno, Errno::EINVAL);
    let changed = judge_after_run(std, 0x0, 0x1, &host, psci_only());
    assert_eq!(
        changed.refusal().unwrap().rule,
        Arm64Rule::ChangedAfterRun {
            kernel_enforces: true
        }
    );
}

// ---- the planner on the 6.12 host ------------------------------------------------------------

fn spec(text: &str) -> Arm64ModelSpec {
    toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_plan_writes_full_values_in_order_and_judges_each() {
    let host = host_6_12();
    let spec = spec(
        r#"
        psci_version = "1.0"
        [id_registers]
        "ID_AA64ISAR0_EL1.AES" = 0
        "ID_AA64ISAR0_EL1.SHA1" = 1
        "ID_AA64MMFR1_EL1.SpecSEI" = 1
        "ID_AA64PFR0_EL1.CSV3" = 0
        [hypercalls]
        trng = false
        ptp = true
        "#,
    );
    let plan = plan(&spec, &host).unwrap();
    let summary: Vec<(&str, u64)> = plan
        .writes
        .iter()
        .map(|w| (w.register.as_str(), w.value))
        .collect();
    assert_eq!(
        summary,
        [
            ("ID_AA64PFR0_EL1", 0x0101_0010_2111_0222),
            ("ID_AA64ISAR0_EL1", 0x1221_1111_1021_2100),
            ("ID_AA64MMFR1_EL1", 0x0010_1120_1131_2122),
            ("KVM_REG_ARM_PSCI_VERSION", 0x10000),
            ("KVM_REG_ARM_STD_BMAP", 0),
        ]
    );
    assert!(plan.is_accepted(), "{plan}");
    // SHA1 = 1 and ptp = true are what the host has: recorded, not written.
    let isar0 = &plan.writes[1];
    assert_eq!(isar0.changes.len(), 1);
    assert_eq!(isar0.reason, "spec: AES 0x2 -> 0x0");
    assert!(
        plan.unchanged
            .iter()
            .any(|n| n.register == "KVM_REG_ARM_VENDOR_HYP_BMAP")
    );
    assert_eq!(plan.features, psci_only());
    let text = plan.to_string();
    assert!(
        text.contains(
            "write ID_AA64ISAR0_EL1 = 0x1221111110212100 (host 0x1221111110212120): spec: AES \
             0x2 -> 0x0; accepted, reads back 0x1221111110212100"
        ),
        "{text}"
    );
    let json = serde_json::to_string(&plan).unwrap();
    assert_eq!(
        serde_json::from_str::<vcpu::model::arm64::Arm64Plan>(&json).unwrap(),
        plan
    );
}

#[test]
fn a_plan_carries_refusals_instead_of_failing() {
    let host = host_6_12();
    let spec = spec(
        r#"
        psci_version = "1.2"
        [id_registers]
        "ID_AA64ISAR0_EL1.AES" = 3
        "ID_AA64MMFR1_EL1.HCX" = 0
        [hypercalls]
        discover-impl-version = true
        "#,
    );
    let plan = plan(&spec, &host).unwrap();
    assert!(!plan.is_accepted());
    let refusals: Vec<String> = plan.refusals().map(ToString::to_string).collect();
    assert_eq!(refusals.len(), 4, "{refusals:#?}");
    assert!(
        refusals[0].starts_with("ID_AA64ISAR0_EL1.AES (bits 7:4): requested 0x3, host limit 0x2")
    );
    assert!(refusals[1].starts_with("ID_AA64MMFR1_EL1.HCX (bits 43:40)"));
    assert!(refusals[1].contains("outside the writable mask"));
    assert!(refusals[2].contains("KVM_REG_ARM_PSCI_VERSION"));
    assert!(refusals[2].contains("offers PSCI up to 1.1"));
    // 6.12 has no VENDOR_HYP_BMAP_2.
    assert!(refusals[3].contains("KVM_REG_ARM_VENDOR_HYP_BMAP_2"));
    assert_eq!(plan.refusals().nth(3).unwrap().errno, Errno::ENOENT);
}

#[test]
fn a_bitmap_bit_beyond_the_host_is_refused_by_service_name() {
    let mut host = host_6_12();
    host.values.insert(FirmwareRegister::StdBitmap.id(), 0);
    let plan = plan(&spec("hypercalls = { trng = true }"), &host).unwrap();
    let refusal = plan.refusals().next().unwrap();
    assert_eq!(refusal.rule, Arm64Rule::BitmapBitsBeyondHost { allowed: 0 });
    assert_eq!(refusal.errno, Errno::EINVAL);
    assert!(
        refusal.to_string().contains("the host does not offer trng"),
        "{refusal}"
    );
    // Switching off a service of a bitmap the kernel does not have needs no write.
    let off = plan_for("hypercalls = { discover-impl-cpus = false }");
    assert!(off.writes.is_empty());
    assert!(
        off.unchanged[0]
            .reason
            .contains("this kernel has no KVM_REG_ARM_VENDOR_HYP_BMAP_2")
    );
}

fn plan_for(text: &str) -> vcpu::model::arm64::Arm64Plan {
    plan(&spec(text), &host_6_12()).unwrap()
}

/// The 6.12 host plus registers of an imaginary newer kernel.
fn host_with_unknown_registers() -> HostView {
    let mut host = host_6_12();
    for (id, value) in [
        (0x6030_0000_0014_0004, 0x1), // KVM_REG_ARM_FW_REG(4)
        (0x6030_0000_0016_0004, 0x5), // KVM_REG_ARM_FW_FEAT_BMAP_REG(4)
        (0x6030_0000_0016_0005, 0x0), // KVM_REG_ARM_FW_FEAT_BMAP_REG(5)
    ] {
        host.register_ids.push(id);
        host.values.insert(id, value);
    }
    host
}

#[test]
fn unknown_registers_are_cleared_kept_or_refused_as_the_policy_says() {
    let host = host_with_unknown_registers();
    let with_policy = |policy| Arm64ModelSpec {
        unknown_registers: policy,
        ..Arm64ModelSpec::default()
    };

    let clear = plan(&with_policy(UnknownRegisterPolicy::Clear), &host).unwrap();
    let actions: Vec<(u64, UnknownRegisterAction)> = clear
        .unknown_registers
        .iter()
        .map(|d| (d.reg_id, d.action))
        .collect();
    assert_eq!(
        actions,
        [
            (0x6030_0000_0014_0004, UnknownRegisterAction::WriteZero),
            (0x6030_0000_0016_0004, UnknownRegisterAction::WriteZero),
            (0x6030_0000_0016_0005, UnknownRegisterAction::AlreadyZero),
        ]
    );
    assert_eq!(clear.writes.len(), 2);
    assert!(clear.writes.iter().all(|w| w.value == 0));
    // Clearing a bitmap is inside any bitmap's limit; an unknown firmware register's rules are
    // unknown, so vmfleet does not pretend to know the answer.
    assert!(matches!(clear.writes[0].verdict, Verdict::Unjudged { .. }));
    assert_eq!(clear.writes[1].verdict, Verdict::Accepted { readback: 0 });
    assert_eq!(clear.unknown_registers[1].family, FirmwareFamily::Bitmap);
    assert!(
        clear.unknown_registers[1]
            .reason
            .contains("offered nothing vmfleet cannot name")
    );
    assert_eq!(
        clear.unknown_registers[1].to_string(),
        "KVM_REG_ARM_FW_FEAT_BMAP_REG(4) (0x6030000000160004): a hypercall bitmap vmfleet does \
         not know; unknown_registers = \"clear\": written 0 so that the guest is offered nothing \
         vmfleet cannot name"
    );

    let keep = plan(&with_policy(UnknownRegisterPolicy::KeepHost), &host).unwrap();
    assert!(keep.writes.is_empty());
    assert!(
        keep.unknown_registers
            .iter()
            .all(|d| d.action == UnknownRegisterAction::KeepHost)
    );

    let refused = plan(&with_policy(UnknownRegisterPolicy::Refuse), &host).unwrap_err();
    let PlanError::UnknownRegisters { registers } = &refused else {
        panic!("{refused}");
    };
    assert_eq!(registers.len(), 3);
    let message = refused.to_string();
    assert!(
        message.contains("KVM_REG_ARM_FW_REG(4) (0x6030000000140004"),
        "{message}"
    );
    assert!(message.contains("0x6030000000160004"), "{message}");
    // A kernel with nothing unknown runs under `refuse`.
    assert!(plan(&with_policy(UnknownRegisterPolicy::Refuse), &host_6_12()).is_ok());
}

#[test]
fn a_plan_needs_the_host_values_it_plans_against() {
    let mut host = host_6_12();
    host.values.remove(&id_of("ID_AA64ISAR0_EL1"));
    let err = plan(
        &spec(r#"id_registers = { "ID_AA64ISAR0_EL1.AES" = 0 }"#),
        &host,
    )
    .unwrap_err();
    assert_eq!(
        err,
        PlanError::MissingHostValue {
            reg_id: 0x6030_0000_0013_c030,
            register: "ID_AA64ISAR0_EL1".into()
        }
    );
}

// ---- the spec ------------------------------------------------------------------------------

fn spec_error(text: &str) -> String {
    toml::from_str::<Arm64ModelSpec>(text)
        .map(|s| panic!("parsed: {s:?}"))
        .unwrap_err()
        .to_string()
}

#[test]
fn a_full_spec_parses_in_every_spelling() {
    let spec = spec(
        r#"
        features = ["psci-0.2", "pmu_v3", "PTRAUTH-ADDRESS", "ptrauth-generic"]
        psci_version = "1.1"
        unknown_registers = "keep-host"

        [id_registers]
        "ID_AA64ISAR0_EL1.AES" = 0
        "id_aa64pfr0_el1.csv3" = 0
        ID_AA64MMFR0_EL1 = { PARANGE = 5, TGRAN4 = 0xF }
        ID_AA64ISAR1_EL1.SB = 0

        [hypercalls]
        trng = false
        pv-time = true
        "#,
    );
    assert_eq!(spec.features.bits(), 0x6c);
    assert_eq!(spec.psci_version, Some(PsciVersion::V1_1));
    assert_eq!(spec.unknown_registers, UnknownRegisterPolicy::KeepHost);
    let requests: Vec<(String, u64)> = spec
        .id_registers
        .iter()
        .map(|(f, v)| (f.full_name(), v))
        .collect();
    assert_eq!(
        requests,
        [
            ("ID_AA64PFR0_EL1.CSV3".to_string(), 0),
            ("ID_AA64ISAR0_EL1.AES".to_string(), 0),
            ("ID_AA64ISAR1_EL1.SB".to_string(), 0),
            ("ID_AA64MMFR0_EL1.TGRAN4".to_string(), 0xF),
            ("ID_AA64MMFR0_EL1.PARANGE".to_string(), 5),
        ]
    );
    assert_eq!(spec.check(), Ok(()));
    // It writes back out and reads back the same.
    let text = toml::to_string(&spec).unwrap();
    assert_eq!(
        toml::from_str::<Arm64ModelSpec>(&text).unwrap(),
        spec,
        "{text}"
    );
    // An empty table is the host's model with PSCI 0.2.
    assert_eq!(self::spec(""), Arm64ModelSpec::default());
    assert_eq!(Arm64ModelSpec::default().features, psci_only());
}

#[test]
fn spec_errors_name_the_key_and_suggest_a_known_name() {
    let message = spec_error(r#"id_registers = { "ID_AA64ISAR0_EL1.AESS" = 0 }"#);
    assert!(
        message.contains(
            "`ID_AA64ISAR0_EL1.AESS`: ID_AA64ISAR0_EL1 has no field `AESS` — did you mean \
             `ID_AA64ISAR0_EL1.AES`?"
        ),
        "{message}"
    );
    let message = spec_error(r#"id_registers = { "ID_AA64ISRA0_EL1.AES" = 0 }"#);
    assert!(
        message.contains("unknown register `ID_AA64ISRA0_EL1`"),
        "{message}"
    );
    assert!(
        message.contains("did you mean `ID_AA64ISAR0_EL1.AES`?"),
        "{message}"
    );
    let message = spec_error(r#"id_registers = { "ID_AA64ISAR0_EL1.AES" = 16 }"#);
    assert!(
        message.contains(
            "`ID_AA64ISAR0_EL1.AES` = 16: ID_AA64ISAR0_EL1.AES is 4 bits wide, so its values are \
             0..=0xf"
        ),
        "{message}"
    );
    let message = spec_error(r#"id_registers = { "ID_AA64MMFR0_EL1.TGRAN4" = -1 }"#);
    assert!(message.contains("= -1"), "{message}");
    assert!(
        message.contains("0xF means \"not implemented\""),
        "{message}"
    );
    let message =
        spec_error(r#"id_registers = { "ID_AA64ISAR0_EL1.AES" = 0, "id_aa64isar0_el1.aes" = 1 }"#);
    assert!(
        message.contains(
            "`id_aa64isar0_el1.aes` and `ID_AA64ISAR0_EL1.AES` both set ID_AA64ISAR0_EL1.AES"
        ),
        "{message}"
    );
    let message = spec_error(r#"id_registers = { "ID_AA64ISAR0_EL1.AES" = "0" }"#);
    assert!(
        message.contains("expected an integer field value"),
        "{message}"
    );
    let message = spec_error(r#"hypercalls = { pv_tim = false }"#);
    assert!(
        message.contains("unknown hypercall service `pv_tim`"),
        "{message}"
    );
    assert!(message.contains("did you mean `pv-time`?"), "{message}");
    let message = spec_error("[hypercalls]\ntrng = false\npv_tim = false\n");
    assert!(message.contains("line 3, column 1"), "{message}");
    let message = spec_error("features = [\"psci-0.2\", \"sve2\"]");
    // The TOML parser places element errors on the whole array; the message names the element.
    assert!(message.contains("line 1, column 12"), "{message}");
    assert!(
        message.contains("unknown vCPU feature `sve2` — did you mean `sve`?"),
        "{message}"
    );
    let message = spec_error(r#"hypercalls = { func-feat = false, kvm-features = true }"#);
    assert!(message.contains("both set kvm-features"), "{message}");
    let message = spec_error(r#"features = ["pmu-v4"]"#);
    assert!(
        message.contains("unknown vCPU feature `pmu-v4`"),
        "{message}"
    );
    assert!(message.contains("did you mean `pmu-v3`?"), "{message}");
    let message = spec_error(r#"psci_version = "2.0""#);
    assert!(
        message.contains("unknown PSCI version `2.0`; KVM offers 0.1, 0.2"),
        "{message}"
    );
    let message = spec_error("psci_version = 1.0");
    assert!(
        message.contains("a PSCI version string such as \"1.1\""),
        "{message}"
    );
    let message = spec_error(r#"unknown_registers = "kep-host""#);
    assert!(message.contains("kep-host"), "{message}");
    let message = spec_error(r#"psci = "1.0""#);
    assert!(message.contains("unknown field `psci`"), "{message}");
    // TOML positions come along: the bad key's line.
    let message =
        spec_error("features = [\"psci-0.2\"]\n\n[id_registers]\n\"ID_AA64ISAR0_EL1.X\" = 0\n");
    assert!(message.contains("line 4, column 1"), "{message}");
    // Also inside a register's table, and on a bad value.
    let message = spec_error("[id_registers]\nID_AA64MMFR0_EL1 = { PARANGE = 5, TGRAN = 0 }\n");
    assert!(message.contains("line 2, column 35"), "{message}");
    assert!(
        message.contains("did you mean `ID_AA64MMFR0_EL1.TGRAN4`?"),
        "{message}"
    );
    let message = spec_error("[id_registers]\nID_AA64MMFR0_EL1.PARANGE = 99\n");
    assert!(message.contains("line 2, column 28"), "{message}");
    let message = spec_error("id_registers = { ID_AA64MMR0_EL1 = { PARANGE = 5 } }");
    assert!(
        message.contains(
            "`ID_AA64MMR0_EL1`: unknown register `ID_AA64MMR0_EL1` — did you mean \
             `ID_AA64MMFR0_EL1`?"
        ),
        "{message}"
    );
    let message = spec_error("id_registers = { SpecSEI = 1 }");
    assert!(
        message.contains("did you mean `ID_AA64MMFR1_EL1.SpecSEI`?"),
        "{message}"
    );
    let message = spec_error("id_registers = { ID_DFR1_EL1 = { MTPMU = 1 } }");
    assert!(
        message.contains("no field table for ID_DFR1_EL1"),
        "{message}"
    );
}

#[test]
fn spec_contradictions_are_caught_before_any_host_is_asked() {
    let check = |text: &str| spec(text).check().unwrap_err();
    assert!(matches!(
        check(r#"features = ["psci-0.2", "ptrauth-address"]"#),
        SpecError::FeatureConflict(_)
    ));
    assert!(matches!(
        check(r#"features = ["el1-32bit", "has-el2"]"#),
        SpecError::FeatureConflict(_)
    ));
    assert_eq!(
        check(
            r#"features = []
                 psci_version = "1.0""#
        ),
        SpecError::PsciVersionNeedsPsci02 {
            version: PsciVersion::V1_0
        }
    );
    assert_eq!(
        check(r#"psci_version = "0.1""#),
        SpecError::Psci01WithPsci02
    );
    assert_eq!(
        check(r#"features = ["power-off", "psci-0.2"]"#),
        SpecError::PowerOffIsNotAModelFeature
    );
    // The planner refuses the same spec.
    let err = plan(&spec(r#"psci_version = "0.1""#), &host_6_12()).unwrap_err();
    assert!(err.to_string().contains("legacy PSCI"), "{err}");
    // PSCI 0.1 without psci-0.2 is fine, and a vCPU without psci-0.2 reads 0.1.
    assert_eq!(
        spec("features = []\npsci_version = \"0.1\"").check(),
        Ok(())
    );
}

/// The first line of an arm64 refusal names the register field, old → new and the rule in at
/// most 200 characters, for the lock's refusal after the run (a register-wide write, whose
/// changed fields are named) and for a field the kernel's rules refuse before it (where "old" is
/// the host limit); the full explanation stays in the display.
#[test]
fn arm64_refusals_open_with_a_short_line_naming_the_field_and_the_rule() {
    let host = host_6_12();
    let isar0 = id_of("ID_AA64ISAR0_EL1");
    let limit = host.value(isar0).unwrap();
    let aes = (limit >> 4) & 0xF;
    assert_ne!(aes, 0, "the 6.12 max host has AES");
    let held = limit;
    let after = judge_after_run(isar0, held & !0xF0, held, &host, psci_only());
    let refusal = after.refusal().expect("a change after the run is refused");
    let first = refusal.headline();
    assert_eq!(
        first,
        format!(
            "ID_AA64ISAR0_EL1.AES {aes} → 0 refused: {}",
            vcpu::hypervisor::headline::LOCK_RULE
        )
    );
    assert!(first.chars().count() <= vcpu::hypervisor::headline::HEADLINE_MAX);

    // Two fields at once: the first is named, the count of the others follows.
    let pfr0 = id_of("ID_AA64PFR0_EL1");
    let pfr0_limit = host.value(pfr0).unwrap();
    let csv = pfr0_limit & !(0xFF << 56);
    assert_ne!(csv, pfr0_limit, "the 6.12 max host has CSV2 or CSV3");
    let after = judge_after_run(pfr0, csv, pfr0_limit, &host, psci_only());
    let first = after.refusal().unwrap().headline();
    assert!(
        first.starts_with("ID_AA64PFR0_EL1.CSV")
            && first.ends_with(vcpu::hypervisor::headline::LOCK_RULE),
        "{first}"
    );

    // Before the run: raising AES above the host limit.
    let raised = judge_before_run(isar0, (limit & !0xF0) | (aes + 1) << 4, &host, psci_only());
    let refusal = raised.refusal().unwrap();
    let first = refusal.headline();
    assert_eq!(
        first,
        format!(
            "ID_AA64ISAR0_EL1.AES {aes} → {} refused: a lower-safe field may be lowered, not \
             raised above the host limit (EINVAL)",
            aes + 1
        )
    );

    // The longest rule (6.1's fixed masks) is cut to the limit; the display keeps all of it.
    let mut old = host_6_12();
    old.masks = WritableMasks::PreWritableIdRegisters;
    let lowered = judge_before_run(isar0, limit & !0xF0, &old, psci_only());
    let refusal = lowered.refusal().unwrap();
    let first = refusal.headline();
    assert!(
        first.chars().count() <= vcpu::hypervisor::headline::HEADLINE_MAX,
        "{first}"
    );
    assert!(
        first.starts_with(&format!("ID_AA64ISAR0_EL1.AES {aes} → 0 refused: ")),
        "{first}"
    );
    assert!(
        refusal
            .to_string()
            .contains("only ID_AA64PFR0_EL1.CSV2/CSV3 are writable")
    );
}

// ---- whole-register writes (`registers`) ------------------------------------------------------

#[test]
fn raw_register_writes_are_planned_and_judged_like_field_writes() {
    let host = host_6_12();
    let isar0 = catalog::ID_AA64ISAR0_EL1.kvm_reg_id();
    let held = host.value(isar0).unwrap();
    let lowered = held & !0xF0; // AES 0
    let raised = held | 0xF0; // AES 0xF: above the host
    let midr = catalog::MIDR_EL1.kvm_reg_id();
    let mpidr = catalog::MPIDR_EL1.kvm_reg_id();
    let wa1 = FirmwareRegister::SmcccArchWorkaround1.id();
    let text = format!(
        r#"
        [registers]
        ID_AA64ISAR0_EL1 = "{lowered:#x}"
        MIDR_EL1 = "0x410fd4f1"
        "{mpidr:#x}" = "0x80000001"
        SMCCC_ARCH_WORKAROUND_1 = "{:#x}"
        "#,
        host.value(wa1).unwrap()
    );
    let planned = plan(&spec(&text), &host).unwrap();
    let by_id = |id: u64| planned.writes.iter().find(|w| w.reg_id == id);
    // A lowered field in a raw value: accepted, by the same rules as `id_registers`.
    let isar = by_id(isar0).unwrap();
    assert_eq!(isar.value, lowered);
    assert!(isar.verdict.is_accepted(), "{isar}");
    // Its changes are named by field, as a field write's are.
    assert_eq!(isar.changes.len(), 1, "{isar}");
    assert_eq!(
        (isar.changes[0].what.as_str(), isar.changes[0].to),
        ("AES", 0)
    );
    // MIDR without capability 239: EINVAL, and the refusal says the capability is missing.
    let midr_write = by_id(midr).unwrap();
    let refusal = midr_write.verdict.refusal().unwrap();
    assert_eq!(refusal.errno, Errno::EINVAL);
    assert_eq!(refusal.rule, Arm64Rule::ImplementationIdNotWritable);
    assert!(
        refusal
            .hint
            .as_deref()
            .unwrap()
            .contains("does not offer KVM_CAP_ARM_WRITABLE_IMP_ID_REGS (239")
    );
    // MPIDR is stored as given.
    assert!(by_id(mpidr).unwrap().verdict.is_accepted());
    // The workaround level the host has: nothing to write.
    assert!(by_id(wa1).is_none());
    assert!(
        planned
            .unchanged
            .iter()
            .any(|n| n.register == "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1")
    );

    // With the capability, MIDR's low 32 bits are writable, the upper ones are not.
    let with_cap = HostView {
        writable_imp_id_regs: true,
        probes: Default::default(),
        ..host.clone()
    };
    let planned = plan(&spec(&text), &with_cap).unwrap();
    let midr_write = planned.writes.iter().find(|w| w.reg_id == midr).unwrap();
    assert!(midr_write.verdict.is_accepted(), "{midr_write}");
    let upper = plan(&spec("[registers]\nMIDR_EL1 = \"0x1_410fd4f1\""), &with_cap).unwrap();
    assert_eq!(
        upper.writes[0].verdict.refusal().unwrap().rule,
        Arm64Rule::ImplementationIdMask { mask: 0xFFFF_FFFF }
    );

    // A raised field in a raw value: refused, naming the field.
    let raised_plan = plan(
        &spec(&format!("[registers]\nID_AA64ISAR0_EL1 = \"{raised:#x}\"")),
        &host,
    )
    .unwrap();
    let refusal = raised_plan.writes[0].verdict.refusal().unwrap();
    assert_eq!(refusal.errno, Errno::EINVAL);
    assert!(refusal.to_string().contains("AES"), "{refusal}");
}

#[test]
fn a_register_written_whole_and_by_field_is_refused() {
    let both: Result<Arm64ModelSpec, _> = toml::from_str(
        r#"
        id_registers = { "ID_AA64ISAR0_EL1.AES" = 0 }
        registers = { ID_AA64ISAR0_EL1 = "0x0" }
        "#,
    );
    let error = both.unwrap().check().unwrap_err();
    assert!(matches!(error, SpecError::RawWriteConflict { .. }));
    assert!(error.to_string().contains("id_registers (AES)"), "{error}");
    let psci: Arm64ModelSpec =
        toml::from_str("psci_version = \"1.0\"\nregisters = { PSCI_VERSION = \"0x10000\" }")
            .unwrap();
    assert!(
        psci.check()
            .unwrap_err()
            .to_string()
            .contains("psci_version")
    );
    let bitmap: Arm64ModelSpec =
        toml::from_str("hypercalls = { trng = false }\nregisters = { STD_BMAP = \"0x0\" }")
            .unwrap();
    assert!(bitmap.check().unwrap_err().to_string().contains("trng"));
    // Unknown names and non-model registers are refused while reading.
    let typo = toml::from_str::<Arm64ModelSpec>("registers = { MIDR_EL2 = \"0x0\" }")
        .unwrap_err()
        .to_string();
    assert!(typo.contains("did you mean `MIDR_EL1`"), "{typo}");
    let dup = toml::from_str::<Arm64ModelSpec>(
        "registers = { MIDR_EL1 = \"0x0\", \"0x603000000013c000\" = \"0x1\" }",
    )
    .unwrap_err()
    .to_string();
    assert!(dup.contains("both set MIDR_EL1"), "{dup}");
    let big = toml::from_str::<Arm64ModelSpec>("registers = { MIDR_EL1 = -1 }")
        .unwrap_err()
        .to_string();
    assert!(big.contains("not a 64-bit register value"), "{big}");
}

#[test]
fn a_spec_says_whether_it_needs_capability_239() {
    assert!(!Arm64ModelSpec::default().writes_implementation_id());
    let midr: Arm64ModelSpec = toml::from_str("registers = { AIDR_EL1 = \"0x0\" }").unwrap();
    assert!(midr.writes_implementation_id());
    let mpidr: Arm64ModelSpec = toml::from_str("registers = { MPIDR_EL1 = \"0x0\" }").unwrap();
    assert!(!mpidr.writes_implementation_id());
}
