//! `cargo xtask tidy`: the workspace's source rules, checked on every `.rs` file of the tree, so
//! that what ARCHITECTURE.md promises about the code stays true without anyone re-reading it.
//!
//! The rules (each module's doc says exactly what it checks and lists its exceptions):
//!
//! - `unsafe-outside-kvm` and `unsafe-without-safety` ([`unsafe_code`]): `unsafe` only in the
//!   KVM backend, `vcpu/src/kvm/`, and every `unsafe` block or impl there under a `// SAFETY:`
//!   comment;
//! - `target-arch-outside-kvm` ([`target_arch`]): `cfg(target_arch ...)` only in the backend;
//! - `file-length` ([`length`]): no source file outside tests over [`length::MAX_LINES`]
//!   lines, but for the listed debts, which may shrink and never grow;
//! - `cpu-model-imports` ([`cpu_model`]): the CPU-model code (`vcpu/src/cpuid/`,
//!   `vcpu/src/arm64/`) reaches nothing of the backend, the guests or the runtime.
//!
//! A violation prints as `path:line: rule: what`. The files are read with a small lexer
//! ([`lex`]) that keeps comments and literals apart from code, so a rule never trips over its
//! own words in a comment or a string. `cargo xtask test` runs these rules as a counted step
//! after fmt and clippy; `cargo xtask tidy --all` runs fmt and clippy too.
//!
//! Must not: take more than a moment (it reads ~40k lines), or panic on a file it cannot make
//! sense of (a file that is not UTF-8 is an error naming it).

pub mod cpu_model;
pub mod length;
pub mod lex;
pub mod target_arch;
pub mod unsafe_code;

use crate::tally::Tally;
use crate::test::counted;
use crate::{cargo, check, may_install, not_installed, root, step};
use anyhow::{Context, Result, bail};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode};

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
    pub import_debts: &'static [(&'static str, &'static str)],
}

