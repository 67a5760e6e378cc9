//! `vmfleet bench`: the figures vmfleet has to meet, measured on this host.
//!
//! A figure is met in this benchmark, not in a timed test: timed tests on shared CI machines prove
//! nothing either way. `cargo xtask bench` builds a release `vmfleet` and runs this.
//!
//! | figure | how it is measured | target |
//! |---|---|---|
//! | start throughput | VMs/s from nothing to every vCPU's first guest exit, for 1, 10 and 100 VMs of [`VCPUS_PER_VM`] vCPUs; vmfleet and the floor ([`vcpu::hypervisor::kvm::floor`]) run side by side, alternating, [`DEFAULT_RUNS`] times each; medians are compared | vmfleet within [`START_TARGET_RATIO`]x of the floor |
//! | scale | [`SCALE_VMS`] VMs x [`VCPUS_PER_VM`] vCPUs running the long-running guest at once | all of them run |
//! | supervisor memory | process RSS per running VM ([`rss_bytes`]), guest memory not counted | <= [`MEMORY_TARGET_BYTES`] |
//! | stop latency | stop request to all vCPU threads joined, for a VM whose guest spins | <= [`STOP_TARGET`] |
//! | shutdown | SIGTERM to a `vmfleet serve --record` child process with [`SHUTDOWN_VMS`] running VMs x [`VCPUS_PER_VM`] vCPUs (`--shutdown-vms`), to the process exited (reaped); its trace must then read back whole | <= [`SHUTDOWN_TARGET`] |
//! | pause after an abandoned wait | a `wait` for a running VM whose client went away, then `pause` of another VM: the pause's answer | <= [`ABANDONED_WAIT_PAUSE_TARGET`] |
//!
//! The vmfleet side of each figure lives in one function ([`vmfleet_start_to_first_exit`],
//! [`vmfleet_scale`], [`vmfleet_memory_per_vm`], [`vmfleet_stop_latency`], [`vmfleet_shutdown`],
//! [`vmfleet_pause_after_abandoned_wait`]) that drives the real
//! fleet runtime (`crate::fleet`) on KVM, as `vmfleet run` does without `--record`; the shutdown
//! figure runs `vmfleet serve` itself, as a child process.

use crate::fleet::StartMode;
use futures::StreamExt;
use serde::Serialize;
use std::fmt::{self, Write as _};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};
use vcpu::hypervisor::kvm::floor::{Floor, FloorError, FloorPhases, FloorRun};

mod control;
pub use control::{vmfleet_pause_after_abandoned_wait, vmfleet_shutdown};

/// vCPUs per VM in every figure.
pub const VCPUS_PER_VM: u32 = 2;
/// The VM counts of the start-throughput figure.
pub const DEFAULT_COUNTS: [u32; 3] = [1, 10, 100];
/// Runs per count and side; the report gives their median.
pub const DEFAULT_RUNS: u32 = 5;
/// The most VMs one start measurement may ask for (`--counts`).
pub const MAX_COUNT: u32 = 1000;
/// Each start count runs until at least this many VMs were started per side (and at least
/// `--runs` times): a 1-VM run takes about a millisecond, and five samples of that on a shared,
/// nested-virtualized host measure the host's hiccups more than either side.
pub const START_VMS_SAMPLED: u32 = 1000;

/// Runs of the start figure for `vms` VMs, given `--runs`.
pub fn start_runs(vms: u32, runs: u32) -> u32 {
    runs.max(START_VMS_SAMPLED.div_ceil(vms.max(1)))
}

