//! The `unsafe` rules: `unsafe-outside-kvm` (`unsafe` appears only in the KVM backend, [`ALLOWED`],
//! `vcpu/src/hypervisor/kvm/`) and `unsafe-without-safety` (every `unsafe` block or impl there has
//! a `// SAFETY:` comment saying why it is sound).
//!
//! Why: the workspace lint `unsafe_code = "deny"` is lifted in one place, the backend's
//! `vcpu/src/hypervisor/kvm/mod.rs` (`#![allow(unsafe_code)]`); this rule also catches an
//! `#[allow(unsafe_code)]` added anywhere else, and tests and build scripts, whatever their lints
//! say. No exceptions, tests included.
//!
//! Where the comment may be: on the line of the `unsafe` itself, or in the comment lines just
//! above it, with nothing but attributes between. When the `unsafe` continues a statement from
//! the lines above (`let ret =` / `unsafe { ... }`, a call's argument, a match arm), the comment
//! may be above the statement's first line. A comment block counts when any of its lines has
//! `SAFETY:`. `unsafe fn`s are not checked here: their callers' blocks are, and their own
//! `# Safety` section is clippy's (`missing_safety_doc`).

use super::lex::Kind;
use super::{Source, Violation};

/// The only directory whose files may contain `unsafe`.
pub const ALLOWED: &str = "vcpu/src/hypervisor/kvm/";

pub const OUTSIDE: &str = "unsafe-outside-kvm";
pub const WITHOUT_SAFETY: &str = "unsafe-without-safety";

/// What the `unsafe` at token `i` introduces.
fn what(source: &Source, i: usize) -> &'static str {
    match source.lexed.tokens.get(i + 1).map(|t| t.kind) {
        Some(Kind::Punct('{')) => "block",
        Some(Kind::Punct('(')) => "attribute",
        Some(Kind::Ident("fn")) => "fn",
        Some(Kind::Ident("impl")) => "impl",
        Some(Kind::Ident("trait")) => "trait",
        Some(Kind::Ident("extern")) => "extern block",
        _ => "code",
    }
}

/// Whether a line ending in this token goes on into the next line's expression.
fn continues(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Punct('=' | '(' | '[' | ',' | '>' | '|' | '&' | '+' | '-' | '*' | '/' | '?' | ':')
    )
}

/// Whether the `unsafe` on `line` has its `SAFETY:` comment (see the module's doc).
fn has_safety_comment(source: &Source, line: usize) -> bool {
    let lexed = &source.lexed;
    if lexed.comment(line).contains("SAFETY:") {
        return true;
    }
    let mut l = line;
    while l > 1 {
        l -= 1;
        let comment = lexed.comment(l);
        if comment.contains("SAFETY:") {
            return true;
        }
        if !lexed.has_code(l) {
            if comment.is_empty() {
                return false; // a blank line ends the search
            }
            continue; // more of the comment block
        }
        let first = lexed.tokens.partition_point(|t| t.line < l);
        let attribute = lexed.tokens.get(first).is_some_and(|t| t.is_punct('#'));
        let goes_on = lexed.last_token_on(l).is_some_and(|t| continues(t.kind));
        if !(attribute || goes_on) {
            return false;
        }
    }
    false
}

/// Check one file.
pub fn check(source: &Source, out: &mut Vec<Violation>) {
    let in_backend = source.path.starts_with(ALLOWED);
    for (i, token) in source.lexed.tokens.iter().enumerate() {
        if !token.is_ident("unsafe") {
            continue;
        }
        let what = what(source, i);
        if !in_backend {
            out.push(source.violation(
                token.line,
                OUTSIDE,
                format!(
                    "`unsafe` {what} outside the KVM backend: only {ALLOWED} may use unsafe; \
                     put it behind a safe function there"
                ),
            ));
        } else if matches!(what, "block" | "impl") && !has_safety_comment(source, token.line) {
            out.push(source.violation(
                token.line,
                WITHOUT_SAFETY,
                format!(
                    "`unsafe` {what} without a `// SAFETY:` comment on the lines just above it \
                     (or on its line) saying why it is sound"
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tidy::testing::{self, places};

    fn violations(path: &str, text: &str) -> Vec<String> {
        testing::violations(check, path, text)
    }

    #[test]
    fn unsafe_outside_the_backend_is_reported_with_file_and_line() {
        let text = "//! x\n\
                    // unsafe in a comment, \"unsafe\" in a string: fine\n\
                    #![allow(unsafe_code)]\n\
                    fn f() -> u8 {\n    let s = \"unsafe { }\";\n    unsafe { g() }\n}\n\
                    unsafe impl Send for X {}\n\
                    pub unsafe fn h() {}\n";
        let found = violations("supervisor/src/x.rs", text);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].starts_with("supervisor/src/x.rs:6: unsafe-outside-kvm: `unsafe` block"));
        assert!(found[1].starts_with("supervisor/src/x.rs:8: unsafe-outside-kvm: `unsafe` impl"));
        assert!(found[2].starts_with("supervisor/src/x.rs:9: unsafe-outside-kvm: `unsafe` fn"));
        // Tests get no exception.
        let found = violations("vcpu/tests/kvm_live.rs", "fn t() { unsafe { x() } }\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        // The backend may.
        assert!(
            violations(
                "vcpu/src/hypervisor/kvm/vm.rs",
                "// SAFETY: ok\nunsafe { x() };\n"
            )
            .is_empty()
        );
        // Not the rest of the hypervisor part, nor the old place of the backend.
        for path in ["vcpu/src/hypervisor/call.rs", "vcpu/src/kvm/vm.rs"] {
            let found = violations(path, "// SAFETY: ok\nunsafe { x() };\n");
            assert_eq!(places(&found), [format!("{path}:2")], "{found:#?}");
        }
    }

    #[test]
    fn a_block_or_impl_without_safety_is_reported() {
        let text = "//! kvm\n\
                    fn a() {\n    // SAFETY: above.\n    unsafe { x() };\n}\n\
                    fn b() {\n    // not a reason\n    unsafe { x() };\n}\n\
                    fn c() {\n    let y = unsafe { x() }; // SAFETY: same line\n}\n\
                    // SAFETY: stale, a blank line below\n\n\
                    unsafe impl Send for X {}\n\
                    // SAFETY: the first line of a block,\n// which goes on.\n\
                    #[allow(clippy::x)]\n\
                    unsafe impl Sync for X {}\n\
                    fn d() {\n    // SAFETY: above the statement.\n    let ret =\n        unsafe { x() };\n\
                    \x20   match y {\n        // SAFETY: above the arm.\n        Some(p) =>\n            unsafe { p.read() },\n    }\n\
                    \x20   f();\n    unsafe { x() };\n}\n\
                    pub unsafe fn no_comment_needed() {}\n";
        let found = violations("vcpu/src/hypervisor/kvm/x.rs", text);
        assert_eq!(
            places(&found),
            [
                "vcpu/src/hypervisor/kvm/x.rs:8",
                "vcpu/src/hypervisor/kvm/x.rs:15",
                "vcpu/src/hypervisor/kvm/x.rs:30"
            ],
            "{found:#?}"
        );
        assert!(
            found[0].contains("unsafe-without-safety: `unsafe` block"),
            "{}",
            found[0]
        );
        assert!(
            found[1].contains("unsafe-without-safety: `unsafe` impl"),
            "{}",
            found[1]
        );
    }
}
