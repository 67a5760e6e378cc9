//! The fleet's threads: VM loops and vCPU threads run on OS threads that go back to a pool when
//! their work ends, instead of ending with it.
//!
//! Why: ending a thread unmaps its stack (glibc caches only ~40 MiB of them) and `madvise`s it,
//! creating one `mprotect`s its guard page; each of these flushes the TLB of every CPU the
//! process runs on, and with VMs alive every `munmap` also calls each VM's MMU notifier. A fleet
//! of 1,000 VMs x 2 vCPUs creates and ends about 3,000 threads; replaying its trace spent half
//! its time doing just that. With the pool a VM that starts after another ended takes over the
//! other's threads, and no thread ends while the fleet is busy.
//!
//! The pool never queues work: a VM loop and its vCPU threads block for the VM's whole life and
//! wait on each other, so every job gets a thread at once, a free one or a new one. A free thread
//! ends after [`IDLE_LIMIT`] without work, so a long-running `serve` whose fleet shrank gives its
//! threads back.
//!
//! A thread goes back to the pool only as it came: a job may change its thread's priority (a
//! vCPU thread lowers it once its guest runs, see [`vcpu::hypervisor::kvm::VCPU_NICE`]); the pool
//! sets it back, and a thread whose priority cannot be set back (no privilege to lower a nice
//! value) ends instead. A job's panic is caught and handed to whoever joins it, as with
//! [`std::thread::JoinHandle::join`]; the thread stays usable (its stack unwound).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

/// How long a free thread waits for work before it ends.
pub const IDLE_LIMIT: Duration = Duration::from_secs(10);

/// Stack size of the fleet's threads (VM loops and vCPU threads). Neither recurses nor keeps
/// large frames; small stacks keep a big fleet's address space (and page tables) small.
pub const THREAD_STACK: usize = 256 << 10;

/// The process's pool of fleet threads.
pub fn pool() -> &'static ThreadPool {
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| ThreadPool::new(THREAD_STACK))
}

type Work = Box<dyn FnOnce() + Send>;

/// A job for a thread: its work and the name the thread takes while doing it.
struct Job {
    name: String,
    work: Work,
}

/// Where a free thread waits for its next job.
struct Slot {
    job: Mutex<Option<Job>>,
    posted: Condvar,
}

/// A pool of OS threads that never makes a job wait (see the module's documentation).
pub struct ThreadPool {
    /// Threads waiting for a job, most recently freed last (taken first: its stack is warm).
    free: Mutex<Vec<Arc<Slot>>>,
    stack: usize,
    idle_limit: Duration,
}

/// A job running on a pool thread; [`PooledThread::join`] waits for its result.
#[derive(Debug)]
pub struct PooledThread<T> {
    result: Receiver<std::thread::Result<T>>,
}

impl<T> PooledThread<T> {
    /// Do `work` on this thread now and hold its result (or its panic) as a finished job's: for
    /// work known never to block (a replayed vCPU whose whole run is at hand), which needs no
    /// thread of its own.
    pub fn run_here<F: FnOnce() -> T>(work: F) -> PooledThread<T> {
        let (tx, result) = mpsc::sync_channel(1);
        let _ = tx.send(catch_unwind(AssertUnwindSafe(work)));
        PooledThread { result }
    }

