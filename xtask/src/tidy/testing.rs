//! What the tidy rules' tests share (test builds only): violations shown as tidy prints them,
//! their `path:line` places, one file through one rule, and scratch trees to plant violations
//! in, so that each rule's tests say only what they plant and what must be reported.

use super::{Rules, Source, Violation, check_files, read_tree};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Violations as tidy prints them: `path:line: rule: what`.
pub fn shown(violations: &[Violation]) -> Vec<String> {
    violations.iter().map(ToString::to_string).collect()
}

/// The `path:line` of each shown violation.
pub fn places(shown: &[String]) -> Vec<&str> {
    shown
        .iter()
        .map(|v| v.split(": ").next().unwrap_or(""))
        .collect()
}

/// The rule of each shown violation.
pub fn rules(shown: &[String]) -> Vec<&str> {
    shown
        .iter()
        .map(|v| v.split(": ").nth(1).unwrap_or(""))
        .collect()
}

/// What a one-file rule (`check(source, out)`) reports for `text` at `path`, as shown.
pub fn violations(check: fn(&Source, &mut Vec<Violation>), path: &str, text: &str) -> Vec<String> {
    let source = Source::new(path, text);
    let mut out = Vec::new();
    check(&source, &mut out);
    shown(&out)
}

/// The workspace's rules without their debts: what a planted tree is checked against.
pub const NO_DEBTS: Rules = Rules {
    length_debts: &[],
    layer_debts: &[],
    ..Rules::WORKSPACE
};

/// A scratch directory of its own (under the system's temporary directory), removed when
/// dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xtask-tidy-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.0.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Plant `files` (relative path, text) in a scratch tree, read it back as `cargo xtask tidy`
/// reads the workspace, and check it with the workspace's rules (no debts): the violations, as
/// shown.
pub fn planted(name: &str, files: &[(&str, &str)]) -> Vec<String> {
    let tree = Scratch::new(name);
    for (path, text) in files {
        tree.write(path, text);
    }
    let read = read_tree(tree.path()).unwrap();
    shown(&check_files(&read, NO_DEBTS).violations)
}