impl Rules {
    pub const WORKSPACE: Rules = Rules {
        max_lines: length::MAX_LINES,
        length_debts: length::LENGTH_DEBTS,
        import_debts: cpu_model::IMPORT_DEBTS,
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
    cpu_model::check(&sources, rules.import_debts, &mut report.violations);
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

/// Whether the rustup component `component` (rustfmt, clippy) works, installing it if not (and
/// installing is allowed). `Err(NotInstalled)` under `--no-install`.
fn ensure_component(component: &str) -> Result<()> {
    let probe = match component {
        "rustfmt" => ["fmt", "--version"],
        _ => ["clippy", "--version"],
    };
    let ok = cargo()
        .args(probe)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Ok(());
    }
    may_install(
        &format!("the rustup component {component} (rustup component add {component})"),
        "cargo xtask test and tidy --all check formatting and lints with it",
    )?;
    check(
        Command::new("rustup")
            .args(["component", "add", component])
            .status(),
        "rustup component add",
    )
}

/// `cargo fmt --check`, counted; SKIPPED (`xtask::fmt`) when rustfmt is missing and
/// `--no-install` keeps it so.
pub fn fmt_step(tally: &mut Tally) -> Result<()> {
    step("cargo fmt --check");
    match ensure_component("rustfmt") {
        Ok(()) => counted(
            tally,
            check(
                cargo().args(["fmt", "--all", "--", "--check"]).status(),
                "cargo fmt --check",
            ),
        ),
        Err(e) => match not_installed(&e) {
            Some(why) => {
                tally.skip("xtask::fmt", &why.to_string());
                Ok(())
            }
            None => counted(tally, Err(e)),
        },
    }
}

/// `cargo clippy --workspace --all-targets -- -D warnings`, counted; SKIPPED (`xtask::clippy`)
/// when clippy is missing and `--no-install` keeps it so. `Ok(false)` when skipped.
pub fn clippy_step(tally: &mut Tally) -> Result<bool> {
    step("cargo clippy (warnings denied)");
    match ensure_component("clippy") {
        Ok(()) => {
            let status = cargo()
                .args(["clippy", "--workspace", "--all-targets", "--locked"])
                .args(["--", "-D", "warnings"])
                .status();
            counted(tally, check(status, "cargo clippy")).map(|()| true)
        }
        Err(e) => match not_installed(&e) {
            Some(why) => {
                tally.skip("xtask::clippy", &why.to_string());
                Ok(false)
            }
            None => counted(tally, Err(e)).map(|()| false),
        },
    }
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
mod tests {
    use super::*;

    /// A scratch directory of its own per test, removed at the end.
    pub(crate) struct Scratch(pub std::path::PathBuf);

    impl Scratch {
        pub(crate) fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("xtask-tidy-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        pub(crate) fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_workspace_keeps_every_rule() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let files = read_tree(root).unwrap();
        assert!(
            files.iter().any(|(p, _)| p == "vcpu/src/kvm/mod.rs"),
            "the walk found the backend"
        );
        assert!(files.iter().all(|(p, _)| !p.starts_with("target/")));
        let report = check_files(&files, Rules::WORKSPACE);
        let shown: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
        assert!(shown.is_empty(), "{}", shown.join("\n"));
        // And so `cargo xtask tidy` succeeds (its exit status is this result's).
        run(root).unwrap();
    }

    #[test]
    fn the_lexer_reads_every_workspace_file_with_balanced_delimiters() {
        // Rust's token trees are balanced; a literal or comment misread by the lexer (a quote
        // taken for a lifetime, a raw string cut short) would show as an unbalanced file.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut unsafe_in_backend = 0;
        for (path, text) in read_tree(root).unwrap() {
            let lexed = lex::lex(&text);
            let mut stack = Vec::new();
            for token in &lexed.tokens {
                match token.kind {
                    lex::Kind::Punct(c @ ('(' | '[' | '{')) => stack.push((c, token.line)),
                    lex::Kind::Punct(c @ (')' | ']' | '}')) => {
                        let open = stack.pop().map(|(o, _)| o);
                        let want = match c {
                            ')' => '(',
                            ']' => '[',
                            _ => '{',
                        };
                        assert_eq!(open, Some(want), "{path}:{}: unbalanced `{c}`", token.line);
                    }
                    lex::Kind::Ident("unsafe") if path.starts_with("vcpu/src/kvm/") => {
                        unsafe_in_backend += 1;
                    }
                    _ => {}
                }
            }
            assert!(stack.is_empty(), "{path}: unclosed {stack:?}");
            assert_eq!(lexed.code.len(), text.lines().count(), "{path}");
        }
        // The backend's `unsafe`s are code to the lexer, not comments or literals.
        assert!(unsafe_in_backend >= 10, "{unsafe_in_backend}");
    }

    #[test]
    fn a_planted_tree_reports_each_rule_with_file_and_line() {
        let tree = Scratch::new("planted");
        tree.write(
            "vcpu/src/kvm/ok.rs",
            "//! ok\n// SAFETY: fine\nunsafe { f() };\n",
        );
        tree.write(
            "vcpu/src/lib.rs",
            "//! lib\nfn f() {\n    unsafe { g() }\n}\n",
        );
        tree.write(
            "supervisor/src/host.rs",
            "//! host\n#[cfg(target_arch = \"x86_64\")]\nfn x() {}\n",
        );
        tree.write(
            "vcpu/src/cpuid/model.rs",
            "//! model\nuse crate::kvm::KvmVcpu;\n",
        );
        tree.write("supervisor/src/big.rs", &"// line\n".repeat(801));
        tree.write("supervisor/tests/big.rs", &"// line\n".repeat(900));
        // Not walked: hidden directories and target directories.
        tree.write(".git/x.rs", "unsafe {}\n");
        tree.write("target/debug/x.rs", "unsafe {}\n");
        tree.write("other-target/CACHEDIR.TAG", "");
        tree.write("other-target/x.rs", "unsafe {}\n");
        let files = read_tree(&tree.0).unwrap();
        assert_eq!(
            files.len(),
            6,
            "{:?}",
            files.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        let rules = Rules {
            length_debts: &[],
            import_debts: &[],
            ..Rules::WORKSPACE
        };
        let shown: Vec<String> = check_files(&files, rules)
            .violations
            .iter()
            .map(|v| v.to_string())
            .collect();
        let at: Vec<&str> = shown
            .iter()
            .map(|s| s.splitn(3, ": ").take(2).last().unwrap_or(""))
            .collect();
        assert_eq!(
            at,
            [
                "file-length",
                "target-arch-outside-kvm",
                "cpu-model-imports",
                "unsafe-outside-kvm",
            ],
            "{shown:#?}"
        );
        assert!(
            shown[0].starts_with("supervisor/src/big.rs:801: file-length: "),
            "{}",
            shown[0]
        );
        assert!(
            shown[1].starts_with("supervisor/src/host.rs:2: "),
            "{}",
            shown[1]
        );
        assert!(
            shown[2].starts_with("vcpu/src/cpuid/model.rs:2: "),
            "{}",
            shown[2]
        );
        assert!(shown[3].starts_with("vcpu/src/lib.rs:3: "), "{}", shown[3]);
    }

    #[test]
    fn every_rule_survives_every_cut_of_a_file() {
        // Bad input is any prefix of real code: cut strings, comments, groups and paths.
        let text = "//! x\n#[cfg_attr(test, cfg(target_arch = \"x86_64\"))]\n\
                    use crate::{kvm::{self, Kvm}, lock as l};\n\
                    mod tests { use super::super::guest::x; }\n\
                    fn f<'a>(s: &'a str) -> char {\n    // SAFETY: no\n    let r =\n        unsafe { g(r#\"\"x\"#, b'\\'', '\\u{1F600}') };\n    'y'\n}\n\
                    /* open /* nested */ still */ unsafe impl Send for X {}\n";
        let rules = Rules {
            max_lines: 3,
            length_debts: &[],
            import_debts: &[],
        };
        for (cut, _) in text.char_indices() {
            for path in ["vcpu/src/cpuid/model.rs", "vcpu/src/kvm/vm.rs"] {
                let files = [(path.to_string(), text[..cut].to_string())];
                let report = check_files(&files, rules);
                assert!(report.violations.iter().all(|v| v.line >= 1), "{cut}");
            }
        }
        let whole = [("vcpu/src/cpuid/model.rs".to_string(), text.to_string())];
        let rules_hit: std::collections::BTreeSet<&str> = check_files(&whole, rules)
            .violations
            .iter()
            .map(|v| v.rule)
            .collect();
        assert_eq!(
            rules_hit.into_iter().collect::<Vec<_>>(),
            [
                "cpu-model-imports",
                "file-length",
                "target-arch-outside-kvm",
                "unsafe-outside-kvm"
            ]
        );
    }

    #[test]
    fn a_file_that_is_not_utf8_is_an_error_naming_it() {
        let tree = Scratch::new("utf8");
        fs::create_dir_all(tree.0.join("src")).unwrap();
        fs::write(tree.0.join("src/bad.rs"), [0xff, 0xfe, b'\n']).unwrap();
        let err = read_tree(&tree.0).unwrap_err();
        assert!(format!("{err:#}").contains("src/bad.rs"), "{err:#}");
    }

    #[test]
    fn test_code_is_told_apart() {
        assert!(is_test("supervisor/tests/cli.rs"));
        assert!(is_test("vcpu/src/guest/arm64/tests.rs"));
        assert!(is_test("vcpu/src/guest/arm64/decoder/tests/cases.rs"));
        assert!(!is_test("supervisor/src/spec.rs"));
        assert!(!is_test("xtask/src/tidy/mod.rs"));
        assert!(!is_test("supervisor/src/attests.rs"));
    }
}
