//! `vmfleet completions SHELL` and `vmfleet man`, as a user runs them: non-empty scripts and a
//! man page that name the subcommands, a usage error for an unknown shell, and no panic when
//! stdout is closed early (`vmfleet man | head -1`).

use std::io::Read;
use std::process::{Command, Stdio};

fn vmfleet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmfleet"))
}

#[test]
fn completion_scripts_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = vmfleet().args(["completions", shell]).output().unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}: {out:?}");
        for sub in ["replay", "ctl", "serve", "man"] {
            assert!(script.contains(sub), "{shell}: no {sub} in the script");
        }
    }
    let out = vmfleet().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}

#[test]
fn the_man_page_names_the_subcommands() {
    let out = vmfleet().arg("man").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH vmfleet 1"), "{page}");
    for sub in ["VMFLEET REPLAY", "VMFLEET CTL", "VMFLEET COMPLETIONS"] {
        assert!(page.contains(sub), "no {sub} in the man page");
    }
}

#[test]
fn a_closed_stdout_is_no_panic() {
    for args in [&["man"][..], &["completions", "zsh"]] {
        let mut child = vmfleet()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before vmfleet writes
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            status.success() || status.code().is_none(),
            "{args:?}: {status}: {stderr}"
        );
    }
}
