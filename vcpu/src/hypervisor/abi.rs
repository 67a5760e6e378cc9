//! Every KVM number vmfleet names: capabilities, `KVM_ARM_VCPU_INIT` feature bits, ioctl request
//! numbers and the encodings of register ids and CPUID entries that are part of KVM's ABI
//! (`include/uapi/linux/kvm.h`, `arch/{x86,arm64}/include/uapi/asm/kvm.h`).
//!
//! They live here, at the boundary, so that the CPU models (which judge writes by them), the KVM
//! backend (which issues them) and traces (which record them) read one definition. Plain numbers:
//! no `cfg`, so a model is built and checked with them on any host. The KVM backend also takes
//! numbers from `kvm-bindings` where that crate has them; the ones here are those vmfleet names in
//! its own code, messages or models.

// --- x86 CPUID (`struct kvm_cpuid_entry2`) -------------------------------------------------------

/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` (sic): the entry's subleaf is part of its key.
pub const KVM_CPUID_FLAG_SIGNIFCANT_INDEX: u32 = 1 << 0;

/// `KVM_MAX_CPUID_ENTRIES`: the kernel's limit on the size of a CPUID table.
pub const KVM_MAX_CPUID_ENTRIES: usize = 256;

// --- arm64 register ids (`KVM_{GET,SET}_ONE_REG`, `KVM_GET_REG_LIST`) ----------------------------

/// The architecture bits of a register id.
pub const KVM_REG_ARCH_MASK: u64 = 0xff00_0000_0000_0000;
/// The architecture bits of every arm64 register id.
pub const KVM_REG_ARM64: u64 = 0x6000_0000_0000_0000;
/// The size field: the register is `1 << size` bytes.
pub const KVM_REG_SIZE_MASK: u64 = 0x00f0_0000_0000_0000;
/// Where the size field starts.
pub const KVM_REG_SIZE_SHIFT: u32 = 52;
/// Size field of a 4-byte register.
pub const KVM_REG_SIZE_U32: u64 = 0x0020_0000_0000_0000;
/// Size field of an 8-byte register (every system, firmware and bitmap register).
pub const KVM_REG_SIZE_U64: u64 = 0x0030_0000_0000_0000;
/// The coprocessor field that selects the register family.
pub const KVM_REG_ARM_COPROC_MASK: u64 = 0x0000_0000_0fff_0000;
/// Where the coprocessor field starts.
pub const KVM_REG_ARM_COPROC_SHIFT: u32 = 16;

/// Coprocessor of the core registers (`struct kvm_regs`).
pub const COPROC_CORE: u16 = 0x10;
/// Coprocessor of the demultiplexed registers (CCSIDR per cache level).
pub const COPROC_DEMUX: u16 = 0x11;
/// Coprocessor of the system registers.
pub const COPROC_SYSREG: u16 = 0x13;
/// Coprocessor of the firmware pseudo-registers (PSCI version, SMCCC workarounds).
pub const COPROC_FW: u16 = 0x14;
/// Coprocessor of the SVE registers.
pub const COPROC_SVE: u16 = 0x15;
/// Coprocessor of the hypercall-service bitmaps.
pub const COPROC_FW_FEAT_BMAP: u16 = 0x16;

/// The coprocessor bits of every system-register id (`KVM_REG_ARM64_SYSREG`).
pub const KVM_REG_ARM64_SYSREG: u64 = (COPROC_SYSREG as u64) << KVM_REG_ARM_COPROC_SHIFT;

/// How many masks `KVM_ARM_GET_REG_WRITABLE_MASKS` returns (`KVM_ARM_FEATURE_ID_RANGE_SIZE`:
/// op1 ∈ {0, 1, 3} × CRm 0..7 × op2 0..7).
pub const KVM_ARM_FEATURE_ID_RANGE_SIZE: usize = 3 * 8 * 8;

// --- arm64 `KVM_ARM_VCPU_INIT` feature bits (`kvm_vcpu_init.features[0]`) -------------------------

/// `KVM_ARM_VCPU_POWER_OFF`: the vCPU starts powered off.
pub const KVM_ARM_VCPU_POWER_OFF: u32 = 0;
/// `KVM_ARM_VCPU_EL1_32BIT`: AArch32 EL1.
pub const KVM_ARM_VCPU_EL1_32BIT: u32 = 1;
/// `KVM_ARM_VCPU_PSCI_0_2`: PSCI 0.2 and later.
pub const KVM_ARM_VCPU_PSCI_0_2: u32 = 2;
/// `KVM_ARM_VCPU_PMU_V3`: a PMUv3.
pub const KVM_ARM_VCPU_PMU_V3: u32 = 3;
/// `KVM_ARM_VCPU_SVE`: SVE.
pub const KVM_ARM_VCPU_SVE: u32 = 4;
/// `KVM_ARM_VCPU_PTRAUTH_ADDRESS`: address authentication.
pub const KVM_ARM_VCPU_PTRAUTH_ADDRESS: u32 = 5;
/// `KVM_ARM_VCPU_PTRAUTH_GENERIC`: generic authentication.
pub const KVM_ARM_VCPU_PTRAUTH_GENERIC: u32 = 6;
/// `KVM_ARM_VCPU_HAS_EL2`: nested virtualization.
pub const KVM_ARM_VCPU_HAS_EL2: u32 = 7;
/// `KVM_ARM_VCPU_HAS_EL2_E2H0`: nested virtualization without VHE.
pub const KVM_ARM_VCPU_HAS_EL2_E2H0: u32 = 8;

// --- capabilities (`KVM_CHECK_EXTENSION`) --------------------------------------------------------

/// `KVM_CAP_ARM_EL1_32BIT`.
pub const KVM_CAP_ARM_EL1_32BIT: u32 = 93;
/// `KVM_CAP_ARM_PSCI_0_2`.
pub const KVM_CAP_ARM_PSCI_0_2: u32 = 102;
/// `KVM_CAP_ARM_PMU_V3`.
pub const KVM_CAP_ARM_PMU_V3: u32 = 126;
/// `KVM_CAP_ARM_SVE`.
pub const KVM_CAP_ARM_SVE: u32 = 170;
/// `KVM_CAP_ARM_PTRAUTH_ADDRESS`.
pub const KVM_CAP_ARM_PTRAUTH_ADDRESS: u32 = 171;
/// `KVM_CAP_ARM_PTRAUTH_GENERIC`.
pub const KVM_CAP_ARM_PTRAUTH_GENERIC: u32 = 172;
/// `KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES`: which register ranges
/// `KVM_ARM_GET_REG_WRITABLE_MASKS` answers for.
pub const KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES: u32 = 230;
/// The range bit of `KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES` that says the feature-ID masks
/// exist (`BIT(KVM_ARM_FEATURE_ID_RANGE)`).
pub const KVM_ARM_FEATURE_ID_RANGE_BIT: u64 = 1;
/// `KVM_CAP_ARM_WRITABLE_IMP_ID_REGS`: MIDR/REVIDR/AIDR writable when enabled before vCPUs exist.
pub const KVM_CAP_ARM_WRITABLE_IMP_ID_REGS: u32 = 239;
/// `KVM_CAP_ARM_EL2`.
pub const KVM_CAP_ARM_EL2: u32 = 240;
/// `KVM_CAP_ARM_EL2_E2H0`.
pub const KVM_CAP_ARM_EL2_E2H0: u32 = 241;

// --- ioctl request numbers kvm-ioctls does not wrap -----------------------------------------------

/// `KVM_ARM_GET_REG_WRITABLE_MASKS` = `_IOR(0xAE, 0xb6, struct reg_mask_range)` (VM ioctl).
pub const KVM_ARM_GET_REG_WRITABLE_MASKS: u64 = 0x8040_AEB6;
/// `KVM_GET_REG_LIST` = `_IOWR(0xAE, 0xb0, struct kvm_reg_list)` (vCPU ioctl).
pub const KVM_GET_REG_LIST: u64 = 0xC008_AEB0;

// --- arm64 firmware pseudo-registers and hypercall bitmaps (`asm/kvm.h`) ------------------------

/// `KVM_REG_ARM_FW_REG(index)`: a firmware pseudo-register's id.
pub const fn kvm_reg_arm_fw_reg(index: u16) -> u64 {
    KVM_REG_ARM64
        | KVM_REG_SIZE_U64
        | ((COPROC_FW as u64) << KVM_REG_ARM_COPROC_SHIFT)
        | index as u64
}

/// `KVM_REG_ARM_FW_FEAT_BMAP_REG(index)`: a hypercall bitmap's id.
pub const fn kvm_reg_arm_fw_feat_bmap_reg(index: u16) -> u64 {
    KVM_REG_ARM64
        | KVM_REG_SIZE_U64
        | ((COPROC_FW_FEAT_BMAP as u64) << KVM_REG_ARM_COPROC_SHIFT)
        | index as u64
}

/// `KVM_REG_ARM_PSCI_VERSION`.
pub const KVM_REG_ARM_PSCI_VERSION: u64 = kvm_reg_arm_fw_reg(0);
/// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1`.
pub const KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1: u64 = kvm_reg_arm_fw_reg(1);
/// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2`.
pub const KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2: u64 = kvm_reg_arm_fw_reg(2);
/// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3`.
pub const KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3: u64 = kvm_reg_arm_fw_reg(3);

