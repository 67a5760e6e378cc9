//! # protocol: vmfleet's control vocabulary
//!
//! One enum, [`Request`], names every fleet control request, whoever makes it: a client of
//! `vmfleet serve`'s socket, `vmfleet ctl` (its subcommands map onto it one to one), a signal
//! (`shutdown for exit`), or a replay re-issuing what a trace recorded. It has two encodings, each
//! written in exactly one place:
//!
//! - the socket's newline-delimited JSON ([`wire`]: [`Request::parse`], [`Request::to_line`] and
//!   the replies), written by hand so that every bad line gets an error naming its problem;
//! - the trace form: `Request`'s serde `Serialize`/`Deserialize` (`trace_form.rs`), the layout
//!   format-1 traces already hold on their control stream, kept byte for byte.
//!
//! Op names live in one table ([`Op`]); everything that names an op asks it.
//!
//! Must not: depend on `vcpu`, `tokio` or `clap` (the vocabulary is plain data, shared by the
//! daemon, its client and the recorder), or know how a request is carried out (that is the
//! supervisor's `Fleet::handle`).

#![deny(missing_docs)]

mod trace_form;
pub mod wire;

pub use wire::{Frame, MAX_REQUEST_BYTES, OPS, Response, StatusView, frame, too_long};

use std::fmt;

/// A fleet control request.
///
/// Its serde form is the trace form (see the crate documentation); its socket form is
/// [`Request::parse`] / [`Request::to_line`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Every VM with its state and uptime. Answered from the fleet's state and never recorded
    /// (uptimes are not deterministic), so it has no trace form.
    List,
    /// Create (not start) the VMs of a fleet-spec fragment: TOML with one or more `[[vm]]` tables;
    /// their CPU models are configured, nothing runs.
    Create {
        /// The fragment's TOML text, parsed by the daemon as the create's own spec.
        spec: String,
    },
    /// Start a created VM; `paused`: every vCPU enters its guest once and parks at its first
    /// exit until `resume`.
    Start {
        /// The VM's name.
        vm: String,
        /// Park every vCPU at its first exit (`ctl start --paused`); traces hold a paused start
        /// as a variant of its own.
        paused: bool,
    },
    /// Park every vCPU of a running VM at its next exit, until `resume`.
    Pause {
        /// The VM's name.
        vm: String,
    },
    /// Let a paused VM's vCPUs run on.
    Resume {
        /// The VM's name.
        vm: String,
    },
    /// Stop a VM's vCPUs for good; it stays in the fleet, exited, until `remove`.
    Stop {
        /// The VM's name.
        vm: String,
    },
    /// Wait until the VM has exited (its guests halted or failed, or it was stopped); answered
    /// with its final state.
    Wait {
        /// The VM's name.
        vm: String,
    },
    /// Stop if needed, tear down, answer with the VM's final report.
    Remove {
        /// The VM's name.
        vm: String,
    },
    /// The VM's CPU model as the kernel holds it, with its drift report.
    Model {
        /// The VM's name.
        vm: String,
    },
    /// Change the VM's CPU model: an x86 VM's to one hiding `hide`, an arm64 VM's by the writes
    /// in `set` (the lock refuses a change once the VM has run).
    SetModel {
        /// The VM's name.
        vm: String,
        /// The x86 CPUID features to hide, named as a spec's `hide` names them: the whole new
        /// list, not an addition to the old one (arm64 VMs refuse a nonempty list).
        hide: Vec<String>,
        /// arm64 writes, `REGISTER.FIELD=VALUE` or `REGISTER=VALUE` (a register name or its id
        /// in hex; values `0x…` or decimal), judged by the arm64 model (x86 VMs refuse a
        /// nonempty list). Empty in every request older than arm64 `set-model`: such requests
        /// keep their socket line and trace form byte for byte.
        set: Vec<String>,
    },
    /// Stop every VM (a signal in `vmfleet run`, or the operator's `stop-all`).
    StopAll,
    /// Stop and remove every VM (and end the daemon).
    Shutdown,
    /// Stop every VM and collect its final report, for a process that exits right after: the
    /// kernel objects are left to the process's exit (no `DESTROY_VCPU`/`DESTROY_VM`, no vCPU or
    /// loop thread ends), because closing them one by one costs every live VM's MMU notifier a
    /// call per `munmap`, which grows with the square of the fleet. What `vmfleet serve` carries
    /// out for a `shutdown` or a signal, and `vmfleet run` for a signal. Internal: the socket
    /// never parses it.
    ShutdownForExit,
}

/// The kinds of request: THE table of op names (the socket's `"op"` values), the fields each
/// takes and an example line of each, for parse errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `list`: [`Request::List`].
    List,
    /// `create`: [`Request::Create`].
    Create,
    /// `start`: [`Request::Start`], paused or not.
    Start,
    /// `pause`: [`Request::Pause`].
    Pause,
    /// `resume`: [`Request::Resume`].
    Resume,
    /// `stop`: [`Request::Stop`].
    Stop,
    /// `wait`: [`Request::Wait`].
    Wait,
    /// `remove`: [`Request::Remove`].
    Remove,
    /// `model`: [`Request::Model`].
    Model,
    /// `set-model`: [`Request::SetModel`].
    SetModel,
    /// `stop-all`: [`Request::StopAll`].
    StopAll,
    /// `shutdown`: [`Request::Shutdown`].
    Shutdown,
    /// [`Request::ShutdownForExit`]; internal, never on the socket.
    ShutdownForExit,
}

