//! `vmfleet bench`: the figures vmfleet has to meet, measured on this host.
//!
//! A figure is met in this benchmark, not in a timed test: timed tests on shared CI machines prove
//! nothing either way. `cargo xtask bench` builds a release `vmfleet` and runs this.
//!
//! | figure | how it is measured | target |
//! |---|---|---|
//! | start throughput | VMs/s from nothing to every vCPU's first guest exit, for 1, 10, 100 and 1,000 VMs of [`VCPUS_PER_VM`] vCPUs; vmfleet and the floor ([`vcpu::hypervisor::kvm::floor`], which starts the VMs with vmfleet's parallelism: a thread per VM, a thread per vCPU) run side by side, alternating, [`DEFAULT_RUNS`] times each; medians are compared | vmfleet within [`START_TARGET_RATIO`]x of the floor |
//! | recording | vmfleet's start as above, recorded to a trace file with the real recorder (as `vmfleet run --record`) and not, in adjacent pairs (order alternating, one warm-up pair not counted, each run on a quiet host), for [`RECORD_COUNTS`] VMs; the median of the pairs' ratios, its 95% interval, their spread; and recording's own work in each recorded start (writer CPU, recording calls) | recorded within [`RECORD_TARGET_RATIO`]x of unrecorded by recording's account, the pairs' interval reaching down to it |
//! | trace size | `vmfleet run --record` of [`TRACE_VMS`] VMs (a child process): trace bytes per VM | <= [`TRACE_TARGET_BYTES_PER_VM`] (1 MiB per 1,000 VMs) |
//! | replay | `vmfleet replay` of that trace (a child process, [`REPLAY_RUNS`] times; the median time, the highest peak): events/s, its time / the live run's, its peak memory (`VmHWM`, also the live run's) | >= [`REPLAY_TARGET_EVENTS_PER_SECOND`] events/s, <= [`REPLAY_TARGET_RATIO`], <= [`REPLAY_TARGET_PEAK_BYTES`] |
//! | scale | [`SCALE_VMS`] VMs (`--scale-vms`) x [`VCPUS_PER_VM`] vCPUs running the long-running guest at once, in a fresh child process (`vmfleet bench --scale-child`) | all of them run |
//! | supervisor memory | the scale fleet's child process: its RSS per running VM ([`rss_bytes`], running - before the fleet), guest memory not counted | <= [`MEMORY_TARGET_BYTES`] |
//! | stop latency | stop request to all vCPU threads joined, for a VM whose guest spins | <= [`STOP_TARGET`] |
//! | shutdown | SIGTERM to a `vmfleet serve --record` child process with [`SHUTDOWN_VMS`] running VMs x [`VCPUS_PER_VM`] vCPUs (`--shutdown-vms`), to the process exited (reaped); its trace must then read back whole | <= [`SHUTDOWN_TARGET`] |
//! | trace growth | one VM x [`VCPUS_PER_VM`] vCPUs of the long-running guest with a small `record_exits` budget, recorded as `vmfleet run --record` records, twice, the second run [`GROWTH_WINDOW`] longer: the traces' size difference per VM-hour (module `growth`) | <= [`GROWTH_TARGET_BYTES_PER_VM_HOUR`] |
//! | pause after an abandoned wait | a `wait` for a running VM whose client went away, then `pause` of another VM: the pause's answer | <= [`ABANDONED_WAIT_PAUSE_TARGET`] |
//!
//! The vmfleet side of each figure lives in one function ([`vmfleet_start_to_first_exit`],
//! [`vmfleet_scale`], [`vmfleet_memory_per_vm`], [`vmfleet_stop_latency`], [`vmfleet_shutdown`],
//! [`vmfleet_pause_after_abandoned_wait`]) that drives the real
//! fleet runtime (`crate::fleet`) on KVM, as `vmfleet run` does without `--record`; the shutdown
//! figure runs `vmfleet serve` itself, as a child process. The baseline figure
//! ([`vmfleet_baseline`], module `baseline`) needs no KVM: it times `vmfleet baseline` of 1,000
//! fingerprints.
//!
//! The parts: `measure` (the instruments: RSS, stopwatch, medians), `vmfleet` (vmfleet's side
//! of the start, scale, memory and stop figures), `record` (recording, trace and replay
//! figures), `control` (the control-plane figures),
//! `figures` (the report's data), `table` (its rendering) and `plot` (its SVG charts, `--plot`). The floor's side and the order in
//! which both sides run are here, in [`run`].

use std::time::Duration;
use vcpu::hypervisor::kvm::floor::{Floor, FloorError, FloorRun};

pub use baseline::{BASELINE_HOSTS, BASELINE_TARGET, vmfleet_baseline};

pub mod baseline;
mod control;
mod figures;
mod growth;
mod measure;
mod plot;
mod record;
mod table;
mod vmfleet;