/// `KVM_REG_ARM_STD_BMAP`.
pub const KVM_REG_ARM_STD_BMAP: u64 = kvm_reg_arm_fw_feat_bmap_reg(0);
/// `KVM_REG_ARM_STD_HYP_BMAP`.
pub const KVM_REG_ARM_STD_HYP_BMAP: u64 = kvm_reg_arm_fw_feat_bmap_reg(1);
/// `KVM_REG_ARM_VENDOR_HYP_BMAP`.
pub const KVM_REG_ARM_VENDOR_HYP_BMAP: u64 = kvm_reg_arm_fw_feat_bmap_reg(2);
/// `KVM_REG_ARM_VENDOR_HYP_BMAP_2` (6.15 and later).
pub const KVM_REG_ARM_VENDOR_HYP_BMAP_2: u64 = kvm_reg_arm_fw_feat_bmap_reg(3);

/// `KVM_REG_ARM_STD_BIT_TRNG_V1_0` (in `KVM_REG_ARM_STD_BMAP`).
pub const KVM_REG_ARM_STD_BIT_TRNG_V1_0: u32 = 0;
/// `KVM_REG_ARM_STD_HYP_BIT_PV_TIME` (in `KVM_REG_ARM_STD_HYP_BMAP`).
pub const KVM_REG_ARM_STD_HYP_BIT_PV_TIME: u32 = 0;
/// `KVM_REG_ARM_VENDOR_HYP_BIT_FUNC_FEAT` (in `KVM_REG_ARM_VENDOR_HYP_BMAP`).
pub const KVM_REG_ARM_VENDOR_HYP_BIT_FUNC_FEAT: u32 = 0;
/// `KVM_REG_ARM_VENDOR_HYP_BIT_PTP` (in `KVM_REG_ARM_VENDOR_HYP_BMAP`).
pub const KVM_REG_ARM_VENDOR_HYP_BIT_PTP: u32 = 1;
/// `KVM_REG_ARM_VENDOR_HYP_BIT_DISCOVER_IMPL_VER` (in `KVM_REG_ARM_VENDOR_HYP_BMAP_2`).
pub const KVM_REG_ARM_VENDOR_HYP_BIT_DISCOVER_IMPL_VER: u32 = 0;
/// `KVM_REG_ARM_VENDOR_HYP_BIT_DISCOVER_IMPL_CPUS` (in `KVM_REG_ARM_VENDOR_HYP_BMAP_2`).
pub const KVM_REG_ARM_VENDOR_HYP_BIT_DISCOVER_IMPL_CPUS: u32 = 1;

