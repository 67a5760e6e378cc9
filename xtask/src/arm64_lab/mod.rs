//! `cargo xtask arm64-lab`: real arm64 KVM on an x86_64 machine.
//!
//! A Debian arm64 kernel boots at EL2 under `qemu-system-aarch64` in TCG mode
//! (`-M virt,virtualization=on`); its `/dev/kvm` is the real kernel KVM code. The lab runs a static
//! aarch64 `vmfleet` there, from an initramfs, and brings back what it printed and wrote. See
//! `shared/arm64-lab.md` for the recipe and what the kernels said.
//!
//! Other xtask commands call it as a function:
//!
//! ```ignore
//! let lab = arm64_lab::Lab::prepare(&[Kernel::V6_12])?;   // install, fetch, cross-build (idempotent)
//! let mut run = LabRun::new(Kernel::V6_12, "max");
//! run.inputs.push(spec.clone());                          // lands in the guest's working directory
//! run.args = vec!["run".into(), "arm.toml".into(), "--record".into(), "out/arm.trace".into()];
//! let outcome = lab.run(&run)?;                           // Err: the lab itself failed
//! outcome.ensure_success()?;                              // Err: vmfleet exited non-zero inside
//! let trace = outcome.out.join("out/arm.trace");          // byte-exact copy of the guest's file
//! ```
//!
//! A control session instead of one command: [`LabRun::serve`] runs `vmfleet serve FLEET --record
//! TRACE --socket /lab/serve.sock` and sends it request lines one after the other (`vmfleet ctl
//! send` in the guest, each waiting for its reply); [`LabOutcome::session`] has the replies.
//!
//! Layout: `install` (apt, the machine's sources, the host packages), `packages` (the kernels and
//! busybox in the cache; `private_apt` for a suite the host does not know), `kernel` (which
//! kernels and where their packages are), `toolchain` (the Rust target), `initramfs` (the cpio
//! archive and the guest's `/init`), `console` (how files come back: framed base64 on the serial
//! console, both ends of it), `boot` (QEMU with a deadline), `checks` (the transport and smoke
//! tests `cargo xtask test` runs).

mod boot;
mod checks;
mod console;
mod initramfs;
mod install;
mod kernel;
mod packages;
mod private_apt;
mod toolchain;

pub use checks::{smoke_test, transport_test};
pub use kernel::Kernel;
pub use toolchain::RustRoute;

use crate::{cargo, check, step, target_dir};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One run of vmfleet in the lab.
#[derive(Clone, Debug)]
pub struct LabRun {
    pub kernel: Kernel,
    /// QEMU's `-cpu`: `max`, `neoverse-n1`, `neoverse-v1`, `cortex-a72`, ...
    pub cpu: String,
    /// QEMU's `-smp`.
    pub smp: u32,
    /// Where the results go; `None`: `<target>/arm64-lab/<kernel>-<cpu>/`. The directory is
    /// emptied first if it is empty or a previous lab run's; anything else is refused.
    pub out: Option<PathBuf>,
    /// Files copied into the guest's working directory under their file names (the run may
    /// refer to them by name). Unchanged, they are not brought back.
    pub inputs: Vec<PathBuf>,
    /// vmfleet's arguments; empty means `host`. It runs in a working directory (with the inputs
    /// and an empty `out/`) whose files, new or changed, all come back byte-exact into `out`,
    /// under the same relative paths.
    pub args: Vec<String>,
    /// How long vmfleet may run inside the guest before it gets SIGTERM (then SIGKILL 10 s later);
    /// what it wrote by then still comes back. The host gives QEMU this plus time to boot and to
    /// send the files back.
    pub timeout: Duration,
    /// A control session's request lines (see [`LabRun::serve`]); `None`: vmfleet runs alone.
    pub session: Option<Vec<String>>,
}

/// The socket a control session's `vmfleet serve` listens on, in the guest (outside the working
/// directory, so it does not come back).
pub const SESSION_SOCKET: &str = "/lab/serve.sock";

