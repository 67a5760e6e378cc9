//! `vmfleet serve` and `vmfleet ctl` as an operator meets them: a daemon on a 0600 socket that
//! lists, creates, starts, pauses, resumes, stops and removes VMs, reports and guards their CPU
//! model, survives garbage and clients that vanish mid-request, and stops cleanly on `shutdown`
//! or SIGTERM, closing its trace. The live tests print SKIPPED when /dev/kvm is unusable.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

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

fn kvm_usable(test: &str) -> bool {
    match vcpu::kvm::KvmHypervisor::open() {
        Ok(_) => true,
        Err(e) => {
            println!("SKIPPED {test}: /dev/kvm unusable: {e}");
            false
        }
    }
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
    assert!(stderr.contains("locked"), "{stderr}");
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
        ["pause a", "set-model b hide=avx2", "shutdown"],
        "the control requests, in order (list is not recorded)"
    );

    // The trace replays: same backend calls stream by stream, same control replies.
    let out = vmfleet().arg("replay").arg(&trace).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "replay: {stderr}");
    assert!(stdout.starts_with("vmfleet transcript"), "{stdout}");
    for line in [
        "  pause a -> ok: a paused",
        "  set-model b hide=avx2 -> error: ",
        "  shutdown -> ok: shut down 3 VM(s)",
    ] {
        assert!(stdout.contains(line), "{line:?} in the replay: {stdout}");
    }
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
        "  shutdown -> ok: shut down 1 VM(s)",
    ] {
        assert!(stdout.contains(line), "{line:?} in the replay: {stdout}");
    }
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
    assert!(control.iter().any(|c| c == "shutdown"), "{control:?}");
    let out = vmfleet().arg("replay").arg(&trace).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "replay: {stderr}");
    assert!(stdout.contains("  pause b -> ok: b paused"), "{stdout}");
    assert!(
        stdout.contains("  shutdown -> ok: shut down 3 VM(s)"),
        "{stdout}"
    );
}
