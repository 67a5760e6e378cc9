//! `cargo fmt --check` and `cargo clippy -- -D warnings` as steps of `cargo xtask test` and `cargo
//! xtask tidy --all`: the rustup components first (installed when missing, unless
//! `--no-install`), then the check, whose output is passed through as it comes and whose failure
//! names every place the tool pointed at (`src/lib.rs:3:5`).
//!
//! Each check is a command for a manifest ([`fmt_command`], [`clippy_command`]) run by
//! [`run_check`]: the steps give the workspace's manifest; the planted-violation tests give a
//! throwaway package's, so they test the very commands CI runs.

use crate::tally::Tally;
use crate::test::counted;
use crate::{cargo, check, may_install, not_installed, root, step};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;

/// Whether the rustup component `component` (rustfmt, clippy) answers `--version`.
pub fn component_present(component: &str) -> bool {
    let probe = match component {
        "rustfmt" => ["fmt", "--version"],
        _ => ["clippy", "--version"],
    };
    cargo()
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether the rustup component `component` (rustfmt, clippy) works, installing it if not (and
/// installing is allowed). `Err(NotInstalled)` under `--no-install`.
fn ensure_component(component: &str) -> Result<()> {
    if component_present(component) {
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

/// `cargo fmt --check` of every package of `manifest`'s workspace.
pub fn fmt_command(manifest: &Path) -> Command {
    let mut cmd = cargo();
    cmd.args(["fmt", "--all", "--manifest-path"])
        .arg(manifest)
        .args(["--", "--check"]);
    cmd
}

/// `cargo clippy` of every package and target of `manifest`'s workspace, warnings denied.
pub fn clippy_command(manifest: &Path) -> Command {
    let mut cmd = cargo();
    cmd.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--manifest-path",
    ])
    .arg(manifest)
    .args(["--", "-D", "warnings"]);
    cmd
}

/// `line` without its ANSI colour sequences (rustfmt colours its diffs even into a pipe).
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameters up to a final letter (`\x1b[31m`).
            Some('[') => {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            // A charset designation (`\x1b(B`): one more character.
            Some('(' | ')') => {
                chars.next();
            }
            _ => {}
        }
    }
    out
}

/// The places the output of rustfmt or rustc points at, each once, in order: for rustc and
/// clippy, every `--> src/x.rs:3:5`; for rustfmt, the first line each diff hunk changes (its
/// `Diff in /abs/src/x.rs:12:` header gives the hunk's first line, context included; the
/// context lines, ` ...`, are counted to the first removed one, `-...`).
fn places(lines: &[String]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    // The hunk being read: its file, its first line, the context lines seen so far.
    let mut hunk: Option<(String, usize, usize)> = None;
    for line in lines.iter().map(|l| plain(l)) {
        let place = if let Some(header) = line.trim().strip_prefix("Diff in ") {
            let header = header.trim_end_matches(':');
            match header.rsplit_once(':') {
                Some((file, n)) if n.parse::<usize>().is_ok() => {
                    hunk = Some((file.to_string(), n.parse().unwrap_or(1), 0));
                    None
                }
                _ => Some(header.to_string()),
            }
        } else if let Some(at) = line.trim().strip_prefix("--> ") {
            Some(at.to_string())
        } else if let Some((file, first, context)) = &mut hunk {
            if line.starts_with('-') {
                let at = format!("{file}:{}", *first + *context);
                hunk = None;
                Some(at)
            } else {
                if !line.starts_with('+') {
                    *context += 1;
                }
                None
            }
        } else {
            None
        };
        if let Some(place) = place {
            if !found.contains(&place) {
                found.push(place);
            }
        }
    }
    found
}

/// Pass `from` through line by line (to stdout or stderr) as it comes, and return its lines.
fn tee(from: impl Read, to_stdout: bool) -> Vec<String> {
    let mut reader = BufReader::new(from);
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    // Read to the end even if our own output is gone, so the child never blocks.
    while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        if to_stdout {
            outln!("{line}");
        } else {
            errln!("{line}");
        }
        lines.push(line);
        buf.clear();
    }
    lines
}

/// Run a check's command (`what` names it), its output passed through; when it fails, the error
/// lists the places the output pointed at, each once, in order.
pub fn run_check(mut cmd: Command, what: &str) -> Result<()> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {what}"))?;
    let stdout = child.stdout.take().context("the child's stdout is piped")?;
    let stderr = child.stderr.take().context("the child's stderr is piped")?;
    let errors = thread::spawn(move || tee(stderr, false));
    let mut lines = tee(stdout, true);
    lines.extend(errors.join().unwrap_or_default());
    let status = child
        .wait()
        .with_context(|| format!("waiting for {what}"))?;
    if status.success() {
        return Ok(());
    }
    let places = places(&lines);
    if places.is_empty() {
        bail!("{what} failed ({status}); its output is above");
    }
    bail!(
        "{what} failed ({status}) at {} (its output is above)",
        places.join(", ")
    );
}

