//! `cargo xtask tidy`: the workspace's source rules, checked on every `.rs` file of the tree, so
//! that what ARCHITECTURE.md promises about the code stays true without anyone re-reading it.
//!
//! The rules (each module's doc says exactly what it checks and lists its exceptions):
//!
//! - `unsafe-outside-kvm` and `unsafe-without-safety` ([`unsafe_code`]): `unsafe` only in the
//!   KVM backend, `vcpu/src/hypervisor/kvm/`, and every `unsafe` block or impl there under a
//!   `// SAFETY:` comment;
//! - `target-arch-outside-kvm` ([`target_arch`]): `cfg(target_arch ...)` only in the backend;
//! - `file-length` ([`length`]): no source file outside tests over [`length::MAX_LINES`]
//!   lines, but for the listed debts, which may shrink and never grow;
//! - `vcpu-layers` ([`vcpu_layers`]): the vcpu crate's four parts (`hypervisor/`, `model/`,
//!   `guests/`, `runtime/`) depend on each other one way: the hypervisor boundary on none of the
//!   others, the CPU models on the boundary only (never the backend), the guests never on the
//!   runtime or the backend, the runtime never on the backend.
//!
//! `cargo xtask tidy --all` and `cargo xtask test` run `cargo fmt --check` and clippy too
//! ([`fmt_clippy`]); a failure there names the files and lines as well.
//!
//! A violation prints as `path:line: rule: what`. The files are read with a small lexer
//! ([`lex`]) that keeps comments and literals apart from code, so a rule never trips over its
//! own words in a comment or a string. `cargo xtask test` runs these rules as a counted step
//! after fmt and clippy; `cargo xtask tidy --all` runs fmt and clippy too.
//!
//! Must not: take more than a moment (it reads ~40k lines), or panic on a file it cannot make
//! sense of (a file that is not UTF-8 is an error naming it).

pub mod fmt_clippy;
pub mod length;
pub mod lex;
pub mod target_arch;
#[cfg(test)]
pub mod testing;
pub mod unsafe_code;
pub mod vcpu_layers;

pub use fmt_clippy::{clippy_step, fmt_step};

use crate::tally::Tally;
use crate::test::counted;
use crate::{end_step, root, step};
use anyhow::{Context, Result, bail};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// One broken rule: where, which rule, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// Relative to the workspace root, with `/` separators.
    pub path: String,
    /// 1-based.
    pub line: usize,
    pub rule: &'static str,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path, self.line, self.rule, self.what
        )
    }
}

/// A source file, lexed once for every rule.
pub struct Source<'a> {
    /// Relative to the workspace root, with `/` separators.
    pub path: &'a str,
    pub text: &'a str,
    pub lexed: lex::Lexed<'a>,
}

impl<'a> Source<'a> {
    pub fn new(path: &'a str, text: &'a str) -> Self {
        Source {
            path,
            text,
            lexed: lex::lex(text),
        }
    }

    /// A violation of `rule` at `line` of this file.
    pub fn violation(&self, line: usize, rule: &'static str, what: String) -> Violation {
        Violation {
            path: self.path.to_string(),
            line,
            rule,
            what,
        }
    }
}

/// Whether `path` (relative, `/`-separated) is test code: under a `tests/` directory (an
/// integration-test crate dir or a `tests/` module dir) or a file named `tests.rs`.
pub fn is_test(path: &str) -> bool {
    let mut parts: Vec<&str> = path.split('/').collect();
    let file = parts.pop().unwrap_or("");
    file == "tests.rs" || parts.contains(&"tests")
}

/// The 1-based line, in `text` (a rule's own source), of the entry for `path` in the list that
/// starts at the line beginning with `list` and ends at the next `];`, or of the list's first
/// line when no entry names `path`, so that a stale entry is reported where it is written.
pub fn entry_line(text: &str, list: &str, path: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim_start().starts_with(list)) else {
        return 1;
    };
    let needle = format!("(\"{path}\",");
    lines[start..]
        .iter()
        .take_while(|l| l.trim() != "];")
        .position(|l| l.trim_start().starts_with(&needle))
        .map_or(start + 1, |i| start + i + 1)
}

