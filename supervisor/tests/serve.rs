//! `vmfleet serve` and `vmfleet ctl` as an operator meets them: a daemon on a 0600 socket that
//! lists, creates, starts, pauses, resumes, stops and removes VMs, reports and guards their CPU
//! model, survives garbage and clients that vanish mid-request, and stops cleanly on `shutdown`
//! or SIGTERM, closing its trace. Its socket: by default in a private directory it creates; a
//! directory or socket it cannot trust is refused; clients of another user are refused, and
//! `ctl` refuses a daemon of another user; `ctl send` passes raw lines. The live tests print
//! SKIPPED when /dev/kvm is unusable, and those acting as another user (uid 65534, made by
//! root) print SKIPPED when not run as root.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use vcpu::skip::kvm_usable;

use serde_json::Value;
use supervisor::exit::Status;

fn vmfleet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmfleet"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmfleet-serve-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Three VMs that probe for minutes: they are still running when the test is done with them.
const LONG_FLEET: &str = r#"
name = "served"

[[vm]]
name = "a"
vcpus = 1
memory_mib = 1
probe_repeats = 100000

[[vm]]
name = "b"
vcpus = 1
memory_mib = 1
probe_repeats = 100000

[[vm]]
name = "c"
vcpus = 1
memory_mib = 1
probe_repeats = 100000
"#;

/// A `vmfleet serve` child; killed (by its own pid) if a test fails before it exits.
struct Daemon {
    child: Child,
    socket: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Daemon {
    /// Run `command` (a `vmfleet serve`) with its output in `dir`, until it answers on `socket`.
    fn launch(dir: &Path, mut command: Command, socket: PathBuf) -> Daemon {
        let (stdout, stderr) = (dir.join("serve.out"), dir.join("serve.err"));
        let child = command
            .stdout(Stdio::from(File::create(&stdout).unwrap()))
            .stderr(Stdio::from(File::create(&stderr).unwrap()))
            .spawn()
            .unwrap();
        let mut daemon = Daemon {
            child,
            socket,
            stdout,
            stderr,
        };
        daemon.wait_until_answering();
        daemon
    }

    fn start(dir: &Path, spec: &str, extra: &[&str]) -> Daemon {
        let fleet = dir.join("fleet.toml");
        std::fs::write(&fleet, spec).unwrap();
        let socket = dir.join("ctl.sock");
        let (stdout, stderr) = (dir.join("serve.out"), dir.join("serve.err"));
        let child = vmfleet()
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .arg(&fleet)
            .stdout(Stdio::from(File::create(&stdout).unwrap()))
            .stderr(Stdio::from(File::create(&stderr).unwrap()))
            .spawn()
            .unwrap();
        let mut daemon = Daemon {
            child,
            socket,
            stdout,
            stderr,
        };
        daemon.wait_until_answering();
        daemon
    }

    fn wait_until_answering(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "vmfleet serve exited ({status}) before serving: {}",
                    self.logs()
                );
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no socket after 60s: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        format!(
            "stdout: {}\nstderr: {}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    fn ctl(&self, args: &[&str]) -> Output {
        vmfleet()
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// `ctl ARGS` must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "ctl {args:?}\nstdout: {stdout}\nstderr: {stderr}\ndaemon: {}",
            self.logs()
        );
        stdout
    }

    /// `ctl ARGS` must get an error reply (status `refused`); its stderr.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(Status::Refused.code().into()),
            "ctl {args:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }

