//! This host's fingerprint: what a trace says about the machine it was recorded on.
//!
//! Kernel release, the KVM module in use, the CPU's identity and microcode come from `/proc` and
//! `/sys`; the KVM API version, capabilities and (x86) the emulated CPUID table are asked of the
//! backend *before* recording starts (they describe the host, not the job, so they belong in the
//! header, not in the event stream). The supported CPUID table is not among them: the job asks
//! for it and uses it, so it is an event.

use recorder::{Capability, HostFingerprint};
use std::fs;
use std::path::Path;
use vcpu::{GuestArch, Hypervisor, Reply, SystemCall};

/// The KVM capabilities a fingerprint lists, by number and uapi name.
pub const FINGERPRINT_CAPS: &[(u32, &str)] = &[
    (7, "KVM_CAP_EXT_CPUID"),
    (9, "KVM_CAP_NR_VCPUS"),
    (66, "KVM_CAP_MAX_VCPUS"),
    (70, "KVM_CAP_ONE_REG"),
    (95, "KVM_CAP_EXT_EMUL_CPUID"),
    (128, "KVM_CAP_MAX_VCPU_ID"),
    (87, "KVM_CAP_ARM_PSCI"),
    (93, "KVM_CAP_ARM_EL1_32BIT"),
    (102, "KVM_CAP_ARM_PSCI_0_2"),
    (126, "KVM_CAP_ARM_PMU_V3"),
    (165, "KVM_CAP_ARM_VM_IPA_SIZE"),
    (170, "KVM_CAP_ARM_SVE"),
    (171, "KVM_CAP_ARM_PTRAUTH_ADDRESS"),
    (172, "KVM_CAP_ARM_PTRAUTH_GENERIC"),
    (205, "KVM_CAP_ARM_MTE"),
    (230, "KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES"),
    (239, "KVM_CAP_ARM_WRITABLE_IMP_ID_REGS"),
    (240, "KVM_CAP_ARM_EL2"),
    (241, "KVM_CAP_ARM_EL2_E2H0"),
];

/// Build the fingerprint of this host, asking `hv` (an unrecorded backend) for the KVM facts.
pub fn fingerprint(hv: &dyn Hypervisor) -> HostFingerprint {
    let cpu = CpuInfo::read();
    let kvm_api_version = match hv.call(&SystemCall::GetApiVersion) {
        Ok(Reply::Value(v)) => u32::try_from(v).ok(),
        _ => None,
    };
    let capabilities = FINGERPRINT_CAPS
        .iter()
        .filter_map(
            |(number, name)| match hv.call(&SystemCall::CheckExtension { cap: *number }) {
                Ok(Reply::Value(value)) => Some(Capability {
                    number: *number,
                    name: (*name).to_string(),
                    value,
                }),
                _ => None,
            },
        )
        .collect();
    // Only x86 has the ioctl; a host that refuses it (no KVM_CAP_EXT_EMUL_CPUID) has no table.
    let emulated_cpuid = match hv.arch() {
        GuestArch::X86_64 => match hv.call(&SystemCall::GetEmulatedCpuid) {
            Ok(Reply::Cpuid(table)) => Some(table),
            _ => None,
        },
        GuestArch::Aarch64 => None,
    };
    HostFingerprint {
        kernel_release: read_trimmed("/proc/sys/kernel/osrelease")
            .unwrap_or_else(|| "unknown".into()),
        kvm_module: kvm_module(Path::new("/sys/module")),
        cpu_vendor: cpu.vendor,
        cpu_family: cpu.family,
        cpu_model: cpu.model,
        cpu_stepping: cpu.stepping,
        cpu_model_name: cpu.model_name,
        microcode: cpu.microcode,
        kvm_api_version,
        capabilities,
        emulated_cpuid,
    }
}

/// Which KVM vendor module is loaded: `kvm_intel`, `kvm_amd`, `kvm_pvm` (nested, paging-based), or
/// several joined with `+` when more than one is (PVM hosts may also load the vendor module).
/// arm64 has no vendor module: KVM is built into the kernel, and shows as `kvm` (its
/// `/sys/module/kvm`, there for its parameters).
pub fn kvm_module(sys_module: &Path) -> Option<String> {
    let loaded: Vec<&str> = ["kvm_pvm", "kvm_intel", "kvm_amd", "kvm_arm"]
        .into_iter()
        .filter(|m| sys_module.join(m).exists())
        .collect();
    if !loaded.is_empty() {
        Some(loaded.join("+"))
    } else if sys_module.join("kvm").exists() {
        Some("kvm".to_string())
    } else {
        None
    }
}

