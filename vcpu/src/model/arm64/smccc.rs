//! The SMCCC function ids KVM serves to an arm64 guest (`HVC #0`), their names, calling
//! conventions and return codes: what the Arm SMC Calling Convention (DEN0028) and KVM define,
//! in one place for the model ([`super::firmware::HypercallService::function_ids`]) and the
//! built-in guest (`guests::arm64::smccc`, which makes the calls and reads the answers).
//!
//! Function ids follow `ARM_SMCCC_CALL_VAL(fast call, convention, owner, number)`: bit 31 = fast
//! call, bit 30 = SMC64 (clear for SMC32), bits 29..24 = owner (0 arch, 4 standard secure = PSCI
//! and TRNG, 5 standard hypervisor, 6 vendor hypervisor), bits 15..0 = function number. Values
//! and KVM's handling are in kvm-semantics §3.5, checked against the kernel's
//! `include/linux/arm-smccc.h`. Note the vendor-hypervisor ids: KVM_FEATURES is function 0
//! (`0x86000000`), PTP is function 1 (`0x86000001`) and CALL_UID is the owner-wide query
//! `0xff01` (`0x8600ff01`). KVM's own numbers (its vendor-hypervisor calls and UID, its PSCI 0.1
//! ids) are defined in [`crate::hypervisor::abi`] and re-exported or used from there.

use crate::hypervisor::abi;

/// `SMCCC_VERSION` (arch owner, function 0).
pub const SMCCC_VERSION: u32 = 0x8000_0000;
/// `SMCCC_ARCH_FEATURES(function id)` (arch owner, function 1).
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
/// `SMCCC_ARCH_WORKAROUND_1` (Spectre-v2), queried through [`SMCCC_ARCH_FEATURES`].
pub const SMCCC_ARCH_WORKAROUND_1: u32 = 0x8000_8000;
/// `SMCCC_ARCH_WORKAROUND_2` (Spectre-v4), queried through [`SMCCC_ARCH_FEATURES`].
pub const SMCCC_ARCH_WORKAROUND_2: u32 = 0x8000_7fff;
/// `SMCCC_ARCH_WORKAROUND_3` (Spectre-BHB), queried through [`SMCCC_ARCH_FEATURES`].
pub const SMCCC_ARCH_WORKAROUND_3: u32 = 0x8000_3fff;
/// `PSCI_VERSION`.
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// `PSCI_FEATURES(function id)`.
pub const PSCI_FEATURES: u32 = 0x8400_000a;
/// `PSCI SYSTEM_OFF`: the program's last call; KVM exits with `KVM_SYSTEM_EVENT_SHUTDOWN`.
pub const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;
/// `TRNG_VERSION` (gated by `KVM_REG_ARM_STD_BMAP` bit 0).
pub const TRNG_VERSION: u32 = 0x8400_0050;
/// `TRNG_FEATURES(function id)`.
pub const TRNG_FEATURES: u32 = 0x8400_0051;
/// `TRNG_GET_UUID`.
pub const TRNG_GET_UUID: u32 = 0x8400_0052;
/// `TRNG_RND32(bits)`: random, differs on every call.
pub const TRNG_RND32: u32 = 0x8400_0053;
/// `TRNG_RND64(bits)`: random, differs on every call.
pub const TRNG_RND64: u32 = 0xc400_0053;
/// `PV_TIME_FEATURES(function id)` (gated by `KVM_REG_ARM_STD_HYP_BMAP` bit 0).
pub const PV_TIME_FEATURES: u32 = 0xc500_0020;
/// `PV_TIME_ST`: the stolen-time structure's address.
pub const PV_TIME_ST: u32 = 0xc500_0021;
// KVM's own vendor-hypervisor calls and UID are KVM's numbers, not SMCCC's: defined at the
// boundary with the rest of KVM's ABI, listed here so the guest's calls are one vocabulary.
// `VENDOR_HYP_KVM_PTP(counter)` answers wall clock and counter, which differ on every call.
pub use crate::hypervisor::abi::{KVM_UID, VENDOR_HYP_KVM_FEATURES, VENDOR_HYP_KVM_PTP};
/// `VENDOR_HYP_CALL_UID`: the hypervisor's UID in x0..x3 (gated like KVM_FEATURES).
pub const VENDOR_HYP_CALL_UID: u32 = 0x8600_ff01;

/// `SMCCC_RET_NOT_SUPPORTED`.
pub const NOT_SUPPORTED: i64 = -1;
/// `SMCCC_RET_NOT_REQUIRED`.
pub const NOT_REQUIRED: i64 = -2;
/// `SMCCC_RET_INVALID_PARAMETER`.
pub const INVALID_PARAMETER: i64 = -3;