    /// Every VM's state, by name, from `ctl list --json`.
    fn states(&self) -> Vec<(String, String)> {
        let reply: Value = serde_json::from_str(&self.ok(&["list", "--json"])).unwrap();
        assert_eq!(reply["ok"], true, "{reply}");
        reply["result"]
            .as_array()
            .expect("list result is an array")
            .iter()
            .map(|vm| {
                (
                    vm["name"].as_str().unwrap().to_string(),
                    vm["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn state(&self, vm: &str) -> String {
        self.states()
            .into_iter()
            .find(|(name, _)| name == vm)
            .unwrap_or_else(|| panic!("{vm} is not listed"))
            .1
    }

    /// Wait until every listed VM has been up for `at_least`.
    fn wait_uptime(&self, at_least: Duration) {
        let deadline = Instant::now() + at_least + Duration::from_secs(30);
        loop {
            let reply: Value = serde_json::from_str(&self.ok(&["list", "--json"])).unwrap();
            let up = reply["result"].as_array().unwrap().iter().all(|vm| {
                vm["uptime_ms"]
                    .as_u64()
                    .is_some_and(|ms| ms >= at_least.as_millis() as u64)
            });
            if up {
                return;
            }
            assert!(Instant::now() < deadline, "VMs not up: {reply}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "vmfleet serve still running after {within:?}: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Send raw bytes on a fresh connection and read one reply line.
fn raw_exchange(stream: &mut BufReader<UnixStream>, bytes: &[u8]) -> Value {
    stream.get_mut().write_all(bytes).unwrap();
    let mut line = String::new();
    stream.read_line(&mut line).unwrap();
    assert!(line.ends_with('\n'), "a whole reply line: {line:?}");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?} is not JSON: {e}"))
}

#[test]
fn ctl_without_a_daemon_names_the_socket_and_serve_needs_a_readable_spec() {
    let dir = scratch("absent");
    let socket = dir.join("nobody.sock");
    let out = vmfleet()
        .args(["ctl", "list", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(Status::Unreachable.code().into()),
        "{stderr}"
    );
    assert!(stderr.contains(&socket.display().to_string()), "{stderr}");
    assert!(stderr.contains("vmfleet serve"), "{stderr}");

    let out = vmfleet()
        .args(["serve", "--socket"])
        .arg(&socket)
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(Status::BadInput.code().into()),
        "{stderr}"
    );
    assert!(stderr.contains("missing.toml"), "{stderr}");
    assert!(
        !socket.exists(),
        "no socket for a daemon that never started"
    );

    let out = vmfleet().args(["ctl", "set-model"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(Status::Usage.code().into()),
        "a missing VM name is a usage error"
    );
}

#[test]
fn a_daemon_serves_the_control_api_end_to_end() {
    if !kvm_usable("a_daemon_serves_the_control_api_end_to_end") {
        return;
    }
    let dir = scratch("e2e");
    let mut daemon = Daemon::start(&dir, LONG_FLEET, &[]);

    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    // A second daemon on the same socket is refused and leaves the first one alone.
    let second = vmfleet()
        .args(["serve", "--socket"])
        .arg(&daemon.socket)
        .output()
        .unwrap();
    let (_, stderr) = text(&second);
    assert_eq!(
        second.status.code(),
        Some(Status::Error.code().into()),
        "{stderr}"
    );
    assert!(stderr.contains("another vmfleet daemon"), "{stderr}");

    let table = daemon.ok(&["list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("STATE") && lines[0].contains("UPTIME"),
        "{table}"
    );
    for vm in ["a", "b", "c"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{vm} ")) && l.contains("running")),
            "{vm} running in:\n{table}"
        );
    }

    assert_eq!(daemon.ok(&["pause", "b"]), "b: paused\n");
    assert_eq!(
        daemon.states(),
        [
            ("a".to_string(), "running".to_string()),
            ("b".to_string(), "paused".to_string()),
            ("c".to_string(), "running".to_string()),
        ]
    );
    assert_eq!(daemon.ok(&["resume", "b"]), "b: running\n");
    assert_eq!(daemon.state("b"), "running");

    // The lock: a change to a VM that has run is refused, and says why.
    let stderr = daemon.refused(&["set-model", "a", "--hide", "avx2"]);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("vmfleet: a: vm0/vcpu0: CPUID 0x")
            && first.contains(" 1 → 0")
            && first.ends_with(vcpu::hypervisor::headline::LOCK_RULE),
        "{stderr}"
    );
    assert!(
        first.chars().count() <= "vmfleet: a: ".len() + 200,
        "{stderr}"
    );
    assert!(stderr.contains("\n  errno: EINVAL"), "{stderr}");
    let model = daemon.ok(&["model", "a"]);
    assert!(model.contains("model of a: locked"), "{model}");
    assert!(
        model.contains("vcpu0:") && model.contains("CPUID entries"),
        "{model}"
    );

    // A new VM from a fragment: created, its model still open, then started.
    let fragment = dir.join("d.toml");
    std::fs::write(
        &fragment,
        "[[vm]]\nname = \"d\"\nvcpus = 1\nmemory_mib = 1\nprobe_repeats = 100000\n",
    )
    .unwrap();
    let created = daemon.ok(&["create", fragment.to_str().unwrap()]);
    assert!(created.contains("created d"), "{created}");
    assert_eq!(daemon.state("d"), "created");
    let model = daemon.ok(&["set-model", "d", "--hide", "avx2,x2apic"]);
    assert!(model.contains("model of d: open"), "{model}");
    assert!(model.contains("hides: avx2,x2apic"), "{model}");
    let reply: Value = serde_json::from_str(&daemon.ok(&["model", "d", "--json"])).unwrap();
    assert_eq!(
        reply["result"]["hide"],
        serde_json::json!(["avx2", "x2apic"])
    );
    assert_eq!(reply["result"]["sealed"], Value::Null);
    assert_eq!(daemon.ok(&["start", "d"]), "d: running\n");
    let stderr = daemon.refused(&["set-model", "d"]);
    assert!(stderr.contains("locked"), "{stderr}");
    // The same name twice, and a fragment that is not a spec, are refused with the reason.
    let stderr = daemon.refused(&["create", fragment.to_str().unwrap()]);
    assert!(stderr.contains("already exists"), "{stderr}");
    std::fs::write(&fragment, "[[vm]]\nname = \"e\"\nvcpus = 0\n").unwrap();
    let stderr = daemon.refused(&["create", fragment.to_str().unwrap()]);
    assert!(stderr.contains("vcpus"), "{stderr}");

    assert_eq!(daemon.ok(&["stop", "c"]), "c: exited (stopped)\n");
    assert_eq!(daemon.ok(&["remove", "a"]), "removed a: stopped\n");
    let stderr = daemon.refused(&["start", "nosuch"]);
    assert!(stderr.contains("no VM named \"nosuch\""), "{stderr}");
    let stderr = daemon.refused(&["pause", "a"]);
    assert!(stderr.contains("removed"), "{stderr}");

    // Garbage on a raw connection gets error replies; the connection stays usable.
    let mut conn = BufReader::new(UnixStream::connect(&daemon.socket).unwrap());
    let reply = raw_exchange(&mut conn, b"this is not json\n");
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"].as_str().unwrap().contains("not JSON"),
        "{reply}"
    );
    let reply = raw_exchange(&mut conn, b"\x00\xff\xfe garbage\n");
    assert_eq!(reply["ok"], false, "{reply}");
    let reply = raw_exchange(&mut conn, b"{\"op\":\"explode\"}\n");
    assert!(
        reply["error"].as_str().unwrap().contains("unknown op"),
        "{reply}"
    );
    let reply = raw_exchange(&mut conn, b"{\"op\":\"stop\"}\n");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("needs field `vm`"),
        "{reply}"
    );
    let reply = raw_exchange(&mut conn, b"[\"list\"]\n");
    assert_eq!(reply["ok"], false, "{reply}");
    let reply = raw_exchange(
        &mut conn,
        b"{\"op\":\"list\"}\n{\"op\":\"model\",\"vm\":\"b\"}\n",
    );
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"].as_array().unwrap().len(), 4);
    let mut second = String::new();
    conn.read_line(&mut second).unwrap();
    let second: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(
        second["result"]["vm"], "b",
        "pipelined requests are answered in order"
    );
    drop(conn);

    // An oversized line gets an error reply, then the connection is closed.
    let mut conn = BufReader::new(UnixStream::connect(&daemon.socket).unwrap());
    let _ = conn.get_mut().write_all(&vec![b'x'; 100 * 1024]);
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    let reply: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"].as_str().unwrap().contains("longer than"),
        "{reply}"
    );
    let mut rest = Vec::new();
    let closed = match conn.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the connection is closed after an oversized line");

    // Half-written requests followed by a disconnect are not carried out.
    for half in [
        &b"{\"op\":\"shutdown\"}"[..],
        b"{\"op\":\"stop\",\"vm\":\"b\"}",
        b"{\"op\":\"sto",
    ] {
        let mut conn = UnixStream::connect(&daemon.socket).unwrap();
        conn.write_all(half).unwrap();
        drop(conn);
    }
    // A client that sends a whole request and leaves without reading the reply: it is carried out.
    let mut conn = UnixStream::connect(&daemon.socket).unwrap();
    conn.write_all(b"{\"op\":\"pause\",\"vm\":\"b\"}\n")
        .unwrap();
    drop(conn);
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.state("b") != "paused" {
        assert!(Instant::now() < deadline, "b never paused");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        daemon.states(),
        [
            ("a".to_string(), "removed".to_string()),
            ("b".to_string(), "paused".to_string()),
            ("c".to_string(), "exited (stopped)".to_string()),
            ("d".to_string(), "running".to_string()),
        ],
        "the daemon still answers and nothing else changed"
    );
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon is still up"
    );

    let out = daemon.ok(&["shutdown"]);
    assert!(out.contains("the daemon shut down"), "{out}");
    for vm in ["a", "b", "c", "d"] {
        assert!(out.contains(&format!("  {vm}: ")), "{vm} in {out}");
    }
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", daemon.logs());
    assert!(!daemon.socket.exists(), "the socket file is removed");
    let report = std::fs::read_to_string(&daemon.stdout).unwrap();
    assert!(
        report.starts_with("VM "),
        "the final report table: {report}"
    );
    for vm in ["a", "b", "c", "d"] {
        assert!(
            report.lines().any(|l| l.starts_with(&format!("{vm} "))),
            "{vm} in the final report: {report}"
        );
    }
}

#[test]
fn sigterm_stops_every_vm_and_closes_the_trace() {
    if !kvm_usable("sigterm_stops_every_vm_and_closes_the_trace") {
        return;
    }
    let dir = scratch("sigterm");
    let trace = dir.join("serve.trace");
    let mut daemon = Daemon::start(&dir, LONG_FLEET, &["--record", trace.to_str().unwrap()]);
    // Let every guest finish a probe pass (a few hundred exits, milliseconds): a VM stopped before
    // its first pass reports failed checks, which is not what this test is about.
    daemon.wait_uptime(Duration::from_secs(1));
    assert_eq!(daemon.ok(&["pause", "a"]), "a: paused\n");
    let stderr = daemon.refused(&["set-model", "b", "--hide", "avx2"]);
    assert!(stderr.contains("locked"), "{stderr}");

    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", daemon.logs());
    assert!(!daemon.socket.exists(), "the socket file is removed");
    let logs = daemon.logs();
    assert!(logs.contains("SIGTERM"), "{logs}");
    assert!(logs.contains("recorded"), "{logs}");
    let report = std::fs::read_to_string(&daemon.stdout).unwrap();
    for vm in ["a", "b", "c"] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with(&format!("{vm} ")) && l.contains("stopped")),
            "{vm} stopped in the final report: {report}"
        );
    }

