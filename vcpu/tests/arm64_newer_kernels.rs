//! No writable register is refused for want of a table: every bit of the 6.12 reference kernel's
//! writable masks (`data/arm64-kvm-6.12-cpu-max.log`) and of the bits newer kernels add
//! (`model::arm64::kernels`, from cross-host §1) lies in a field whose kernel type vmfleet models.
//! Then the newer kernels' facts judged as the host shows them: HCX/TWED and HPMN0 under a newer
//! mask, PSCI 1.3 under a 1.3 limit, VENDOR_HYP_BMAP_2 when listed. The masks real Linux 7.2
//! reported in the arm64 lab are held to the same rule, with two gaps named.

mod common;

use std::collections::BTreeMap;
use vcpu::hypervisor::abi;
use vcpu::model::arm64::catalog::{self, RegisterRole};
use vcpu::model::arm64::features::{VcpuFeature, VcpuFeatureSet};
use vcpu::model::arm64::fields::{self, FieldCheck};
use vcpu::model::arm64::firmware::{FirmwareRegister, PsciVersion};
use vcpu::model::arm64::host::HostView;
use vcpu::model::arm64::kernels;
use vcpu::model::arm64::sysreg::SysReg;
use vcpu::model::arm64::validate::{Arm64Rule, WritableMasks, judge_before_run};

use common::reference::{LOG, field, hex};

/// The 6.12 masks of the log's `MASK [tag]` lines, indexed like the kernel's array.
fn masks_6_12(tag: &str) -> Vec<u64> {
    common::reference::masks(tag)
}

/// The 6.12 masks with every bit a newer kernel adds.
fn masks_newer() -> Vec<u64> {
    let mut masks = masks_6_12("after vcpu init");
    for (reg, bits) in kernels::newer_mask_bits() {
        masks[reg.feature_id_range_index().unwrap()] |= bits;
    }
    masks
}

/// The masks real Linux 7.2 reported in the arm64 lab (`-cpu max`), from its saved live
/// fingerprint `fixtures/fingerprints/arm64-7.2-max.host.json`.
fn masks_7_2() -> Vec<u64> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/fingerprints/arm64-7.2-max.host.json"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["arm64"]["writable_masks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| u64::from_str_radix(m.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect()
}

/// Bits of `mask` on `reg` that no field with a modelled kernel type covers.
fn untyped_bits(reg: SysReg, mask: u64) -> u64 {
    let typed = fields::table_for(reg).map_or(0, |t| {
        t.fields
            .iter()
            .filter(|f| f.check != FieldCheck::Untyped)
            .fold(0u64, |m, f| m | f.mask())
    });
    mask & !typed
}

/// Bits KVM's whole-register AArch32 masks (0xffffffff) cover that are RES0 in the kernel's
/// sysreg description and have no `arm64_ftr_bits` entry: the tables leave them out, and vmfleet
/// judges them as the kernel does bits without an entry (they keep the limit, 0). Every AArch64
/// register's mask is covered in full.
fn res0_without_entry(register: &str) -> u64 {
    match register {
        "ID_ISAR0_EL1" | "ID_ISAR6_EL1" => 0xF000_0000,
        "ID_ISAR5_EL1" => 0x00F0_0000,
        "MVFR2_EL1" | "ID_MMFR5_EL1" => 0xFFFF_FF00,
        "ID_PFR2_EL1" => 0xFFFF_F000,
        _ => 0,
    }
}

/// Bits real Linux 7.2's masks open that no table types yet (measured in the lab, `-cpu max`):
/// ID_AA64FPFR0_EL1 bits 7:2 and ID_AA64ISAR2_EL1 bits 47:44, fields newer than the tables.
/// When a table gains them, this list must shrink (the test below says which entry to drop).
const UNTYPED_ON_7_2: [(&str, u64); 2] = [
    ("ID_AA64FPFR0_EL1", 0x0000_0000_0000_00FC),
    ("ID_AA64ISAR2_EL1", 0x0000_F000_0000_0000),
];

/// The real 7.2 masks: every bit covered by a typed field but for [`UNTYPED_ON_7_2`], exactly.
#[test]
fn every_writable_bit_of_the_real_7_2_masks_is_typed_but_the_known_gaps() {
    let masks = masks_7_2();
    for register in catalog::REGISTERS {
        let Some(index) = register.reg.feature_id_range_index() else {
            continue;
        };
        let mask = masks[index];
        match register.role {
            RegisterRole::FeatureId | RegisterRole::CacheType => {
                let gap = UNTYPED_ON_7_2
                    .iter()
                    .find(|(name, _)| *name == register.name)
                    .map_or(0, |(_, bits)| *bits);
                assert_eq!(
                    untyped_bits(register.reg, mask) & !res0_without_entry(register.name),
                    gap,
                    "real 7.2: {} mask {mask:#x}: untyped bits (left) differ from the known gap \
                     (right); update UNTYPED_ON_7_2",
                    register.name
                );
            }
            RegisterRole::Unallocated => assert_eq!(mask, 0, "real 7.2: {}", register.name),
            RegisterRole::CacheLevels | RegisterRole::Implementation | RegisterRole::Affinity => {}
        }
    }
}