/// `KVM_ARM_SMCCC_STD_FEATURES`: every bit the kernel accepts in `KVM_REG_ARM_STD_BMAP`.
pub const KVM_ARM_SMCCC_STD_FEATURES: u64 = 0x1;
/// `KVM_ARM_SMCCC_STD_HYP_FEATURES`: every bit accepted in `KVM_REG_ARM_STD_HYP_BMAP`.
pub const KVM_ARM_SMCCC_STD_HYP_FEATURES: u64 = 0x1;
/// `KVM_ARM_SMCCC_VENDOR_HYP_FEATURES`: every bit accepted in `KVM_REG_ARM_VENDOR_HYP_BMAP`.
pub const KVM_ARM_SMCCC_VENDOR_HYP_FEATURES: u64 = 0x3;
/// `KVM_ARM_SMCCC_VENDOR_HYP_FEATURES_2`: every bit accepted in `KVM_REG_ARM_VENDOR_HYP_BMAP_2`.
pub const KVM_ARM_SMCCC_VENDOR_HYP_FEATURES_2: u64 = 0x3;

/// `KVM_REG_FEATURE_LEVEL_MASK`: the bits of a workaround register that carry its level.
pub const KVM_REG_FEATURE_LEVEL_MASK: u64 = 0xF;
/// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1_NOT_AVAIL` (and `_3_`): vulnerable, no mitigation.
pub const KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1_NOT_AVAIL: u64 = 0;
/// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1_AVAIL` (and `_3_`): the mitigation is available.
pub const KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1_AVAIL: u64 = 1;
/// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1_NOT_REQUIRED` (and `_3_`): not affected.
pub const KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1_NOT_REQUIRED: u64 = 2;
/// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_NOT_AVAIL`.
pub const KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_NOT_AVAIL: u64 = 0;
/// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_UNKNOWN`.
pub const KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_UNKNOWN: u64 = 1;
/// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_AVAIL`.
pub const KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_AVAIL: u64 = 2;
/// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_NOT_REQUIRED`.
pub const KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_NOT_REQUIRED: u64 = 3;
/// `KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_ENABLED`: the mitigation is enabled (with `_AVAIL`).
pub const KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_ENABLED: u64 = 0x10;

