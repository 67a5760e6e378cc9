//! The `file-length` rule: no source file outside tests is over [`MAX_LINES`] lines, except the
//! debts in [`LENGTH_DEBTS`], each held to the length it had when the rule came in.
//!
//! Why: issue 11 asks that "no source file outside tests is over 800 lines"; a file that long
//! holds several things that want modules of their own. Test code (a `tests/` directory, a
//! `tests.rs`, a file under a `tests/` module directory; see [`super::is_test`]) is exempt:
//! a table of cases is long by nature. Inline `#[cfg(test)] mod tests` blocks count with their
//! file.
//!
//! Issue 11's refactor paid every debt (the seven files over the limit were split into modules),
//! so the list is empty; the mechanism stays for the rules' tests and says how a debt behaves:
//! each may shrink and never grow: a file over its ceiling is a violation, a listed file that is now at most
//! [`MAX_LINES`] lines is a violation until its entry is removed (so the list only gets
//! shorter), and so is an entry naming a file that no longer exists. A file that shrank but is
//! still over the limit gets a note: lower its ceiling here to keep the gain.

use super::{Source, Violation};
use std::collections::BTreeMap;

/// The most lines a source file outside tests may have.
pub const MAX_LINES: usize = 800;

pub const RULE: &str = "file-length";

/// Files over [`MAX_LINES`] when the rule came in, with their line count then as a ceiling
/// (paths relative to the workspace root). Paid off by splitting them (issue 11's refactor);
/// never add to this list.
pub const LENGTH_DEBTS: &[(&str, usize)] = &[];

/// This file, to point a stale entry of [`LENGTH_DEBTS`] at its own line.
const THIS_FILE: &str = "xtask/src/tidy/length.rs";
const THIS_TEXT: &str = include_str!("length.rs");

/// The line of this file that lists `path` as a debt (that of `LENGTH_DEBTS` if none does: a
/// test's own list).
fn entry_line(path: &str) -> usize {
    super::entry_line(THIS_TEXT, "pub const LENGTH_DEBTS", path)
}