pub use control::{vmfleet_pause_after_abandoned_wait, vmfleet_shutdown};
pub use figures::{
    BenchHost, BenchReport, Figure, PhaseMedians, RecordRow, StartRow, StartSide, TraceFigures,
    Verdict,
};
pub use growth::{
    GROWTH_RECORD_EXITS, GROWTH_RUNS, GROWTH_SETTLE, GROWTH_TARGET_BYTES_PER_VM_HOUR,
    GROWTH_WINDOW, vmfleet_trace_growth,
};
pub use measure::{
    CpuTimes, StartSample, Stopwatch, median, median_duration, parse_status_bytes, parse_vm_rss,
    rss_bytes, rss_bytes_from,
};
pub use plot::plot;
pub use record::{
    PEAK_POLL, RECORD_COUNTS, RECORD_TARGET_RATIO, REPLAY_RUNS, REPLAY_TARGET_EVENTS_PER_SECOND,
    REPLAY_TARGET_PEAK_BYTES, REPLAY_TARGET_RATIO, RecordedRun, TRACE_TARGET_BYTES_PER_VM,
    TRACE_VMS, vmfleet_record_and_replay,
};
pub use table::table;
pub use vmfleet::{
    ScaleRun, scale_child_command, scale_run_here, vmfleet_memory_per_vm, vmfleet_scale,
    vmfleet_start_recorded, vmfleet_start_to_first_exit, vmfleet_stop_latency,
};

/// vCPUs per VM in every figure.
pub const VCPUS_PER_VM: u32 = 2;
/// The VM counts of the start-throughput figure.
pub const DEFAULT_COUNTS: [u32; 4] = [1, 10, 100, 1000];
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
pub const START_TARGET_RATIO: f64 = 1.10;
/// VMs of the scale and supervisor-memory figures (`--scale-vms`): the 1,000, all
/// running at once.
pub const SCALE_VMS: u32 = 1000;
/// Supervisor memory per running VM, guest memory not counted: 100 KiB.
pub const MEMORY_TARGET_BYTES: u64 = 100 << 10;
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
        /// `floor` or `vmfleet`.
        side: &'static str,
        /// VMs of the run.
        vms: u32,
        /// What went wrong.
        what: String,
    },
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// A figure without KVM (the baseline) could not be measured.
    #[error("{0}")]
    Failed(String),
    /// The fleet spec the benchmark writes for itself does not parse (a bug of the benchmark).
    #[error("the bench's own spec: {0}")]
    Spec(#[from] crate::spec::SpecError),
}

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

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// VM counts of the start figure.
    pub counts: Vec<u32>,
    /// Runs per count and side.
    pub runs: u32,
    /// Only the floor: skip every vmfleet measurement.
    pub floor_only: bool,
    /// Only the start figure: skip scale, memory and stop latency (they bring up the scale
    /// fleet, which takes minutes).
    pub start_only: bool,
    /// Only the control-plane figures (shutdown, pause after an abandoned wait).
    pub control_only: bool,
    /// Running VMs of the shutdown figure.
    pub shutdown_vms: u32,
    /// VM counts of the recording figure.
    pub record_counts: Vec<u32>,
    /// VMs of the fleet whose trace is measured and replayed.
    pub trace_vms: u32,
    /// Only the recording, trace and replay figures.
    pub record_only: bool,
    /// Only the scale, supervisor-memory and stop-latency figures.
    pub scale_only: bool,
    /// VMs of the scale and supervisor-memory figures.
    pub scale_vms: u32,
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
            record_counts: RECORD_COUNTS.to_vec(),
            trace_vms: TRACE_VMS,
            record_only: false,
            scale_only: false,
            scale_vms: SCALE_VMS,
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
        if self.record_only && (self.floor_only || self.start_only || self.control_only) {
            return Err(BenchError::Options(
                "--record-only cannot be combined with --floor-only, --start-only or \
                 --control-only"
                    .into(),
            ));
        }
        if self.scale_only
            && (self.floor_only || self.start_only || self.control_only || self.record_only)
        {
            return Err(BenchError::Options(
                "--scale-only cannot be combined with --floor-only, --start-only, --control-only \
                 or --record-only"
                    .into(),
            ));
        }
        if let Some(bad) = self
            .record_counts
            .iter()
            .find(|&&c| c == 0 || c > MAX_COUNT)
        {
            return Err(BenchError::Options(format!(
                "--record-counts: {bad} is not a VM count between 1 and {MAX_COUNT}"
            )));
        }
        if self.scale_vms == 0 || self.scale_vms > MAX_COUNT {
            return Err(BenchError::Options(format!(
                "--scale-vms: {} is not a VM count between 1 and {MAX_COUNT}",
                self.scale_vms
            )));
        }
        if self.trace_vms == 0 || self.trace_vms > MAX_COUNT {
            return Err(BenchError::Options(format!(
                "--trace-vms: {} is not a VM count between 1 and {MAX_COUNT}",
                self.trace_vms
            )));
        }
        Ok(())
    }
}

