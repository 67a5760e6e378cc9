//! Counting what `cargo xtask test` ran: every libtest test, every skipped test, and xtask's own
//! checks, ending in one line `N passed, N failed, N skipped`.
//!
//! A test that cannot run here calls `vcpu::skip::skipped`, which appends `<test>\t<reason>\t
//! <binary>` to the file named by `VMFLEET_SKIP_LOG`; [`run_cargo_test`] sets that variable for
//! each `cargo test`, passes libtest's output through to stdout while reading it (`test result:
//! ... N passed; M failed; K ignored` for the totals, `test NAME ... FAILED` for which failed),
//! then prints each logged test as `SKIPPED <test>: <reason>` and counts it as skipped instead
//! of passed. `#[ignore]`d tests count as skipped too.
//!
//! Must not: count a test twice within one `cargo test` run (a test may call the skip helper
//! more than once), or count a skipped test that then failed as anything but failed.

use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment variable the skip helper reads (`vcpu::skip::SKIP_LOG_ENV`; xtask does not
/// depend on the workspace's crates).
pub const SKIP_LOG_ENV: &str = "VMFLEET_SKIP_LOG";

/// Say that xtask's own unit test `test` is skipped because of `reason`: `SKIPPED <test>:
/// <reason>` on stderr and, when [`SKIP_LOG_ENV`] names a file (`cargo xtask test` sets it), a
/// line `<test>\t<reason>\txtask` appended to it, so the run counts it as skipped. xtask's twin
/// of `vcpu::skip::skipped` (xtask depends on none of the workspace's crates); like it, it names
/// the test after libtest's thread when it can, and never fails the test.
#[cfg(test)]
pub fn skipped(test: &str, reason: &str) {
    let name = std::thread::current()
        .name()
        .filter(|n| !n.is_empty() && *n != "main")
        .map_or_else(|| test.to_string(), str::to_string);
    let reason = reason.replace(['\n', '\t'], " ");
    eprintln!("SKIPPED {name}: {reason}");
    let Some(log) = std::env::var_os(SKIP_LOG_ENV) else {
        return;
    };
    let written = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        // One write per line: appends from parallel tests do not interleave.
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, format!("{name}\t{reason}\txtask\n").as_bytes())
        });
    if let Err(e) = written {
        eprintln!(
            "xtask: could not append to the skip log {} ({SKIP_LOG_ENV}): {e}",
            Path::new(&log).display()
        );
    }
}

/// The running totals.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

/// What one `cargo test` printed on stdout, summed over its test binaries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LibtestOutput {
    /// The sums of the `test result:` lines.
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// How many `test result:` lines there were (0: nothing ran to the end).
    pub results: u64,
    /// Tests reported `FAILED`.
    pub failed_tests: BTreeSet<String>,
    /// Tests reported `ignored`, with the reason when `#[ignore = "..."]` gave one.
    pub ignored_tests: Vec<(String, String)>,
}

impl LibtestOutput {
    /// Read one line of libtest's output.
    pub fn line(&mut self, line: &str) {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .map(str::trim)
                    .find_map(|part| {
                        // `ok. 12 passed` or `3 failed`
                        let part = part.rsplit(". ").next().unwrap_or(part);
                        let (n, what) = part.split_once(' ')?;
                        (what == word).then(|| n.parse::<u64>().ok()).flatten()
                    })
                    .unwrap_or(0)
            };
            self.passed += count("passed");
            self.failed += count("failed");
            self.ignored += count("ignored");
            self.results += 1;
            return;
        }
        let Some(rest) = line.strip_prefix("test ") else {
            return;
        };
        let Some((name, outcome)) = rest.split_once(" ... ") else {
            return;
        };
        if outcome == "FAILED" {
            self.failed_tests.insert(name.to_string());
        } else if outcome == "ignored" {
            self.ignored_tests
                .push((name.to_string(), "ignored".to_string()));
        } else if let Some(reason) = outcome.strip_prefix("ignored, ") {
            self.ignored_tests
                .push((name.to_string(), format!("ignored: {reason}")));
        }
    }
}

