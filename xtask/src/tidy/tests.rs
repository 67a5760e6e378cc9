//! Tests of `cargo xtask tidy` as a whole: the walk of the tree, the lexer over the real
//! workspace, and, for each rule, a violation planted in a scratch tree (under the system's
//! temporary directory) and reported with its file and line, as `cargo xtask tidy` prints it.
//! (fmt and clippy are planted in a throwaway package: see `fmt_clippy`'s tests.)

use super::testing::{NO_DEBTS, Scratch, places, planted, rules, shown};
use super::*;
use crate::tally::skipped;

/// The real workspace, this crate's parent.
fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
}

#[test]
fn the_workspace_keeps_every_rule() {
    let root = workspace();
    let files = read_tree(root).unwrap();
    assert!(files.iter().all(|(p, _)| !p.starts_with("target/")));
    // The rules are written for vcpu's layout in parts (vcpu/src/hypervisor/kvm/ ...); a tree
    // that still has the old one (vcpu/src/kvm/) breaks them by construction.
    if !files
        .iter()
        .any(|(p, _)| p == "vcpu/src/hypervisor/kvm/mod.rs")
    {
        skipped(
            "the_workspace_keeps_every_rule",
            "vcpu/src/hypervisor/kvm/mod.rs is missing: the vcpu crate does not have the layout \
             in parts (hypervisor, model, guests, runtime) the rules are written for",
        );
        return;
    }
    let report = check_files(&files, Rules::WORKSPACE);
    let shown = shown(&report.violations);
    assert!(shown.is_empty(), "{}", shown.join("\n"));
    // And so `cargo xtask tidy` succeeds (its exit status is this result's).
    run(root).unwrap();
}

