//! The `cpu-model-imports` rule: the CPU-model code ([`MODEL_DIRS`]: the x86 model in
//! `vcpu/src/cpuid/`, the arm64 model in `vcpu/src/arm64/`) reaches nothing of the KVM
//! backend, the built-in guests or the runtime ([`FORBIDDEN`]: `crate::kvm`, `crate::guest`,
//! `crate::runner`, `crate::handle`, `crate::lock`).
//!
//! Why: the models are data and pure functions over it (tables, catalogs, planners, checks), so
//! that they are the same on every host, testable without KVM, and replayable; the backend,
//! guests and runtime depend on them, never the other way round.
//!
//! What is checked: every path in code, in `use` trees (`use crate::{kvm, cpuid}`) and in
//! expressions (`crate::lock::headline(...)`), with `super::` and `self::` resolved from the
//! file's module (inline `mod name { ... }` blocks included). Comments and strings (doc links
//! to `crate::guest`) are not code. Paths through a re-export are not followed.
//!
//! Debts ([`IMPORT_DEBTS`]): imports that broke the rule when it came in, each a (file,
//! module) pair, kept until the refactor of issue 11 moves the code; an entry that no longer
//! matches an import must be removed.

use super::lex::{Kind, Token};
use super::{Source, Violation};
use std::collections::BTreeSet;

/// The CPU-model code: module directories (a `<dir>.rs` module root would count too).
pub const MODEL_DIRS: &[&str] = &["vcpu/src/cpuid", "vcpu/src/arm64", "vcpu/src/model"];

/// The crate-level modules the CPU-model code must not reach, and what they are.
pub const FORBIDDEN: &[(&str, &str)] = &[
    ("kvm", "the KVM backend"),
    ("guest", "the built-in guests"),
    ("runner", "the vCPU run loop"),
    ("handle", "the handles of the runtime"),
    ("lock", "the pre-run lock of the runtime"),
    ("guests", "the built-in guests"),
    ("runtime", "the vCPU runtime"),
];

pub const RULE: &str = "cpu-model-imports";

/// Imports that break the rule, kept until the code moves: (file, forbidden module). Empty: the
/// one debt the rule came in with (arm64's refusal headline borrowing the lock's words) was paid
/// by moving those words to `vcpu/src/headline.rs`. Never add to this list.
pub const IMPORT_DEBTS: &[(&str, &str)] = &[];

const THIS_FILE: &str = "xtask/src/tidy/cpu_model.rs";
const THIS_TEXT: &str = include_str!("cpu_model.rs");

/// Whether `path` is CPU-model code.
pub fn is_model(path: &str) -> bool {
    MODEL_DIRS.iter().any(|dir| {
        path.strip_prefix(dir)
            .is_some_and(|rest| rest == ".rs" || rest.starts_with('/'))
    })
}

/// The module path of a file under `vcpu/src/` (`vcpu/src/arm64/validate/mod.rs` →
/// `[arm64, validate]`).
fn module_of(path: &str) -> Vec<String> {
    let rel = path.strip_prefix("vcpu/src/").unwrap_or(path);
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut segments: Vec<String> = rel.split('/').map(str::to_string).collect();
    if matches!(segments.last().map(String::as_str), Some("mod" | "lib")) {
        segments.pop();
    }
    segments
}

/// A crate-level module a path reached, with the line of the segment that named it.
type Reached = (String, usize);

struct Paths<'t, 'a> {
    tokens: &'t [Token<'a>],
    out: Vec<Reached>,
}

impl Paths<'_, '_> {
    fn is_path_sep(&self, j: usize) -> bool {
        self.tokens.get(j).is_some_and(|t| t.is_punct(':'))
            && self.tokens.get(j + 1).is_some_and(|t| t.is_punct(':'))
    }

    /// Apply one segment to `at`; a crate-level module reached is recorded.
    fn segment(&mut self, at: &mut Vec<String>, name: &str, line: usize) {
        match name {
            "self" => {}
            "super" => {
                at.pop();
            }
            "crate" => at.clear(),
            _ => {
                at.push(name.to_string());
                if at.len() == 1 {
                    self.out.push((name.to_string(), line));
                }
            }
        }
    }

