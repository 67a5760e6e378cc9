//! The `vcpu-layers` rule: the vcpu crate's four parts depend on each other one way only.
//!
//! The parts ([`PARTS`], each a directory of `vcpu/src/`): `hypervisor` (the boundary: traits,
//! calls, errors, ids, the CPUID payload, KVM's numbers; and under it `hypervisor/kvm/`, the KVM
//! backend), `model` (the CPU models, pure data and rules), `guests` (the built-in guest programs
//! and their exit decoders), `runtime` (the lock, handles, run control, the run loop). What
//! each may not reach ([`FORBIDDEN`]):
//!
//! - `hypervisor` (the boundary and the backend): nothing of `model`, `guests` or `runtime`;
//! - `model`: nothing of `guests` or `runtime`, nor the backend (`hypervisor::kvm`), only the
//!   boundary;
//! - `guests`: nothing of `runtime`, nor the backend;
//! - `runtime`: not the backend (it drives a hypervisor through the boundary's traits).
//!
//! Why: the models are the same on every host, testable without KVM and replayable because they
//! reach no backend and no runtime; the guests are programs and decoders over the boundary's
//! types; only the backend touches KVM, so everything above it runs on a replayed hypervisor
//! too. A dependency the wrong way is how those properties get lost, one import at a time.
//!
//! What is checked: every path in the code of a file of a part, in `use` trees (`use
//! crate::{runtime, model::x86}`, nested groups) and in expressions
//! (`crate::runtime::lock::headline(...)`), with `super::` and `self::` resolved from the file's
//! module (inline `mod name { ... }` blocks included), so `super::super::runtime` climbing out of
//! a part counts. Comments and strings (doc links) are not code. Paths through the crate root's
//! re-exports (`crate::VcpuHandle`) are not followed: the root is vcpu's public face. Files
//! outside the parts (`lib.rs`, `skip.rs`, vcpu's `tests/`) and the other crates are not ruled:
//! they use the root's re-exports and the public paths freely.
//!
//! Debts ([`LAYER_DEBTS`]): imports that break the rule and are kept until their code moves,
//! each a (file, part) pair; an entry that no longer matches an import must be removed.

use super::lex::{Kind, Token};
use super::{Source, Violation};
use std::collections::BTreeSet;

/// The crate whose layers are ruled, and the directory of its modules.
pub const CRATE_SRC: &str = "vcpu/src/";

/// The parts: top-level modules of `vcpu/src/` (a directory, or a `<part>.rs` module root).
pub const PARTS: &[&str] = &["hypervisor", "model", "guests", "runtime"];

/// The KVM backend, inside the hypervisor part: the one module below a part that is ruled.
pub const BACKEND: &str = "hypervisor::kvm";

/// For each part, what it may not reach: other parts, or [`BACKEND`].
pub const FORBIDDEN: &[(&str, &[&str])] = &[
    ("hypervisor", &["model", "guests", "runtime"]),
    ("model", &["guests", "runtime", BACKEND]),
    ("guests", &["runtime", BACKEND]),
    ("runtime", &[BACKEND]),
];

pub const RULE: &str = "vcpu-layers";

/// Imports that break the rule, kept until the code moves: (file, part or [`BACKEND`] it
/// reaches). Never add to this list.
pub const LAYER_DEBTS: &[(&str, &str)] = &[];

const THIS_FILE: &str = "xtask/src/tidy/vcpu_layers.rs";
const THIS_TEXT: &str = include_str!("vcpu_layers.rs");

/// The part `path` is in, if any (`vcpu/src/model/x86/mod.rs` → `model`).
pub fn part_of(path: &str) -> Option<&'static str> {
    let rel = path.strip_prefix(CRATE_SRC)?;
    PARTS.iter().copied().find(|part| {
        rel.strip_prefix(part)
            .is_some_and(|rest| rest == ".rs" || rest.starts_with('/'))
    })
}