// --- arm64 hypercalls KVM defines itself (`include/linux/arm-smccc.h`, `asm/kvm.h`) --------------
// The SMCCC vocabulary of the guest (`model::arm64::smccc`) re-exports these: they are KVM's own
// numbers, not the Arm SMC Calling Convention's.

/// `ARM_SMCCC_VENDOR_HYP_KVM_FEATURES_FUNC_ID`: KVM's vendor-hypervisor service bitmap (vendor
/// hypervisor owner, function 0; gated by `KVM_REG_ARM_VENDOR_HYP_BMAP` bit 0).
pub const VENDOR_HYP_KVM_FEATURES: u32 = 0x8600_0000;
/// `ARM_SMCCC_VENDOR_HYP_KVM_PTP_FUNC_ID`: wall clock and counter for PTP (function 1; gated by
/// `KVM_REG_ARM_VENDOR_HYP_BMAP` bit 1).
pub const VENDOR_HYP_KVM_PTP: u32 = 0x8600_0001;
/// `ARM_SMCCC_VENDOR_HYP_UID_KVM_REG_{0..3}`: KVM's vendor-hypervisor UID
/// (28b46fb6-2ec5-11e9-a9ca-4b564d003a74) as `VENDOR_HYP_CALL_UID` returns it in x0..x3.
pub const KVM_UID: [u64; 4] = [0xb66f_b428, 0xe911_c52e, 0x564b_caa9, 0x743a_004d];

/// `KVM_PSCI_FN_BASE`: the first of KVM's PSCI 0.1 function ids, which predate PSCI 0.2's
/// standard ids and are still served to a vCPU without `KVM_ARM_VCPU_PSCI_0_2`.
pub const KVM_PSCI_FN_BASE: u32 = 0x95c1_ba5e;
/// `KVM_PSCI_FN_CPU_SUSPEND` = `KVM_PSCI_FN(0)`.
pub const KVM_PSCI_FN_CPU_SUSPEND: u32 = KVM_PSCI_FN_BASE;
/// `KVM_PSCI_FN_CPU_OFF` = `KVM_PSCI_FN(1)`.
pub const KVM_PSCI_FN_CPU_OFF: u32 = KVM_PSCI_FN_BASE + 1;
/// `KVM_PSCI_FN_CPU_ON` = `KVM_PSCI_FN(2)`.
pub const KVM_PSCI_FN_CPU_ON: u32 = KVM_PSCI_FN_BASE + 2;
/// `KVM_PSCI_FN_MIGRATE` = `KVM_PSCI_FN(3)`.
pub const KVM_PSCI_FN_MIGRATE: u32 = KVM_PSCI_FN_BASE + 3;