impl LabRun {
    pub fn new(kernel: Kernel, cpu: &str) -> LabRun {
        LabRun {
            kernel,
            cpu: cpu.to_string(),
            smp: 1,
            out: None,
            inputs: Vec::new(),
            args: Vec::new(),
            timeout: Duration::from_secs(300),
            session: None,
        }
    }

    /// Make this run a control session: `vmfleet serve FLEET --record TRACE --socket`
    /// [`SESSION_SOCKET`], driven by `requests` (one JSON request line each, the daemon's
    /// protocol), sent by `vmfleet ctl send` once the socket is there, one after the other, each
    /// waiting for its reply. The last one should end the daemon (`shutdown`); the replies come
    /// back in [`LabOutcome::session`]. `fleet` is an input's file name, `trace` a path under the
    /// working directory (`out/X.trace`).
    pub fn serve(&mut self, fleet: &str, trace: &str, requests: Vec<String>) {
        self.args = [
            "serve",
            fleet,
            "--record",
            trace,
            "--socket",
            SESSION_SOCKET,
        ]
        .map(String::from)
        .to_vec();
        self.session = Some(requests);
    }

    fn vmfleet_args(&self) -> Vec<String> {
        if self.args.is_empty() {
            vec!["host".to_string()]
        } else {
            self.args.clone()
        }
    }

    /// `6.12-max`, `6.1-neoverse-n1`, ...
    fn default_out(&self) -> PathBuf {
        let cpu: String = self
            .cpu
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        lab_dir().join(format!("{}-{cpu}", self.kernel.label()))
    }
}

/// What a lab run came to. A run whose vmfleet failed is still an outcome (a fixture may fail on
/// purpose); the lab failing (no boot, corrupt or truncated frames, timeout) is an error.
#[derive(Clone, Debug)]
pub struct LabOutcome {
    /// The results directory.
    pub out: PathBuf,
    /// `uname -r` in the guest.
    pub kernel_release: String,
    /// vmfleet's exit status in the guest (128 + N for signal N).
    pub exit_code: i32,
    /// Whether vmfleet ran into [`LabRun::timeout`] and was stopped.
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// The files the guest wrote, as written under `out`.
    pub files: Vec<PathBuf>,
    /// The full serial console (`out/console.log`).
    pub console: PathBuf,
    /// Guest uptime when `/init` started (kernel boot).
    pub boot: Duration,
    /// vmfleet's run time in the guest.
    pub run: Duration,
    /// Wall time from starting QEMU to its exit.
    pub total: Duration,
    /// What was run, for messages: `6.12 -cpu max -smp 1: vmfleet host`.
    pub what: String,
    /// A control session's outcome (`None`: no session).
    pub session: Option<SessionOutcome>,
}

/// What a control session's `vmfleet ctl send` came to in the guest.
#[derive(Clone, Debug)]
pub struct SessionOutcome {
    /// Its exit status: 0 every reply was ok, 7 at least one was refused, 8 the daemon could not
    /// be reached or closed the connection early (see `vmfleet ctl send --help`).
    pub exit_code: i32,
    /// The reply lines, one per request answered, in order.
    pub replies: Vec<String>,
    /// What it printed on stderr.
    pub stderr: String,
}

impl LabOutcome {
    /// An error unless vmfleet exited 0 inside the guest; the error carries its stderr.
    pub fn ensure_success(&self) -> Result<()> {
        if self.exit_code == 0 && !self.timed_out {
            return Ok(());
        }
        let why = if self.timed_out {
            format!(
                "ran out of time and was stopped (exit status {})",
                self.exit_code
            )
        } else {
            format!("exited with status {}", self.exit_code)
        };
        bail!(
            "in the arm64 lab ({}), vmfleet {why}; its stderr:\n{}\n(everything is in {}, the \
             guest's console in {})",
            self.what,
            indent(self.stderr.trim_end()),
            self.out.display(),
            self.console.display()
        )
    }

