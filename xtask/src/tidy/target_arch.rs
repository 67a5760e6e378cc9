//! The `target-arch-outside-kvm` rule: `cfg(target_arch ...)`, in `#[cfg]`, `#![cfg]`, `cfg!`,
//! `cfg_attr` or a `cfg(...)` nested in any of them, appears only in the KVM backend
//! ([`ALLOWED`], `vcpu/src/hypervisor/kvm/`).
//!
//! Why: vmfleet runs x86 and arm64 guests from one build and replays either on any host; only the
//! backend depends on the *host* architecture, and everything above it asks at run time
//! (`vcpu::hypervisor::kvm::host_arch()`, `std::env::consts::ARCH`), which keeps both
//! architectures' code compiled and tested on every host.
//!
//! Exceptions: none today, and none needed. xtask cross-builds with `--target`, a run-time
//! choice, and has no `cfg(target_arch)`; tests that only make sense on one architecture ask
//! `vcpu::hypervisor::kvm::host_arch()` and call `vcpu::skip::skipped` otherwise, so they are
//! counted as skipped rather than compiled out. A test that really needs the cfg would be added to
//! [`ALLOWED`] here, with its reason. Only the `target_arch` key is ruled: `target_os` and the
//! others are free, and a `target_arch` outside a cfg (a variable name, a string) is not a cfg.

use super::lex::Kind;
use super::{Source, Violation};

/// Where `cfg(target_arch)` may appear: path prefixes.
pub const ALLOWED: &[&str] = &["vcpu/src/hypervisor/kvm/"];

pub const RULE: &str = "target-arch-outside-kvm";

/// Check one file.
pub fn check(source: &Source, out: &mut Vec<Violation>) {
    if ALLOWED.iter().any(|dir| source.path.starts_with(dir)) {
        return;
    }
    let tokens = &source.lexed.tokens;
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i];
        i += 1;
        let Kind::Ident(name @ ("cfg" | "cfg_attr")) = token.kind else {
            continue;
        };
        let mut j = i;
        if tokens.get(j).is_some_and(|t| t.is_punct('!')) {
            j += 1;
        }
        if !tokens.get(j).is_some_and(|t| t.is_punct('(')) {
            continue;
        }
        // The balanced group after `cfg(`: every `target_arch` in it.
        let mut depth = 0usize;
        while let Some(t) = tokens.get(j) {
            j += 1;
            match t.kind {
                Kind::Punct('(') => depth += 1,
                Kind::Punct(')') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                Kind::Ident("target_arch") => out.push(source.violation(
                    t.line,
                    RULE,
                    format!(
                        "`{name}(target_arch ...)` outside the KVM backend ({}): ask \
                         `vcpu::hypervisor::kvm::host_arch()` at run time instead",
                        ALLOWED.join(", ")
                    ),
                )),
                _ => {}
            }
        }
        i = j;
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
    fn every_cfg_form_is_reported_with_file_and_line() {
        let text = "//! x\n\
                    #![cfg(target_arch = \"x86_64\")]\n\
                    #[cfg(any(unix, target_arch = \"aarch64\"))]\n\
                    fn f() {\n    if cfg!(target_arch = \"x86_64\") {}\n}\n\
                    #[cfg_attr(target_arch = \"x86_64\", derive(Debug))]\n\
                    #[cfg_attr(test, cfg(not(\n    target_arch = \"s390x\")))]\n\
                    struct S;\n";
        let found = violations("supervisor/src/x.rs", text);
        assert_eq!(
            places(&found),
            [
                "supervisor/src/x.rs:2",
                "supervisor/src/x.rs:3",
                "supervisor/src/x.rs:5",
                "supervisor/src/x.rs:7",
                "supervisor/src/x.rs:9",
            ],
            "{found:#?}"
        );
        assert!(
            found[2].contains(": target-arch-outside-kvm: `cfg(target_arch"),
            "{}",
            found[2]
        );
        assert!(found[3].contains("`cfg_attr(target_arch"), "{}", found[3]);
        // Tests and xtask are not exempt.
        assert_eq!(
            violations(
                "vcpu/tests/t.rs",
                "#[cfg(target_arch = \"x\")]\nfn t() {}\n"
            )
            .len(),
            1
        );
        assert_eq!(
            violations(
                "xtask/src/main.rs",
                "const _: bool = cfg!(target_arch = \"x\");\n"
            )
            .len(),
            1
        );
    }

    #[test]
    fn the_backend_words_and_other_keys_are_fine() {
        let cfg = "#[cfg(target_arch = \"x86_64\")]\nfn f() {}\n";
        assert!(violations("vcpu/src/hypervisor/kvm/mod.rs", cfg).is_empty());
        // The rest of the hypervisor part is no backend.
        assert_eq!(violations("vcpu/src/hypervisor/abi.rs", cfg).len(), 1);
        let fine = "//! `cfg(target_arch)` in a doc comment\n\
                    // #[cfg(target_arch = \"x86_64\")] in a comment\n\
                    const S: &str = \"cfg(target_arch)\";\n\
                    #[cfg(target_os = \"linux\")]\n\
                    fn f(target_arch: &str) -> bool { cfg!(unix) && target_arch == std::env::consts::ARCH }\n";
        assert_eq!(
            violations("supervisor/src/host.rs", fine),
            Vec::<String>::new()
        );
        // A cut-off group is not a panic.
        assert_eq!(violations("a.rs", "#[cfg(target_arch").len(), 1);
        assert!(violations("a.rs", "cfg!").is_empty());
    }
}
