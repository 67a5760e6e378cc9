//! The commands behind the CLI. Each returns the process exit status: 0 all good, 1 the job ran
//! but something failed (a VM, a check, a replay divergence); errors (bad input, no KVM) are
//! reported by `main` with status 2.

use crate::bench::{self, BenchOptions};
use crate::cli::{BenchArgs, HostArgs, ReplayArgs, RunArgs};
use crate::job::run_job;
use crate::report::{self, JobReport};
use crate::spec::{self, FleetSpec};
use crate::{DEMO_FLEET, DEMO_SOURCE, host};
use anyhow::{Context, Result, bail};
use recorder::{
    Event, JobInputs, Recorder, RecordingHypervisor, ReplayHypervisor, Trace, TraceHeader,
    TraceWriter, show_json_lines, show_text,
};
use serde::Serialize;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use vcpu::cpuid::{CpuidTable, features};
use vcpu::kvm::KvmHypervisor;
use vcpu::{Hypervisor, Reply, SystemCall};

const COMMAND_RUN: &str = "run";

/// Write to stdout; a reader that went away (`vmfleet host | head`) is not an error.
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `vmfleet run`.
pub fn run(args: &RunArgs) -> Result<ExitCode> {
    let (source, text) = match &args.fleet {
        Some(path) => {
            let text = fs::read_to_string(path)
                .with_context(|| format!("reading fleet spec {}", path.display()))?;
            (path.display().to_string(), text)
        }
        None => (DEMO_SOURCE.to_string(), DEMO_FLEET.to_string()),
    };
    let spec = spec::parse(&text, &source)?;
    let kvm = KvmHypervisor::open()?;
    let header = TraceHeader::new(
        env!("CARGO_PKG_VERSION"),
        vcpu::kvm::host_arch().context("this host architecture has no KVM backend")?,
        host::fingerprint(&kvm),
        JobInputs {
            command: COMMAND_RUN.into(),
            spec_source: source,
            spec_text: text,
        },
    );

    let (recorder, writer) = match &args.record {
        Some(path) => {
            let (recorder, writer) = TraceWriter::create_keeping_events(path, &header)
                .with_context(|| format!("creating trace {}", path.display()))?;
            (recorder, Some(writer))
        }
        None => (Recorder::in_memory(), None),
    };
    let hv: Arc<dyn Hypervisor> =
        Arc::new(RecordingHypervisor::new(Box::new(kvm), recorder.clone()));
    let report = runtime()?.block_on(run_job(hv, &spec));
    // Close the trace whatever happened: a failed job is exactly the one worth replaying.
    if let Some(writer) = writer {
        let path = writer.path().to_path_buf();
        let summary = writer
            .finish()
            .with_context(|| format!("writing trace {}", path.display()))?;
        eprintln!(
            "recorded {} events ({} bytes) to {}",
            summary.events,
            summary.bytes,
            path.display()
        );
    }
    let report = report?;
    finish_report(
        &report,
        &header,
        &recorder.events(),
        args.transcript.as_deref(),
        args.json,
    )
}

