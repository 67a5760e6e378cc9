//! The command line: `vmfleet run | replay | trace show | host | serve | ctl | bench`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// vmfleet runs fleets of KVM VMs and owns what their guests see of the CPU.
#[derive(Debug, Parser)]
#[command(name = "vmfleet", version, about, long_about = None, after_help = crate::exit::TABLE_HINT, after_long_help = exit_table())]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The exit-status table, for `--help`.
fn exit_table() -> String {
    crate::exit::Status::table()
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
    /// Keep a fleet running and serve a control API on a Unix socket (see `vmfleet ctl`).
    ///
    /// Creates and starts the VMs of FLEET.toml, if given, then serves requests until `vmfleet
    /// ctl shutdown`, SIGINT or SIGTERM; each stops every VM, closes the trace and prints the
    /// final report. Exit status: 0 after a clean shutdown (the report shows each VM's fate); see
    /// `vmfleet --help` for the others.
    Serve(ServeArgs),
    /// Send one request to a running `vmfleet serve` and print its reply.
    ///
    /// Exit status: 0 the daemon carried it out, 7 (refused) the daemon answered with an error,
    /// 8 (unreachable) the daemon could not be reached, 4 (bad_input) the request could not be
    /// built.
    Ctl(CtlArgs),
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
    /// arm64: also send every write vmfleet refuses before the kernel to a scratch VM, and
    /// report both verdicts (the spec's `cross_check = true`; recorded, so replays do it too).
    #[arg(long)]
    pub cross_check: bool,
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
pub struct ServeArgs {
    /// A fleet spec (TOML) whose VMs are created and started at once. Without it the daemon
    /// starts with no VMs (`vmfleet ctl create` adds some).
    pub fleet: Option<PathBuf>,
    /// The control socket, created with mode 0600 [default: $XDG_RUNTIME_DIR/vmfleet.sock, or
    /// /tmp/vmfleet-<uid>.sock without XDG_RUNTIME_DIR].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Record every backend call and every control request into this trace file.
    #[arg(long, value_name = "TRACE")]
    pub record: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The daemon's control socket [default: as `vmfleet serve`'s].
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// Print the daemon's reply as it came: one JSON object.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub request: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Every VM with its state, vCPUs and uptime.
    List,
    /// Create (not start) the VMs of a spec fragment: TOML with one or more [[vm]] tables.
    Create {
        /// The spec fragment; `-` reads it from stdin.
        file: PathBuf,
    },
    /// Start a created VM.
    Start {
        /// The VM's name.
        vm: String,
        /// Park every vCPU at its first guest exit: the VM is paused until `resume`.
        #[arg(long)]
        paused: bool,
    },
    /// Pause a running VM (every vCPU parks).
    Pause {
        /// The VM's name.
        vm: String,
    },
    /// Resume a paused VM.
    Resume {
        /// The VM's name.
        vm: String,
    },
    /// Stop a VM (it stays listed, as exited, until removed).
    Stop {
        /// The VM's name.
        vm: String,
    },
    /// Wait until a VM has exited (its guests halted or failed, or it was stopped).
    Wait {
        /// The VM's name.
        vm: String,
    },
    /// Stop every VM.
    StopAll,
    /// Stop a VM if needed, tear it down and print its final report.
    Remove {
        /// The VM's name.
        vm: String,
    },
    /// A VM's CPU model as the kernel holds it, with its drift report.
    Model {
        /// The VM's name.
        vm: String,
    },
    /// Change a VM's CPU model; refused by the lock once the VM has run.
    SetModel {
        /// The VM's name.
        vm: String,
        /// Features to hide, by `vmfleet host` name, comma-separated (none: hide nothing).
        #[arg(long, value_name = "FEATURES", value_delimiter = ',')]
        hide: Vec<String>,
    },
    /// Stop and remove every VM and end the daemon; prints the fleet's final report.
    Shutdown,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Measure only the floor (skip every vmfleet measurement).
    #[arg(long)]
    pub floor_only: bool,
    /// Measure only the start-throughput figure (skip the 500-VM scale, memory, stop and control
    /// figures).
    #[arg(long)]
    pub start_only: bool,
    /// Measure only the control-plane figures: shutdown of running VMs, and a pause after an
    /// abandoned wait.
    #[arg(long, conflicts_with_all = ["floor_only", "start_only"])]
    pub control_only: bool,
    /// Running VMs (2 vCPUs each) the shutdown figure stops.
    #[arg(
        long,
        default_value_t = crate::bench::SHUTDOWN_VMS,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::bench::MAX_COUNT)),
    )]
    pub shutdown_vms: u32,
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
