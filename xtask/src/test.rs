//! `cargo xtask test`: every check CI runs, as counted steps, ending in one line `N passed, N
//! failed, N skipped` (see [`crate::tally`]).
//!
//! The steps, in order: `cargo fmt --check`, clippy with warnings denied, the source rules
//! (`tidy`), `cargo test --workspace`, the replay tests once more with `/dev/kvm` unusable, the
//! end-to-end live-versus-replay run ([`crate::e2e`]), `cargo xtask bench --json` (with KVM), then
//! the arm64 lab: clippy for aarch64, the lab's transport and smoke tests, an arm64 fleet
//! recorded there and replayed here, an arm64 fleet under `vmfleet serve` driven by control
//! requests there (each reply checked) and replayed here, and `vmfleet host --fingerprint` there
//! equal to `vmfleet trace fingerprint` of that session's trace, its document checked against the
//! schema (the [`arm64`] module); last, on Debian's 7.2 (`arm64_newer`), the 7.2 model fixture's
//! fleet recorded live and replayed here, the live fingerprint's probes and capability 239, and
//! `replay --model` of that fingerprint against the live trace.
//!
//! Why the builds are what they are (compiling is nearly all of the run's time, ~8 min on a fresh
//! 2-core clone before they were cut down):
//! - the workspace is compiled for the host twice, once by clippy (check) and once by `cargo test
//!   --workspace` (dev); everything after reuses the dev build. The no-KVM replay runs `cargo test
//!   --workspace --test replay`, not `-p replay-tests`: selecting one package resolves the
//!   dependencies' features for it alone (serde_json, syn, regex differ), which compiled those,
//!   tracing and the workspace's crates again (11 units). The end-to-end runs use the dev `vmfleet`
//!   that `cargo test` built for supervisor's tests ([`crate::vmfleet_dev`]), and so does the check
//!   of `cargo xtask bench --json`'s stdout (it measures only the floor; see [`crate::bench`]):
//!   nothing is compiled in release for the host;
//! - for aarch64, clippy checks `vcpu` alone: the only crate with `cfg(target_arch)` code (the KVM
//!   backend; see `tidy`), so the other crates' aarch64 lints are their host lints. The lab's
//!   release build of `vmfleet` compiles the rest for aarch64 anyway;
//! - the dev profile (the workspace's `Cargo.toml`) gives the dependencies no debug info, and CI
//!   (`CI` set) builds without incremental compilation ([`crate::ci_env`]).
//!
//! Each step's line comes again with its elapsed time when it ends, and the run ends with
//! `==> total (N s)`, on stderr, before the count.

use crate::e2e::{self, shell_quote, without_kvm_command};
use crate::tally::{self, Tally};
use crate::{
    arm64_lab, cargo, check, ci_env, cli::TestArgs, end_step, kvm_unusable_reason, not_installed,
    root, step, target_dir, tidy, vmfleet_dev,
};
use anyhow::{Result, bail};

mod arm64;
mod arm64_newer;
use std::env;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

