//! Booting the guest: `qemu-system-aarch64` (TCG, `-M virt,virtualization=on` so the kernel runs
//! at EL2 and brings up KVM), the serial console captured to a file as it comes, a deadline.

use anyhow::{Context, Result, bail};
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Boot<'a> {
    pub qemu: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub cpu: &'a str,
    pub smp: u32,
    /// Where the console goes, as it comes.
    pub console: &'a Path,
    /// QEMU is killed after this long.
    pub deadline: Duration,
}

pub struct Booted {
    pub console: Vec<u8>,
    pub elapsed: Duration,
}

/// The kernel command line: the recipe's, plus `panic=-1` so that a kernel panic (e.g. /init
/// dying) reboots at once, which `-no-reboot` turns into QEMU exiting, instead of hanging until
/// the deadline.
const APPEND: &str = "console=ttyAMA0 rdinit=/init quiet panic=-1";

pub fn qemu_command(boot: &Boot) -> Command {
    let mut cmd = Command::new(boot.qemu);
    cmd.args(["-M", "virt,virtualization=on,gic-version=3"])
        .args(["-cpu", boot.cpu])
        .args(["-smp", &boot.smp.to_string()])
        .args(["-m", "1024", "-nographic", "-no-reboot"])
        // No network: the default NIC would want an iPXE ROM (a package the lab does not need).
        .args(["-nic", "none"])
        .arg("-kernel")
        .arg(boot.kernel)
        .arg("-initrd")
        .arg(boot.initrd)
        .args(["-append", APPEND]);
    cmd
}

fn tail(bytes: &[u8], lines: usize) -> String {
    if bytes.is_empty() {
        return "    (nothing: the console is empty)".into();
    }
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {}", l.trim_end_matches('\r')))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn boot(boot: &Boot) -> Result<Booted> {
    let mut cmd = qemu_command(boot);
    crate::errln!(
        "  {} {}",
        boot.qemu.display(),
        cmd.get_args()
            .map(|a| {
                let a = a.to_string_lossy();
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.into_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut log = fs::File::create(boot.console)
        .with_context(|| format!("creating {}", boot.console.display()))?;
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", boot.qemu.display()))?;

    let console = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().expect("piped");
    let reader = {
        let console = Arc::clone(&console);
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut buf = [0u8; 64 * 1024];
            loop {
                let n = stdout.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                log.write_all(&buf[..n])?;
                console
                    .lock()
                    .expect("console lock")
                    .extend_from_slice(&buf[..n]);
            }
        })
    };
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > boot.deadline {
            // Our own child, by its handle.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let read = reader.join().expect("console reader panicked");
    let qemu_errors = errors.join().unwrap_or_default();
    let console = std::mem::take(&mut *console.lock().expect("console lock"));
    read.with_context(|| format!("reading the console into {}", boot.console.display()))?;
    let Some(status) = status else {
        bail!(
            "the guest did not power off within {} s, so QEMU was killed; the console (in {}) \
             ends with:\n{}",
            boot.deadline.as_secs(),
            boot.console.display(),
            tail(&console, 15)
        );
    };
    if !status.success() {
        bail!(
            "qemu-system-aarch64 failed ({status}): {}\nthe console ({}) ends with:\n{}",
            qemu_errors.trim(),
            boot.console.display(),
            tail(&console, 15)
        );
    }
    if !qemu_errors.trim().is_empty() {
        crate::errln!("  qemu-system-aarch64 said: {}", qemu_errors.trim());
    }
    Ok(Booted { console, elapsed })
}
