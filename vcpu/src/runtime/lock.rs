//! The pre-run lock: once any vCPU of a VM has entered `KVM_RUN`, the VM's CPU model may only be
//! rewritten with what the kernel already holds.
//!
//! Kernels disagree on this rule (x86 before 5.16 warned and accepted changes, arm64 6.1 still
//! accepts a changed `ID_AA64PFR0_EL1.CSV3`), so vmfleet decides it itself, the same way on every
//! kernel, before the write reaches the kernel. The errno of a refusal is the kernel's: the class
//! the newest kernels use for a changed model (x86 CPUID: `EINVAL`; arm64 ID registers and
//! bitmaps: `EBUSY`), or, on arm64, the errno of the set handler that would refuse the write
//! before any comparison (a field below its floor, MIDR_EL1 without capability 239: `EINVAL`).
//! The rule per write is the model's (`model::lock_policy`); this module only holds the state.
//!
//! Race freedom: the lock has one mutex per VM. A CPU-model write holds it from the check to the
//! end of the ioctl; a vCPU takes it to *seal* the VM before its first `KVM_RUN`. So every write
//! either completes entirely before the VM is sealed or is judged as a write to a sealed VM. The
//! seal is taken before the run thread locks its vCPU, so the two locks are never held in opposite
//! orders. After the first seal, runs only read an atomic flag.
//!
//! The types carry the rule: [`Seal`] is the state, and a write can only be issued while holding a
//! [`WriteGate`], which only this module can hand out.

use crate::hypervisor::ids::{VcpuId, VmId};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Whether a VM's CPU model can still change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seal {
    /// No vCPU has entered `KVM_RUN`: any write the kernel accepts is allowed.
    Open,
    /// `first_run` entered `KVM_RUN` first; only identical rewrites are allowed from now on.
    Sealed {
        /// The vCPU whose `KVM_RUN` sealed the VM (named in refusals).
        first_run: VcpuId,
    },
}

/// One VM's lock. Shared by the VM's handle and all of its vCPU handles.
#[derive(Debug)]
pub struct ModelLock {
    vm: VmId,
    /// Fast path for runs once the VM is sealed (monotonic: never goes back to false).
    sealed: AtomicBool,
    /// The vCPU that sealed the VM, valid once `sealed` is set (so a sealed VM's runs read it
    /// without the mutex).
    first_run: AtomicU32,
    seal: Mutex<Seal>,
    /// A kernel probe's scratch VM ([`ModelLock::for_kernel_probe`]): never sealed.
    kernel_probe: bool,
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
    /// The lock of a VM none of whose vCPUs has run yet ([`Seal::Open`]).
    pub fn new(vm: VmId) -> Self {
        ModelLock {
            vm,
            sealed: AtomicBool::new(false),
            first_run: AtomicU32::new(0),
            seal: Mutex::new(Seal::Open),
            kernel_probe: false,
        }
    }

    /// The lock of a scratch VM that exists to ask the kernel what it answers after a run (the
    /// after-run cross-check): it never seals. Such a VM runs no guest code (its one `KVM_RUN`
    /// is kicked before it enters the guest, which still marks the VM as run for the kernel),
    /// so no guest can see its model change; sealing it would keep the question from the kernel.
    pub fn for_kernel_probe(vm: VmId) -> Self {
        ModelLock {
            kernel_probe: true,
            ..ModelLock::new(vm)
        }
    }

    /// Whether this is a kernel probe's lock ([`ModelLock::for_kernel_probe`]).
    pub fn is_kernel_probe(&self) -> bool {
        self.kernel_probe
    }

