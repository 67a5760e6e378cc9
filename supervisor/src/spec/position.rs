//! Where a spec error points: every error names `file:line:col` of the key or value at fault (the
//! start of the file when nothing narrower is to blame), because a fleet spec is hand-written and
//! an error without a position wastes the operator's time. [`Source::at`] is the one place such
//! an error is made.

use super::SpecError;
use std::ops::Range;

/// The text being parsed and what errors call it (a path).
#[derive(Clone, Copy)]
pub(super) struct Source<'a> {
    pub(super) text: &'a str,
    pub(super) name: &'a str,
}

impl Source<'_> {
    /// An error at `span` of the text (the start of the file when `None`).
    pub(super) fn at(&self, span: Option<Range<usize>>, message: String) -> SpecError {
        // Nothing narrower to blame: the start of the file.
        let (line, column) = line_column(self.text, span.map_or(0, |s| s.start));
        SpecError {
            source_name: self.name.to_string(),
            line,
            column,
            message,
        }
    }

    /// The 1-based line of a byte offset (what the duplicate-name error cites).
    pub(super) fn line(&self, offset: usize) -> usize {
        line_column(self.text, offset).0
    }
}

/// A TOML error's message, in the spec's words (`missing field` is a key here).
pub(super) fn toml_message(e: &toml::de::Error) -> String {
    e.message()
        .trim()
        .replace("missing field", "missing key")
        .replace("unknown field", "unknown key")
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