/// vmfleet's start throughput must be at least the floor's divided by this.
pub const START_TARGET_RATIO: f64 = 1.25;
/// VMs of the scale figure.
pub const SCALE_VMS: u32 = 500;
/// Resumes in flight at once when the scale fleet is released.
const SCALE_RESUME_CONCURRENCY: usize = 32;
/// Supervisor memory per running VM, guest memory not counted.
pub const MEMORY_TARGET_BYTES: u64 = 1 << 20;
/// Stop request to all vCPU threads joined.
pub const STOP_TARGET: Duration = Duration::from_millis(50);
/// Running VMs of the shutdown figure (`--shutdown-vms`).
pub const SHUTDOWN_VMS: u32 = 1000;
/// SIGTERM to `vmfleet serve` with the shutdown fleet running, to the process exited with its
/// trace whole.
pub const SHUTDOWN_TARGET: Duration = Duration::from_secs(2);
/// A `pause` answered after a `wait` whose client went away.
pub const ABANDONED_WAIT_PAUSE_TARGET: Duration = Duration::from_secs(1);

/// Why a measurement could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The vmfleet side of a figure is not written yet.
    #[error("not built yet: {0}")]
    NotBuilt(&'static str),
    /// The floor could not run (no usable KVM, or a step failed).
    #[error("the floor: {0}")]
    Floor(#[from] FloorError),
    /// A run finished, but a guest did not do what it was loaded to do, so the time measured
    /// something other than a start.
    #[error("{side}, {vms} VM(s): {what}")]
    Wrong {
        side: &'static str,
        vms: u32,
        what: String,
    },
    /// Bad options.
    #[error("{0}")]
    Options(String),
}

// ---------------------------------------------------------------------------------------------
// Measurement helpers.
// ---------------------------------------------------------------------------------------------

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
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
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
    pub vms: u32,
    pub vcpus_per_vm: u32,
    pub elapsed: Duration,
}

impl StartSample {
    pub fn vms_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            f64::from(self.vms) / seconds
        } else {
            f64::INFINITY
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The two sides of each figure.
// ---------------------------------------------------------------------------------------------

/// The floor side of the start figure: one floor run, checked.
pub fn floor_start_to_first_exit(
    floor: &Floor,
    vms: u32,
    vcpus_per_vm: u32,
) -> Result<FloorRun, BenchError> {
    let workload = vcpu::guests::start::ProbeStart::default();
    let run = floor.start_to_first_exit(&workload, vms, vcpus_per_vm)?;
    if let Some(first) = run.unexpected_first_exit(&workload) {
        return Err(BenchError::Wrong {
            side: "floor",
            vms,
            what: format!(
                "{}/{}: the first exit was {}, not the probe guest's OUT of pass 0 to port {:#x}",
                first.vm,
                first.vcpu,
                first.exit,
                vcpu::guests::x86::PORT_PASS_BEGIN
            ),
        });
    }
    Ok(run)
}

// === vmfleet side ==============================================================================
//
// Each function below is vmfleet's half of one figure, measured through vmfleet's own runtime
// (fleet, VM loops, handles, lock) with VMs like the floor's (1 MiB of memory, the probe guest).

/// A fleet spec of `vms` VMs with `vcpus` vCPUs, 1 MiB of memory and the probe guest repeating
/// `repeats` times (0: forever), as the floor builds them.
fn bench_spec(vms: u32, vcpus: u32, repeats: u32) -> crate::spec::FleetSpec {
    let mut text = String::from("name = \"bench\"\n");
    for i in 0..vms {
        let _ = write!(
            text,
            "[[vm]]\nname = \"vm{i}\"\nvcpus = {vcpus}\nmemory_mib = 1\nprobe_repeats = {repeats}\n"
        );
    }
    crate::spec::parse(&text, "the bench fleet").expect("the bench writes valid specs")
}

fn kvm_backend() -> Result<std::sync::Arc<dyn vcpu::Hypervisor>, BenchError> {
    let kvm =
        vcpu::hypervisor::kvm::KvmHypervisor::open().map_err(|e| BenchError::Floor(e.into()))?;
    Ok(std::sync::Arc::new(kvm))
}

fn bench_runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::Options(format!("cannot start the async runtime: {e}")))
}

fn wrong(side: &'static str, vms: u32, what: impl fmt::Display) -> BenchError {
    BenchError::Wrong {
        side,
        vms,
        what: what.to_string(),
    }
}