/// One line of the skip log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skip {
    pub binary: String,
    pub test: String,
    pub reason: String,
}

/// The skip log's lines, each test once per binary (its first reason), in the order logged.
pub fn parse_skip_log(text: &str) -> Vec<Skip> {
    let mut seen = BTreeSet::new();
    let mut skips = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.splitn(3, '\t');
        let test = fields.next().unwrap_or("").to_string();
        let reason = fields.next().unwrap_or("no reason given").to_string();
        let binary = fields.next().unwrap_or("").to_string();
        if seen.insert((binary.clone(), test.clone())) {
            skips.push(Skip {
                binary,
                test,
                reason,
            });
        }
    }
    skips
}

/// Whether libtest's `name` is the test a skip was logged for: the same name, or the logged one
/// is the last part of it (a helper that gave its own short name).
fn same_test(libtest: &str, logged: &str) -> bool {
    libtest == logged || libtest.ends_with(&format!("::{logged}"))
}

impl Tally {
    /// `N passed, N failed, N skipped`: the last line `cargo xtask test` prints.
    pub fn line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }

    /// One of xtask's own checks passed.
    pub fn pass(&mut self) {
        self.passed += 1;
    }

    /// One of xtask's own checks failed.
    pub fn fail(&mut self) {
        self.failed += 1;
    }

    /// One of xtask's own checks cannot run here: printed and counted.
    pub fn skip(&mut self, test: &str, reason: &str) {
        outln!("SKIPPED {test}: {reason}");
        self.skipped += 1;
    }

    /// Add one `cargo test` run: its output and its skip log. Prints the SKIPPED lines. Returns
    /// the skipped tests counted.
    pub fn add_run(&mut self, out: &LibtestOutput, skips: &[Skip]) -> u64 {
        let mut skipped = 0;
        let mut skipped_passed = 0;
        for skip in skips {
            if out
                .failed_tests
                .iter()
                .any(|failed| same_test(failed, &skip.test))
            {
                continue; // It failed after all: counted as failed.
            }
            outln!("SKIPPED {}: {}", skip.test, skip.reason);
            skipped += 1;
            skipped_passed += 1;
        }
        for (test, reason) in &out.ignored_tests {
            outln!("SKIPPED {test}: {reason}");
        }
        skipped += out.ignored;
        self.passed += out.passed.saturating_sub(skipped_passed);
        self.failed += out.failed;
        self.skipped += skipped;
        skipped
    }
}

