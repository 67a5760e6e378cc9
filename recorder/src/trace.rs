//! The trace data model: what a trace says about where and why it was recorded (the header), the
//! calls it recorded (the events) and what each frame after the header holds (`Record`). Plain
//! serde data; the file layout, which knows only bytes, is in [`crate::format`].

use crate::call::TraceCall;
use serde::{Deserialize, Serialize};
use std::fmt;
use vcpu::hypervisor::cpuid::CpuidTable;
use vcpu::{GuestArch, Outcome, Stream};

/// What a trace file starts with: everything needed to judge whether and how to replay it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHeader {
    /// The layout of the file ([`crate::format::FORMAT_VERSION`] when written by this crate).
    pub format_version: u32,
    /// The vmfleet that recorded the trace (e.g. `env!("CARGO_PKG_VERSION")` of the supervisor).
    pub vmfleet_version: String,
    /// The architecture of the recorded guests; the replay backend reports it as its own.
    pub guest_arch: GuestArch,
    /// The machine the trace was recorded on.
    pub host: HostFingerprint,
    /// What vmfleet was asked to do.
    pub job: JobInputs,
    /// Whether the recording applied the spec's `record_exits` budgets (every trace vmfleet
    /// records since format 4). A trace without them recorded every exit one by one, and replays
    /// with every VM's `record_exits` set to `"all"`. `trace convert` keeps it as it was.
    pub exit_budgets: bool,
}

impl TraceHeader {
    /// A header for the current [`crate::format::FORMAT_VERSION`].
    pub fn new(
        vmfleet_version: impl Into<String>,
        guest_arch: GuestArch,
        host: HostFingerprint,
        job: JobInputs,
    ) -> Self {
        TraceHeader {
            format_version: crate::format::FORMAT_VERSION,
            vmfleet_version: vmfleet_version.into(),
            guest_arch,
            host,
            job,
            exit_budgets: true,
        }
    }
}