/// vmfleet's side of the start figure: bring `vms` VMs of `vcpus_per_vm` vCPUs each from nothing
/// (KVM already open) to every vCPU's first guest exit, all of them alive at once, and return the
/// time that took, through [`crate::fleet::Fleet::launch_all`]. The VMs are started paused (`StartMode::Paused`): like the floor's, each vCPU
/// stops at its first exit and stays there, so neither side's clock includes guests running on
/// after it (with running starts, every VM already started spins through its probe while the
/// next ones start, and the figure measures the guests rather than the supervisor). The clock starts where [`vcpu::hypervisor::kvm::floor`] starts it (just before
/// `KVM_GET_SUPPORTED_CPUID`, which `Fleet::new` issues) and stops when `start_all` returns:
/// every VM's start is answered once each of its vCPUs has left the guest once. Teardown is not
/// timed. Not recorded, as `vmfleet run` without `--record`.
pub fn vmfleet_start_to_first_exit(vms: u32, vcpus_per_vm: u32) -> Result<StartSample, BenchError> {
    let spec = bench_spec(vms, vcpus_per_vm, 1);
    let hv = kvm_backend()?;
    let runtime = bench_runtime()?;
    runtime.block_on(async {
        let clock = Stopwatch::start();
        let fleet = crate::fleet::Fleet::new(hv, &spec.name)
            .await
            .map_err(|e| wrong("vmfleet", vms, e))?;
        let started = fleet.launch_all(spec.vms.clone(), StartMode::Paused).await;
        let elapsed = clock.elapsed();
        let failed = started
            .iter()
            .find_map(|(vm, r)| r.as_ref().err().map(|e| (vm, e)));
        fleet.shutdown().await;
        if let Some((vm, e)) = failed {
            return Err(wrong("vmfleet", vms, format!("{vm} did not start: {e}")));
        }
        Ok(StartSample {
            vms,
            vcpus_per_vm,
            elapsed,
        })
    })
}

/// What one run of the scale fleet measured (shared by the scale and memory figures, so the
/// 500-VM fleet is brought up once).
#[derive(Clone, Copy, Debug)]
struct ScaleRun {
    vms: u32,
    running: u32,
    rss_before: u64,
    rss_running: u64,
    guest_resident: u64,
}

static SCALE_RUN: std::sync::Mutex<Option<ScaleRun>> = std::sync::Mutex::new(None);