/// Where each `cargo test` run's skip log goes (under the target directory).
fn skip_log_path(dir: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static RUN: AtomicU32 = AtomicU32::new(0);
    dir.join(format!(
        "skip-{}-{}.log",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Run `cmd` (a `cargo test`, possibly wrapped, e.g. in `unshare`) with `VMFLEET_SKIP_LOG` set to
/// a fresh file in `log_dir`, pass its stdout through, and add its results to `tally`. Errors
/// when a test failed or the run did not finish (e.g. a build error), after counting.
pub fn run_cargo_test(
    mut cmd: Command,
    what: &str,
    log_dir: &Path,
    tally: &mut Tally,
) -> Result<()> {
    fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let log = skip_log_path(log_dir);
    let _ = fs::remove_file(&log);
    cmd.env(SKIP_LOG_ENV, &log).stdout(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {what}"))?;
    let mut out = LibtestOutput::default();
    let stdout = child.stdout.take().context("the child's stdout is piped")?;
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Read to the end even if our own stdout is gone, so the child never blocks.
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                outln!("{line}");
                out.line(line);
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("reading the output of {what}: {e}");
            }
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {what}"))?;
    let skips = match fs::read_to_string(&log) {
        Ok(text) => parse_skip_log(&text),
        Err(_) => Vec::new(), // nothing was skipped
    };
    let _ = fs::remove_file(&log);
    tally.add_run(&out, &skips);
    if status.success() {
        return Ok(());
    }
    if out.failed > 0 {
        let names: Vec<&str> = out.failed_tests.iter().map(String::as_str).collect();
        bail!(
            "{what}: {} test(s) failed: {} (their output is above)",
            out.failed,
            names.join(", ")
        );
    }
    // No test failed, yet the run did: a build error or a crashed test binary.
    tally.fail();
    bail!(
        "{what} failed ({status}) without a failed test: a build error or a crashed test binary (see above)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
running 3 tests
test skip::tests::a ... ok
test live_guest_runs ... ok
test broken ... FAILED
test slow ... ignored, needs a big host
test result: FAILED. 2 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s

running 2 tests
test open_files ... ok
test lives ... ok
test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.20s
";

    fn parsed() -> LibtestOutput {
        let mut out = LibtestOutput::default();
        OUTPUT.lines().for_each(|l| out.line(l));
        out
    }

    #[test]
    fn libtest_totals_and_failures_are_read() {
        let out = parsed();
        assert_eq!(
            (out.passed, out.failed, out.ignored, out.results),
            (4, 1, 1, 2)
        );
        assert_eq!(
            out.failed_tests.iter().collect::<Vec<_>>(),
            [&"broken".to_string()]
        );
        assert_eq!(
            out.ignored_tests,
            [("slow".to_string(), "ignored: needs a big host".to_string())]
        );
    }

    #[test]
    fn skipped_tests_are_not_passed_and_counted_once() {
        let log = "live_guest_runs\t/dev/kvm unusable: ENOENT\tkvm_live\n\
                   live_guest_runs\t/dev/kvm unusable: ENOENT\tkvm_live\n\
                   live_guest_runs\tnot x86\tfleet\n\
                   broken\tskipped a part, then failed\tcli\n";
        let skips = parse_skip_log(log);
        assert_eq!(skips.len(), 3);
        let mut tally = Tally::default();
        tally.add_run(&parsed(), &skips);
        // 4 passed, two of them skips; the skipped-then-failed test is failed; 1 ignored.
        assert_eq!(tally.line(), "2 passed, 1 failed, 3 skipped");
        tally.skip("xtask::end_to_end_live_run", "no KVM");
        tally.pass();
        assert_eq!(tally.line(), "3 passed, 1 failed, 4 skipped");
    }

    #[test]
    fn a_short_logged_name_matches_libtests_full_name() {
        assert!(same_test("bench::tests::measures", "measures"));
        assert!(same_test("measures", "measures"));
        assert!(!same_test("bench::tests::measures_more", "measures"));
    }

    #[test]
    fn a_run_is_counted_from_its_output_and_skip_log() {
        // A stand-in for `cargo test`: libtest-like output, one skip logged through the variable.
        let script = format!(
            "printf 'test a ... ok\\ntest b ... ok\\ntest result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\\n'; \
             printf 'b\\tno KVM here\\tstand_in\\n' >> \"${SKIP_LOG_ENV}\""
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        let dir = std::env::temp_dir().join(format!("xtask-tally-{}", std::process::id()));
        let mut tally = Tally::default();
        run_cargo_test(cmd, "the stand-in", &dir, &mut tally).unwrap();
        assert_eq!(tally.line(), "1 passed, 0 failed, 1 skipped");

        // A run that fails without a failed test (a build error) is one failure.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 101"]);
        let err = run_cargo_test(cmd, "the broken stand-in", &dir, &mut tally).unwrap_err();
        assert!(err.to_string().contains("without a failed test"), "{err}");
        assert_eq!(tally.line(), "1 passed, 1 failed, 1 skipped");
        fs::remove_dir_all(&dir).ok();
    }
}
