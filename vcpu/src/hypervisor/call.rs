//! The vocabulary of the hypervisor boundary: every call vmfleet makes to a backend, every reply,
//! every error.
//!
//! These types are what the recorder writes and the replay backend serves, so they are serde
//! types with a stable shape. One variant is one *logical* backend call, usually exactly one ioctl;
//! where a logical call needs several ioctls (setting up boot registers), the variant's docs say so.

use crate::hypervisor::cpuid::CpuidTable;
use crate::hypervisor::errno::Errno;
use crate::hypervisor::ids::{VcpuId, VmId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Calls on the system (`/dev/kvm`) stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SystemCall {
    /// `KVM_GET_API_VERSION`. Reply: [`Reply::Value`].
    GetApiVersion,
    /// `KVM_CHECK_EXTENSION` on `/dev/kvm`. Reply: [`Reply::Value`] (0 = absent).
    CheckExtension {
        /// The `KVM_CAP_*` number asked about.
        cap: u32,
    },
    /// `KVM_GET_VCPU_MMAP_SIZE`. Reply: [`Reply::Value`].
    GetVcpuMmapSize,
    /// `KVM_GET_SUPPORTED_CPUID` (x86). Reply: [`Reply::Cpuid`].
    GetSupportedCpuid,
    /// `KVM_CREATE_VM`. Recorded on the new VM's own stream. Reply: [`Reply::Done`].
    CreateVm {
        /// The logical id the new VM's stream and every later call on it carry.
        vm: VmId,
        /// The VM's name in the fleet spec, kept so a trace says which VM a stream is.
        name: String,
    },
    /// `KVM_GET_EMULATED_CPUID` (x86): the CPUID bits KVM can emulate for a guest beyond what
    /// the hardware gives it (e.g. MOVBE, RDPID), which `KVM_GET_SUPPORTED_CPUID` does not list.
    /// Reply: [`Reply::Cpuid`]. (Last, so traces recorded before it keep their variant numbers.)
    GetEmulatedCpuid,
}

/// Calls on a VM stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmCall {
    /// Allocate `size` bytes of guest memory and register it with `KVM_SET_USER_MEMORY_REGION`.
    /// The host address is deliberately not part of the call: it differs on every run.
    AddMemory {
        /// The memory slot (`kvm_userspace_memory_region.slot`); a slot number is used once per VM.
        slot: u32,
        /// Where the region starts in guest-physical memory.
        guest_phys_addr: u64,
        /// Length in bytes, a multiple of the host page size (the kernel refuses others, `EINVAL`).
        size: u64,
    },
    /// `KVM_CREATE_VCPU`. Reply: [`Reply::Done`].
    CreateVcpu {
        /// The logical id of the new vCPU, which is also the `vcpu_id` passed to the kernel.
        vcpu: VcpuId,
    },
    /// `KVM_ENABLE_CAP` on the VM fd. Reply: [`Reply::Value`] (the ioctl's return value).
    EnableCap {
        /// The `KVM_CAP_*` number to enable (`kvm_enable_cap.cap`).
        cap: u32,
        /// `kvm_enable_cap.flags`, as the capability defines them (0 for most).
        flags: u32,
        /// `kvm_enable_cap.args`, as the capability defines them.
        args: [u64; 4],
    },
    /// `KVM_ARM_PREFERRED_TARGET` (arm64). Reply: [`Reply::VcpuInit`].
    ArmPreferredTarget,
    /// `KVM_ARM_GET_REG_WRITABLE_MASKS` (arm64, feature-ID range). Reply: [`Reply::Masks`].
    ArmGetRegWritableMasks,
    /// Close the VM fd (after all its vCPUs). Reply: [`Reply::Done`].
    Destroy,
}