/// The resident bytes of guest memory: the `Rss` of every mapping exactly `guest_kib` long (the
/// bench's VMs have 1 MiB of guest memory each; no other mapping of vmfleet has that size).
fn guest_resident_bytes(guest_kib: u64) -> io::Result<u64> {
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

fn scale_run(vms: u32, vcpus_per_vm: u32) -> Result<ScaleRun, BenchError> {
    let mut cached = SCALE_RUN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(run) = *cached {
        if run.vms == vms {
            return Ok(run);
        }
    }
    let spec = bench_spec(vms, vcpus_per_vm, 0);
    let hv = kvm_backend()?;
    let runtime = bench_runtime()?;
    let rss_before = rss_bytes().map_err(|e| wrong("vmfleet", vms, e))?;
    let run = runtime.block_on(async {
        let fleet = crate::fleet::Fleet::new(hv, &spec.name)
            .await
            .map_err(|e| wrong("vmfleet", vms, e))?;
        fleet.create_all(spec.vms.clone()).await;
        // Bring every VM to its first exit paused, then release them all: starting them running
        // would make every later start compete with the guests already spinning.
        fleet.start_all(StartMode::Paused, |_, _| {}).await;
        let names: Vec<String> = fleet.list().into_iter().map(|vm| vm.name).collect();
        futures::stream::iter(names.iter().map(|name| fleet.resume(name)))
            .buffer_unordered(SCALE_RESUME_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let running = fleet.list().iter().filter(|v| v.state == "running").count() as u32;
        let rss_running = rss_bytes().map_err(|e| wrong("vmfleet", vms, e))?;
        let guest_resident = guest_resident_bytes(1024).map_err(|e| wrong("vmfleet", vms, e))?;
        // Control under load: pause and resume one VM while the others run, then stop all.
        if running > 0 {
            fleet
                .pause("vm0")
                .await
                .map_err(|e| wrong("vmfleet", vms, e))?;
            fleet
                .resume("vm0")
                .await
                .map_err(|e| wrong("vmfleet", vms, e))?;
        }
        let stopped = fleet.stop_all().await;
        let report = fleet.shutdown().await;
        if stopped.len() != vms as usize || report.vms.iter().any(|v| v.failed()) {
            return Err(wrong("vmfleet", vms, "not every VM stopped cleanly"));
        }
        Ok(ScaleRun {
            vms,
            running,
            rss_before,
            rss_running,
            guest_resident,
        })
    })?;
    *cached = Some(run);
    Ok(run)
}

/// vmfleet's side of the scale figure: run `vms` VMs of `vcpus_per_vm` vCPUs, each on the
/// long-running probe guest (`probe_repeats = 0`), at once; pause and resume one of them while
/// the others run; stop them all cleanly. Returns how many were running at the same moment.
pub fn vmfleet_scale(vms: u32, vcpus_per_vm: u32) -> Result<u32, BenchError> {
    Ok(scale_run(vms, vcpus_per_vm)?.running)
}

/// vmfleet's side of the memory figure: with `vms` VMs running, ([`rss_bytes`] while running -
/// [`rss_bytes`] before the first VM - the guest memory resident in the process) / `vms`.
pub fn vmfleet_memory_per_vm(vms: u32, vcpus_per_vm: u32) -> Result<u64, BenchError> {
    let run = scale_run(vms, vcpus_per_vm)?;
    let supervisor = run
        .rss_running
        .saturating_sub(run.rss_before)
        .saturating_sub(run.guest_resident);
    Ok(supervisor / u64::from(run.vms.max(1)))
}

/// vmfleet's side of the stop figure: for a VM whose guest spins (the only VM running), the time
/// from the stop request to the moment every one of its vCPU threads has been joined; the median
/// of 5 VMs stopped one after the other.
pub fn vmfleet_stop_latency(vcpus_per_vm: u32) -> Result<Duration, BenchError> {
    let spec = bench_spec(5, vcpus_per_vm, 0);
    let hv = kvm_backend()?;
    let runtime = bench_runtime()?;
    runtime.block_on(async {
        let fleet = crate::fleet::Fleet::new(hv, &spec.name)
            .await
            .map_err(|e| wrong("vmfleet", 1, e))?;
        let mut samples = Vec::new();
        for vm in spec.vms.clone() {
            let name = vm.name.clone();
            fleet.create(vm).await.map_err(|e| wrong("vmfleet", 1, e))?;
            fleet
                .start(&name)
                .await
                .map_err(|e| wrong("vmfleet", 1, e))?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let clock = Stopwatch::start();
            let status = fleet
                .stop(&name)
                .await
                .map_err(|e| wrong("vmfleet", 1, e))?;
            samples.push(clock.elapsed());
            if status.lifecycle
                != crate::fleet::lifecycle::Lifecycle::Exited(
                    crate::fleet::lifecycle::ExitReason::Stopped,
                )
            {
                return Err(wrong(
                    "vmfleet",
                    1,
                    format!("{name} ended {}", status.lifecycle),
                ));
            }
        }
        fleet.shutdown().await;
        median_duration(&samples).ok_or_else(|| wrong("vmfleet", 1, "no sample"))
    })
}

// ---------------------------------------------------------------------------------------------
// The benchmark and its report.
// ---------------------------------------------------------------------------------------------

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// VM counts of the start figure.
    pub counts: Vec<u32>,
    /// Runs per count and side.
    pub runs: u32,
    /// Only the floor: skip every vmfleet measurement.
    pub floor_only: bool,
    /// Only the start figure: skip scale, memory and stop latency (they bring up the 500-VM
    /// fleet, which takes minutes).
    pub start_only: bool,
    /// Only the control-plane figures (shutdown, pause after an abandoned wait).
    pub control_only: bool,
    /// Running VMs of the shutdown figure.
    pub shutdown_vms: u32,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            counts: DEFAULT_COUNTS.to_vec(),
            runs: DEFAULT_RUNS,
            floor_only: false,
            start_only: false,
            control_only: false,
            shutdown_vms: SHUTDOWN_VMS,
        }
    }
}