    /// The VM this lock guards.
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
        if self.kernel_probe {
            return Seal::Open;
        }
        if self.sealed.load(Ordering::Acquire) {
            let first_run = VcpuId(self.first_run.load(Ordering::Relaxed));
            return Seal::Sealed { first_run };
        }
        let mut seal = self.lock_state();
        let before = *seal;
        if before == Seal::Open {
            *seal = Seal::Sealed { first_run: vcpu };
            self.first_run.store(vcpu.0, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::cpuid::CpuidReg;
    use crate::hypervisor::errno::Errno;
    use crate::hypervisor::headline::{HEADLINE_MAX, LOCK_RULE, headline};
    use crate::hypervisor::refusal::LockRefusal;
    use crate::model::x86::TableDifference;
    use std::sync::Arc;

    fn refusal(differences: Vec<TableDifference>) -> LockRefusal {
        LockRefusal {
            vm: VmId(1),
            vcpu: VcpuId(0),
            first_run: VcpuId(1),
            errno: Errno::EINVAL,
            write: "SET_CPUID2 entries=56 digest=7738582f".into(),
            differences: differences.iter().map(ToString::to_string).collect(),
            changes: differences.iter().flat_map(|d| d.changes()).collect(),
            note: None,
        }
    }

    #[test]
    fn a_kernel_probes_lock_never_seals_and_a_fleet_vms_does() {
        let probe = ModelLock::for_kernel_probe(VmId(VmId::KERNEL_PROBES));
        for vcpu in [VcpuId(0), VcpuId(0), VcpuId(1)] {
            assert_eq!(probe.seal_for_run(vcpu), Seal::Open);
        }
        assert_eq!(probe.state(), Seal::Open);
        assert!(probe.is_kernel_probe());
        let fleet = ModelLock::new(VmId(0));
        assert_eq!(fleet.seal_for_run(VcpuId(1)), Seal::Open);
        assert_eq!(
            fleet.state(),
            Seal::Sealed {
                first_run: VcpuId(1)
            }
        );
        // A sealed VM's runs read the seal without the mutex, and it names the first vCPU.
        assert_eq!(
            fleet.seal_for_run(VcpuId(0)),
            Seal::Sealed {
                first_run: VcpuId(1)
            }
        );
        assert!(!fleet.is_kernel_probe());
    }

    #[test]
    fn a_refusal_opens_with_the_change_old_new_and_the_rule() {
        // avx2 is 7.0.ebx[5].
        let r = refusal(vec![TableDifference::Bits {
            leaf: 7,
            subleaf: 0,
            reg: CpuidReg::Ebx,
            held: 1 << 5,
            requested: 0,
        }]);
        let text = r.to_string();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "vm1/vcpu0: CPUID 0x7.0.ebx avx2 1 → 0 refused: the VM has run, its CPU model is \
             locked (only an identical rewrite is allowed)"
        );
        assert_eq!(
            lines.collect::<Vec<_>>(),
            [
                "  refused write: SET_CPUID2 entries=56 digest=7738582f (not sent to the kernel)",
                "  difference: 7.0.ebx: avx2 1->0",
                "  errno: EINVAL, the kernel's own class for this write",
            ]
        );
        // What traces keep is the one-line text of the first recordings, unchanged.
        assert_eq!(
            r.recorded(),
            "vmfleet refused SET_CPUID2 entries=56 digest=7738582f on vm1/vcpu0: the VM has run, \
             so its CPU model is locked and only an identical rewrite is allowed (EINVAL); it \
             differs from what the kernel holds: 7.0.ebx: avx2 1->0"
        );
    }

    /// The control fixture's refusal hides dozens of features: its recorded text is over 1,000
    /// characters, its first line stays short and every change is still in the details.
    #[test]
    fn a_refusal_of_many_changes_stays_short_on_its_first_line() {
        let all = |leaf, reg| TableDifference::Bits {
            leaf,
            subleaf: 0,
            reg,
            held: u32::MAX,
            requested: 0,
        };
        let r = refusal(vec![
            all(1, CpuidReg::Ecx),
            all(1, CpuidReg::Edx),
            all(7, CpuidReg::Ebx),
            all(7, CpuidReg::Ecx),
            all(0x8000_0001, CpuidReg::Ecx),
            all(0xd, CpuidReg::Eax),
            all(0xd, CpuidReg::Edx),
            all(6, CpuidReg::Eax),
            all(0x14, CpuidReg::Ebx),
        ]);
        assert!(r.recorded().chars().count() > 1000, "{}", r.recorded());
        let first = r.headline();
        assert!(first.chars().count() <= HEADLINE_MAX, "{first}");
        assert!(
            first.starts_with("vm1/vcpu0: CPUID 0x1.0.ecx pni 1 → 0 (and ")
                && first.ends_with(&format!(" more) refused: {LOCK_RULE}")),
            "{first}"
        );
        let text = r.to_string();
        assert!(
            text.contains("7.0.ebx: ") && text.contains("0x14.0.ebx: "),
            "{text}"
        );
    }

    #[test]
    fn headlines_are_cut_to_the_limit_on_any_input() {
        // A long change is cut, the rule kept.
        let long = vec!["x".repeat(500), "y".into()];
        let line = headline("vm0/vcpu0", &long, LOCK_RULE);
        assert_eq!(line.chars().count(), HEADLINE_MAX, "{line}");
        assert!(line.starts_with("vm0/vcpu0: xxx"), "{line}");
        assert!(
            line.ends_with(&format!("x… (and 1 more) refused: {LOCK_RULE}")),
            "{line}"
        );
        // A long rule is cut, the change kept (characters, not bytes, are counted).
        let line = headline("", &["é → è".into()], &"r".repeat(400));
        assert_eq!(line.chars().count(), HEADLINE_MAX, "{line}");
        assert!(
            line.starts_with("é → è refused: rrr") && line.ends_with("r…"),
            "{line}"
        );
        // Both long: each gets its share.
        let line = headline("t", &["c".repeat(300)], &"r".repeat(300));
        assert_eq!(line.chars().count(), HEADLINE_MAX, "{line}");
        assert!(line.contains("c… refused: rrr"), "{line}");
        assert!(line.ends_with("r…"), "{line}");
        assert_eq!(headline("t", &[], "rule"), "t: the CPU model refused: rule");
        assert!(headline(&"t".repeat(300), &[], "rule").chars().count() <= HEADLINE_MAX);
    }

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
