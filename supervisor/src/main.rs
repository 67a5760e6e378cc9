//! `vmfleet`: see `vmfleet --help`.

use clap::Parser;
use std::process::ExitCode;
use supervisor::cli::{Cli, Command, TraceCommand};
use supervisor::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // A big fleet needs thousands of file descriptors; a failure here only matters to one.
    match commands::raise_fd_limit() {
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
        Command::Trace(TraceCommand::Show { trace, json }) => commands::trace_show(&trace, json),
        Command::Host(args) => commands::host(&args),
        Command::Serve(args) => supervisor::serve::serve(&args),
        Command::Ctl(args) => supervisor::ctl::ctl(&args),
        Command::Bench(args) => commands::bench(&args),
        Command::Completions { shell } => supervisor::docs::completions(shell),
        Command::Man => supervisor::docs::man(),
    };
    match result {
        Ok(status) => status.into(),
        Err(e) => {
            eprintln!("vmfleet: {e:#}");
            supervisor::exit::status_of(&e).into()
        }
    }
}

fn show_limit(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".into(), |n| n.to_string())
}
