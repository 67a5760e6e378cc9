//! The command line: `vmfleet run | replay | trace show | trace fingerprint | host | serve | ctl |
//! bench | model | check | baseline | template | nfd | completions | man`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// vmfleet runs fleets of KVM VMs and owns what their guests see of the CPU.
#[derive(Debug, Parser)]
#[command(name = "vmfleet", version, about, long_about = None, after_help = crate::exit::TABLE_HINT, after_long_help = exit_table())]
pub struct Cli {
    /// When to colour terminal output (the run table, log lines): `auto` colours only a terminal,
    /// and not when NO_COLOR is set to anything non-empty.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// `--color`: when to write ANSI colour codes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set (non-empty).
    #[default]
    Auto,
    /// Always, even into a pipe or file.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether to colour a stream that `is_terminal` or not, with NO_COLOR's value `no_color`.
    pub fn enabled(self, is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => is_terminal && no_color.is_none_or(|v| v.is_empty()),
        }
    }
}

/// The exit-status table, for `--help`.
fn exit_table() -> String {
    crate::exit::Status::table()
}

/// The subcommands of `vmfleet`.
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
    /// Talks only to a daemon running as this user or root. Exit status: 0 the daemon carried it
    /// out, 7 (refused) the daemon answered with an error, 8 (unreachable) the daemon could not
    /// be reached or runs as another user, 4 (bad_input) the request could not be built.
    Ctl(CtlArgs),
    /// Measure vmfleet's figures on this host's /dev/kvm, side by side with the floor (a minimal
    /// start loop straight on kvm-ioctls). Run it from a release build (`cargo xtask bench`).
    Bench(BenchArgs),
    /// Ask the model of a host (from its fingerprint) what it would answer; needs no /dev/kvm.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Can hosts run a CPU template, or can a guest move between two hosts? From fingerprints
    /// alone (no /dev/kvm), by the rule engine, so the answers are the kernels'.
    ///
    /// `check TEMPLATE FP...`: per host, every bit or field it cannot give, with the value asked
    /// for, the host's limit, the rule and the name. `check --migrate FROM TO`: arm64, every
    /// register of the guest's model (FROM's default one, or `--template`'s) that does not carry
    /// over to TO, also to an older kernel, judged by TO's kernel rules; x86, every named CPUID
    /// feature the guest sees on FROM that TO cannot give.
    ///
    /// Fingerprints are `vmfleet host --fingerprint --json` or `vmfleet trace fingerprint T
    /// --json` documents. Exit status: 0 every host runs it / the guest carries over, 7 (refused)
    /// a host cannot / something blocks the move, 4 (bad_input) an unreadable file or two that
    /// cannot be compared.
    Check(CheckArgs),
    /// Write a node-feature-discovery local feature file: one Kubernetes label per CPU template
    /// in DIR, `vmfleet.dev/template.NAME=true` if this host can run it and `=false` if not, and
    /// `vmfleet.dev/fingerprint=<digest>`, so that pods select hosts by template
    /// (`nodeSelector: {vmfleet.dev/template.NAME: "true"}`).
    ///
    /// Each template is judged as `vmfleet check TEMPLATE FP` judges it; one for the other
    /// architecture is `false`. NAME is the template's name (its `name`, or its file name
    /// without `.toml`), made a valid label name where it is not (other characters become `-`; a
    /// long name keeps its beginning and a hash). The file is written to a dot-file beside OUT
    /// and renamed over it. Exit status: 0 written, 4 (bad_input) an unreadable fingerprint,
    /// directory or template, two templates with one label, or a file over 64 KiB, 6 (no_kvm) no
    /// --fingerprint and no usable /dev/kvm, 2 (usage) --json with --out -, 10 (error) OUT
    /// cannot be written (its directory must exist).
    Nfd(NfdArgs),
    /// The most capable CPU template every given host can run, field by field by each field's
    /// own rule, with the hosts that limit each choice; from fingerprints alone.
    ///
    /// Prints the template (TOML, the findings as comments on top) or writes it to `--out`.
    /// Hosts of both architectures are refused. Exit status: 0 a baseline was made, 4
    /// (bad_input) an unreadable fingerprint or hosts that cannot share a template.
    Baseline(BaselineArgs),
    /// CPU templates: show one resolved; import one from Firecracker's JSON, export one to it.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Print a shell completion script to stdout, e.g. `vmfleet completions bash >
    /// ~/.local/share/bash-completion/completions/vmfleet`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print vmfleet's man page (roff) to stdout, e.g. `vmfleet man | man -l -`.
    Man,
}