impl BenchOptions {
    fn check(&self) -> Result<(), BenchError> {
        if self.counts.is_empty() {
            return Err(BenchError::Options(
                "--counts needs at least one VM count".into(),
            ));
        }
        if let Some(bad) = self.counts.iter().find(|&&c| c == 0 || c > MAX_COUNT) {
            return Err(BenchError::Options(format!(
                "--counts: {bad} is not a VM count between 1 and {MAX_COUNT}"
            )));
        }
        if self.runs == 0 {
            return Err(BenchError::Options("--runs must be at least 1".into()));
        }
        if self.shutdown_vms == 0 || self.shutdown_vms > MAX_COUNT {
            return Err(BenchError::Options(format!(
                "--shutdown-vms: {} is not a VM count between 1 and {MAX_COUNT}",
                self.shutdown_vms
            )));
        }
        if self.control_only && (self.floor_only || self.start_only) {
            return Err(BenchError::Options(
                "--control-only cannot be combined with --floor-only or --start-only".into(),
            ));
        }
        Ok(())
    }
}

/// Whether a figure's target is met.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
pub enum Verdict {
    Met,
    Missed,
    /// The vmfleet side is not written yet.
    NotBuilt(String),
    /// Not measured in this run (`--floor-only`, or `--start-only` for the figures after start).
    Skipped,
    /// The measurement failed.
    Failed(String),
}

impl Verdict {
    fn from_error(error: &BenchError) -> Verdict {
        match error {
            BenchError::NotBuilt(what) => Verdict::NotBuilt((*what).to_string()),
            other => Verdict::Failed(other.to_string()),
        }
    }

    fn judge(met: bool) -> Verdict {
        if met { Verdict::Met } else { Verdict::Missed }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Met => f.write_str("met"),
            Verdict::Missed => f.write_str("MISSED"),
            Verdict::NotBuilt(_) => f.write_str("not built yet"),
            Verdict::Skipped => f.write_str("skipped (not asked for)"),
            Verdict::Failed(e) => write!(f, "FAILED: {e}"),
        }
    }
}

/// The medians of one side of the start figure for one VM count.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StartSide {
    /// VMs/s of every run, in run order.
    pub vms_per_second: Vec<f64>,
    pub median_vms_per_second: f64,
    pub median_elapsed_ms: f64,
}

impl StartSide {
    fn from_samples(samples: &[StartSample]) -> Option<StartSide> {
        let rates: Vec<f64> = samples.iter().map(StartSample::vms_per_second).collect();
        let elapsed: Vec<Duration> = samples.iter().map(|s| s.elapsed).collect();
        Some(StartSide {
            median_vms_per_second: median(&rates)?,
            median_elapsed_ms: median_duration(&elapsed)?.as_secs_f64() * 1e3,
            vms_per_second: rates,
        })
    }
}

/// The median time of each floor step, in milliseconds, over the runs of one count.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PhaseMedians {
    pub supported_cpuid_ms: f64,
    pub create_vm_ms: f64,
    pub guest_memory_ms: f64,
    pub create_vcpu_ms: f64,
    pub cpuid_ms: f64,
    pub load_guest_ms: f64,
    pub boot_state_ms: f64,
    pub first_run_ms: f64,
    pub teardown_ms: f64,
}

