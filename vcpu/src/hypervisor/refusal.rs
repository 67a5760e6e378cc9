//! A CPU-model write vmfleet's pre-run lock refused: the data the runtime's lock produces and the
//! boundary carries ([`crate::hypervisor::error::CallError::Refused`], and
//! [`crate::hypervisor::backend::Vcpu::note_refused`], through which the recorder writes it down
//! and the replay backend checks it).
//!
//! It lives at the boundary, not beside the lock, because the boundary hands it on and must not
//! import the runtime; the runtime decides when a write is refused and fills it in. Its texts
//! ([`LockRefusal::headline`], [`LockRefusal::recorded`], its `Display`) go into transcripts and
//! traces and must not change.

use crate::hypervisor::errno::Errno;
use crate::hypervisor::headline::{LOCK_RULE, headline};
use crate::hypervisor::ids::{VcpuId, VmId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A CPU-model write refused by the lock.
///
/// It is shown to people as [`LockRefusal::headline`] (what changed, old → new, and the rule, in
/// one short line) followed by the details; [`LockRefusal::recorded`] is the one-line text that
/// traces keep and that control replies are compared by, unchanged since the first recordings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRefusal {
    /// The VM whose lock refused.
    pub vm: VmId,
    /// The vCPU the write was issued on.
    pub vcpu: VcpuId,
    /// The vCPU whose first `KVM_RUN` sealed the VM. Which vCPU wins that race differs from run
    /// to run, so it is kept for logs but never displayed: refusal texts go into transcripts, which
    /// must be identical between a live run and its replays.
    pub first_run: VcpuId,
    /// The errno class the kernel uses for the same refusal.
    pub errno: Errno,
    /// The call that was refused, as the transcript prints it.
    pub write: String,
    /// How the write differs from what the kernel holds, most relevant first.
    pub differences: Vec<String>,
    /// The same, as changes from what the kernel holds to what was asked, most relevant first:
    /// `CPUID 0x7.0.ebx avx2 1 → 0`, `ID_AA64PFR0_EL1.CSV3 1 → 0`.
    #[serde(default)]
    pub changes: Vec<String>,
    /// Whose rule it is, when not the kernel's (the lock refuses a change this kernel would
    /// accept): one more line of the details, not part of [`LockRefusal::recorded`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl LockRefusal {
    /// The first line: `vm0/vcpu1: CPUID 0x1.0.ecx sse4_2 1 → 0 (and 1 more) refused: the VM
    /// has run, its CPU model is locked (only an identical rewrite is allowed)`; at most
    /// [`HEADLINE_MAX`](crate::hypervisor::headline::HEADLINE_MAX) characters.
    pub fn headline(&self) -> String {
        headline(
            &format!("{}/{}", self.vm, self.vcpu),
            &self.changes,
            LOCK_RULE,
        )
    }

    /// The lines after the headline: the write, how it differs from what the kernel holds (every
    /// difference, one a line), whose rule it is when not the kernel's, the errno.
    pub fn details(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "refused write: {} (not sent to the kernel)",
            self.write
        )];
        for difference in &self.differences {
            lines.push(format!("difference: {difference}"));
        }
        if let Some(note) = &self.note {
            lines.push(format!("rule: {note}"));
        }
        lines.push(format!(
            "errno: {}, the kernel's own class for this write",
            self.errno
        ));
        lines
    }

    /// The one-line text traces record with the refused call (and control replies carry). It is
    /// what the first recordings said, so that replies compared on replay stay identical; people
    /// are shown [`LockRefusal::headline`] and the details instead.
    pub fn recorded(&self) -> String {
        use std::fmt::Write as _;
        let mut text = format!(
            "vmfleet refused {} on {}/{}: the VM has run, so its CPU model is locked and only an \
             identical rewrite is allowed ({})",
            self.write, self.vm, self.vcpu, self.errno
        );
        if !self.differences.is_empty() {
            const SHOWN: usize = 8;
            text += "; it differs from what the kernel holds: ";
            for (i, d) in self.differences.iter().take(SHOWN).enumerate() {
                if i > 0 {
                    text += ", ";
                }
                text += d;
            }
            if self.differences.len() > SHOWN {
                let _ = write!(text, ", and {} more", self.differences.len() - SHOWN);
            }
        }
        text
    }
}

impl fmt::Display for LockRefusal {
    /// The headline, then the details indented on the following lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.headline())?;
        for line in self.details() {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LockRefusal {}
