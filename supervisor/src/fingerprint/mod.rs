//! The host fingerprint document (schema `vmfleet.fingerprint.v1`,
//! `supervisor/schemas/fingerprint.v1.schema.json`): everything the kernel's answers to vmfleet
//! depend on, as one versioned JSON document.
//!
//! One builder, [`Fingerprint::build`], turns plain [`Facts`] into the document. The facts come
//! either from a trace ([`from_trace`]: its header and the calls it recorded) or from this host
//! ([`live`]: the same calls made on a scratch VM through the handles), so `vmfleet trace
//! fingerprint` and `vmfleet host --fingerprint` agree by construction wherever their facts do.
//! A fact a source lacks is `null` in the document, never guessed. A document's digest
//! ([`Fingerprint::digest`], [`digest::document_digest`]) names it in one short string.

pub mod digest;
pub mod from_trace;
pub mod live;
pub mod text;

use crate::report::{self, DriftChange};
use recorder::{Capability, HostFingerprint};
use serde::Serialize;
use vcpu::GuestArch;
use vcpu::hypervisor::cpuid::{CpuidEntry, CpuidTable};
use vcpu::model::arm64::{PsciVersion, RegClass, VcpuFeature, reg_id};
use vcpu::model::engine::without_caller_apic_id;
use vcpu::model::x86::model::X86CpuModel;

/// The version string every fingerprint document carries in `schema`.
pub const FINGERPRINT_SCHEMA: &str = "vmfleet.fingerprint.v1";

/// What a fingerprint is built from: the trace header's host facts plus the answers of the
/// arch-specific calls. Each `None` is a fact the source did not have.
#[derive(Clone, Debug)]
pub struct Facts {
    /// The guest architecture (a trace's `guest_arch`, or the host's).
    pub arch: GuestArch,
    /// Kernel, KVM module, CPU identity, microcode, API version, capabilities, and (x86) the
    /// emulated CPUID table (a trace's header has it from format 2 on).
    pub host: HostFingerprint,
    /// The x86 answers (empty on arm64).
    pub x86: X86Facts,
    /// The arm64 answers (empty on x86).
    pub arm64: Arm64Facts,
}

/// The x86 answers a fingerprint is built from.
#[derive(Clone, Debug, Default)]
pub struct X86Facts {
    /// `KVM_GET_SUPPORTED_CPUID` on `/dev/kvm`.
    pub supported: Option<CpuidTable>,
    /// The table one vCPU was given (`KVM_SET_CPUID2`, the first vCPU of a trace).
    pub written: Option<CpuidTable>,
    /// What `KVM_GET_CPUID2` returned right after `written` was set.
    pub held: Option<CpuidTable>,
    /// Probes of the bits the host forces (`live`): (written, held) pairs of tables with every
    /// feature-register bit cleared, and set. Empty when not measured (a trace).
    pub probes: Vec<(CpuidTable, CpuidTable)>,
}

/// The arm64 answers a fingerprint is built from.
#[derive(Clone, Debug, Default)]
pub struct Arm64Facts {
    /// `KVM_ARM_PREFERRED_TARGET`'s target.
    pub preferred_target: Option<u32>,
    /// `kvm_vcpu_init.features` given to the vCPU's `KVM_ARM_VCPU_INIT`.
    pub vcpu_init_features: Option<[u32; 7]>,
    /// `KVM_GET_REG_LIST` of that vCPU, in the kernel's order.
    pub reg_list: Option<Vec<u64>>,
    /// `KVM_GET_ONE_REG` answers of that vCPU after `KVM_ARM_VCPU_INIT` and before its first
    /// `KVM_SET_ONE_REG`, in the order read (each id once).
    pub initial_reads: Vec<(u64, u64)>,
    /// `KVM_ARM_GET_REG_WRITABLE_MASKS` (the feature-ID range).
    pub masks: Option<Vec<u64>>,
    /// The same facts for each other `KVM_ARM_VCPU_INIT` feature set the source used (the
    /// register list and the ID registers' values depend on the features: PMU, SVE, pointer
    /// authentication); empty for a live measurement (one feature set).
    pub other_inits: Vec<InitFacts>,
    /// The kernel's answers to the probe writes on scratch VMs (`crate::fleet::probe`); each
    /// `None` when not measured (a trace whose fleet never asked).
    pub probes: vcpu::model::arm64::host::KernelProbes,
}

