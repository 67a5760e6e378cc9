//! The process's allocator, tuned for a process that holds VMs.
//!
//! glibc gives each busy thread an arena (a heap of its own, up to eight per CPU) and grows an
//! arena's heap one allocation's worth at a time, by `mprotect`ing more of its reserved range
//! (`grow_heap`). A fleet's threads are many and short-lived in what they allocate, so a
//! 1,000-VM replay made ~3,000 such calls, its biggest single kind of `mprotect`. Each one takes
//! the address space's lock for writing (every page fault of every other thread waits), and with
//! VMs alive each one also calls every VM's MMU notifier. A larger top pad grows a heap in bigger
//! steps: far fewer calls, and no more memory resident (a page is resident once touched, not once
//! made writable).

/// How much more than asked for a heap grows by (glibc's default: 128 KiB).
pub const HEAP_TOP_PAD: usize = 4 << 20;

/// Tune the allocator for a fleet process (see the module documentation); call it once, early in
/// `main`. Returns whether the allocator took the setting (only glibc's has it).
pub fn tune_allocator() -> bool {
    #[cfg(target_env = "gnu")]
    {
        let pad = libc::c_int::try_from(HEAP_TOP_PAD).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only records the value in the allocator's parameters (taking its own
        // lock); it is defined for M_TOP_PAD with any non-negative value and touches no memory of
        // ours.
        unsafe { libc::mallopt(libc::M_TOP_PAD, pad) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_top_pad() {
        assert_eq!(super::tune_allocator(), cfg!(target_env = "gnu"));
    }
}
