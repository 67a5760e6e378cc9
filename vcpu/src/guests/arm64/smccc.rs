//! The SMCCC calls the arm64 guest makes with `HVC #0`, and what their answers mean.
//!
//! The function ids, their names, conventions and return codes are what SMCCC and KVM define,
//! and live in the model: [`crate::model::arm64::smccc`], their one path; this module holds what
//! the guest makes of them (the calls it makes, the results it reports).

use crate::model::arm64::smccc::*;

use serde::{Deserialize, Serialize};
use std::fmt;

/// One SMCCC call: `x0` = function id, `x1..x3` = arguments (zero when unused: the program sets
/// all three on every call, so no stale value from an earlier call leaks into this one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SmcccCall {
    /// The function id (`x0`).
    pub function_id: u32,
    /// `x1`, `x2`, `x3`.
    pub args: [u64; 3],
}

impl SmcccCall {
    /// A call without arguments.
    pub const fn new(function_id: u32) -> Self {
        SmcccCall {
            function_id,
            args: [0; 3],
        }
    }

    /// A call with one argument (the common `*_FEATURES(function id)` shape).
    pub const fn with_arg(function_id: u32, arg: u64) -> Self {
        SmcccCall {
            function_id,
            args: [arg, 0, 0],
        }
    }

    /// Whether two answers to this call may legitimately differ (random numbers, clocks), so
    /// that passes are compared on whether the call is supported, not on its values.
    pub fn results_vary(&self) -> bool {
        matches!(
            self.function_id,
            TRNG_RND32 | TRNG_RND64 | VENDOR_HYP_KVM_PTP
        )
    }

    /// The name of a call that would stop the program or change the machine's power state, if
    /// this is one (see [`crate::guests::GuestError::PowerStateCall`]).
    pub fn changes_power_state(&self) -> Option<&'static str> {
        power_state_call(self.function_id)
    }
}

/// `NAME(arg, …)`, with arguments up to the last nonzero one; an argument that is a known
/// function id is shown by name.
impl fmt::Display for SmcccCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match function_name(self.function_id) {
            Some(name) => f.write_str(name)?,
            None => write!(f, "SMCCC {:#010x}", self.function_id)?,
        }
        let used = self.args.iter().rposition(|&a| a != 0).map_or(0, |i| i + 1);
        if used > 0 {
            f.write_str("(")?;
            for (i, &arg) in self.args[..used].iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                match u32::try_from(arg).ok().and_then(function_name) {
                    Some(name) => f.write_str(name)?,
                    None => write!(f, "{arg:#x}")?,
                }
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// What a call's `x0` says, read with the call's convention (SMC32 results are the low 32 bits,
/// sign-extended: that is where the negative SMCCC return codes live).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmcccStatus {
    /// `NOT_SUPPORTED` (-1): the hypervisor does not offer the call (or a bitmap hides it).
    NotSupported,
    /// `NOT_REQUIRED` (-2).
    NotRequired,
    /// `INVALID_PARAMETER` (-3).
    InvalidParameter,
    /// Anything else: the call's result.
    Value(u64),
}

impl SmcccStatus {
    /// Classify `x0` of an answer to `function_id`.
    pub fn of(function_id: u32, x0: u64) -> Self {
        let signed = if is_smc64(function_id) {
            x0 as i64
        } else {
            i64::from(x0 as u32 as i32)
        };
        match signed {
            NOT_SUPPORTED => SmcccStatus::NotSupported,
            NOT_REQUIRED => SmcccStatus::NotRequired,
            INVALID_PARAMETER => SmcccStatus::InvalidParameter,
            _ => SmcccStatus::Value(x0),
        }
    }
}

/// One call and what came back in `x0..x3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SmcccResult {
    /// The function id (`x0` on the way in).
    pub function_id: u32,
    /// `x1..x3` on the way in.
    pub args: [u64; 3],
    /// `x0..x3` on the way out.
    pub ret: [u64; 4],
}

impl SmcccResult {
    /// The call this answers.
    pub fn call(&self) -> SmcccCall {
        SmcccCall {
            function_id: self.function_id,
            args: self.args,
        }
    }

    /// What `x0` says.
    pub fn status(&self) -> SmcccStatus {
        SmcccStatus::of(self.function_id, self.ret[0])
    }