/// A VM index as `--vm` takes it: `3` or `vm3`.
fn parse_vm_index(text: &str) -> Result<u32, String> {
    text.strip_prefix("vm")
        .unwrap_or(text)
        .parse()
        .map_err(|_| format!("`{text}` is not a VM index (write 3 or vm3)"))
}

/// `vmfleet check`'s arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Compare two hosts for a guest's move from the first to the second.
    #[arg(long)]
    pub migrate: bool,
    /// With `--migrate`: the guest's model is this template (resolved on FROM), not FROM's
    /// default one.
    #[arg(long, value_name = "TEMPLATE", requires = "migrate")]
    pub template: Option<PathBuf>,
    /// `TEMPLATE FINGERPRINT...`, or with `--migrate`, FROM's fingerprint then TO's.
    #[arg(value_name = "FILE", num_args = 2.., required = true)]
    pub files: Vec<PathBuf>,
    /// Print one JSON document (schema `vmfleet.check.v1`, or `vmfleet.migrate.v1` with
    /// `--migrate`).
    #[arg(long)]
    pub json: bool,
}

/// `vmfleet nfd`'s arguments.
#[derive(Debug, Args)]
pub struct NfdArgs {
    /// The CPU templates: every `*.toml` in this directory.
    #[arg(long, value_name = "DIR")]
    pub templates: PathBuf,
    /// Judge the host this fingerprint describes (`vmfleet host --fingerprint --json`) instead
    /// of measuring this one on /dev/kvm.
    #[arg(long, value_name = "FP")]
    pub fingerprint: Option<PathBuf>,
    /// The file to write; `-` prints it on stdout.
    #[arg(long, value_name = "FILE", default_value = crate::nfd::DEFAULT_OUT)]
    pub out: PathBuf,
    /// Have node-feature-discovery drop the labels this long after the file was written, unless
    /// it is rewritten first (`# +expiry-time=`): `30m`, `1h`, `1h30m`, `2d`. Use a few times
    /// the interval of whatever rewrites it.
    #[arg(long, value_name = "DURATION", value_parser = crate::nfd::parse_duration)]
    pub expiry: Option<std::time::Duration>,
    /// Print what was written as JSON (schema `vmfleet.nfd.v1`) instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// `vmfleet baseline`'s arguments.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// The hosts' fingerprints (all of one architecture).
    #[arg(value_name = "FINGERPRINT", required = true)]
    pub fingerprints: Vec<PathBuf>,
    /// The template's name.
    #[arg(long, default_value = "baseline")]
    pub name: String,
    /// Write the template to this file (and print the findings) instead of printing it.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print one JSON document (schema `vmfleet.baseline.v1`), the template as TOML text in it.
    #[arg(long)]
    pub json: bool,
}

/// `vmfleet template`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Print a template resolved: names in the catalog's spelling, every bitmap at full width;
    /// with `--fingerprint`, also whether that host can run it and what it cannot give.
    Show {
        /// The template (TOML).
        template: PathBuf,
        /// A host's fingerprint to resolve it on.
        #[arg(long, value_name = "FP")]
        fingerprint: Option<PathBuf>,
        /// Print one JSON document (schema `vmfleet.template.v1`).
        #[arg(long)]
        json: bool,
    },
    /// Read a Firecracker custom CPU template (JSON) and print it as a vmfleet CPU template
    /// (TOML): CPUID bitmaps, register bitmaps and VCPU_INIT features carry over bit for bit;
    /// `kvm_capabilities` and MSR bitmaps are kept in its `[firecracker]` table (MSRs are not
    /// modelled: each is a warning on stderr, and a VM is refused to run with them). Exit status:
    /// 0, 4 (bad_input) for an unreadable or malformed template, 10 (error) when OUT exists.
    ImportFirecracker {
        /// The Firecracker template (JSON, Firecracker's docs/cpu_templates/schema.json).
        file: PathBuf,
        /// Write the TOML here instead of stdout.
        #[arg(short, long, value_name = "OUT.toml")]
        output: Option<PathBuf>,
        /// The template's name (default: FILE's stem).
        #[arg(long)]
        name: Option<String>,
        /// Replace an existing OUT.
        #[arg(long)]
        force: bool,
    },
    /// Print a vmfleet CPU template (TOML) as a Firecracker custom CPU template (JSON): named
    /// features and fields become register ids and bit positions; what Firecracker cannot
    /// express is a warning on stderr. Exit status: 0, 4 (bad_input) for an unreadable or
    /// malformed template, 10 (error) when OUT exists.
    ExportFirecracker {
        /// The vmfleet CPU template (TOML).
        template: PathBuf,
        /// Write the JSON here instead of stdout.
        #[arg(short, long, value_name = "OUT.json")]
        output: Option<PathBuf>,
        /// Replace an existing OUT.
        #[arg(long)]
        force: bool,
    },
}