    let recorded = recorder::Trace::open(&trace).expect("the trace reads back");
    recorded.require_complete().expect("the trace is complete");
    assert_eq!(recorded.header.job.command, "serve");
    let control: Vec<String> = recorded
        .control_events()
        .map(|e| e.call.to_string())
        .collect();
    assert_eq!(
        control,
        ["pause a", "set-model b hide=avx2", "shutdown for exit"],
        "the control requests, in order (list is not recorded)"
    );
    // A shutdown for exit closes nothing itself (the process's exit does): the trace must not
    // claim it did, and every vCPU's stream ends with its stop decision.
    let destroys: Vec<String> = recorded
        .events
        .iter()
        .filter(|e| {
            matches!(
                e.call,
                recorder::TraceCall::Vm(vcpu::VmCall::Destroy)
                    | recorder::TraceCall::Vcpu(vcpu::VcpuCall::Destroy)
            )
        })
        .map(|e| format!("#{} {} {}", e.seq, e.stream, e.call))
        .collect();
    assert!(destroys.is_empty(), "no DESTROY was recorded: {destroys:?}");
    let mut last = std::collections::BTreeMap::new();
    for event in &recorded.events {
        if matches!(event.stream, vcpu::Stream::Vcpu(..)) {
            last.insert(event.stream.to_string(), event);
        }
    }
    assert_eq!(last.len(), 3, "3 VMs x 1 vCPU ran: {:?}", last.keys());
    for (stream, event) in &last {
        assert!(
            event.call == recorder::TraceCall::Decision
                && event.outcome == Ok(vcpu::Reply::Decision(vcpu::RunDecision::Stop)),
            "{stream} ends with its stop decision, not {} -> {:?}",
            event.call,
            event.outcome
        );
    }

