//! vmfleet's side of the start, scale, memory and stop figures, each measured through vmfleet's own
//! runtime (fleet, VM loops, handles, lock) on KVM, as `vmfleet run` does without `--record`, with
//! VMs like the floor's (1 MiB of memory, the probe guest). The control-plane figures are in
//! `control`; the floor's side is `vcpu::hypervisor::kvm::floor`, called from `bench::run`.

use super::BenchError;
use super::measure::{StartSample, Stopwatch, guest_resident_bytes, median_duration, rss_bytes};
use crate::fleet::StartMode;
use futures::StreamExt;
use std::fmt::{self, Write as _};
use std::time::Duration;

/// Resumes in flight at once when the scale fleet is released: all of them (the most a fleet of
/// the figure holds). Once VMs run, each resume waits for its VM loop and vCPU threads to get a CPU
/// among every guest already spinning, so resuming in small batches made the release grow with the
/// square of the fleet: with 32 at a time, 1,000 VMs x 2 vCPUs on 2 CPUs were not released after
/// two minutes; all at once, the whole scale figure took 29 s.
const SCALE_RESUME_CONCURRENCY: usize = super::MAX_COUNT as usize;

/// A fleet spec of `vms` VMs with `vcpus` vCPUs, 1 MiB of memory and the probe guest repeating
/// `repeats` times (0: forever), as the floor builds them.
pub(super) fn bench_spec(
    vms: u32,
    vcpus: u32,
    repeats: u32,
) -> Result<crate::spec::FleetSpec, BenchError> {
    Ok(crate::spec::parse(
        &bench_spec_text(vms, vcpus, repeats),
        "the bench fleet",
    )?)
}

/// The text of [`bench_spec`]'s spec.
pub(super) fn bench_spec_text(vms: u32, vcpus: u32, repeats: u32) -> String {
    let mut text = String::from("name = \"bench\"\n");
    for i in 0..vms {
        let _ = write!(
            text,
            "[[vm]]\nname = \"vm{i}\"\nvcpus = {vcpus}\nmemory_mib = 1\nprobe_repeats = {repeats}\n"
        );
    }
    text
}

/// KVM, opened for one figure (an error of the floor's kind: no usable KVM).
pub(super) fn kvm_backend() -> Result<std::sync::Arc<dyn vcpu::Hypervisor>, BenchError> {
    let kvm =
        vcpu::hypervisor::kvm::KvmHypervisor::open().map_err(|e| BenchError::Floor(e.into()))?;
    Ok(std::sync::Arc::new(kvm))
}

/// A multi-threaded tokio runtime, as `vmfleet run` uses.
pub(super) fn bench_runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::Options(format!("cannot start the async runtime: {e}")))
}

/// A measurement that ran but did not measure what it should have.
pub(super) fn wrong(side: &'static str, vms: u32, what: impl fmt::Display) -> BenchError {
    BenchError::Wrong {
        side,
        vms,
        what: what.to_string(),
    }
}

/// vmfleet's side of the start figure: bring `vms` VMs of `vcpus_per_vm` vCPUs each from nothing
/// (KVM already open) to every vCPU's first guest exit, all of them alive at once, and return the
/// time that took, through [`crate::fleet::Fleet::launch_all`]. The VMs are started paused
/// (`StartMode::Paused`): like the floor's, each vCPU stops at its first exit and stays there, so
/// neither side's clock includes guests running on after it (with running starts, every VM already
/// started spins through its probe while the next ones start, and the figure measures the guests
/// rather than the supervisor). The clock starts where [`vcpu::hypervisor::kvm::floor`] starts it
/// (just before `KVM_GET_SUPPORTED_CPUID`, which `Fleet::new` issues) and stops when `start_all`
/// returns: every VM's start is answered once each of its vCPUs has left the guest once. Teardown
/// is not timed. Not recorded, as `vmfleet run` without `--record`.
pub fn vmfleet_start_to_first_exit(vms: u32, vcpus_per_vm: u32) -> Result<StartSample, BenchError> {
    Ok(vmfleet_start(vms, vcpus_per_vm, None)?.sample)
}