impl PhaseMedians {
    fn from_runs(runs: &[FloorRun]) -> PhaseMedians {
        let ms = |pick: &dyn Fn(&FloorRun) -> Duration| {
            let samples: Vec<Duration> = runs.iter().map(pick).collect();
            median_duration(&samples).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let phase = |pick: fn(&FloorPhases) -> Duration| ms(&|run| pick(&run.phases));
        PhaseMedians {
            supported_cpuid_ms: phase(|p| p.supported_cpuid),
            create_vm_ms: phase(|p| p.create_vm),
            guest_memory_ms: phase(|p| p.guest_memory),
            create_vcpu_ms: phase(|p| p.create_vcpu),
            cpuid_ms: phase(|p| p.cpuid),
            load_guest_ms: phase(|p| p.load_guest),
            boot_state_ms: phase(|p| p.boot_state),
            first_run_ms: phase(|p| p.first_run),
            teardown_ms: ms(&|run| run.teardown),
        }
    }
}

/// The start figure for one VM count.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StartRow {
    pub vms: u32,
    /// Runs per side ([`start_runs`]).
    pub runs: u32,
    pub floor: StartSide,
    /// Where the floor's time goes (medians).
    pub floor_phases: PhaseMedians,
    /// `None` when not measured (see `verdict`).
    pub vmfleet: Option<StartSide>,
    /// Floor VMs/s divided by vmfleet VMs/s (how many times slower vmfleet is); the target is at
    /// most [`START_TARGET_RATIO`].
    pub ratio: Option<f64>,
    pub verdict: Verdict,
}

/// A figure with a single value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figure {
    pub value: Option<f64>,
    pub unit: &'static str,
    pub target: String,
    pub verdict: Verdict,
}

/// Where the benchmark ran.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchHost {
    pub kernel: String,
    pub kvm_module: Option<String>,
    pub cpus: usize,
}

impl BenchHost {
    fn read() -> BenchHost {
        BenchHost {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            kvm_module: crate::host::kvm_module(Path::new("/sys/module")),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        }
    }
}

/// Everything `vmfleet bench` measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    pub host: BenchHost,
    pub vcpus_per_vm: u32,
    pub runs: u32,
    pub start: Vec<StartRow>,
    pub scale: Figure,
    pub memory_per_vm: Figure,
    pub stop_latency: Figure,
    /// Running VMs the shutdown figure stopped.
    pub shutdown_vms: u32,
    pub shutdown: Figure,
    pub pause_after_abandoned_wait: Figure,
}

impl BenchReport {
    /// Whether any figure that was measured missed its target or failed.
    pub fn any_missed(&self) -> bool {
        let bad = |v: &Verdict| matches!(v, Verdict::Missed | Verdict::Failed(_));
        self.start.iter().any(|row| bad(&row.verdict))
            || [
                &self.scale,
                &self.memory_per_vm,
                &self.stop_latency,
                &self.shutdown,
                &self.pause_after_abandoned_wait,
            ]
            .iter()
            .any(|f| bad(&f.verdict))
    }
}