    /// One line: what ran, how it ended, the times, where the results are.
    pub fn summary(&self) -> String {
        format!(
            "arm64 lab {} [{}]: exit {}{}; boot {:.1} s, vmfleet {:.1} s, wall {:.1} s; {} file(s) back; results in {}",
            self.what,
            self.kernel_release,
            self.exit_code,
            if self.timed_out { " (timed out)" } else { "" },
            self.boot.as_secs_f64(),
            self.run.as_secs_f64(),
            self.total.as_secs_f64(),
            self.files.len(),
            self.out.display()
        )
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `<target>/arm64-lab`: the cache and the default results directories.
pub fn lab_dir() -> PathBuf {
    target_dir().join("arm64-lab")
}

/// The lab, ready to run: tools installed, kernels and busybox cached, vmfleet cross-built.
#[derive(Clone, Debug)]
pub struct Lab {
    qemu: PathBuf,
    busybox: PathBuf,
    vmfleet: PathBuf,
    kernels: Vec<(Kernel, packages::KernelImage)>,
    route: RustRoute,
}

impl Lab {
    /// Install what is missing (idempotent: skips what is present), fetch `kernels` into the
    /// cache, and build the static aarch64 vmfleet.
    pub fn prepare(kernels: &[Kernel]) -> Result<Lab> {
        let started = Instant::now();
        let (busybox, images, route) = install::provision(kernels, &lab_dir().join("cache"))?;
        errln!("  (install step: {:.1} s)", started.elapsed().as_secs_f64());
        let qemu = which("qemu-system-aarch64")
            .context("qemu-system-aarch64 is not on PATH although qemu-system-arm is installed")?;
        let vmfleet = build_vmfleet(&route)?;
        Ok(Lab {
            qemu,
            busybox,
            vmfleet,
            kernels: kernels.iter().copied().zip(images).collect(),
            route,
        })
    }

    /// How vmfleet was compiled for aarch64.
    pub fn rust_route(&self) -> &RustRoute {
        &self.route
    }

    /// Boot `run.kernel` with an initramfs holding vmfleet and the inputs, run vmfleet, bring
    /// back what it printed and wrote. Errors when the lab itself fails; vmfleet failing is in
    /// the outcome (see [`LabOutcome::ensure_success`]).
    pub fn run(&self, run: &LabRun) -> Result<LabOutcome> {
        let image = self
            .kernels
            .iter()
            .find(|(k, _)| *k == run.kernel)
            .map(|(_, image)| image)
            .with_context(|| {
                format!(
                    "the lab was prepared without kernel {}; pass it to Lab::prepare",
                    run.kernel.label()
                )
            })?;
        if run.smp == 0 {
            bail!("--smp must be at least 1");
        }
        let args = run.vmfleet_args();
        let what = format!(
            "{} -cpu {} -smp {}: vmfleet {}",
            run.kernel.label(),
            run.cpu,
            run.smp,
            args.join(" ")
        );
        step(&format!("arm64 lab: {what}"));
        let out = run.out.clone().unwrap_or_else(|| run.default_out());
        prepare_out(&out, &what)?;

        let initrd = out.join(console::INITRAMFS);
        initramfs::write(&initramfs::Contents {
            path: &initrd,
            busybox: &self.busybox,
            vmfleet: &self.vmfleet,
            inputs: &run.inputs,
            args: &args,
            timeout: run.timeout,
            session: run.session.as_deref(),
        })?;

        let console_log = out.join(console::CONSOLE);
        let booted = boot::boot(&boot::Boot {
            qemu: &self.qemu,
            kernel: &image.image,
            initrd: &initrd,
            cpu: &run.cpu,
            smp: run.smp,
            console: &console_log,
            // Boot takes seconds; sending files back about 1 s per 100 KiB. Be generous.
            deadline: run.timeout + Duration::from_secs(180),
        })?;
        let decoded = console::decode(&booted.console).with_context(|| {
            format!(
                "the guest's results on the console are incomplete or corrupt ({}; the console is {})",
                what,
                console_log.display()
            )
        })?;
        let files = decoded.write_into(&out)?;
        if decoded.skipped > 0 {
            errln!(
                "  ({} stray console line(s) inside the frames were skipped; every file's \
                 SHA-256 matched)",
                decoded.skipped
            );
        }
        let outcome = LabOutcome {
            out: out.clone(),
            kernel_release: decoded.kernel_release.clone(),
            exit_code: decoded.status.code,
            timed_out: decoded.status.timed_out,
            stdout: String::from_utf8_lossy(decoded.lab_file("stdout")).into_owned(),
            stderr: String::from_utf8_lossy(decoded.lab_file("stderr")).into_owned(),
            files,
            boot: decoded.status.started,
            run: decoded.status.ended.saturating_sub(decoded.status.started),
            total: booted.elapsed,
            session: match (&run.session, decoded.session) {
                (None, _) => None,
                (Some(_), None) => bail!(
                    "{what}: the guest sent no session status (its control session never ran); \
                     the console is {}",
                    console_log.display()
                ),
                (Some(_), Some(code)) => Some(SessionOutcome {
                    exit_code: code,
                    replies: String::from_utf8_lossy(decoded.lab_file("replies"))
                        .lines()
                        .map(String::from)
                        .collect(),
                    stderr: String::from_utf8_lossy(decoded.lab_file("ctl-stderr")).into_owned(),
                }),
            },
            console: console_log,
            what,
        };
        Ok(outcome)
    }
}

/// Empty `out` for a run: it must not exist, be empty, or be a previous lab run's (it has the
/// marker file). Anything else could be someone's files, and is refused.
fn prepare_out(out: &Path, what: &str) -> Result<()> {
    if out.exists() {
        let marker = out.join(console::MARKER);
        let empty = fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_none();
        if !empty && !marker.exists() {
            bail!(
                "{} exists and is not an arm64 lab results directory (no {}); pass an empty or \
                 new --out",
                out.display(),
                console::MARKER
            );
        }
        fs::remove_dir_all(out).with_context(|| format!("emptying {}", out.display()))?;
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    fs::write(
        out.join(console::MARKER),
        format!("results of `cargo xtask arm64-lab`: {what}\n"),
    )?;
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// `cargo build --release --locked --target <aarch64> -p supervisor --bin vmfleet`, linked by
/// `aarch64-linux-gnu-gcc`; checks that the result is a static aarch64 executable.
pub fn build_vmfleet(route: &RustRoute) -> Result<PathBuf> {
    let target = route.target();
    step(&format!("cross-building vmfleet for {target} (release)"));
    let started = Instant::now();
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--release",
        "--locked",
        "--target",
        target,
        "-p",
        "supervisor",
        "--bin",
        "vmfleet",
    ]);
    match route {
        RustRoute::Rustup => {
            cmd.env(
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER",
                "aarch64-linux-gnu-gcc",
            );
        }
        RustRoute::Debian { rustc } => {
            cmd.env("RUSTC", rustc)
                .env(
                    "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                    "aarch64-linux-gnu-gcc",
                )
                .env(
                    "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                    "-C target-feature=+crt-static",
                );
        }
    }
    check(
        cmd.status(),
        &format!(
            "cargo build --target {target} (the aarch64 build of vmfleet; its errors are above)"
        ),
    )?;
    let bin = target_dir().join(target).join("release").join("vmfleet");
    let bytes = fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    check_static_aarch64(&bytes).with_context(|| format!("{} is unusable", bin.display()))?;
    errln!(
        "  {} ({:.1} MiB, static aarch64) in {:.1} s",
        bin.display(),
        bytes.len() as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64()
    );
    // The guest unpacks the initramfs under emulation, about 1 s per 10 MiB: leave the DWARF line
    // tables out of the copy it gets (the symbols stay, for backtraces).
    let stripped = lab_dir().join("vmfleet-aarch64");
    fs::create_dir_all(lab_dir())?;
    let ok = std::process::Command::new("aarch64-linux-gnu-strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(&bin)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        errln!("  (aarch64-linux-gnu-strip failed; the guest gets the unstripped binary)");
        return Ok(bin);
    }
    let size = fs::metadata(&stripped)?.len();
    errln!(
        "  {} ({:.1} MiB, without debug info) goes into the initramfs",
        stripped.display(),
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(stripped)
}

/// An ELF64 little-endian aarch64 executable without a program interpreter (static), as the
/// initramfs has no dynamic loader.
fn check_static_aarch64(elf: &[u8]) -> Result<()> {
    const EM_AARCH64: u16 = 183;
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        bail!("not a 64-bit little-endian ELF file");
    }
    if u16_at(18) != Some(EM_AARCH64) {
        bail!("not an aarch64 executable (e_machine {:?})", u16_at(18));
    }
    let (phoff, phentsize, phnum) = (
        u64_at(0x20).context("truncated ELF header")? as usize,
        u16_at(0x36).context("truncated ELF header")? as usize,
        u16_at(0x38).context("truncated ELF header")? as usize,
    );
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize) == Some(PT_INTERP) {
            bail!(
                "dynamically linked (it has a program interpreter); the initramfs needs a static binary"
            );
        }
    }
    Ok(())
}

