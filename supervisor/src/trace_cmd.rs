//! The `vmfleet trace` subcommands that read a trace file and print or rewrite it: `trace show`
//! (filtered by VM, vCPU and call kind), `trace convert` (to the current format) and `trace
//! fingerprint` (the host it was recorded on). Each reads the trace as a stream
//! ([`recorder::TraceStream`]), so its memory does not grow with the trace; a file that cannot be
//! read gets the exit status [`crate::commands::open_trace`] gives every command for a cut,
//! corrupt or foreign file.

use crate::commands::open_trace;
use crate::common::{emit, emit_json};
use crate::exit::{Status, StatusExt};
use crate::fingerprint::Fingerprint;
use anyhow::{Context, Result};
use recorder::{Output, Trace, TraceEnd, TraceStream};
use std::io::Write as _;
use std::path::Path;

/// `vmfleet trace show`: everything readable, then how the trace ends. Exit status: success for
/// a complete trace, incomplete for one cut short, bad input for a corrupt one (its readable
/// part is still shown, and stderr says where the damage is). Printed as the trace is read: its
/// memory does not grow with the trace.
pub fn trace_show(path: &Path, json: bool, filter: &recorder::ShowFilter) -> Result<Status> {
    let mut stream = TraceStream::open(path).map_err(|e| open_failure(e, path))?;
    let mut out = Printer::default();
    out.print(&if json {
        recorder::render::show_json_header(stream.header())
    } else {
        recorder::render::show_text_header(stream.header())
    })?;
    // The call kinds the trace has, to name a filter's kind that matches none.
    let mut present = std::collections::BTreeSet::new();
    let mut hidden = 0u64;
    let mut summaries = recorder::render::SummaryTally::default();
    let mut text = String::new();
    for event in stream.by_ref() {
        summaries.add(&event);
        if !filter.calls.is_empty() {
            present.insert(recorder::call_kind(&event.call));
        }
        if !filter.shows(&event) {
            hidden += 1;
            continue;
        }
        if json {
            out.print(&recorder::render::show_json_event(&event))?;
        } else {
            text.clear();
            recorder::render::show_text_event(&mut text, &event);
            out.print(&text)?;
        }
    }
    let end = stream.finish().map_err(|e| open_failure(e, path))?;
    out.print(&if json {
        recorder::render::show_json_end(&end)
    } else {
        recorder::render::show_text_footer(filter, hidden, &summaries, &end)
    })?;
    out.flush()?;
    for unknown in filter.unknown_calls_among(&present) {
        eprintln!("vmfleet: {}: {unknown}", path.display());
    }
    Ok(match &end {
        TraceEnd::Complete { .. } => Status::Success,
        TraceEnd::Truncated { .. } => Status::Incomplete,
        TraceEnd::Corrupt { .. } => {
            eprintln!("vmfleet: {}: {end}", path.display());
            Status::BadInput
        }
    })
}

/// A trace that cannot be read, with the status [`open_trace`] gives it.
fn open_failure(e: recorder::TraceError, path: &Path) -> anyhow::Error {
    open_trace(path, |_| Err(e))
        .err()
        .unwrap_or_else(|| anyhow::anyhow!("reading trace {}", path.display()))
}

/// Buffered stdout; a reader that went away (`vmfleet trace show T | head`) ends the output
/// quietly, as [`crate::common::emit`] does.
#[derive(Default)]
struct Printer {
    buf: String,
    gone: bool,
}

impl Printer {
    fn print(&mut self, text: &str) -> Result<()> {
        self.buf.push_str(text);
        if self.buf.len() >= 64 << 10 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.gone && !self.buf.is_empty() {
            let mut out = std::io::stdout().lock();
            match out
                .write_all(self.buf.as_bytes())
                .and_then(|()| out.flush())
            {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => self.gone = true,
                other => other.context("writing to stdout")?,
            }
        }
        self.buf.clear();
        Ok(())
    }
}

/// `vmfleet trace convert IN OUT`: IN rewritten in the current format, its events and times
/// as they were ([`recorder::encode_trace`]); a trace cut short is converted as far as it reads
/// and stays cut short ([`Status::Incomplete`]).
pub fn trace_convert(input: &Path, output: &Path, force: bool) -> Result<Status> {
    let stream = TraceStream::open(input).map_err(|e| open_failure(e, input))?;
    let from_version = stream.header().format_version;
    let out = Output::check(output, force)
        .with_context(|| format!("cannot write the trace {}", output.display()))?;
    // Written as it is read, to the partial file; renamed into place only when whole.
    let mut file = std::io::BufWriter::new(
        out.create_partial()
            .with_context(|| format!("cannot write the trace {}", output.display()))?,
    );
    let converted = recorder::encode_stream(stream, &mut file).and_then(|converted| {
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(converted)
    });
    let converted = match converted {
        Ok(converted) => converted,
        Err(e) => {
            out.discard();
            return Err(match e {
                recorder::ConvertError::Read(e) => open_failure(e, input),
                other => anyhow::Error::new(other).context(format!("writing {}", output.display())),
            });
        }
    };
    if let Err(e) = out.publish() {
        if !matches!(e, recorder::OutputError::Appeared { .. }) {
            out.discard();
        }
        return Err(anyhow::Error::new(e).context(format!("writing {}", output.display())));
    }
    eprintln!(
        "vmfleet: {} (format {}, {} events) -> {} (format {}, {} bytes)",
        input.display(),
        from_version,
        converted.events,
        output.display(),
        recorder::FORMAT_VERSION,
        converted.bytes
    );
    Ok(if matches!(converted.end, TraceEnd::Complete { .. }) {
        Status::Success
    } else {
        Status::Incomplete
    })
}

/// `vmfleet trace fingerprint`: the fingerprint a whole trace records (the facts it is made of
/// never look at runs, control points or control requests, so those are not kept) (a trace cut short is
/// [`Status::Incomplete`], a corrupt or foreign one [`Status::BadInput`]).
pub fn trace_fingerprint(path: &Path, json: bool) -> Result<Status> {
    // Read as a stream, keeping only what the fingerprint is made of: its runs, control points
    // and control requests (most of a long trace) are dropped as they are read.
    let mut stream = TraceStream::open(path).map_err(|e| open_failure(e, path))?;
    let header = stream.header().clone();
    let events: Vec<recorder::Event> = stream
        .by_ref()
        .filter(|e| {
            !matches!(
                e.call,
                recorder::TraceCall::Vcpu(vcpu::VcpuCall::Run)
                    | recorder::TraceCall::Decision
                    | recorder::TraceCall::Control(_)
            )
        })
        .collect();
    let end = stream.finish().map_err(|e| open_failure(e, path))?;
    if let TraceEnd::Corrupt {
        offset, problem, ..
    } = end
    {
        let corrupt = recorder::TraceError::Corrupt { offset, problem };
        return Err(open_failure(corrupt, path));
    }
    let trace = Trace {
        header,
        events,
        end,
    };
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