/// `vmfleet run`'s arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The fleet spec (TOML). Without it, the built-in demo fleet runs.
    pub fleet: Option<PathBuf>,
    /// Record every backend call into this trace file (mode 0600; written as TRACE.partial and
    /// renamed when the run ends). An existing file is refused without --force.
    #[arg(long, value_name = "TRACE")]
    pub record: Option<PathBuf>,
    /// Write the canonical transcript (what `vmfleet replay` prints) to this file (mode 0600).
    /// An existing file is refused without --force.
    #[arg(long, value_name = "PATH")]
    pub transcript: Option<PathBuf>,
    /// Replace existing --record / --transcript files (by rename: a symbolic link is replaced,
    /// never written through), and a .partial file left by an earlier run.
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON (schema `vmfleet.run.v1`, supervisor/schemas/run.v1.schema.json)
    /// instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run the CPU-model part of the fleet on the model of the host this fingerprint describes
    /// (a `vmfleet trace fingerprint T --json` or `vmfleet host --fingerprint --json` file)
    /// instead of /dev/kvm: each call gets what that host would answer; guests cannot run, so
    /// each VM ends at its first KVM_RUN. Prints the transcript (or the report with --json).
    /// Exit status: 0 every VM got to its first run, 1 (vm_failed) one failed before it.
    #[arg(long, value_name = "FP", conflicts_with = "record")]
    pub model: Option<PathBuf>,
    /// arm64: also send every write vmfleet refuses before the kernel to a scratch VM, and
    /// report both verdicts (the spec's `cross_check = true`; recorded, so replays do it too).
    #[arg(long)]
    pub cross_check: bool,
}

/// `vmfleet replay`'s arguments.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The trace to replay.
    pub trace: PathBuf,
    /// Send the trace's calls to the model of the host this fingerprint describes (a
    /// `vmfleet trace fingerprint T --json` or `vmfleet host --fingerprint --json` file)
    /// instead of replaying the job, and list every CPU-model call whose predicted result
    /// differs from the recorded one. Exit status: 0 none differs, 3 (divergence) some do.
    /// With --json: schema `vmfleet.model-replay.v1`.
    #[arg(long, value_name = "FP", conflicts_with_all = ["transcript", "force"])]
    pub model: Option<PathBuf>,
    /// Also write the transcript to this file (mode 0600). An existing file is refused without
    /// --force.
    #[arg(long, value_name = "PATH")]
    pub transcript: Option<PathBuf>,
    /// Replace an existing --transcript file (by rename: a symbolic link is replaced, never
    /// written through).
    #[arg(long)]
    pub force: bool,
    /// Print the replayed report as JSON, exactly as `vmfleet run --json` prints it (schema
    /// `vmfleet.run.v1`), instead of the transcript.
    #[arg(long)]
    pub json: bool,
}