/// Calls on a vCPU stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VcpuCall {
    /// `KVM_SET_CPUID2` (x86). A CPU-model write. Reply: [`Reply::Done`].
    SetCpuid2 {
        /// The whole table the vCPU is to report; KVM replaces the previous one, it never merges.
        table: CpuidTable,
    },
    /// `KVM_GET_CPUID2` (x86). Reply: [`Reply::Cpuid`].
    GetCpuid2,
    /// `KVM_GET_ONE_REG` of a 64-bit register. Reply: [`Reply::Value`].
    GetOneReg {
        /// The `KVM_REG_*` id: arch | size | coprocessor | index ([`crate::hypervisor::abi`]).
        id: u64,
    },
    /// `KVM_SET_ONE_REG` of a 64-bit register. A CPU-model write for ID and firmware registers.
    /// Reply: [`Reply::Done`].
    SetOneReg {
        /// The `KVM_REG_*` id: arch | size | coprocessor | index ([`crate::hypervisor::abi`]).
        id: u64,
        /// The value to write.
        value: u64,
    },
    /// `KVM_GET_REG_LIST`. Reply: [`Reply::RegList`].
    GetRegList,
    /// `KVM_ARM_VCPU_INIT`. Reply: [`Reply::Done`].
    ArmVcpuInit {
        /// `kvm_vcpu_init.target`: the CPU target, normally what `KVM_ARM_PREFERRED_TARGET` said.
        target: u32,
        /// `kvm_vcpu_init.features`: the `KVM_ARM_VCPU_*` feature bitmap (bits in
        /// [`crate::hypervisor::abi`]).
        features: [u32; 7],
    },
    /// `KVM_ARM_VCPU_FINALIZE`. Reply: [`Reply::Done`].
    ArmVcpuFinalize {
        /// The feature to finalize (`KVM_ARM_VCPU_SVE`); required before `KVM_RUN` for a vCPU
        /// initialised with SVE, refused (`EINVAL`) for one without.
        feature: i32,
    },
    /// Put the vCPU at the guest's entry point. x86: `KVM_GET_SREGS` + `KVM_SET_SREGS` +
    /// `KVM_SET_REGS` (16-bit real mode, flat segments); arm64: `KVM_SET_ONE_REG` of PC and PSTATE.
    /// Reply: [`Reply::Done`].
    SetBootState {
        /// The guest-physical address of the first instruction.
        entry: u64,
    },
    /// `KVM_RUN` until the next exit to userspace. Reply: [`Reply::Exit`].
    Run,
    /// Close the vCPU fd. Reply: [`Reply::Done`].
    Destroy,
    /// `KVM_SET_DEVICE_ATTR` (`KVM_ARM_VCPU_PMU_V3_CTRL`, `KVM_ARM_VCPU_PMU_V3_INIT`): initialise
    /// the PMU of a vCPU created with the `pmu-v3` feature; `KVM_RUN` refuses it (`EINVAL`)
    /// otherwise. Without an in-kernel irqchip no overflow interrupt is set first. Reply:
    /// [`Reply::Done`]. (Last, so traces recorded before it keep their variant numbers.)
    ArmPmuV3Init,
    /// `KVM_RUN` until the next exit to userspace, like [`VcpuCall::Run`], for a run past its
    /// `record_exits` budget: the caller counts its I/O and MMIO exits without decoding them, so a
    /// recorder may fold them into an [`ExitSummary`] instead of writing each down, and a replay
    /// may answer with [`VcpuExit::Counted`]. Reply: [`Reply::Exit`]. (After `ArmPmuV3Init`, so
    /// traces recorded before it keep their variant numbers.)
    RunCounted,
}

impl VcpuCall {
    /// Whether this call changes what the guest sees of its CPU, i.e. whether the pre-run lock
    /// must judge it. (`SetOneReg` is narrowed further per register by the arm64 model.)
    pub fn is_cpu_model_write(&self) -> bool {
        matches!(
            self,
            VcpuCall::SetCpuid2 { .. } | VcpuCall::SetOneReg { .. }
        )
    }
}

/// What a vCPU thread does next at a control point: after a kick interrupted `KVM_RUN`, or when
/// it wakes up parked. The supervisor's control plane says what it *wants*; the thread's decision
/// is recorded (as [`Call::Decision`] on the vCPU's stream), so a replay takes the same decision at
/// the same exit whatever the timing of its own control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunDecision {
    /// Enter the guest again.
    Run,
    /// Park the thread until the control plane wants something else.
    Pause,
    /// Leave the run loop; the thread ends.
    Stop,
}

impl fmt::Display for RunDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunDecision::Run => "run",
            RunDecision::Pause => "pause",
            RunDecision::Stop => "stop",
        })
    }
}