#[test]
fn no_field_of_any_table_is_untyped() {
    for table in fields::TABLES {
        for field in table.fields {
            assert_ne!(
                field.check,
                FieldCheck::Untyped,
                "{}.{}",
                table.register_name(),
                field.name
            );
        }
    }
}

#[test]
fn every_writable_bit_of_the_6_12_and_newer_masks_is_covered_by_a_typed_field() {
    let sets = [
        ("6.12 fresh VM", masks_6_12("fresh VM")),
        ("6.12 after vcpu init", masks_6_12("after vcpu init")),
        ("6.12 + newer kernels", masks_newer()),
    ];
    assert!(sets[0].1.iter().any(|&m| m != 0), "the log has masks");
    for (label, masks) in &sets {
        for register in catalog::REGISTERS {
            let Some(index) = register.reg.feature_id_range_index() else {
                continue;
            };
            let mask = masks[index];
            match register.role {
                // Judged field by field (`arm64_check_features`, CTR_EL0's handler): every bit
                // a mask opens needs a field the model types.
                RegisterRole::FeatureId | RegisterRole::CacheType => assert_eq!(
                    untyped_bits(register.reg, mask),
                    mask & res0_without_entry(register.name),
                    "{label}: {} mask {mask:#x} has bits no typed field covers",
                    register.name
                ),
                // RAZ slots: nothing may be writable.
                RegisterRole::Unallocated => {
                    assert_eq!(mask, 0, "{label}: {}", register.name)
                }
                // Whole-register handlers (CLIDR_EL1's, set_imp_id_reg, MPIDR): no fields.
                RegisterRole::CacheLevels
                | RegisterRole::Implementation
                | RegisterRole::Affinity => {}
            }
        }
    }
}

/// The 6.12 VM of the log with `masks`, and `values` over the log's own.
fn host(masks: &[u64], values: &[(u64, u64)]) -> HostView {
    let register_ids = common::reference::register_ids();
    let mut map = BTreeMap::new();
    for line in LOG.lines() {
        if let (Some(id), Some(val)) = (field(line, "id="), field(line, "val=")) {
            map.entry(hex(id)).or_insert(hex(val));
        }
    }
    map.extend(values.iter().copied());
    HostView {
        register_ids,
        values: map,
        masks: WritableMasks::from_reported(masks).unwrap(),
        writable_imp_id_regs: false,
        probes: Default::default(),
    }
}

fn psci_only() -> VcpuFeatureSet {
    VcpuFeatureSet::of(&[VcpuFeature::Psci0_2])
}

#[test]
fn hcx_twed_and_hpmn0_are_judged_by_type_when_a_newer_mask_opens_them() {
    for (name, register) in [
        ("ID_AA64MMFR1_EL1.HCX", catalog::ID_AA64MMFR1_EL1),
        ("ID_AA64MMFR1_EL1.TWED", catalog::ID_AA64MMFR1_EL1),
        ("ID_AA64DFR0_EL1.HPMN0", catalog::ID_AA64DFR0_EL1),
    ] {
        let id = register.kvm_reg_id();
        let f = fields::by_name(name).unwrap().field();
        let old = host(&masks_6_12("after vcpu init"), &[]);
        let base = old.value(id).unwrap();
        let limit = f.with(base, 1);
        let old = host(&masks_6_12("after vcpu init"), &[(id, limit)]);
        let new = host(&masks_newer(), &[(id, limit)]);
        // 6.12: outside the mask, the limit is all a write may hold.
        let refused = judge_before_run(id, f.with(limit, 0), &old, psci_only());
        assert!(!refused.is_accepted(), "{name} on 6.12: {refused:?}");
        // Newer: lower-safe, so it may drop to 0 but not rise above the limit.
        assert!(
            judge_before_run(id, f.with(limit, 0), &new, psci_only()).is_accepted(),
            "{name} lowered under the newer mask"
        );
        let raised = judge_before_run(id, f.with(limit, 2), &new, psci_only());
        assert_eq!(
            raised.refusal().map(|r| r.rule.clone()),
            Some(Arm64Rule::AboveLimit),
            "{name}"
        );
    }
}

