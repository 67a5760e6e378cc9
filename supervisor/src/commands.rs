//! The commands behind the CLI. Each returns its [`Status`] from the one exit-status table
//! ([`crate::exit`]); errors carry theirs (bad input, no KVM, ...) and `main` reports them.

use crate::bench::{self, BenchOptions};
use crate::cli::{BenchArgs, HostArgs, ReplayArgs, RunArgs};
use crate::common::{
    COMMAND_RUN, COMMAND_SERVE, DEFAULT_FLEET_NAME, RunInputs, Versioned, close_trace, emit,
    emit_json, run_inputs, runtime, say_where_the_trace_goes,
};
use crate::exit::{Failure, Status, StatusExt as _};
use crate::fingerprint::Fingerprint;
use crate::fleet::{ControlValue, Fleet, StartMode};
use crate::host;
use crate::job::{JobProgress, Quiet, run_on};
use crate::report::{self, JobReport};
use crate::spec::{self, FleetSpec};
use anyhow::{Context, Result, bail};
use protocol::Request;
use recorder::render::TranscriptFold;
use recorder::{
    Event, JobInputs, Output, Recorder, RecordingHypervisor, ReplayHypervisor, Trace, TraceError,
    TraceHeader, TraceOptions, TraceStream, TraceWriter,
};
use serde::Serialize;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use vcpu::hypervisor::cpuid::CpuidTable;
use vcpu::hypervisor::kvm::KvmHypervisor;
use vcpu::model::x86::catalog::{self as features, Feature};
use vcpu::{Hypervisor, Reply, SystemCall};

/// `vmfleet run`: bring the fleet up, let it run until every guest is done (or SIGINT / SIGTERM
/// stops it), report.
pub fn run(args: &RunArgs) -> Result<Status> {
    if let Some(fingerprint) = &args.model {
        return crate::model_cmd::run::run(fingerprint, args);
    }
    let RunInputs {
        source,
        text,
        spec,
        transcript,
    } = run_inputs(args)?;
    if let Some(record) = &args.record {
        Output::check(record, args.force)
            .with_context(|| format!("cannot record to {}", record.display()))?;
        if args.transcript.as_ref() == Some(record) {
            return Err(Failure::msg(
                Status::Usage,
                format!(
                    "--record and --transcript both name {}; give them different files",
                    record.display()
                ),
            )
            .into());
        }
    }
    // A fleet for another architecture is refused before any file is touched, too.
    let arch =
        vcpu::hypervisor::kvm::host_arch().context("this host architecture has no KVM backend")?;
    crate::fleet::check_arch(spec.arch, arch)?;
    let kvm = KvmHypervisor::open().or_status(Status::NoKvm)?;
    let header = TraceHeader::new(
        env!("CARGO_PKG_VERSION"),
        arch,
        host::fingerprint(&kvm),
        JobInputs {
            command: COMMAND_RUN.into(),
            spec_source: source,
            spec_text: text,
        },
    );

    // Fold events into the transcript only when one is asked for, and keep none of them: a
    // long-running fleet records a lot.
    let keep = args.transcript.is_some();
    let (recorder, writer) = match &args.record {
        Some(path) => {
            let options = TraceOptions {
                keep_events: false,
                replace: args.force,
            };
            let (recorder, writer) = TraceWriter::create_with(path, &header, options)
                .with_context(|| format!("creating trace {}", path.display()))?;
            if keep {
                recorder.fold_transcript();
            }
            say_where_the_trace_goes(&writer);
            (Some(recorder), Some(writer))
        }
        None if keep => (Some(Recorder::folding()), None),
        None => (None, None),
    };
    let hv: Arc<dyn Hypervisor> = match &recorder {
        Some(recorder) => Arc::new(RecordingHypervisor::new(Box::new(kvm), recorder.clone())),
        None => Arc::new(kvm),
    };
    let report = runtime().and_then(|runtime| {
        runtime.block_on(async {
            let mut fleet = Fleet::new(hv, &spec.name).await?;
            if let Some(recorder) = &recorder {
                fleet = fleet.with_control_log(recorder.clone());
            }
            let mut progress = Progress::new(spec.vms.len());
            let report = run_on(&fleet, &spec, &mut progress, stop_signals()?).await;
            progress.finish();
            anyhow::Ok(report)
        })
    });
    // Close the trace of every job that ran, however its VMs fared: a failed job is exactly
    // the one worth replaying. A job that could not even start leaves an existing trace as it
    // was, and no partial file.
    if let Some(writer) = writer {
        match &report {
            Ok(_) => close_trace(writer)?,
            Err(_) => writer.discard(),
        }
    }
    let report = report?;
    let calls = recorder.and_then(|r| r.transcript()).unwrap_or_default();
    finish_report(&report, &header, &calls, transcript.as_ref(), args.json)
}

