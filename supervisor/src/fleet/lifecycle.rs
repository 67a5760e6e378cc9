//! A VM's life as the control plane sees it, and the views of a VM the control API hands out.

use crate::report::{Arm64Drift, DriftChange, ModelDrift};
use protocol::Op;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use vcpu::GuestArch;

/// Where a VM is in its life.
///
/// ```text
/// Creating → Created → Starting → Running ⇄ (Pausing → Paused → Resuming)
///                                    ↓ stop, or every guest halted, or a vCPU failed
///                                  Stopping → Exited(reason)
/// ```
/// `Created` can also go straight to `Exited(Stopped)`, or, removed, to
/// `Exited(RemovedBeforeStart)`; otherwise removal is not a state (the VM is gone; `list` says
/// `removed`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state", content = "reason")]
pub enum Lifecycle {
    /// Its loop is creating the VM and writing its CPU model.
    Creating,
    /// Configured; no vCPU has run. The CPU model can still change.
    Created,
    /// vCPU threads started; not every vCPU has left the guest once yet.
    Starting,
    /// Every vCPU has left the guest once; the guests run.
    Running,
    /// Asked to pause; not every vCPU has parked yet.
    Pausing,
    /// Every vCPU is parked until `resume`.
    Paused,
    /// Asked to resume; not every vCPU is running again yet.
    Resuming,
    /// Asked to stop; not every vCPU thread has ended yet.
    Stopping,
    /// The VM's run is over, for this reason; it stays listed until removed.
    Exited(ExitReason),
}

impl Lifecycle {
    /// Whether the VM has exited (nothing but `remove` applies any more).
    pub fn is_exited(&self) -> bool {
        matches!(self, Lifecycle::Exited(_))
    }

    /// The phase for machines (snake_case; JSON's `phase`): `creating`, `created`, `starting`,
    /// `running`, `pausing`, `paused`, `resuming`, `stopping` or `exited`.
    pub fn phase(&self) -> &'static str {
        match self {
            Lifecycle::Creating => "creating",
            Lifecycle::Created => "created",
            Lifecycle::Starting => "starting",
            Lifecycle::Running => "running",
            Lifecycle::Pausing => "pausing",
            Lifecycle::Paused => "paused",
            Lifecycle::Resuming => "resuming",
            Lifecycle::Stopping => "stopping",
            Lifecycle::Exited(_) => "exited",
        }
    }

    /// Why the VM exited, for machines (JSON's `exit_reason`), once it has.
    pub fn exit_reason(&self) -> Option<&'static str> {
        match self {
            Lifecycle::Exited(reason) => Some(reason.name()),
            _ => None,
        }
    }
}

impl ExitReason {
    /// The reason for machines (snake_case): `halted`, `stopped`, `failed` or
    /// `removed_before_start`.
    pub fn name(&self) -> &'static str {
        match self {
            ExitReason::Halted => "halted",
            ExitReason::Stopped => "stopped",
            ExitReason::Failed(_) => "failed",
            ExitReason::RemovedBeforeStart => "removed_before_start",
        }
    }
}

/// How a VM's run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitReason {
    /// Every guest finished its passes and halted.
    Halted,
    /// Stopped by request (the operator, a signal, or the daemon shutting down).
    Stopped,
    /// A guest faulted, a call failed or a vCPU thread panicked; the text says which and how.
    Failed(String),
    /// Removed while created: no vCPU ever ran.
    RemovedBeforeStart,
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lifecycle::Creating => f.write_str("creating"),
            Lifecycle::Created => f.write_str("created"),
            Lifecycle::Starting => f.write_str("starting"),
            Lifecycle::Running => f.write_str("running"),
            Lifecycle::Pausing => f.write_str("pausing"),
            Lifecycle::Paused => f.write_str("paused"),
            Lifecycle::Resuming => f.write_str("resuming"),
            Lifecycle::Stopping => f.write_str("stopping"),
            Lifecycle::Exited(reason) => write!(f, "exited ({reason})"),
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Halted => f.write_str("guest halted"),
            ExitReason::Stopped => f.write_str("stopped"),
            ExitReason::Failed(why) => write!(f, "failed: {why}"),
            ExitReason::RemovedBeforeStart => f.write_str("removed before start"),
        }
    }
}

/// What a VM's loop publishes whenever its life changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStatus {
    /// Where the VM is in its life.
    pub lifecycle: Lifecycle,
    /// Guest exits of the vCPUs that have ended (running vCPUs count theirs when they end).
    pub exits: u64,
}

impl VmStatus {
    /// A status in `lifecycle` with no exits counted yet.
    pub fn new(lifecycle: Lifecycle) -> Self {
        VmStatus {
            lifecycle,
            exits: 0,
        }
    }
}

/// One VM in `list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// The VM's id (`VmId`): numbered in creation order across the fleet, never reused.
    pub id: u32,
    /// The VM's name, unique among the fleet's VMs.
    pub name: String,
    /// How many vCPUs it has.
    pub vcpus: u32,
    /// The state for people (`running`, `exited (guest halted)`, `removed`...).
    pub state: String,
    /// The state for machines (snake_case): a [`Lifecycle::phase`], or `removed` for a VM that
    /// is gone.
    #[serde(default)]
    pub phase: String,
    /// Why it exited, once it has ([`ExitReason::name`]; also `failed_to_come_up`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<String>,
    /// Milliseconds since it started running (absent before it started).
    pub uptime_ms: Option<u64>,
}

