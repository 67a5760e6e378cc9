//! `vmfleet`: see `vmfleet --help`.

#![deny(missing_docs)]

use clap::{CommandFactory as _, FromArgMatches as _};
use std::process::ExitCode;
use supervisor::cli::{Cli, Command, ModelCommand, TemplateCommand, TraceCommand};
use supervisor::commands;

fn main() -> ExitCode {
    // clap colours its own help and errors: tell it what `--color` will say (it parses later).
    let matches = Cli::command()
        .color(clap_color(std::env::args_os()))
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let term = supervisor::term::Term::init(cli.color);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(term.stderr_color)
        .init();
    // A big fleet needs thousands of file descriptors; a failure here only matters to one.
    match supervisor::fdlimit::raise_fd_limit() {
        Ok(limit) => tracing::debug!(
            "open-files limit: soft {} (was {}), hard {}",
            show_limit(limit.soft),
            show_limit(limit.previous),
            show_limit(limit.hard)
        ),
        Err(e) => tracing::warn!("could not raise the open-files limit to the hard limit: {e}"),
    }
    let result = match cli.command {
        Command::Run(args) => commands::run(&args),
        Command::Replay(args) => commands::replay(&args),
        Command::Trace(TraceCommand::Show {
            trace,
            json,
            vm,
            vcpu,
            calls,
        }) => commands::trace_show(&trace, json, &recorder::ShowFilter { vm, vcpu, calls }),
        Command::Trace(TraceCommand::Convert {
            input,
            output,
            force,
        }) => commands::trace_convert(&input, &output, force),
        Command::Trace(TraceCommand::Fingerprint { trace, json }) => {
            commands::trace_fingerprint(&trace, json)
        }
        Command::Host(args) => commands::host(&args),
        Command::Model(ModelCommand::Judge { fingerprint }) => {
            supervisor::model_cmd::judge::run(&fingerprint)
        }
        Command::Check(args) => supervisor::check::run(&args),
        Command::Nfd(args) => supervisor::nfd::run(&args),
        Command::Baseline(args) => supervisor::template_cmd::baseline::run(
            &args.fingerprints,
            &args.name,
            args.out.as_deref(),
            args.json,
        ),
        Command::Template(TemplateCommand::Show {
            template,
            fingerprint,
            json,
        }) => supervisor::template_cmd::show(&template, fingerprint.as_deref(), json),
        Command::Template(TemplateCommand::ImportFirecracker {
            file,
            output,
            name,
            force,
        }) => supervisor::firecracker::commands::import_firecracker(
            &file,
            output.as_deref(),
            name.as_deref(),
            force,
        ),
        Command::Template(TemplateCommand::ExportFirecracker {
            template,
            output,
            force,
        }) => supervisor::firecracker::commands::export_firecracker(
            &template,
            output.as_deref(),
            force,
        ),
        Command::Serve(args) => supervisor::serve::serve(&args),
        Command::Ctl(args) => supervisor::ctl::ctl(&args),
        Command::Bench(args) => commands::bench(&args),
        Command::Completions { shell } => supervisor::docs::completions(shell),
        Command::Man => supervisor::docs::man(),
    };
    match result {
        Ok(status) => status.into(),
        Err(e) => {
            supervisor::note!("vmfleet: {e:#}");
            supervisor::exit::status_of(&e).into()
        }
    }
}

/// `--color WHEN` / `--color=WHEN` as clap's own setting, looked up before clap parses (auto when
/// absent or misspelt: clap then reports the misspelling itself).
fn clap_color(args: impl Iterator<Item = std::ffi::OsString>) -> clap::ColorChoice {
    let args: Vec<String> = args
        .map(|a| a.to_string_lossy().into_owned())
        .take_while(|a| a != "--")
        .collect();
    let value = args.iter().enumerate().rev().find_map(|(i, a)| {
        a.strip_prefix("--color=")
            .map(str::to_string)
            .or_else(|| (a == "--color").then(|| args.get(i + 1).cloned()).flatten())
    });
    match value.as_deref() {
        Some("always") => clap::ColorChoice::Always,
        Some("never") => clap::ColorChoice::Never,
        _ => clap::ColorChoice::Auto,
    }
}

fn show_limit(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".into(), |n| n.to_string())
}