/// SIGINT and SIGTERM, as `shutdown for exit` requests: every VM stopped and reported, and the
/// VMs left to the process's exit, which follows (see [`crate::fleet::ShutdownMode`]).
pub fn stop_signals() -> Result<impl futures::Stream<Item = Request>> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    Ok(futures::stream::unfold(
        (interrupt, terminate),
        |(mut interrupt, mut terminate)| async move {
            tokio::select! {
                Some(()) = interrupt.recv() => {}
                Some(()) = terminate.recv() => {}
                else => return None,
            }
            crate::note!("vmfleet: stopping every VM");
            Some((Request::ShutdownForExit, (interrupt, terminate)))
        },
    ))
}

/// The start-up progress bar of `vmfleet run` (drawn only on a terminal).
struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn new(total: usize) -> Self {
        // Drawn only when stderr is a terminal: into a pipe or a log file, a bar is noise.
        let target = if crate::term::term().progress {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        };
        let bar = indicatif::ProgressBar::with_draw_target(Some(total as u64), target);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg:<10} [{bar:30}] {pos}/{len} VMs ({per_sec}, {elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message("creating");
        Progress { bar }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl JobProgress for Progress {
    fn created(&mut self, created: usize, total: usize) {
        tracing::info!("{created} of {total} VMs configured");
        self.bar.set_message("starting");
    }

    fn started(&mut self, vm: &str, result: &Result<(), crate::fleet::ControlError>) {
        if let Err(e) = result {
            self.bar
                .suspend(|| tracing::warn!("{vm} did not start: {e}"));
        }
        self.bar.inc(1);
    }

    fn running(&mut self) {
        self.bar.set_message("running");
        self.bar.finish_and_clear();
        tracing::info!("every VM is up");
    }
}

fn finish_report(
    report: &JobReport,
    header: &TraceHeader,
    calls: &TranscriptFold,
    transcript: Option<&Output>,
    json: bool,
) -> Result<Status> {
    if let Some(output) = transcript {
        let text = report::transcript_folded(report, &header.host, calls);
        output
            .write_all(text.as_bytes())
            .with_context(|| format!("writing transcript {}", output.target().display()))?;
    }
    if json {
        emit_json(&report::json(report))?;
    } else {
        emit(&report::table_colored(
            report,
            crate::term::term().stdout_color,
        ))?;
    }
    Ok(if report.any_failed() {
        Status::VmFailed
    } else {
        Status::Success
    })
}

/// Everything a replay produced.
pub struct ReplayOutcome {
    /// The replayed job's report; absent when the job could not even start after a divergence.
    pub report: Option<JobReport>,
    /// The canonical transcript; only when the replay matched the trace to its end.
    pub transcript: Option<String>,
    /// The first divergence (or the trace left unconsumed), if the run differs from the trace.
    pub divergence: Option<vcpu::ReplayFailure>,
    /// A streamed replay's window of queued events when it ended (larger than the one asked for
    /// if every call had to wait for an event beyond it); `None` for a trace held whole.
    pub window: Option<usize>,
}

/// Replay a trace with `spec` (normally the one in its header) and render its transcript.
///
/// The replayed supervisor does what the recorded one did: bring the spec's fleet up, then carry
/// out the recorded control requests in their recorded order (a `run` trace's signal stops, a
/// `serve` trace's API requests), each through the same [`Fleet::handle`]. Every reply must be
/// the recorded one, and every backend call must match the trace, stream by stream.
pub fn replay_trace(trace: &Trace, spec: &FleetSpec) -> Result<ReplayOutcome> {
    trace.require_complete()?;
    let spec = &crate::replay_stream::as_recorded(&trace.header, spec);
    let replay =
        ReplayHypervisor::from_events(trace.header.guest_arch, trace.events.iter().cloned());
    replay_on(
        &trace.header,
        trace.control_events().cloned().collect(),
        replay,
        spec,
    )
}

/// [`replay_trace`], taking the trace: its events move into the replay backend rather than being
/// copied, so a large trace is held once (what `vmfleet replay` does).
pub fn replay_trace_owned(mut trace: Trace, spec: &FleetSpec) -> Result<ReplayOutcome> {
    trace.require_complete()?;
    let spec = &crate::replay_stream::as_recorded(&trace.header, spec);
    let control: Vec<Event> = trace.control_events().cloned().collect();
    let events = std::mem::take(&mut trace.events);
    let replay = ReplayHypervisor::from_events(trace.header.guest_arch, events);
    replay_on(&trace.header, control, replay, spec)
}

/// The replay itself, on a backend built from the trace's events; `control` are the trace's
/// control events, in order.
fn replay_on(
    header: &TraceHeader,
    control: Vec<Event>,
    replay: ReplayHypervisor,
    spec: &FleetSpec,
) -> Result<ReplayOutcome> {
    let requests: Vec<Request> = control.iter().map(control_request).collect::<Result<_>>()?;
    replay_job(
        header,
        futures::stream::iter(requests),
        replay,
        spec,
        move || Ok((control, None)),
    )
}

/// The request a control event recorded.
pub(crate) fn control_request(e: &Event) -> Result<Request> {
    match &e.call {
        recorder::TraceCall::Control(request) => Ok(request.clone()),
        other => Err(anyhow::anyhow!(
            "event #{} on the control stream is {other}, not a control request",
            e.seq
        )),
    }
}

/// The replay itself: the job `header` records, on `replay`, carrying out `requests` in order.
/// Once the job is over, `settle` gives the recorded control events and the window (a streamed
/// replay reads the rest of its trace there, and fails if the trace is cut short or damaged).
pub(crate) fn replay_job(
    header: &TraceHeader,
    requests: impl futures::Stream<Item = Request> + Unpin,
    replay: ReplayHypervisor,
    spec: &FleetSpec,
    settle: impl FnOnce() -> Result<(Vec<Event>, Option<usize>)>,
) -> Result<ReplayOutcome> {
    let command = header.job.command.as_str();
    if command != COMMAND_RUN && command != COMMAND_SERVE {
        bail!("the trace records a `{command}` job; this vmfleet replays `run` and `serve` jobs");
    }
    let monitor = replay.monitor();
    // The replayed calls are folded into the transcript as they come, not kept.
    let recorder = Recorder::folding();
    let hv: Arc<dyn Hypervisor> =
        Arc::new(RecordingHypervisor::new(Box::new(replay), recorder.clone()));
    crate::fleet::check_arch(spec.arch, hv.arch())?;
    let report = runtime()?.block_on(async {
        let fleet = Fleet::new(hv, &spec.name)
            .await?
            .with_control_log(recorder.clone());
        let report = if command == COMMAND_RUN {
            run_on(&fleet, spec, &mut Quiet, requests).await
        } else {
            serve_replay(&fleet, spec, requests).await
        };
        anyhow::Ok(report)
    });
    // The trace's own faults (cut short, damaged) come before anything the replay found.
    let (control, window) = settle()?;
    let recorded: Vec<&Event> = control.iter().collect();
    let calls = recorder.take_transcript().unwrap_or_default();
    let divergence = monitor
        .finish()
        .err()
        .or_else(|| control_divergence(&recorded, calls.control_events()));
    let report = match report {
        Ok(report) => Some(report),
        // A job that could not even start is a divergence if the trace says it did.
        Err(e) if divergence.is_some() => {
            tracing::debug!("job stopped after the divergence: {e}");
            None
        }
        Err(e) => return Err(e),
    };
    let transcript = match (&report, &divergence) {
        (Some(report), None) => Some(report::transcript_folded(report, &header.host, &calls)),
        _ => None,
    };
    Ok(ReplayOutcome {
        report,
        transcript,
        divergence,
        window,
    })
}

/// What `vmfleet serve` does with its fleet, replayed: bring the spec's VMs up, carry out the
/// requests one after the other, shut down (unless the last request already did). A recorded
/// `shutdown for exit` is carried out as recorded: the replay's threads and objects stay until
/// the replaying process ends, and no `DESTROY` call is issued, as none was recorded.
async fn serve_replay(
    fleet: &Fleet,
    spec: &FleetSpec,
    mut requests: impl futures::Stream<Item = Request> + Unpin,
) -> JobReport {
    use futures::StreamExt as _;
    if !spec.vms.is_empty() {
        fleet.create_all(spec.vms.clone()).await;
        fleet.start_all(StartMode::Running, |_, _| {}).await;
    }
    let mut report = None;
    while let Some(request) = requests.next().await {
        if let Ok(ControlValue::Shutdown(done)) = fleet.handle(request).await {
            report = Some(*done);
        }
    }
    match report {
        Some(report) => report,
        None => fleet.shutdown().await,
    }
}

/// The first control reply of the replay that differs from the recorded one (or a request one
/// side has and the other has not).
fn control_divergence(recorded: &[&Event], replayed: &[Event]) -> Option<vcpu::ReplayFailure> {
    let replayed: Vec<&Event> = replayed
        .iter()
        .filter(|e| e.stream == vcpu::Stream::Control)
        .collect();
    let line = |e: &Event| format!("{} -> {}", e.call, recorder::render::outcome(&e.outcome));
    let count = recorded.len().max(replayed.len());
    (0..count).find_map(|i| {
        let (expected, actual) = (recorded.get(i), replayed.get(i));
        let same = match (expected, actual) {
            (Some(a), Some(b)) => a.call == b.call && a.outcome == b.outcome,
            _ => false,
        };
        (!same).then(|| vcpu::ReplayFailure {
            seq: expected.map(|e| e.seq),
            stream: vcpu::Stream::Control,
            expected: expected.map_or_else(|| "end of stream".into(), |e| line(e)),
            actual: actual.map_or_else(|| "end of stream".into(), |e| line(e)),
            detail: "the control request or its reply differs from the recorded one".into(),
        })
    })
}

/// `vmfleet replay`.
pub fn replay(args: &ReplayArgs) -> Result<Status> {
    if let Some(fingerprint) = &args.model {
        return crate::model_cmd::replay::run(fingerprint, args);
    }
    // Refused before the replay runs: the transcript must not overwrite anything.
    let output = match &args.transcript {
        Some(path) => Some(
            Output::check(path, args.force)
                .with_context(|| format!("cannot write the transcript {}", path.display()))?,
        ),
        None => None,
    };
    // Read as the replay goes: a trace cut short or damaged ends the replay with its error.
    let path = &args.trace;
    let stream =
        TraceStream::open(path).map_err(|e| crate::replay_stream::trace_failure(e.into(), path))?;
    let header = stream.header();
    let job = &header.job;
    let spec = if job.command == COMMAND_SERVE && job.spec_text.trim().is_empty() {
        // `vmfleet serve` started without a spec: an empty fleet, every VM created by request.
        FleetSpec {
            name: DEFAULT_FLEET_NAME.to_string(),
            arch: header.guest_arch,
            cross_check: false,
            vms: Vec::new(),
        }
    } else {
        spec::parse(&job.spec_text, &job.spec_source)
            .context("the fleet spec stored in the trace header")
            .or_status(Status::BadInput)?
    };
    let outcome =
        crate::replay_stream::replay_stream(stream, &spec, crate::replay_stream::DEFAULT_WINDOW)
            .map_err(|e| crate::replay_stream::trace_failure(e, path))?;
    if let Some(divergence) = &outcome.divergence {
        crate::note!(
            "vmfleet: replay of {} diverged from the trace",
            args.trace.display()
        );
        crate::note!("  {divergence}");
        return Ok(Status::Divergence);
    }
    let (Some(transcript), Some(report)) = (outcome.transcript, outcome.report) else {
        bail!("internal error: a replay without divergence has no report or transcript");
    };
    if let Some(output) = &output {
        output
            .write_all(transcript.as_bytes())
            .with_context(|| format!("writing transcript {}", output.target().display()))?;
    }
    if args.json {
        emit_json(&report::json(&report))?;
    } else {
        emit(&transcript)?;
    }
    // The replay matched the recording: that is success, whatever the recorded VMs did (a VM
    // that failed in the recording failed in the replay too, and the transcript shows it).
    Ok(Status::Success)
}

/// Read a trace with `open`; a failure carries the status it means: a trace cut short is
/// [`Status::Incomplete`], anything else (unreadable, foreign, corrupt) [`Status::BadInput`].
pub(crate) fn open_trace(
    path: &Path,
    open: impl FnOnce(&Path) -> Result<Trace, TraceError>,
) -> Result<Trace> {
    open(path).map_err(|e| {
        let status = if e.is_cut_short() {
            Status::Incomplete
        } else {
            Status::BadInput
        };
        let error = anyhow::Error::new(e).context(format!("reading trace {}", path.display()));
        Failure::new(status, error).into()
    })
}

pub use crate::trace_cmd::{trace_convert, trace_fingerprint, trace_show};

/// `vmfleet host --fingerprint`: the same document, measured on this host.
fn host_fingerprint(kvm: &KvmHypervisor, json: bool) -> Result<Status> {
    let facts = crate::fingerprint::live::facts(kvm)
        .context("measuring this host's fingerprint on a scratch VM")?;
    let fingerprint = Fingerprint::build(&facts);
    if json {
        emit_json(&fingerprint)?;
    } else {
        emit(&crate::fingerprint::text::summary(&fingerprint))?;
    }
    Ok(Status::Success)
}

/// The schema of `vmfleet host --json` (`supervisor/schemas/host.v1.schema.json`).
pub const HOST_SCHEMA: &str = "vmfleet.host.v1";

#[derive(Serialize)]
struct HostReport<'a> {
    schema: &'static str,
    /// The guest architecture this build runs under KVM.
    arch: Option<String>,
    fingerprint: &'a recorder::HostFingerprint,
    supported_cpuid_entries: usize,
    /// What a guest really holds when given the supported table (x86; `None` elsewhere).
    guest_cpuid: Option<GuestCpuidProbe>,
    features: Vec<FeatureSupport>,
}

#[derive(Serialize)]
struct FeatureSupport {
    name: &'static str,
    position: String,
    supported: Option<bool>,
    /// Not in the supported table, but set in what the kernel holds after writing it: the host
    /// gives it to guests anyway.
    host_adds: bool,
    /// In the supported table, but cleared in what the kernel holds after writing it.
    host_removes: bool,
}

/// The supported table written to a scratch vCPU (`KVM_SET_CPUID2`) and read back
/// (`KVM_GET_CPUID2`), compared bit by bit.
#[derive(Serialize)]
struct GuestCpuidProbe {
    /// Whether the scratch VM could be made and written (else `error` says why).
    measured: bool,
    error: Option<String>,
    /// Entries the kernel holds after the write.
    held_entries: usize,
    /// Bits set in what the kernel holds that the supported table does not list (kernel
    /// rewrites only, not bits that track guest state).
    extra_bits: usize,
    /// Every change between the table written and the one read back.
    changes: Vec<report::DriftChange>,
}

impl GuestCpuidProbe {
    /// Kernel rewrites of a single bit from 0 to 1: what the host gives beyond `supported`.
    fn added(&self) -> impl Iterator<Item = &report::DriftChange> {
        self.changes.iter().filter(|c| {
            c.kind == report::DriftKind::KernelRewrote
                && c.bit.is_some()
                && c.from == Some(0)
                && c.to == Some(1)
        })
    }

    fn removed(&self) -> impl Iterator<Item = &report::DriftChange> {
        self.changes.iter().filter(|c| {
            c.kind == report::DriftKind::KernelRewrote
                && c.bit.is_some()
                && c.from == Some(1)
                && c.to == Some(0)
        })
    }

    fn touches<'a>(
        mut changes: impl Iterator<Item = &'a report::DriftChange>,
        f: &Feature,
    ) -> bool {
        changes.any(|c| {
            (c.leaf, c.subleaf, c.reg, c.bit)
                == (f.leaf, f.subleaf, Some(f.reg.name()), Some(f.bit))
        })
    }
}

