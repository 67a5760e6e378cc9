//! The recording figures of `vmfleet bench`: what recording costs a fleet's start (vmfleet's
//! start with the real recorder writing a trace, against the same start unrecorded, interleaved),
//! how big a fleet's trace is, and how fast and in how little memory it replays.
//!
//! The start is measured in this process, as the start figure is ([`vmfleet_start_recorded`]).
//! The trace and replay figures run `vmfleet run --record` and then `vmfleet replay` of its trace
//! as child processes (this executable), exactly as an operator does, so that each one's peak
//! memory is its own: the children's `VmHWM` (`/proc/<pid>/status`) is sampled every
//! [`PEAK_POLL`] until they exit.

use super::figures::{Figure, RecordRow, StartSide, TraceFigures, Verdict};
use super::measure::{
    StartSample, Stopwatch, median, median_duration, parse_status_bytes, settle, thread_count,
};
use super::vmfleet::{vmfleet_start_recorded, vmfleet_start_to_first_exit, wrong};
use super::{BenchError, VCPUS_PER_VM};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The VM counts of the recording figure (`--record-counts`).
pub const RECORD_COUNTS: [u32; 2] = [100, 1000];
/// vmfleet's start recorded may take at most this many times as long as unrecorded (by
/// recording's own account, with the adjacent pairs' median's interval reaching down to it).
pub const RECORD_TARGET_RATIO: f64 = 1.02;
/// VMs started per side of the recording figure, at least, for each of `--runs` ([`record_pairs`]).
pub const RECORD_VMS_PER_RUN: u32 = 800;
/// VMs of the fleet whose trace is measured and replayed (`--trace-vms`).
pub const TRACE_VMS: u32 = 1000;
/// A trace of 1,000 VMs x 2 vCPUs in at most 1 MiB: 1 MiB / 1,000 bytes per VM (rounded down).
pub const TRACE_TARGET_BYTES_PER_VM: u64 = (1 << 20) / 1000;
/// Replayed events per second, at least.
pub const REPLAY_TARGET_EVENTS_PER_SECOND: f64 = 2e6;
/// Replay time / live time, at most (replay at least 100x faster than the live run).
pub const REPLAY_TARGET_RATIO: f64 = 0.01;
/// Times `vmfleet replay` replays the trace: one run of a fraction of a second swings by a third
/// with the host's load, so the replay figures take the median time (and the highest peak).
pub const REPLAY_RUNS: usize = 5;
/// Peak resident memory of `vmfleet replay`, at most.
pub const REPLAY_TARGET_PEAK_BYTES: u64 = 64 << 20;
/// How often a child's `VmHWM` is read while it runs.
pub const PEAK_POLL: Duration = Duration::from_millis(2);
/// A child that runs longer than this counts as hung.
const CHILD_HANG: Duration = Duration::from_secs(600);

/// A scratch directory of the recording figures, removed when dropped.
pub(super) struct Scratch(PathBuf);

impl Scratch {
    /// A fresh scratch directory under the system's temporary directory.
    pub(super) fn new(what: &str) -> Result<Scratch, BenchError> {
        let dir = std::env::temp_dir().join(format!("vmfleet-bench-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| {
            BenchError::Failed(format!(
                "creating the scratch directory {}: {e}",
                dir.display()
            ))
        })?;
        Ok(Scratch(dir))
    }

