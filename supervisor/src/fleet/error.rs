//! The fleet's errors, from the host up to the control plane: why asking the host failed
//! ([`HostQueryError`]), why a VM's CPU model could not be configured ([`ConfigureError`], with
//! [`CrossCheckError`]), why its guest could not start ([`StartError`]), why an after-run write
//! could not be attempted ([`AfterRunError`]), why a VM failed or refused a request
//! ([`VmError`]), why a CPU-model change did not happen ([`ModelError`]), why the control plane
//! could not reach a VM's loop ([`LinkError`]), why a control request failed ([`ControlError`])
//! and why a fleet cannot run at all ([`FleetError`]).
//!
//! Why typed: callers tell the cases apart (a lock refusal keeps two texts, one for people and
//! one for the trace), and every text names the call and the object it is about. The texts are
//! what ctl replies, transcripts, reports and traces quote: each variant's text is the one the
//! fleet has always written, so none of them changes by accident. Errors are `Clone` because
//! one failure answers every request waiting on a VM; sources that are not `Clone` (I/O,
//! `event-manager`, guest loading) are shared behind an `Arc`.

use super::REQUEST_TIMEOUT;
use super::lifecycle::{ExitReason, Lifecycle};
use std::sync::Arc;
use vcpu::guests::GuestError;
use vcpu::{CallError, GuestArch, HandleError, VcpuId, VmId};

/// Why a fleet cannot run at all.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The spec's guests are for another architecture than the backend runs.
    #[error("the fleet spec is for {spec} guests, and this backend runs {backend} guests{hint}")]
    ArchMismatch {
        /// The architecture the spec's guests are for.
        spec: GuestArch,
        /// The architecture the backend runs.
        backend: GuestArch,
        /// What to do about it: empty, or text that starts with its own `; `.
        hint: &'static str,
    },
}

/// Why a control request failed. The text names the VM and what was wrong.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ControlError {
    /// The request names a VM the fleet does not have.
    #[error("no VM named {0:?}")]
    UnknownVm(String),
    /// `create` names a VM the fleet already has.
    #[error("a VM named {0:?} already exists")]
    NameTaken(String),
    /// The VM has been removed: still listed (as `removed`), but gone.
    #[error("{vm} has been removed")]
    Removed {
        /// The VM's name.
        vm: String,
    },
    /// The spec fragment of a `create` request is not a valid spec (the text says where).
    #[error("the fleet spec in the request: {0}")]
    Spec(String),
    /// `set-model` names a feature the catalog does not have (worded as a spec error, as it
    /// always was).
    #[error("the fleet spec in the request: {0}")]
    UnknownFeature(UnknownFeature),
    /// `set-model` asks for an arm64 write the model cannot read (a name it does not know, a
    /// value that does not fit, a register set twice).
    #[error("set-model: {0}")]
    BadWrite(vcpu::model::arm64::SpecError),
    /// The VM's loop did not answer within [`REQUEST_TIMEOUT`].
    #[error("{vm} did not carry out {request} within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout {
        /// The VM's name.
        vm: String,
        /// The request, by its name (`pause`, `start --paused`, …).
        request: String,
    },
    /// The VM's loop answered with a failure (it names the VM where the request needs it).
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A CPU-model change did not happen (not a lock refusal: that is [`ControlError::Refused`]).
    #[error(transparent)]
    Model(ModelError),
    /// The VM's loop could not be reached.
    #[error("{vm}: {source}")]
    Link {
        /// The VM's name.
        vm: String,
        /// Why its loop could not be reached.
        source: LinkError,
    },
    /// The VM's loop ended without answering.
    #[error("{vm}: its event loop ended")]
    LoopEnded {
        /// The VM's name.
        vm: String,
    },
    /// The VM did not come up.
    #[error("{vm}: {source}")]
    NotCreated {
        /// The VM's name.
        vm: String,
        /// Why it did not come up.
        source: VmError,
    },
    /// `create` reached `Fleet::carry_out`: only `Fleet::handle` carries it out (under its turns).
    #[error("create is carried out by Fleet::handle")]
    CreateOutsideHandle,
    /// The pre-run lock refused a CPU-model change: `shown` is for people (the refusal's short
    /// first line, then its details), `recorded` is the reply's text in the trace, the one-line
    /// words replays compare.
    #[error("{vm}: {shown}")]
    Refused {
        /// The VM's name.
        vm: String,
        /// The refusal for people: headline, then details.
        shown: String,
        /// The refusal as the trace records it: one line.
        recorded: String,
    },
    /// The daemon is shutting down and takes no new requests.
    #[error("the fleet is shutting down")]
    ShuttingDown,
    /// Creating the request's VMs would exceed a fleet-wide limit; nothing was created.
    #[error(
        "creating {vm} would bring the fleet to {total} {what} (it has {current}); at most \
         {limit} {what} in a fleet, so nothing of this request was created"
    )]
    Limit {
        /// The VM whose creation would cross the limit.
        vm: String,
        /// What is counted (`VMs`, `vCPUs`, …).
        what: &'static str,
        /// How many the fleet has now.
        current: u64,
        /// How many it would have with the request's VMs.
        total: u64,
        /// The most a fleet may have.
        limit: u64,
    },
    /// A VM of a `create` request failed to come up; the request's other VMs were torn down.
    #[error("{vm} failed to come up, so nothing of this request was kept: {why}")]
    CreateFailed {
        /// The VM that failed.
        vm: String,
        /// Why it failed.
        why: VmError,
    },
}

