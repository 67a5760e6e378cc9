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
    #[error("the fleet spec is for {spec} guests, and this backend runs {backend} guests{hint}")]
    ArchMismatch {
        spec: GuestArch,
        backend: GuestArch,
        hint: &'static str,
    },
}

/// Why a control request failed. The text names the VM and what was wrong.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no VM named {0:?}")]
    UnknownVm(String),
    #[error("a VM named {0:?} already exists")]
    NameTaken(String),
    #[error("{vm} has been removed")]
    Removed { vm: String },
    #[error("the fleet spec in the request: {0}")]
    Spec(String),
    /// `set-model` names a feature the catalog does not have (worded as a spec error, as it
    /// always was).
    #[error("the fleet spec in the request: {0}")]
    UnknownFeature(UnknownFeature),
    #[error("{vm} did not carry out {request} within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout { vm: String, request: String },
    /// The VM's loop answered with a failure (it names the VM where the request needs it).
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A CPU-model change did not happen (not a lock refusal: that is [`ControlError::Refused`]).
    #[error(transparent)]
    Model(ModelError),
    /// The VM's loop could not be reached.
    #[error("{vm}: {source}")]
    Link { vm: String, source: LinkError },
    /// The VM's loop ended without answering.
    #[error("{vm}: its event loop ended")]
    LoopEnded { vm: String },
    /// The VM did not come up.
    #[error("{vm}: {source}")]
    NotCreated { vm: String, source: VmError },
    /// `create` reached `Fleet::carry_out`: only `Fleet::handle` carries it out (under its turns).
    #[error("create is carried out by Fleet::handle")]
    CreateOutsideHandle,
    /// The pre-run lock refused a CPU-model change: `shown` is for people (the refusal's short
    /// first line, then its details), `recorded` is the reply's text in the trace, the one-line
    /// words replays compare.
    #[error("{vm}: {shown}")]
    Refused {
        vm: String,
        shown: String,
        recorded: String,
    },
    #[error("the fleet is shutting down")]
    ShuttingDown,
    /// Creating the request's VMs would exceed a fleet-wide limit; nothing was created.
    #[error(
        "creating {vm} would bring the fleet to {total} {what} (it has {current}); at most \
         {limit} {what} in a fleet, so nothing of this request was created"
    )]
    Limit {
        vm: String,
        what: &'static str,
        current: u64,
        total: u64,
        limit: u64,
    },
    /// A VM of a `create` request failed to come up; the request's other VMs were torn down.
    #[error("{vm} failed to come up, so nothing of this request was kept: {why}")]
    CreateFailed { vm: String, why: VmError },
}

/// A CPU feature name that is not in the catalog, with the nearest one that is.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "unknown CPU feature `{name}`{}; `vmfleet host` lists them",
    suggestion.map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
)]
pub struct UnknownFeature {
    pub name: String,
    pub suggestion: Option<&'static str>,
}

/// Why a control request could not reach a VM's loop.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LinkError {
    #[error("its event loop has ended")]
    LoopEnded,
    #[error("cannot wake its event loop: {0}")]
    Wake(Arc<std::io::Error>),
}