/// The subcommands of `vmfleet trace`.
#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Print a trace's header and events (a trace cut short is read up to its last whole event).
    Show {
        /// The trace file.
        trace: PathBuf,
        /// One JSON object per line (schema `vmfleet.trace-show.v1`): the header, then each event,
        /// then how the trace ends.
        #[arg(long)]
        json: bool,
        /// Only the events of this VM (its index: `3` or `vm3`) and its vCPUs.
        #[arg(long, value_name = "VM", value_parser = parse_vm_index)]
        vm: Option<u32>,
        /// Only the events of vCPUs with this index (of `--vm`, or of every VM).
        #[arg(long, value_name = "N")]
        vcpu: Option<u32>,
        /// Only calls of this kind, as `trace show` prints its first word (`SET_CPUID2`, `RUN`,
        /// `SET_ONE_REG`, `create`, ...; any case); repeat for several.
        #[arg(long = "call", value_name = "KIND")]
        calls: Vec<String>,
    },
    /// Rewrite a trace in the current format (format 4: compressed blocks), each stream's calls
    /// as they were (a stream's consecutive RUNs become one batch where the first stood, the exits
    /// between its first and last getting even times); a trace cut short stays cut short. Exit status: 0, 4 (bad_input) for a corrupt
    /// or foreign trace, 5 (incomplete) when it was cut short (it is converted all the same), 10
    /// for an existing OUT without --force.
    Convert {
        /// The trace to read (any format).
        input: PathBuf,
        /// Where to write it (mode 0600; an existing file is refused without --force).
        output: PathBuf,
        /// Replace an existing OUT.
        #[arg(long)]
        force: bool,
    },
    /// Print the fingerprint of the host a trace was recorded on: its header's host facts plus
    /// the recorded answers the kernel's behaviour depends on (supported CPUID and the host's
    /// rewrites on x86; preferred target, register list, limits, firmware defaults and writable
    /// masks on arm64). Facts the trace lacks are null. Exit status: 0, 4 (bad_input) for a
    /// corrupt or foreign trace, 5 (incomplete) for one cut short.
    Fingerprint {
        /// The trace file.
        trace: PathBuf,
        /// Print the document as JSON (schema `vmfleet.fingerprint.v1`,
        /// supervisor/schemas/fingerprint.v1.schema.json) instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

/// The subcommands of `vmfleet model`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Read calls as JSON lines on stdin and answer each, on stdout, with the result the host
    /// FP describes would give (one JSON answer per line, schema `vmfleet.model-judge.v1`).
    ///
    /// A call: `{"call":"set_one_reg","vcpu":0,"id":"0x603000000013c020","value":"0x11"}`;
    /// `"vm"` (default 0) and `"vcpu"` (default 0) name the object, VMs and vCPUs come into
    /// being when first named. Calls: check_extension (cap), get_supported_cpuid,
    /// get_emulated_cpuid, set_cpuid2 (table: [{function,index,flags,eax,ebx,ecx,edx}]),
    /// get_cpuid2, arm_preferred_target, arm_get_reg_writable_masks, enable_cap (cap),
    /// arm_vcpu_init (target, features: "0x.."), get_reg_list, get_one_reg (id), set_one_reg
    /// (id, value), run. An answer: `{"ok":true,"reply":...}`, `{"ok":false,"errno":"EINVAL",
    /// "origin":"kernel"}` (or "vmfleet_lock"), `{"ok":null,"unknown":"why"}` when the
    /// fingerprint lacks the fact, `{"ok":true,"judged":false}` for a call that is not part of
    /// the CPU model, `{"error":"..."}` for a line that is not a call. Exit status: 0, 4
    /// (bad_input) when the fingerprint is unreadable.
    Judge {
        /// The fingerprint file (`vmfleet.fingerprint.v1`).
        fingerprint: PathBuf,
    },
}

/// `vmfleet host`'s arguments.
#[derive(Debug, Args)]
pub struct HostArgs {
    /// Print JSON (schema `vmfleet.host.v1`; with --fingerprint `vmfleet.fingerprint.v1`) instead
    /// of text.
    #[arg(long)]
    pub json: bool,
    /// Print this host's fingerprint instead: the same document `vmfleet trace fingerprint`
    /// makes from a trace, measured live on a scratch VM (equal to that of a trace of the default
    /// fleet recorded here).
    #[arg(long)]
    pub fingerprint: bool,
}

/// `vmfleet serve`'s arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A fleet spec (TOML) whose VMs are created and started at once. Without it the daemon
    /// starts with no VMs (`vmfleet ctl create` adds some).
    pub fleet: Option<PathBuf>,
    /// The control socket, created with mode 0600 in a directory of this user's [default:
    /// $XDG_RUNTIME_DIR/vmfleet/vmfleet.sock; without XDG_RUNTIME_DIR /run/vmfleet/vmfleet.sock
    /// for root, /tmp/vmfleet-<uid>/vmfleet.sock for others; the directory is created 0700].
    // This doc is the help text, where `<uid>` is a placeholder, not an HTML tag to rustdoc.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Record every backend call and every control request into this trace file (mode 0600;
    /// written as TRACE.partial and renamed at shutdown). An existing file is refused without
    /// --force.
    #[arg(long, value_name = "TRACE")]
    pub record: Option<PathBuf>,
    /// Replace an existing --record trace (by rename: a symbolic link is replaced, never written
    /// through), and a .partial file left by an earlier daemon.
    #[arg(long)]
    pub force: bool,
}

/// `vmfleet ctl`'s arguments: where the daemon is, how to print, and the request.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The daemon's control socket [default: as `vmfleet serve`'s].
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// Print the daemon's reply as one JSON object (schema `vmfleet.ctl.v1`): as it came, with
    /// its schema added.
    #[arg(long, global = true)]
    pub json: bool,
    /// The request to send.
    #[command(subcommand)]
    pub request: CtlCommand,
}