/// Any backend call, with the layer it was made on. (A trace event stores these, and the fleet's
/// control requests besides, which are no business of this crate: see `recorder::TraceCall`.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// A call on the system (`/dev/kvm`) stream.
    System(SystemCall),
    /// A call on one VM's stream.
    Vm(VmCall),
    /// A call on one vCPU's stream.
    Vcpu(VcpuCall),
    /// A vCPU thread's control decision (see [`RunDecision`]); reply [`Reply::Decision`].
    Decision,
}

/// A successful call's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The call succeeded and returns nothing vmfleet keeps.
    Done,
    /// A number the ioctl returned (a version, a capability's value, a register's value).
    Value(u64),
    /// A CPUID table (`KVM_GET_SUPPORTED_CPUID`, `KVM_GET_EMULATED_CPUID`, `KVM_GET_CPUID2`).
    Cpuid(CpuidTable),
    /// The register ids `KVM_GET_REG_LIST` reported, in the kernel's order.
    RegList(Vec<u64>),
    /// The 192 writable masks of the arm64 feature-ID range, indexed as the kernel indexes them.
    Masks(Vec<u64>),
    /// `KVM_ARM_PREFERRED_TARGET`'s answer, a `kvm_vcpu_init` ready for `KVM_ARM_VCPU_INIT`.
    VcpuInit {
        /// The preferred CPU target.
        target: u32,
        /// The feature bitmap (the kernel leaves it zero; vmfleet adds its own features).
        features: [u32; 7],
    },
    /// Why `KVM_RUN` returned.
    Exit(VcpuExit),
    /// The decision a vCPU thread took at a control point.
    Decision(RunDecision),
    /// A fleet control request's reply, as one deterministic line (`ok: ...` or `error: ...`);
    /// opaque here: the supervisor writes it, the trace keeps it.
    Control(String),
}

/// The bytes of one I/O or MMIO exit: 1 to 8 for one access (string I/O may hold more). Kept
/// inline, so an exit, its recording and its replay cost no allocation; serialized exactly as a
/// `Vec<u8>` (a length, then the bytes), so traces are unchanged.
pub type ExitData = smallvec::SmallVec<[u8; 8]>;

/// Why `KVM_RUN` returned to userspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VcpuExit {
    /// x86 `HLT` with no in-kernel interrupt controller.
    Hlt,
    /// `OUT` to an I/O port; `data` is what the guest wrote (1, 2 or 4 bytes per access).
    IoOut {
        /// The I/O port.
        port: u16,
        /// The bytes written, in order.
        data: ExitData,
    },
    /// `IN` from an I/O port (vmfleet's guests never read ports; the reply is all ones).
    IoIn {
        /// The I/O port.
        port: u16,
        /// The access size in bytes (1, 2 or 4).
        size: u8,
    },
    /// A write to unbacked guest-physical memory.
    MmioWrite {
        /// The guest-physical address written.
        addr: u64,
        /// The bytes written, in order.
        data: ExitData,
    },
    /// A read from unbacked guest-physical memory (vmfleet answers zeros).
    MmioRead {
        /// The guest-physical address read.
        addr: u64,
        /// The access length in bytes (1 to 8).
        len: u8,
    },
    /// Triple fault / shutdown.
    Shutdown,
    /// `KVM_EXIT_SYSTEM_EVENT` (arm64 PSCI SYSTEM_OFF / RESET); `kind` is `KVM_SYSTEM_EVENT_*`.
    SystemEvent {
        /// `kvm_run.system_event.type`.
        kind: u32,
        /// `kvm_run.system_event.data`, the words the kernel filled (`ndata` of them).
        data: Vec<u64>,
    },
    /// `KVM_EXIT_FAIL_ENTRY`: the hardware refused to enter the guest.
    FailEntry {
        /// `hardware_entry_failure_reason`, as the CPU vendor defines it.
        reason: u64,
    },
    /// `KVM_EXIT_INTERNAL_ERROR` (emulation failure and friends).
    InternalError {
        /// `kvm_run.internal.suberror` (`KVM_INTERNAL_ERROR_*`).
        suberror: u32,
    },
    /// `KVM_RUN` returned `EINTR` because the vCPU was kicked.
    Interrupted,
    /// Any other exit reason vmfleet does not act on.
    Other {
        /// `kvm_run.exit_reason` (`KVM_EXIT_*`).
        reason: u32,
    },
    /// Many I/O and MMIO exits of [`VcpuCall::RunCounted`] calls, recorded as one summary (only a
    /// replay answers with it: KVM never does). The run loop counts `runs` exits and goes on.
    /// (Last, so traces recorded before it keep their variant numbers.)
    Counted(ExitSummary),
}

