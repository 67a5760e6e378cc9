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

std::thread_local! {
    /// The calling thread's nice value as last read or set here, so that a pooled thread asking
    /// after every job makes no system call (a 1,000-VM replay ran 3,000 jobs). Only a thread's
    /// own calls change it: `setpriority` by another process on this thread is not seen.
    static OWN_NICE: std::cell::Cell<Option<i32>> = const { std::cell::Cell::new(None) };
}

/// The calling thread's nice value (each Linux thread has its own); read from the kernel once
/// per thread, then remembered along with every change made by [`set_own_nice`].
pub fn own_nice() -> std::io::Result<i32> {
    if let Some(nice) = OWN_NICE.get() {
        return Ok(nice);
    }
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    // getpriority answers -1 both for a nice of -1 and for a failure: only errno tells them apart.
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: getpriority with PRIO_PROCESS and a thread id of this process reads only that
    // thread's nice value; no memory is passed.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
    if nice == -1 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(0) {
            return Err(error);
        }
    }
    OWN_NICE.set(Some(nice));
    Ok(nice)
}

/// Set the calling thread's nice value. Raising it needs no privilege; lowering it back may
/// (`EACCES` without `CAP_SYS_NICE` or a high enough `RLIMIT_NICE`).
pub fn set_own_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority with PRIO_PROCESS and a thread id of this process changes only that
    // thread's nice value (Linux applies it per thread); no memory is passed.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        // Whatever it is now, it is read again next time.
        OWN_NICE.set(None);
        return Err(error);
    }
    // The kernel clamps to -20..=19.
    OWN_NICE.set(Some(nice.clamp(-20, 19)));
    Ok(())
}

/// Name the calling thread as the system shows it (`top -H`, `/proc/<pid>/task/*/comm`,
/// debuggers): the first 15 bytes of `name`, cut at a character boundary. A thread reused for
/// other work (the fleet's thread pool) takes the name of the work it now does.
pub fn set_own_name(name: &str) -> std::io::Result<()> {
    let mut bytes = [0u8; 16];
    let mut len = 0;
    for c in name.chars().filter(|&c| c != '\0') {
        if len + c.len_utf8() > 15 {
            break;
        }
        len += c.encode_utf8(&mut bytes[len..]).len();
    }
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from the pointer:
    // `bytes` is 16 bytes, at most 15 written, the rest zero, and it outlives the call.
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, bytes.as_ptr(), 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