/// Run the benchmark on `floor`. Fails only when the floor itself cannot run (the vmfleet side
/// failing is reported per figure).
pub fn run(floor: &Floor, options: &BenchOptions) -> Result<BenchReport, BenchError> {
    options.check()?;
    let mut start = Vec::with_capacity(options.counts.len());
    if !(options.control_only || options.record_only || options.scale_only) {
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
    let only =
        options.floor_only || options.start_only || options.control_only || options.scale_only;
    let others = !(only || options.record_only);
    // The figures of the scale fleet (scale, memory) and the stop latency.
    let scale_figures = others || options.scale_only;
    let control =
        !(options.floor_only || options.start_only || options.record_only || options.scale_only);
    let recording = !only;
    let record = if recording {
        options
            .record_counts
            .iter()
            .map(|&vms| record::record_row(vms, options.runs))
            .collect()
    } else {
        Vec::new()
    };
    let trace = record::trace_figures(options.trace_vms, recording);
    let trace_growth = measure_if(
        recording,
        "KiB",
        format!(
            "<= {} KiB per VM-hour beyond the budget",
            GROWTH_TARGET_BYTES_PER_VM_HOUR / 1024
        ),
        &|| {
            let bytes = vmfleet_trace_growth(VCPUS_PER_VM)?;
            Ok((
                bytes / 1024.0,
                bytes <= GROWTH_TARGET_BYTES_PER_VM_HOUR as f64,
            ))
        },
    );
    let measure = |unit, target, how: &dyn Fn() -> Result<(f64, bool), BenchError>| {
        measure_if(others, unit, target, how)
    };
    let scale_vms = options.scale_vms;
    let scale = measure_if(
        scale_figures,
        "VMs",
        format!("{scale_vms} VMs running"),
        &|| {
            let running = vmfleet_scale(scale_vms, VCPUS_PER_VM)?;
            Ok((f64::from(running), running >= scale_vms))
        },
    );
    let memory_per_vm = measure_if(
        scale_figures,
        "KiB",
        format!("<= {} KiB", MEMORY_TARGET_BYTES / 1024),
        &|| {
            let bytes = vmfleet_memory_per_vm(scale_vms, VCPUS_PER_VM)?;
            Ok((bytes as f64 / 1024.0, bytes <= MEMORY_TARGET_BYTES))
        },
    );
    let stop_latency = measure_if(
        scale_figures,
        "ms",
        format!("<= {} ms", STOP_TARGET.as_millis()),
        &|| {
            let latency = vmfleet_stop_latency(VCPUS_PER_VM)?;
            Ok((latency.as_secs_f64() * 1e3, latency <= STOP_TARGET))
        },
    );
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
    let baseline = measure(
        "ms",
        format!(
            "< {} ms for {BASELINE_HOSTS} fingerprints",
            BASELINE_TARGET.as_millis()
        ),
        &|| {
            let took = vmfleet_baseline(BASELINE_HOSTS)?;
            Ok((took.as_secs_f64() * 1e3, took < BASELINE_TARGET))
        },
    );
    Ok(BenchReport {
        host: BenchHost::read(),
        vcpus_per_vm: VCPUS_PER_VM,
        runs: options.runs,
        start,
        record,
        trace,
        scale_vms,
        scale,
        memory_per_vm,
        stop_latency,
        shutdown_vms: options.shutdown_vms,
        shutdown,
        pause_after_abandoned_wait,
        baseline,
        trace_growth,
    })
}

/// The start figure for `vms` VMs: floor and vmfleet alternate, run by run, so that both see the
/// same state of the host.
fn start_row(floor: &Floor, vms: u32, options: &BenchOptions) -> Result<StartRow, BenchError> {
    let runs = start_runs(vms, options.runs);
    let mut floor_runs = Vec::with_capacity(runs as usize);
    let mut vmfleet_runs = Vec::with_capacity(runs as usize);
    let mut vmfleet_error = None;
    // Each run starts once the threads of the one before have ended (`measure::settle`).
    let threads = measure::thread_count();
    for _ in 0..runs {
        floor_runs.push(floor_start_to_first_exit(floor, vms, VCPUS_PER_VM)?);
        measure::settle(threads);
        if !options.floor_only && vmfleet_error.is_none() {
            match vmfleet_start_to_first_exit(vms, VCPUS_PER_VM) {
                Ok(sample) => vmfleet_runs.push(sample),
                Err(e) => vmfleet_error = Some(e),
            }
            measure::settle(threads);
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

#[cfg(test)]
mod tests;