/// Check every file against the limit and `debts`.
pub fn check(
    sources: &[Source],
    debts: &[(&str, usize)],
    max_lines: usize,
    out: &mut Vec<Violation>,
    notes: &mut Vec<String>,
) {
    let mut debts: BTreeMap<&str, usize> = debts.iter().copied().collect();
    let entry = |path: &str, what: String| Violation {
        path: THIS_FILE.to_string(),
        line: entry_line(path),
        rule: RULE,
        what,
    };
    for source in sources {
        let debt = debts.remove(source.path);
        if super::is_test(source.path) {
            if debt.is_some() {
                out.push(entry(
                    source.path,
                    format!(
                        "{} is test code, which has no length limit: remove it from LENGTH_DEBTS",
                        source.path
                    ),
                ));
            }
            continue;
        }
        let lines = source.text.lines().count();
        match debt {
            None if lines > max_lines => out.push(source.violation(
                max_lines + 1,
                RULE,
                format!(
                    "{lines} lines, over the limit of {max_lines} for a source file outside tests: \
                     split it into modules"
                ),
            )),
            None => {}
            Some(_) if lines <= max_lines => out.push(entry(
                source.path,
                format!(
                    "{} is {lines} lines now, within the limit of {max_lines}: the debt is paid, \
                     remove its entry from LENGTH_DEBTS",
                    source.path
                ),
            )),
            Some(ceiling) if lines > ceiling => out.push(source.violation(
                ceiling + 1,
                RULE,
                format!(
                    "{lines} lines, over its ceiling of {ceiling} in LENGTH_DEBTS ({THIS_FILE}): \
                     a length debt may shrink, never grow; move code out instead (the limit for \
                     source files is {max_lines})"
                ),
            )),
            Some(ceiling) if lines < ceiling => notes.push(format!(
                "{}: {lines} lines, under its ceiling of {ceiling}: lower it in LENGTH_DEBTS \
                 ({THIS_FILE}:{}) to keep the gain",
                source.path,
                entry_line(source.path)
            )),
            Some(_) => {}
        }
    }
    for (path, _) in debts {
        out.push(entry(
            path,
            format!("{path} is listed in LENGTH_DEBTS but there is no such file: remove its entry"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tidy::testing::shown;

    fn run(files: &[(&str, usize)], debts: &[(&str, usize)]) -> (Vec<String>, Vec<String>) {
        let texts: Vec<(String, String)> = files
            .iter()
            .map(|(p, n)| (p.to_string(), "// x\n".repeat(*n)))
            .collect();
        let sources: Vec<Source> = texts.iter().map(|(p, t)| Source::new(p, t)).collect();
        let (mut out, mut notes) = (Vec::new(), Vec::new());
        check(&sources, debts, 10, &mut out, &mut notes);
        (shown(&out), notes)
    }

    #[test]
    fn a_new_long_file_is_reported_at_the_first_line_over() {
        let (found, notes) = run(&[("a/src/long.rs", 11), ("a/src/ok.rs", 10)], &[]);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("a/src/long.rs:11: file-length: 11 lines, over the limit of 10"),
            "{}",
            found[0]
        );
        assert!(notes.is_empty());
    }

    #[test]
    fn tests_have_no_limit() {
        let files = [
            ("a/tests/cli.rs", 50),
            ("a/src/guest/tests.rs", 50),
            ("a/src/decoder/tests/cases.rs", 50),
        ];
        assert_eq!(run(&files, &[]), (vec![], vec![]));
        let (found, _) = run(&files[..1], &[("a/tests/cli.rs", 50)]);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("is test code"), "{}", found[0]);
    }

    #[test]
    fn a_debt_may_shrink_and_never_grow() {
        // At its ceiling: fine.
        assert_eq!(
            run(&[("a/src/big.rs", 20)], &[("a/src/big.rs", 20)]),
            (vec![], vec![])
        );
        // Grown: reported at the first line over the ceiling.
        let (found, _) = run(&[("a/src/big.rs", 21)], &[("a/src/big.rs", 20)]);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("a/src/big.rs:21: file-length: 21 lines, over its ceiling of 20"),
            "{}",
            found[0]
        );
        // Shrunk but still over the limit: a note, no violation.
        let (found, notes) = run(&[("a/src/big.rs", 15)], &[("a/src/big.rs", 20)]);
        assert!(found.is_empty(), "{found:#?}");
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("a/src/big.rs: 15 lines, under its ceiling of 20"),
            "{}",
            notes[0]
        );
    }

    #[test]
    fn a_paid_or_stale_debt_must_leave_the_list() {
        let (found, _) = run(&[("a/src/big.rs", 10)], &[("a/src/big.rs", 20)]);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("xtask/src/tidy/length.rs:"),
            "{}",
            found[0]
        );
        assert!(
            found[0].contains("remove its entry from LENGTH_DEBTS"),
            "{}",
            found[0]
        );
        let (found, _) = run(&[], &[("a/src/gone.rs", 900)]);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].contains("a/src/gone.rs is listed in LENGTH_DEBTS but there is no such file")
        );
    }

    #[test]
    fn a_stale_entry_points_at_the_list() {
        // No file is listed: an entry the rule complains about is pointed at the list itself.
        let text: Vec<&str> = THIS_TEXT.lines().collect();
        let fallback = entry_line("not/listed.rs");
        assert!(text[fallback - 1].contains("pub const LENGTH_DEBTS"));
        // Every debt is over the limit (else it would not be a debt) and listed once.
        let mut seen = std::collections::BTreeSet::new();
        for (path, ceiling) in LENGTH_DEBTS {
            assert!(*ceiling > MAX_LINES, "{path}");
            assert!(seen.insert(path), "{path} twice");
        }
    }
}