/// What [`vmfleet_start_recorded`] measured.
#[derive(Clone, Copy, Debug)]
pub struct RecordedStart {
    /// The start, timed as an unrecorded one is.
    pub sample: StartSample,
    /// The trace, once closed.
    pub summary: recorder::WriteSummary,
    /// The work recording did while the clock ran: the writer thread's CPU time
    /// ([`recorder::TraceWriter::writer_cpu_time`]) plus the recording calls' (see
    /// [`recording_calls_time`]). Had all of it stood in the start's way, the start unrecorded
    /// would have taken this much less.
    pub recording_work: Duration,
}

/// [`vmfleet_start_to_first_exit`], recorded to the trace `trace` as `vmfleet run --record` records
/// (the same recorder and trace writer, the backend's calls and the control requests; the file is
/// replaced), with the trace's size and event count once it is closed. Creating the trace
/// (header, host fingerprint) happens before the clock starts, as opening KVM does; closing it
/// after the clock stops, as the teardown does.
pub fn vmfleet_start_recorded(
    vms: u32,
    vcpus_per_vm: u32,
    trace: &std::path::Path,
) -> Result<RecordedStart, BenchError> {
    let started = vmfleet_start(vms, vcpus_per_vm, Some(trace))?;
    let (summary, recording_work) = started
        .summary
        .zip(started.recording_work)
        .ok_or_else(|| wrong("vmfleet", vms, "the trace was not written"))?;
    Ok(RecordedStart {
        sample: started.sample,
        summary,
        recording_work,
    })
}

/// What [`vmfleet_start`] measured: the start, and when recorded, the trace and the recording's
/// work (see [`RecordedStart`]).
struct Started {
    sample: StartSample,
    summary: Option<recorder::WriteSummary>,
    recording_work: Option<Duration>,
}

/// The start of [`vmfleet_start_to_first_exit`], recorded to `record` if given.
fn vmfleet_start(
    vms: u32,
    vcpus_per_vm: u32,
    record: Option<&std::path::Path>,
) -> Result<Started, BenchError> {
    let text = bench_spec_text(vms, vcpus_per_vm, 1);
    let spec = crate::spec::parse(&text, "the bench fleet")?;
    let kvm =
        vcpu::hypervisor::kvm::KvmHypervisor::open().map_err(|e| BenchError::Floor(e.into()))?;
    let (hv, recorder, writer): (std::sync::Arc<dyn vcpu::Hypervisor>, _, _) = match record {
        None => (std::sync::Arc::new(kvm), None, None),
        Some(path) => {
            let (recorder, writer) = bench_trace(&kvm, &text, "the bench fleet", path, vms)?;
            let hv = recorder::RecordingHypervisor::new(Box::new(kvm), recorder.clone());
            (std::sync::Arc::new(hv), Some(recorder), Some(writer))
        }
    };
    let runtime = bench_runtime()?;
    // What the writer does while the clock runs is accounted (see `RecordedStart`).
    let writer_cpu = || {
        writer
            .as_ref()
            .and_then(recorder::TraceWriter::writer_cpu_time)
    };
    let writer_cpu_before = writer_cpu();
    let mut writer_work = None;
    let sample = runtime.block_on(async {
        let clock = Stopwatch::start();
        let mut fleet = crate::fleet::Fleet::new(hv, &spec.name)
            .await
            .map_err(|e| wrong("vmfleet", vms, e))?;
        if let Some(recorder) = &recorder {
            fleet = fleet.with_control_log(recorder.clone());
        }
        let started = fleet.launch_all(spec.vms.clone(), StartMode::Paused).await;
        let elapsed = clock.elapsed();
        if recorder.is_some() {
            // A writer whose time cannot be read counts as having spent the whole start.
            writer_work = Some(match (writer_cpu_before, writer_cpu()) {
                (Some(before), Some(after)) => after.saturating_sub(before),
                _ => elapsed,
            });
        }
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
    });
    let summary = match writer {
        Some(writer) => {
            let path = writer.path().to_path_buf();
            let summary = writer.finish().map_err(|e| {
                wrong(
                    "vmfleet",
                    vms,
                    format!("closing the trace {}: {e}", path.display()),
                )
            })?;
            Some(summary)
        }
        None => None,
    };
    let sample = sample?;
    let recording_work = match (writer_work, record) {
        (Some(writer), Some(path)) => {
            let calls = recording_calls_time(path).map_err(|e| wrong("vmfleet", vms, e))?;
            Some(writer + calls)
        }
        _ => None,
    };
    Ok(Started {
        sample,
        summary,
        recording_work,
    })
}