    /// Wait for the job to end: its value, or the payload of its panic.
    pub fn join(self) -> std::thread::Result<T> {
        self.result.recv().unwrap_or_else(|_| {
            // The job's sender went without a word: only a thread killed mid-job does that.
            Err(Box::new("its pool thread ended without finishing the job"))
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ThreadPool {
    /// A pool whose threads have `stack` bytes of stack and end after [`IDLE_LIMIT`] unused.
    pub fn new(stack: usize) -> ThreadPool {
        ThreadPool::with_idle_limit(stack, IDLE_LIMIT)
    }

    fn with_idle_limit(stack: usize, idle_limit: Duration) -> ThreadPool {
        ThreadPool {
            free: Mutex::new(Vec::new()),
            stack,
            idle_limit,
        }
    }

    /// How many threads wait for work now (the bench leaves them out when it waits for a run's
    /// threads to end).
    pub fn free_threads(&self) -> usize {
        lock(&self.free).len()
    }

    /// Run `work` on a free thread of the pool, or on a new one if none is free; the thread is
    /// named `name` while it runs it. Fails only if a new thread was needed and the system would
    /// not create one.
    pub fn spawn<T, F>(&'static self, name: String, work: F) -> std::io::Result<PooledThread<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, result): (SyncSender<std::thread::Result<T>>, _) = mpsc::sync_channel(1);
        let job = Job {
            name,
            work: Box::new(move || {
                let _ = tx.send(catch_unwind(AssertUnwindSafe(work)));
            }),
        };
        let free = lock(&self.free).pop();
        match free {
            Some(slot) => {
                *lock(&slot.job) = Some(job);
                slot.posted.notify_one();
            }
            None => self.start_thread(job)?,
        }
        Ok(PooledThread { result })
    }

    fn start_thread(&'static self, first: Job) -> std::io::Result<()> {
        // Born with its first job's name: one `prctl` fewer per new thread.
        let name = first.name.replace('\0', "");
        let slot = Arc::new(Slot {
            job: Mutex::new(Some(first)),
            posted: Condvar::new(),
        });
        std::thread::Builder::new()
            .name(name)
            .stack_size(self.stack)
            .spawn(move || self.serve(&slot))
            .map(drop)
    }

    /// A pool thread's life: do the job posted to its slot, put the slot back on the free list,
    /// wait for the next; end when no job came within the idle limit or the thread cannot be
    /// given back as it came.
    fn serve(&self, slot: &Arc<Slot>) {
        let nice = vcpu::hypervisor::kvm::own_nice().ok();
        let mut named = true;
        while let Some(job) = self.next_job(slot) {
            if !named {
                let _ = vcpu::hypervisor::kvm::set_own_name(&job.name);
            }
            named = false;
            (job.work)();
            let Some(nice) = nice else { return };
            if vcpu::hypervisor::kvm::own_nice().ok() != Some(nice)
                && vcpu::hypervisor::kvm::set_own_nice(nice).is_err()
            {
                return;
            }
            let _ = vcpu::hypervisor::kvm::set_own_name("vmfleet-pool");
            lock(&self.free).push(Arc::clone(slot));
        }
    }

    /// The job posted to `slot`, waiting for one while the slot is on the free list; `None` once
    /// the thread has waited past the idle limit and took its slot off the list.
    fn next_job(&self, slot: &Arc<Slot>) -> Option<Job> {
        let mut job = lock(&slot.job);
        loop {
            if let Some(job) = job.take() {
                return Some(job);
            }
            let (next, waited) = slot
                .posted
                .wait_timeout(job, self.idle_limit)
                .unwrap_or_else(PoisonError::into_inner);
            job = next;
            if waited.timed_out() && job.is_none() {
                // Off the list, unless a spawn took the slot already: then its job is coming
                // (posted right after the slot left the list) and the thread must wait for it.
                let mut free = lock(&self.free);
                if let Some(at) = free.iter().position(|s| Arc::ptr_eq(s, slot)) {
                    free.swap_remove(at);
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn leaked(idle: Duration) -> &'static ThreadPool {
        Box::leak(Box::new(ThreadPool::with_idle_limit(THREAD_STACK, idle)))
    }

    #[test]
    fn a_freed_thread_takes_the_next_job() {
        let pool = leaked(Duration::from_secs(60));
        let first = pool
            .spawn("first".into(), || std::thread::current().id())
            .unwrap()
            .join()
            .unwrap();
        // The thread is back on the free list once the job's result is out; wait for it.
        assert!(free_becomes(pool, 1));
        let second = pool
            .spawn("second".into(), || std::thread::current().id())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(
            first, second,
            "the second job should run on the freed thread"
        );
    }

    #[test]
    fn jobs_never_wait_for_each_other() {
        // Every job blocks until all have started: a pool that queued any of them would hang.
        let pool = leaked(Duration::from_secs(60));
        const JOBS: usize = 64;
        let started = Arc::new((Mutex::new(0usize), Condvar::new()));
        let handles: Vec<_> = (0..JOBS)
            .map(|i| {
                let started = Arc::clone(&started);
                pool.spawn(format!("job-{i}"), move || {
                    let (count, all) = &*started;
                    let mut n = lock(count);
                    *n += 1;
                    all.notify_all();
                    while *n < JOBS {
                        n = all.wait(n).unwrap();
                    }
                    i
                })
                .unwrap()
            })
            .collect();
        let results: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results, (0..JOBS).collect::<Vec<_>>());
    }

    #[test]
    fn a_panic_reaches_the_joiner_and_the_thread_is_reused() {
        let pool = leaked(Duration::from_secs(60));
        let panicked = pool
            .spawn("panics".into(), || -> u32 {
                panic!("job failed on purpose")
            })
            .unwrap()
            .join()
            .unwrap_err();
        assert_eq!(
            panicked.downcast_ref::<&str>(),
            Some(&"job failed on purpose")
        );
        assert!(free_becomes(pool, 1));
        assert_eq!(pool.spawn("after".into(), || 7).unwrap().join().unwrap(), 7);
    }

    /// Wait (up to 10 s) until `pool` has `n` free threads; whether it got there.
    fn free_becomes(pool: &ThreadPool, n: usize) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.free_threads() != n {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn the_thread_takes_the_job_name_and_gives_back_its_priority() {
        let pool = leaked(Duration::from_secs(60));
        let before = vcpu::hypervisor::kvm::own_nice().unwrap();
        let (name, thread) = pool
            .spawn("vm-a-long-name-cut".into(), || {
                vcpu::hypervisor::kvm::deprioritize_vcpu_thread().unwrap();
                let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
                (comm, std::thread::current().id())
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(name.trim_end(), "vm-a-long-name-");
        // Whether this process may lower a nice value again, tried on a thread of its own.
        let restored = std::thread::spawn(move || {
            vcpu::hypervisor::kvm::deprioritize_vcpu_thread().unwrap();
            vcpu::hypervisor::kvm::set_own_nice(before).is_ok()
        })
        .join()
        .unwrap();
        if !restored {
            eprintln!("SKIPPED in part: no privilege to lower a nice value; the thread must end");
        }
        // With the privilege the thread comes back at its old priority; without, it ends.
        assert!(free_becomes(pool, usize::from(restored)));
        let (nice, next) = pool
            .spawn("after".into(), || {
                let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
                assert_eq!(comm.trim_end(), "after");
                (
                    vcpu::hypervisor::kvm::own_nice().unwrap(),
                    std::thread::current().id(),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(nice, before);
        assert_eq!(next == thread, restored);
    }

    #[test]
    fn an_idle_thread_ends_and_the_pool_starts_another() {
        let pool = leaked(Duration::from_millis(20));
        let counter = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&counter);
        pool.spawn("once".into(), move || c.fetch_add(1, Ordering::SeqCst))
            .unwrap()
            .join()
            .unwrap();
        // It goes back to the free list, then leaves it when idle too long.
        let mut seen_free = false;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !(seen_free && pool.free_threads() == 0) {
            seen_free |= pool.free_threads() == 1;
            assert!(
                std::time::Instant::now() < deadline,
                "the idle thread never came back and left the free list (seen free: {seen_free})"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let c = Arc::clone(&counter);
        pool.spawn("again".into(), move || c.fetch_add(1, Ordering::SeqCst))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(counter.load(Ordering::SeqCst), 2);
    }
}