/// A CPU feature name that is not in the catalog, with the nearest one that is.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "unknown CPU feature `{name}`{}; `vmfleet host` lists them",
    suggestion.map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
)]
pub struct UnknownFeature {
    /// The name as given.
    pub name: String,
    /// The nearest catalog name, if one is near enough.
    pub suggestion: Option<&'static str>,
}

/// Why a control request could not reach a VM's loop.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LinkError {
    /// The loop has ended, so nothing reads the request.
    #[error("its event loop has ended")]
    LoopEnded,
    /// Writing the loop's wake-up eventfd failed.
    #[error("cannot wake its event loop: {0}")]
    Wake(Arc<std::io::Error>),
}

/// Why the host could not be asked what the fleet's CPU models need (asked once per fleet; the
/// same answer reaches every VM).
#[derive(Clone, Debug, thiserror::Error)]
pub enum HostQueryError {
    /// `KVM_GET_SUPPORTED_CPUID` failed.
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    SupportedCpuid(CallError),
    /// `KVM_CHECK_EXTENSION(KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES)` failed.
    #[error("{0}")]
    MaskRanges(CallError),
    /// `KVM_CHECK_EXTENSION(KVM_CAP_ARM_WRITABLE_IMP_ID_REGS)` failed.
    #[error("{0}")]
    WritableImpIdRegs(CallError),
    /// A kernel probe on a scratch VM failed (it names the probe and the call).
    #[error(transparent)]
    KernelProbe(#[from] super::probe::ProbeError),
    /// The call answered with a reply of the wrong kind.
    #[error("{call}: unexpected reply {reply}")]
    UnexpectedReply {
        /// The call.
        call: &'static str,
        /// The reply it got, as text.
        reply: String,
    },
}

/// Why a VM's CPU model could not be configured or written.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ConfigureError {
    /// The host could not be asked what the model needs.
    #[error(transparent)]
    Host(#[from] HostQueryError),
    /// A call failed; it names the call and the VM or vCPU.
    #[error(transparent)]
    Call(#[from] HandleError),
    /// The call answered with a reply of the wrong kind.
    #[error("{call}: unexpected reply {reply}")]
    UnexpectedReply {
        /// The call.
        call: &'static str,
        /// The reply it got, as text.
        reply: String,
    },
    /// The x86 model could not be built for one vCPU.
    #[error("{vm}/{vcpu}: CPU model: {source}")]
    CpuModel {
        /// The VM.
        vm: VmId,
        /// The vCPU.
        vcpu: VcpuId,
        /// Why the model could not be built.
        source: vcpu::model::x86::model::ModelError,
    },
    /// The pre-run lock refused the write, in both of its words (see
    /// [`ModelError::Refused`]); configuring a VM fails with the one-line `recorded` one.
    #[error("{recorded}")]
    Refused {
        /// The VM's name.
        vm: String,
        /// The refusal for people: headline, then details.
        shown: String,
        /// The refusal as the trace records it: one line.
        recorded: String,
    },
    /// An arm64 VM is configured per vCPU, and this one has none.
    #[error("an arm64 VM needs at least one vCPU")]
    NoVcpu,
    /// No plan could be made for the arm64 model (the spec contradicts itself, the host view
    /// lacks a value, or the unknown-register policy refuses this kernel).
    #[error("arm64 model: {0}")]
    Plan(vcpu::model::arm64::PlanError),
    /// The writable masks the kernel reported cannot be used.
    #[error("the writable masks: {0}")]
    Masks(vcpu::model::arm64::validate::masks::MaskError),
    /// Writing zero to a register the model does not know (the `unknown_registers` policy)
    /// failed.
    #[error("clearing unknown register {register}: {source}")]
    ClearUnknown {
        /// The register, by name.
        register: String,
        /// Why the write failed.
        source: HandleError,
    },
    /// The cross-check could not be made.
    #[error("cross-check: {0}")]
    CrossCheck(CrossCheckError),
}

/// Why an arm64 cross-check (the refused writes sent to a scratch VM) could not be made.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CrossCheckError {
    /// The scratch VM could not be created.
    #[error("creating the scratch VM: {0}")]
    CreateVm(CallError),
    /// A call on the scratch VM failed (it names the call).
    #[error(transparent)]
    Call(HandleError),
    /// Putting back the value a write the scratch VM accepted replaced failed.
    #[error("undoing: {0}")]
    Undo(HandleError),
    /// Closing the scratch VM failed.
    #[error("closing the scratch VM: {0}")]
    Close(HandleError),
}

impl From<CrossCheckError> for ConfigureError {
    fn from(e: CrossCheckError) -> ConfigureError {
        ConfigureError::CrossCheck(e)
    }
}

/// Why a VM's guest could not start (the VM fails).
#[derive(Clone, Debug, thiserror::Error)]
pub enum StartError {
    /// The guest program could not be loaded into the VM's memory.
    #[error("loading the guest: {0}")]
    Load(Arc<GuestError>),
    /// A call failed (placing a vCPU at the guest's entry); it names the call and the vCPU.
    #[error(transparent)]
    Call(#[from] HandleError),
    /// An arm64 guest starts only on a configured model, and this VM's was not.
    #[error("the arm64 model was not configured")]
    NotConfigured,
    /// A vCPU thread could not be spawned.
    #[error("starting the thread of {vcpu}: {source}")]
    Thread {
        /// The vCPU.
        vcpu: VcpuId,
        /// Why spawning failed.
        source: Arc<std::io::Error>,
    },
}

/// Why an after-run write could not be attempted (the VM fails; a write the lock or the kernel
/// refused is no error, it is what the report judges).
#[derive(Clone, Debug, thiserror::Error)]
pub enum AfterRunError {
    /// A call failed; it names the call and the VM or vCPU.
    #[error(transparent)]
    Call(#[from] HandleError),
    /// The call answered with a reply of the wrong kind.
    #[error("{call}: unexpected reply {reply}")]
    UnexpectedReply {
        /// The call.
        call: &'static str,
        /// The reply it got, as text.
        reply: String,
    },
    /// The action names a vCPU the VM does not have.
    #[error("the VM has no vcpu{vcpu}")]
    NoVcpu {
        /// The vCPU's index.
        vcpu: usize,
    },
    /// The action is for the other architecture's VMs.
    #[error("action \"{action}\" is for {arch} VMs")]
    OtherArch {
        /// The action's name in the spec.
        action: &'static str,
        /// The architecture it is for.
        arch: &'static str,
    },
    /// The after-run cross-check on a scratch VM failed.
    #[error("the after-run cross-check: {0}")]
    CrossCheck(#[from] CrossCheckError),
    /// A kernel probe the lock's verdict waited for could not be made.
    #[error(transparent)]
    Probe(#[from] HostQueryError),
}

/// Why a VM failed, or refused a request in the state it is in. Texts that are about the VM's
/// own setup do not name it (the caller does); the others do.
#[derive(Clone, Debug, thiserror::Error)]
pub enum VmError {
    /// The eventfd the control plane and the vCPU threads wake the loop with could not be created.
    #[error("cannot create its wake-up eventfd: {0}")]
    WakeEventfd(Arc<std::io::Error>),
    /// The VM's event loop could not be given a thread (its own, or a loop host's).
    #[error("cannot start its event loop thread: {0}")]
    LoopThread(Arc<std::io::Error>),
    /// The backend could not create the VM.
    #[error("CREATE_VM: {0}")]
    CreateVm(CallError),
    /// The VM's CPU model could not be configured.
    #[error(transparent)]
    Configure(Box<ConfigureError>),
    /// The loop's event manager could not be created.
    #[error("cannot create its event manager: {0}")]
    EventManager(Arc<event_manager::Error>),
    /// An eventfd could not be added to the event manager.
    #[error("cannot watch its {what} eventfd: {source}")]
    Watch {
        /// Which eventfd (`wake-up`).
        what: &'static str,
        /// Why adding it failed.
        source: Arc<event_manager::Error>,
    },
    /// Waiting for events failed.
    #[error("its event loop failed: {0}")]
    EventLoop(Arc<event_manager::Error>),
    /// The loop ended before it answered.
    #[error("its event loop ended")]
    LoopEnded,
    /// The request does not apply to a VM in this state.
    #[error("cannot {what} {vm}: it is {state}")]
    Cannot {
        /// What was asked, as a verb (`pause`, `start`, …).
        what: &'static str,
        /// The VM's name.
        vm: String,
        /// The state it is in.
        state: Lifecycle,
    },
    /// The VM has exited, whether before the request came or while carrying it out.
    #[error("cannot {what} {vm}: it has ended ({reason})")]
    Ended {
        /// What was asked, as a verb.
        what: &'static str,
        /// The VM's name.
        vm: String,
        /// Why it ended.
        reason: ExitReason,
    },
    /// The VM's guest could not start.
    #[error("{vm}: {source}")]
    Start {
        /// The VM's name.
        vm: String,
        /// Why the guest could not start.
        source: Box<StartError>,
    },
}

/// Why a CPU-model change (`set-model`) did not happen: the lock refused it, or something else
/// failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ModelError {
    /// The pre-run lock refused the change, in both of its words: `shown` to people (the
    /// refusal's headline and details), `recorded` in the trace's reply (the one-line text replays
    /// compare).
    #[error("{vm}: {shown}")]
    Refused {
        /// The VM's name.
        vm: String,
        /// The refusal for people: headline, then details.
        shown: String,
        /// The refusal as the trace records it: one line.
        recorded: String,
    },
    /// The write failed otherwise.
    #[error("{vm}: {source}")]
    Write {
        /// The VM's name.
        vm: String,
        /// Why the write failed.
        source: Box<ConfigureError>,
    },
    /// This VM's model is fixed at create.
    #[error("{vm}: {why}")]
    Fixed {
        /// The VM's name.
        vm: String,
        /// Why its model cannot change.
        why: &'static str,
    },
    /// The VM cannot take the change in its state, or failed.
    #[error(transparent)]
    Vm(#[from] VmError),
}

impl From<ConfigureError> for VmError {
    fn from(e: ConfigureError) -> VmError {
        VmError::Configure(Box::new(e))
    }
}

impl From<ModelError> for ControlError {
    fn from(e: ModelError) -> ControlError {
        match e {
            ModelError::Refused {
                vm,
                shown,
                recorded,
            } => ControlError::Refused {
                vm,
                shown,
                recorded,
            },
            other => ControlError::Model(other),
        }
    }
}