/// Run the benchmark on `floor`. Fails only when the floor itself cannot run (the vmfleet side
/// failing is reported per figure).
pub fn run(floor: &Floor, options: &BenchOptions) -> Result<BenchReport, BenchError> {
    options.check()?;
    let mut start = Vec::with_capacity(options.counts.len());
    if !options.control_only {
        for &vms in &options.counts {
            start.push(start_row(floor, vms, options)?);
        }
    }
    // Which figures this run measures: `control` for the control-plane ones, else the others.
    let measure_if = |wanted: bool,
                      unit,
                      target: String,
                      measure: &dyn Fn() -> Result<(f64, bool), BenchError>| {
        let (value, verdict) = if !wanted {
            (None, Verdict::Skipped)
        } else {
            match measure() {
                Ok((value, met)) => (Some(value), Verdict::judge(met)),
                Err(e) => (None, Verdict::from_error(&e)),
            }
        };
        Figure {
            value,
            unit,
            target,
            verdict,
        }
    };
    let others = !(options.floor_only || options.start_only || options.control_only);
    let control = !(options.floor_only || options.start_only);
    let measure = |unit, target, how: &dyn Fn() -> Result<(f64, bool), BenchError>| {
        measure_if(others, unit, target, how)
    };
    let scale = measure("VMs", format!("{SCALE_VMS} VMs running"), &|| {
        let running = vmfleet_scale(SCALE_VMS, VCPUS_PER_VM)?;
        Ok((f64::from(running), running >= SCALE_VMS))
    });
    let memory_per_vm = measure(
        "KiB",
        format!("<= {} KiB", MEMORY_TARGET_BYTES / 1024),
        &|| {
            let bytes = vmfleet_memory_per_vm(SCALE_VMS, VCPUS_PER_VM)?;
            Ok((bytes as f64 / 1024.0, bytes <= MEMORY_TARGET_BYTES))
        },
    );
    let stop_latency = measure("ms", format!("<= {} ms", STOP_TARGET.as_millis()), &|| {
        let latency = vmfleet_stop_latency(VCPUS_PER_VM)?;
        Ok((latency.as_secs_f64() * 1e3, latency <= STOP_TARGET))
    });
    let shutdown = measure_if(
        control,
        "ms",
        format!("<= {} ms", SHUTDOWN_TARGET.as_millis()),
        &|| {
            let took = vmfleet_shutdown(options.shutdown_vms, VCPUS_PER_VM)?;
            Ok((took.as_secs_f64() * 1e3, took <= SHUTDOWN_TARGET))
        },
    );
    let pause_after_abandoned_wait = measure_if(
        control,
        "ms",
        format!("<= {} ms", ABANDONED_WAIT_PAUSE_TARGET.as_millis()),
        &|| {
            let took = vmfleet_pause_after_abandoned_wait(VCPUS_PER_VM)?;
            Ok((
                took.as_secs_f64() * 1e3,
                took <= ABANDONED_WAIT_PAUSE_TARGET,
            ))
        },
    );
    Ok(BenchReport {
        host: BenchHost::read(),
        vcpus_per_vm: VCPUS_PER_VM,
        runs: options.runs,
        start,
        scale,
        memory_per_vm,
        stop_latency,
        shutdown_vms: options.shutdown_vms,
        shutdown,
        pause_after_abandoned_wait,
    })
}

/// The start figure for `vms` VMs: floor and vmfleet alternate, run by run, so that both see the
/// same state of the host.
fn start_row(floor: &Floor, vms: u32, options: &BenchOptions) -> Result<StartRow, BenchError> {
    let runs = start_runs(vms, options.runs);
    let mut floor_runs = Vec::with_capacity(runs as usize);
    let mut vmfleet_runs = Vec::with_capacity(runs as usize);
    let mut vmfleet_error = None;
    for _ in 0..runs {
        floor_runs.push(floor_start_to_first_exit(floor, vms, VCPUS_PER_VM)?);
        if !options.floor_only && vmfleet_error.is_none() {
            match vmfleet_start_to_first_exit(vms, VCPUS_PER_VM) {
                Ok(sample) => vmfleet_runs.push(sample),
                Err(e) => vmfleet_error = Some(e),
            }
        }
    }
    let floor_samples: Vec<StartSample> = floor_runs
        .iter()
        .map(|run| StartSample {
            vms: run.vms,
            vcpus_per_vm: run.vcpus_per_vm,
            elapsed: run.elapsed,
        })
        .collect();
    let floor_side = StartSide::from_samples(&floor_samples).ok_or_else(|| BenchError::Wrong {
        side: "floor",
        vms,
        what: "no usable runs".into(),
    })?;
    let vmfleet = match &vmfleet_error {
        None => StartSide::from_samples(&vmfleet_runs),
        Some(_) => None,
    };
    let ratio = vmfleet
        .as_ref()
        .map(|side| floor_side.median_vms_per_second / side.median_vms_per_second);
    let verdict = match (&vmfleet_error, ratio) {
        _ if options.floor_only => Verdict::Skipped,
        (Some(e), _) => Verdict::from_error(e),
        (None, Some(ratio)) => Verdict::judge(ratio <= START_TARGET_RATIO),
        (None, None) => Verdict::Failed("vmfleet gave no usable runs".into()),
    };
    Ok(StartRow {
        vms,
        runs,
        floor_phases: PhaseMedians::from_runs(&floor_runs),
        floor: floor_side,
        vmfleet,
        ratio,
        verdict,
    })
}

