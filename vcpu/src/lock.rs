//! The pre-run lock: once any vCPU of a VM has entered `KVM_RUN`, the VM's CPU model may only be
//! rewritten with what the kernel already holds.
//!
//! Kernels disagree on this rule (x86 before 5.16 warned and accepted changes, arm64 6.1 still
//! accepts a changed `ID_AA64PFR0_EL1.CSV3`), so vmfleet decides it itself, the same way on every
//! kernel, before the write reaches the kernel. The errno of a refusal is the class the newest
//! kernels use for the same write (x86 CPUID: `EINVAL`; arm64 ID registers and bitmaps: `EBUSY`).
//!
//! Race freedom: the lock has one mutex per VM. A CPU-model write holds it from the check to the
//! end of the ioctl; a vCPU takes it to *seal* the VM before its first `KVM_RUN`. So every write
//! either completes entirely before the VM is sealed or is judged as a write to a sealed VM. The
//! seal is taken before the run thread locks its vCPU, so the two locks are never held in opposite
//! orders. After the first seal, runs only read an atomic flag.
//!
//! The types carry the rule: [`Seal`] is the state, and a write can only be issued while holding a
//! [`WriteGate`], which only this module can hand out.

use crate::errno::Errno;
use crate::ids::{VcpuId, VmId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Whether a VM's CPU model can still change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seal {
    /// No vCPU has entered `KVM_RUN`: any write the kernel accepts is allowed.
    Open,
    /// `first_run` entered `KVM_RUN` first; only identical rewrites are allowed from now on.
    Sealed { first_run: VcpuId },
}

/// One VM's lock. Shared by the VM's handle and all of its vCPU handles.
#[derive(Debug)]
pub struct ModelLock {
    vm: VmId,
    /// Fast path for runs once the VM is sealed (monotonic: never goes back to false).
    sealed: AtomicBool,
    seal: Mutex<Seal>,
}

/// Proof that the caller holds the VM's lock while it checks and issues a CPU-model write.
pub struct WriteGate<'a> {
    seal: MutexGuard<'a, Seal>,
}

impl WriteGate<'_> {
    /// The state the write must be judged against; it cannot change while the gate is held.
    pub fn seal(&self) -> Seal {
        *self.seal
    }
}

impl ModelLock {
    pub fn new(vm: VmId) -> Self {
        ModelLock {
            vm,
            sealed: AtomicBool::new(false),
            seal: Mutex::new(Seal::Open),
        }
    }

    pub fn vm(&self) -> VmId {
        self.vm
    }

    /// The current state (a snapshot: it may be sealed by the time the caller looks at it).
    pub fn state(&self) -> Seal {
        *self.lock_state()
    }

    /// Hold the VM's lock for a CPU-model write.
    pub fn write_gate(&self) -> WriteGate<'_> {
        WriteGate {
            seal: self.lock_state(),
        }
    }

    /// Called by a vCPU right before each `KVM_RUN`. The first call seals the VM; it returns the
    /// state before the call so the caller can tell whether it was the one that sealed it.
    pub fn seal_for_run(&self, vcpu: VcpuId) -> Seal {
        if self.sealed.load(Ordering::Acquire) {
            return self.state();
        }
        let mut seal = self.lock_state();
        let before = *seal;
        if before == Seal::Open {
            *seal = Seal::Sealed { first_run: vcpu };
            self.sealed.store(true, Ordering::Release);
        }
        before
    }

    fn lock_state(&self) -> MutexGuard<'_, Seal> {
        // A panic while holding the lock cannot leave `Seal` half-written (it is `Copy` and only
        // ever assigned whole), so a poisoned lock is still a valid lock.
        self.seal
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A CPU-model write refused by the lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRefusal {
    pub vm: VmId,
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
}

impl fmt::Display for LockRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vmfleet refused {} on {}/{}: the VM has run, so its CPU model is locked and only an \
             identical rewrite is allowed ({})",
            self.write, self.vm, self.vcpu, self.errno
        )?;
        if !self.differences.is_empty() {
            const SHOWN: usize = 8;
            write!(f, "; it differs from what the kernel holds: ")?;
            for (i, d) in self.differences.iter().take(SHOWN).enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                f.write_str(d)?;
            }
            if self.differences.len() > SHOWN {
                write!(f, ", and {} more", self.differences.len() - SHOWN)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for LockRefusal {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_run_seals_and_later_runs_see_it() {
        let lock = ModelLock::new(VmId(0));
        assert_eq!(lock.state(), Seal::Open);
        assert_eq!(lock.seal_for_run(VcpuId(1)), Seal::Open);
        assert_eq!(
            lock.state(),
            Seal::Sealed {
                first_run: VcpuId(1)
            }
        );
        assert_eq!(
            lock.seal_for_run(VcpuId(0)),
            Seal::Sealed {
                first_run: VcpuId(1)
            }
        );
    }

    /// A write that holds the gate cannot observe `Open` once a run has sealed the VM, and a run
    /// cannot seal while a write holds the gate: the seal happens strictly before or after.
    #[test]
    fn seal_waits_for_a_write_in_flight() {
        let lock = Arc::new(ModelLock::new(VmId(0)));
        let gate = lock.write_gate();
        assert_eq!(gate.seal(), Seal::Open);
        let runner = {
            let lock = Arc::clone(&lock);
            std::thread::spawn(move || lock.seal_for_run(VcpuId(0)))
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            !runner.is_finished(),
            "seal must wait for the write holding the gate"
        );
        drop(gate);
        assert_eq!(runner.join().unwrap(), Seal::Open);
        assert_eq!(
            lock.write_gate().seal(),
            Seal::Sealed {
                first_run: VcpuId(0)
            }
        );
    }
}
