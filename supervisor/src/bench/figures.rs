//! What `vmfleet bench` reports: each figure's value, target and verdict, the start figure's
//! medians per side and the floor's steps, and where it ran. Data only (serialized for
//! `--json`); measuring is in `vmfleet`, `control` and `bench::run`, rendering in `table`.

use super::BenchError;
use super::measure::{StartSample, median, median_duration};
use serde::Serialize;
use std::fmt;
use std::path::Path;
use std::time::Duration;
use vcpu::hypervisor::kvm::floor::{FloorPhases, FloorRun};

/// Whether a figure's target is met.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
pub enum Verdict {
    /// The target is met.
    Met,
    /// The target is missed.
    Missed,
    /// The vmfleet side is not written yet.
    NotBuilt(String),
    /// Not measured in this run (`--floor-only`, or `--start-only` for the figures after start).
    Skipped,
    /// The measurement failed.
    Failed(String),
}

impl Verdict {
    pub(super) fn from_error(error: &BenchError) -> Verdict {
        match error {
            BenchError::NotBuilt(what) => Verdict::NotBuilt((*what).to_string()),
            other => Verdict::Failed(other.to_string()),
        }
    }

    pub(super) fn judge(met: bool) -> Verdict {
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
    /// The median of `vms_per_second`.
    pub median_vms_per_second: f64,
    /// The median time of a run, in milliseconds.
    pub median_elapsed_ms: f64,
    /// The shortest run, in milliseconds (with the longest: the spread).
    pub min_elapsed_ms: f64,
    /// The longest run, in milliseconds.
    pub max_elapsed_ms: f64,
}

impl StartSide {
    pub(super) fn from_samples(samples: &[StartSample]) -> Option<StartSide> {
        let rates: Vec<f64> = samples.iter().map(StartSample::vms_per_second).collect();
        let elapsed: Vec<Duration> = samples.iter().map(|s| s.elapsed).collect();
        let ms = |d: Option<&Duration>| d.map(|d| d.as_secs_f64() * 1e3);
        Some(StartSide {
            median_vms_per_second: median(&rates)?,
            median_elapsed_ms: median_duration(&elapsed)?.as_secs_f64() * 1e3,
            min_elapsed_ms: ms(elapsed.iter().min())?,
            max_elapsed_ms: ms(elapsed.iter().max())?,
            vms_per_second: rates,
        })
    }
}

/// The median time of each floor step, in milliseconds, over the runs of one count.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PhaseMedians {
    /// `KVM_GET_SUPPORTED_CPUID`.
    pub supported_cpuid_ms: f64,
    /// `KVM_CREATE_VM`.
    pub create_vm_ms: f64,
    /// Mapping and registering guest memory.
    pub guest_memory_ms: f64,
    /// `KVM_CREATE_VCPU` and the run area's mapping.
    pub create_vcpu_ms: f64,
    /// Each vCPU's model: built, `KVM_SET_CPUID2` and `KVM_GET_CPUID2`.
    pub cpuid_ms: f64,
    /// Spawning each vCPU's thread, ahead of the start.
    pub vcpu_threads_ms: f64,
    /// Writing the probe program and its table into guest memory.
    pub load_guest_ms: f64,
    /// The boot state: `KVM_GET_SREGS`, `KVM_SET_SREGS`, `KVM_SET_REGS`.
    pub boot_state_ms: f64,
    /// `KVM_RUN` to each vCPU's first exit.
    pub first_run_ms: f64,
    /// Closing every vCPU and VM (not part of the start).
    pub teardown_ms: f64,
}

impl PhaseMedians {
    pub(super) fn from_runs(runs: &[FloorRun]) -> PhaseMedians {
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
            vcpu_threads_ms: phase(|p| p.vcpu_threads),
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
    /// VMs per run.
    pub vms: u32,
    /// Runs per side ([`start_runs`](super::start_runs)).
    pub runs: u32,
    /// The floor's side.
    pub floor: StartSide,
    /// Where the floor's time goes (medians).
    pub floor_phases: PhaseMedians,
    /// `None` when not measured (see `verdict`).
    pub vmfleet: Option<StartSide>,
    /// Floor VMs/s divided by vmfleet VMs/s (how many times slower vmfleet is); the target is at
    /// most [`START_TARGET_RATIO`](super::START_TARGET_RATIO).
    pub ratio: Option<f64>,
    /// Met when recording costs at most [`RECORD_TARGET_RATIO`](super::RECORD_TARGET_RATIO) by
    /// its own account (`accounted_ratio`) and the pairs do not show it costing more (the low
    /// end of `ratio_interval` is within the target too).
    pub verdict: Verdict,
}

/// The recording figure for one VM count: vmfleet's start unrecorded and recorded, interleaved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordRow {
    /// VMs per run.
    pub vms: u32,
    /// Pairs of runs, one side each, not counting the warm-up pair.
    pub runs: u32,
    /// The start without recording (`None` when not measured, see `verdict`).
    pub off: Option<StartSide>,
    /// The start recorded to a trace file, as `vmfleet run --record` records.
    pub on: Option<StartSide>,
    /// What recording costs the start, measured side by side: the median over adjacent pairs of
    /// runs of the recorded time divided by the unrecorded time.
    pub ratio: Option<f64>,
    /// The 95% confidence interval of `ratio` (distribution-free, from the pairs' order
    /// statistics): how finely this host's noise lets the pairs tell.
    pub ratio_interval: Option<[f64; 2]>,
    /// Each pair's ratio, in run order (the spread of `ratio`).
    pub pair_ratios: Vec<f64>,
    /// What recording costs the start, accounted inside each recorded run: the median of its
    /// time divided by its time less the work recording did meanwhile (`recording_ms`), an
    /// upper bound as if all of that work had stood in the start's way.
    pub accounted_ratio: Option<f64>,
    /// The work recording did during each recorded start, ms, in run order: the recording calls'
    /// time on every thread plus the writer thread's CPU time.
    pub recording_ms: Vec<f64>,
    /// The recorded start's trace, in bytes per VM (of its last run).
    pub trace_bytes_per_vm: Option<f64>,
    /// Whether the ratio meets the target.
    pub verdict: Verdict,
}

