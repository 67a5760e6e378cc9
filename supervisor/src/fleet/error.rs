//! The fleet's errors: why a fleet cannot run ([`FleetError`]), why a control request failed
//! ([`ControlError`]), why a CPU-model write did not happen ([`ModelError`]).
//!
//! Why typed: callers tell the cases apart (a lock refusal keeps two texts, one for people and
//! one for the trace), and every text names the call and the object it is about. The texts are
//! what ctl replies, transcripts and traces quote, so they never change by accident.

use super::REQUEST_TIMEOUT;
use vcpu::GuestArch;

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
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no VM named {0:?}")]
    UnknownVm(String),
    #[error("a VM named {0:?} already exists")]
    NameTaken(String),
    #[error("{vm} has been removed")]
    Removed { vm: String },
    #[error("the fleet spec in the request: {0}")]
    Spec(String),
    #[error("{vm} did not carry out {request} within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout { vm: String, request: String },
    #[error("{0}")]
    Vm(String),
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
    CreateFailed { vm: String, why: String },
}

/// A fleet spec for `spec` guests can run on a backend for `backend` guests only if they agree.
pub fn check_arch(spec: GuestArch, backend: GuestArch) -> Result<(), FleetError> {
    if spec == backend {
        return Ok(());
    }
    Err(FleetError::ArchMismatch {
        spec,
        backend,
        hint: super::guest::mismatch_hint(spec),
    })
}

/// Why a CPU-model write did not happen: the lock refused it, or something else failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelError {
    /// The pre-run lock refused the change, in both of its words: `shown` to people (the
    /// refusal's headline and details), `recorded` in the trace's reply (the one-line text replays
    /// compare).
    Refused {
        vm: String,
        shown: String,
        recorded: String,
    },
    /// Anything else, naming the VM.
    Other(String),
}

impl From<String> for ModelError {
    fn from(message: String) -> ModelError {
        ModelError::Other(message)
    }
}

impl From<String> for ControlError {
    fn from(why: String) -> ControlError {
        ControlError::Vm(why)
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
            ModelError::Other(why) => ControlError::Vm(why),
        }
    }
}