/// Exits counted rather than recorded one by one: how many, and per exit kind a count and an
/// order-insensitive digest, so two summaries merge by adding ([`ExitSummary::merge`]) and how a
/// live run cut its summaries in time does not change what they add up to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitSummary {
    /// `KVM_RUN` calls summarised (each returned one exit).
    pub runs: u64,
    /// Per exit kind ([`VcpuExit::kind`]): count and digest.
    pub kinds: BTreeMap<String, KindSummary>,
}

/// The exits of one kind in an [`ExitSummary`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindSummary {
    /// How many exits of this kind.
    pub count: u64,
    /// The wrapping sum of [`VcpuExit::digest`] over them (order-insensitive).
    pub digest: u32,
}

impl ExitSummary {
    /// Whether an exit of [`VcpuCall::RunCounted`] may be folded into a summary: I/O and MMIO
    /// exits, the ones the run loop counts and goes on from.
    pub fn folds(exit: &VcpuExit) -> bool {
        matches!(
            exit,
            VcpuExit::IoOut { .. }
                | VcpuExit::IoIn { .. }
                | VcpuExit::MmioWrite { .. }
                | VcpuExit::MmioRead { .. }
        )
    }

    /// Count one exit (one `KVM_RUN`). A [`VcpuExit::Counted`] is merged instead.
    pub fn add(&mut self, exit: &VcpuExit) {
        if let VcpuExit::Counted(summary) = exit {
            self.merge(summary);
            return;
        }
        self.runs += 1;
        let name = exit.kind();
        // Looked up before inserting: no allocation per exit once a kind is known.
        if !self.kinds.contains_key(name) {
            self.kinds.insert(name.to_string(), KindSummary::default());
        }
        let Some(kind) = self.kinds.get_mut(name) else {
            return;
        };
        kind.count += 1;
        kind.digest = kind.digest.wrapping_add(exit.digest());
    }

    /// Add `other`'s exits to these.
    pub fn merge(&mut self, other: &ExitSummary) {
        self.runs += other.runs;
        for (name, theirs) in &other.kinds {
            let kind = self.kinds.entry(name.clone()).or_default();
            kind.count += theirs.count;
            kind.digest = kind.digest.wrapping_add(theirs.digest);
        }
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.runs == 0
    }
}