/// The report as a table for a terminal.
pub fn table(report: &BenchReport) -> String {
    let mut out = String::new();
    let host = &report.host;
    let _ = writeln!(
        out,
        "vmfleet bench on {} ({} CPUs, kernel {}): {} vCPUs per VM, medians of at least {} run(s)",
        host.kvm_module.as_deref().unwrap_or("no KVM module"),
        host.cpus,
        host.kernel,
        report.vcpus_per_vm,
        report.runs
    );
    let _ = writeln!(
        out,
        "\nstart: nothing -> first guest exit of every vCPU (target: vmfleet within {START_TARGET_RATIO}x of the floor)"
    );
    let _ = writeln!(
        out,
        "  {:>5}  {:>5}  {:>12}  {:>11}  {:>13}  {:>6}  verdict",
        "VMs", "runs", "floor VMs/s", "floor ms", "vmfleet VMs/s", "ratio"
    );
    for row in &report.start {
        let vmfleet = row.vmfleet.as_ref().map_or_else(
            || "-".to_string(),
            |s| format!("{:.1}", s.median_vms_per_second),
        );
        let ratio = row
            .ratio
            .map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"));
        let _ = writeln!(
            out,
            "  {:>5}  {:>5}  {:>12.1}  {:>11.2}  {:>13}  {:>6}  {}",
            row.vms,
            row.runs,
            row.floor.median_vms_per_second,
            row.floor.median_elapsed_ms,
            vmfleet,
            ratio,
            row.verdict
        );
    }
    let _ = writeln!(
        out,
        "\nfloor, median ms per step (summed over the VMs of a run):"
    );
    let _ = writeln!(
        out,
        "  {:>5}  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {:>9}",
        "VMs",
        "sup.cpuid",
        "create_vm",
        "memory",
        "create_vc",
        "cpuid",
        "load",
        "boot",
        "first_run",
        "teardown"
    );
    for row in &report.start {
        let p = &row.floor_phases;
        let _ = writeln!(
            out,
            "  {:>5}  {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {:>9.3}",
            row.vms,
            p.supported_cpuid_ms,
            p.create_vm_ms,
            p.guest_memory_ms,
            p.create_vcpu_ms,
            p.cpuid_ms,
            p.load_guest_ms,
            p.boot_state_ms,
            p.first_run_ms,
            p.teardown_ms
        );
    }
    let _ = writeln!(out);
    for (name, figure) in [
        (
            format!("scale ({SCALE_VMS} VMs x {} vCPUs)", report.vcpus_per_vm),
            &report.scale,
        ),
        (
            "supervisor memory per running VM".to_string(),
            &report.memory_per_vm,
        ),
        (
            "stop latency (spinning guest)".to_string(),
            &report.stop_latency,
        ),
        (
            format!(
                "SIGTERM to serve with {} running VMs x {} vCPUs -> process exited, trace whole",
                report.shutdown_vms, report.vcpus_per_vm
            ),
            &report.shutdown,
        ),
        (
            "pause answered after an abandoned wait".to_string(),
            &report.pause_after_abandoned_wait,
        ),
    ] {
        let value = figure
            .value
            .map_or_else(|| "-".to_string(), |v| format!("{v:.1} {}", figure.unit));
        let _ = writeln!(
            out,
            "{name}: {value} (target {}): {}",
            figure.target, figure.verdict
        );
    }
    out
}

#[cfg(test)]
mod tests;