    // The trace replays: same backend calls stream by stream, same control replies.
    let out = vmfleet().arg("replay").arg(&trace).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "replay: {stderr}");
    assert!(stdout.starts_with("vmfleet transcript"), "{stdout}");
    for line in [
        "  pause a -> ok: a paused",
        "  set-model b hide=avx2 -> error: ",
        "  shutdown for exit -> ok: shut down 3 VM(s)",
    ] {
        assert!(stdout.contains(line), "{line:?} in the replay: {stdout}");
    }
    assert!(
        !stdout.contains("DESTROY"),
        "the replay destroys nothing either: {stdout}"
    );
}

#[test]
fn an_empty_daemon_records_vms_created_by_request_and_replays() {
    if !kvm_usable("an_empty_daemon_records_vms_created_by_request_and_replays") {
        return;
    }
    let dir = scratch("empty");
    let trace = dir.join("empty.trace");
    let socket = dir.join("ctl.sock");
    let (stdout, stderr) = (dir.join("serve.out"), dir.join("serve.err"));
    let child = vmfleet()
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--record")
        .arg(&trace)
        .stdout(Stdio::from(File::create(&stdout).unwrap()))
        .stderr(Stdio::from(File::create(&stderr).unwrap()))
        .spawn()
        .unwrap();
    let mut daemon = Daemon {
        child,
        socket,
        stdout,
        stderr,
    };
    daemon.wait_until_answering();
    assert!(daemon.ok(&["list"]).contains("no VMs"));

    // From stdin; the guest probes twice and halts on its own.
    let mut create = vmfleet()
        .arg("ctl")
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["create", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    create
        .stdin
        .take()
        .unwrap()
        .write_all(b"[[vm]]\nname = \"quick\"\nvcpus = 2\nprobe_repeats = 2\n")
        .unwrap();
    let out = create.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.contains("created quick"));
    daemon.ok(&["set-model", "quick", "--hide", "avx2"]);
    daemon.ok(&["start", "quick"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.state("quick") != "exited (guest halted)" {
        assert!(Instant::now() < deadline, "quick never halted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let model = daemon.ok(&["model", "quick"]);
    assert!(
        model.contains("locked") && model.contains("hides: avx2"),
        "{model}"
    );
    daemon.ok(&["shutdown"]);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)).code(), Some(0));
    let report = std::fs::read_to_string(&daemon.stdout).unwrap();
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("quick ") && l.contains("completed")),
        "{report}"
    );

    let recorded = recorder::Trace::open(&trace).expect("the trace reads back");
    recorded.require_complete().expect("the trace is complete");
    assert_eq!(recorded.header.job.spec_text, "", "no spec at start-up");
    let out = vmfleet().arg("replay").arg(&trace).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "replay: {stderr}");
    for line in [
        "== vm0 quick: completed, 2 vCPU(s)",
        "  create (4 lines of spec) -> ok: created quick",
        "  start quick -> ok: quick started",
        "  shutdown for exit -> ok: shut down 1 VM(s)",
    ] {
        assert!(stdout.contains(line), "{line:?} in the replay: {stdout}");
    }
}