/// Why the host could not be asked what the fleet's CPU models need (asked once per fleet; the
/// same answer reaches every VM).
#[derive(Clone, Debug, thiserror::Error)]
pub enum HostQueryError {
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    SupportedCpuid(CallError),
    /// `KVM_CHECK_EXTENSION(KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES)` failed.
    #[error("{0}")]
    MaskRanges(CallError),
    #[error("{call}: unexpected reply {reply}")]
    UnexpectedReply { call: &'static str, reply: String },
}

/// Why a VM's CPU model could not be configured or written.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error(transparent)]
    Host(#[from] HostQueryError),
    /// A call failed; it names the call and the VM or vCPU.
    #[error(transparent)]
    Call(#[from] HandleError),
    #[error("{call}: unexpected reply {reply}")]
    UnexpectedReply { call: &'static str, reply: String },
    /// The x86 model could not be built for one vCPU.
    #[error("{vm}/{vcpu}: CPU model: {source}")]
    CpuModel {
        vm: VmId,
        vcpu: VcpuId,
        source: vcpu::model::x86::model::ModelError,
    },
    /// The pre-run lock refused the write, in both of its words (see
    /// [`ModelError::Refused`]); configuring a VM fails with the one-line `recorded` one.
    #[error("{recorded}")]
    Refused {
        vm: String,
        shown: String,
        recorded: String,
    },
    #[error("an arm64 VM needs at least one vCPU")]
    NoVcpu,
    #[error("arm64 model: {0}")]
    Plan(vcpu::model::arm64::PlanError),
    #[error("the writable masks: {0}")]
    Masks(vcpu::model::arm64::validate::masks::MaskError),
    #[error("clearing unknown register {register}: {source}")]
    ClearUnknown {
        register: String,
        source: HandleError,
    },
    #[error("cross-check: {0}")]
    CrossCheck(CrossCheckError),
}

/// Why an arm64 cross-check (the refused writes sent to a scratch VM) could not be made.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CrossCheckError {
    #[error("creating the scratch VM: {0}")]
    CreateVm(CallError),
    #[error(transparent)]
    Call(HandleError),
    #[error("undoing: {0}")]
    Undo(HandleError),
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
    #[error("loading the guest: {0}")]
    Load(Arc<GuestError>),
    /// A call failed (placing a vCPU at the guest's entry); it names the call and the vCPU.
    #[error(transparent)]
    Call(#[from] HandleError),
    #[error("the arm64 model was not configured")]
    NotConfigured,
    #[error("starting the thread of {vcpu}: {source}")]
    Thread {
        vcpu: VcpuId,
        source: Arc<std::io::Error>,
    },
}

/// Why an after-run write could not be attempted (the VM fails; a write the lock or the kernel
/// refused is no error, it is what the report judges).
#[derive(Clone, Debug, thiserror::Error)]
pub enum AfterRunError {
    #[error(transparent)]
    Call(#[from] HandleError),
    #[error("{call}: unexpected reply {reply}")]
    UnexpectedReply { call: &'static str, reply: String },
    /// The action is for the other architecture's VMs.
    #[error("action \"{action}\" is for {arch} VMs")]
    OtherArch {
        action: &'static str,
        arch: &'static str,
    },
}

/// Why a VM failed, or refused a request in the state it is in. Texts that are about the VM's
/// own setup do not name it (the caller does); the others do.
#[derive(Clone, Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot create its command eventfd: {0}")]
    CommandEventfd(Arc<std::io::Error>),
    #[error("cannot start its event loop thread: {0}")]
    LoopThread(Arc<std::io::Error>),
    #[error("cannot create its notice eventfd: {0}")]
    NoticeEventfd(Arc<std::io::Error>),
    #[error("CREATE_VM: {0}")]
    CreateVm(CallError),
    #[error(transparent)]
    Configure(Box<ConfigureError>),
    #[error("cannot create its event manager: {0}")]
    EventManager(Arc<event_manager::Error>),
    #[error("cannot watch its {what} eventfd: {source}")]
    Watch {
        what: &'static str,
        source: Arc<event_manager::Error>,
    },
    #[error("its event loop failed: {0}")]
    EventLoop(Arc<event_manager::Error>),
    #[error("its event loop ended")]
    LoopEnded,
    /// The request does not apply to a VM in this state.
    #[error("cannot {what} {vm}: it is {state}")]
    Cannot {
        what: &'static str,
        vm: String,
        state: Lifecycle,
    },
    /// The VM has exited, whether before the request came or while carrying it out.
    #[error("cannot {what} {vm}: it has ended ({reason})")]
    Ended {
        what: &'static str,
        vm: String,
        reason: ExitReason,
    },
    #[error("{vm}: {source}")]
    Start { vm: String, source: Box<StartError> },
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
        vm: String,
        shown: String,
        recorded: String,
    },
    /// The write failed otherwise.
    #[error("{vm}: {source}")]
    Write {
        vm: String,
        source: Box<ConfigureError>,
    },
    /// This VM's model is fixed at create.
    #[error("{vm}: {why}")]
    Fixed { vm: String, why: &'static str },
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