    /// A path or use tree from token `j`, relative to `at`; returns the index after it.
    fn tree(&mut self, mut j: usize, mut at: Vec<String>) -> usize {
        while let Some(token) = self.tokens.get(j) {
            match token.kind {
                Kind::Ident(name) => {
                    self.segment(&mut at, name, token.line);
                    j += 1;
                    if !self.is_path_sep(j) {
                        return j;
                    }
                    j += 2;
                }
                Kind::Punct('{') => {
                    j += 1;
                    loop {
                        match self.tokens.get(j).map(|t| t.kind) {
                            None => return j,
                            Some(Kind::Punct('}')) => return j + 1,
                            Some(Kind::Punct(',')) => j += 1,
                            Some(_) => {
                                j = self.tree(j, at.clone());
                                // `as alias` and anything else up to the next item.
                                while let Some(t) = self.tokens.get(j) {
                                    if t.is_punct(',') || t.is_punct('}') {
                                        break;
                                    }
                                    j += 1;
                                }
                            }
                        }
                    }
                }
                _ => return j,
            }
        }
        j
    }
}

/// Every crate-level module the code of `source` reaches through `crate::`, `super::` or
/// `self::` paths.
pub fn reached(source: &Source) -> Vec<Reached> {
    let tokens = &source.lexed.tokens;
    let file_module = module_of(source.path);
    let mut paths = Paths {
        tokens,
        out: Vec::new(),
    };
    // Inline modules: (name, brace depth outside them).
    let mut inline: Vec<(&str, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut resume = 0usize;
    for (i, token) in tokens.iter().enumerate() {
        match token.kind {
            Kind::Punct('{') => depth += 1,
            Kind::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|&(_, d)| d == depth) {
                    inline.pop();
                }
            }
            Kind::Ident("mod") => {
                if let (Some(Kind::Ident(name)), Some(Kind::Punct('{'))) = (
                    tokens.get(i + 1).map(|t| t.kind),
                    tokens.get(i + 2).map(|t| t.kind),
                ) {
                    inline.push((name, depth));
                }
            }
            Kind::Ident(start @ ("crate" | "super" | "self")) if i >= resume => {
                let after_sep = i >= 2 && paths.is_path_sep(i - 2);
                if after_sep || !paths.is_path_sep(i + 1) {
                    continue;
                }
                let mut at = file_module.clone();
                at.extend(inline.iter().map(|(name, _)| name.to_string()));
                if start == "crate" {
                    at.clear();
                }
                resume = paths.tree(i, at);
            }
            _ => {}
        }
    }
    paths.out
}

