//! vmfleet's project chores, as `cargo xtask <task>` (rust-analyzer style: no shell scripts).
//!
//! - `test`: everything CI checks: format, clippy with warnings denied, the source rules
//!   (`tidy`), all tests (live KVM tests run when `/dev/kvm` works and are SKIPPED when not),
//!   then the replay tests and an end-to-end live-versus-replay comparison once more with
//!   `/dev/kvm` made unusable in a private mount namespace, to prove replay needs no KVM, then
//!   the arm64 lab. It prints `SKIPPED <test>: <reason>` for every test that could not run and
//!   ends with `N passed, N failed, N skipped` (see [`tally`]).
//! - `tidy [--all]`: the workspace's source rules (`unsafe` and `cfg(target_arch)` only in the
//!   KVM backend, SAFETY comments, file length, the CPU model's imports), every violation as
//!   `path:line: rule: what`; `--all` runs fmt and clippy too (see [`tidy`]).
//! - `record`: re-record every fixture trace from `fixtures/specs/*.toml` on this machine's KVM and
//!   refresh the replay snapshots.
//! - `bench [ARGS]`: build `vmfleet` in release and run `vmfleet bench [ARGS]` (e.g. `--json`,
//!   `--floor-only`, `--counts 1,10,100`, `--runs 5`), which measures vmfleet's figures (start
//!   throughput against the floor, scale, memory per VM, stop latency) on this host's KVM and
//!   prints them. Needs a usable `/dev/kvm` and says so, before building, when there is none.
//!   Fails when a measured figure misses its target.
//! - `arm64-lab [--kernel 6.12|6.1] [--cpu CPU] [--smp N] [--out DIR] [--input FILE]... [--
//!   VMFLEET ARGS]`: run a static aarch64 `vmfleet` on real arm64 KVM, inside a Debian arm64
//!   kernel booted at EL2 under `qemu-system-aarch64` (TCG), and bring back its output and files
//!   (see `arm64_lab`). Other tasks call [`arm64_lab::Lab`] directly.
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
mod cli;
mod tally;
mod tidy;

use anyhow::{Context, Result, bail};
use clap::Parser;
use cli::{Cli, Task, TestArgs};
use std::env;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use tally::Tally;

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
        Task::Test(args) => return test_task(&args),
        Task::Tidy(args) => return tidy::task(args.all),
        Task::Record(args) => record(&args.fixtures),
        Task::Bench(args) => bench(&args.args),
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

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `target/` in the workspace.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// A step line: `==> name`, on stderr.
fn step(name: &str) {
    errln!("\n==> {name}");
}

