//! One VM's run control: what its control plane wants its vCPU threads to do ([`RunDecision`]),
//! shared between the control plane (which changes it and kicks) and the vCPU threads (which
//! read it at control points and park on it).
//!
//! The control plane never waits for a vCPU thread here; it learns that a thread parked or ended
//! from the notices the thread sends (the supervisor's business). vCPU threads wait here: parked
//! until the wish changes, or, in a replay, until the control plane catches up with a decision the
//! recorded run took (see [`crate::VcpuHandle::control_point`]).

use crate::hypervisor::backend::Kick;
use crate::hypervisor::call::RunDecision;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A VM's run control. Cheap to share (`Arc`).
pub struct RunControl {
    wanted: Mutex<RunDecision>,
    changed: Condvar,
    kicks: Mutex<Vec<Arc<dyn Kick>>>,
}

impl Default for RunControl {
    fn default() -> Self {
        RunControl::new()
    }
}

impl RunControl {
    /// A control that wants the vCPUs to run.
    pub fn new() -> Self {
        RunControl {
            wanted: Mutex::new(RunDecision::Run),
            changed: Condvar::new(),
            kicks: Mutex::new(Vec::new()),
        }
    }

    /// Kick this vCPU too when the wish changes.
    pub fn add_kick(&self, kick: Arc<dyn Kick>) {
        lock(&self.kicks).push(kick);
    }

    /// What is wanted now.
    pub fn wanted(&self) -> RunDecision {
        *lock(&self.wanted)
    }

    /// Want `decision` from now on: wake parked threads, and kick running ones out of the guest
    /// unless the wish is to run (a running thread has nothing to do about that).
    pub fn request(&self, decision: RunDecision) {
        *lock(&self.wanted) = decision;
        self.changed.notify_all();
        if decision != RunDecision::Run {
            for kick in lock(&self.kicks).iter() {
                kick.kick();
            }
        }
    }

    /// Set what is wanted before any vCPU thread of the VM has run, without kicking. A kick now
    /// would leave `immediate_exit` set, and the first `KVM_RUN` would return `EINTR` before
    /// the guest ran a single instruction; a VM started paused must enter its guest once.
    pub fn preset(&self, decision: RunDecision) {
        *lock(&self.wanted) = decision;
        self.changed.notify_all();
    }

    /// Park the calling vCPU thread while the wish is `Pause`; returns the wish that woke it.
    pub fn wait_while_paused(&self) -> RunDecision {
        let guard = lock(&self.wanted);
        let guard = self
            .changed
            .wait_while(guard, |wanted| *wanted == RunDecision::Pause)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }

    /// Wait until the wish is `decision`, at most `timeout`; whether it came.
    pub fn wait_for(&self, decision: RunDecision, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = lock(&self.wanted);
        while *guard != decision {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = self
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

impl std::fmt::Debug for RunControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunControl")
            .field("wanted", &self.wanted())
            .field("vcpus", &lock(&self.kicks).len())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct CountingKick(AtomicUsize);
    impl Kick for CountingKick {
        fn kick(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn bind_current_thread(&self) {}
        fn unbind_thread(&self) {}
    }

    #[test]
    fn pausing_and_stopping_kick_resuming_does_not() {
        let control = RunControl::new();
        let kick = Arc::new(CountingKick::default());
        control.add_kick(kick.clone());
        control.request(RunDecision::Pause);
        control.request(RunDecision::Run);
        control.request(RunDecision::Stop);
        assert_eq!(kick.0.load(Ordering::SeqCst), 2);
        assert_eq!(control.wanted(), RunDecision::Stop);
    }

    #[test]
    fn a_parked_thread_wakes_on_the_next_wish() {
        let control = Arc::new(RunControl::new());
        control.request(RunDecision::Pause);
        let parked = {
            let control = Arc::clone(&control);
            std::thread::spawn(move || control.wait_while_paused())
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(!parked.is_finished(), "a parked thread must stay parked");
        control.request(RunDecision::Stop);
        assert_eq!(parked.join().unwrap(), RunDecision::Stop);
    }

    #[test]
    fn wait_for_times_out_or_sees_the_wish() {
        let control = RunControl::new();
        assert!(!control.wait_for(RunDecision::Stop, Duration::from_millis(10)));
        control.request(RunDecision::Stop);
        assert!(control.wait_for(RunDecision::Stop, Duration::from_millis(10)));
    }
}