/// Measure what a guest is given: create a scratch VM and vCPU, write the model vmfleet builds
/// from `supported` (hiding nothing) through the lock's handle, read it back, and compare with the
/// same drift code `vmfleet run` uses. Nothing runs in the guest.
fn probe_guest_cpuid(kvm: &KvmHypervisor, supported: &CpuidTable) -> GuestCpuidProbe {
    let measure = || -> Result<(usize, Vec<report::DriftChange>)> {
        let (written, held) = crate::fingerprint::live::default_model_write(kvm, supported)?;
        let changes = report::drift_changes(&vcpu::model::x86::drift::drift(&written, &held));
        Ok((held.len(), changes))
    };
    match measure() {
        Ok((held_entries, changes)) => {
            let mut probe = GuestCpuidProbe {
                measured: true,
                error: None,
                held_entries,
                extra_bits: 0,
                changes,
            };
            probe.extra_bits = probe.added().count();
            probe
        }
        Err(e) => GuestCpuidProbe {
            measured: false,
            error: Some(format!("{e:#}")),
            held_entries: 0,
            extra_bits: 0,
            changes: Vec::new(),
        },
    }
}

/// What `vmfleet host` can say without KVM: the kernel, the CPU, the KVM module.
fn host_without_kvm() -> String {
    let cpu = host::CpuInfo::read();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!(
        "kvm:          UNUSABLE (see below)\nkernel:       {kernel}\nkvm module:   {}\ncpu:          {} {} (family {} model {} stepping {})\n",
        host::kvm_module(Path::new("/sys/module")).unwrap_or_else(|| "none loaded".into()),
        cpu.vendor,
        cpu.model_name,
        cpu.family,
        cpu.model,
        cpu.stepping
    )
}

