//! What the subcommand modules share: writing to stdout (`emit`, `--json` documents), the async
//! runtime, opening lines and closing of trace files, and the names traces record for the jobs
//! and fleets they come from.
//!
//! Why a module of its own: `commands` (run, replay, ...) and `serve` both use these, and
//! `commands`' replay needs `serve`'s names, so with the pieces in either module the two imported
//! each other. Here they sit below both: this module imports neither.

use crate::cli::RunArgs;
use crate::exit::{Status, StatusExt};
use crate::spec::{self, FleetSpec};
use crate::{DEMO_FLEET, DEMO_SOURCE};
use anyhow::{Context, Result};
use recorder::{Output, TraceWriter};
use serde::Serialize;
use std::io::Write as _;

/// What a trace recorded by `vmfleet run` names its command.
pub const COMMAND_RUN: &str = "run";
/// What a trace recorded by `vmfleet serve` names its command.
pub const COMMAND_SERVE: &str = "serve";

/// Write `value` to stdout as pretty JSON and a newline (a reader that went away is not an
/// error).
pub(crate) fn emit_json(value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("rendering JSON")?;
    emit(&(text + "\n"))
}

/// `value` serialized with a `schema` field first: what every `--json` document carries.
#[derive(Serialize)]
pub(crate) struct Versioned<'a, T: Serialize> {
    pub schema: &'static str,
    #[serde(flatten)]
    pub body: &'a T,
}

/// Write to stdout; a reader that went away (`vmfleet host | head`) is not an error.
pub(crate) fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// The tokio runtime a subcommand's fleet runs on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The fleet name when the daemon starts without a spec (replay uses it too).
pub const DEFAULT_FLEET_NAME: &str = "fleet";

/// Say on stderr where the trace is being written (where a killed run leaves it).
pub(crate) fn say_where_the_trace_goes(writer: &TraceWriter) {
    eprintln!(
        "vmfleet: recording to {} (renamed to {} when the trace is closed)",
        writer.writing_to().display(),
        writer.path().display()
    );
}

/// Finish a trace (end marker, flush, sync) and say on stderr what it holds.
pub(crate) fn close_trace(writer: TraceWriter) -> Result<()> {
    let path = writer.path().to_path_buf();
    let summary = writer
        .finish()
        .with_context(|| format!("writing trace {}", path.display()))?;
    crate::note!(
        "recorded {} events ({} bytes) to {}",
        summary.events,
        summary.bytes,
        path.display()
    );
    Ok(())
}

/// What `vmfleet run` (on KVM or `--model`) works from, read and checked before anything runs.
pub struct RunInputs {
    /// Where the spec came from: FLEET's path, or the built-in demo's name.
    pub source: String,
    /// The spec text the trace keeps (with `--cross-check` written into it).
    pub text: String,
    /// The parsed spec.
    pub spec: FleetSpec,
    /// The transcript file, checked writable (`--transcript`), if asked for.
    pub transcript: Option<Output>,
}

/// Read and check `vmfleet run`'s spec (FLEET or the built-in demo) and its transcript file.
/// `--cross-check` is the spec's `cross_check = true`, written into the text the trace keeps so
/// that its replays cross-check the same writes. The transcript is refused now, before KVM is
/// opened or any VM created: a run that cannot keep its results must not start, and a refused
/// run must leave the files it was pointed at untouched.
pub fn run_inputs(args: &RunArgs) -> Result<RunInputs> {
    let (source, text) = match &args.fleet {
        Some(path) => {
            let text = spec::read_spec_file(path)
                .with_context(|| format!("reading fleet spec {}", path.display()))
                .or_status(Status::BadInput)?;
            (path.display().to_string(), text)
        }
        None => (DEMO_SOURCE.to_string(), DEMO_FLEET.to_string()),
    };
    let (text, spec) = if args.cross_check {
        spec::parse_cross_checked(&text, &source).or_status(Status::BadInput)?
    } else {
        let spec = spec::parse(&text, &source).or_status(Status::BadInput)?;
        (text, spec)
    };
    let transcript = match &args.transcript {
        Some(path) => Some(
            Output::check(path, args.force)
                .with_context(|| format!("cannot write the transcript {}", path.display()))?,
        ),
        None => None,
    };
    Ok(RunInputs {
        source,
        text,
        spec,
        transcript,
    })
}