/// Check the CPU-model files among `sources`, allowing `debts`.
pub fn check(sources: &[Source], debts: &[(&str, &str)], out: &mut Vec<Violation>) {
    let mut used_debts = BTreeSet::new();
    let mut model_files = BTreeSet::new();
    for source in sources.iter().filter(|s| is_model(s.path)) {
        model_files.insert(source.path);
        for (module, line) in reached(source) {
            let Some((_, what)) = FORBIDDEN.iter().find(|(m, _)| *m == module) else {
                continue;
            };
            if debts.contains(&(source.path, module.as_str())) {
                used_debts.insert((source.path, module));
                continue;
            }
            out.push(source.violation(
                line,
                RULE,
                format!(
                    "the CPU-model code uses `crate::{module}` ({what}); the model ({}) must not \
                     depend on the backend, the guests or the runtime: move what it needs into \
                     the model, or the code that needs the runtime out of it",
                    MODEL_DIRS.join("/, ") + "/"
                ),
            ));
        }
    }
    for &(path, module) in debts {
        if used_debts.contains(&(path, module.to_string())) {
            continue;
        }
        let why = if model_files.contains(path) {
            format!("{path} no longer uses `crate::{module}`: the debt is paid")
        } else {
            format!("{path} is not a CPU-model file here")
        };
        out.push(Violation {
            path: THIS_FILE.to_string(),
            line: super::entry_line(THIS_TEXT, "pub const IMPORT_DEBTS", path),
            rule: RULE,
            what: format!("{why}; remove its entry from IMPORT_DEBTS"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(files: &[(&str, &str)], debts: &[(&str, &str)]) -> Vec<String> {
        let sources: Vec<Source> = files.iter().map(|(p, t)| Source::new(p, t)).collect();
        let mut out = Vec::new();
        check(&sources, debts, &mut out);
        out.iter().map(ToString::to_string).collect()
    }

    fn modules(path: &str, text: &str) -> Vec<(String, usize)> {
        reached(&Source::new(path, text))
    }

    #[test]
    fn paths_resolve_from_the_files_module() {
        let text = "use super::{catalog, suggest};\n\
                    use super::super::super::kvm::Kvm;\n\
                    use crate::{cpuid::{self, CpuidTable}, errno::Errno as E};\n\
                    fn f() { crate::lock::headline(\"crate::guest\"); self::g(); }\n\
                    mod tests {\n\
                    \x20   use super::super::super::runner;\n\
                    \x20   use super::super::super::super::guest;\n\
                    }\n\
                    pub(crate) fn h() {}\n\
                    use super::super::super::handle;\n";
        let got = modules("vcpu/src/arm64/validate/refusal.rs", text);
        // From arm64::validate::refusal, three `super`s reach the crate's root (and inside
        // `mod tests`, four): `super::super::kvm` would be `arm64::kvm`, not `crate::kvm`.
        let want = [
            ("kvm", 2),
            ("cpuid", 3),
            ("errno", 3),
            ("lock", 4),
            ("guest", 7),
            ("handle", 10),
        ]
        .map(|(m, l)| (m.to_string(), l));
        assert_eq!(got, want);
        let root = modules("vcpu/src/cpuid/mod.rs", "use super::{guest::x86, kvm};\n");
        assert_eq!(root, [("guest".to_string(), 1), ("kvm".to_string(), 1)]);
    }

    #[test]
    fn a_forbidden_import_is_reported_with_file_and_line() {
        let files = [
            (
                "vcpu/src/cpuid/model.rs",
                "//! model\n// crate::kvm in a comment is fine\nuse crate::errno::Errno;\n\
                 use crate::{\n    handle::VcpuHandle,\n    suggest,\n};\n",
            ),
            (
                "vcpu/src/arm64/host.rs",
                "fn f() { let _ = crate::runner::run_decoded; }\n",
            ),
            ("vcpu/src/cpuid.rs", "use super::guest::probe;\n"),
            // Not CPU-model code: may use anything.
            ("vcpu/src/handle.rs", "use crate::kvm::KvmVcpu;\n"),
            ("vcpu/src/arm64x/a.rs", "use crate::kvm::KvmVcpu;\n"),
        ];
        let got = found(&files, &[]);
        let at: Vec<&str> = got
            .iter()
            .map(|v| v.split(": ").next().unwrap_or(""))
            .collect();
        assert_eq!(
            at,
            [
                "vcpu/src/cpuid/model.rs:5",
                "vcpu/src/arm64/host.rs:1",
                "vcpu/src/cpuid.rs:1"
            ],
            "{got:#?}"
        );
        assert!(
            got[0].contains(": cpu-model-imports: the CPU-model code uses `crate::handle`"),
            "{}",
            got[0]
        );
        assert!(got[1].contains("`crate::runner`"), "{}", got[1]);
        assert!(got[2].contains("`crate::guest`"), "{}", got[2]);
    }

    #[test]
    fn a_debt_allows_its_import_until_it_is_paid() {
        let file = (
            "vcpu/src/arm64/validate/refusal.rs",
            "fn f() { crate::lock::headline(); }\n",
        );
        let debt = [("vcpu/src/arm64/validate/refusal.rs", "lock")];
        assert_eq!(found(&[file], &debt), Vec::<String>::new());
        // Another forbidden module from the same file is still reported.
        let more = (file.0, "use crate::lock::x;\nuse crate::kvm::y;\n");
        let got = found(&[more], &debt);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].starts_with("vcpu/src/arm64/validate/refusal.rs:2: "),
            "{}",
            got[0]
        );
        // Paid: the entry must go, and the report points at it.
        let paid = (file.0, "fn f() {}\n");
        let got = found(&[paid], &debt);
        assert_eq!(got.len(), 1, "{got:#?}");
        let line = super::super::entry_line(THIS_TEXT, "pub const IMPORT_DEBTS", file.0);
        assert!(
            got[0].starts_with(&format!("{THIS_FILE}:{line}: cpu-model-imports: ")),
            "{}",
            got[0]
        );
        assert!(
            got[0].contains("no longer uses `crate::lock`"),
            "{}",
            got[0]
        );
        // The entry's own line, or the list's when the entry is only the test's.
        let pointed = THIS_TEXT.lines().nth(line - 1).unwrap();
        assert!(
            pointed.contains("refusal.rs") || pointed.contains("IMPORT_DEBTS"),
            "{pointed}"
        );
    }
}
