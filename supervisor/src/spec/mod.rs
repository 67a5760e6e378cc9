//! The fleet spec: which VMs to run, with which CPU model, and what to try on them after they ran.
//!
//! A spec is TOML. Every error, syntactic or semantic, names the file, line and column of the
//! offending key or value, because a fleet spec is hand-written and a bare "invalid value" wastes
//! the operator's time; a misspelt key, action, arch or feature gets the nearest known name.
//! Parsing is pure: the same text always gives the same spec, which is what lets
//! a trace carry its spec as text and replay re-parse it.
//!
//! ```toml
//! name = "web-tier"
//!
//! [[vm]]
//! name = "api"
//! count = 3                 # three copies: api-0, api-1, api-2 (default 1: just `api`)
//! vcpus = 2
//! memory_mib = 16
//! probe_repeats = 1         # 0 = probe forever
//! # fault_after_passes = 1  # optional: the guest triple-faults after this many passes
//! # record_exits = 10000     # exits per vCPU decoded and recorded one by one ("all": no limit;
//! #                          # default 10000 with probe_repeats = 0, else "all"); later ones
//! #                          # are counted, not decoded, and summarised in a trace
//! cpu = { base = "host", hide = ["avx512f", "pdpe1gb"] }
//!
//! [[vm.after_run]]          # checks of the pre-run lock, once the VM has run
//! action = "rewrite-identical"
//!
//! [[vm.after_run]]
//! action = "hide"
//! features = ["sse4_2"]
//! vcpu = 1
//! ```
//!
//! An arm64 fleet says `arch = "aarch64"` and gives each VM an `arm64` table (the model's own
//! spec, [`vcpu::model::arm64::Arm64ModelSpec`]) instead of `cpu`:
//!
//! ```toml
//! arch = "aarch64"
//!
//! [[vm]]
//! name = "edge"
//! [vm.arm64]
//! features = ["psci-0.2", "pmu-v3"]
//! psci_version = "1.0"
//! id_registers = { "ID_AA64ISAR0_EL1.AES" = 0 }
//! hypercalls = { trng = false }
//! registers = { MPIDR_EL1 = "0x80000001" }  # whole registers, by name or id; "0x…" values
//! unknown_registers = "clear"      # or "keep-host", "refuse"
//!
//! # cross_check = true             # (top level) also send each refused write to a scratch VM
//! # unknown_registers = "refuse"    # (top level) the fleet's policy; a VM's table may differ
//!
//! [[vm.after_run]]                 # after the run: refused by the lock (EBUSY class)
//! action = "set"
//! field = "ID_AA64PFR0_EL1.CSV3"
//! value = 0
//! ```
//!
//! The parser is cut along the spec's own sections, one module each: `top` ([`parse`] and the top
//! level: the fleet's name, arch and defaults; [`parse_cross_checked`]), `vm` (a `[[vm]]` entry:
//! its name, sizes, copies and the fleet-wide limits), `x86` (a VM's `cpu`), `arm64` (a VM's
//! `arm64` table), `after_run` (its `[[vm.after_run]]` actions), `keys` (the tables and their keys,
//! checked before the typed parse), `raw` (the typed TOML shape) and `position` (how an error names
//! its `file:line:col`).

use std::fmt;
use vcpu::GuestArch;
use vcpu::guests::x86::FAULT_IDT_BASE;
use vcpu::model::arm64::{Arm64ModelSpec, FieldRef};

mod after_run;
mod arm64;
mod keys;
mod position;
mod raw;
mod template;
mod top;
mod vm;
mod x86;

pub use template::{EmbedError, embed_templates, read_spec_file};
pub use top::{parse, parse_cross_checked};

// The tests take these through `use super::*`.
#[cfg(test)]
use keys::TABLES;
#[cfg(test)]
use vcpu::model::arm64::UnknownRegisterPolicy;

/// Limits that keep one spec from asking for absurd resources by typo: the most vCPUs of one VM.
pub const MAX_VCPUS_PER_VM: u32 = 64;
/// The most guest memory of one VM, in MiB.
pub const MAX_MEMORY_MIB: u32 = 16 * 1024;
/// The most passes `probe_repeats` and `fault_after_passes` can ask for (`probe_repeats = 0`
/// means forever).
pub const MAX_PROBE_REPEATS: u32 = 100_000;
/// The most VMs in a fleet, after `count` expansion.
pub const MAX_VMS: usize = 4096;
/// `record_exits` when a VM whose guest repeats forever (`probe_repeats = 0`) does not say: well
/// above what one pass of the built-in guests takes (x86: 6 exits per CPUID entry and 2, so 338
/// with 56 entries, 452 with 75; arm64: about 175), so its first passes are decoded and recorded
/// whole.
pub const DEFAULT_RECORD_EXITS: u64 = 10_000;
/// The most copies one `[[vm]]` entry can ask for with `count`.
pub const MAX_COUNT: u32 = 1000;
/// The most vCPUs in a fleet, all VMs together (each takes a thread and file descriptors).
pub const MAX_FLEET_VCPUS: u64 = 4096;
/// The most memory a VM with `fault_after_passes` can have: the guest's deliberate triple fault
/// points its IDT at [`FAULT_IDT_BASE`], which must lie above guest memory.
pub const MAX_FAULT_MEMORY_MIB: u32 = (FAULT_IDT_BASE >> 20) as u32;

