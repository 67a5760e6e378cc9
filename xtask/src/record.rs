//! `cargo xtask record [FIXTURE]...`: re-record the fixture traces (`fixtures/*.trace`) from
//! `fixtures/specs/*.toml` with the release `vmfleet` on this host's KVM (a spec with a
//! `.requests` file beside it is recorded as a `vmfleet serve` session driven by those
//! requests; `arm64-<kernel>-<cpu>[+<label>]` fixtures in the arm64 lab, as a lab control session
//! when they have a `.requests` file), then refresh the replay snapshots.

use crate::{arm64_lab, cargo, check, kvm_usable, root, step, vmfleet_release};
use anyhow::{Context, Result, bail};
use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One request of a fixture's `.requests` file.
#[derive(Clone, Debug, PartialEq)]
pub struct ScriptedRequest {
    /// The JSON request line, as sent.
    pub line: String,
    /// Whether the fixture expects the daemon to refuse it (`ok: false`).
    pub refused: bool,
}

/// The requests of a `.requests` file: one JSON request per line, the daemon's own protocol;
/// blank lines and `#` lines are skipped. A comment line starting with `# refused:` (saying why)
/// marks the request after it as one the daemon refuses; every other request is expected to be
/// accepted (only the arm64 lab's check of a session reads the expectations).
pub fn read_requests(path: &Path) -> Result<Vec<ScriptedRequest>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut requests = Vec::new();
    let mut refused = false;
    for (n, line) in text.lines().map(str::trim).enumerate() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            refused |= comment.trim_start().starts_with("refused:");
            continue;
        }
        if !line.starts_with('{') {
            bail!(
                "{}:{}: a request line is one JSON object, this is `{line}`",
                path.display(),
                n + 1
            );
        }
        requests.push(ScriptedRequest {
            line: line.to_string(),
            refused,
        });
        refused = false;
    }
    if refused {
        bail!(
            "{}: its last `# refused:` comment has no request after it",
            path.display()
        );
    }
    Ok(requests)
}

