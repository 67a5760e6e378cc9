//! One exit-status table for every `vmfleet` command.
//!
//! Scripts and CI tell outcomes apart by the exit status alone, so each status means one thing
//! whichever command returns it. `replay` exits 0 when the replay matched its recording, whatever
//! the recorded VMs did: a VM that failed on purpose in the recording is a faithful replay, not a
//! failure; only a divergence is [`Status::Divergence`].
//!
//! Commands return `anyhow::Result<Status>`. An error carries its status when the code that
//! raised it knew what it meant ([`StatusExt::or_status`]); an error that carries none is
//! [`Status::Error`]. `main` looks for the outermost [`Failure`] in an error's chain.

use serde::Serialize;
use std::fmt;
use std::process::ExitCode;

/// The exit status of every `vmfleet` command. The numbers are a promise: never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Everything asked for was done (`replay`: the replay matched the recording).
    Success = 0,
    /// `run` / `serve`: at least one VM failed (a guest fault, a failed call, a refused model).
    VmFailed = 1,
    /// The command line is wrong (clap's own usage errors exit 2 as well).
    Usage = 2,
    /// `replay`: the replayed run differs from its recording.
    Divergence = 3,
    /// An input (spec, trace, template, request) is unreadable, malformed or corrupt.
    BadInput = 4,
    /// A trace was cut short (no end marker): it was read to its last whole event.
    Incomplete = 5,
    /// `/dev/kvm` is needed and cannot be used.
    NoKvm = 6,
    /// `ctl`: the daemon refused the request (or vmfleet's lock did); `check`: a host cannot
    /// run the template, or a register blocks the guest's move.
    Refused = 7,
    /// `ctl`: no daemon answers at the socket, or the one there is not trusted.
    Unreachable = 8,
    /// `bench`: a measured figure missed its target.
    TargetMissed = 9,
    /// Anything else: an I/O error, a file that exists (see `--force`), an internal error.
    Error = 10,
}

impl Status {
    /// Every status, in numeric order.
    pub const ALL: [Status; 11] = [
        Status::Success,
        Status::VmFailed,
        Status::Usage,
        Status::Divergence,
        Status::BadInput,
        Status::Incomplete,
        Status::NoKvm,
        Status::Refused,
        Status::Unreachable,
        Status::TargetMissed,
        Status::Error,
    ];

    /// The number the process exits with.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status's name in JSON output and in the table (snake_case).
    pub fn name(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::VmFailed => "vm_failed",
            Status::Usage => "usage",
            Status::Divergence => "divergence",
            Status::BadInput => "bad_input",
            Status::Incomplete => "incomplete",
            Status::NoKvm => "no_kvm",
            Status::Refused => "refused",
            Status::Unreachable => "unreachable",
            Status::TargetMissed => "target_missed",
            Status::Error => "error",
        }
    }

    /// One line for people: what the status means, and which commands return it.
    pub fn meaning(self) -> &'static str {
        match self {
            Status::Success => {
                "success (replay: the replay matched the recording, whatever the recorded VMs did)"
            }
            Status::VmFailed => "run, serve: a VM failed",
            Status::Usage => "usage error: a bad command line",
            Status::Divergence => "replay: the replay diverged from the recording",
            Status::BadInput => {
                "unreadable, malformed or corrupt input (spec, trace, request), named with where"
            }
            Status::Incomplete => "a trace cut short: read up to its last whole event",
            Status::NoKvm => "/dev/kvm is needed and cannot be used",
            Status::Refused => {
                "ctl: the daemon or vmfleet's lock refused the request; check: a register blocks \
                 the guest's move"
            }
            Status::Unreachable => {
                "ctl: no daemon answers at the socket, or it runs as another user"
            }
            Status::TargetMissed => "bench: a figure missed its target",
            Status::Error => "any other error (I/O, an existing file without --force, ...)",
        }
    }

    /// The table, as `--help` and the README print it.
    pub fn table() -> String {
        let mut text = String::from("Exit status (every command):\n");
        for status in Status::ALL {
            text += &format!(
                "  {:>2}  {:<13}  {}\n",
                status.code(),
                status.name(),
                status.meaning()
            );
        }
        text
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> Self {
        ExitCode::from(status.code())
    }
}

/// What `-h` says about the table `--help` prints.
pub const TABLE_HINT: &str = "Exit status: 0 success; see `vmfleet --help` for the table.";

/// An error that knows its exit status. Its message is the wrapped error's whole chain.
#[derive(Debug)]
pub struct Failure {
    /// The status the process exits with.
    pub status: Status,
    error: anyhow::Error,
}

impl Failure {
    /// An error with a status.
    pub fn new(status: Status, error: impl Into<anyhow::Error>) -> Self {
        Failure {
            status,
            error: error.into(),
        }
    }

    /// An error with a status and a message.
    pub fn msg(status: Status, message: impl fmt::Display) -> Self {
        Failure::new(status, anyhow::anyhow!("{message}"))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Failure {}

/// Attach an exit status to an error.
pub trait StatusExt<T> {
    /// On error, the process exits with `status` (unless an outer error says otherwise).
    fn or_status(self, status: Status) -> anyhow::Result<T>;
}

impl<T, E> StatusExt<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn or_status(self, status: Status) -> anyhow::Result<T> {
        self.map_err(|e| {
            let error: anyhow::Error = e.into();
            // Keep a status already attached deeper down: the innermost knows best.
            if error.chain().any(|c| c.downcast_ref::<Failure>().is_some()) {
                error
            } else {
                Failure::new(status, error).into()
            }
        })
    }
}

/// The status an error exits with: its innermost [`Failure`]'s, else [`Status::Error`].
pub fn status_of(error: &anyhow::Error) -> Status {
    error
        .chain()
        .filter_map(|c| c.downcast_ref::<Failure>())
        .last()
        .map_or(Status::Error, |f| f.status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn codes_are_distinct_and_in_order() {
        for (i, status) in Status::ALL.iter().enumerate() {
            assert_eq!(usize::from(status.code()), i, "{status}");
        }
    }

    #[test]
    fn an_error_keeps_its_status_through_context() {
        let e: anyhow::Result<()> = Err(anyhow::anyhow!("frame 3 is corrupt"));
        let e = e
            .or_status(Status::BadInput)
            .context("reading trace t")
            .or_status(Status::Error)
            .unwrap_err();
        assert_eq!(status_of(&e), Status::BadInput);
        assert_eq!(format!("{e:#}"), "reading trace t: frame 3 is corrupt");
    }

    #[test]
    fn an_error_without_status_is_an_error() {
        assert_eq!(status_of(&anyhow::anyhow!("x")), Status::Error);
    }

    #[test]
    fn the_table_names_every_status() {
        let table = Status::table();
        for status in Status::ALL {
            assert!(table.contains(status.name()), "{table}");
        }
    }
}