impl ExitSummary {
    /// `INTR x7, IO_OUT x1224560 (digest 1a2b3c4d)`: each kind in name order with its count,
    /// and its digest when its exits carry data (not `HLT`, `SHUTDOWN`, `INTR`).
    pub fn kinds_text(&self) -> String {
        self.kinds
            .iter()
            .map(|(name, kind)| match name.as_str() {
                "HLT" | "SHUTDOWN" | "INTR" => format!("{name} x{}", kind.count),
                _ => format!("{name} x{} (digest {:08x})", kind.count, kind.digest),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for ExitSummary {
    /// `COUNTED x1224567: INTR x7, IO_OUT x1224560 (digest 1a2b3c4d)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "COUNTED x{}: {}", self.runs, self.kinds_text())
    }
}

impl VcpuExit {
    /// Short name for tables and transcripts.
    pub fn kind(&self) -> &'static str {
        match self {
            VcpuExit::Hlt => "HLT",
            VcpuExit::IoOut { .. } => "IO_OUT",
            VcpuExit::IoIn { .. } => "IO_IN",
            VcpuExit::MmioWrite { .. } => "MMIO_WRITE",
            VcpuExit::MmioRead { .. } => "MMIO_READ",
            VcpuExit::Shutdown => "SHUTDOWN",
            VcpuExit::SystemEvent { .. } => "SYSTEM_EVENT",
            VcpuExit::FailEntry { .. } => "FAIL_ENTRY",
            VcpuExit::InternalError { .. } => "INTERNAL_ERROR",
            VcpuExit::Interrupted => "INTR",
            VcpuExit::Other { .. } => "OTHER",
            VcpuExit::Counted(_) => "COUNTED",
        }
    }

    /// A CRC-32 of a stable encoding of the exit (its kind and fields, little-endian), for
    /// [`ExitSummary`]'s digests: the same exit always gives the same digest, on every host.
    pub fn digest(&self) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(self.kind().as_bytes());
        match self {
            VcpuExit::IoOut { port, data } => {
                hasher.update(&port.to_le_bytes());
                hasher.update(data);
            }
            VcpuExit::IoIn { port, size } => {
                hasher.update(&port.to_le_bytes());
                hasher.update(&[*size]);
            }
            VcpuExit::MmioWrite { addr, data } => {
                hasher.update(&addr.to_le_bytes());
                hasher.update(data);
            }
            VcpuExit::MmioRead { addr, len } => {
                hasher.update(&addr.to_le_bytes());
                hasher.update(&[*len]);
            }
            VcpuExit::SystemEvent { kind, data } => {
                hasher.update(&kind.to_le_bytes());
                for word in data {
                    hasher.update(&word.to_le_bytes());
                }
            }
            VcpuExit::FailEntry { reason } => hasher.update(&reason.to_le_bytes()),
            VcpuExit::InternalError { suberror } => hasher.update(&suberror.to_le_bytes()),
            VcpuExit::Other { reason } => hasher.update(&reason.to_le_bytes()),
            VcpuExit::Counted(summary) => {
                hasher.update(&summary.runs.to_le_bytes());
                for (name, kind) in &summary.kinds {
                    hasher.update(name.as_bytes());
                    hasher.update(&kind.count.to_le_bytes());
                    hasher.update(&kind.digest.to_le_bytes());
                }
            }
            VcpuExit::Hlt | VcpuExit::Shutdown | VcpuExit::Interrupted => {}
        }
        hasher.finalize()
    }
}

/// Who said no to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Origin {
    /// The kernel returned the errno.
    Kernel,
    /// vmfleet's pre-run lock refused the write before it reached the kernel.
    Lock,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Kernel => "kernel",
            Origin::Lock => "vmfleet lock",
        })
    }
}

/// A failed call as it is recorded: the errno and who produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The errno the call failed with (for a lock refusal, the one the kernel would have given).
    pub errno: Errno,
    /// Whether the kernel or vmfleet's lock said no.
    pub origin: Origin,
}

/// What a recorded call came to.
pub type Outcome = Result<Reply, Failure>;

impl fmt::Display for SystemCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SystemCall::GetApiVersion => f.write_str("GET_API_VERSION"),
            SystemCall::CheckExtension { cap } => write!(f, "CHECK_EXTENSION cap={cap}"),
            SystemCall::GetVcpuMmapSize => f.write_str("GET_VCPU_MMAP_SIZE"),
            SystemCall::GetSupportedCpuid => f.write_str("GET_SUPPORTED_CPUID"),
            SystemCall::GetEmulatedCpuid => f.write_str("GET_EMULATED_CPUID"),
            SystemCall::CreateVm { vm, name } => write!(f, "CREATE_VM {vm} name={name:?}"),
        }
    }
}

impl fmt::Display for VmCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmCall::AddMemory {
                slot,
                guest_phys_addr,
                size,
            } => write!(
                f,
                "SET_USER_MEMORY_REGION slot={slot} gpa={guest_phys_addr:#x} size={size:#x}"
            ),
            VmCall::CreateVcpu { vcpu } => write!(f, "CREATE_VCPU {vcpu}"),
            VmCall::EnableCap { cap, flags, args } => {
                write!(f, "ENABLE_CAP cap={cap} flags={flags:#x} args={args:x?}")
            }
            VmCall::ArmPreferredTarget => f.write_str("ARM_PREFERRED_TARGET"),
            VmCall::ArmGetRegWritableMasks => f.write_str("ARM_GET_REG_WRITABLE_MASKS"),
            VmCall::Destroy => f.write_str("DESTROY_VM"),
        }
    }
}

