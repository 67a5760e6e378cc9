//! The command line: `vmfleet run | replay | trace show | host | bench`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// vmfleet runs fleets of KVM VMs and owns what their guests see of the CPU.
#[derive(Debug, Parser)]
#[command(name = "vmfleet", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a fleet on this host's /dev/kvm (the built-in demo fleet when no spec is given).
    Run(RunArgs),
    /// Re-run the job recorded in a trace against the trace itself; needs no /dev/kvm.
    Replay(ReplayArgs),
    /// Inspect traces.
    #[command(subcommand)]
    Trace(TraceCommand),
    /// This host's fingerprint and its supported CPUID, feature by feature.
    Host(HostArgs),
    /// Measure vmfleet's figures on this host's /dev/kvm, side by side with the floor (a minimal
    /// start loop straight on kvm-ioctls). Run it from a release build (`cargo xtask bench`).
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The fleet spec (TOML). Without it, the built-in demo fleet runs.
    pub fleet: Option<PathBuf>,
    /// Record every backend call into this trace file.
    #[arg(long, value_name = "TRACE")]
    pub record: Option<PathBuf>,
    /// Write the canonical transcript (what `vmfleet replay` prints) to this file.
    #[arg(long, value_name = "PATH")]
    pub transcript: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The trace to replay.
    pub trace: PathBuf,
    /// Also write the transcript to this file.
    #[arg(long, value_name = "PATH")]
    pub transcript: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Print a trace's header and events (a trace cut short is read up to its last whole event).
    Show {
        /// The trace file.
        trace: PathBuf,
        /// One JSON object per line: the header, then each event.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct HostArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Measure only the floor (skip every vmfleet measurement).
    #[arg(long)]
    pub floor_only: bool,
    /// VM counts of the start-throughput figure (2 vCPUs per VM).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,10,100",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::bench::MAX_COUNT)),
    )]
    pub counts: Vec<u32>,
    /// Runs per VM count and side; the report gives the median.
    #[arg(
        long,
        default_value_t = crate::bench::DEFAULT_RUNS,
        value_parser = clap::value_parser!(u32).range(1..=1000),
    )]
    pub runs: u32,
}