impl RecordRow {
    /// A row that was not measured, for `verdict`'s reason.
    pub(super) fn failed(vms: u32, runs: u32, verdict: Verdict) -> RecordRow {
        RecordRow {
            vms,
            runs,
            off: None,
            on: None,
            ratio: None,
            ratio_interval: None,
            pair_ratios: Vec::new(),
            accounted_ratio: None,
            recording_ms: Vec::new(),
            trace_bytes_per_vm: None,
            verdict,
        }
    }
}

/// The trace and replay figures: `vmfleet run --record` of a fleet, then `vmfleet replay` of its
/// trace, each a child process.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceFigures {
    /// VMs of the recorded fleet ([`VCPUS_PER_VM`](super::VCPUS_PER_VM) vCPUs each).
    pub vms: u32,
    /// Events in its trace.
    pub events: Option<u64>,
    /// The trace's size, bytes.
    pub trace_bytes: Option<u64>,
    /// `vmfleet run --record`, spawn to exit, ms.
    pub live_ms: Option<f64>,
    /// `vmfleet replay`, spawn to exit, ms: the median of `replay_runs_ms`.
    pub replay_ms: Option<f64>,
    /// Every replay of the trace, spawn to exit, ms, in run order.
    pub replay_runs_ms: Vec<f64>,
    /// Peak resident memory of `vmfleet run --record`, MiB (no target).
    pub run_peak_memory_mib: Option<f64>,
    /// The trace's bytes per VM.
    pub bytes_per_vm: Figure,
    /// Events replayed per second of `replay_ms`.
    pub replay_events_per_second: Figure,
    /// `replay_ms` / `live_ms`.
    pub replay_vs_live: Figure,
    /// Peak resident memory of `vmfleet replay`, MiB.
    pub replay_peak_memory: Figure,
}

impl TraceFigures {
    /// Every figure with a target.
    pub fn all(&self) -> [&Figure; 4] {
        [
            &self.bytes_per_vm,
            &self.replay_events_per_second,
            &self.replay_vs_live,
            &self.replay_peak_memory,
        ]
    }

    pub(super) fn all_mut(&mut self) -> [&mut Figure; 4] {
        [
            &mut self.bytes_per_vm,
            &mut self.replay_events_per_second,
            &mut self.replay_vs_live,
            &mut self.replay_peak_memory,
        ]
    }
}

/// A figure with a single value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figure {
    /// The value measured, in `unit` (`None` when not measured).
    pub value: Option<f64>,
    /// The value's unit (`ms`, `KiB`, `VMs`).
    pub unit: &'static str,
    /// The target, in words (`<= 50 ms`).
    pub target: String,
    /// Whether the value meets the target.
    pub verdict: Verdict,
}

impl Figure {
    /// Measured: `value`, which meets the target if `met`.
    pub(super) fn set(&mut self, value: f64, met: bool) {
        self.value = Some(value);
        self.verdict = Verdict::judge(met);
    }
}

/// Where the benchmark ran.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchHost {
    /// The kernel release.
    pub kernel: String,
    /// The loaded KVM module (`kvm_intel`, `kvm_amd`, …), if any.
    pub kvm_module: Option<String>,
    /// CPUs available to the process.
    pub cpus: usize,
}

impl BenchHost {
    pub(super) fn read() -> BenchHost {
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
    /// Where it ran.
    pub host: BenchHost,
    /// vCPUs per VM in every figure.
    pub vcpus_per_vm: u32,
    /// `--runs`: the fewest runs per count and side of the start figure.
    pub runs: u32,
    /// The start figure, one row per VM count.
    pub start: Vec<StartRow>,
    /// The recording figure, one row per `--record-counts` value.
    pub record: Vec<RecordRow>,
    /// The trace and replay figures.
    pub trace: TraceFigures,
    /// VMs of the scale and supervisor-memory figures (`--scale-vms`).
    pub scale_vms: u32,
    /// VMs running at once.
    pub scale: Figure,
    /// Supervisor memory per running VM.
    pub memory_per_vm: Figure,
    /// Stop request to every vCPU thread joined.
    pub stop_latency: Figure,
    /// Running VMs the shutdown figure stopped.
    pub shutdown_vms: u32,
    /// SIGTERM to `vmfleet serve` to the process exited, its trace whole.
    pub shutdown: Figure,
    /// A `pause` answered after an abandoned `wait`.
    pub pause_after_abandoned_wait: Figure,
    /// `vmfleet baseline` of 1,000 fingerprints (no KVM).
    pub baseline: Figure,
    /// Trace growth per VM-hour of a guest running past its `record_exits` budget.
    pub trace_growth: Figure,
}

impl BenchReport {
    /// Whether any figure that was measured missed its target or failed.
    pub fn any_missed(&self) -> bool {
        let bad = |v: &Verdict| matches!(v, Verdict::Missed | Verdict::Failed(_));
        self.start.iter().any(|row| bad(&row.verdict))
            || self.record.iter().any(|row| bad(&row.verdict))
            || self.trace.all().iter().any(|f| bad(&f.verdict))
            || [
                &self.scale,
                &self.memory_per_vm,
                &self.stop_latency,
                &self.shutdown,
                &self.pause_after_abandoned_wait,
                &self.baseline,
                &self.trace_growth,
            ]
            .iter()
            .any(|f| bad(&f.verdict))
    }
}