impl fmt::Display for TraceHeader {
    /// Multi-line, for `trace show`: format, vmfleet version, guest arch, job, then the host.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "trace format: {}", self.format_version)?;
        writeln!(f, "vmfleet:      {}", self.vmfleet_version)?;
        writeln!(f, "guest arch:   {}", self.guest_arch)?;
        writeln!(f, "command:      {}", self.job.command)?;
        writeln!(
            f,
            "spec:         {} ({} bytes)",
            self.job.spec_source,
            self.job.spec_text.len()
        )?;
        writeln!(f, "host:")?;
        for line in self.host.to_string().lines() {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// A format-2 or format-3 header: [`TraceHeader`] without `exit_budgets` (those formats came
/// before `record_exits`, so it becomes `false`).
#[derive(Deserialize)]
pub(crate) struct TraceHeaderV2 {
    format_version: u32,
    vmfleet_version: String,
    guest_arch: GuestArch,
    host: HostFingerprint,
    job: JobInputs,
}

impl From<TraceHeaderV2> for TraceHeader {
    fn from(v2: TraceHeaderV2) -> TraceHeader {
        TraceHeader {
            format_version: v2.format_version,
            vmfleet_version: v2.vmfleet_version,
            guest_arch: v2.guest_arch,
            host: v2.host,
            job: v2.job,
            exit_budgets: false,
        }
    }
}

/// A format-1 header: the same fields in the same order, with the host facts of format 1
/// ([`HostFingerprintV1`]). bincode writes fields by position, so a format-1 header is read with
/// this shape and then becomes a [`TraceHeader`] whose newer facts are `None`.
#[derive(Deserialize)]
pub(crate) struct TraceHeaderV1 {
    format_version: u32,
    vmfleet_version: String,
    guest_arch: GuestArch,
    host: HostFingerprintV1,
    job: JobInputs,
}

/// The host facts of format 1: [`HostFingerprint`] without `emulated_cpuid`.
#[derive(Deserialize)]
struct HostFingerprintV1 {
    kernel_release: String,
    kvm_module: Option<String>,
    cpu_vendor: String,
    cpu_family: u32,
    cpu_model: u32,
    cpu_stepping: u32,
    cpu_model_name: String,
    microcode: Option<String>,
    kvm_api_version: Option<u32>,
    capabilities: Vec<Capability>,
}

impl From<TraceHeaderV1> for TraceHeader {
    fn from(v1: TraceHeaderV1) -> TraceHeader {
        let h = v1.host;
        TraceHeader {
            format_version: v1.format_version,
            vmfleet_version: v1.vmfleet_version,
            guest_arch: v1.guest_arch,
            host: HostFingerprint {
                kernel_release: h.kernel_release,
                kvm_module: h.kvm_module,
                cpu_vendor: h.cpu_vendor,
                cpu_family: h.cpu_family,
                cpu_model: h.cpu_model,
                cpu_stepping: h.cpu_stepping,
                cpu_model_name: h.cpu_model_name,
                microcode: h.microcode,
                kvm_api_version: h.kvm_api_version,
                capabilities: h.capabilities,
                emulated_cpuid: None,
            },
            job: v1.job,
            exit_budgets: false,
        }
    }
}

/// The machine a trace was recorded on. Just data: the supervisor fills it in. (Format 1 had
/// every field but the last, [`HostFingerprint::emulated_cpuid`]: see [`crate::format`].)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFingerprint {
    /// `uname -r`.
    pub kernel_release: String,
    /// The KVM vendor module in use (`kvm_intel`, `kvm_amd`, `kvm_pvm`, …), if any.
    pub kvm_module: Option<String>,
    /// `/proc/cpuinfo`'s `vendor_id` (`GenuineIntel`, `AuthenticAMD`), or on arm64
    /// `arm-implementer-` and its `CPU implementer`.
    pub cpu_vendor: String,
    /// `cpu family` (arm64: `CPU architecture`).
    pub cpu_family: u32,
    /// `model` (arm64: `CPU part`).
    pub cpu_model: u32,
    /// `stepping` (arm64: `CPU revision`).
    pub cpu_stepping: u32,
    /// `model name`, for people; empty where the kernel gives none (arm64).
    pub cpu_model_name: String,
    /// The microcode revision, if `/proc/cpuinfo` says (x86 only).
    pub microcode: Option<String>,
    /// `KVM_GET_API_VERSION`, if `/dev/kvm` was usable.
    pub kvm_api_version: Option<u32>,
    /// `KVM_CHECK_EXTENSION` answers the supervisor thought worth keeping.
    pub capabilities: Vec<Capability>,
    /// x86: `KVM_GET_EMULATED_CPUID`, the CPUID bits KVM can emulate beyond what it supports.
    /// `None` on arm64, where the host refused it, and in traces of format 1 (before it was
    /// asked). A host fact the job never uses, so it is asked with the others, not recorded as an
    /// event.
    pub emulated_cpuid: Option<CpuidTable>,
}

/// One `KVM_CHECK_EXTENSION` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// The `KVM_CAP_*` number asked about.
    pub number: u32,
    /// The uapi name, e.g. `KVM_CAP_ONE_REG`.
    pub name: String,
    /// The kernel's answer: 0 for unsupported, else 1 or a capability-specific value.
    pub value: u64,
}

impl fmt::Display for HostFingerprint {
    /// Multi-line: one `key: value` line per fact, then one line per capability.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_string());
        writeln!(f, "kernel:       {}", self.kernel_release)?;
        writeln!(f, "kvm module:   {}", or_none(&self.kvm_module))?;
        writeln!(
            f,
            "cpu:          {} family {} model {} stepping {}",
            self.cpu_vendor, self.cpu_family, self.cpu_model, self.cpu_stepping
        )?;
        writeln!(f, "cpu name:     {}", self.cpu_model_name)?;
        writeln!(f, "microcode:    {}", or_none(&self.microcode))?;
        match self.kvm_api_version {
            Some(v) => writeln!(f, "kvm api:      {v}")?,
            None => writeln!(f, "kvm api:      unavailable")?,
        }
        if self.capabilities.is_empty() {
            writeln!(f, "capabilities: none recorded")?;
        } else {
            writeln!(f, "capabilities:")?;
            for cap in &self.capabilities {
                writeln!(f, "  {} ({}) = {}", cap.name, cap.number, cap.value)?;
            }
        }
        // Absent from format-1 traces and on arm64: nothing is said then, as before.
        if let Some(table) = &self.emulated_cpuid {
            writeln!(
                f,
                "emulated CPUID: {} entries (digest {:08x})",
                table.len(),
                table.digest()
            )?;
        }
        Ok(())
    }
}