/// `cargo xtask arm64-lab`'s options.
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// Guest kernel: 6.12 (from bookworm-backports) or 6.1 (from bookworm).
    #[arg(long, value_enum, default_value = "6.12", value_name = "KERNEL")]
    pub kernel: Kernel,
    /// QEMU's -cpu: max, neoverse-n1, neoverse-v1, cortex-a72, ...
    #[arg(long, default_value = "max", value_name = "CPU", value_parser = cpu_name)]
    pub cpu: String,
    /// Guest CPUs (QEMU's -smp), 1 to 8.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=8))]
    pub smp: u32,
    /// Results directory [default: <target>/arm64-lab/<kernel>-<cpu>/]; emptied first if it is
    /// a previous lab run's, refused if it holds anything else.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Copy FILE into vmfleet's working directory in the guest (repeatable).
    #[arg(long, value_name = "FILE", value_parser = existing_file)]
    pub input: Vec<PathBuf>,
    /// vmfleet's time limit in the guest, in whole seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// A control session: ARGS are `serve FLEET [--record out/X.trace]` (the lab adds `--socket
    /// /lab/serve.sock`), and the request lines of FILE (one JSON request each, `#` lines skipped,
    /// as a fixture's `.requests` file) are sent to it one after the other by `vmfleet ctl send`
    /// in the guest; the replies come back in DIR/ctl.replies. End them with `shutdown` (else the
    /// daemon gets SIGTERM 10 s after the last reply).
    #[arg(long, value_name = "FILE", value_parser = existing_file)]
    pub requests: Option<PathBuf>,
    /// What vmfleet runs [default: host]. Its working directory holds the inputs and an empty
    /// out/; every file it writes there comes back into DIR.
    #[arg(last = true, value_name = "VMFLEET ARGS")]
    pub args: Vec<String>,
}

