//! Kicking a vCPU out of `KVM_RUN` from another thread: `kvm_run.immediate_exit` plus a
//! real-time signal, the way Firecracker and Cloud Hypervisor do it.
//!
//! Why both: the signal interrupts a `KVM_RUN` that is already blocked in the guest, but a signal
//! that arrives while the thread is in userspace (between two runs) is consumed there and would be
//! lost. `immediate_exit = 1` covers that case: the kernel checks it on entry and returns `EINTR`
//! at once. The vCPU thread clears it after every `EINTR` (see [`KvmKick::clear_after_exit`]).
//!
//! Ordering: the control plane publishes what it wants (under its own mutex) *before* kicking, and
//! the vCPU thread clears `immediate_exit` *before* reading what is wanted; a `SeqCst` fence on
//! both sides makes every kick either visible to that read or still pending as `immediate_exit`.

use crate::hypervisor::backend::Kick;
use std::sync::atomic::{Ordering, fence};
use std::sync::{Mutex, OnceLock};

/// The signal offset from `SIGRTMIN` used for kicks (Firecracker uses 0 too; vmfleet owns its
/// process).
const KICK_SIGNAL_OFFSET: i32 = 0;

/// The kick signal's number.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + KICK_SIGNAL_OFFSET
}

/// Does nothing: the signal's only job is to make a blocked `KVM_RUN` return `EINTR`.
extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Install the kick signal's handler once per process (without `SA_RESTART`, so `KVM_RUN` returns
/// `EINTR` instead of being restarted).
pub(super) fn install_handler() -> Result<(), vmm_sys_util::errno::Error> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
                .map_err(|e| e.errno())
        })
        .map_err(vmm_sys_util::errno::Error::new)
}

#[derive(Debug)]
struct Target {
    /// `&kvm_run.immediate_exit` of the vCPU's mapping; `None` once the vCPU fd was closed.
    immediate_exit: Option<*mut u8>,
    /// The thread running the vCPU, while one is bound.
    thread: Option<libc::pthread_t>,
}

/// The KVM [`Kick`].
#[derive(Debug)]
pub(super) struct KvmKick {
    target: Mutex<Target>,
}

// SAFETY: the raw pointer is only dereferenced under `target`'s mutex, and only while the mapping
// it points into is alive: `KvmVcpu` calls `forget_mapping` (under the same mutex) before it
// unmaps `kvm_run` by closing the vCPU fd. A `pthread_t` is a plain handle, valid to send.
unsafe impl Send for KvmKick {}
// SAFETY: as above; all access goes through the mutex.
unsafe impl Sync for KvmKick {}

impl KvmKick {
    /// `immediate_exit` points into the `kvm_run` mapping of the vCPU that owns this kicker.
    pub(super) fn new(immediate_exit: *mut u8) -> Self {
        KvmKick {
            target: Mutex::new(Target {
                immediate_exit: Some(immediate_exit),
                thread: None,
            }),
        }
    }

    fn target(&self) -> std::sync::MutexGuard<'_, Target> {
        self.target.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The vCPU fd is about to be closed: never touch its mapping again.
    pub(super) fn forget_mapping(&self) {
        self.target().immediate_exit = None;
    }

    /// Called by the vCPU thread after `KVM_RUN` returned `EINTR`, before it looks at what the
    /// control plane wants.
    pub(super) fn clear_after_exit(&self) {
        let target = self.target();
        if let Some(flag) = target.immediate_exit {
            // SAFETY: the mapping is alive while `immediate_exit` is `Some` (see the Send impl);
            // a volatile byte store, as the kernel reads the field with READ_ONCE.
            unsafe { flag.write_volatile(0) };
        }
        drop(target);
        fence(Ordering::SeqCst);
    }
}

impl Kick for KvmKick {
    fn kick(&self) {
        fence(Ordering::SeqCst);
        let target = self.target();
        if let Some(flag) = target.immediate_exit {
            // SAFETY: as in `clear_after_exit`.
            unsafe { flag.write_volatile(1) };
        }
        if let Some(thread) = target.thread {
            // SAFETY: `thread` is bound only between `bind_current_thread` and `unbind_thread`,
            // both called by that thread itself, and unbinding takes this mutex, so the thread is
            // alive (and its handle valid) while we hold it. The handler was installed when
            // `/dev/kvm` was opened. A failure (ESRCH) would only mean there is no run to
            // interrupt, so the result is ignored.
            unsafe { libc::pthread_kill(thread, kick_signal()) };
        }
    }

    fn bind_current_thread(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.target().thread = Some(me);
    }

    fn unbind_thread(&self) {
        self.target().thread = None;
    }
}
