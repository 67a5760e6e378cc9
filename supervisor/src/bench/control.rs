//! The control-plane figures of `vmfleet bench`: SIGTERM to a `vmfleet serve` with many running
//! VMs until the process has exited (the trace whole), and a `pause` answered after a `wait`
//! whose client went away. They live apart from the start, scale and memory figures because they
//! drive the daemon and the control API, not the fleet's start path.

use super::BenchError;
use super::measure::{Stopwatch, median_duration};
use super::vmfleet::{bench_runtime, bench_spec, kvm_backend, wrong};
use crate::fleet::StartMode;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// vmfleet's side of the shutdown figure, end to end as an operator meets it: a `vmfleet serve
/// --record` child process (this executable) with `vms` VMs x `vcpus_per_vm` vCPUs of the
/// long-running guest; once `list` says every VM is running, SIGTERM; the time from the signal
/// until the process has exited (reaped). Then the trace must read back whole (its end marker)
/// with the shutdown as its last control request, answered for every VM.
pub fn vmfleet_shutdown(vms: u32, vcpus_per_vm: u32) -> Result<Duration, BenchError> {
    let dir = std::env::temp_dir().join(format!("vmfleet-bench-shutdown-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).map_err(|e| {
        wrong(
            "vmfleet",
            vms,
            format!("creating the scratch directory {}: {e}", dir.display()),
        )
    })?;
    let result = serve_sigterm(&dir, vms, vcpus_per_vm);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// How long the shutdown fleet may take to come up before the figure gives up (a hang guard, not
/// a figure).
fn shutdown_bring_up_limit(vms: u32) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(200) * vms
}

/// The process exit after SIGTERM that counts as a hang.
const SHUTDOWN_HANG: Duration = Duration::from_secs(120);

/// [`vmfleet_shutdown`] in its scratch directory `dir`.
fn serve_sigterm(dir: &Path, vms: u32, vcpus_per_vm: u32) -> Result<Duration, BenchError> {
    use std::process::{Command, Stdio};
    let fail = |what: String| wrong("vmfleet", vms, what);
    let (spec, socket, trace) = (
        dir.join("fleet.toml"),
        dir.join("ctl.sock"),
        dir.join("serve.trace"),
    );
    // One entry per 1000 VMs (a spec's `count` goes up to 1000).
    let mut text = String::from("name = \"bench\"\n");
    let mut left = vms;
    for entry in 0.. {
        if left == 0 {
            break;
        }
        let count = left.min(1000);
        left -= count;
        let _ = write!(
            text,
            "[[vm]]\nname = \"vm{entry}\"\ncount = {count}\nvcpus = {vcpus_per_vm}\n\
             memory_mib = 1\nprobe_repeats = 0\n"
        );
    }
    std::fs::write(&spec, text).map_err(|e| fail(format!("writing {}: {e}", spec.display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| fail(format!("finding the vmfleet executable: {e}")))?;
    let log = dir.join("serve.err");
    let stderr = std::fs::File::create(&log)
        .map_err(|e| fail(format!("creating {}: {e}", log.display())))?;
    let mut child = Command::new(&exe)
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--record")
        .arg(&trace)
        .arg(&spec)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| fail(format!("starting {} serve: {e}", exe.display())))?;
    let logs = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    };
    // Every VM running, as a client sees it.
    let deadline = Instant::now() + shutdown_bring_up_limit(vms);
    let mut last = String::from("no answer yet");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(fail(format!(
                "vmfleet serve ended ({status}) before every VM ran: {}",
                logs()
            )));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "not every VM was running after {:?}: {last}",
                shutdown_bring_up_limit(vms)
            )));
        }
        match running_vms(&socket) {
            Ok(running) if running == vms as usize => break,
            Ok(running) => last = format!("{running} running"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32)
        .ok_or_else(|| fail("the child has no valid pid".to_string()))?;
    let clock = Stopwatch::start();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).map_err(|e| {
        fail(format!(
            "sending SIGTERM to vmfleet serve (pid {pid:?}): {e}"
        ))
    })?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if clock.elapsed() < SHUTDOWN_HANG => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "vmfleet serve still running {SHUTDOWN_HANG:?} after SIGTERM"
                )));
            }
            Err(e) => return Err(fail(format!("waiting for vmfleet serve: {e}"))),
        }
    };
    let took = clock.elapsed();
    if !status.success() {
        return Err(fail(format!(
            "vmfleet serve exited with {status} after SIGTERM: {}",
            logs()
        )));
    }
    let recorded = recorder::Trace::open(&trace)
        .map_err(|e| fail(format!("reading the trace {}: {e}", trace.display())))?;
    recorded
        .require_complete()
        .map_err(|e| fail(format!("the trace {}: {e}", trace.display())))?;
    let expected = format!("ok: shut down {vms} VM(s)");
    match recorded.control_events().last() {
        Some(event)
            if event.call == recorder::TraceCall::Control(protocol::Request::ShutdownForExit)
                && event.outcome == Ok(vcpu::Reply::Control(expected.clone())) => {}
        other => {
            return Err(fail(format!(
                "the trace's last control request is not a shutdown of every VM ({expected}): \
                 {}",
                other.map_or_else(
                    || "none".to_string(),
                    |e| format!("{} -> {}", e.call, recorder::render::outcome(&e.outcome))
                )
            )));
        }
    }
    Ok(took)
}