/// `cargo xtask test`: the steps, then the total time and the count line, always last (on
/// failure too).
pub fn task(args: &TestArgs) -> ExitCode {
    let started = Instant::now();
    let mut tally = Tally::default();
    let result = if args.packages.is_empty() {
        all_steps(&mut tally)
    } else {
        cargo_tests(&args.packages, &mut tally)
    };
    end_step();
    let failed = match result {
        Ok(()) => tally.failed > 0,
        Err(e) => {
            errln!("xtask: error: {e:#}");
            true
        }
    };
    errln!("==> total ({:.1} s)", started.elapsed().as_secs_f64());
    // The count is the very last line, after everything on stderr.
    let _ = std::io::stderr().flush();
    outln!("{}", tally.line());
    let _ = std::io::stdout().flush();
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Where `cargo xtask test` keeps its skip logs.
pub fn skip_log_dir() -> std::path::PathBuf {
    target_dir().join("xtask")
}

/// `cargo test -p PKG...` alone, counted (`cargo xtask test -p PKG`).
fn cargo_tests(packages: &[String], tally: &mut Tally) -> Result<()> {
    step(&format!("cargo test -p {}", packages.join(" -p ")));
    let mut cmd = cargo();
    cmd.args(["test", "--locked", "--no-fail-fast"]);
    for package in packages {
        cmd.args(["-p", package]);
    }
    tally::run_cargo_test(cmd, "cargo test", &skip_log_dir(), tally)
}

/// Run one of xtask's own checks as a counted test: passed, or failed with its error.
pub fn counted(tally: &mut Tally, result: Result<()>) -> Result<()> {
    match result {
        Ok(()) => {
            tally.pass();
            Ok(())
        }
        Err(e) => {
            tally.fail();
            Err(e)
        }
    }
}

/// The checks of the arm64 lab, for SKIPPED lines when it cannot be prepared.
const ARM64_CHECKS: [&str; 7] = [
    "xtask::arm64_clippy",
    "xtask::arm64_lab_transport",
    "xtask::arm64_lab_smoke",
    "xtask::arm64_fleet_replays_here",
    "xtask::arm64_serve_session_replays_here",
    "xtask::arm64_fingerprint_live_equals_trace",
    "xtask::arm64_live_fingerprint_schema",
];

/// The checks on the lab's newer kernel (7.2), skipped alone when it cannot be fetched.
const ARM64_NEWER_CHECKS: [&str; 1] = ["xtask::arm64_newer_kernel_fleet_replays_here"];

/// What `prepared` gave, or, when `--no-install` kept something from being installed, `None`
/// after counting `checks` as skipped for that reason; any other error is a failed check.
fn or_skip<T>(
    tally: &mut Tally,
    checks: &[&str],
    context: &str,
    prepared: Result<T>,
) -> Result<Option<T>> {
    match prepared {
        Ok(it) => Ok(Some(it)),
        Err(e) => {
            let Some(why) = not_installed(&e) else {
                return counted(tally, Err(e)).map(|()| None);
            };
            for check in checks {
                tally.skip(check, &format!("{context}: {why}"));
            }
            Ok(None)
        }
    }
}

fn all_steps(tally: &mut Tally) -> Result<()> {
    tidy::fmt_step(tally)?;
    let clippy = tidy::clippy_step(tally)?;
    tidy::rules_step(tally)?;

    step("cargo test --workspace");
    // The no-KVM check runs below, where /dev/kvm is unusable; here it would only be skipped.
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--workspace",
        "--locked",
        "--no-fail-fast",
        "--",
        "--skip",
        "kvm_is_unusable_when_the_xtask_says_so",
    ]);
    tally::run_cargo_test(cmd, "cargo test --workspace", &skip_log_dir(), tally)?;

    step("replay tests with /dev/kvm unusable");
    // `--workspace --test replay` (replay-tests' one test target), not `-p replay-tests`: the
    // features of the dependencies stay those of the workspace build above, so this only runs
    // what `cargo test --workspace` built (see the module's doc).
    let cargo_bin = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut envs = vec![("VMFLEET_EXPECT_NO_KVM", "1")];
    envs.extend(ci_env());
    tally::run_cargo_test(
        without_kvm_command(
            &format!(
                "{} test --workspace --locked --no-fail-fast --test replay",
                shell_quote(&cargo_bin)
            ),
            &envs,
        ),
        "the replay tests with /dev/kvm unusable (needs root for unshare --mount)",
        &skip_log_dir(),
        tally,
    )?;

    step("end to end: live run recorded, replayed twice with /dev/kvm unusable");
    let result = e2e::end_to_end(tally);
    counted(tally, result)?;

    step("cargo xtask bench --json: stdout is vmfleet's JSON document alone");
    if let Some(reason) = kvm_unusable_reason() {
        tally.skip("xtask::bench_json_is_json", &reason);
    } else {
        let result = crate::bench::bench_json_is_json();
        counted(tally, result)?;
    }

    // arm64: the aarch64 build, and real arm64 KVM in the lab (installs what it needs first).
    let Some(lab) = or_skip(
        tally,
        &ARM64_CHECKS,
        "the arm64 lab cannot run",
        arm64_lab::Lab::prepare(&[arm64_lab::Kernel::V6_12]),
    )?
    else {
        return Ok(());
    };
    if *lab.rust_route() != arm64_lab::RustRoute::Rustup {
        tally.skip(
            "xtask::arm64_clippy",
            "the lab builds with Debian's rustc, which has no clippy",
        );
    } else if !clippy {
        tally.skip("xtask::arm64_clippy", "clippy is not installed");
    } else {
        // The aarch64 half of the KVM backend is cfg'd out of the host's clippy run; it is all in
        // vcpu (the only crate tidy lets use cfg(target_arch)), so the other crates' aarch64
        // lints are their host lints and are not checked again.
        step("cargo clippy --target aarch64-unknown-linux-musl -p vcpu (warnings denied)");
        counted(
            tally,
            check(
                cargo()
                    .args([
                        "clippy",
                        "--locked",
                        "--target",
                        "aarch64-unknown-linux-musl",
                        "-p",
                        "vcpu",
                        "--all-targets",
                        "--",
                        "-D",
                        "warnings",
                    ])
                    .status(),
                "cargo clippy for aarch64",
            ),
        )?;
    }
    step("arm64 lab: a 600 KiB binary file comes back from the guest byte-exact");
    counted(tally, arm64_lab::transport_test(&lab).map(|_| ()))?;
    step("arm64 lab: `vmfleet host` on 6.12 -cpu max sees KVM, arch aarch64");
    counted(tally, arm64_lab::smoke_test(&lab).map(|_| ()))?;
    step("arm64 lab: an arm64 fleet on real KVM 6.12, recorded, replayed here byte for byte");
    counted(tally, arm64_fleet_replays_here(&lab))?;
    step(
        "arm64 lab: an arm64 fleet under vmfleet serve + ctl on real KVM 6.12, every reply as the \
         fixture says, replayed here",
    );
    let session = arm64::arm64_serve_session_replays_here(&lab);
    let trace = session.as_ref().ok().cloned();
    counted(tally, session.map(|_| ()))?;
    let Some(trace) = trace else {
        return Ok(());
    };
    step(
        "arm64 lab: host --fingerprint live on 6.12 equals trace fingerprint of the session's trace",
    );
    let live = arm64::arm64_fingerprint_live_equals_trace(&lab, &trace);
    let document = live.as_ref().ok().cloned();
    counted(tally, live.map(|_| ()))?;
    let Some(document) = document else {
        return Ok(());
    };
    step(
        "arm64 lab: the live fingerprint is a document of its schema (supervisor's json_schema test)",
    );
    counted(tally, arm64::live_fingerprint_matches_the_schema(&document))?;
    // A newer kernel: Debian's 7.2 (from trixie-backports, about 12 MB downloaded once).
    let Some(lab_7_2) = or_skip(
        tally,
        &ARM64_NEWER_CHECKS,
        "the arm64 lab cannot boot 7.2",
        arm64_lab::Lab::prepare(&[arm64_lab::Kernel::V7_2]),
    )?
    else {
        return Ok(());
    };
    step(
        "arm64 lab: the 7.2 model fleet on real KVM 7.2, recorded, replayed here byte for byte; \
         live fingerprint's probes and cap 239; replay --model of it: no call differs",
    );
    counted(
        tally,
        arm64_newer::arm64_newer_kernel_fleet_replays_here(&lab_7_2),
    )?;
    end_step();
    errln!("\nxtask test: all steps passed");
    Ok(())
}