/// `vmfleet host`.
pub fn host(args: &HostArgs) -> Result<Status> {
    let kvm = match KvmHypervisor::open() {
        Ok(kvm) => kvm,
        Err(e) => {
            // What can be said without KVM goes to stdout (not with --json: a JSON document
            // describes a usable host); why KVM is unusable goes to stderr, and the status is 6.
            if !args.json {
                emit(&host_without_kvm())?;
            }
            return Err(anyhow::Error::new(e))
                .context("vmfleet host needs a usable /dev/kvm to ask KVM what guests get")
                .or_status(Status::NoKvm);
        }
    };
    if args.fingerprint {
        return host_fingerprint(&kvm, args.json);
    }
    let fingerprint = host::fingerprint(&kvm);
    let arch = vcpu::hypervisor::kvm::host_arch();
    // CPUID is x86's; an arm64 host has ID registers instead, which `host` does not list (yet).
    let x86 = arch == Some(vcpu::GuestArch::X86_64);
    let supported = if !x86 {
        CpuidTable::default()
    } else {
        match kvm.call(&SystemCall::GetSupportedCpuid) {
            Ok(Reply::Cpuid(table)) => table,
            Ok(other) => bail!("KVM_GET_SUPPORTED_CPUID answered {other}, not a CPUID table"),
            Err(e) => bail!("KVM_GET_SUPPORTED_CPUID failed: {e}"),
        }
    };
    let probe = x86.then(|| probe_guest_cpuid(&kvm, &supported));
    let features: Vec<FeatureSupport> = features::CATALOG
        .iter()
        .filter(|_| x86)
        .map(|f| FeatureSupport {
            name: f.name,
            position: f.position(),
            supported: f.is_set_in(&supported),
            host_adds: probe
                .as_ref()
                .is_some_and(|p| GuestCpuidProbe::touches(p.added(), f)),
            host_removes: probe
                .as_ref()
                .is_some_and(|p| GuestCpuidProbe::touches(p.removed(), f)),
        })
        .collect();
    if args.json {
        let report = HostReport {
            schema: HOST_SCHEMA,
            arch: arch.map(|a| a.to_string()),
            fingerprint: &fingerprint,
            supported_cpuid_entries: supported.len(),
            guest_cpuid: probe,
            features,
        };
        emit_json(&report)?;
        return Ok(Status::Success);
    }
    let mut text = host::kvm_summary(arch, &fingerprint);
    text += &format!("{fingerprint}");
    let Some(probe) = probe else {
        text += "supported CPUID: none (not x86; `vmfleet host --fingerprint` lists the arm64 ID registers)\n";
        emit(&text)?;
        return Ok(Status::Success);
    };
    text += &format!(
        "supported CPUID: {} entries (digest {:08x})\n",
        supported.len(),
        supported.digest()
    );
    if let Some(emulated) = &fingerprint.emulated_cpuid {
        let bits = crate::fingerprint::feature_bits(&emulated.entries);
        text += &format!(
            "KVM can emulate {} CPUID bits for guests (KVM_GET_EMULATED_CPUID){}{}\n",
            bits.len(),
            if bits.is_empty() { "" } else { ": " },
            bits.join(", ")
        );
    }
    text += &probe_summary(&probe);
    let width = features.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in &features {
        let state = match (f.supported, f.host_adds, f.host_removes) {
            (Some(true), _, true) => "supported, host removes",
            (Some(true), _, false) => "supported",
            (_, true, _) => "host adds (not supported, guests get it)",
            (Some(false), false, _) => "-",
            (None, false, _) => "- (leaf absent)",
        };
        text += &format!("  {:<width$}  {:<24}  {state}\n", f.name, f.position);
    }
    emit(&text)?;
    Ok(Status::Success)
}

