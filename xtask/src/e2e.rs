//! `cargo xtask test`'s runs without KVM: `/dev/kvm` made unusable in a private mount namespace
//! ([`without_kvm_command`]), and the end-to-end check ([`end_to_end`]): a live run recorded (or,
//! without KVM here, the committed `fixtures/fleet.trace`), then replayed twice with `/dev/kvm`
//! unusable, the transcripts byte-identical.
//!
//! Why here and not in a test crate: the mount namespace needs `unshare --mount` (root), and the
//! check is of the built `vmfleet` as a user runs it. It runs the dev-profile binary that `cargo
//! test --workspace` built ([`crate::vmfleet_dev`]): live and replayed transcripts come from the
//! same binary, whatever its profile, and a release build only for this would double the run's
//! compiling.

use crate::tally::Tally;
use crate::{check, kvm_unusable_reason, root, vmfleet_dev};
use anyhow::{Context, Result, bail};
use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;

/// `script` with `/dev/kvm` replaced by `/dev/null` in a private mount namespace.
pub fn without_kvm_command(script: &str, envs: &[(&str, &str)]) -> Command {
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

/// `s` quoted for `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The end-to-end check (see the module's doc); the live run is SKIPPED without KVM here.
pub fn end_to_end(tally: &mut Tally) -> Result<()> {
    let bin = vmfleet_dev();
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