fn finish_report(
    report: &JobReport,
    header: &TraceHeader,
    events: &[Event],
    transcript_path: Option<&Path>,
    json: bool,
) -> Result<ExitCode> {
    if let Some(path) = transcript_path {
        let text = report::transcript(report, &header.host, events);
        fs::write(path, text).with_context(|| format!("writing transcript {}", path.display()))?;
    }
    if json {
        emit(&(serde_json::to_string_pretty(report)? + "\n"))?;
    } else {
        emit(&report::table(report))?;
    }
    Ok(if report.any_failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Everything a replay produced.
pub struct ReplayOutcome {
    pub report: Option<JobReport>,
    pub transcript: Option<String>,
    /// The first divergence (or the trace left unconsumed), if the run differs from the trace.
    pub divergence: Option<vcpu::ReplayFailure>,
}

/// Replay a trace with `spec` (normally the one in its header) and render its transcript.
pub fn replay_trace(trace: &Trace, spec: &FleetSpec) -> Result<ReplayOutcome> {
    if trace.header.job.command != COMMAND_RUN {
        bail!(
            "the trace records a `{}` job; this vmfleet replays `run` jobs",
            trace.header.job.command
        );
    }
    let replay = ReplayHypervisor::new(trace)?;
    let monitor = replay.monitor();
    let recorder = Recorder::in_memory();
    let hv: Arc<dyn Hypervisor> =
        Arc::new(RecordingHypervisor::new(Box::new(replay), recorder.clone()));
    let report = runtime()?.block_on(run_job(hv, spec));
    let divergence = monitor.finish().err();
    let report = match report {
        Ok(report) => Some(report),
        // A job that could not even start is a divergence if the trace says it did.
        Err(e) if divergence.is_some() => {
            tracing::debug!("job stopped after the divergence: {e}");
            None
        }
        Err(e) => return Err(e.into()),
    };
    let transcript = match (&report, &divergence) {
        (Some(report), None) => Some(report::transcript(
            report,
            &trace.header.host,
            &recorder.events(),
        )),
        _ => None,
    };
    Ok(ReplayOutcome {
        report,
        transcript,
        divergence,
    })
}

/// `vmfleet replay`.
pub fn replay(args: &ReplayArgs) -> Result<ExitCode> {
    let trace = Trace::open(&args.trace)
        .with_context(|| format!("reading trace {}", args.trace.display()))?;
    let spec = spec::parse(&trace.header.job.spec_text, &trace.header.job.spec_source)
        .context("the fleet spec stored in the trace header")?;
    let outcome = replay_trace(&trace, &spec)?;
    if let Some(divergence) = &outcome.divergence {
        eprintln!(
            "vmfleet: replay of {} diverged from the trace",
            args.trace.display()
        );
        eprintln!("  {divergence}");
        return Ok(ExitCode::from(1));
    }
    let transcript = outcome
        .transcript
        .expect("a replay without divergence has a transcript");
    if let Some(path) = &args.transcript {
        fs::write(path, &transcript)
            .with_context(|| format!("writing transcript {}", path.display()))?;
    }
    emit(&transcript)?;
    let failed = outcome.report.as_ref().is_some_and(JobReport::any_failed);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `vmfleet trace show`.
pub fn trace_show(path: &Path, json: bool) -> Result<ExitCode> {
    let trace =
        Trace::open_lenient(path).with_context(|| format!("reading trace {}", path.display()))?;
    if json {
        emit(&show_json_lines(&trace))?;
    } else {
        emit(&show_text(&trace))?;
    }
    Ok(if trace.is_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Serialize)]
struct HostReport<'a> {
    fingerprint: &'a recorder::HostFingerprint,
    supported_cpuid_entries: usize,
    features: Vec<FeatureSupport>,
}

#[derive(Serialize)]
struct FeatureSupport {
    name: &'static str,
    position: String,
    supported: Option<bool>,
}

/// `vmfleet host`.
pub fn host(args: &HostArgs) -> Result<ExitCode> {
    let kvm = KvmHypervisor::open()?;
    let fingerprint = host::fingerprint(&kvm);
    let supported = match kvm.call(&SystemCall::GetSupportedCpuid) {
        Ok(Reply::Cpuid(table)) => table,
        Ok(_) => CpuidTable::default(),
        Err(e) => bail!("KVM_GET_SUPPORTED_CPUID failed: {e}"),
    };
    let features: Vec<FeatureSupport> = features::CATALOG
        .iter()
        .map(|f| FeatureSupport {
            name: f.name,
            position: f.position(),
            supported: f.is_set_in(&supported),
        })
        .collect();
    if args.json {
        let report = HostReport {
            fingerprint: &fingerprint,
            supported_cpuid_entries: supported.len(),
            features,
        };
        emit(&(serde_json::to_string_pretty(&report)? + "\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = format!("{fingerprint}");
    text += &format!(
        "supported CPUID: {} entries (digest {:08x})\n",
        supported.len(),
        supported.digest()
    );
    let width = features.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in &features {
        let state = match f.supported {
            Some(true) => "supported",
            Some(false) => "-",
            None => "- (leaf absent)",
        };
        text += &format!("  {:<width$}  {:<24}  {state}\n", f.name, f.position);
    }
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// `vmfleet bench`: 0 when every measured figure is met (or not built yet), 1 when one is missed
/// or its measurement failed; no usable KVM is an error (status 2).
pub fn bench(args: &BenchArgs) -> Result<ExitCode> {
    let floor = vcpu::kvm::floor::Floor::open()
        .context("vmfleet bench measures vmfleet on this host's KVM")?;
    let options = BenchOptions {
        counts: args.counts.clone(),
        runs: args.runs,
        floor_only: args.floor_only,
    };
    let report = bench::run(&floor, &options)?;
    if args.json {
        emit(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        emit(&bench::table(&report))?;
    }
    Ok(if report.any_missed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