#[test]
fn the_lexer_reads_every_workspace_file_with_balanced_delimiters() {
    // Rust's token trees are balanced; a literal or comment misread by the lexer (a quote
    // taken for a lifetime, a raw string cut short) would show as an unbalanced file.
    let mut unsafe_in_backend = 0;
    for (path, text) in read_tree(workspace()).unwrap() {
        let lexed = lex::lex(&text);
        let mut stack = Vec::new();
        // The backend, where it is and where it was before vcpu's split into parts.
        let backend = path.starts_with(unsafe_code::ALLOWED) || path.starts_with("vcpu/src/kvm/");
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
                lex::Kind::Ident("unsafe") if backend => unsafe_in_backend += 1,
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
fn the_walk_skips_hidden_and_target_directories() {
    let tree = Scratch::new("walk");
    tree.write("vcpu/src/lib.rs", "//! lib\n");
    tree.write(".git/x.rs", "unsafe {}\n");
    tree.write("target/debug/x.rs", "unsafe {}\n");
    tree.write("other-target/CACHEDIR.TAG", "");
    tree.write("other-target/x.rs", "unsafe {}\n");
    tree.write("notes.txt", "unsafe {}\n");
    let files = read_tree(tree.path()).unwrap();
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["vcpu/src/lib.rs"]);
}

#[test]
fn planted_unsafe_outside_the_backend_is_reported_with_file_and_line() {
    let found = planted(
        "unsafe-outside",
        &[
            (
                "vcpu/src/hypervisor/kvm/ok.rs",
                "//! ok\n// SAFETY: fine\nunsafe { f() };\n",
            ),
            (
                "vcpu/src/hypervisor/call.rs",
                "//! call\nfn f() {\n    unsafe { g() }\n}\n",
            ),
            (
                "supervisor/tests/t.rs",
                "//! t\n\nunsafe impl Send for X {}\n",
            ),
        ],
    );
    assert_eq!(
        places(&found),
        ["supervisor/tests/t.rs:3", "vcpu/src/hypervisor/call.rs:3"],
        "{found:#?}"
    );
    assert_eq!(rules(&found), ["unsafe-outside-kvm"; 2]);
}

#[test]
fn planted_unsafe_without_safety_is_reported_with_file_and_line() {
    let found = planted(
        "unsafe-safety",
        &[(
            "vcpu/src/hypervisor/kvm/vcpu.rs",
            "//! vcpu\nfn f() {\n    // SAFETY: the fd is ours.\n    unsafe { g() };\n    unsafe { h() };\n}\n",
        )],
    );
    assert_eq!(
        places(&found),
        ["vcpu/src/hypervisor/kvm/vcpu.rs:5"],
        "{found:#?}"
    );
    assert_eq!(rules(&found), ["unsafe-without-safety"]);
}

#[test]
fn planted_target_arch_outside_the_backend_is_reported_with_file_and_line() {
    let cfg = "//! x\n\n#[cfg(target_arch = \"x86_64\")]\nfn x() {}\n";
    let found = planted(
        "target-arch",
        &[
            ("vcpu/src/hypervisor/kvm/x86.rs", cfg),
            ("vcpu/src/model/x86/mod.rs", cfg),
            ("supervisor/src/host.rs", cfg),
        ],
    );
    assert_eq!(
        places(&found),
        ["supervisor/src/host.rs:3", "vcpu/src/model/x86/mod.rs:3"],
        "{found:#?}"
    );
    assert_eq!(rules(&found), ["target-arch-outside-kvm"; 2]);
}

#[test]
fn planted_long_file_is_reported_with_file_and_line() {
    let long = "// line\n".repeat(length::MAX_LINES + 1);
    let found = planted(
        "length",
        &[
            ("supervisor/src/big.rs", &long),
            ("supervisor/tests/big.rs", &long),
            ("vcpu/src/guests/x86/tests.rs", &long),
        ],
    );
    assert_eq!(places(&found), ["supervisor/src/big.rs:801"], "{found:#?}");
    assert_eq!(rules(&found), ["file-length"]);
}

#[test]
fn planted_layer_violations_are_reported_with_file_and_line() {
    let found = planted(
        "layers",
        &[
            (
                "vcpu/src/lib.rs",
                "//! lib\npub mod hypervisor;\npub mod model;\n",
            ),
            (
                "vcpu/src/hypervisor/mod.rs",
                "//! boundary\npub mod kvm;\nuse crate::model::x86;\n",
            ),
            (
                "vcpu/src/model/x86/mod.rs",
                "//! x86\nuse crate::hypervisor::{errno::Errno, kvm::abi};\n",
            ),
            (
                "vcpu/src/guests/x86.rs",
                "//! guest\nuse crate::{model, runtime::lock};\n",
            ),
            (
                "vcpu/src/runtime/runner.rs",
                "//! runner\nuse super::super::hypervisor::kvm;\n",
            ),
            (
                "supervisor/src/fleet.rs",
                "//! free\nuse crate::runtime::x;\n",
            ),
        ],
    );
    assert_eq!(
        places(&found),
        [
            "vcpu/src/guests/x86.rs:2",
            "vcpu/src/hypervisor/mod.rs:3",
            "vcpu/src/model/x86/mod.rs:2",
            "vcpu/src/runtime/runner.rs:2",
        ],
        "{found:#?}"
    );
    assert_eq!(rules(&found), ["vcpu-layers"; 4]);
    assert!(found[0].contains("`crate::runtime`"), "{}", found[0]);
    assert!(found[1].contains("`crate::model`"), "{}", found[1]);
    assert!(
        found[2].contains("`crate::hypervisor::kvm`"),
        "{}",
        found[2]
    );
    assert!(
        found[3].contains("`crate::hypervisor::kvm`"),
        "{}",
        found[3]
    );
}

#[test]
fn every_rule_survives_every_cut_of_a_file() {
    // Bad input is any prefix of real code: cut strings, comments, groups and paths.
    let text = "//! x\n#[cfg_attr(test, cfg(target_arch = \"x86_64\"))]\n\
                use crate::{hypervisor::{self, kvm::Kvm}, runtime as r};\n\
                mod tests { use super::super::super::guests::x; }\n\
                fn f<'a>(s: &'a str) -> char {\n    // SAFETY: no\n    let r =\n        unsafe { g(r#\"\"x\"#, b'\\'', '\\u{1F600}') };\n    'y'\n}\n\
                /* open /* nested */ still */ unsafe impl Send for X {}\n";
    let rules = Rules {
        max_lines: 3,
        ..NO_DEBTS
    };
    for (cut, _) in text.char_indices() {
        for path in [
            "vcpu/src/model/x86/catalog.rs",
            "vcpu/src/hypervisor/kvm/vm.rs",
        ] {
            let files = [(path.to_string(), text[..cut].to_string())];
            let report = check_files(&files, rules);
            assert!(report.violations.iter().all(|v| v.line >= 1), "{cut}");
        }
    }
    let whole = [(
        "vcpu/src/model/x86/catalog.rs".to_string(),
        text.to_string(),
    )];
    let rules_hit: std::collections::BTreeSet<&str> = check_files(&whole, rules)
        .violations
        .iter()
        .map(|v| v.rule)
        .collect();
    assert_eq!(
        rules_hit.into_iter().collect::<Vec<_>>(),
        [
            "file-length",
            "target-arch-outside-kvm",
            "unsafe-outside-kvm",
            "vcpu-layers",
        ]
    );
}

#[test]
fn a_file_that_is_not_utf8_is_an_error_naming_it() {
    let tree = Scratch::new("utf8");
    fs::create_dir_all(tree.path().join("src")).unwrap();
    fs::write(tree.path().join("src/bad.rs"), [0xff, 0xfe, b'\n']).unwrap();
    let err = read_tree(tree.path()).unwrap_err();
    assert!(format!("{err:#}").contains("src/bad.rs"), "{err:#}");
}

#[test]
fn test_code_is_told_apart() {
    assert!(is_test("supervisor/tests/cli.rs"));
    assert!(is_test("vcpu/src/guests/arm64/tests.rs"));
    assert!(is_test("vcpu/src/guests/arm64/decoder/tests/cases.rs"));
    assert!(!is_test("supervisor/src/spec.rs"));
    assert!(!is_test("xtask/src/tidy/mod.rs"));
    assert!(!is_test("supervisor/src/attests.rs"));
}