fn check(status: std::io::Result<ExitStatus>, what: &str) -> Result<()> {
    let status = status.with_context(|| format!("could not start: {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// `cargo xtask test`: the steps, then the count line, always last (on failure too).
fn test_task(args: &TestArgs) -> ExitCode {
    let mut tally = Tally::default();
    let result = if args.packages.is_empty() {
        test(&mut tally)
    } else {
        cargo_tests(&args.packages, &mut tally)
    };
    let failed = match result {
        Ok(()) => tally.failed > 0,
        Err(e) => {
            errln!("xtask: error: {e:#}");
            true
        }
    };
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
fn skip_log_dir() -> PathBuf {
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
fn counted(tally: &mut Tally, result: Result<()>) -> Result<()> {
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
const ARM64_CHECKS: [&str; 4] = [
    "xtask::arm64_clippy",
    "xtask::arm64_lab_transport",
    "xtask::arm64_lab_smoke",
    "xtask::arm64_fleet_replays_here",
];

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

fn test(tally: &mut Tally) -> Result<()> {
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
    // Build first, with KVM visible (it does not matter to the build), so the namespaced run only
    // runs tests.
    counted(
        tally,
        check(
            cargo()
                .args(["build", "--release", "--locked", "-p", "supervisor"])
                .status(),
            "cargo build --release",
        ),
    )?;
    let cargo_bin = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    tally::run_cargo_test(
        without_kvm_command(
            &format!(
                "{} test --locked --no-fail-fast -p replay-tests",
                shell_quote(&cargo_bin)
            ),
            &[("VMFLEET_EXPECT_NO_KVM", "1")],
        ),
        "the replay tests with /dev/kvm unusable (needs root for unshare --mount)",
        &skip_log_dir(),
        tally,
    )?;

    step("end to end: live run recorded, replayed twice with /dev/kvm unusable");
    let result = end_to_end(tally);
    counted(tally, result)?;

    step("cargo xtask bench --json: stdout is vmfleet's JSON document alone");
    if let Some(reason) = kvm_unusable_reason() {
        tally.skip("xtask::bench_json_is_json", &reason);
    } else {
        let result = bench_json_is_json();
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
        // The aarch64 half of the KVM backend is cfg'd out of the host's clippy run.
        step("cargo clippy --target aarch64-unknown-linux-musl (warnings denied)");
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
                        "-p",
                        "recorder",
                        "-p",
                        "supervisor",
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
    errln!("\nxtask test: all steps passed");
    Ok(())
}

/// Run the arm64 fixture's fleet on real arm64 KVM in the lab (recording a trace and writing the
/// live transcript there), then replay the trace on this machine and compare transcripts.
fn arm64_fleet_replays_here(lab: &arm64_lab::Lab) -> Result<()> {
    let spec = root().join("fixtures/specs/arm64-6.12-max.toml");
    let mut run = arm64_lab::LabRun::new(arm64_lab::Kernel::V6_12, "max");
    run.out = Some(target_dir().join("arm64-lab/xtask-test-fleet"));
    run.inputs.push(spec);
    run.args = [
        "run",
        "arm64-6.12-max.toml",
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
    check(
        Command::new(vmfleet_release())
            .arg("replay")
            .arg(&trace)
            .arg("--transcript")
            .arg(&replayed)
            // The lab's output directory is kept between runs: replace the last replay's file.
            .arg("--force")
            .stdout(std::process::Stdio::null())
            .status(),
        "vmfleet replay of the arm64 lab's trace",
    )?;
    let (live_text, replayed_text) = (fs::read(&live)?, fs::read(&replayed)?);
    if live_text != replayed_text {
        bail!(
            "the replay of the arm64 lab's trace differs from the live transcript: diff {} {}",
            live.display(),
            replayed.display()
        );
    }
    outln!(
        "  arm64 fleet on {}: {} bytes of trace; live and replayed transcripts identical ({} bytes)",
        outcome.kernel_release,
        fs::metadata(&trace)?.len(),
        live_text.len()
    );
    Ok(())
}

/// `script` with `/dev/kvm` replaced by `/dev/null` in a private mount namespace.
fn without_kvm_command(script: &str, envs: &[(&str, &str)]) -> Command {
    let inner = format!(
        "set -e; if [ -e /dev/kvm ]; then mount --bind /dev/null /dev/kvm; fi; \
         if [ -r /dev/kvm ] && [ -c /dev/kvm ] && [ \"$(stat -c %t:%T /dev/kvm)\" != \"1:3\" ]; then \
           echo 'xtask: /dev/kvm is still a usable device' >&2; exit 1; fi; \
         echo 'xtask: /dev/kvm is now' \"$(stat -c '%F %t:%T' /dev/kvm 2>/dev/null || echo absent)\" >&2; {script}"
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &inner])
        .current_dir(root());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// Run `script` with `/dev/kvm` unusable (see [`without_kvm_command`]).
fn without_kvm(script: &str, envs: &[(&str, &str)]) -> Result<()> {
    check(
        without_kvm_command(script, envs).status(),
        "the no-KVM run (needs root for unshare --mount)",
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Record a `vmfleet serve` session: the daemon runs `spec` while the control requests of
/// `requests` (one JSON request per line, the daemon's own protocol; `#` lines are comments) are
/// sent over its socket one after the other, each waiting for its reply, ending with `shutdown`.
fn record_session(bin: &Path, spec: &Path, requests: &Path, trace: &Path) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let script =
        fs::read_to_string(requests).with_context(|| format!("reading {}", requests.display()))?;
    let dir = env::temp_dir().join(format!("vmfleet-record-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let socket = dir.join("record.sock");
    let _ = fs::remove_file(&socket);
    let mut daemon = Command::new(bin)
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--record")
        .arg(trace)
        // Re-recording a fixture replaces it (vmfleet refuses an existing trace otherwise).
        .arg("--force")
        .arg(spec)
        .spawn()
        .context("starting vmfleet serve")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let stream = loop {
        match UnixStream::connect(&socket) {
            Ok(stream) => break stream,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => {
                let _ = daemon.kill();
                bail!("vmfleet serve never opened {}: {e}", socket.display());
            }
        }
    };
    let mut writer = stream.try_clone()?;
    let mut replies = BufReader::new(stream);
    for line in script.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        writeln!(writer, "{line}")?;
        let mut reply = String::new();
        replies.read_line(&mut reply)?;
        let shown: String = reply.trim().chars().take(160).collect();
        outln!("  {line}\n    -> {shown}");
    }
    let status = daemon.wait()?;
    if !status.success() {
        bail!(
            "vmfleet serve ended with {status} while recording {}",
            trace.display()
        );
    }
    Ok(())
}

fn vmfleet_release() -> PathBuf {
    target_dir().join("release").join("vmfleet")
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

fn bench(args: &[String]) -> Result<()> {
    if let Some(reason) = kvm_unusable_reason() {
        bail!(
            "`cargo xtask bench` measures vmfleet on this host's KVM and needs a usable /dev/kvm \
             ({reason}); run it on a machine with KVM"
        );
    }
    step("cargo build --release -p supervisor (vmfleet)");
    check(
        cargo()
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                "supervisor",
                "--bin",
                "vmfleet",
            ])
            .status(),
        "cargo build --release",
    )?;
    let bin = vmfleet_release();
    step(&format!("vmfleet bench {}", args.join(" ")));
    let status = Command::new(&bin)
        .arg("bench")
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("could not start {}", bin.display()))?;
    match status.code() {
        Some(0) => Ok(()),
        // `target_missed` in vmfleet's exit-status table (supervisor/src/exit.rs).
        Some(9) => {
            bail!("vmfleet bench: a measured figure missed its target (see its report)")
        }
        _ => bail!("vmfleet bench failed ({status}); its error is printed above"),
    }
}

/// `cargo xtask bench --json` as a script runs it (the smallest measurement: the floor, one
/// VM): its stdout must parse as one JSON document of schema `vmfleet.bench.v1`, so nothing of
/// xtask's (step lines, cargo's output) may reach stdout. The document itself is validated
/// against the schema by `supervisor/tests/json_schema.rs`.
fn bench_json_is_json() -> Result<()> {
    let out = cargo()
        .args(["run", "--quiet", "--locked", "-p", "xtask", "--"])
        .args([
            "bench",
            "--json",
            "--floor-only",
            "--counts",
            "1",
            "--runs",
            "1",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("could not start cargo xtask bench")?;
    if !out.status.success() {
        bail!("cargo xtask bench --json failed ({})", out.status);
    }
    let stdout = String::from_utf8(out.stdout).context("bench --json stdout is not UTF-8")?;
    // serde_json refuses trailing characters: this is exactly one document.
    let document: serde_json::Value = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "cargo xtask bench --json printed something other than one JSON document:\n{stdout}"
        )
    })?;
    let schema = document["schema"].as_str().unwrap_or_default();
    if schema != "vmfleet.bench.v1" {
        bail!(
            "cargo xtask bench --json printed a document of schema {schema:?}, not vmfleet.bench.v1"
        );
    }
    Ok(())
}

fn end_to_end(tally: &mut Tally) -> Result<()> {
    let bin = vmfleet_release();
    let dir = env::temp_dir().join(format!("vmfleet-e2e-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let spec = root().join("fixtures/specs/fleet.toml");
    let trace = dir.join("e2e.trace");
    let live = dir.join("live.txt");
    if let Some(reason) = kvm_unusable_reason() {
        tally.skip(
            "xtask::end_to_end_live_run",
            &format!(
                "{reason}; the replays compare against the committed fixtures/fleet.trace instead"
            ),
        );
        fs::copy(root().join("fixtures/fleet.trace"), &trace)
            .context("copying fixtures/fleet.trace")?;
        let status = Command::new(&bin)
            .arg("replay")
            .arg(&trace)
            .arg("--transcript")
            .arg(&live)
            .status();
        check(status, "vmfleet replay (reference transcript)")?;
    } else {
        let status = Command::new(&bin)
            .args([
                OsStr::new("run"),
                spec.as_os_str(),
                OsStr::new("--record"),
                trace.as_os_str(),
            ])
            .arg("--transcript")
            .arg(&live)
            .status();
        check(status, "vmfleet run --record")?;
    }
    let q = |p: &Path| shell_quote(&p.display().to_string());
    // Without KVM, `run` must refuse with a pointer to `replay`; `replay` must work.
    let script = format!(
        "if {bin} run > /dev/null 2> {err}; then echo 'vmfleet run worked without KVM' >&2; exit 1; fi; \
         grep -q 'vmfleet replay' {err} || {{ echo 'vmfleet run without KVM does not point to replay:' >&2; cat {err} >&2; exit 1; }}; \
         {bin} replay {trace} --transcript {r1} > /dev/null && {bin} replay {trace} --transcript {r2} > /dev/null",
        err = q(&dir.join("run-without-kvm.err")),
        bin = q(&bin),
        trace = q(&trace),
        r1 = q(&dir.join("replay1.txt")),
        r2 = q(&dir.join("replay2.txt")),
    );
    without_kvm(&script, &[])?;
    let live_text = fs::read(&live)?;
    for name in ["replay1.txt", "replay2.txt"] {
        let replay = fs::read(dir.join(name))?;
        if replay != live_text {
            bail!(
                "{name} differs from the live transcript; compare {} with {}",
                live.display(),
                dir.join(name).display()
            );
        }
    }
    outln!(
        "live and both replays: {} bytes, byte-identical",
        live_text.len()
    );
    fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// An arm64 fixture's lab: its spec is `fixtures/specs/arm64-<kernel>-<cpu>.toml`.
fn arm64_fixture_lab(stem: &str) -> Option<Result<(arm64_lab::Kernel, String)>> {
    let rest = stem.strip_prefix("arm64-")?;
    let (kernel, cpu) = rest.split_once('-').unwrap_or((rest, ""));
    if cpu.is_empty() {
        return Some(Err(anyhow::anyhow!(
            "arm64 fixture `{stem}`: name it arm64-<kernel>-<cpu>, e.g. arm64-6.12-max"
        )));
    }
    Some(arm64_lab::Kernel::parse(kernel).map(|k| (k, cpu.to_string())))
}

/// Record an arm64 fixture on real arm64 KVM in the lab.
fn record_arm64(stem: &str, spec: &Path, trace: &Path) -> Result<()> {
    let (kernel, cpu) = arm64_fixture_lab(stem).expect("an arm64 fixture")?;
    let lab = arm64_lab::Lab::prepare(&[kernel])?;
    let mut run = arm64_lab::LabRun::new(kernel, &cpu);
    run.inputs.push(spec.to_path_buf());
    let spec_name = spec
        .file_name()
        .expect("a spec file")
        .to_string_lossy()
        .to_string();
    let recorded = format!("out/{stem}.trace");
    run.args = vec!["run".into(), spec_name, "--record".into(), recorded.clone()];
    let outcome = lab.run(&run)?;
    // A fixture may deliberately contain a failing VM; the trace is what matters.
    let back = outcome.out.join(&recorded);
    fs::copy(&back, trace)
        .with_context(|| format!("copying {} to {}", back.display(), trace.display()))?;
    outln!("{}", outcome.stdout);
    Ok(())
}

fn record(args: &[String]) -> Result<()> {
    let specs_dir = root().join("fixtures/specs");
    let mut specs: Vec<PathBuf> = fs::read_dir(&specs_dir)
        .with_context(|| format!("reading {}", specs_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension() == Some(OsStr::new("toml")))
        .filter(|p| args.is_empty() || args.iter().any(|a| p.file_stem() == Some(OsStr::new(a))))
        .collect();
    specs.sort();
    if specs.is_empty() {
        bail!("no fixture specs matched in {}", specs_dir.display());
    }
    let x86 = specs
        .iter()
        .any(|s| arm64_fixture_lab(&s.file_stem().unwrap_or_default().to_string_lossy()).is_none());
    if x86 && !kvm_usable() {
        bail!("recording x86 fixtures needs a usable /dev/kvm");
    }
    check(
        cargo()
            .args(["build", "--release", "-p", "supervisor"])
            .status(),
        "cargo build --release",
    )?;
    let bin = vmfleet_release();
    for spec in &specs {
        let stem = spec
            .file_stem()
            .expect("file has a name")
            .to_string_lossy()
            .to_string();
        let trace = root().join("fixtures").join(format!("{stem}.trace"));
        step(&format!("recording {}", trace.display()));
        if arm64_fixture_lab(&stem).is_some() {
            record_arm64(&stem, spec, &trace)?;
            continue;
        }
        let requests = spec.with_extension("requests");
        if requests.exists() {
            record_session(&bin, spec, &requests, &trace)?;
            continue;
        }
        let status = Command::new(&bin)
            .arg("run")
            .arg(spec)
            .arg("--record")
            .arg(&trace)
            // Re-recording a fixture replaces it (vmfleet refuses an existing trace otherwise).
            .arg("--force")
            .status()?;
        // A fixture may deliberately contain a failing VM; the trace is what matters.
        if status.code().is_none() {
            bail!("vmfleet was killed while recording {stem}");
        }
    }
    step("refreshing replay snapshots");
    check(
        cargo()
            .args(["test", "-p", "replay-tests"])
            .env("INSTA_UPDATE", "always")
            .env_remove("CI")
            .status(),
        "replay tests (snapshot refresh)",
    )?;
    outln!(
        "recorded {} fixture(s); review the snapshot diff before committing",
        specs.len()
    );
    Ok(())
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
        assert_eq!(tally.line(), "0 passed, 0 failed, 4 skipped");
        let broken: Result<()> = Err(anyhow::anyhow!("qemu crashed"));
        assert!(or_skip(&mut tally, &ARM64_CHECKS, "lab", broken).is_err());
        assert_eq!(tally.line(), "0 passed, 1 failed, 4 skipped");
        assert_eq!(or_skip(&mut tally, &[], "lab", Ok(7)).unwrap(), Some(7));
    }
}