    /// The directory.
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The recording figure for `vms` VMs: unrecorded and recorded starts in adjacent pairs (the
/// order alternates pair by pair, so neither side always runs on a host the other just warmed or
/// loaded), [`record_pairs`] pairs after one pair that is not counted (the first runs of a process
/// pay for its caches and the kernel's); the recorded start's trace size per VM (of its last run).
///
/// The pairs give the median of their ratios, not the ratio of the two sides' medians (a host's
/// speed drifts over a benchmark by far more than the 2% recording may cost, and two adjacent
/// runs share most of that drift), with its 95% interval ([`median_interval`]). Each recorded
/// start also accounts for recording's own work ([`accounted_ratios`]). The verdict needs both:
/// the account within the target, and the interval reaching down to it (the pairs do not show
/// recording costing more than its account says).
pub(super) fn record_row(vms: u32, runs: u32) -> RecordRow {
    let runs = record_pairs(vms, runs);
    let measured = Scratch::new("record").and_then(|dir| {
        let trace = dir.path().join("start.trace");
        let (mut off, mut on, mut bytes, mut work) = (Vec::new(), Vec::new(), 0, Vec::new());
        // Each run starts once the threads of the one before have ended and the host is quiet.
        let threads = thread_count();
        for run in 0..=runs {
            let mut recorded = || -> Result<(StartSample, Duration), BenchError> {
                let started = vmfleet_start_recorded(vms, VCPUS_PER_VM, &trace)?;
                settle(threads);
                bytes = started.summary.bytes;
                Ok((started.sample, started.recording_work))
            };
            let unrecorded = || -> Result<StartSample, BenchError> {
                let sample = vmfleet_start_to_first_exit(vms, VCPUS_PER_VM)?;
                settle(threads);
                Ok(sample)
            };
            let (off_sample, on_sample) = if run % 2 == 0 {
                let off = unrecorded()?;
                (off, recorded()?)
            } else {
                let on = recorded()?;
                (unrecorded()?, on)
            };
            // Pair 0 warms up.
            if run > 0 {
                off.push(off_sample);
                on.push(on_sample.0);
                work.push(on_sample.1);
            }
        }
        Ok((off, on, bytes, work))
    });
    let (off, on, bytes, work) = match measured {
        Ok(sides) => sides,
        Err(e) => return RecordRow::failed(vms, runs, Verdict::from_error(&e)),
    };
    let pair_ratios = pair_ratios(&off, &on);
    let ratio = median(&pair_ratios);
    let ratio_interval = median_interval(&pair_ratios);
    let accounted_ratio = median(&accounted_ratios(&on, &work));
    let (off, on) = (StartSide::from_samples(&off), StartSide::from_samples(&on));
    RecordRow {
        vms,
        runs,
        verdict: match (accounted_ratio, ratio_interval) {
            (Some(accounted), Some((low, _))) => {
                Verdict::judge(accounted <= RECORD_TARGET_RATIO && low <= RECORD_TARGET_RATIO)
            }
            _ => Verdict::Failed("no usable runs".into()),
        },
        off,
        on,
        ratio,
        ratio_interval: ratio_interval.map(|(low, high)| [low, high]),
        pair_ratios,
        accounted_ratio,
        recording_ms: work.iter().map(|w| w.as_secs_f64() * 1e3).collect(),
        trace_bytes_per_vm: Some(bytes as f64 / f64::from(vms.max(1))),
    }
}

/// Each recorded start's time divided by that time less the work recording did during it (see
/// [`super::vmfleet::RecordedStart::recording_work`]): what the start would have taken
/// unrecorded at the least, had all of that work stood in its way, so an upper bound on what
/// recording cost it that this host's noise does not blur (it is measured inside each run).
/// Infinite where the work was the whole start.
pub fn accounted_ratios(on: &[StartSample], work: &[Duration]) -> Vec<f64> {
    on.iter()
        .zip(work)
        .map(|(on, work)| match on.elapsed.checked_sub(*work) {
            Some(left) if !left.is_zero() => on.elapsed.as_secs_f64() / left.as_secs_f64(),
            _ => f64::INFINITY,
        })
        .collect()
}

/// The distribution-free 95% confidence interval of the median of `samples`: the order
/// statistics r and n + 1 - r (1-based, sorted) for the largest r with P(B <= r - 1) <= 2.5%,
/// B ~ Binomial(n, 1/2); the whole range when the samples are too few for 95% (under 6).
pub fn median_interval(samples: &[f64]) -> Option<(f64, f64)> {
    if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    // P(B <= j), built up term by term: P(B = 0) = 2^-n, P(B = j + 1) = P(B = j) (n - j) / (j + 1).
    let (mut term, mut below) = (0.5f64.powi(n as i32), 0.0);
    let mut r = 0;
    for j in 0..n {
        below += term;
        if below > 0.025 {
            break;
        }
        r = j + 1;
        term *= (n - j) as f64 / (j + 1) as f64;
    }
    let low = r.saturating_sub(1);
    let high = (n - r.max(1)).min(n - 1);
    Some((sorted[low], sorted[high]))
}

/// Pairs of runs of the recording figure at `vms` VMs for `--runs runs`: `2 * runs - 1` (9 by
/// default), or enough to start [`RECORD_VMS_PER_RUN`] x `runs` VMs per side (4,000 by default:
/// 40 pairs of 100 VMs) if that is more. Adjacent starts on this kind of host differ by 10-20%,
/// so a 2% figure needs many pairs (the median's error shrinks with their square root); small
/// fleets get more, they are cheap.
pub fn record_pairs(vms: u32, runs: u32) -> u32 {
    let runs = runs.max(1);
    (2 * runs - 1).max((RECORD_VMS_PER_RUN * runs).div_ceil(vms.max(1)))
}

/// Each adjacent pair's recorded time divided by its unrecorded time, in run order (pairs with
/// an unrecorded time of zero are left out).
pub fn pair_ratios(off: &[StartSample], on: &[StartSample]) -> Vec<f64> {
    off.iter()
        .zip(on)
        .filter(|(off, _)| !off.elapsed.is_zero())
        .map(|(off, on)| on.elapsed.as_secs_f64() / off.elapsed.as_secs_f64())
        .collect()
}

/// What [`vmfleet_record_and_replay`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRun {
    /// VMs of the recorded fleet.
    pub vms: u32,
    /// Events in its trace.
    pub events: u64,
    /// The trace's size in bytes.
    pub bytes: u64,
    /// `vmfleet run --record`: start to exit.
    pub live: Duration,
    /// Its peak resident memory (`VmHWM`), bytes.
    pub live_peak: u64,
    /// `vmfleet replay` of the trace, [`REPLAY_RUNS`] times: start to exit, in run order.
    pub replays: Vec<Duration>,
    /// The highest of their peak resident memories (`VmHWM`), bytes.
    pub replay_peak: u64,
}

/// Run `vmfleet run --record` of `vms` VMs x `vcpus_per_vm` vCPUs of the probe guest (once each)
/// as a child process, then `vmfleet replay` of its trace [`REPLAY_RUNS`] times: each one's time
/// from spawn to exit and peak memory, and the trace's size and events. Every replay must succeed
/// (exit status 0).
pub fn vmfleet_record_and_replay(vms: u32, vcpus_per_vm: u32) -> Result<RecordedRun, BenchError> {
    let dir = Scratch::new("trace")?;
    let fail = |what: String| wrong("vmfleet", vms, what);
    let (spec, trace) = (dir.path().join("fleet.toml"), dir.path().join("run.trace"));
    // One entry per 1000 VMs (a spec's `count` goes up to 1000).
    let mut text = String::from("name = \"bench\"\n");
    let mut left = vms;
    let mut entry = 0;
    while left > 0 {
        let count = left.min(1000);
        left -= count;
        text.push_str(&format!(
            "[[vm]]\nname = \"vm{entry}\"\ncount = {count}\nvcpus = {vcpus_per_vm}\n\
             memory_mib = 1\nprobe_repeats = 1\n"
        ));
        entry += 1;
    }
    std::fs::write(&spec, text).map_err(|e| fail(format!("writing {}: {e}", spec.display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| fail(format!("finding the vmfleet executable: {e}")))?;
    let mut run = Command::new(&exe);
    run.arg("run").arg("--record").arg(&trace).arg(&spec);
    let (live, live_peak) =
        child(&mut run, &dir.path().join("run.err"), "vmfleet run").map_err(&fail)?;
    let bytes = std::fs::metadata(&trace)
        .map_err(|e| fail(format!("the trace {}: {e}", trace.display())))?
        .len();
    let events = recorder::Trace::open(&trace)
        .map_err(|e| fail(format!("reading the trace {}: {e}", trace.display())))?
        .events
        .len() as u64;
    let (mut replays, mut replay_peak) = (Vec::with_capacity(REPLAY_RUNS), 0);
    for _ in 0..REPLAY_RUNS {
        let mut replay = Command::new(&exe);
        replay.arg("replay").arg(&trace);
        let (took, peak) = child(
            &mut replay,
            &dir.path().join("replay.err"),
            "vmfleet replay",
        )
        .map_err(&fail)?;
        replays.push(took);
        replay_peak = replay_peak.max(peak);
    }
    Ok(RecordedRun {
        vms,
        events,
        bytes,
        live,
        live_peak,
        replays,
        replay_peak,
    })
}

/// Run `command` (stdout discarded, stderr to `log`) to its exit, which must be a success: the
/// time from spawn to exit (within [`PEAK_POLL`]) and the peak of its `VmHWM`, read every
/// [`PEAK_POLL`] while it runs.
fn child(command: &mut Command, log: &Path, what: &str) -> Result<(Duration, u64), String> {
    let mut status_file = PathBuf::new();
    let mut peak = 0;
    let (_, took) = run_child(command, Stdio::null(), log, what, PEAK_POLL, |pid| {
        status_file = PathBuf::from(format!("/proc/{pid}/status"));
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(hwm) = parse_status_bytes(&text, "VmHWM:") {
                peak = peak.max(hwm);
            }
        }
    })?;
    if peak == 0 {
        return Err(format!(
            "{what}: no VmHWM read from {}",
            status_file.display()
        ));
    }
    Ok((took, peak))
}

/// Run `command` (stdout captured, stderr to `log`) to its exit, which must be a success, within
/// [`CHILD_HANG`]: what it printed on stdout (a short answer: it must fit the pipe's buffer, as
/// it is read once the child has exited).
pub(super) fn child_output(
    command: &mut Command,
    log: &Path,
    what: &str,
) -> Result<String, String> {
    use std::io::Read as _;
    let poll = Duration::from_millis(50);
    let (mut child, _) = run_child(command, Stdio::piped(), log, what, poll, |_| {})?;
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_to_string(&mut out)
            .map_err(|e| format!("reading what {what} printed: {e}"))?;
    }
    Ok(out)
}

/// Spawn `command` (stdin closed, stdout to `stdout`, stderr to `log`), call `poll` with its pid
/// every `every` until it exits, and require a success within [`CHILD_HANG`] (killed past it; a
/// failure quotes the last lines of `log`): the exited child and the time from spawn to exit.
///
/// The exit is timed by a thread blocked in `wait`, not by the polls: a child found exited at a
/// poll was timed up to `every` late (at [`PEAK_POLL`], ~1 ms on average: 1% of a 1,000-VM
/// replay, a figure that must tell 1%).
fn run_child(
    command: &mut Command,
    stdout: Stdio,
    log: &Path,
    what: &str,
    every: Duration,
    mut poll: impl FnMut(u32),
) -> Result<(std::process::Child, Duration), String> {
    let stderr =
        std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let clock = Stopwatch::start();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("starting {what}: {e}"))?;
    let pid = child.id();
    let (exited_tx, exited) = std::sync::mpsc::channel();
    let waiter = std::thread::Builder::new()
        .name("bench-wait".into())
        .spawn(move || {
            let status = child.wait();
            let took = clock.elapsed();
            let _ = exited_tx.send((status, took));
            child
        })
        .map_err(|e| format!("waiting for {what}: no thread: {e}"))?;
    let (status, took) = loop {
        poll(pid);
        match exited.recv_timeout(every) {
            Ok(exited) => break exited,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if clock.elapsed() < CHILD_HANG => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(pid) = i32::try_from(pid)
                    && let Some(pid) = rustix::process::Pid::from_raw(pid)
                {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                let _ = waiter.join();
                return Err(format!("{what} still running after {CHILD_HANG:?}"));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!("waiting for {what}: the waiting thread ended"));
            }
        }
    };
    let child = waiter
        .join()
        .map_err(|_| format!("waiting for {what}: the waiting thread panicked"))?;
    let status = status.map_err(|e| format!("waiting for {what}: {e}"))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("{what} exited with {status}: {}", tail.join(" | ")));
    }
    Ok((child, took))
}