/// What a vCPU initialised with one feature set reported.
#[derive(Clone, Debug, Default)]
pub struct InitFacts {
    /// `kvm_vcpu_init.features`.
    pub features: [u32; 7],
    /// Its `KVM_GET_REG_LIST`.
    pub reg_list: Option<Vec<u64>>,
    /// Its CPU-model registers as read after the init, before any write.
    pub initial_reads: Vec<(u64, u64)>,
}

/// The fingerprint document.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fingerprint {
    /// Always [`FINGERPRINT_SCHEMA`].
    pub schema: &'static str,
    /// `x86_64` or `aarch64`.
    pub arch: String,
    /// `uname -r`.
    pub kernel_release: String,
    /// The KVM module in use (`kvm_intel`, `kvm_amd`, `kvm` on arm64), `null` if none was seen.
    pub kvm_module: Option<String>,
    /// The CPU's identity.
    pub cpu: CpuIdentity,
    /// The microcode revision (x86, when `/proc/cpuinfo` shows it), else `null`.
    pub microcode: Option<String>,
    /// `KVM_GET_API_VERSION`, `null` if unknown.
    pub kvm_api_version: Option<u32>,
    /// `KVM_CHECK_EXTENSION` answers (`supervisor::host::FINGERPRINT_CAPS`).
    pub capabilities: Vec<Capability>,
    /// The x86 section (`null` on arm64).
    pub x86: Option<X86Section>,
    /// The arm64 section (`null` on x86).
    pub arm64: Option<Arm64Section>,
}

/// The CPU's identity as `/proc/cpuinfo` gives it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuIdentity {
    /// x86 `vendor_id`; arm64 `arm-implementer-<CPU implementer>`.
    pub vendor: String,
    /// x86 `cpu family`; arm64 `CPU architecture`.
    pub family: u32,
    /// x86 `model`; arm64 `CPU part`.
    pub model: u32,
    /// x86 `stepping`; arm64 `CPU revision`.
    pub stepping: u32,
    /// x86 `model name`; empty on arm64.
    pub model_name: String,
    /// arm64: MIDR_EL1 as the vCPU read it before any write (hex); `null` on x86 or if not read.
    pub midr: Option<String>,
    /// arm64: REVIDR_EL1 as the vCPU read it before any write (hex); `null` on x86 or if not
    /// read.
    pub revidr: Option<String>,
}

/// What an x86 host offers and does to guest CPUID.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct X86Section {
    /// `KVM_GET_SUPPORTED_CPUID`, with the answering CPU's APIC ids zeroed (leaf 1 EBX\[31:24\],
    /// leaves 0xb and 0x1f EDX: they vary with the CPU the call ran on); `null` when the source
    /// did not record it.
    pub supported_cpuid: Option<CpuidSummary>,
    /// `KVM_GET_EMULATED_CPUID`, as the kernel answered (a trace's header holds it from trace
    /// format 2 on); `null` when the source did not record it (a format-1 trace) or the host
    /// refused it.
    pub emulated_cpuid: Option<CpuidSummary>,
    /// What the host rewrites after `KVM_SET_CPUID2` (as measured); `null` without a
    /// SET_CPUID2 + GET_CPUID2 pair.
    pub host_rewrites: Option<HostRewrites>,
    /// Bits of feature registers the host sets to one value whatever it is given, found by the
    /// live fingerprint's probes (every feature bit written 0, then 1); `null` when not probed
    /// (a trace's fingerprint: a fleet never asks).
    pub forced_bits: Option<Vec<ForcedBit>>,
}

/// A bit the host holds at `value` whatever `KVM_SET_CPUID2` wrote.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForcedBit {
    /// `7.0.ebx`.
    pub register: String,
    /// The leaf.
    pub leaf: u32,
    /// The subleaf.
    pub subleaf: u32,
    /// `eax`, `ebx`, `ecx` or `edx`.
    pub reg: &'static str,
    /// The bit.
    pub bit: u8,
    /// Its catalog name, if it has one.
    pub feature: Option<&'static str>,
    /// What the host holds it at.
    pub value: u8,
}

