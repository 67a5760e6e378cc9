//! Scheduling of vCPU threads.
//!
//! A fleet's guests may spin forever, with many more vCPU threads than host CPUs. The threads that
//! create, configure, pause and stop VMs must still get the CPU promptly, or the control plane
//! would crawl exactly when it is needed. vCPU threads therefore run at a lower priority (a
//! higher nice value) than the rest of the process: among themselves they share the CPU as
//! before, but a control thread that wakes up runs first.

/// The nice value vCPU threads take (the rest of the process stays at its own).
pub const VCPU_NICE: i32 = 10;

/// Lower the calling thread's priority to [`VCPU_NICE`] (raising a nice value needs no privilege).
pub fn deprioritize_vcpu_thread() -> std::io::Result<()> {
    set_own_nice(VCPU_NICE)
}

fn set_own_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority with PRIO_PROCESS and a thread id of this process changes only that
    // thread's nice value (Linux applies it per thread); no memory is passed.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