impl fmt::Display for VcpuCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VcpuCall::SetCpuid2 { table } => write!(
                f,
                "SET_CPUID2 entries={} digest={:08x}",
                table.len(),
                table.digest()
            ),
            VcpuCall::GetCpuid2 => f.write_str("GET_CPUID2"),
            VcpuCall::GetOneReg { id } => write!(f, "GET_ONE_REG {id:#018x}"),
            VcpuCall::SetOneReg { id, value } => {
                write!(f, "SET_ONE_REG {id:#018x} = {value:#018x}")
            }
            VcpuCall::GetRegList => f.write_str("GET_REG_LIST"),
            VcpuCall::ArmVcpuInit { target, features } => {
                write!(
                    f,
                    "ARM_VCPU_INIT target={target} features={:#x}",
                    features[0]
                )
            }
            VcpuCall::ArmVcpuFinalize { feature } => write!(f, "ARM_VCPU_FINALIZE {feature}"),
            VcpuCall::ArmPmuV3Init => f.write_str("ARM_PMU_V3_INIT"),
            VcpuCall::SetBootState { entry } => write!(f, "SET_BOOT_STATE entry={entry:#x}"),
            VcpuCall::Run => f.write_str("RUN"),
            VcpuCall::RunCounted => f.write_str("RUN_COUNTED"),
            VcpuCall::Destroy => f.write_str("DESTROY_VCPU"),
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::System(c) => c.fmt(f),
            Call::Vm(c) => c.fmt(f),
            Call::Vcpu(c) => c.fmt(f),
            Call::Decision => f.write_str("CONTROL_POINT"),
        }
    }
}

impl fmt::Display for VcpuExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VcpuExit::IoOut { port, data } => write!(f, "IO_OUT port={port:#x} data={data:02x?}"),
            VcpuExit::IoIn { port, size } => write!(f, "IO_IN port={port:#x} size={size}"),
            VcpuExit::MmioWrite { addr, data } => {
                write!(f, "MMIO_WRITE addr={addr:#x} data={data:02x?}")
            }
            VcpuExit::MmioRead { addr, len } => write!(f, "MMIO_READ addr={addr:#x} len={len}"),
            VcpuExit::SystemEvent { kind, data } => {
                write!(f, "SYSTEM_EVENT kind={kind} data={data:x?}")
            }
            VcpuExit::FailEntry { reason } => write!(f, "FAIL_ENTRY reason={reason:#x}"),
            VcpuExit::InternalError { suberror } => {
                write!(f, "INTERNAL_ERROR suberror={suberror}")
            }
            VcpuExit::Other { reason } => write!(f, "OTHER reason={reason}"),
            VcpuExit::Counted(summary) => summary.fmt(f),
            other => f.write_str(other.kind()),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Done => f.write_str("ok"),
            Reply::Value(v) => write!(f, "{v:#x}"),
            Reply::Cpuid(t) => write!(f, "cpuid entries={} digest={:08x}", t.len(), t.digest()),
            Reply::RegList(ids) => write!(f, "{} registers", ids.len()),
            Reply::Masks(m) => write!(f, "{} masks", m.len()),
            Reply::VcpuInit { target, features } => {
                write!(f, "target={target} features={:#x}", features[0])
            }
            Reply::Exit(exit) => exit.fmt(f),
            Reply::Decision(d) => d.fmt(f),
            Reply::Control(line) => f.write_str(line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(port: u16, byte: u8) -> VcpuExit {
        VcpuExit::IoOut {
            port,
            data: vec![byte].into(),
        }
    }

    #[test]
    fn summaries_merge_by_adding_whatever_the_order_or_split() {
        let exits = [io(1, 1), io(1, 2), VcpuExit::Interrupted, io(2, 3)];
        let mut whole = ExitSummary::default();
        exits.iter().for_each(|e| whole.add(e));
        let (mut first, mut second) = (ExitSummary::default(), ExitSummary::default());
        exits.iter().rev().take(1).for_each(|e| first.add(e));
        exits.iter().rev().skip(1).for_each(|e| second.add(e));
        first.add(&VcpuExit::Counted(second));
        assert_eq!(first, whole);
        assert_eq!(whole.runs, 4);
        assert_eq!(whole.kinds["IO_OUT"].count, 3);
        assert_ne!(io(1, 1).digest(), io(1, 2).digest());
        let text = whole.to_string();
        assert!(
            text.starts_with("COUNTED x4: INTR x1, IO_OUT x3 (digest "),
            "{text}"
        );
        assert!(text.contains(", IO_OUT x3 (digest "), "{text}");
    }
}
