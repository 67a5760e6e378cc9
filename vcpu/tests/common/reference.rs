//! The real arm64 kernel the model is held to: what Linux 6.12 under QEMU `-cpu max` answered,
//! ioctl by ioctl (`vcpu/tests/data/arm64-kvm-6.12-cpu-max.log`, from the arm64 lab), read into
//! the model's types. One reader for every test file that judges against that VM.

use std::collections::BTreeMap;
use vcpu::hypervisor::abi::KVM_ARM_FEATURE_ID_RANGE_SIZE;
use vcpu::model::arm64::host::HostView;
use vcpu::model::arm64::sysreg::SysReg;
use vcpu::model::arm64::validate::WritableMasks;

/// The log itself.
pub const LOG: &str = include_str!("../data/arm64-kvm-6.12-cpu-max.log");

/// A hex number of the log (`0x…`).
pub fn hex(text: &str) -> u64 {
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("not hex: {text}"))
}

/// The value after `key` on a line (`id=0x…`).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(key))
}

/// `KVM_GET_REG_LIST` of the log's vCPU, in the kernel's order.
pub fn register_ids() -> Vec<u64> {
    LOG.lines()
        .filter_map(|l| l.strip_prefix("REGLIST 0x"))
        .map(|rest| hex(rest.split_whitespace().next().unwrap()))
        .collect()
}

/// The ID registers read right after the first `KVM_ARM_VCPU_INIT` (the limits), by id.
pub fn id_register_values() -> BTreeMap<u64, u64> {
    LOG.lines()
        .skip_while(|l| !l.starts_with("--- ID registers"))
        .take_while(|l| !l.starts_with("IOCTL KVM_ARM_GET_REG_WRITABLE_MASKS [after"))
        .filter_map(|line| Some((hex(field(line, "id=")?), hex(field(line, "val=")?))))
        .collect()
}

/// The writable masks of the log's `MASK [tag]` lines (e.g. `after vcpu init`), indexed like
/// the kernel's `KVM_ARM_GET_REG_WRITABLE_MASKS` array.
pub fn masks(tag: &str) -> Vec<u64> {
    let mut masks = vec![0u64; KVM_ARM_FEATURE_ID_RANGE_SIZE];
    let prefix = format!("MASK [{tag}]");
    for line in LOG.lines().filter(|l| l.starts_with(&prefix)) {
        let part = |key| field(line, key).unwrap().parse::<u32>().unwrap();
        let reg = SysReg::new(
            part("op0="),
            part("op1="),
            part("crn="),
            part("crm="),
            part("op2="),
        )
        .unwrap();
        masks[reg.feature_id_range_index().unwrap()] = hex(field(line, "mask=").unwrap());
    }
    masks
}

/// The masks after the first `KVM_ARM_VCPU_INIT`, as the model holds them.
pub fn masks_after_init() -> WritableMasks {
    WritableMasks::from_reported(&masks("after vcpu init")).unwrap()
}

/// The log's VM as vmfleet sees it right after the first `KVM_ARM_VCPU_INIT`, with `masks`
/// (nothing probed).
pub fn host_6_12(masks: WritableMasks) -> HostView {
    HostView {
        register_ids: register_ids(),
        values: id_register_values(),
        masks,
        writable_imp_id_regs: false,
        probes: Default::default(),
    }
}
