//! What the terminal gets: whether stdout and stderr are coloured (`--color`, `NO_COLOR`, and
//! whether each is a terminal) and whether progress bars are drawn (only on a terminal).
//!
//! Decided once in `main` ([`Term::init`]); commands ask [`term`]. Machine output (`--json`) is
//! never coloured, whatever `--color` says.

use crate::cli::ColorChoice;
use std::io::IsTerminal as _;
use std::sync::OnceLock;

/// How this process writes to the terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Term {
    /// Colour what goes to stdout (the run table).
    pub stdout_color: bool,
    /// Colour what goes to stderr (log lines).
    pub stderr_color: bool,
    /// Draw progress bars on stderr (it is a terminal).
    pub progress: bool,
}

impl Term {
    /// Nothing coloured, nothing drawn: what a process that never called [`Term::init`] gets.
    pub const PLAIN: Term = Term {
        stdout_color: false,
        stderr_color: false,
        progress: false,
    };

    /// Decide from `--color`, `NO_COLOR` and whether stdout and stderr are terminals.
    pub fn detect(choice: ColorChoice) -> Term {
        let no_color = std::env::var_os("NO_COLOR");
        let stderr_tty = std::io::stderr().is_terminal();
        Term {
            stdout_color: choice.enabled(std::io::stdout().is_terminal(), no_color.as_deref()),
            stderr_color: choice.enabled(stderr_tty, no_color.as_deref()),
            progress: stderr_tty,
        }
    }

    /// Decide once for the whole process; later calls keep the first decision.
    pub fn init(choice: ColorChoice) -> Term {
        *TERM.get_or_init(|| Term::detect(choice))
    }
}

static TERM: OnceLock<Term> = OnceLock::new();

/// The process's [`Term`] ([`Term::PLAIN`] until `main` decided).
pub fn term() -> Term {
    TERM.get().copied().unwrap_or(Term::PLAIN)
}

/// Write a line to stderr, like `eprintln!` but without panicking when stderr is gone (a closed
/// pipe: `vmfleet run 2>&1 | head -1`): nothing is left to tell then.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `text` in ANSI colour `code` (e.g. `"31"` red) when `color`, else as it is.
pub fn paint(text: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn auto_colours_a_terminal_unless_no_color_is_set() {
        let auto = ColorChoice::Auto;
        assert!(auto.enabled(true, None));
        assert!(!auto.enabled(false, None));
        assert!(!auto.enabled(true, Some(OsStr::new("1"))));
        // An empty NO_COLOR does not count (no-color.org).
        assert!(auto.enabled(true, Some(OsStr::new(""))));
        assert!(ColorChoice::Always.enabled(false, Some(OsStr::new("1"))));
        assert!(!ColorChoice::Never.enabled(true, None));
    }

    #[test]
    fn paint_only_when_asked() {
        assert_eq!(paint("failed", "31", true), "\x1b[31mfailed\x1b[0m");
        assert_eq!(paint("failed", "31", false), "failed");
    }
}