/// The recording calls' share of a recorded start's work: the time this thread takes to record
/// the events of the trace at `path` again, in order, as the recording objects did (each call
/// and outcome copied, the event stamped and handed to a writer), into a scratch trace beside
/// it. Measured apart from the start, because there hundreds of threads preempt one another
/// inside their calls, and a clock around each call would count that too.
pub fn recording_calls_time(path: &std::path::Path) -> Result<Duration, String> {
    let trace = recorder::Trace::open(path)
        .map_err(|e| format!("reading the trace {}: {e}", path.display()))?;
    let again = path.with_extension("again");
    let _ = std::fs::remove_file(&again);
    let (recorder, writer) = recorder::TraceWriter::create(&again, &trace.header)
        .map_err(|e| format!("creating {}: {e}", again.display()))?;
    let clock = Stopwatch::start();
    for event in &trace.events {
        let (call, outcome) = (event.call.clone(), event.outcome.clone());
        recorder.record(event.stream, call, outcome, event.detail.clone());
    }
    let took = clock.elapsed();
    writer
        .finish()
        .map_err(|e| format!("closing {}: {e}", again.display()))?;
    let _ = std::fs::remove_file(&again);
    Ok(took)
}

/// What one run of the scale fleet measured (shared by the scale and memory figures, so the
/// scale fleet is brought up once). The line a `vmfleet bench --scale-child` prints.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct ScaleRun {
    /// VMs in the fleet.
    pub vms: u32,
    /// VMs running at the same moment.
    pub running: u32,
    /// The process's RSS before the fleet was created.
    pub rss_before: u64,
    /// Its RSS with every VM running.
    pub rss_running: u64,
    /// Of `rss_running`, the guest memory resident in the process.
    pub guest_resident: u64,
}

static SCALE_RUN: std::sync::Mutex<Option<ScaleRun>> = std::sync::Mutex::new(None);

/// Bring the scale fleet up once (cached for the figures that share it), measure, stop it: in a
/// fresh `vmfleet bench --scale-child` process, so the memory figure counts what the running VMs
/// cost the supervisor, not what the figures measured before it left in the bench's own heap
/// (grown by the start figures, the same fleet read ~57 KiB/VM after them and ~118 KiB/VM alone).
fn scale_run(vms: u32, vcpus_per_vm: u32) -> Result<ScaleRun, BenchError> {
    let mut cached = SCALE_RUN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(run) = *cached {
        if run.vms == vms {
            return Ok(run);
        }
    }
    let run = scale_child(vms, vcpus_per_vm)?;
    *cached = Some(run);
    Ok(run)
}

/// Run `vmfleet bench --scale-child` for `vms` VMs of `vcpus_per_vm` vCPUs and read what it
/// measured (its one line of JSON on stdout).
fn scale_child(vms: u32, vcpus_per_vm: u32) -> Result<ScaleRun, BenchError> {
    let fail = |what: String| wrong("vmfleet", vms, what);
    if vcpus_per_vm != super::VCPUS_PER_VM {
        return Err(fail(format!(
            "the scale child runs {} vCPUs per VM, not {vcpus_per_vm}",
            super::VCPUS_PER_VM
        )));
    }
    let dir = super::record::Scratch::new("scale")?;
    let exe = std::env::current_exe()
        .map_err(|e| fail(format!("finding the vmfleet executable: {e}")))?;
    let mut command = std::process::Command::new(&exe);
    command
        .args(["bench", "--scale-child", "--scale-vms"])
        .arg(vms.to_string());
    let out = super::record::child_output(
        &mut command,
        &dir.path().join("scale.err"),
        "vmfleet bench --scale-child",
    )
    .map_err(&fail)?;
    serde_json::from_str(out.trim()).map_err(|e| {
        fail(format!(
            "vmfleet bench --scale-child printed {:?}, not a scale run: {e}",
            out.trim()
        ))
    })
}