/// The user the tests act as when they need another one ("nobody" on most systems).
const OTHER_UID: u32 = 65534;

/// Whether this test can act as another user (only root can); prints SKIPPED if not.
fn can_be_another_user(test: &str) -> bool {
    if supervisor::socket::euid() == 0 {
        true
    } else {
        vcpu::skip::skipped(
            test,
            format!("only root can act as another user (uid {OTHER_UID})"),
        );
        false
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).map(|m| m.mode()).unwrap_or(0)
}

/// Whether every directory on the way to `file` lets others through and `file` lets them run it.
fn others_can_run(file: &Path) -> bool {
    mode(file) & 0o005 == 0o005 && file.ancestors().skip(1).all(|d| mode(d) & 0o001 != 0)
}

/// Whether others can get through `dir` and every directory above it (a temporary directory may
/// be private); prints SKIPPED if not.
fn others_can_enter(test: &str, dir: &Path) -> bool {
    if dir.ancestors().all(|d| mode(d) & 0o001 != 0) {
        return true;
    }
    vcpu::skip::skipped(
        test,
        format!(
            "uid {OTHER_UID} cannot get through {} or a directory above it",
            dir.display()
        ),
    );
    false
}

/// `program` as a path uid [`OTHER_UID`] can run: itself, or a copy in `dir` (a checkout may be
/// in a directory only root can enter). `None`, with SKIPPED printed, if neither will do.
fn runnable_by_other(test: &str, program: &Path, dir: &Path) -> Option<PathBuf> {
    if others_can_run(program) {
        return Some(program.to_path_buf());
    }
    let copy = dir.join(program.file_name().unwrap());
    std::fs::copy(program, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    if others_can_run(&copy) {
        return Some(copy);
    }
    vcpu::skip::skipped(
        test,
        format!(
            "uid {OTHER_UID} cannot reach {} nor a copy in {}",
            program.display(),
            dir.display()
        ),
    );
    None
}

/// A child process, killed (by its own pid) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Not a test: the impostor that `ctl_refuses_a_daemon_of_another_user` runs as another user, by
/// running this test binary again. It listens where it is told and answers every line as a
/// daemon would, so only `ctl`'s credential check can tell it apart.
#[test]
#[ignore = "a helper that another test runs as another user"]
fn impostor_listener() {
    let Some(path) = std::env::var_os("VMFLEET_IMPOSTOR_SOCKET") else {
        return;
    };
    // Never outlive the test that started it by long.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(120));
        std::process::exit(0);
    });
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                line.clear();
                let _ = reader.get_mut().write_all(b"{\"ok\":true,\"result\":[]}\n");
            }
        });
    }
}