/// `cargo fmt --check` of the workspace, counted; SKIPPED (`xtask::fmt`) when rustfmt is missing
/// and `--no-install` keeps it so.
pub fn fmt_step(tally: &mut Tally) -> Result<()> {
    step("cargo fmt --check");
    match ensure_component("rustfmt") {
        Ok(()) => counted(
            tally,
            run_check(fmt_command(&root().join("Cargo.toml")), "cargo fmt --check"),
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
        Ok(()) => counted(
            tally,
            run_check(clippy_command(&root().join("Cargo.toml")), "cargo clippy"),
        )
        .map(|()| true),
        Err(e) => match not_installed(&e) {
            Some(why) => {
                tally.skip("xtask::clippy", &why.to_string());
                Ok(false)
            }
            None => counted(tally, Err(e)).map(|()| false),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tally::skipped;
    use crate::tidy::testing::Scratch;

    /// A throwaway package with one source file, `src/lib.rs`, its own workspace, lock file and
    /// target directory (a nested cargo must not wait for the lock of the one running the tests).
    fn package(name: &str, lib: &str) -> Scratch {
        let tree = Scratch::new(name);
        tree.write(
            "Cargo.toml",
            "[package]\nname = \"planted\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        );
        tree.write(
            "Cargo.lock",
            "version = 4\n\n[[package]]\nname = \"planted\"\nversion = \"0.1.0\"\n",
        );
        tree.write("src/lib.rs", lib);
        tree
    }

    #[test]
    fn places_are_found_in_rustfmt_and_rustc_output() {
        let output = [
            "Diff in /t/src/lib.rs:4:",
            "\x1b(B\x1b[m pub fn fine() -> u8 {",
            "\x1b(B\x1b[m     1",
            "\x1b(B\x1b[m }",
            "\x1b[31m-pub fn bad( )->u8{2}",
            "\x1b(B\x1b[m\x1b[32m+pub fn bad() -> u8 {",
            "error: unneeded `return` statement",
            "  --> src/lib.rs:3:5",
            "  --> src/lib.rs:3:5",
        ]
        .map(String::from);
        assert_eq!(places(&output), ["/t/src/lib.rs:7", "src/lib.rs:3:5"]);
    }

    #[test]
    fn a_badly_formatted_file_fails_fmt_naming_file_and_line() {
        if !component_present("rustfmt") {
            skipped(
                "fmt_planted",
                "rustfmt is not installed (rustup component add rustfmt)",
            );
            return;
        }
        let tree = package(
            "fmt",
            "//! planted\n\npub fn fine() -> u8 {\n    1\n}\n\npub fn bad( )->u8{2}\n",
        );
        let err = run_check(
            fmt_command(&tree.path().join("Cargo.toml")),
            "cargo fmt --check",
        )
        .unwrap_err();
        let want = format!("{}:7", tree.path().join("src/lib.rs").display());
        let shown = format!("{err:#}");
        assert!(shown.contains("cargo fmt --check failed"), "{shown}");
        assert!(shown.contains(&want), "wanted {want} in: {shown}");
        // And a formatted file passes.
        tree.write(
            "src/lib.rs",
            "//! planted\n\npub fn bad() -> u8 {\n    2\n}\n",
        );
        run_check(
            fmt_command(&tree.path().join("Cargo.toml")),
            "cargo fmt --check",
        )
        .unwrap();
    }

    #[test]
    fn a_lint_warning_fails_clippy_naming_file_and_line() {
        if !component_present("clippy") {
            skipped(
                "clippy_planted",
                "clippy is not installed (rustup component add clippy)",
            );
            return;
        }
        // `needless_return` only warns: `-D warnings` is what fails it.
        let tree = package(
            "clippy",
            "//! planted\n\npub fn fine() -> u8 {\n    1\n}\n\npub fn bad() -> u8 {\n    return 2;\n}\n",
        );
        let mut cmd = clippy_command(&tree.path().join("Cargo.toml"));
        cmd.env("CARGO_TARGET_DIR", tree.path().join("target"));
        let err = run_check(cmd, "cargo clippy").unwrap_err();
        let shown = format!("{err:#}");
        assert!(shown.contains("cargo clippy failed"), "{shown}");
        assert!(
            shown.contains("src/lib.rs:8:"),
            "wanted src/lib.rs:8 in: {shown}"
        );
    }
}
