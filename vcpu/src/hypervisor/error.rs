//! Errors of the hypervisor boundary.

use crate::hypervisor::call::{Failure, Origin};
use crate::hypervisor::errno::Errno;
use crate::hypervisor::ids::Stream;
use crate::hypervisor::refusal::LockRefusal;
use thiserror::Error;

/// Why a backend call did not produce a [`crate::hypervisor::call::Reply`].
#[derive(Debug, Clone, Error)]
pub enum CallError {
    /// The kernel returned an errno.
    #[error("the kernel returned {0}")]
    Kernel(Errno),

    /// vmfleet's pre-run lock refused a CPU-model write; the kernel never saw it.
    #[error(transparent)]
    Refused(Box<LockRefusal>),

    /// The replay backend found that this run differs from the recorded one, or ran out of trace.
    #[error(transparent)]
    Replay(Box<ReplayFailure>),

    /// The backend failed outside of any ioctl (memory allocation, an unusable call for this
    /// layer or architecture, …).
    #[error("{0}")]
    Backend(String),
}

impl CallError {
    /// The errno, if the call failed with one (kernel or lock).
    pub fn errno(&self) -> Option<Errno> {
        match self {
            CallError::Kernel(errno) => Some(*errno),
            CallError::Refused(refusal) => Some(refusal.errno),
            _ => None,
        }
    }

    /// The failure as it is recorded in a trace, or `None` when the error is not an answer to the
    /// call (replay divergence, backend trouble).
    pub fn as_failure(&self) -> Option<Failure> {
        match self {
            CallError::Kernel(errno) => Some(Failure {
                errno: *errno,
                origin: Origin::Kernel,
            }),
            CallError::Refused(refusal) => Some(Failure {
                errno: refusal.errno,
                origin: Origin::Lock,
            }),
            _ => None,
        }
    }

    /// Rebuild the error a recorded failure stands for (used by the replay backend; lock refusals
    /// are never served from a trace, the lock re-decides them).
    pub fn from_kernel_failure(failure: &Failure) -> CallError {
        CallError::Kernel(failure.errno)
    }
}

/// A replayed run that does not match its trace.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("replay diverged{} on {stream}: expected {expected}, got {actual}{}",
    .seq.map(|s| format!(" at event #{s}")).unwrap_or_default(),
    if .detail.is_empty() { String::new() } else { format!(" ({})", .detail) })]
pub struct ReplayFailure {
    /// Sequence number of the recorded event that was expected, if there was one.
    pub seq: Option<u64>,
    /// The stream (system, VM or vCPU) on which the run and the trace parted.
    pub stream: Stream,
    /// The recorded call (or "end of stream").
    pub expected: String,
    /// The call this run issued (or "end of stream").
    pub actual: String,
    /// Where the two differ, when that is narrower than the whole call.
    pub detail: String,
}