/// A VM's CPU model as the kernel holds it, and how it differs from what was asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelView {
    /// The VM's name.
    pub vm: String,
    /// Its guests' architecture, `x86_64` or `aarch64`: what the model is made of (a CPUID
    /// table; ID and firmware registers).
    #[serde(default = "x86_64")]
    pub arch: String,
    /// The vCPU that ran first, once the model is locked.
    pub sealed: Option<u32>,
    /// The features the model hides.
    pub hide: Vec<String>,
    /// Each vCPU's model, by vCPU index.
    pub vcpus: Vec<VcpuModelView>,
}

/// One vCPU's CPU model as the kernel holds it, in a [`ModelView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuModelView {
    /// The vCPU's index in its VM (`VcpuId`).
    pub vcpu: u32,
    /// CPUID entries the kernel holds, and their digest.
    pub entries: usize,
    /// A digest of what the kernel holds (the CPUID table, or the ID registers), as 8 hex
    /// digits: models compared at a glance.
    pub digest: String,
    /// Bits the kernel changed from the request, by name (one line per register); x86: the
    /// report's own lines, shared.
    pub drift: Arc<[String]>,
    /// The same changes as data: x86 one per bit (as `run --json`'s `drift`), arm64 one per
    /// register. Only sent: `ctl` renders the lines.
    #[serde(default, skip_deserializing)]
    pub drift_changes: ModelDrifts,
    /// Hidden features the kernel still shows.
    pub not_honoured: Vec<String>,
    /// Hidden features the host never offered.
    pub already_absent: Vec<String>,
}

/// The drift of a [`VcpuModelView`] as data, shared with the report it comes from (x86) rather
/// than copied into every view: on the wire, a list of [`ModelDrift`]s (each change as its
/// architecture's object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelDrifts {
    /// x86: one change per CPUID bit (or value, or entry).
    X86(Arc<[DriftChange]>),
    /// arm64: one change per register.
    Arm64(Arc<[Arm64Drift]>),
}

impl ModelDrifts {
    /// How many changes.
    pub fn len(&self) -> usize {
        match self {
            ModelDrifts::X86(changes) => changes.len(),
            ModelDrifts::Arm64(changes) => changes.len(),
        }
    }

    /// No change at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The changes, each as a [`ModelDrift`].
    pub fn to_vec(&self) -> Vec<ModelDrift> {
        match self {
            ModelDrifts::X86(changes) => changes.iter().cloned().map(ModelDrift::X86).collect(),
            ModelDrifts::Arm64(changes) => changes.iter().cloned().map(ModelDrift::Arm64).collect(),
        }
    }
}

impl Default for ModelDrifts {
    fn default() -> Self {
        ModelDrifts::X86(Arc::new([]))
    }
}

impl Serialize for ModelDrifts {
    /// As the list of [`ModelDrift`]s it stands for (`ModelDrift` is untagged: each change as
    /// its own object).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ModelDrifts::X86(changes) => changes.serialize(serializer),
            ModelDrifts::Arm64(changes) => changes.serialize(serializer),
        }
    }
}

/// The architecture a [`ModelView`] from before the field existed describes.
fn x86_64() -> String {
    GuestArch::X86_64.to_string()
}

impl ModelView {
    /// Whether the model is an arm64 one (ID and firmware registers, no hide list).
    pub fn is_arm64(&self) -> bool {
        self.arch == GuestArch::Aarch64.to_string()
    }

    /// One deterministic line: what a trace records as the reply.
    pub fn summary(&self) -> String {
        let digests: Vec<&str> = self.vcpus.iter().map(|v| v.digest.as_str()).collect();
        let drift: usize = self.vcpus.iter().map(|v| v.drift.len()).sum();
        let not_honoured: Vec<&str> = self
            .vcpus
            .first()
            .map(|v| v.not_honoured.iter().map(String::as_str).collect())
            .unwrap_or_default();
        // Which vCPU ran first is timing: the line only says whether the model is locked.
        let lock = match self.sealed {
            Some(_) => "locked",
            None => "open",
        };
        if self.is_arm64() {
            return format!(
                "model of {}: {lock}; register digests [{}]; {drift} drift lines",
                self.vm,
                digests.join(",")
            );
        }
        format!(
            "model of {}: {lock}; hide [{}]; cpuid digests [{}]; {drift} drift lines; not honoured [{}]",
            self.vm,
            self.hide.join(","),
            digests.join(","),
            not_honoured.join(",")
        )
    }
}

/// How `start` leaves a VM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StartMode {
    /// Every vCPU enters its guest and runs on (`start` answers once each has left it once).
    #[default]
    Running,
    /// Every vCPU enters its guest once and parks at its first exit; the VM is `paused` until
    /// `resume`. Brings a large fleet up without the guests already started competing for the
    /// CPU with the starts still to come, and lets a fleet be released at one moment.
    Paused,
}

impl StartMode {
    /// The request's name in control replies and errors.
    pub fn request(self) -> &'static str {
        match self {
            StartMode::Running => Op::Start.name(),
            // As `Request`'s `Display` spells a paused start (`start --paused VM`), without the
            // VM: the op table has no name for the flag.
            StartMode::Paused => "start --paused",
        }
    }
}