/// The trace and replay figures of a fleet of `vms` VMs, measured if `wanted`.
pub(super) fn trace_figures(vms: u32, wanted: bool) -> TraceFigures {
    let figure = |unit, target: String| Figure {
        value: None,
        unit,
        target,
        verdict: Verdict::Skipped,
    };
    let mut figures = TraceFigures {
        vms,
        events: None,
        trace_bytes: None,
        live_ms: None,
        replay_ms: None,
        replay_runs_ms: Vec::new(),
        run_peak_memory_mib: None,
        bytes_per_vm: figure(
            "bytes",
            format!(
                "<= {TRACE_TARGET_BYTES_PER_VM} bytes per VM (1 MiB per 1,000 VMs x {VCPUS_PER_VM} vCPUs)"
            ),
        ),
        replay_events_per_second: figure(
            "events/s",
            format!(">= {REPLAY_TARGET_EVENTS_PER_SECOND:.0} events/s"),
        ),
        replay_vs_live: figure(
            "x",
            format!("<= {REPLAY_TARGET_RATIO} (replay at least 100x faster than live)"),
        ),
        replay_peak_memory: figure("MiB", format!("<= {} MiB", REPLAY_TARGET_PEAK_BYTES >> 20)),
    };
    if !wanted {
        return figures;
    }
    let run = match vmfleet_record_and_replay(vms, VCPUS_PER_VM) {
        Ok(run) => run,
        Err(e) => {
            let verdict = Verdict::from_error(&e);
            for f in figures.all_mut() {
                f.verdict = verdict.clone();
            }
            return figures;
        }
    };
    let mib = |bytes: u64| bytes as f64 / f64::from(1u32 << 20);
    let replay_s = median_duration(&run.replays).map_or(0.0, |d| d.as_secs_f64());
    figures.events = Some(run.events);
    figures.trace_bytes = Some(run.bytes);
    figures.live_ms = Some(run.live.as_secs_f64() * 1e3);
    figures.replay_ms = Some(replay_s * 1e3);
    figures.replay_runs_ms = run.replays.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    figures.run_peak_memory_mib = Some(mib(run.live_peak));
    let per_vm = run.bytes as f64 / f64::from(vms.max(1));
    figures
        .bytes_per_vm
        .set(per_vm, per_vm <= TRACE_TARGET_BYTES_PER_VM as f64);
    let rate = if replay_s > 0.0 {
        run.events as f64 / replay_s
    } else {
        f64::INFINITY
    };
    figures
        .replay_events_per_second
        .set(rate, rate >= REPLAY_TARGET_EVENTS_PER_SECOND);
    let ratio = replay_s / run.live.as_secs_f64().max(f64::MIN_POSITIVE);
    figures
        .replay_vs_live
        .set(ratio, ratio <= REPLAY_TARGET_RATIO);
    figures.replay_peak_memory.set(
        mib(run.replay_peak),
        run.replay_peak <= REPLAY_TARGET_PEAK_BYTES,
    );
    figures
}