/// A QEMU CPU model name: not empty, no spaces or commas (QEMU would read them as options).
fn cpu_name(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains([' ', ',', '=']) {
        return Err(format!(
            "`{text}` is not a QEMU CPU model name (e.g. max, neoverse-n1)"
        ));
    }
    Ok(text.to_string())
}

/// An `--input` must be a file that exists now.
fn existing_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if !path.is_file() {
        return Err(format!("{text}: no such file"));
    }
    Ok(path)
}

/// `cargo xtask arm64-lab ARGS`.
pub fn cli(args: LabArgs) -> Result<()> {
    let run = run_of(args)?;
    let lab = Lab::prepare(&[run.kernel])?;
    let outcome = lab.run(&run)?;
    print_outcome(&outcome);
    outcome.ensure_success()
}

/// The run `cargo xtask arm64-lab ARGS` asks for; with `--requests`, a control session.
fn run_of(args: LabArgs) -> Result<LabRun> {
    let mut run = LabRun::new(args.kernel, &args.cpu);
    run.smp = args.smp;
    run.out = args.out;
    run.inputs = args.input;
    run.timeout = Duration::from_secs(args.timeout);
    run.args = args.args;
    if let Some(requests) = &args.requests {
        if run.args.first().map(String::as_str) != Some("serve") {
            bail!(
                "--requests drives a control session: the vmfleet arguments must be `serve FLEET \
                 ...`, not `{}`",
                run.args.join(" ")
            );
        }
        let lines = crate::record::read_requests(requests)?
            .into_iter()
            .map(|r| r.line)
            .collect();
        run.args
            .extend(["--socket".to_string(), SESSION_SOCKET.to_string()]);
        run.session = Some(lines);
    }
    Ok(run)
}