/// What the rules found in a tree.
#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub lines: usize,
    pub violations: Vec<Violation>,
    /// Things worth doing that break no rule (a debt's ceiling that can come down).
    pub notes: Vec<String>,
}

/// The rules' settings: the workspace's ([`Rules::WORKSPACE`]), or a test's own.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub max_lines: usize,
    pub length_debts: &'static [(&'static str, usize)],
    pub layer_debts: &'static [(&'static str, &'static str)],
}

impl Rules {
    pub const WORKSPACE: Rules = Rules {
        max_lines: length::MAX_LINES,
        length_debts: length::LENGTH_DEBTS,
        layer_debts: vcpu_layers::LAYER_DEBTS,
    };
}

/// Every rule over `files` (path, text); violations sorted by path and line.
pub fn check_files(files: &[(String, String)], rules: Rules) -> Report {
    let sources: Vec<Source> = files.iter().map(|(p, t)| Source::new(p, t)).collect();
    let mut report = Report {
        files: sources.len(),
        lines: sources.iter().map(|s| s.text.lines().count()).sum(),
        ..Report::default()
    };
    for source in &sources {
        unsafe_code::check(source, &mut report.violations);
        target_arch::check(source, &mut report.violations);
    }
    length::check(
        &sources,
        rules.length_debts,
        rules.max_lines,
        &mut report.violations,
        &mut report.notes,
    );
    vcpu_layers::check(&sources, rules.layer_debts, &mut report.violations);
    report.violations.sort();
    report
}

/// Every `.rs` file under `root`, as (relative path, text), sorted by path. Skips hidden
/// directories, `target/` and any other Cargo target directory (it holds a `CACHEDIR.TAG`).
pub fn read_tree(root: &Path) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let kind = entry
                .file_type()
                .with_context(|| format!("reading {}", path.display()))?;
            if kind.is_dir() {
                let skip = name.starts_with('.')
                    || (dir == root && name == "target")
                    || path.join("CACHEDIR.TAG").exists();
                if !skip {
                    dirs.push(path);
                }
            } else if kind.is_file() && name.ends_with(".rs") {
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("{rel}: cannot read it as UTF-8 text"))?;
                files.push((rel, text));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// `cargo xtask tidy` (the source rules): every violation on stdout as `path:line: rule: what`,
/// notes on stderr; an error when any rule is broken.
pub fn run(root: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let report = check_files(&read_tree(root)?, Rules::WORKSPACE);
    for note in &report.notes {
        errln!("note: {note}");
    }
    for violation in &report.violations {
        outln!("{violation}");
    }
    if !report.violations.is_empty() {
        bail!(
            "tidy: {} violation(s) of the source rules in {} files (listed above as path:line: rule: what)",
            report.violations.len(),
            report.files
        );
    }
    outln!(
        "tidy: the source rules hold for {} files ({} lines) in {} ms",
        report.files,
        report.lines,
        started.elapsed().as_millis()
    );
    Ok(())
}

/// The source rules ([`run`]), counted as one check.
pub fn rules_step(tally: &mut Tally) -> Result<()> {
    step("cargo xtask tidy (the source rules)");
    counted(tally, run(&root()))
}

/// `cargo xtask tidy [--all]`: the source rules; with `--all`, fmt and clippy first, every step
/// run whatever the others gave, and the count line last, as `cargo xtask test` ends.
pub fn task(all: bool) -> ExitCode {
    if !all {
        return match run(&root()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                errln!("xtask: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let mut tally = Tally::default();
    let results = [
        fmt_step(&mut tally),
        clippy_step(&mut tally).map(|_| ()),
        rules_step(&mut tally),
    ];
    end_step();
    let mut failed = false;
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        errln!("xtask: error: {e:#}");
        failed = true;
    }
    let _ = std::io::stderr().flush();
    outln!("{}", tally.line());
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests;