#[test]
fn ctl_refuses_a_daemon_of_another_user() {
    let test = "ctl_refuses_a_daemon_of_another_user";
    if !can_be_another_user(test) {
        return;
    }
    let dir = scratch("impostor");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    if !others_can_enter(test, &dir) {
        return;
    }
    let Some(helper) = runnable_by_other(test, &std::env::current_exe().unwrap(), &dir) else {
        return;
    };
    // The other user's socket where ours would be by default (XDG_RUNTIME_DIR=dir).
    let theirs = dir.join("vmfleet");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    let socket = theirs.join("vmfleet.sock");
    let _impostor = KillOnDrop(
        Command::new(&helper)
            .args(["impostor_listener", "--exact", "--ignored", "--nocapture"])
            .env("VMFLEET_IMPOSTOR_SOCKET", &socket)
            .gid(OTHER_UID)
            .uid(OTHER_UID)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the impostor never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    // It answers like a daemon: only credentials tell.
    let mut raw = BufReader::new(UnixStream::connect(&socket).unwrap());
    assert_eq!(raw_exchange(&mut raw, b"{\"op\":\"list\"}\n")["ok"], true);
    assert_eq!(std::fs::metadata(&socket).unwrap().uid(), OTHER_UID);

    let explicit = || {
        let mut c = vmfleet();
        c.arg("ctl").arg("--socket").arg(&socket);
        c
    };
    let by_default = || {
        let mut c = vmfleet();
        c.arg("ctl").env("XDG_RUNTIME_DIR", &dir);
        c
    };
    for (how, mut command, args) in [
        ("--socket", explicit(), vec!["list"]),
        ("default path", by_default(), vec!["list"]),
        ("default path", by_default(), vec!["shutdown"]),
        ("send", by_default(), vec!["send", "{\"op\":\"list\"}"]),
    ] {
        let out = command.args(&args).output().unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(Status::Unreachable.code().into()),
            "{how} {args:?}: {stdout} {stderr}"
        );
        assert!(
            stderr.contains(&socket.display().to_string())
                && stderr.contains(&format!("it runs as uid {OTHER_UID}"))
                && stderr.contains("not as this user (uid 0) or root"),
            "{how} {args:?}: {stderr}"
        );
        assert!(
            stdout.is_empty(),
            "{how} {args:?}: nothing printed: {stdout}"
        );
    }

    // And `serve` will not take the other user's directory for its own.
    let out = vmfleet()
        .arg("serve")
        .env("XDG_RUNTIME_DIR", &dir)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(Status::Error.code().into()),
        "{stderr}"
    );
    assert!(
        stderr.contains(&theirs.display().to_string())
            && stderr.contains(&format!("belongs to uid {OTHER_UID}")),
        "{stderr}"
    );
    assert!(
        UnixStream::connect(&socket).is_ok(),
        "their socket is left alone"
    );
}