/// A CPUID table, whole.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuidSummary {
    /// How many entries.
    pub entries: usize,
    /// vmfleet's CRC-32 digest of the table, 8 hex digits (as `trace show` prints it).
    pub digest: String,
    /// The entries, in the kernel's order.
    pub table: Vec<CpuidEntry>,
}

/// A table written with `KVM_SET_CPUID2`, the one read back, and how they differ.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostRewrites {
    /// Whether the written table is vmfleet's default model (nothing hidden, one vCPU) built
    /// from `supported_cpuid`; `false` when it is some other model (a trace's first vCPU had
    /// one), or when the supported table is unknown.
    pub default_model: bool,
    /// Entries written.
    pub written_entries: usize,
    /// Digest of the table written.
    pub written_digest: String,
    /// Entries the kernel held after the write.
    pub held_entries: usize,
    /// Digest of the table held.
    pub held_digest: String,
    /// Every difference, as `vmfleet run --json` reports drift (`kind` says whether the kernel
    /// rewrote it or it tracks guest state).
    pub changes: Vec<DriftChange>,
}

/// What an arm64 host offers a vCPU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Arm64Section {
    /// `KVM_ARM_PREFERRED_TARGET`'s target, `null` if not recorded.
    pub preferred_target: Option<u32>,
    /// The `KVM_ARM_VCPU_INIT` features of the vCPU the values below were read on, `null` if
    /// not recorded.
    pub vcpu_init_features: Option<VcpuInitFeatures>,
    /// `KVM_GET_REG_LIST` of that vCPU, `null` if not recorded.
    pub reg_list: Option<RegList>,
    /// The limits: each system register read right after `KVM_ARM_VCPU_INIT`, before any write.
    pub limits: Vec<RegValue>,
    /// The firmware registers and hypercall bitmaps as read before any write (their defaults).
    pub firmware: Vec<RegValue>,
    /// The PSCI version the firmware register reports, `major.minor`; `null` if not read.
    pub psci_version: Option<String>,
    /// `KVM_ARM_GET_REG_WRITABLE_MASKS`, hex, indexed as the kernel indexes them; `null` if not
    /// recorded (kernels before 6.7 have no such call).
    pub writable_masks: Option<Vec<String>>,
    /// The cache description (the CCSIDR demux registers) as read before any write.
    pub cache_geometry: Vec<RegValue>,
    /// The register list and values of vCPUs initialised with other features (a trace's other
    /// feature sets, in order of first use; empty for a live measurement).
    pub other_vcpu_inits: Vec<OtherInit>,
    /// The kernel's answers to probe writes on a scratch VM: the rules that changed between
    /// kernels with no capability to show it.
    pub kernel_probes: KernelProbesSection,
}

/// The kernel's answers to probe writes (each `null` when not measured).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelProbesSection {
    /// Whether `KVM_SET_ONE_REG` of ID_AA64PFR0_EL1 with EL1 = 0 was refused (`EINVAL`, the
    /// EL0/EL1 floor of kernels after 6.12) rather than accepted (6.12).
    pub el_floor: Option<bool>,
    /// Whether `KVM_SET_ONE_REG` of ID_AA64DFR0_EL1 with DebugVer = 5 was refused (`EINVAL`,
    /// the DebugVer floor every kernel vmfleet knows has) rather than accepted.
    pub debug_ver_floor: Option<bool>,
    /// What the kernel did with ID_AA64DFR0_EL1.PMUVer = 0xF on a vCPU without a PMU:
    /// `reads-as-not-implemented` (stored as 0: 6.7 on), `kept` (6.3–6.6) or `refused` (6.1).
    pub pmu_imp_def: Option<vcpu::model::arm64::host::PmuImpDef>,
}

/// A vCPU initialised with another feature set: what it reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OtherInit {
    /// Its `KVM_ARM_VCPU_INIT` features.
    pub vcpu_init_features: VcpuInitFeatures,
    /// Its `KVM_GET_REG_LIST`, `null` if not recorded.
    pub reg_list: Option<RegList>,
    /// Its CPU-model registers (ID registers, cache description, firmware registers) as read
    /// before any write.
    pub values: Vec<RegValue>,
}

/// `kvm_vcpu_init.features`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VcpuInitFeatures {
    /// `features[0]`, hex.
    pub bits: String,
    /// The features set in `features[0]`, by vmfleet's names.
    pub names: Vec<String>,
}