/// A parsed, validated fleet spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetSpec {
    /// The fleet's name (`name`, default `fleet`).
    pub name: String,
    /// The guests' architecture (`arch`, default x86_64). A fleet runs on a host of its own
    /// architecture, and replays anywhere.
    pub arch: GuestArch,
    /// arm64: send every write vmfleet refuses to a scratch VM too, and report both verdicts.
    pub cross_check: bool,
    /// Every VM, in file order, each `[[vm]]` entry expanded to its `count` copies.
    pub vms: Vec<VmSpec>,
}

impl FleetSpec {
    /// This spec with every VM's `record_exits` set to `"all"`: how a trace in which no exit was
    /// counted (no `RUN_COUNTED` event) is replayed. Its vCPUs never went beyond a budget, so
    /// decoding every exit issues the same calls; and a trace recorded before `record_exits`
    /// existed, whose guests may have taken more exits than the default budget, replays as it
    /// was recorded.
    pub fn recorded_whole(&self) -> FleetSpec {
        let mut spec = self.clone();
        for vm in &mut spec.vms {
            vm.record_exits = None;
        }
        spec
    }
}

/// One VM of the fleet (a `[[vm]]` entry with `count = N` gives N of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmSpec {
    /// The VM's name, unique in the fleet (a copy's is `name-i`).
    pub name: String,
    /// vCPUs (`vcpus`, default 1).
    pub vcpus: u32,
    /// Guest memory in MiB (`memory_mib`, default 1).
    pub memory_mib: u32,
    /// How many times the guest runs its CPUID probe before halting; 0 = forever.
    pub probe_repeats: u32,
    /// The guest triple-faults on purpose after this many complete passes (never when `None`).
    /// At most `probe_repeats` unless that is 0, so the fault always happens.
    pub fault_after_passes: Option<u32>,
    /// `record_exits`: how many exits per vCPU are decoded and recorded one by one (`None`:
    /// `"all"`, no limit). Default: [`DEFAULT_RECORD_EXITS`] for a guest that repeats forever
    /// (`probe_repeats = 0`), `"all"` for one with a number of passes (they bound its exits).
    /// Past it the run loop only counts I/O and MMIO exits and a trace keeps summaries of them,
    /// so a guest that keeps running has a bounded trace.
    pub record_exits: Option<u64>,
    /// The x86 CPUID model (`cpu`; empty on aarch64).
    pub cpu: CpuSpec,
    /// The arm64 CPU model (aarch64 fleets only; `None` there means the host's model).
    pub arm64: Option<Arm64ModelSpec>,
    /// The fleet's `cross_check`, for this VM.
    pub cross_check: bool,
    /// The CPU template the model comes from (`template`), by its name.
    pub template: Option<String>,
    /// The writes tried once the VM has run (`[[vm.after_run]]`), in file order.
    pub after_run: Vec<AfterRun>,
}

/// The CPU model requested for every vCPU of a VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuSpec {
    /// Catalog names of the features to hide from the guest (normalised to the catalog spelling).
    pub hide: Vec<String>,
    /// Catalog names of the features the guest must see (from a template).
    pub show: Vec<String>,
    /// Raw tri-state CPUID bits (from a template).
    pub cpuid: Vec<vcpu::model::x86::model::CpuidBits>,
}

impl CpuSpec {
    /// The x86 model this asks for, hiding `hide` (the spec's, or an after-run action's).
    pub fn model_hiding(&self, hide: &[String]) -> vcpu::model::x86::model::X86CpuModel {
        vcpu::model::x86::model::X86CpuModel {
            hide: hide.to_vec(),
            show: self.show.clone(),
            cpuid: self.cpuid.clone(),
        }
    }
}

/// A CPU-model write attempted once the VM has run, to exercise the pre-run lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterRun {
    /// Write back exactly what the kernel holds: must be allowed.
    RewriteIdentical {
        /// The vCPU written (`None` = all).
        vcpu: Option<u32>,
    },
    /// Hide more features: a change, so it must be refused.
    Hide {
        /// The catalog names of the features to hide as well.
        features: Vec<String>,
        /// The vCPU written (`None` = all).
        vcpu: Option<u32>,
    },
    /// arm64: set one ID-register field; refused by the lock unless it is the value held.
    SetField {
        /// The field (`ID_AA64PFR0_EL1.CSV3`).
        field: FieldRef,
        /// The value written into it.
        value: u64,
        /// The vCPU written (`None` = all).
        vcpu: Option<u32>,
    },
}

impl AfterRun {
    /// The vCPUs the action targets (`None` = all).
    pub fn vcpu(&self) -> Option<u32> {
        match self {
            AfterRun::RewriteIdentical { vcpu }
            | AfterRun::Hide { vcpu, .. }
            | AfterRun::SetField { vcpu, .. } => *vcpu,
        }
    }
}

/// A spec error at a position in a file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// What the text is called (a path).
    pub source_name: String,
    /// 1-based, like `column`: [`parse`] always names a position (the start of the file when
    /// nothing narrower is to blame); 0 only in errors made elsewhere, displayed without one.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.source_name, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.source_name, self.line, self.column, self.message
            )
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[path = "tests/arm64.rs"]
mod arm64_tests;

#[cfg(test)]
#[path = "tests/template.rs"]
mod template_tests;

/// Property tests: valid specs (the fixtures' and the demo's) mutated at random, by bytes, lines,
/// values and keys, either parse or fail with an error that names `file:line:col` inside the
/// text; `parse` never panics.
#[cfg(test)]
#[path = "tests/props.rs"]
mod props;