/// What vmfleet was asked to do when it recorded the trace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInputs {
    /// The subcommand, e.g. `run`.
    pub command: String,
    /// Where the fleet spec came from: a file path, or `<built-in demo>`.
    pub spec_source: String,
    /// The fleet spec exactly as given.
    pub spec_text: String,
}

/// One recorded backend call and what it came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Global position in the trace (0-based, no gaps: the file order).
    pub seq: u64,
    /// The object the call was issued on.
    pub stream: Stream,
    /// The call as it was issued (replay compares it with the call it is asked to serve).
    pub call: TraceCall,
    /// What the call came to: its reply, or the errno and who said no (the kernel or the lock).
    pub outcome: Outcome,
    /// Extra text, e.g. the lock's explanation of a refusal.
    pub detail: Option<String>,
    /// Nanoseconds since the recorder started (when the outcome was known).
    pub at_ns: u64,
}

/// What an event says, apart from where it stands: the call, what it came to, and the detail.
/// Decoded trace blocks hold each distinct one once and share it between the events that say it
/// (every VM's exits alike), so readers that keep events ([`SharedEvent`]) pay for it once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventBody {
    /// See [`Event::call`].
    pub call: TraceCall,
    /// See [`Event::outcome`].
    pub outcome: Outcome,
    /// See [`Event::detail`].
    pub detail: Option<String>,
}

/// Events of one stream that follow one another in a trace (consecutive `seq`s), their bodies
/// shared with the rest of the block they were decoded from: what the streaming reader hands a
/// replay, which queues events by the thousand and must neither copy each one's payload nor
/// count references to it one by one.
#[derive(Clone, Debug)]
pub struct EventRun {
    /// The stream of every event of the run.
    pub stream: Stream,
    /// The `seq` of the run's first event; the others follow on.
    pub first_seq: u64,
    /// The bodies the run's events refer to (a decoded block's, each once).
    pub bodies: std::sync::Arc<[EventBody]>,
    /// The run's events in order.
    pub events: Vec<RunEvent>,
    /// About what holding the run costs, in bytes: 4 per event (its body's number) plus its
    /// share of the block's bodies. What a streamed replay's window counts, so that a trace
    /// whose events share few bodies (a fleet of like VMs) streams far ahead in little memory,
    /// and one whose every event is distinct is held a little at a time.
    pub weight: usize,
}

/// One event of an [`EventRun`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunEvent {
    /// Its body: an index into [`EventRun::bodies`].
    pub body: u32,
    /// See [`Event::at_ns`].
    pub at_ns: u64,
}

impl EventRun {
    /// The body of the run's `k`-th event.
    pub fn body(&self, k: usize) -> Option<&EventBody> {
        let event = self.events.get(k)?;
        self.bodies.get(event.body as usize)
    }

    /// The run's `k`-th event on its own (its body copied).
    pub fn event(&self, k: usize) -> Option<Event> {
        let at_ns = self.events.get(k)?.at_ns;
        let body = self.body(k)?.clone();
        Some(Event {
            seq: self.first_seq + k as u64,
            stream: self.stream,
            call: body.call,
            outcome: body.outcome,
            detail: body.detail,
            at_ns,
        })
    }
}

/// What every frame after the header holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Record {
    Event(Event),
    /// Written by a clean close: how many events precede it.
    End {
        events: u64,
    },
}