/// The lines saying what guests are really given, beside "supported".
fn probe_summary(probe: &GuestCpuidProbe) -> String {
    if !probe.measured {
        return format!(
            "guest CPUID: not measured ({})\n",
            probe.error.as_deref().unwrap_or("unknown error")
        );
    }
    let name = |c: &report::DriftChange| {
        c.feature.map_or_else(
            || format!("{}[{}]", c.register, c.bit.unwrap_or(0)),
            str::to_string,
        )
    };
    let mut text = String::new();
    let added: Vec<String> = probe.added().map(name).collect();
    if added.is_empty() {
        text += "the host gives guests no bits beyond supported (KVM_SET_CPUID2 then KVM_GET_CPUID2 of the supported table on a scratch vCPU)\n";
    } else {
        text += &format!(
            "the host gives guests {} bits beyond supported (KVM_SET_CPUID2 then KVM_GET_CPUID2 of the supported table on a scratch vCPU): {}\n",
            added.len(),
            added.join(", ")
        );
    }
    let removed: Vec<String> = probe.removed().map(name).collect();
    if !removed.is_empty() {
        text += &format!(
            "the host withholds {} supported bits from guests: {}\n",
            removed.len(),
            removed.join(", ")
        );
    }
    text
}

/// The schema of `vmfleet bench --json` (`supervisor/schemas/bench.v1.schema.json`).
pub const BENCH_SCHEMA: &str = "vmfleet.bench.v1";