/// A register list.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegList {
    /// How many registers.
    pub count: usize,
    /// The ids, hex, in the kernel's order.
    pub ids: Vec<String>,
}

/// One register's value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegValue {
    /// The `KVM_REG_*` id, hex.
    pub id: String,
    /// The register's name (catalog, firmware or uapi spelling).
    pub name: String,
    /// The value, hex.
    pub value: String,
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

/// Every feature bit set in `table`, by its catalog name or `leaf.subleaf.reg[bit]`, in table
/// order; the base entries of each range (leaves 0, 0x40000000, 0x80000000, 0xc0000000), which
/// hold the range's highest leaf and a vendor string rather than features, are left out.
pub fn feature_bits(table: &[CpuidEntry]) -> Vec<String> {
    use vcpu::hypervisor::cpuid::CpuidReg;
    use vcpu::model::x86::catalog::describe_bits;
    table
        .iter()
        .filter(|e| e.function & 0x0fff_ffff != 0)
        .flat_map(|e| {
            CpuidReg::ALL.into_iter().flat_map(move |reg| {
                describe_bits(e.function, e.index, reg, e.reg(reg))
                    .into_iter()
                    .map(|(_, name)| name)
            })
        })
        .collect()
}

fn summary(table: &CpuidTable) -> CpuidSummary {
    CpuidSummary {
        entries: table.len(),
        digest: format!("{:08x}", table.digest()),
        table: table.entries.clone(),
    }
}

/// The value of the limit named `name`, if the arm64 section has it.
fn limit(arm64: Option<&Arm64Section>, name: &str) -> Option<String> {
    arm64?
        .limits
        .iter()
        .find(|r| r.name == name)
        .map(|r| r.value.clone())
}

impl Fingerprint {
    /// The document these facts make. Pure: the same facts give the same document.
    pub fn build(facts: &Facts) -> Fingerprint {
        let host = &facts.host;
        let (x86, arm64) = match facts.arch {
            GuestArch::X86_64 => (
                Some(x86_section(&facts.x86, host.emulated_cpuid.as_ref())),
                None,
            ),
            GuestArch::Aarch64 => (None, Some(arm64_section(&facts.arm64))),
        };
        Fingerprint {
            schema: FINGERPRINT_SCHEMA,
            arch: facts.arch.to_string(),
            kernel_release: host.kernel_release.clone(),
            kvm_module: host.kvm_module.clone(),
            cpu: CpuIdentity {
                vendor: host.cpu_vendor.clone(),
                family: host.cpu_family,
                model: host.cpu_model,
                stepping: host.cpu_stepping,
                model_name: host.cpu_model_name.clone(),
                midr: limit(arm64.as_ref(), "MIDR_EL1"),
                revidr: limit(arm64.as_ref(), "REVIDR_EL1"),
            },
            microcode: host.microcode.clone(),
            kvm_api_version: host.kvm_api_version,
            capabilities: host.capabilities.clone(),
            x86,
            arm64,
        }
    }
}

fn x86_section(facts: &X86Facts, emulated: Option<&CpuidTable>) -> X86Section {
    let host_rewrites = match (&facts.written, &facts.held) {
        (Some(written), Some(held)) => {
            let default = facts
                .supported
                .as_ref()
                .and_then(|s| X86CpuModel::default().build(s, 0, 1).ok().map(|m| m.table));
            Some(HostRewrites {
                default_model: default.as_ref() == Some(written),
                written_entries: written.len(),
                written_digest: format!("{:08x}", written.digest()),
                held_entries: held.len(),
                held_digest: format!("{:08x}", held.digest()),
                changes: report::drift_changes(&vcpu::model::x86::drift::drift(written, held)),
            })
        }
        _ => None,
    };
    X86Section {
        supported_cpuid: facts
            .supported
            .as_ref()
            .map(|t| summary(&without_caller_apic_id(t))),
        emulated_cpuid: emulated.map(summary),
        host_rewrites,
        forced_bits: (!facts.probes.is_empty()).then(|| forced_bits(&facts.probes)),
    }
}