/// Record a `vmfleet serve` session: the daemon runs `spec` while the control requests of
/// `requests` (see [`read_requests`]) are sent over its socket one after the other, each waiting
/// for its reply, ending with `shutdown`.
fn record_session(bin: &Path, spec: &Path, requests: &Path, trace: &Path) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let script = read_requests(requests)?;
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
    for request in &script {
        let line = &request.line;
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

/// An arm64 fixture's lab: its spec is `fixtures/specs/arm64-<kernel>-<cpu>[+<label>].toml`. The
/// optional `+<label>` names a second fixture on the same lab (e.g. `arm64-6.12-max+model`); it is
/// not part of QEMU's `-cpu` (whose names have hyphens, e.g. `neoverse-n1`, hence `+`).
fn arm64_fixture_lab(stem: &str) -> Option<Result<(arm64_lab::Kernel, String)>> {
    let rest = stem.strip_prefix("arm64-")?;
    let rest = rest.split_once('+').map_or(rest, |(lab, _label)| lab);
    let (kernel, cpu) = rest.split_once('-').unwrap_or((rest, ""));
    if cpu.is_empty() {
        return Some(Err(anyhow::anyhow!(
            "arm64 fixture `{stem}`: name it arm64-<kernel>-<cpu>[+<label>], e.g. arm64-6.12-max"
        )));
    }
    Some(arm64_lab::Kernel::parse(kernel).map(|k| (k, cpu.to_string())))
}

/// Record an arm64 fixture on real arm64 KVM in the lab: `vmfleet run`, or with a `.requests`
/// file beside the spec a `vmfleet serve` session driven by those requests
/// ([`arm64_lab::LabRun::serve`]).
fn record_arm64(stem: &str, spec: &Path, trace: &Path) -> Result<()> {
    let (kernel, cpu) = arm64_fixture_lab(stem).with_context(|| {
        format!("recording `{stem}` in the arm64 lab: its name is not arm64-<kernel>-<cpu>")
    })??;
    let lab = arm64_lab::Lab::prepare(&[kernel])?;
    let mut run = arm64_lab::LabRun::new(kernel, &cpu);
    run.inputs.push(spec.to_path_buf());
    let spec_name = spec
        .file_name()
        .with_context(|| format!("the fixture spec {} has no file name", spec.display()))?
        .to_string_lossy()
        .to_string();
    let recorded = format!("out/{stem}.trace");
    let requests = spec.with_extension("requests");
    let session = requests.exists();
    if session {
        let lines = read_requests(&requests)?
            .into_iter()
            .map(|r| r.line)
            .collect();
        run.serve(&spec_name, &recorded, lines);
    } else {
        run.args = vec!["run".into(), spec_name, "--record".into(), recorded.clone()];
    }
    let outcome = lab.run(&run)?;
    if let Some(session) = &outcome.session {
        arm64_lab::print_outcome(&outcome);
        // As on x86: the daemon must have shut down cleanly, whatever its VMs did.
        outcome.ensure_success()?;
        if session.exit_code == 8 {
            bail!(
                "recording `{stem}`: the lab's `vmfleet ctl send` could not reach the daemon or \
                 lost it: {}",
                session.stderr.trim()
            );
        }
    }
    // A fixture may deliberately contain a failing VM; the trace is what matters.
    let back = outcome.out.join(&recorded);
    fs::copy(&back, trace)
        .with_context(|| format!("copying {} to {}", back.display(), trace.display()))?;
    if !session {
        outln!("{}", outcome.stdout);
    }
    Ok(())
}

/// `cargo xtask record [FIXTURE]...` (see the module's doc).
pub fn record(args: &[String]) -> Result<()> {
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
    // The host's release vmfleet records the x86 fixtures; the arm64 ones are recorded by the
    // lab's own aarch64 build.
    if x86 {
        check(
            cargo()
                .args(["build", "--release", "-p", "supervisor"])
                .status(),
            "cargo build --release",
        )?;
    }
    let bin = vmfleet_release();
    for spec in &specs {
        let stem = spec
            .file_stem()
            .with_context(|| format!("the fixture spec {} has no file name", spec.display()))?
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
    fn an_arm64_fixture_name_gives_its_lab_and_may_carry_a_label() {
        let lab =
            |stem: &str| arm64_fixture_lab(stem).map(|r| r.map(|(k, cpu)| (format!("{k:?}"), cpu)));
        let (k, cpu) = lab("arm64-6.12-max").unwrap().unwrap();
        assert_eq!((k.as_str(), cpu.as_str()), ("V6_12", "max"));
        let (k2, cpu) = lab("arm64-6.12-max+model").unwrap().unwrap();
        assert_eq!((k2, cpu.as_str()), (k, "max"));
        let (_, cpu) = lab("arm64-6.1-neoverse-n1+x").unwrap().unwrap();
        assert_eq!(cpu, "neoverse-n1");
        assert!(lab("arm64-6.12+model").unwrap().is_err());
        assert!(lab("single").is_none());
    }

    #[test]
    fn a_requests_file_marks_the_requests_it_expects_refused() {
        let dir = env::temp_dir().join(format!("xtask-requests-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.requests");
        fs::write(
            &path,
            "# a header\n{\"op\":\"list\"}\n\n# refused: no such VM\n{\"op\":\"pause\",\"vm\":\"x\"}\n{\"op\":\"shutdown\"}\n",
        )
        .unwrap();
        let requests = read_requests(&path).unwrap();
        let refused: Vec<bool> = requests.iter().map(|r| r.refused).collect();
        assert_eq!(refused, [false, true, false]);
        assert_eq!(requests[2].line, r#"{"op":"shutdown"}"#);
        fs::write(&path, "{\"op\":\"list\"}\n# refused: dangling\n").unwrap();
        assert!(read_requests(&path).is_err());
        fs::write(&path, "list\n").unwrap();
        assert!(
            read_requests(&path)
                .unwrap_err()
                .to_string()
                .contains(":1:")
        );
        // The x86 control fixture's requests read as before: every line, in order.
        let control = read_requests(&root().join("fixtures/specs/control.requests")).unwrap();
        assert_eq!(control.len(), 16);
        fs::remove_dir_all(&dir).ok();
    }
}