/// What a part is, for the messages.
fn described(target: &str) -> &'static str {
    match target {
        "hypervisor" => "the hypervisor boundary",
        "model" => "the CPU models",
        "guests" => "the built-in guests",
        "runtime" => "the vCPU runtime (lock, handles, run loop)",
        _ => "the KVM backend",
    }
}

/// The ruled target a reached module is: a part (`[runtime]`), or [`BACKEND`]
/// (`[hypervisor, kvm]`); `None` for anything else (the root's items, modules below the parts).
fn target(reached: &[String]) -> Option<String> {
    match reached {
        [part] if PARTS.contains(&part.as_str()) => Some(part.clone()),
        [a, b] if format!("{a}::{b}") == BACKEND => Some(BACKEND.to_string()),
        _ => None,
    }
}

/// The module path of a file under `vcpu/src/` (`vcpu/src/model/arm64/mod.rs` →
/// `[model, arm64]`).
fn module_of(path: &str) -> Vec<String> {
    let rel = path.strip_prefix(CRATE_SRC).unwrap_or(path);
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut segments: Vec<String> = rel.split('/').map(str::to_string).collect();
    if matches!(segments.last().map(String::as_str), Some("mod" | "lib")) {
        segments.pop();
    }
    segments
}

/// A module a path reached, as its first one or two segments from the crate's root (`[runtime]`,
/// `[hypervisor, kvm]`), with the line of the segment that named it.
type Reached = (Vec<String>, usize);

struct Paths<'t, 'a> {
    tokens: &'t [Token<'a>],
    out: Vec<Reached>,
}

impl Paths<'_, '_> {
    fn is_path_sep(&self, j: usize) -> bool {
        self.tokens.get(j).is_some_and(|t| t.is_punct(':'))
            && self.tokens.get(j + 1).is_some_and(|t| t.is_punct(':'))
    }