/// Run the arm64 fixture's fleet on real arm64 KVM in the lab (recording a trace and writing the
/// live transcript there), then replay the trace on this machine and compare transcripts.
fn arm64_fleet_replays_here(lab: &arm64_lab::Lab) -> Result<()> {
    let replayed = lab_fleet_replays_here(
        lab,
        arm64_lab::Kernel::V6_12,
        "arm64-6.12-max",
        "xtask-test-fleet",
    )?;
    outln!(
        "  arm64 fleet on {}: {} bytes of trace; live and replayed transcripts identical ({} bytes)",
        replayed.outcome.kernel_release,
        fs::metadata(&replayed.trace)?.len(),
        replayed.transcript_bytes
    );
    Ok(())
}

/// `vmfleet replay TRACE --transcript TRANSCRIPT` with the dev build; `what` names it in errors.
pub(crate) fn replay_here(trace: &Path, transcript: &Path, what: &str) -> Result<()> {
    check(
        Command::new(vmfleet_dev())
            .arg("replay")
            .arg(trace)
            .arg("--transcript")
            .arg(transcript)
            // The lab's output directory is kept between runs: replace the last replay's file.
            .arg("--force")
            .stdout(std::process::Stdio::null())
            .status(),
        what,
    )
}

/// A lab fleet recorded live and replayed here ([`lab_fleet_replays_here`]).
pub(crate) struct LabReplay {
    /// The lab run.
    pub outcome: arm64_lab::LabOutcome,
    /// The trace it recorded, in the run's output directory.
    pub trace: std::path::PathBuf,
    /// The length of the live (and replayed) transcript.
    pub transcript_bytes: usize,
}

