//! vmfleet's project chores, as `cargo xtask <task>` (rust-analyzer style: no shell scripts).
//!
//! - `test`: everything CI checks: format, clippy with warnings denied, all tests (live KVM tests
//!   run when `/dev/kvm` works and say SKIPPED when not), then the replay tests and an end-to-end
//!   live-versus-replay comparison once more with `/dev/kvm` made unusable in a private mount
//!   namespace, to prove replay needs no KVM.
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
//! Must not: install anything behind the user's back other than what the tests and the arm64
//! lab need (rustup components and target; the lab's apt packages, bookworm-backports and the
//! arm64 dpkg architecture, each step printed), or touch files outside the workspace except its
//! temporary directory and those installs.

mod arm64_lab;

use anyhow::{Context, Result, bail};
use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    match task {
        "test" => test(rest),
        "record" => record(rest),
        "bench" => bench(rest),
        "arm64-lab" => arm64_lab::cli(rest),
        // Not in the help: the lab's own checks, as `cargo xtask test` runs them.
        "arm64-lab-selftest" => {
            let lab = arm64_lab::Lab::prepare(&[arm64_lab::Kernel::V6_12])?;
            arm64_lab::transport_test(&lab)?;
            arm64_lab::smoke_test(&lab).map(|_| ())
        }
        "help" | "-h" | "--help" => {
            println!("{}", HELP);
            Ok(())
        }
        other => bail!("unknown task `{other}`\n{HELP}"),
    }
}

const HELP: &str = "usage: cargo xtask <task>\n\n\
tasks:\n  \
test     fmt check, clippy -D warnings, all tests, replay tests again with /dev/kvm unusable,\n           \
and an end-to-end live-vs-replay comparison\n  \
record   re-record fixtures/*.trace from fixtures/specs/*.toml on this host's KVM (needs /dev/kvm)\n  \
bench    build vmfleet in release and run `vmfleet bench [ARGS]` on this host's KVM (needs /dev/kvm):\n           \
start throughput of 1, 10, 100 VMs x 2 vCPUs against the floor (a bare kvm-ioctls start loop),\n           \
scale, supervisor memory per VM, stop latency; fails when a measured figure misses its target.\n           \
ARGS: --json, --floor-only, --counts 1,10,100, --runs N (see `vmfleet bench --help`)\n  \
arm64-lab  run a static aarch64 vmfleet on real arm64 KVM (a Debian arm64 kernel at EL2 under\n           \
qemu-system-aarch64 TCG) and bring back its output and files; installs what it needs (root)\n           \
[--kernel 6.12|6.1] [--cpu max|neoverse-n1|...] [--smp N] [--out DIR] [--input FILE]...\n           \
[--timeout SECS] [-- VMFLEET ARGS] (default: host); see `cargo xtask arm64-lab --help`";

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

fn step(name: &str) {
    println!("\n==> {name}");
}

fn check(status: std::io::Result<ExitStatus>, what: &str) -> Result<()> {
    let status = status.with_context(|| format!("could not start: {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn ensure_components() -> Result<()> {
    for (component, probe) in [
        ("rustfmt", ["fmt", "--version"]),
        ("clippy", ["clippy", "--version"]),
    ] {
        let ok = cargo()
            .args(probe)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            step(&format!("installing rustup component {component}"));
            check(
                Command::new("rustup")
                    .args(["component", "add", component])
                    .status(),
                "rustup component add",
            )?;
        }
    }
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    if let Some(extra) = args.first() {
        bail!("`cargo xtask test` takes no arguments (got `{extra}`)");
    }
    ensure_components()?;

    step("cargo fmt --check");
    check(
        cargo().args(["fmt", "--all", "--", "--check"]).status(),
        "cargo fmt --check",
    )?;

    step("cargo clippy (warnings denied)");
    check(
        cargo()
            .args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ])
            .status(),
        "cargo clippy",
    )?;

    step("cargo test --workspace");
    check(
        cargo().args(["test", "--workspace", "--locked"]).status(),
        "cargo test",
    )?;

    step("replay tests with /dev/kvm unusable");
    // Build first, with KVM visible (it does not matter to the build), so the namespaced run only
    // runs tests.
    check(
        cargo()
            .args(["build", "--release", "--locked", "-p", "supervisor"])
            .status(),
        "cargo build --release",
    )?;
    let cargo_bin = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    without_kvm(
        &format!("{} test --locked -p replay-tests", shell_quote(&cargo_bin)),
        &[("VMFLEET_EXPECT_NO_KVM", "1")],
    )?;

    step("end to end: live run recorded, replayed twice with /dev/kvm unusable");
    end_to_end()?;

    // arm64: the aarch64 build, and real arm64 KVM in the lab (installs what it needs first).
    let lab = arm64_lab::Lab::prepare(&[arm64_lab::Kernel::V6_12])?;
    if *lab.rust_route() == arm64_lab::RustRoute::Rustup {
        // The aarch64 half of the KVM backend is cfg'd out of the host's clippy run.
        step("cargo clippy --target aarch64-unknown-linux-musl (warnings denied)");
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
        )?;
    } else {
        println!("(no clippy for aarch64: the lab builds with Debian's rustc, which has none)");
    }
    step("arm64 lab: a 600 KiB binary file comes back from the guest byte-exact");
    arm64_lab::transport_test(&lab)?;
    step("arm64 lab: `vmfleet host` on 6.12 -cpu max sees KVM, arch aarch64");
    arm64_lab::smoke_test(&lab)?;
    step("arm64 lab: an arm64 fleet on real KVM 6.12, recorded, replayed here byte for byte");
    arm64_fleet_replays_here(&lab)?;
    println!("\nxtask test: all steps passed");
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
    println!(
        "  arm64 fleet on {}: {} bytes of trace; live and replayed transcripts identical ({} bytes)",
        outcome.kernel_release,
        fs::metadata(&trace)?.len(),
        live_text.len()
    );
    Ok(())
}

/// Run `script` with `/dev/kvm` replaced by `/dev/null` in a private mount namespace.
fn without_kvm(script: &str, envs: &[(&str, &str)]) -> Result<()> {
    let inner = format!(
        "set -e; if [ -e /dev/kvm ]; then mount --bind /dev/null /dev/kvm; fi; \
         if [ -r /dev/kvm ] && [ -c /dev/kvm ] && [ \"$(stat -c %t:%T /dev/kvm)\" != \"1:3\" ]; then \
           echo 'xtask: /dev/kvm is still a usable device' >&2; exit 1; fi; \
         echo 'xtask: /dev/kvm is now' \"$(stat -c '%F %t:%T' /dev/kvm 2>/dev/null || echo absent)\"; {script}"
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &inner])
        .current_dir(root());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    check(
        cmd.status(),
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
        println!("  {line}\n    -> {shown}");
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
        Some(1) => {
            bail!("vmfleet bench: a measured figure missed its target (see the table above)")
        }
        _ => bail!("vmfleet bench failed ({status}); its error is printed above"),
    }
}

fn end_to_end() -> Result<()> {
    let bin = vmfleet_release();
    let dir = env::temp_dir().join(format!("vmfleet-e2e-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let spec = root().join("fixtures/specs/fleet.toml");
    let trace = dir.join("e2e.trace");
    let live = dir.join("live.txt");
    if !kvm_usable() {
        println!(
            "SKIPPED end-to-end live run: /dev/kvm is not usable here; replaying the committed fixture instead"
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
    println!(
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
    println!("{}", outcome.stdout);
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
    println!(
        "recorded {} fixture(s); review the snapshot diff before committing",
        specs.len()
    );
    Ok(())
}