    /// Apply one segment to `at`; a module one or two levels below the root, reached, is
    /// recorded.
    fn segment(&mut self, at: &mut Vec<String>, name: &str, line: usize) {
        match name {
            "self" => {}
            "super" => {
                at.pop();
            }
            "crate" => at.clear(),
            _ => {
                at.push(name.to_string());
                if at.len() <= 2 {
                    self.out.push((at.clone(), line));
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

/// Every module one or two levels below the crate's root that the code of `source` reaches through
/// `crate::`, `super::` or `self::` paths (resolved from the file's module), in order.
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

/// Check the files of vcpu's parts among `sources`, allowing `debts`.
pub fn check(sources: &[Source], debts: &[(&str, &str)], out: &mut Vec<Violation>) {
    let mut used_debts = BTreeSet::new();
    let mut part_files = BTreeSet::new();
    for source in sources {
        let Some(part) = part_of(source.path) else {
            continue;
        };
        part_files.insert(source.path);
        let forbidden = FORBIDDEN
            .iter()
            .find(|(p, _)| *p == part)
            .map_or(&[][..], |(_, f)| *f);
        for (reached, line) in reached(source) {
            let Some(target) = target(&reached) else {
                continue;
            };
            if !forbidden.contains(&target.as_str()) {
                continue;
            }
            if debts.contains(&(source.path, target.as_str())) {
                used_debts.insert((source.path, target));
                continue;
            }
            let allowed: Vec<&str> = PARTS
                .iter()
                .copied()
                .filter(|p| *p != part && !forbidden.contains(p))
                .collect();
            let allowed = if allowed.is_empty() {
                "nothing of the other parts".to_string()
            } else if forbidden.contains(&BACKEND) {
                format!("only {} (never its kvm/)", allowed.join(", "))
            } else {
                format!("only {}", allowed.join(", "))
            };
            out.push(source.violation(
                line,
                RULE,
                format!(
                    "vcpu's {part} part uses `crate::{target}` ({}); {part} may reach {allowed}: \
                     move what it needs down into a part it may use, or this code up",
                    described(&target)
                ),
            ));
        }
    }
    for &(path, target) in debts {
        if used_debts.contains(&(path, target.to_string())) {
            continue;
        }
        let why = if part_files.contains(path) {
            format!("{path} no longer uses `crate::{target}`: the debt is paid")
        } else {
            format!("{path} is not a file of vcpu's parts here")
        };
        out.push(Violation {
            path: THIS_FILE.to_string(),
            line: super::entry_line(THIS_TEXT, "pub const LAYER_DEBTS", path),
            rule: RULE,
            what: format!("{why}; remove its entry from LAYER_DEBTS"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tidy::testing::{places, shown};

    fn found(files: &[(&str, &str)], debts: &[(&str, &str)]) -> Vec<String> {
        let sources: Vec<Source> = files.iter().map(|(p, t)| Source::new(p, t)).collect();
        let mut out = Vec::new();
        check(&sources, debts, &mut out);
        shown(&out)
    }

    fn modules(path: &str, text: &str) -> Vec<(String, usize)> {
        reached(&Source::new(path, text))
            .into_iter()
            .map(|(m, l)| (m.join("::"), l))
            .collect()
    }

    #[test]
    fn parts_are_told_by_their_directory() {
        assert_eq!(part_of("vcpu/src/hypervisor/kvm/vm.rs"), Some("hypervisor"));
        assert_eq!(part_of("vcpu/src/hypervisor.rs"), Some("hypervisor"));
        assert_eq!(part_of("vcpu/src/model/x86/mod.rs"), Some("model"));
        assert_eq!(part_of("vcpu/src/guests/x86/tests.rs"), Some("guests"));
        assert_eq!(part_of("vcpu/src/runtime/lock.rs"), Some("runtime"));
        assert_eq!(part_of("vcpu/src/lib.rs"), None);
        assert_eq!(part_of("vcpu/src/skip.rs"), None);
        assert_eq!(part_of("vcpu/src/models/x.rs"), None);
        assert_eq!(part_of("vcpu/tests/kvm_live.rs"), None);
        assert_eq!(part_of("supervisor/src/model/x.rs"), None);
    }

    #[test]
    fn paths_resolve_from_the_files_module() {
        let text = "use super::{catalog, suggest};\n\
                    use super::super::super::super::hypervisor::kvm::Kvm;\n\
                    use crate::{model::{self, x86::CpuidTable}, hypervisor::errno::Errno as E};\n\
                    fn f() { crate::runtime::lock::headline(\"crate::guests\"); self::g(); }\n\
                    mod tests {\n\
                    \x20   use super::super::super::super::super::guests;\n\
                    }\n\
                    use super::super::super::runtime;\n";
        let got = modules("vcpu/src/model/arm64/validate/refusal.rs", text);
        // From model::arm64::validate::refusal, four `super`s reach the crate's root (and
        // inside `mod tests`, five): `super::super::super::runtime` is `model::runtime`.
        let want = [
            ("hypervisor", 2),
            ("hypervisor::kvm", 2),
            ("model", 3),
            ("model::x86", 3),
            ("hypervisor", 3),
            ("hypervisor::errno", 3),
            ("runtime", 4),
            ("runtime::lock", 4),
            ("guests", 6),
            ("model::runtime", 8),
        ]
        .map(|(m, l)| (m.to_string(), l));
        assert_eq!(got, want);
    }

    #[test]
    fn each_part_is_held_to_its_one_way_dependencies_with_file_and_line() {
        let files = [
            (
                "vcpu/src/hypervisor/call.rs",
                "//! calls\nuse crate::model::x86::CpuidTable;\nuse super::kvm::abi;\n",
            ),
            (
                "vcpu/src/hypervisor/kvm/vm.rs",
                "use crate::hypervisor::call::Call;\nfn f() { super::super::super::runtime::run(); }\n",
            ),
            (
                "vcpu/src/model/x86/catalog.rs",
                "// crate::runtime in a comment is fine\nuse crate::hypervisor::{errno::Errno, kvm::abi};\n\
                 use crate::{\n    guests::x86,\n    model::suggest,\n};\n",
            ),
            (
                "vcpu/src/guests/mod.rs",
                "use crate::model::arm64;\nuse super::runtime::handle::VcpuHandle;\n\
                 use super::hypervisor::kvm::host_arch;\n",
            ),
            (
                "vcpu/src/runtime/runner.rs",
                "use crate::{guests, model, hypervisor::Hypervisor};\n\
                 fn f() { crate::hypervisor::kvm::KvmHypervisor::open(); }\n",
            ),
            // Outside the parts, and other crates: anything goes.
            (
                "vcpu/src/lib.rs",
                "pub use crate::runtime::handle::VcpuHandle;\n",
            ),
            (
                "vcpu/src/skip.rs",
                "use crate::hypervisor::kvm::KvmHypervisor;\n",
            ),
            ("supervisor/src/x.rs", "use crate::runtime::x;\n"),
        ];
        let got = found(&files, &[]);
        assert_eq!(
            places(&got),
            [
                "vcpu/src/hypervisor/call.rs:2",
                "vcpu/src/hypervisor/kvm/vm.rs:2",
                "vcpu/src/model/x86/catalog.rs:2",
                "vcpu/src/model/x86/catalog.rs:4",
                "vcpu/src/guests/mod.rs:2",
                "vcpu/src/guests/mod.rs:3",
                "vcpu/src/runtime/runner.rs:2",
            ],
            "{got:#?}"
        );
        assert!(
            got[0].contains(": vcpu-layers: vcpu's hypervisor part uses `crate::model`"),
            "{}",
            got[0]
        );
        assert!(got[1].contains("`crate::runtime`"), "{}", got[1]);
        assert!(
            got[2].contains("`crate::hypervisor::kvm` (the KVM backend)"),
            "{}",
            got[2]
        );
        assert!(got[3].contains("`crate::guests`"), "{}", got[3]);
        assert!(
            got[4].contains("guests part uses `crate::runtime`"),
            "{}",
            got[4]
        );
        assert!(got[5].contains("`crate::hypervisor::kvm`"), "{}", got[5]);
        assert!(
            got[6].contains("runtime part uses `crate::hypervisor::kvm`"),
            "{}",
            got[6]
        );
    }

    #[test]
    fn a_debt_allows_its_import_until_it_is_paid() {
        let file = (
            "vcpu/src/model/arm64/refusal.rs",
            "fn f() { crate::runtime::lock::headline(); }\n",
        );
        let debt = [("vcpu/src/model/arm64/refusal.rs", "runtime")];
        assert_eq!(found(&[file], &debt), Vec::<String>::new());
        // Another forbidden part from the same file is still reported.
        let more = (file.0, "use crate::runtime::x;\nuse crate::guests::y;\n");
        let got = found(&[more], &debt);
        assert_eq!(
            places(&got),
            ["vcpu/src/model/arm64/refusal.rs:2"],
            "{got:#?}"
        );
        // Paid: the entry must go, and the report points at it.
        let paid = (file.0, "fn f() {}\n");
        let got = found(&[paid], &debt);
        assert_eq!(got.len(), 1, "{got:#?}");
        let line = super::super::entry_line(THIS_TEXT, "pub const LAYER_DEBTS", file.0);
        assert!(
            got[0].starts_with(&format!("{THIS_FILE}:{line}: vcpu-layers: ")),
            "{}",
            got[0]
        );
        assert!(
            got[0].contains("no longer uses `crate::runtime`"),
            "{}",
            got[0]
        );
        let pointed = THIS_TEXT.lines().nth(line - 1).unwrap();
        assert!(pointed.contains("LAYER_DEBTS"), "{pointed}");
    }
}