#[test]
fn serve_refuses_socket_places_it_cannot_trust() {
    let dir = scratch("untrusted");
    let refused = |command: &mut Command, needles: &[&str]| {
        let out = command.output().unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(Status::Error.code().into()),
            "{command:?}: {stderr}"
        );
        for needle in needles {
            assert!(stderr.contains(needle), "{needle:?} in {stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    let serve_in = |xdg: &Path| {
        let mut c = vmfleet();
        c.arg("serve").env("XDG_RUNTIME_DIR", xdg);
        c
    };

    // Ours, but others can enter it.
    let loose = dir.join("loose");
    std::fs::create_dir_all(loose.join("vmfleet")).unwrap();
    std::fs::set_permissions(
        loose.join("vmfleet"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    refused(
        &mut serve_in(&loose),
        &[&loose.join("vmfleet").display().to_string(), "0755", "0700"],
    );
    assert!(!loose.join("vmfleet/vmfleet.sock").exists());

    // A symbolic link, even to a private directory of ours.
    let linked = dir.join("linked");
    let real = dir.join("real");
    std::fs::create_dir_all(&linked).unwrap();
    std::fs::create_dir_all(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&real, linked.join("vmfleet")).unwrap();
    refused(&mut serve_in(&linked), &["symbolic link"]);
    assert!(!real.join("vmfleet.sock").exists());

    // A plain file where the directory should be.
    let file = dir.join("file");
    std::fs::create_dir_all(&file).unwrap();
    std::fs::write(file.join("vmfleet"), "").unwrap();
    refused(&mut serve_in(&file), &["not a directory"]);

    if !can_be_another_user("serve_refuses_socket_places_it_cannot_trust (other owners)") {
        return;
    }
    // Another user's directory, by default and with --socket.
    let theirs = dir.join("theirs");
    std::fs::create_dir_all(theirs.join("vmfleet")).unwrap();
    std::fs::set_permissions(
        theirs.join("vmfleet"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::os::unix::fs::chown(theirs.join("vmfleet"), Some(OTHER_UID), None).unwrap();
    refused(
        &mut serve_in(&theirs),
        &[&format!("belongs to uid {OTHER_UID}")],
    );
    let mut explicit = vmfleet();
    explicit
        .arg("serve")
        .arg("--socket")
        .arg(theirs.join("vmfleet/x.sock"));
    refused(
        &mut explicit,
        &[
            &theirs.join("vmfleet/x.sock").display().to_string(),
            &format!("belongs to uid {OTHER_UID}"),
        ],
    );
}

#[test]
fn the_default_socket_is_0600_in_a_0700_directory_of_its_own() {
    if !kvm_usable("the_default_socket_is_0600_in_a_0700_directory_of_its_own") {
        return;
    }
    let dir = scratch("default");
    let xdg = dir.join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    let mut command = vmfleet();
    command.arg("serve").env("XDG_RUNTIME_DIR", &xdg);
    let socket = xdg.join("vmfleet/vmfleet.sock");
    let mut daemon = Daemon::launch(&dir, command, socket.clone());

    let meta = std::fs::symlink_metadata(xdg.join("vmfleet")).unwrap();
    assert!(meta.is_dir());
    assert_eq!(
        meta.mode() & 0o7777,
        0o700,
        "directory mode {:o}",
        meta.mode()
    );
    assert_eq!(meta.uid(), supervisor::socket::euid());
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "socket mode {:o}", meta.mode());
    let logs = daemon.logs();
    assert!(logs.contains(&socket.display().to_string()), "{logs}");

    // ctl finds it by the same rule.
    let out = vmfleet()
        .args(["ctl", "list"])
        .env("XDG_RUNTIME_DIR", &xdg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.contains("no VMs"));
    let out = vmfleet()
        .args(["ctl", "shutdown"])
        .env("XDG_RUNTIME_DIR", &xdg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)).code(), Some(0));
    assert!(!socket.exists(), "the socket goes with its daemon");
    assert!(
        xdg.join("vmfleet").is_dir(),
        "its directory stays, for the next one"
    );
}

#[test]
fn ctl_send_passes_raw_lines_and_a_key_twice_is_refused() {
    if !kvm_usable("ctl_send_passes_raw_lines_and_a_key_twice_is_refused") {
        return;
    }
    let dir = scratch("send");
    let socket = dir.join("ctl.sock");
    let mut command = vmfleet();
    command.arg("serve").arg("--socket").arg(&socket);
    let mut daemon = Daemon::launch(&dir, command, socket.clone());

    // A key twice, over the socket: the reply names it, and the connection goes on.
    let mut raw = BufReader::new(UnixStream::connect(&socket).unwrap());
    let reply = raw_exchange(&mut raw, b"{\"op\":\"list\",\"op\":\"shutdown\"}\n");
    assert_eq!(reply["ok"], false, "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(error.contains("the key `op` twice"), "{error}");
    assert_eq!(
        raw_exchange(&mut raw, b"{\"op\":\"list\"}\n")["ok"],
        true,
        "still serving"
    );

    // One request as an argument: the reply line as it came.
    let out = daemon.ctl(&["send", r#"{"op":"list"}"#]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, "{\"ok\":true,\"result\":[]}\n");

    // Lines from stdin, blank ones skipped, one reply line each, in order; one refused: 7.
    let mut send = vmfleet()
        .arg("ctl")
        .arg("--socket")
        .arg(&socket)
        .arg("send")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    send.stdin
        .take()
        .unwrap()
        .write_all(
            b"{\"op\":\"list\"}\n\n{\"op\":\"start\",\"vm\":\"a\",\"vm\":\"b\"}\r\n\
              {\"op\":\"frob\"}\n{\"op\":\"list\"}\n",
        )
        .unwrap();
    let out = send.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(Status::Refused.code().into()),
        "{stdout} {stderr}"
    );
    let replies: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), 4, "{stdout}");
    assert_eq!(replies[0]["ok"], true);
    assert!(
        replies[1]["error"]
            .as_str()
            .unwrap()
            .contains("the key `vm` twice"),
        "{stdout}"
    );
    assert!(
        replies[2]["error"]
            .as_str()
            .unwrap()
            .contains("unknown op `frob`"),
        "{stdout}"
    );
    assert_eq!(replies[3]["ok"], true);

    // Shutdown, then a line the daemon is gone for: the reply, then unreachable.
    let out = daemon.ctl(&["send", "{\"op\":\"shutdown\"}\n{\"op\":\"list\"}"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(Status::Unreachable.code().into()),
        "{stdout} {stderr}"
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("{\"ok\":true"), "{stdout}");
    assert!(
        stderr.contains("closed the connection after 1 reply line(s)"),
        "{stderr}"
    );
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)).code(), Some(0));
    let out = daemon.ctl(&["send", "{\"op\":\"list\"}"]);
    assert_eq!(out.status.code(), Some(Status::Unreachable.code().into()));
}