/// The lines `vmfleet host` starts with: KVM answered (the caller opened it), its API version, and
/// the guest architecture this build runs under it.
pub fn kvm_summary(arch: Option<GuestArch>, fingerprint: &HostFingerprint) -> String {
    let api = fingerprint
        .kvm_api_version
        .map_or_else(|| "API version unknown".to_string(), |v| format!("API {v}"));
    let arch = arch.map_or_else(
        || format!("{} (no KVM backend in vmfleet)", std::env::consts::ARCH),
        |a| a.to_string(),
    );
    format!("kvm:          available (/dev/kvm, {api})\narch:         {arch}\n")
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// The identity fields of the first processor in `/proc/cpuinfo`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// x86 `vendor_id` (`GenuineIntel`, `AuthenticAMD`), or arm64 `arm-implementer-<CPU
    /// implementer>`.
    pub vendor: String,
    /// x86 `cpu family`, arm64 `CPU architecture`.
    pub family: u32,
    /// x86 `model`, arm64 `CPU part`.
    pub model: u32,
    /// x86 `stepping`, arm64 `CPU revision`.
    pub stepping: u32,
    /// x86 `model name` (empty where the kernel shows none, as on arm64).
    pub model_name: String,
    /// x86 `microcode`, when the kernel shows it.
    pub microcode: Option<String>,
}

impl CpuInfo {
    /// Read `/proc/cpuinfo`; an unreadable file gives empty fields (the fingerprint is a record,
    /// not a requirement).
    pub fn read() -> CpuInfo {
        fs::read_to_string("/proc/cpuinfo")
            .map(|t| CpuInfo::parse(&t))
            .unwrap_or_default()
    }

    /// Parse the first processor block. Handles x86 (`vendor_id`, `cpu family`, …) and arm64
    /// (`CPU implementer`, `CPU part`, `CPU variant`, `CPU revision`) spellings.
    pub fn parse(text: &str) -> CpuInfo {
        let mut info = CpuInfo::default();
        let block = text.split("\n\n").next().unwrap_or("");
        for line in block.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            let number = || {
                value
                    .strip_prefix("0x")
                    .map(|h| u32::from_str_radix(h, 16).ok())
                    .unwrap_or_else(|| value.parse().ok())
                    .unwrap_or(0)
            };
            match key {
                "vendor_id" => info.vendor = value.to_string(),
                "CPU implementer" => info.vendor = format!("arm-implementer-{value}"),
                "cpu family" | "CPU architecture" => info.family = number(),
                "model" | "CPU part" => info.model = number(),
                "stepping" | "CPU revision" => info.stepping = number(),
                "model name" => info.model_name = value.to_string(),
                "microcode" => info.microcode = Some(value.to_string()),
                _ => {}
            }
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_x86_cpuinfo() {
        let info = CpuInfo::parse(
            "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n\
             model name\t: AMD EPYC\nstepping\t: 1\nmicrocode\t: 0xa0011d1\n\nprocessor\t: 1\nvendor_id\t: Other\n",
        );
        assert_eq!(
            info,
            CpuInfo {
                vendor: "AuthenticAMD".into(),
                family: 25,
                model: 1,
                stepping: 1,
                model_name: "AMD EPYC".into(),
                microcode: Some("0xa0011d1".into()),
            }
        );
    }

    #[test]
    fn parses_arm64_cpuinfo() {
        let info = CpuInfo::parse(
            "processor\t: 0\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd0c\nCPU revision\t: 1\n",
        );
        assert_eq!(
            (info.vendor.as_str(), info.family, info.model, info.stepping),
            ("arm-implementer-0x41", 8, 0xd0c, 1)
        );
    }

    #[test]
    fn finds_loaded_kvm_modules() {
        let dir = std::env::temp_dir().join(format!("vmfleet-sysmod-{}", std::process::id()));
        fs::create_dir_all(dir.join("kvm_pvm")).unwrap();
        assert_eq!(kvm_module(&dir).as_deref(), Some("kvm_pvm"));
        fs::create_dir_all(dir.join("kvm_amd")).unwrap();
        assert_eq!(kvm_module(&dir).as_deref(), Some("kvm_pvm+kvm_amd"));
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(kvm_module(&dir), None);
        // arm64: KVM built in, no vendor module.
        fs::create_dir_all(dir.join("kvm")).unwrap();
        assert_eq!(kvm_module(&dir).as_deref(), Some("kvm"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn summary_names_the_arch() {
        let fingerprint = HostFingerprint {
            kvm_api_version: Some(12),
            ..HostFingerprint::default()
        };
        assert_eq!(
            kvm_summary(Some(GuestArch::Aarch64), &fingerprint),
            "kvm:          available (/dev/kvm, API 12)\narch:         aarch64\n"
        );
    }
}