/// Every single bit a probe pair shows held otherwise than written (bits the guest's state
/// drives aside), each once, in (leaf, subleaf, register, bit) order.
fn forced_bits(probes: &[(CpuidTable, CpuidTable)]) -> Vec<ForcedBit> {
    let mut out: Vec<ForcedBit> = Vec::new();
    for (written, held) in probes {
        for change in report::drift_changes(&vcpu::model::x86::drift::drift(written, held)) {
            let (Some(reg), Some(bit), Some(to)) = (change.reg, change.bit, change.to) else {
                continue;
            };
            if change.kind != report::DriftKind::KernelRewrote {
                continue;
            }
            let forced = ForcedBit {
                register: change.register.clone(),
                leaf: change.leaf,
                subleaf: change.subleaf,
                reg,
                bit,
                feature: change.feature,
                value: u8::from(to != 0),
            };
            if !out.iter().any(|f| {
                (f.leaf, f.subleaf, f.reg, f.bit) == (forced.leaf, forced.subleaf, reg, bit)
            }) {
                out.push(forced);
            }
        }
    }
    out.sort_by_key(|f| (f.leaf, f.subleaf, f.reg, f.bit));
    out
}

fn arm64_section(facts: &Arm64Facts) -> Arm64Section {
    let value = |(id, value): &(u64, u64)| RegValue {
        id: hex(*id),
        name: reg_id::describe(*id),
        value: hex(*value),
    };
    let is_firmware = |id: u64| {
        matches!(
            reg_id::classify(id),
            RegClass::Firmware { .. } | RegClass::FirmwareBitmap { .. }
        )
    };
    let limits = facts
        .initial_reads
        .iter()
        .filter(|(id, _)| matches!(reg_id::classify(*id), RegClass::SysReg(_)))
        .map(value)
        .collect();
    let firmware = facts
        .initial_reads
        .iter()
        .filter(|(id, _)| is_firmware(*id))
        .map(value)
        .collect();
    let cache_geometry = facts
        .initial_reads
        .iter()
        .filter(|(id, _)| reg_id::classify(*id) == RegClass::Demux)
        .map(value)
        .collect();
    let other_vcpu_inits = facts
        .other_inits
        .iter()
        .map(|init| OtherInit {
            vcpu_init_features: init_features(&init.features),
            reg_list: init.reg_list.as_deref().map(reg_list),
            values: init.initial_reads.iter().map(value).collect(),
        })
        .collect();
    let psci_version = facts
        .initial_reads
        .iter()
        .find(|(id, _)| *id == vcpu::model::arm64::FirmwareRegister::PsciVersion.id())
        .map(|(_, v)| {
            PsciVersion::from_reg_value(*v)
                .map_or_else(|| format!("{}.{}", v >> 16, v & 0xffff), |p| p.to_string())
        });
    Arm64Section {
        preferred_target: facts.preferred_target,
        vcpu_init_features: facts.vcpu_init_features.as_ref().map(init_features),
        reg_list: facts.reg_list.as_deref().map(reg_list),
        limits,
        firmware,
        psci_version,
        writable_masks: facts
            .masks
            .as_ref()
            .map(|m| m.iter().map(|&v| hex(v)).collect()),
        cache_geometry,
        kernel_probes: KernelProbesSection {
            el_floor: facts.probes.el_floor,
            debug_ver_floor: facts.probes.debug_ver_floor,
            pmu_imp_def: facts.probes.pmu_imp_def,
        },
        other_vcpu_inits,
    }
}

fn init_features(f: &[u32; 7]) -> VcpuInitFeatures {
    VcpuInitFeatures {
        bits: format!("{:#x}", f[0]),
        names: VcpuFeature::ALL
            .into_iter()
            .filter(|v| f[0] & (1 << v.bit()) != 0)
            .map(|v| v.to_string())
            .collect(),
    }
}

