//! The `vmfleet trace` subcommands that read a trace file and print or rewrite it: `trace show`
//! (filtered by VM, vCPU and call kind), `trace convert` (to the current format) and `trace
//! fingerprint` (the host it was recorded on). Reading goes through
//! [`crate::commands::open_trace`], which gives every command the same exit statuses for a cut,
//! corrupt or foreign file.

use crate::commands::open_trace;
use crate::common::{emit, emit_json};
use crate::exit::{Status, StatusExt};
use crate::fingerprint::Fingerprint;
use anyhow::{Context, Result};
use recorder::{Output, Trace, TraceEnd};
use std::path::Path;

/// `vmfleet trace show`: everything readable, then how the trace ends. Exit status: success for
/// a complete trace, incomplete for one cut short, bad input for a corrupt one (its readable
/// part is still shown, and stderr says where the damage is).
pub fn trace_show(path: &Path, json: bool, filter: &recorder::ShowFilter) -> Result<Status> {
    let trace = open_trace(path, |p| Trace::open_lenient(p))?;
    for unknown in filter.unknown_calls(trace.events.iter()) {
        eprintln!("vmfleet: {}: {unknown}", path.display());
    }
    if json {
        emit(&recorder::show_json_lines_filtered(&trace, filter))?;
    } else {
        emit(&recorder::show_text_filtered(&trace, filter))?;
    }
    Ok(match &trace.end {
        TraceEnd::Complete { .. } => Status::Success,
        TraceEnd::Truncated { .. } => Status::Incomplete,
        TraceEnd::Corrupt { .. } => {
            eprintln!("vmfleet: {}: {}", path.display(), trace.end);
            Status::BadInput
        }
    })
}

/// `vmfleet trace convert IN OUT`: IN rewritten in the current format, its events and times
/// as they were ([`recorder::encode_trace`]); a trace cut short is converted as far as it reads
/// and stays cut short ([`Status::Incomplete`]).
pub fn trace_convert(input: &Path, output: &Path, force: bool) -> Result<Status> {
    let trace = open_trace(input, |p| Trace::open(p))?;
    let out = Output::check(output, force)
        .with_context(|| format!("cannot write the trace {}", output.display()))?;
    let bytes = recorder::encode_trace(&trace.header, &trace.events, trace.is_complete())
        .with_context(|| format!("encoding {}", input.display()))?;
    out.write_all(&bytes)
        .with_context(|| format!("writing {}", output.display()))?;
    eprintln!(
        "vmfleet: {} (format {}, {} events) -> {} (format {}, {} bytes)",
        input.display(),
        trace.header.format_version,
        trace.events.len(),
        output.display(),
        recorder::FORMAT_VERSION,
        bytes.len()
    );
    Ok(if trace.is_complete() {
        Status::Success
    } else {
        Status::Incomplete
    })
}

/// `vmfleet trace fingerprint`: the fingerprint a whole trace records (a trace cut short is
/// [`Status::Incomplete`], a corrupt or foreign one [`Status::BadInput`]).
pub fn trace_fingerprint(path: &Path, json: bool) -> Result<Status> {
    let trace = open_trace(path, |p| Trace::open(p))?;
    // A trace cut short may lack the calls the fingerprint is made of: say so with its status.
    trace
        .require_complete()
        .with_context(|| format!("reading trace {}", path.display()))
        .or_status(Status::Incomplete)?;
    let fingerprint = Fingerprint::build(&crate::fingerprint::from_trace::facts(&trace));
    if json {
        emit_json(&fingerprint)?;
    } else {
        emit(&crate::fingerprint::text::summary(&fingerprint))?;
    }
    Ok(Status::Success)
}