/// `vmfleet bench --scale-child --scale-vms VMS`: [`scale_run_here`], printed as one JSON
/// object on stdout (what [`scale_child`] reads). A failure exits with `target_missed`.
pub fn scale_child_command(vms: u32) -> anyhow::Result<crate::exit::Status> {
    use crate::exit::StatusExt as _;
    use anyhow::Context as _;
    let run = scale_run_here(vms)
        .context("vmfleet bench --scale-child")
        .or_status(crate::exit::Status::TargetMissed)?;
    crate::common::emit_json(&run)?;
    Ok(crate::exit::Status::Success)
}

/// The fleet of `vmfleet bench --scale-child`: bring `vms` VMs of [`super::VCPUS_PER_VM`] vCPUs
/// up in this process (fresh: nothing else measured in it), measure, stop them.
pub fn scale_run_here(vms: u32) -> Result<ScaleRun, BenchError> {
    let vcpus_per_vm = super::VCPUS_PER_VM;
    let spec = bench_spec(vms, vcpus_per_vm, 0)?;
    let hv = kvm_backend()?;
    let runtime = bench_runtime()?;
    let rss_before = rss_bytes().map_err(|e| wrong("vmfleet", vms, e))?;
    runtime.block_on(async {
        let fleet = crate::fleet::Fleet::new(hv, &spec.name)
            .await
            .map_err(|e| wrong("vmfleet", vms, e))?;
        fleet.create_all(spec.vms.clone()).await;
        // Bring every VM to its first exit paused, then release them all: starting them running
        // would make every later start compete with the guests already spinning.
        fleet.start_all(StartMode::Paused, |_, _| {}).await;
        let names: Vec<String> = fleet.list().into_iter().map(|vm| vm.name).collect();
        let resumed = futures::stream::iter(names.iter().map(|name| fleet.resume(name)))
            .buffer_unordered(SCALE_RESUME_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        // A VM that did not resume is not counted as running; say why, for whoever reads the
        // child's stderr (the figure itself is the count).
        let failed: Vec<String> = resumed
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        if let Some(first) = failed.first() {
            tracing::warn!("{} VM(s) did not resume; the first: {first}", failed.len());
        }
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
    })
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
    let spec = bench_spec(5, vcpus_per_vm, 0)?;
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

/// The trace `vmfleet run --record` would write for the bench fleet `text` (named `source`) on
/// `kvm`, at `path` (replaced if it exists): its recorder and writer. A failure is `vms` VMs'
/// figure gone wrong.
pub(super) fn bench_trace(
    kvm: &vcpu::hypervisor::kvm::KvmHypervisor,
    text: &str,
    source: &str,
    path: &std::path::Path,
    vms: u32,
) -> Result<(recorder::Recorder, recorder::TraceWriter), BenchError> {
    let header = recorder::TraceHeader::new(
        env!("CARGO_PKG_VERSION"),
        vcpu::Hypervisor::arch(kvm),
        crate::host::fingerprint(kvm),
        recorder::JobInputs {
            command: crate::common::COMMAND_RUN.into(),
            spec_source: source.into(),
            spec_text: text.into(),
        },
    );
    let options = recorder::TraceOptions {
        keep_events: false,
        replace: true,
    };
    recorder::TraceWriter::create_with(path, &header, options).map_err(|e| {
        wrong(
            "vmfleet",
            vms,
            format!("creating the trace {}: {e}", path.display()),
        )
    })
}
