//! The C allocator of a process that holds many KVM VMs.
//!
//! Each KVM VM registers an MMU notifier on the process, and every change to the process's
//! mappings (`mprotect`, `munmap`, `madvise(MADV_DONTNEED)`) calls every VM's notifier under the
//! `mmap` lock. glibc gives threads their own malloc arenas (up to eight per CPU) and grows such an
//! arena with one `mprotect` per few pages of heap, so a thousand VM threads that allocate while
//! their VMs come up issue tens of thousands of `mprotect`s, each one paid once per VM already
//! there: measured by `vmfleet bench`, it was the largest cost of starting 1,000 VMs after
//! `KVM_CREATE_VM` itself. The main arena grows with `brk`, a page-aligned padding at a time,
//! which changes no existing mapping; small allocations are still served from each thread's own
//! cache first, so one arena costs little contention.

/// Make every thread allocate from glibc's main arena (`mallopt(M_ARENA_MAX, 1)`). Call it at the
/// start of `main`, before other threads exist. Returns whether the setting was taken; on C
/// libraries without arenas (musl) it does nothing and returns `false`.
pub fn one_malloc_arena() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only changes glibc's allocator parameters; M_ARENA_MAX with a positive
        // value is valid at any time (arenas already made stay in use), no memory is passed.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}
