//! vmfleet's project chores, as `cargo xtask <task>` (rust-analyzer style: no shell scripts).
//!
//! - `test`: everything CI checks: format, clippy with warnings denied, the source rules
//!   (`tidy`), all tests (live KVM tests run when `/dev/kvm` works and are SKIPPED when not),
//!   then the replay tests and an end-to-end live-versus-replay comparison once more with
//!   `/dev/kvm` made unusable in a private mount namespace, to prove replay needs no KVM, then
//!   the arm64 lab. It prints `SKIPPED <test>: <reason>` for every test that could not run and
//!   ends with `N passed, N failed, N skipped` (see [`tally`]). Each step's line comes again
//!   with its elapsed time when it ends, and the run ends with its total (see [`test`](mod@test)).
//! - `tidy [--all]`: the workspace's source rules (`unsafe` and `cfg(target_arch)` only in the
//!   KVM backend, SAFETY comments, file length, the vcpu crate's layers), every violation as
//!   `path:line: rule: what`; `--all` runs fmt and clippy too (see [`tidy`]).
//! - `record` ([`record`]): re-record every fixture trace from `fixtures/specs/*.toml` on this
//!   machine's KVM (arm64 ones in the arm64 lab; with a `.requests` file, as a `vmfleet serve`
//!   session) and refresh the replay snapshots.
//! - `bench [ARGS]` ([`bench`](mod@bench)): build `vmfleet` in release and run `vmfleet bench
//!   [ARGS]` (e.g. `--json`, `--floor-only`, `--counts 1,10,100`, `--runs 5`), which measures
//!   vmfleet's figures (start throughput against the floor, scale, memory per VM, stop latency)
//!   on this host's KVM and prints them. Needs a usable `/dev/kvm` and says so, before building,
//!   when there is none.
//!   Fails when a measured figure misses its target.
//! - `arm64-lab [--kernel 6.12|6.1|7.2] [--cpu CPU] [--smp N] [--out DIR] [--input FILE]...
//!   [--requests FILE] [-- VMFLEET ARGS]`: run a static aarch64 `vmfleet` on real arm64 KVM,
//!   inside a Debian arm64 kernel booted at EL2 under `qemu-system-aarch64` (TCG), and bring back
//!   its output and files (see `arm64_lab`); with `--requests`, `serve FLEET ...` driven by those
//!   control requests (`vmfleet ctl send` in the guest). Other tasks call [`arm64_lab::Lab`]
//!   directly.
//!
//! Layout: this file has the command line's dispatch and what every task shares (the workspace's
//! paths, `cargo`, step lines, the install gate); `test` and `e2e` are `cargo xtask test`'s steps
//! (the end-to-end and no-KVM runs in `e2e`), `bench` and `record` their tasks.
//!
//! Output: stdout carries results (test output, the SKIPPED lines and the count, vmfleet's own
//! output); xtask's step lines (`==> ...`) and install notices go to stderr, so `cargo xtask bench
//! --json` prints only vmfleet's JSON on stdout. Writing to a closed pipe is not an error.
//!
//! Must not: install anything behind the user's back: each install (rustup components and
//! target; the lab's apt packages, bookworm-backports and the arm64 dpkg architecture, its
//! kernels and busybox) is announced on stderr before it happens, and `--no-install` turns them
//! all off ([`may_install`]). Nor touch files outside the workspace except its temporary
//! directory and those installs.

/// `println!` that ignores a closed stdout (`cargo xtask ... | head` must not panic).
#[cfg(not(test))]
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// In unit tests: `println!`, which libtest captures (xtask's own tests must not print
/// libtest-like lines into the output `cargo xtask test` reads).
#[cfg(test)]
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        println!($($arg)*);
    }};
}

/// `eprintln!` that ignores a closed stderr.
#[cfg(not(test))]
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// In unit tests: `eprintln!`, which libtest captures.
#[cfg(test)]
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        eprintln!($($arg)*);
    }};
}

mod arm64_lab;
mod bench;
mod cli;
mod e2e;
mod record;
mod tally;
mod test;
mod tidy;

