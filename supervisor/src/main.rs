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
    let result = match cli.command {
        Command::Run(args) => commands::run(&args),
        Command::Replay(args) => commands::replay(&args),
        Command::Trace(TraceCommand::Show { trace, json }) => commands::trace_show(&trace, json),
        Command::Host(args) => commands::host(&args),
        Command::Bench(args) => commands::bench(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmfleet: {e:#}");
            ExitCode::from(2)
        }
    }
}