/// The requests `vmfleet ctl` sends, one subcommand each.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Every VM with its state, vCPUs and uptime.
    List,
    /// Create (not start) the VMs of a spec fragment: TOML with one or more [[vm]] tables.
    // This doc is the help text, where `[[vm]]` is TOML, not a link to rustdoc.
    #[allow(rustdoc::broken_intra_doc_links)]
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
    /// Change a VM's CPU model; refused by the lock once the VM has run (after the first run,
    /// only a write identical to what the VM holds passes).
    SetModel {
        /// The VM's name.
        vm: String,
        /// x86: features to hide, by `vmfleet host` name, comma-separated (none: hide nothing).
        #[arg(long, value_name = "FEATURES", value_delimiter = ',')]
        hide: Vec<String>,
        /// arm64: one write, REGISTER.FIELD=VALUE (ID_AA64ISAR0_EL1.AES=0) or REGISTER=VALUE
        /// (MIDR_EL1=0x410fd4f1; a register name or its KVM id in hex), judged by the arm64
        /// model like a spec's `id_registers` and `registers`; repeat for more.
        #[arg(long, value_name = "REGISTER[.FIELD]=VALUE")]
        set: Vec<String>,
    },
    /// Stop and remove every VM and end the daemon; prints the fleet's final report.
    Shutdown,
    /// Send raw JSON request lines and print each reply line as it came.
    ///
    /// Sends REQUEST, or without it each line of stdin (blank lines are skipped), on one
    /// connection, one line at a time, and prints each reply as soon as it comes. Exit status: 0
    /// every reply was ok, 7 (refused) at least one was not, 8 (unreachable) the daemon could not
    /// be reached, is not trusted, or closed the connection before answering every line.
    Send {
        /// One request line, such as '{"op":"list"}' [default: each line of stdin].
        request: Option<String>,
    },
}

/// `vmfleet bench`'s arguments: which figures to measure, and how often.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Print the report as JSON (schema `vmfleet.bench.v1`) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Measure only the floor (skip every vmfleet measurement).
    #[arg(long)]
    pub floor_only: bool,
    /// Measure only the start-throughput figure (skip the scale, memory, stop, control, recording
    /// and replay figures).
    #[arg(long)]
    pub start_only: bool,
    /// Measure only the control-plane figures: shutdown of running VMs, and a pause after an
    /// abandoned wait.
    #[arg(long, conflicts_with_all = ["floor_only", "start_only"])]
    pub control_only: bool,
    /// Running VMs (2 vCPUs each) of the `vmfleet serve` the shutdown figure sends SIGTERM to.
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
        default_value = "1,10,100,1000",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::bench::MAX_COUNT)),
    )]
    pub counts: Vec<u32>,
    /// Also write the figures as SVG charts into this directory (created if missing):
    /// start.svg, record.svg and replay.svg, each when its figures were measured.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<std::path::PathBuf>,
    /// Measure only the recording figure (start recorded vs not) and the trace and replay
    /// figures.
    #[arg(long, conflicts_with_all = ["floor_only", "start_only", "control_only"])]
    pub record_only: bool,
    /// Measure only the scale and supervisor-memory figures (the scale fleet, `--scale-vms`) and
    /// the stop latency.
    #[arg(long, conflicts_with_all = ["floor_only", "start_only", "control_only", "record_only"])]
    pub scale_only: bool,
    /// The bench's own child process for the scale and memory figures: bring `--scale-vms` VMs
    /// up in this fresh process, measure, stop them, print the measurement as one JSON line.
    #[arg(long, hide = true, conflicts_with_all = ["floor_only", "start_only", "control_only", "record_only", "scale_only", "json"])]
    pub scale_child: bool,
    /// VM counts of the recording figure (vmfleet's start recorded vs not, 2 vCPUs per VM).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,1000",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::bench::MAX_COUNT)),
    )]
    pub record_counts: Vec<u32>,
    /// Running VMs (2 vCPUs each) of the scale and supervisor-memory figures.
    #[arg(
        long,
        default_value_t = crate::bench::SCALE_VMS,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::bench::MAX_COUNT)),
    )]
    pub scale_vms: u32,
    /// VMs (2 vCPUs each) of the `vmfleet run --record` whose trace is measured and replayed.
    #[arg(
        long,
        default_value_t = crate::bench::TRACE_VMS,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::bench::MAX_COUNT)),
    )]
    pub trace_vms: u32,
    /// Runs per VM count and side; the report gives the median.
    #[arg(
        long,
        default_value_t = crate::bench::DEFAULT_RUNS,
        value_parser = clap::value_parser!(u32).range(1..=1000),
    )]
    pub runs: u32,
}