use anyhow::{Context, Result, bail};
use clap::Parser;
use cli::{Cli, Task};
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` are "errors" too; printing ignores a closed pipe.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    NO_INSTALL.store(cli.no_install, Ordering::Relaxed);
    let result = match cli.task {
        Task::Test(args) => return test::task(&args),
        Task::Tidy(args) => return tidy::task(args.all),
        Task::Record(args) => record::record(&args.fixtures),
        Task::Bench(args) => bench::bench(&args.args),
        Task::Arm64Lab(args) => arm64_lab::cli(args),
        Task::Arm64LabSelftest => {
            arm64_lab::Lab::prepare(&[arm64_lab::Kernel::V6_12]).and_then(|lab| {
                arm64_lab::transport_test(&lab)?;
                arm64_lab::smoke_test(&lab).map(|_| ())
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Set by `--no-install`.
static NO_INSTALL: AtomicBool = AtomicBool::new(false);

/// What `--no-install` kept from being installed; the task that needed it is skipped or fails
/// with this as its reason.
#[derive(Debug)]
pub struct NotInstalled {
    pub what: String,
    pub why: String,
}

impl std::fmt::Display for NotInstalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is not installed ({}), and --no-install keeps xtask from installing it",
            self.what, self.why
        )
    }
}

impl std::error::Error for NotInstalled {}

/// Ask before installing `what` (needed for `why`): announces it on stderr, in one line, before
/// it happens; with `--no-install`, an error ([`NotInstalled`]) instead.
pub fn may_install(what: &str, why: &str) -> Result<()> {
    if NO_INSTALL.load(Ordering::Relaxed) {
        return Err(NotInstalled {
            what: what.to_string(),
            why: why.to_string(),
        }
        .into());
    }
    errln!("xtask: installing {what} ({why}); --no-install to skip");
    Ok(())
}

/// The [`NotInstalled`] behind `e`, if that is why it failed.
pub fn not_installed(e: &anyhow::Error) -> Option<&NotInstalled> {
    e.chain().find_map(|c| c.downcast_ref::<NotInstalled>())
}

/// The workspace's root: xtask's parent directory (xtask is always built from the workspace; a
/// manifest directory without a parent would be `/`, used as it is).
fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `target/` in the workspace.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// `cargo`, run in the workspace; in CI (`CI` set), with incremental compilation off unless
/// `CARGO_INCREMENTAL` says otherwise (see [`ci_env`]).
fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root()).envs(ci_env());
    cmd
}

/// The environment xtask adds to the builds it starts: in CI, `CARGO_INCREMENTAL=0`. A CI run
/// builds a fresh clone once, so incremental compilation only costs there (its caches are
/// written for every workspace crate and never read). Every build of one `cargo xtask test` gets
/// the same setting, so none rebuilds what another built.
fn ci_env() -> Vec<(&'static str, &'static str)> {
    if env::var_os("CI").is_some() && env::var_os("CARGO_INCREMENTAL").is_none() {
        vec![("CARGO_INCREMENTAL", "0")]
    } else {
        Vec::new()
    }
}

/// The step running now: its name and when it began (see [`step`]).
static STEP: Mutex<Option<(String, Instant)>> = Mutex::new(None);

/// A step line: `==> name`, on stderr, when the step begins. The step before it ends there: its
/// line comes again with the time it took, `==> name (12.3 s)`, so that a run's log says where
/// the time went.
fn step(name: &str) {
    end_step();
    errln!("\n==> {name}");
    if let Ok(mut current) = STEP.lock() {
        *current = Some((name.to_string(), Instant::now()));
    }
}

/// End the running step, if any: `==> name (12.3 s)` on stderr.
fn end_step() {
    let ended = STEP.lock().ok().and_then(|mut current| current.take());
    if let Some((name, started)) = ended {
        errln!("==> {name} ({:.1} s)", started.elapsed().as_secs_f64());
    }
}

fn check(status: std::io::Result<ExitStatus>, what: &str) -> Result<()> {
    let status = status.with_context(|| format!("could not start: {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// The release `vmfleet` (`cargo build --release -p supervisor`): what `bench` measures and
/// `record` records with.
fn vmfleet_release() -> PathBuf {
    target_dir().join("release").join("vmfleet")
}

/// The dev-profile `vmfleet` that `cargo test --workspace` builds for supervisor's integration
/// tests: what `cargo xtask test` runs end to end, so that it compiles the workspace once in dev
/// and never in release but for the bench.
fn vmfleet_dev() -> PathBuf {
    target_dir().join("debug").join("vmfleet")
}

fn kvm_usable() -> bool {
    kvm_unusable_reason().is_none()
}

/// Why `/dev/kvm` cannot be opened read-write, if it cannot. (Whether it really is KVM is for
/// `vmfleet` to find out; it says so clearly.)
fn kvm_unusable_reason() -> Option<String> {
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => None,
        Err(e) => Some(format!("cannot open /dev/kvm read-write: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_install_refuses_with_what_and_why_found_through_context() {
        NO_INSTALL.store(true, Ordering::Relaxed);
        let refused = may_install("the rustup component clippy", "lints");
        NO_INSTALL.store(false, Ordering::Relaxed);
        let err = refused
            .context("preparing the lab")
            .context("cargo xtask test")
            .unwrap_err();
        let why = not_installed(&err).expect("the NotInstalled cause is found");
        assert_eq!(why.what, "the rustup component clippy");
        assert!(why.to_string().contains("--no-install"), "{why}");
        assert!(not_installed(&anyhow::anyhow!("another failure")).is_none());
        assert!(may_install("nothing, really", "a test").is_ok());
    }
}