/// vmfleet's output and the summary line.
pub fn print_outcome(outcome: &LabOutcome) {
    for (name, text) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
        if !text.is_empty() {
            outln!("--- vmfleet {name} (guest) ---\n{}", text.trim_end());
        }
    }
    if let Some(session) = &outcome.session {
        outln!(
            "--- vmfleet ctl send (guest): exit {}, {} reply line(s) ---",
            session.exit_code,
            session.replies.len()
        );
        for reply in &session.replies {
            let shown: String = reply.chars().take(160).collect();
            outln!("  {shown}");
        }
        if !session.stderr.trim().is_empty() {
            outln!("  stderr: {}", session.stderr.trim_end());
        }
    }
    for file in &outcome.files {
        let size = fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        outln!("  file back: {} ({size} bytes)", file.display());
    }
    outln!("{}", outcome.summary());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_static_aarch64_elf_passes() {
        // A minimal ELF64 header: aarch64, one PT_LOAD program header.
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[18..20].copy_from_slice(&183u16.to_le_bytes());
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        assert!(check_static_aarch64(&elf).is_ok());
        let mut dynamic = elf.clone();
        dynamic[64..68].copy_from_slice(&3u32.to_le_bytes());
        assert!(check_static_aarch64(&dynamic).is_err());
        let mut x86 = elf.clone();
        x86[18..20].copy_from_slice(&62u16.to_le_bytes());
        assert!(check_static_aarch64(&x86).is_err());
        assert!(check_static_aarch64(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn requests_make_a_control_session_of_a_serve() {
        let dir = std::env::temp_dir().join(format!("xtask-lab-session-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let requests = dir.join("s.requests");
        fs::write(&requests, "# c\n{\"op\":\"shutdown\"}\n").unwrap();
        let args = |vmfleet: &[&str]| LabArgs {
            kernel: Kernel::V6_12,
            cpu: "max".into(),
            smp: 1,
            out: None,
            input: Vec::new(),
            timeout: 60,
            requests: Some(requests.clone()),
            args: vmfleet.iter().map(|s| s.to_string()).collect(),
        };
        let run = run_of(args(&["serve", "f.toml"])).unwrap();
        assert_eq!(run.args, ["serve", "f.toml", "--socket", SESSION_SOCKET]);
        assert_eq!(run.session.unwrap(), [r#"{"op":"shutdown"}"#]);
        assert!(run_of(args(&["run", "f.toml"])).is_err());
        let mut plain = args(&["host"]);
        plain.requests = None;
        assert!(run_of(plain).unwrap().session.is_none());
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn default_results_directory_names_kernel_and_cpu() {
        let run = LabRun::new(Kernel::V6_1, "neoverse-n1");
        assert!(run.default_out().ends_with("arm64-lab/6.1-neoverse-n1"));
        assert_eq!(run.vmfleet_args(), vec!["host".to_string()]);
    }
}