    /// Whether `other` (a later pass's answer to the same call) agrees with this one: the same
    /// registers, or, for calls whose results vary ([`SmcccCall::results_vary`]), the same
    /// support status.
    pub fn agrees_with(&self, other: &SmcccResult) -> bool {
        if self.call() != other.call() {
            return false;
        }
        if self.call().results_vary() {
            let supported = |r: &SmcccResult| r.status() != SmcccStatus::NotSupported;
            supported(self) == supported(other)
        } else {
            self.ret == other.ret
        }
    }

    /// What the guest saw, in human terms: `TRNG_VERSION -> NOT_SUPPORTED (-1)`,
    /// `SMCCC_VERSION -> 0x10001 (version 1.1)`, `VENDOR_HYP_CALL_UID -> KVM's UID`, …
    pub fn describe(&self) -> String {
        format!("{} -> {}", self.call(), self.describe_answer())
    }

    fn describe_answer(&self) -> String {
        let [x0, x1, x2, x3] = self.ret;
        let value = match self.status() {
            SmcccStatus::NotSupported => return "NOT_SUPPORTED (-1)".to_string(),
            SmcccStatus::NotRequired => return "NOT_REQUIRED (-2)".to_string(),
            SmcccStatus::InvalidParameter => return "INVALID_PARAMETER (-3)".to_string(),
            SmcccStatus::Value(value) => value,
        };
        match self.function_id {
            SMCCC_VERSION | PSCI_VERSION | TRNG_VERSION => {
                format!(
                    "{value:#x} (version {}.{})",
                    (value >> 16) & 0x7fff,
                    value & 0xffff
                )
            }
            SMCCC_ARCH_FEATURES | PSCI_FEATURES | TRNG_FEATURES | PV_TIME_FEATURES
                if value == 0 =>
            {
                "0 (SUCCESS)".to_string()
            }
            VENDOR_HYP_CALL_UID if self.ret == KVM_UID => "KVM's UID".to_string(),
            VENDOR_HYP_CALL_UID => format!("UID {x0:#x} {x1:#x} {x2:#x} {x3:#x} (not KVM's)"),
            VENDOR_HYP_KVM_FEATURES => {
                let mut names: Vec<&str> = Vec::new();
                if value & 1 != 0 {
                    names.push("FEATURES");
                }
                if value & 2 != 0 {
                    names.push("PTP");
                }
                let mut text = format!("{value:#x} ({})", names.join(", "));
                if x2 != 0 {
                    text.push_str(&format!(", bitmap 2 {x2:#x}"));
                }
                text
            }
            _ if self.call().results_vary() => "supported (values vary per call)".to_string(),
            _ if [x1, x2, x3] == [0; 3] => format!("{value:#x}"),
            _ => format!("{value:#x} (x1 {x1:#x}, x2 {x2:#x}, x3 {x3:#x})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_state_calls_are_recognised() {
        for (id, name) in [
            (PSCI_SYSTEM_OFF, "PSCI_SYSTEM_OFF"),
            (0x8400_0009, "PSCI_SYSTEM_RESET"),
            (0x8400_0002, "PSCI_CPU_OFF"),
            (0xc400_0003, "PSCI_CPU_ON"),
            (0xc400_0001, "PSCI_CPU_SUSPEND"),
            (0xc400_0012, "PSCI_SYSTEM_RESET2"),
            (0x95c1_ba5f, "KVM_PSCI_0_1_CPU_OFF"),
        ] {
            assert_eq!(SmcccCall::new(id).changes_power_state(), Some(name));
        }
        for id in [
            PSCI_VERSION,
            PSCI_FEATURES,
            0x8400_0004, // AFFINITY_INFO
            TRNG_VERSION,
            SMCCC_VERSION,
            VENDOR_HYP_KVM_FEATURES,
            0x8600_0008, // vendor hyp function 8: not PSCI
        ] {
            assert_eq!(SmcccCall::new(id).changes_power_state(), None, "{id:#x}");
        }
    }

    fn result(call: SmcccCall, ret: [u64; 4]) -> SmcccResult {
        SmcccResult {
            function_id: call.function_id,
            args: call.args,
            ret,
        }
    }

    #[test]
    fn descriptions() {
        let minus = |n: i64| n as u64;
        let cases = [
            (
                result(SmcccCall::new(TRNG_VERSION), [minus(-1), 0, 0, 0]),
                "TRNG_VERSION -> NOT_SUPPORTED (-1)",
            ),
            (
                result(SmcccCall::new(TRNG_VERSION), [0x1_0000, 0, 0, 0]),
                "TRNG_VERSION -> 0x10000 (version 1.0)",
            ),
            (
                result(SmcccCall::new(SMCCC_VERSION), [0x1_0001, 0, 0, 0]),
                "SMCCC_VERSION -> 0x10001 (version 1.1)",
            ),
            (
                result(SmcccCall::new(PSCI_VERSION), [0x1_0003, 0, 0, 0]),
                "PSCI_VERSION -> 0x10003 (version 1.3)",
            ),
            (
                result(
                    SmcccCall::with_arg(SMCCC_ARCH_FEATURES, SMCCC_ARCH_WORKAROUND_1.into()),
                    [0, 0, 0, 0],
                ),
                "SMCCC_ARCH_FEATURES(SMCCC_ARCH_WORKAROUND_1) -> 0 (SUCCESS)",
            ),
            (
                result(
                    SmcccCall::with_arg(SMCCC_ARCH_FEATURES, SMCCC_ARCH_WORKAROUND_2.into()),
                    [minus(-2), 0, 0, 0],
                ),
                "SMCCC_ARCH_FEATURES(SMCCC_ARCH_WORKAROUND_2) -> NOT_REQUIRED (-2)",
            ),
            (
                result(SmcccCall::new(VENDOR_HYP_CALL_UID), KVM_UID),
                "VENDOR_HYP_CALL_UID -> KVM's UID",
            ),
            (
                result(SmcccCall::new(VENDOR_HYP_CALL_UID), [1, 2, 3, 4]),
                "VENDOR_HYP_CALL_UID -> UID 0x1 0x2 0x3 0x4 (not KVM's)",
            ),
            (
                result(SmcccCall::new(VENDOR_HYP_KVM_FEATURES), [3, 0, 0, 0]),
                "VENDOR_HYP_KVM_FEATURES -> 0x3 (FEATURES, PTP)",
            ),
            (
                result(SmcccCall::with_arg(VENDOR_HYP_KVM_PTP, 1), [5, 6, 7, 8]),
                "VENDOR_HYP_KVM_PTP(0x1) -> supported (values vary per call)",
            ),
            (
                result(SmcccCall::new(0x8600_0042), [7, 0, 0, 0]),
                "SMCCC 0x86000042 -> 0x7",
            ),
            (
                result(SmcccCall::new(PV_TIME_ST), [0x4000_0000, 0, 1, 0]),
                "PV_TIME_ST -> 0x40000000 (x1 0x0, x2 0x1, x3 0x0)",
            ),
        ];
        for (result, text) in cases {
            assert_eq!(result.describe(), text);
        }
    }

    /// SMC32 results are 32 bits: -1 in w0 is NOT_SUPPORTED whatever the upper half holds; SMC64
    /// results need all 64 bits.
    #[test]
    fn status_follows_the_convention() {
        assert_eq!(
            SmcccStatus::of(TRNG_VERSION, 0xffff_ffff),
            SmcccStatus::NotSupported
        );
        assert_eq!(
            SmcccStatus::of(TRNG_VERSION, u64::MAX),
            SmcccStatus::NotSupported
        );
        assert_eq!(
            SmcccStatus::of(TRNG_RND64, 0xffff_ffff),
            SmcccStatus::Value(0xffff_ffff)
        );
        assert_eq!(
            SmcccStatus::of(TRNG_RND64, u64::MAX),
            SmcccStatus::NotSupported
        );
        assert_eq!(SmcccStatus::of(PSCI_VERSION, 0), SmcccStatus::Value(0));
    }

    #[test]
    fn varying_calls_compare_by_support() {
        let ptp = SmcccCall::with_arg(VENDOR_HYP_KVM_PTP, 0);
        let a = result(ptp, [1, 2, 3, 4]);
        let b = result(ptp, [5, 6, 7, 8]);
        let off = result(ptp, [u64::MAX, 0, 0, 0]);
        assert!(a.agrees_with(&b));
        assert!(!a.agrees_with(&off));
        let version = SmcccCall::new(PSCI_VERSION);
        assert!(!result(version, [1, 0, 0, 0]).agrees_with(&result(version, [2, 0, 0, 0])));
        assert!(!a.agrees_with(&result(version, [1, 2, 3, 4])));
    }
}