/// Names of the functions above (the PSCI power-state calls are named by [`power_state_call`]).
const NAMES: &[(u32, &str)] = &[
    (SMCCC_VERSION, "SMCCC_VERSION"),
    (SMCCC_ARCH_FEATURES, "SMCCC_ARCH_FEATURES"),
    (SMCCC_ARCH_WORKAROUND_1, "SMCCC_ARCH_WORKAROUND_1"),
    (SMCCC_ARCH_WORKAROUND_2, "SMCCC_ARCH_WORKAROUND_2"),
    (SMCCC_ARCH_WORKAROUND_3, "SMCCC_ARCH_WORKAROUND_3"),
    (PSCI_VERSION, "PSCI_VERSION"),
    (PSCI_FEATURES, "PSCI_FEATURES"),
    (PSCI_SYSTEM_OFF, "PSCI_SYSTEM_OFF"),
    (TRNG_VERSION, "TRNG_VERSION"),
    (TRNG_FEATURES, "TRNG_FEATURES"),
    (TRNG_GET_UUID, "TRNG_GET_UUID"),
    (TRNG_RND32, "TRNG_RND32"),
    (TRNG_RND64, "TRNG_RND64"),
    (PV_TIME_FEATURES, "PV_TIME_FEATURES"),
    (PV_TIME_ST, "PV_TIME_ST"),
    (VENDOR_HYP_KVM_FEATURES, "VENDOR_HYP_KVM_FEATURES"),
    (VENDOR_HYP_KVM_PTP, "VENDOR_HYP_KVM_PTP"),
    (VENDOR_HYP_CALL_UID, "VENDOR_HYP_CALL_UID"),
];

/// The name of a function id this module knows.
pub fn function_name(function_id: u32) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|&&(id, _)| id == function_id)
        .map(|&(_, name)| name)
        .or_else(|| power_state_call(function_id))
}

/// Whether `function_id` uses the SMC64 convention (bit 30); SMC32 results are 32 bits wide.
pub const fn is_smc64(function_id: u32) -> bool {
    function_id & 0x4000_0000 != 0
}

/// The name of a PSCI call that does not come back to the caller, or that changes which vCPUs
/// run (a guest that makes one cannot go on reporting). Standard-secure owner (4), SMC32 or
/// SMC64, by function number; plus KVM's legacy PSCI 0.1 ids for CPU_SUSPEND, CPU_OFF, CPU_ON and
/// MIGRATE.
pub fn power_state_call(function_id: u32) -> Option<&'static str> {
    const PSCI_STATE_CHANGES: &[(u32, &str)] = &[
        (0x01, "PSCI_CPU_SUSPEND"),
        (0x02, "PSCI_CPU_OFF"),
        (0x03, "PSCI_CPU_ON"),
        (0x05, "PSCI_MIGRATE"),
        (0x08, "PSCI_SYSTEM_OFF"),
        (0x09, "PSCI_SYSTEM_RESET"),
        (0x0b, "PSCI_CPU_FREEZE"),
        (0x0c, "PSCI_CPU_DEFAULT_SUSPEND"),
        (0x0e, "PSCI_SYSTEM_SUSPEND"),
        (0x12, "PSCI_SYSTEM_RESET2"),
        (0x13, "PSCI_MEM_PROTECT"),
        (0x15, "PSCI_SYSTEM_OFF2"),
    ];
    const KVM_PSCI_0_1: &[(u32, &str)] = &[
        (abi::KVM_PSCI_FN_CPU_SUSPEND, "KVM_PSCI_0_1_CPU_SUSPEND"),
        (abi::KVM_PSCI_FN_CPU_OFF, "KVM_PSCI_0_1_CPU_OFF"),
        (abi::KVM_PSCI_FN_CPU_ON, "KVM_PSCI_0_1_CPU_ON"),
        (abi::KVM_PSCI_FN_MIGRATE, "KVM_PSCI_0_1_MIGRATE"),
    ];
    let find = |table: &[(u32, &'static str)], key| {
        table
            .iter()
            .find(|&&(id, _)| id == key)
            .map(|&(_, name)| name)
    };
    // Fast call, either convention, owner 4, function number in the PSCI range.
    if function_id & !0x4000_ffff == 0x8400_0000 {
        find(PSCI_STATE_CHANGES, function_id & 0xffff)
    } else {
        find(KVM_PSCI_0_1, function_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ARM_SMCCC_CALL_VAL(fast, convention, owner, number)`.
    const fn call_val(smc64: bool, owner: u32, number: u32) -> u32 {
        0x8000_0000 | if smc64 { 0x4000_0000 } else { 0 } | owner << 24 | number
    }

    #[test]
    fn function_ids_follow_call_val() {
        assert_eq!(SMCCC_VERSION, call_val(false, 0, 0));
        assert_eq!(SMCCC_ARCH_FEATURES, call_val(false, 0, 1));
        assert_eq!(PSCI_VERSION, call_val(false, 4, 0));
        assert_eq!(PSCI_SYSTEM_OFF, call_val(false, 4, 8));
        assert_eq!(TRNG_VERSION, call_val(false, 4, 0x50));
        assert_eq!(TRNG_RND64, call_val(true, 4, 0x53));
        assert_eq!(PV_TIME_FEATURES, call_val(true, 5, 0x20));
        assert_eq!(VENDOR_HYP_KVM_FEATURES, call_val(false, 6, 0));
        assert_eq!(VENDOR_HYP_KVM_PTP, call_val(false, 6, 1));
        assert_eq!(VENDOR_HYP_CALL_UID, call_val(false, 6, 0xff01));
    }

    #[test]
    fn names_and_conventions() {
        assert_eq!(function_name(TRNG_RND64), Some("TRNG_RND64"));
        assert_eq!(function_name(0xc400_0003), Some("PSCI_CPU_ON"));
        assert_eq!(function_name(0x8600_0042), None);
        assert!(is_smc64(TRNG_RND64) && is_smc64(PV_TIME_ST));
        assert!(!is_smc64(TRNG_RND32) && !is_smc64(VENDOR_HYP_CALL_UID));
        let ids: std::collections::HashSet<u32> = NAMES.iter().map(|&(id, _)| id).collect();
        assert_eq!(ids.len(), NAMES.len(), "every id is named once");
    }
}