/// Run fixture `fixture`'s fleet (`fixtures/specs/FIXTURE.toml`) on real arm64 KVM `kernel`
/// `-cpu max` in the lab, into `<target>/arm64-lab/OUT`, recording a trace and the live
/// transcript; replay the trace on this machine and require the same transcript, byte for byte.
pub(crate) fn lab_fleet_replays_here(
    lab: &arm64_lab::Lab,
    kernel: arm64_lab::Kernel,
    fixture: &str,
    out: &str,
) -> Result<LabReplay> {
    let spec_name = format!("{fixture}.toml");
    let mut run = arm64_lab::LabRun::new(kernel, "max");
    run.out = Some(target_dir().join("arm64-lab").join(out));
    run.inputs
        .push(root().join("fixtures/specs").join(&spec_name));
    run.args = [
        "run",
        &spec_name,
        "--record",
        "out/lab.trace",
        "--transcript",
        "out/live.txt",
    ]
    .map(String::from)
    .to_vec();
    let outcome = lab.run(&run)?;
    outcome.ensure_success()?;
    let trace = outcome.out.join("out/lab.trace");
    let live = outcome.out.join("out/live.txt");
    let replayed = outcome.out.join("replayed.txt");
    replay_here(
        &trace,
        &replayed,
        &format!("vmfleet replay of the arm64 lab's {fixture} trace"),
    )?;
    let (live_text, replayed_text) = (fs::read(&live)?, fs::read(&replayed)?);
    if live_text != replayed_text {
        bail!(
            "the replay of the arm64 lab's {fixture} trace differs from the live transcript: diff \
             {} {}",
            live.display(),
            replayed.display()
        );
    }
    Ok(LabReplay {
        outcome,
        trace,
        transcript_bytes: live_text.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NotInstalled;

    #[test]
    fn a_lab_that_needs_an_install_is_skipped_and_any_other_failure_fails() {
        let mut tally = Tally::default();
        let missing: Result<()> = Err(NotInstalled {
            what: "qemu".into(),
            why: "the lab".into(),
        }
        .into());
        let prepared = or_skip(
            &mut tally,
            &ARM64_CHECKS,
            "the arm64 lab cannot run",
            missing,
        );
        assert!(prepared.unwrap().is_none());
        assert_eq!(tally.line(), "0 passed, 0 failed, 7 skipped");
        let broken: Result<()> = Err(anyhow::anyhow!("qemu crashed"));
        assert!(or_skip(&mut tally, &ARM64_CHECKS, "lab", broken).is_err());
        assert_eq!(tally.line(), "0 passed, 1 failed, 7 skipped");
        assert_eq!(or_skip(&mut tally, &[], "lab", Ok(7)).unwrap(), Some(7));
    }
}