/// How many VMs the daemon at `socket` lists as running (or why it could not be asked).
fn running_vms(socket: &Path) -> Result<usize, String> {
    let reply = crate::ctl::send(socket, &protocol::Request::List).map_err(|e| e.to_string())?;
    let response: protocol::Response =
        serde_json::from_str(&reply).map_err(|e| format!("list: unreadable reply: {e}"))?;
    let vms: Vec<crate::fleet::lifecycle::VmInfo> = response
        .result
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| format!("list: unexpected reply: {e}"))?
        .ok_or_else(|| format!("list: {}", response.error.unwrap_or_default()))?;
    Ok(vms.iter().filter(|vm| vm.state == "running").count())
}

/// vmfleet's side of the abandoned-wait figure: two running VMs; a `wait` for the first whose
/// client goes away (its request future is dropped, as `vmfleet serve` does when the client
/// hangs up); then the time to the answer of `pause` of the second. The median of 5.
pub fn vmfleet_pause_after_abandoned_wait(vcpus_per_vm: u32) -> Result<Duration, BenchError> {
    let spec = bench_spec(2, vcpus_per_vm, 0)?;
    let hv = kvm_backend()?;
    let runtime = bench_runtime()?;
    runtime.block_on(async {
        let fleet = std::sync::Arc::new(
            crate::fleet::Fleet::new(hv, &spec.name)
                .await
                .map_err(|e| wrong("vmfleet", 2, e))?,
        );
        let started = fleet.launch_all(spec.vms.clone(), StartMode::Running).await;
        if let Some((vm, Err(e))) = started.iter().find(|(_, r)| r.is_err()) {
            fleet.shutdown().await;
            return Err(wrong("vmfleet", 2, format!("{vm} did not start: {e}")));
        }
        let mut samples = Vec::new();
        for _ in 0..5 {
            let waiting = {
                let fleet = std::sync::Arc::clone(&fleet);
                tokio::spawn(async move {
                    fleet
                        .handle(protocol::Request::Wait { vm: "vm0".into() })
                        .await
                })
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            waiting.abort();
            let clock = Stopwatch::start();
            let paused = tokio::time::timeout(
                Duration::from_secs(30),
                fleet.handle(protocol::Request::Pause { vm: "vm1".into() }),
            )
            .await;
            samples.push(clock.elapsed());
            match paused {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(wrong("vmfleet", 2, e)),
                Err(_) => {
                    return Err(wrong(
                        "vmfleet",
                        2,
                        "pause did not answer within 30 s after an abandoned wait",
                    ));
                }
            }
            fleet
                .handle(protocol::Request::Resume { vm: "vm1".into() })
                .await
                .map_err(|e| wrong("vmfleet", 2, e))?;
        }
        fleet.shutdown().await;
        median_duration(&samples).ok_or_else(|| wrong("vmfleet", 2, "no sample"))
    })
}