fn reg_list(ids: &[u64]) -> RegList {
    RegList {
        count: ids.len(),
        ids: ids.iter().map(|&id| hex(id)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supported_table_drops_the_answering_cpus_apic_ids() {
        let entry = |function, ebx, edx| CpuidEntry {
            function,
            index: 0,
            flags: 0,
            eax: 0,
            ebx,
            ecx: 0,
            edx,
        };
        let on_cpu = |apic: u32| {
            CpuidTable::new(vec![
                entry(1, apic << 24 | 0x0002_0800, 0x178b_fbff),
                entry(0xb, 1, apic),
            ])
        };
        let build = |apic| {
            Fingerprint::build(&Facts {
                arch: GuestArch::X86_64,
                host: HostFingerprint::default(),
                x86: X86Facts {
                    supported: Some(on_cpu(apic)),
                    ..X86Facts::default()
                },
                arm64: Arm64Facts::default(),
            })
        };
        assert_eq!(build(0), build(1));
        let x86 = build(1).x86.unwrap();
        let table = x86.supported_cpuid.unwrap().table;
        assert_eq!((table[0].ebx, table[0].edx), (0x0002_0800, 0x178b_fbff));
        assert_eq!(table[1].edx, 0);
        assert!(x86.emulated_cpuid.is_none() && x86.host_rewrites.is_none());
        assert!(build(0).arm64.is_none());
    }

    #[test]
    fn the_emulated_table_comes_from_the_host_facts_whole() {
        let emulated = CpuidTable::new(vec![
            CpuidEntry {
                function: 0,
                index: 0,
                flags: 0,
                eax: 7,
                ebx: 0x6874_7541,
                ecx: 0,
                edx: 0,
            },
            CpuidEntry {
                function: 1,
                index: 0,
                flags: 0,
                eax: 0,
                ebx: 0,
                ecx: 1 << 22 | 1 << 3,
                edx: 0,
            },
            CpuidEntry {
                function: 7,
                index: 0,
                flags: 1,
                eax: 0,
                ebx: 0,
                ecx: 1 << 22,
                edx: 0,
            },
        ]);
        let fp = Fingerprint::build(&Facts {
            arch: GuestArch::X86_64,
            host: HostFingerprint {
                emulated_cpuid: Some(emulated.clone()),
                ..HostFingerprint::default()
            },
            x86: X86Facts::default(),
            arm64: Arm64Facts::default(),
        });
        let got = fp.x86.unwrap().emulated_cpuid.unwrap();
        assert_eq!(got.table, emulated.entries);
        assert_eq!(got.entries, 3);
        assert_eq!(got.digest, format!("{:08x}", emulated.digest()));
        assert_eq!(
            feature_bits(&got.table),
            ["monitor", "movbe", "rdpid"].map(String::from)
        );
    }

    #[test]
    fn arm64_values_sort_into_limits_and_firmware() {
        let psci = vcpu::model::arm64::FirmwareRegister::PsciVersion.id();
        let midr = 0x6030_0000_0013_c000;
        let fp = Fingerprint::build(&Facts {
            arch: GuestArch::Aarch64,
            host: HostFingerprint::default(),
            x86: X86Facts::default(),
            arm64: Arm64Facts {
                preferred_target: Some(5),
                vcpu_init_features: Some([0xc, 0, 0, 0, 0, 0, 0]),
                reg_list: Some(vec![midr, psci]),
                initial_reads: vec![(psci, 0x10001), (midr, 0x410f_d0c1)],
                masks: None,
                other_inits: Vec::new(),
                probes: vcpu::model::arm64::host::KernelProbes {
                    el_floor: Some(true),
                    pmu_imp_def: Some(vcpu::model::arm64::host::PmuImpDef::Kept),
                    ..Default::default()
                },
            },
        });
        assert!(fp.x86.is_none());
        let arm64 = fp.arm64.clone().unwrap();
        assert_eq!(arm64.kernel_probes.el_floor, Some(true));
        assert_eq!(arm64.kernel_probes.debug_ver_floor, None);
        let json = serde_json::to_value(&arm64.kernel_probes).unwrap();
        assert_eq!(json["pmu_imp_def"], "kept");
        assert_eq!(arm64.limits.len(), 1);
        assert_eq!(arm64.limits[0].name, "MIDR_EL1");
        assert_eq!(arm64.limits[0].value, "0x410fd0c1");
        assert_eq!(fp.cpu.midr.as_deref(), Some("0x410fd0c1"));
        assert_eq!(fp.cpu.revidr, None);
        assert_eq!(arm64.firmware[0].name, "KVM_REG_ARM_PSCI_VERSION");
        assert_eq!(arm64.psci_version.as_deref(), Some("1.1"));
        let features = arm64.vcpu_init_features.unwrap();
        assert_eq!(features.bits, "0xc");
        assert_eq!(features.names, ["psci-0.2", "pmu-v3"]);
        assert!(arm64.writable_masks.is_none());
    }
}
