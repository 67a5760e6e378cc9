//! Tests of the arm64 read-back judge: which writes drift, which guest readings mismatch (and the
//! exact lines the fleet reports), and the digest's byte order.

use super::*;
use crate::model::arm64::catalog;
use crate::model::arm64::model::PlannedWrite;
use crate::model::arm64::{Arm64Refusal, Arm64Rule, VcpuFeatureSet};

const PFR0: u64 = 0x6030_0000_0013_c020;
const ISAR0: u64 = 0x6030_0000_0013_c030;

fn write(reg_id: u64, verdict: Verdict) -> PlannedWrite {
    PlannedWrite {
        reg_id,
        register: reg_id::describe(reg_id),
        host_value: Some(0),
        value: 0,
        changes: Vec::new(),
        reason: "test".to_string(),
        verdict,
    }
}

fn plan(writes: Vec<PlannedWrite>) -> Arm64Plan {
    Arm64Plan {
        features: VcpuFeatureSet::default(),
        writes,
        unchanged: Vec::new(),
        unknown_registers: Vec::new(),
    }
}

fn held(pairs: &[(u64, u64)]) -> BTreeMap<u64, u64> {
    pairs.iter().copied().collect()
}

fn call(function_id: u32, x0: u64) -> SeenCall {
    SeenCall {
        function_id,
        x0,
        description: format!("call {function_id:#x}"),
    }
}

#[test]
fn the_ids_are_the_catalogs() {
    assert_eq!(catalog::ID_AA64PFR0_EL1.kvm_reg_id(), PFR0);
    assert_eq!(catalog::ID_AA64ISAR0_EL1.kvm_reg_id(), ISAR0);
}

#[test]
fn only_accepted_writes_read_back_differently_drift() {
    let plan = plan(vec![
        write(PFR0, Verdict::Accepted { readback: 0x11 }),
        write(ISAR0, Verdict::Accepted { readback: 0x20 }),
        write(
            ISAR0,
            Verdict::Refused(Arm64Refusal::register(ISAR0, 1, 0, Arm64Rule::AboveLimit)),
        ),
        write(
            ISAR0,
            Verdict::Unjudged {
                why: "test".to_string(),
            },
        ),
    ]);
    let drift = readback_drift(&plan, &held(&[(PFR0, 0x11), (ISAR0, 0x21)]));
    assert_eq!(
        drift,
        vec![ReadbackDrift {
            register: "ID_AA64ISAR0_EL1".to_string(),
            expected: 0x20,
            held: 0x21,
        }]
    );
    // A register the vCPU was not read for is not judged.
    let only_pfr0: Vec<String> = readback_drift(&plan, &held(&[(PFR0, 0x12)]))
        .into_iter()
        .map(|d| d.register)
        .collect();
    assert_eq!(only_pfr0, ["ID_AA64PFR0_EL1"]);
    assert!(readback_drift(&plan, &BTreeMap::new()).is_empty());
}

#[test]
fn the_guest_must_read_what_is_held_but_the_gic_field() {
    let held = held(&[(PFR0, 0x0000_0000_0100_0011), (ISAR0, 0x1120)]);
    let seen = |id, value| SeenRegister { id, value };
    // PFR0.GIC (bits 27:24) cleared at the first run without a vGIC: not a mismatch.
    let check = check_guest_view(&[seen(PFR0, 0x11), seen(ISAR0, 0x1120)], &[], &held);
    assert!(check.matches_held(), "{:?}", check.mismatches);
    // Any other difference is, and a register nothing holds is skipped.
    let check = check_guest_view(
        &[
            seen(PFR0, 0x12),
            seen(ISAR0, 0x1120),
            seen(0x6030_0000_0013_c031, 1),
        ],
        &[],
        &held,
    );
    assert_eq!(
        check.mismatches,
        vec![
            "ID_AA64PFR0_EL1: the guest read 0x0000000000000012, the kernel holds \
             0x0000000001000011"
        ]
    );
}

#[test]
fn gated_services_must_answer_as_their_bitmap_bit_says() {
    let not_supported = smccc::NOT_SUPPORTED as u64;
    let held = held(&[
        (FirmwareRegister::StdBitmap.id(), 0),
        (FirmwareRegister::VendorHypBitmap.id(), 1),
        (FirmwareRegister::PsciVersion.id(), 0x1_0001),
    ]);
    let check = check_guest_view(
        &[],
        &[
            call(smccc::TRNG_VERSION, 0x1_0000),
            call(smccc::VENDOR_HYP_KVM_FEATURES, 3),
            call(smccc::VENDOR_HYP_CALL_UID, not_supported),
            call(smccc::PSCI_VERSION, 0x1_0000),
            call(smccc::SMCCC_VERSION, not_supported),
        ],
        &held,
    );
    assert_eq!(
        check.mismatches,
        vec![
            "call 0x84000050: the model hides it, the guest was answered as supported",
            "call 0x8600ff01: the model offers it, the guest was answered NOT_SUPPORTED",
            "PSCI_VERSION: the guest was answered 0x10000, the kernel holds 0x10001",
        ]
    );
    // Without the bitmaps and the version nothing is judged.
    let calls = [
        call(smccc::TRNG_VERSION, 0x1_0000),
        call(smccc::PSCI_VERSION, 0),
    ];
    assert!(check_guest_view(&[], &calls, &BTreeMap::new()).matches_held());
}

#[test]
fn digest_is_crc32_of_ids_and_values_little_endian_in_id_order() {
    assert_eq!(digest(&BTreeMap::new()), 0);
    let held = held(&[(FirmwareRegister::PsciVersion.id(), 0x1_0001), (PFR0, 0x11)]);
    // zlib.crc32(pack('<QQ', PFR0, 0x11) + pack('<QQ', PSCI_VERSION's id, 0x10001))
    assert_eq!(digest(&held), 0x9a6f_9f05);
}
