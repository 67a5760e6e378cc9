//! The measuring instruments of `vmfleet bench`: resident memory read from `/proc`, a monotonic
//! stopwatch, medians, and one start sample. Pure or read-only, apart from the benchmark's
//! figures, so that they are tested without KVM.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// This process's resident set size (`VmRSS` in `/proc/self/status`), in bytes.
pub fn rss_bytes() -> io::Result<u64> {
    rss_bytes_from(Path::new("/proc/self/status"))
}

/// `VmRSS` of a `/proc/<pid>/status` file, in bytes.
pub fn rss_bytes_from(status: &Path) -> io::Result<u64> {
    let text = std::fs::read_to_string(status)?;
    parse_vm_rss(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} has no readable `VmRSS: <n> kB` line", status.display()),
        )
    })
}

/// The `VmRSS:` line of a `/proc/<pid>/status` text, in bytes (the kernel prints kB).
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    parse_status_bytes(status, "VmRSS:")
}

/// The line starting with `key` (`VmRSS:`, `VmHWM:`) of a `/proc/<pid>/status` text, in bytes
/// (the kernel prints kB).
pub fn parse_status_bytes(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let mut words = line[key.len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// A monotonic stopwatch.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch {
    start: Instant,
    last: Instant,
}

impl Stopwatch {
    /// Start now.
    pub fn start() -> Stopwatch {
        let now = Instant::now();
        Stopwatch {
            start: now,
            last: now,
        }
    }

    /// Time since [`Stopwatch::start`].
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Time since the previous lap (or the start).
    pub fn lap(&mut self) -> Duration {
        let now = Instant::now();
        let lap = now.duration_since(self.last);
        self.last = now;
        lap
    }
}

/// The median of `samples` (the mean of the middle two for an even count); `None` when empty or
/// when a sample is NaN.
pub fn median(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// The median of `samples`; `None` when empty.
pub fn median_duration(samples: &[Duration]) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2
    })
}

/// One start measurement: `vms` VMs of `vcpus_per_vm` vCPUs from nothing to every vCPU's first
/// exit took `elapsed`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StartSample {
    /// VMs started.
    pub vms: u32,
    /// vCPUs of each.
    pub vcpus_per_vm: u32,
    /// Nothing to every vCPU's first exit.
    pub elapsed: Duration,
}

impl StartSample {
    /// The start throughput (infinite for a run too short to time).
    pub fn vms_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            f64::from(self.vms) / seconds
        } else {
            f64::INFINITY
        }
    }
}

/// The resident bytes of guest memory: the `Rss` of every mapping exactly `guest_kib` long (the
/// bench's VMs have 1 MiB of guest memory each; no other mapping of vmfleet has that size).
pub(super) fn guest_resident_bytes(guest_kib: u64) -> io::Result<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut total = 0;
    let mut in_guest = false;
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Size:") {
            in_guest =
                kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok() == Some(guest_kib);
        } else if let Some(kib) = line.strip_prefix("Rss:") {
            if in_guest {
                total += kib
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0)
                    * 1024;
            }
        }
    }
    Ok(total)
}

/// The longest [`settle`] waits.
pub const SETTLE_LIMIT: Duration = Duration::from_millis(500);

/// This process's threads that are not waiting for work in the fleet's thread pool
/// (`Threads:` in `/proc/self/status` less the pool's free threads), if readable. A free pool
/// thread costs a run nothing, and it stays for the pool's idle limit, longer than a run.
pub fn thread_count() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("Threads:"))?;
    let threads: u64 = line["Threads:".len()..].trim().parse().ok()?;
    Some(threads.saturating_sub(crate::fleet::threads::pool().free_threads() as u64))
}

/// Wait (at most [`SETTLE_LIMIT`]) until this process has no more than `threads` busy threads
/// ([`thread_count`]): a side's run returns before every thread it started has ended (vmfleet's
/// runtime and VM loops wind down in the background), and the next run, of either side, must not
/// pay for that. Then wait for a quiet host ([`quiet_host`]): nor must it pay for the kernel's
/// share of the teardown.
pub fn settle(threads: Option<u64>) {
    if let Some(threads) = threads {
        let clock = Instant::now();
        while thread_count().is_some_and(|now| now > threads) && clock.elapsed() < SETTLE_LIMIT {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    quiet_host();
}

/// The longest [`quiet_host`] waits.
pub const QUIET_LIMIT: Duration = Duration::from_secs(2);
/// The slice of time over which [`quiet_host`] judges the host's CPUs.
const QUIET_SLICE: Duration = Duration::from_millis(20);
/// The share of the host's CPU time that must be idle over a slice for the host to be quiet.
const QUIET_IDLE: f64 = 0.9;

/// Wait (at most [`QUIET_LIMIT`]) until the host's CPUs are idle ([`QUIET_IDLE`] of a
/// [`QUIET_SLICE`], from `/proc/stat`). A run leaves the kernel work behind it: VMs and their
/// memory freed after the last file closes, RCU callbacks, a trace's writeback. Starting the next
/// run on top of that made adjacent runs differ by up to 2x, far more than the 2% the recording
/// figure must resolve.
pub fn quiet_host() {
    let clock = Instant::now();
    let Some(mut before) = read_cpu_times() else {
        return;
    };
    while clock.elapsed() < QUIET_LIMIT {
        std::thread::sleep(QUIET_SLICE);
        let Some(now) = read_cpu_times() else { return };
        if now
            .idle_share_since(&before)
            .is_some_and(|idle| idle >= QUIET_IDLE)
        {
            return;
        }
        before = now;
    }
}

fn read_cpu_times() -> Option<CpuTimes> {
    CpuTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The host's CPU time so far, all CPUs together, from the `cpu` line of `/proc/stat` (in
/// clock ticks): idle (idle + iowait) and everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// Ticks idle or waiting for I/O.
    pub idle: u64,
    /// All ticks.
    pub total: u64,
}

impl CpuTimes {
    /// The times of a `/proc/stat` text; `None` without a readable `cpu ` line.
    pub fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
        let (idle, iowait) = (*ticks.get(3)?, ticks.get(4).copied().unwrap_or(0));
        Some(CpuTimes {
            idle: idle + iowait,
            total: ticks.iter().take(8).sum(),
        })
    }

    /// The idle share of the CPU time between `earlier` and `self`; `None` if no tick passed.
    pub fn idle_share_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        (total > 0).then(|| idle as f64 / total as f64)
    }
}