/// `vmfleet bench`: success when every measured figure is met, [`Status::TargetMissed`] when one
/// is missed or its measurement failed, [`Status::NoKvm`] without a usable KVM.
pub fn bench(args: &BenchArgs) -> Result<Status> {
    if args.scale_child {
        return bench::scale_child_command(args.scale_vms);
    }
    let floor = vcpu::hypervisor::kvm::floor::Floor::open()
        .context("vmfleet bench measures vmfleet on this host's KVM")
        .or_status(Status::NoKvm)?;
    let options = BenchOptions {
        counts: args.counts.clone(),
        runs: args.runs,
        floor_only: args.floor_only,
        start_only: args.start_only,
        control_only: args.control_only,
        shutdown_vms: args.shutdown_vms,
        record_counts: args.record_counts.clone(),
        trace_vms: args.trace_vms,
        record_only: args.record_only,
        scale_only: args.scale_only,
        scale_vms: args.scale_vms,
    };
    let report = bench::run(&floor, &options)?;
    if let Some(dir) = &args.plot {
        for chart in bench::plot(&report, dir)? {
            crate::note!("wrote {}", chart.display());
        }
    }
    if args.json {
        emit_json(&Versioned {
            schema: BENCH_SCHEMA,
            body: &report,
        })?;
    } else {
        emit(&bench::table(&report))?;
    }
    Ok(if report.any_missed() {
        Status::TargetMissed
    } else {
        Status::Success
    })
}