#[test]
fn psci_1_3_is_accepted_only_where_the_host_offers_it() {
    let id = abi::KVM_REG_ARM_PSCI_VERSION;
    let masks = masks_6_12("after vcpu init");
    let v1_3 = PsciVersion::V1_3.reg_value();
    let on_6_12 = host(&masks, &[]);
    let limit_6_12 = on_6_12.value(id).unwrap();
    assert!(limit_6_12 < v1_3, "6.12 offers {limit_6_12:#x}");
    assert!(!judge_before_run(id, v1_3, &on_6_12, psci_only()).is_accepted());
    let newer = host(&masks, &[(id, v1_3)]);
    assert!(judge_before_run(id, v1_3, &newer, psci_only()).is_accepted());
    assert!(judge_before_run(id, PsciVersion::V1_2.reg_value(), &newer, psci_only()).is_accepted());
    assert_eq!("1.3".parse::<PsciVersion>().unwrap(), PsciVersion::V1_3);
}

#[test]
fn vendor_hyp_bmap_2_is_judged_when_the_host_lists_it() {
    let bmap2 = FirmwareRegister::VendorHypBitmap2;
    assert_eq!(bmap2.id(), 0x6030_0000_0016_0003);
    let names: Vec<_> = bmap2.services().map(|s| s.name()).collect();
    assert_eq!(names, ["discover-impl-version", "discover-impl-cpus"]);
    let masks = masks_6_12("after vcpu init");
    // 6.12 does not list it: ENOENT.
    let on_6_12 = host(&masks, &[]);
    assert!(!on_6_12.lists(bmap2.id()));
    let verdict = judge_before_run(bmap2.id(), 0x3, &on_6_12, psci_only());
    assert_eq!(
        verdict.refusal().map(|r| r.errno),
        Some(vcpu::Errno::ENOENT)
    );
    // Listed, reset 0: both bits may be set (off by default), nothing beyond them.
    let mut newer = host(&masks, &[(bmap2.id(), 0)]);
    newer.register_ids.push(bmap2.id());
    assert!(judge_before_run(bmap2.id(), 0x3, &newer, psci_only()).is_accepted());
    assert!(judge_before_run(bmap2.id(), 0x0, &newer, psci_only()).is_accepted());
    assert!(!judge_before_run(bmap2.id(), 0x4, &newer, psci_only()).is_accepted());
    let shown = kernels::shown_by(
        &newer.register_ids,
        newer.value(abi::KVM_REG_ARM_PSCI_VERSION),
    );
    assert!(shown.iter().any(|c| c.since == "6.15"));
}

#[test]
fn mpam_reads_as_zero_on_newer_kernels_and_the_limit_decides() {
    // 6.13 hides MPAM: the limit is 0, so only 0 is accepted; on a host whose limit is 1 (the
    // 6.12 behaviour with MPAM hardware) 0 and 1 are.
    let id = catalog::ID_AA64PFR0_EL1.kvm_reg_id();
    let mpam = fields::by_name("ID_AA64PFR0_EL1.MPAM").unwrap().field();
    let masks = masks_6_12("after vcpu init");
    let base = host(&masks, &[]).value(id).unwrap();
    let hidden = host(&masks, &[(id, mpam.with(base, 0))]);
    assert!(!judge_before_run(id, mpam.with(base, 1), &hidden, psci_only()).is_accepted());
    assert!(judge_before_run(id, mpam.with(base, 0), &hidden, psci_only()).is_accepted());
}

#[test]
fn smfr0_is_judged_by_the_kernels_exact_type_once_a_mask_opens_it() {
    // No kernel vmfleet has recorded opens ID_AA64SMFR0_EL1; a kernel that exposes SME to guests
    // would. Every field is exact with safe value 0: keep the limit or drop to 0.
    let reg = catalog::ID_AA64SMFR0_EL1;
    let id = reg.kvm_reg_id();
    let fa64 = fields::by_name("ID_AA64SMFR0_EL1.FA64").unwrap().field();
    let smever = fields::by_name("ID_AA64SMFR0_EL1.SMEver").unwrap().field();
    let limit = smever.with(fa64.with(0, 1), 2);
    let mut masks = masks_6_12("after vcpu init");
    let table = fields::table_for(reg).unwrap();
    masks[reg.feature_id_range_index().unwrap()] = table.fields.iter().fold(0, |m, f| m | f.mask());
    let h = host(&masks, &[(id, limit)]);
    assert!(judge_before_run(id, fa64.with(limit, 0), &h, psci_only()).is_accepted());
    assert!(judge_before_run(id, smever.with(limit, 0), &h, psci_only()).is_accepted());
    assert!(!judge_before_run(id, smever.with(limit, 1), &h, psci_only()).is_accepted());
}