impl Op {
    /// The ops a client may send, in the order error messages list them.
    pub const WIRE: [Op; 12] = [
        Op::List,
        Op::Create,
        Op::Start,
        Op::Pause,
        Op::Resume,
        Op::Stop,
        Op::Wait,
        Op::Remove,
        Op::Model,
        Op::SetModel,
        Op::StopAll,
        Op::Shutdown,
    ];

    /// The op's name (its `"op"` on the socket, and `vmfleet ctl`'s subcommand).
    pub const fn name(self) -> &'static str {
        match self {
            Op::List => "list",
            Op::Create => "create",
            Op::Start => "start",
            Op::Pause => "pause",
            Op::Resume => "resume",
            Op::Stop => "stop",
            Op::Wait => "wait",
            Op::Remove => "remove",
            Op::Model => "model",
            Op::SetModel => "set-model",
            Op::StopAll => "stop-all",
            Op::Shutdown => "shutdown",
            // Never on the socket: named only so that every request has a name.
            Op::ShutdownForExit => "shutdown-for-exit",
        }
    }

    /// The op a client may send under this name.
    pub fn on_wire(name: &str) -> Option<Op> {
        Op::WIRE.into_iter().find(|op| op.name() == name)
    }

    /// The fields the op takes on the socket (besides `op`).
    pub const fn fields(self) -> &'static [&'static str] {
        match self {
            Op::Create => &["spec"],
            Op::Start => &["vm", "paused"],
            Op::Pause | Op::Resume | Op::Stop | Op::Wait | Op::Remove | Op::Model => &["vm"],
            Op::SetModel => &["vm", "hide", "set"],
            Op::List | Op::StopAll | Op::Shutdown | Op::ShutdownForExit => &[],
        }
    }

    /// How a request of the op looks on the socket, for error messages.
    pub const fn example(self) -> &'static str {
        match self {
            Op::List => r#"{"op":"list"}"#,
            Op::Create => r#"{"op":"create","spec":"[[vm]]\nname = \"NAME\"\n"}"#,
            Op::Start => r#"{"op":"start","vm":"NAME"}"#,
            Op::Pause => r#"{"op":"pause","vm":"NAME"}"#,
            Op::Resume => r#"{"op":"resume","vm":"NAME"}"#,
            Op::Stop => r#"{"op":"stop","vm":"NAME"}"#,
            Op::Wait => r#"{"op":"wait","vm":"NAME"}"#,
            Op::Remove => r#"{"op":"remove","vm":"NAME"}"#,
            Op::Model => r#"{"op":"model","vm":"NAME"}"#,
            Op::SetModel => r#"{"op":"set-model","vm":"NAME","hide":["avx2"]}"#,
            Op::StopAll => r#"{"op":"stop-all"}"#,
            Op::Shutdown => r#"{"op":"shutdown"}"#,
            Op::ShutdownForExit => r#"{"op":"shutdown"}"#,
        }
    }
}

impl Request {
    /// The request's kind.
    pub fn kind(&self) -> Op {
        match self {
            Request::List => Op::List,
            Request::Create { .. } => Op::Create,
            Request::Start { .. } => Op::Start,
            Request::Pause { .. } => Op::Pause,
            Request::Resume { .. } => Op::Resume,
            Request::Stop { .. } => Op::Stop,
            Request::Wait { .. } => Op::Wait,
            Request::Remove { .. } => Op::Remove,
            Request::Model { .. } => Op::Model,
            Request::SetModel { .. } => Op::SetModel,
            Request::StopAll => Op::StopAll,
            Request::Shutdown => Op::Shutdown,
            Request::ShutdownForExit => Op::ShutdownForExit,
        }
    }

    /// The op's name (see [`Op::name`]).
    pub fn op(&self) -> &'static str {
        self.kind().name()
    }

    /// The VM the request is about, if it is about one.
    pub fn vm(&self) -> Option<&str> {
        match self {
            Request::Start { vm, .. }
            | Request::Pause { vm }
            | Request::Resume { vm }
            | Request::Stop { vm }
            | Request::Wait { vm }
            | Request::Remove { vm }
            | Request::Model { vm }
            | Request::SetModel { vm, .. } => Some(vm),
            Request::List
            | Request::Create { .. }
            | Request::StopAll
            | Request::Shutdown
            | Request::ShutdownForExit => None,
        }
    }
}

impl fmt::Display for Request {
    /// The request as traces and transcripts show it (`start --paused a`, `stop all`, ...). These
    /// lines are in recorded transcripts, so they keep the spelling they had before ops were
    /// named in one table: `stop all` and `shutdown for exit` with spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Create { spec } => {
                write!(f, "create ({} lines of spec)", spec.lines().count())
            }
            Request::Start { vm, paused: true } => write!(f, "start --paused {vm}"),
            Request::SetModel { vm, hide, set } if set.is_empty() => {
                write!(f, "{} {vm} hide={}", self.op(), hide.join(","))
            }
            Request::SetModel { vm, hide, set } if hide.is_empty() => {
                write!(f, "{} {vm} set={}", self.op(), set.join(","))
            }
            Request::SetModel { vm, hide, set } => write!(
                f,
                "{} {vm} hide={} set={}",
                self.op(),
                hide.join(","),
                set.join(",")
            ),
            Request::StopAll => f.write_str("stop all"),
            Request::ShutdownForExit => f.write_str("shutdown for exit"),
            Request::List | Request::Shutdown => f.write_str(self.op()),
            Request::Start { vm, .. }
            | Request::Pause { vm }
            | Request::Resume { vm }
            | Request::Stop { vm }
            | Request::Wait { vm }
            | Request::Remove { vm }
            | Request::Model { vm } => write!(f, "{} {vm}", self.op()),
        }
    }
}
