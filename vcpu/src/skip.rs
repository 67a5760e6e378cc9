//! Skipped tests, counted: a test that cannot run here (no usable `/dev/kvm`, not an x86 host, a
//! limit it cannot test) calls [`skipped`] instead of passing silently.
//!
//! [`skipped`] prints `SKIPPED <test>: <reason>` on stderr (libtest shows it with `--nocapture`)
//! and, when the environment variable [`SKIP_LOG_ENV`] names a file, appends one line
//! `<test>\t<reason>\t<binary>` to it. `cargo xtask test` sets that variable for every `cargo
//! test` it runs, prints each logged test as `SKIPPED <test>: <reason>`, and counts them as
//! skipped, not passed. It lives here because every test crate of the workspace depends on
//! `vcpu`.
//!
//! Must not: panic (a test that skips must still pass), or fail the test when the log cannot be
//! written (it says so on stderr instead).

use std::fmt::Display;
use std::io::Write;

/// The environment variable naming the skip log (set by `cargo xtask test`).
pub const SKIP_LOG_ENV: &str = "VMFLEET_SKIP_LOG";

/// Say that `test` is skipped (in whole or in part) because of `reason`, and log it for `cargo
/// xtask test`.
///
/// `test` is the name to use when the current thread does not carry libtest's name for the test
/// (libtest names each test's thread after the test, e.g. `bench::tests::a_test`; that name is
/// preferred, so the log matches the `test <name> ... ok` lines).
pub fn skipped(test: &str, reason: impl Display) {
    let name = current_test().unwrap_or_else(|| test.to_string());
    let reason = one_line(&reason.to_string());
    eprintln!("SKIPPED {name}: {reason}");
    let Some(log) = std::env::var_os(SKIP_LOG_ENV) else {
        return;
    };
    let line = format!("{}\t{reason}\t{}\n", one_line(&name), binary());
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        // One write per line: appends from parallel tests do not interleave.
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "vcpu::skip: could not append to the skip log {} ({SKIP_LOG_ENV}): {e}",
            std::path::Path::new(&log).display()
        );
    }
}

/// Whether `/dev/kvm` can be used here; if not, `test` is [`skipped`] with the reason. The one
/// check the live tests of every crate start with.
pub fn kvm_usable(test: &str) -> bool {
    match crate::hypervisor::kvm::KvmHypervisor::open() {
        Ok(_) => true,
        Err(e) => {
            skipped(test, format!("/dev/kvm unusable: {e}"));
            false
        }
    }
}

/// libtest's name of the running test: the current thread's name, unless it is `main` (tests run
/// on the main thread with `--test-threads=1` on some toolchains) or missing.
pub fn current_test() -> Option<String> {
    std::thread::current()
        .name()
        .filter(|n| !n.is_empty() && *n != "main")
        .map(str::to_string)
}

/// The test binary's name without cargo's hash: `kvm_live` for `kvm_live-0123abcd`.
fn binary() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => stem,
    }
}

/// Tabs and line breaks would break the log's format.
fn one_line(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_name_is_the_threads_and_reasons_stay_on_one_line() {
        let seen = std::thread::Builder::new()
            .name("module::a_test".into())
            .spawn(current_test)
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(seen.as_deref(), Some("module::a_test"));
        assert_eq!(one_line("a\tb\nc"), "a b c");
        assert!(!binary().contains('/'));
    }
}