#[test]
fn a_client_of_another_user_is_refused_by_the_daemon() {
    let test = "a_client_of_another_user_is_refused_by_the_daemon";
    if !kvm_usable(test) || !can_be_another_user(test) {
        return;
    }
    let dir = scratch("foreign");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    if !others_can_enter(test, &dir) {
        return;
    }
    let Some(vmfleet_bin) = runnable_by_other(test, Path::new(env!("CARGO_BIN_EXE_vmfleet")), &dir)
    else {
        return;
    };
    let socket = dir.join("ctl.sock");
    let mut command = vmfleet();
    command.arg("serve").arg("--socket").arg(&socket);
    let daemon = Daemon::launch(&dir, command, socket.clone());
    // Only for this test: let the other user reach connect(), so the daemon's own check is what
    // stands in the way.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    let out = Command::new(&vmfleet_bin)
        .arg("ctl")
        .arg("--socket")
        .arg(&socket)
        .arg("list")
        .gid(OTHER_UID)
        .uid(OTHER_UID)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(Status::Refused.code().into()),
        "{stdout} {stderr}"
    );
    assert!(
        stderr.contains("serves only") && stderr.contains(&format!("not uid {OTHER_UID}")),
        "{stderr}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.logs().contains(&format!(
        "refused a control connection from uid {OTHER_UID}"
    )) {
        assert!(Instant::now() < deadline, "no log line: {}", daemon.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its own user is still served.
    assert!(daemon.ok(&["list"]).contains("no VMs"));
}

/// Wait for a `ctl` child, at most `within` (a hang, not a figure); its output.
fn finish_within(mut child: Child, what: &str, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ctl {what} did not answer within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A `wait` whose client went away blocks nothing: the next `pause` answers, clients asking at
/// once all get answers while another client's `wait` is outstanding, and SIGTERM still stops
/// every VM, exits 0 and leaves a complete trace that replays (without the abandoned wait).
#[test]
fn an_abandoned_wait_blocks_nothing_and_sigterm_still_stops_promptly() {
    if !kvm_usable("an_abandoned_wait_blocks_nothing_and_sigterm_still_stops_promptly") {
        return;
    }
    let dir = scratch("abandoned");
    let trace = dir.join("serve.trace");
    let mut daemon = Daemon::start(&dir, LONG_FLEET, &["--record", trace.to_str().unwrap()]);
    daemon.wait_uptime(Duration::from_secs(1));
    let hang = Duration::from_secs(10);
    let ctl = |args: &[&str]| {
        vmfleet()
            .arg("ctl")
            .arg("--socket")
            .arg(&daemon.socket)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // A client asks to wait for a VM that runs for minutes, then goes away.
    let mut abandoned = UnixStream::connect(&daemon.socket).unwrap();
    abandoned
        .write_all(b"{\"op\":\"wait\",\"vm\":\"a\"}\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(abandoned);
    let out = finish_within(ctl(&["pause", "b"]), "pause b", hang);
    assert_eq!(text(&out).0, "b: paused\n", "{}", text(&out).1);

    // A wait that stays, and clients asking at once.
    let staying = ctl(&["wait", "c"]);
    let asks: Vec<(&str, Child)> = [
        "pause a",
        "model b",
        "resume b",
        "model c",
        "list",
        "pause nope",
    ]
    .into_iter()
    .map(|ask| (ask, ctl(&ask.split(' ').collect::<Vec<_>>())))
    .collect();
    for (ask, child) in asks {
        let out = finish_within(child, ask, hang);
        let expected = if ask == "pause nope" {
            Status::Refused.code().into()
        } else {
            0
        };
        assert_eq!(out.status.code(), Some(expected), "{ask}: {:?}", text(&out));
    }
    assert_eq!(daemon.state("a"), "paused");
    assert_eq!(daemon.state("b"), "running");

    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", daemon.logs());
    // The staying client hears that c stopped, or loses its daemon; it never hangs.
    let out = finish_within(staying, "wait c", hang);
    assert!(!text(&out).1.contains("panicked"), "{:?}", text(&out));
    let report = std::fs::read_to_string(&daemon.stdout).unwrap();
    for vm in ["a", "b", "c"] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with(&format!("{vm} ")) && l.contains("stopped")),
            "{vm} stopped in the final report: {report}"
        );
    }

    let recorded = recorder::Trace::open(&trace).expect("the trace reads back");
    recorded
        .require_complete()
        .expect("the trace has its end marker");
    let control: Vec<String> = recorded
        .control_events()
        .map(|e| e.call.to_string())
        .collect();
    assert!(
        !control.iter().any(|c| c == "wait a"),
        "the abandoned wait is not recorded: {control:?}"
    );
    assert!(
        control.iter().any(|c| c == "shutdown for exit"),
        "{control:?}"
    );
    let out = vmfleet().arg("replay").arg(&trace).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "replay: {stderr}");
    assert!(stdout.contains("  pause b -> ok: b paused"), "{stdout}");
    assert!(
        stdout.contains("  shutdown for exit -> ok: shut down 3 VM(s)"),
        "{stdout}"
    );
}
