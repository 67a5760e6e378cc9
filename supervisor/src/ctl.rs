//! `vmfleet ctl`: send one request to a running `vmfleet serve` ([`protocol::wire`]) and print the
//! reply for a human (or as it came, with `--json`); `vmfleet ctl send` sends raw request lines
//! and prints the reply lines as they came.
//!
//! Before sending anything, `ctl` asks the kernel who is serving the socket (`SO_PEERCRED`) and
//! talks only to a daemon of its own user or root ([`crate::socket`]): a request can carry a spec,
//! and a reply is believed.
//!
//! Exit status ([`crate::exit`]): success when the daemon carried the request out, `refused` when
//! it answered with an error, `unreachable` when it could not be reached or is not trusted (the
//! message names the socket), `bad_input` when the request could not be built.

use crate::cli::{CtlArgs, CtlCommand};
use crate::common::{Versioned, emit};
use crate::exit::{Status, StatusExt as _};
use crate::fleet::lifecycle::{ModelView, VmInfo};
use crate::socket::{self, Peer};
use anyhow::{Context, Result, anyhow, bail};
use protocol::{MAX_REQUEST_BYTES, Request, Response, StatusView};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// The longest reply `ctl` reads (a `list` of thousands of VMs is far below this).
pub const MAX_REPLY_BYTES: u64 = 256 << 20;

/// The schema of `vmfleet ctl --json` (`supervisor/schemas/ctl.v1.schema.json`): the daemon's
/// reply, `{"ok":…,"result":…}` or `{"ok":false,"error":…}`, with this `schema` added.
pub const CTL_SCHEMA: &str = "vmfleet.ctl.v1";

/// `vmfleet ctl`.
pub fn ctl(args: &CtlArgs) -> Result<Status> {
    let socket = match &args.socket {
        Some(path) => path.clone(),
        None => socket::default_path(),
    };
    if let CtlCommand::Send { request } = &args.request {
        return send_lines(&socket, request.as_deref());
    }
    let request = request_of(&args.request).or_status(Status::BadInput)?;
    let line = send(&socket, &request).or_status(Status::Unreachable)?;
    let response: Response = serde_json::from_str(&line).with_context(|| {
        format!(
            "the daemon at {} sent a reply that is not one: {}",
            socket.display(),
            line.trim_end()
        )
    })?;
    if args.json {
        emit(&format!(
            "{}\n",
            serde_json::to_string(&Versioned {
                schema: CTL_SCHEMA,
                body: &response,
            })
            .context("rendering the reply as JSON")?
        ))?;
    } else if response.ok {
        let result = response.result.unwrap_or(Value::Null);
        emit(&render(&request, &result)?)?;
    } else {
        crate::note!(
            "vmfleet: {}",
            response.error.as_deref().unwrap_or("the daemon refused")
        );
    }
    Ok(if response.ok {
        Status::Success
    } else {
        Status::Refused
    })
}

/// The request a `ctl` subcommand sends: the one place that maps `CtlCommand` (clap) onto
/// `protocol::Request`, one to one (`create` reads its file here; `send` has no request of its
/// own).
pub fn request_of(command: &CtlCommand) -> Result<Request> {
    let vm = |vm: &String| vm.clone();
    Ok(match command {
        CtlCommand::List => Request::List,
        CtlCommand::Create { file } => Request::Create {
            spec: read_spec(file)?,
        },
        CtlCommand::Start { vm: v, paused } => Request::Start {
            vm: vm(v),
            paused: *paused,
        },
        CtlCommand::Pause { vm: v } => Request::Pause { vm: vm(v) },
        CtlCommand::Resume { vm: v } => Request::Resume { vm: vm(v) },
        CtlCommand::Stop { vm: v } => Request::Stop { vm: vm(v) },
        CtlCommand::Wait { vm: v } => Request::Wait { vm: vm(v) },
        CtlCommand::StopAll => Request::StopAll,
        CtlCommand::Remove { vm: v } => Request::Remove { vm: vm(v) },
        CtlCommand::Model { vm: v } => Request::Model { vm: vm(v) },
        CtlCommand::SetModel { vm: v, hide, set } => {
            let set: Vec<String> = set.iter().map(|w| w.trim().to_string()).collect();
            // Checked here too, so that a typo is named before anything is sent.
            vcpu::model::arm64::model::Assignments::parse(&set)
                .map_err(|e| anyhow::anyhow!("ctl set-model --set: {e}"))?;
            Request::SetModel {
                vm: vm(v),
                hide: hide
                    .iter()
                    .map(|f| f.trim().to_string())
                    .filter(|f| !f.is_empty())
                    .collect(),
                set,
            }
        }
        CtlCommand::Shutdown => Request::Shutdown,
        CtlCommand::Send { .. } => {
            bail!("`vmfleet ctl send` sends raw request lines, not one request of its own")
        }
    })
}

fn read_spec(file: &Path) -> Result<String> {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the spec fragment from stdin")?;
        text
    } else {
        crate::spec::read_spec_file(file)
            .with_context(|| format!("reading spec fragment {}", file.display()))?
    };
    let line = Request::Create { spec: text.clone() }.to_line();
    if line.len() > MAX_REQUEST_BYTES {
        bail!(
            "the spec fragment {} is too large: its request is {} bytes, the daemon reads at most {}",
            file.display(),
            line.len(),
            MAX_REQUEST_BYTES
        );
    }
    Ok(text)
}

/// Connect to the daemon at `socket` and make sure it runs as this user or root.
pub fn connect(socket: &Path) -> Result<UnixStream> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        anyhow!(
            "cannot reach the vmfleet daemon at {}: {e}; start one with `vmfleet serve{}`",
            socket.display(),
            if socket::default_path() == socket {
                String::new()
            } else {
                format!(" --socket {}", socket.display())
            }
        )
    })?;
    let peer = Peer::of(&stream).with_context(|| {
        format!(
            "cannot tell who is serving {} (SO_PEERCRED)",
            socket.display()
        )
    })?;
    let ours = socket::euid();
    if !peer.trusted_by(ours) {
        bail!(
            "not trusting the process serving {}: it runs as uid {} (pid {}), not as this user \
             (uid {ours}) or root; another user may have put it there",
            socket.display(),
            peer.uid,
            peer.pid
        );
    }
    Ok(stream)
}

/// Send one request and read its reply line.
pub fn send(socket: &Path, request: &Request) -> Result<String> {
    let mut stream = BufReader::new(connect(socket)?);
    exchange(&mut stream, socket, request.to_line().as_bytes())?.with_context(|| {
        format!(
            "the daemon at {} closed the connection without a whole reply",
            socket.display()
        )
    })
}

/// Write one request line (newline included) and read one reply line: `None` when the daemon
/// closed the connection first.
fn exchange(
    stream: &mut BufReader<UnixStream>,
    socket: &Path,
    line: &[u8],
) -> Result<Option<String>> {
    let written = stream.get_mut().write_all(line);
    let mut reply = String::new();
    // Even when writing failed: a daemon that refuses a connection says why, then closes it,
    // maybe before the request was written.
    let n = (&mut *stream).take(MAX_REPLY_BYTES).read_line(&mut reply);
    // A daemon that has closed the connection (it shut down, say) shows up as a broken pipe or
    // a reset, depending on who was first; either way there is no reply.
    let closed = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        )
    };
    match (written, n) {
        (_, Ok(n)) if n > 0 && reply.ends_with('\n') => Ok(Some(reply)),
        (Err(e), _) if !closed(&e) => {
            Err(e).with_context(|| format!("sending the request to {}", socket.display()))
        }
        (_, Err(e)) if !closed(&e) => {
            Err(e).with_context(|| format!("reading the reply from {}", socket.display()))
        }
        _ => Ok(None),
    }
}

/// `vmfleet ctl send`: send `request` (or each line of stdin without it; blank lines are skipped)
/// on one connection, and print each reply line as it came, as soon as it came.
fn send_lines(socket: &Path, request: Option<&str>) -> Result<Status> {
    let mut stream = BufReader::new(connect(socket).or_status(Status::Unreachable)?);
    let mut refused = 0usize;
    let mut answered = 0usize;
    let mut one = |line: &str| -> Result<()> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            return Ok(());
        }
        let reply = exchange(&mut stream, socket, format!("{line}\n").as_bytes())
            .or_status(Status::Unreachable)?
            .with_context(|| {
                format!(
                    "the daemon at {} closed the connection after {answered} reply line(s), \
                     without answering {}",
                    socket.display(),
                    shorten(line)
                )
            })
            .or_status(Status::Unreachable)?;
        answered += 1;
        emit(&reply)?;
        let response: Response = serde_json::from_str(&reply).with_context(|| {
            format!(
                "the daemon at {} sent a reply that is not one: {}",
                socket.display(),
                reply.trim_end()
            )
        })?;
        if !response.ok {
            refused += 1;
        }
        Ok(())
    };
    match request {
        Some(text) => text.lines().try_for_each(&mut one)?,
        None => {
            for line in std::io::stdin().lock().lines() {
                one(&line.context("reading request lines from stdin")?)?;
            }
        }
    }
    Ok(if refused > 0 {
        Status::Refused
    } else {
        Status::Success
    })
}

/// A request line for an error message: its start, if it is long.
fn shorten(line: &str) -> String {
    match line.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_string(),
    }
}

/// The reply to `request` for a human.
pub fn render(request: &Request, result: &Value) -> Result<String> {
    let parse = |what: &str| anyhow!("the daemon's reply to {what} has an unexpected shape");
    Ok(match request {
        Request::List | Request::StopAll => {
            let vms: Vec<VmInfo> =
                serde_json::from_value(result.clone()).map_err(|_| parse(request.op()))?;
            list_table(&vms)
        }
        Request::Create { .. } => {
            let models: Vec<ModelView> =
                serde_json::from_value(result.clone()).map_err(|_| parse(request.op()))?;
            let mut out = String::new();
            for m in &models {
                let drift: usize = m.vcpus.iter().map(|v| v.drift.len()).sum();
                let model = if m.is_arm64() {
                    String::new()
                } else {
                    format!("hides {}, ", hides(&m.hide))
                };
                let _ = writeln!(
                    out,
                    "created {} ({} vCPU(s), {model}{drift} drift line(s)); start it with \
                     `vmfleet ctl start {}`",
                    m.vm,
                    m.vcpus.len(),
                    m.vm
                );
            }
            out
        }
        Request::Start { .. }
        | Request::Pause { .. }
        | Request::Resume { .. }
        | Request::Stop { .. }
        | Request::Wait { .. } => {
            let status: StatusView =
                serde_json::from_value(result.clone()).map_err(|_| parse(request.op()))?;
            format!("{}: {}\n", status.vm, status.state)
        }
        Request::Model { .. } | Request::SetModel { .. } => {
            let model: ModelView =
                serde_json::from_value(result.clone()).map_err(|_| parse(request.op()))?;
            model_text(&model)
        }
        Request::Remove { .. } => {
            format!("removed {}\n", vm_report_line(result))
        }
        Request::Shutdown | Request::ShutdownForExit => {
            let mut out = String::from("the daemon shut down");
            match result.get("vms").and_then(Value::as_array) {
                Some(vms) if !vms.is_empty() => {
                    out += "; its VMs:\n";
                    for vm in vms {
                        let _ = writeln!(out, "  {}", vm_report_line(vm));
                    }
                }
                _ => out += "; it had no VMs\n",
            }
            out
        }
    })
}

fn hides(hide: &[String]) -> String {
    if hide.is_empty() {
        "nothing".into()
    } else {
        hide.join(",")
    }
}

/// `NAME: STATE` of a serialized `VmReport` (its state is `{"status": "completed"}`,
/// `{"status": "failed", "detail": "why"}`, ...).
fn vm_report_line(report: &Value) -> String {
    let name = report.get("name").and_then(Value::as_str).unwrap_or("?");
    let state = report.get("state");
    let status = state.and_then(|s| s.get("status")).and_then(Value::as_str);
    let detail = state.and_then(|s| s.get("detail")).and_then(Value::as_str);
    let state = match (status, detail) {
        (Some(status), Some(why)) => format!("{status}: {why}"),
        (Some(status), None) => status.to_string(),
        (None, _) => state.map_or_else(|| "?".into(), Value::to_string),
    };
    format!("{name}: {state}")
}

/// `list` as a table: NAME, STATE, VCPUS, UPTIME.
pub fn list_table(vms: &[VmInfo]) -> String {
    if vms.is_empty() {
        return "no VMs (add some with `vmfleet ctl create FILE`)\n".into();
    }
    let header = ["NAME", "STATE", "VCPUS", "UPTIME"];
    let rows: Vec<[String; 4]> = vms
        .iter()
        .map(|vm| {
            [
                vm.name.clone(),
                vm.state.clone(),
                vm.vcpus.to_string(),
                vm.uptime_ms.map_or_else(|| "-".into(), uptime),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 4]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3]]);
    }
    out
}

/// An uptime for a human: `850ms`, `12.3s`, `4m05s`, `2h03m`, `3d04h`.
pub fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{}.{}s", s, (ms % 1000) / 100),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// A VM's CPU model and drift report as text.
pub fn model_text(model: &ModelView) -> String {
    let mut out = format!(
        "model of {}: {}\n",
        model.vm,
        match model.sealed {
            Some(vcpu) => format!("locked (vcpu{vcpu} ran first; only identical rewrites allowed)"),
            None => "open (no vCPU has run; it can still change)".into(),
        },
    );
    let held = if model.is_arm64() {
        "model registers"
    } else {
        let _ = writeln!(out, "hides: {}", hides(&model.hide));
        "CPUID entries"
    };
    for v in &model.vcpus {
        let _ = writeln!(
            out,
            "vcpu{}: {} {held}, digest {}",
            v.vcpu, v.entries, v.digest
        );
        if v.drift.is_empty() {
            out += "  drift: none (the kernel holds what was asked)\n";
        }
        for d in v.drift.iter() {
            let _ = writeln!(out, "  drift: {d}");
        }
        if !v.not_honoured.is_empty() {
            let _ = writeln!(
                out,
                "  hidden, not honoured by the kernel: {}",
                v.not_honoured.join(",")
            );
        }
        if !v.already_absent.is_empty() {
            let _ = writeln!(
                out,
                "  hidden, never offered by the host: {}",
                v.already_absent.join(",")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::lifecycle::VcpuModelView;
    use std::sync::Arc;

    #[test]
    fn uptimes_read_naturally() {
        assert_eq!(uptime(850), "850ms");
        assert_eq!(uptime(12_345), "12.3s");
        assert_eq!(uptime(245_000), "4m05s");
        assert_eq!(uptime(7_380_000), "2h03m");
        assert_eq!(uptime(273_600_000), "3d04h");
    }

    #[test]
    fn list_is_a_table_with_aligned_columns() {
        let vm = |name: &str, state: &str, uptime_ms| VmInfo {
            id: 0,
            name: name.into(),
            vcpus: 2,
            state: state.into(),
            phase: state.into(),
            exit_reason: None,
            uptime_ms,
        };
        let table = list_table(&[
            vm("web", "running", Some(61_000)),
            vm("db-primary", "paused", Some(1_500)),
            vm("new", "created", None),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("NAME        STATE    VCPUS  UPTIME"),
            "{table}"
        );
        assert_eq!(lines[1], "web         running  2      1m01s");
        assert_eq!(lines[2], "db-primary  paused   2      1.5s");
        assert_eq!(lines[3], "new         created  2      -");
        assert!(list_table(&[]).contains("no VMs"));
    }

    #[test]
    fn an_arm64_model_says_registers_and_no_hide_list() {
        let model = ModelView {
            vm: "a".into(),
            arch: "aarch64".into(),
            sealed: None,
            hide: vec![],
            vcpus: vec![VcpuModelView {
                vcpu: 0,
                entries: 83,
                digest: "8525d951".into(),
                drift: Arc::new([]),
                drift_changes: Default::default(),
                not_honoured: vec![],
                already_absent: vec![],
            }],
        };
        let text = model_text(&model);
        assert!(
            text.contains("vcpu0: 83 model registers, digest 8525d951"),
            "{text}"
        );
        assert!(!text.contains("hides") && !text.contains("CPUID"), "{text}");
        let line = model.summary();
        assert_eq!(
            line,
            "model of a: open; register digests [8525d951]; 0 drift lines"
        );
    }

    #[test]
    fn a_model_shows_its_lock_and_drift() {
        let model = ModelView {
            vm: "m".into(),
            arch: "x86_64".into(),
            sealed: Some(1),
            hide: vec!["avx2".into()],
            vcpus: vec![VcpuModelView {
                vcpu: 0,
                entries: 42,
                digest: "0badcafe".into(),
                drift: Arc::new(["0x1.0.ecx: x2apic 0 -> 1".into()]),
                drift_changes: Default::default(),
                not_honoured: vec!["avx2".into()],
                already_absent: vec![],
            }],
        };
        let text = model_text(&model);
        assert!(
            text.contains("model of m: locked (vcpu1 ran first"),
            "{text}"
        );
        assert!(text.contains("hides: avx2"));
        assert!(text.contains("vcpu0: 42 CPUID entries, digest 0badcafe"));
        assert!(text.contains("  drift: 0x1.0.ecx: x2apic 0 -> 1"));
        assert!(text.contains("not honoured by the kernel: avx2"));
    }

    #[test]
    fn replies_render_per_op_and_bad_shapes_are_errors() {
        let status = serde_json::json!({"vm": "a", "state": "paused", "exits": 3});
        let text = render(&Request::Pause { vm: "a".into() }, &status).unwrap();
        assert_eq!(text, "a: paused\n");
        let e = render(&Request::List, &status).unwrap_err();
        assert!(e.to_string().contains("reply to list"), "{e}");
        let removed = serde_json::json!({"name": "b", "state": {"status": "failed", "detail": "guest faulted"}});
        assert_eq!(
            render(&Request::Remove { vm: "b".into() }, &removed).unwrap(),
            "removed b: failed: guest faulted\n"
        );
        let report = serde_json::json!({"fleet": "f", "vms": [{"name": "a", "state": {"status": "stopped"}}]});
        let text = render(&Request::Shutdown, &report).unwrap();
        assert!(
            text.contains("shut down") && text.contains("  a: stopped"),
            "{text}"
        );
    }

    #[test]
    fn set_model_drops_empty_names_and_create_reads_its_file() {
        let r = request_of(&CtlCommand::SetModel {
            vm: "a".into(),
            hide: vec!["avx2".into(), " ".into(), "x2apic".into()],
            set: vec![],
        })
        .unwrap();
        assert_eq!(
            r,
            Request::SetModel {
                vm: "a".into(),
                hide: vec!["avx2".into(), "x2apic".into()],
                set: vec![],
            }
        );
        let arm64 = |set: &[&str]| {
            request_of(&CtlCommand::SetModel {
                vm: "a".into(),
                hide: vec![],
                set: set.iter().map(|s| s.to_string()).collect(),
            })
        };
        assert_eq!(
            arm64(&["ID_AA64ISAR0_EL1.AES=0", " MIDR_EL1=0x410fd4f1"]).unwrap(),
            Request::SetModel {
                vm: "a".into(),
                hide: vec![],
                set: vec![
                    "ID_AA64ISAR0_EL1.AES=0".into(),
                    "MIDR_EL1=0x410fd4f1".into()
                ],
            }
        );
        let e = format!("{:#}", arm64(&["MIDR_EL2=0"]).unwrap_err());
        assert!(
            e.contains("--set") && e.contains("did you mean `MIDR_EL1`"),
            "{e}"
        );
        let e = request_of(&CtlCommand::Create {
            file: "/nonexistent/vmfleet/x.toml".into(),
        })
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("/nonexistent/vmfleet/x.toml"),
            "{e:#}"
        );
    }

    /// `vmfleet ctl`'s subcommands are the protocol's ops, by name, and each sends its own op
    /// (`send` aside: it sends raw lines).
    #[test]
    fn every_ctl_subcommand_is_the_op_of_its_name() {
        use clap::{CommandFactory as _, Parser as _};
        let cli = crate::cli::Cli::command();
        let ctl = cli.find_subcommand("ctl").expect("a ctl subcommand");
        let mut names: Vec<&str> = ctl
            .get_subcommands()
            .map(|c| c.get_name())
            .filter(|n| *n != "send")
            .collect();
        names.sort_unstable();
        let mut ops = protocol::OPS.to_vec();
        ops.sort_unstable();
        assert_eq!(names, ops);
        let spec =
            std::env::temp_dir().join(format!("vmfleet-ctl-{}-ops.toml", std::process::id()));
        std::fs::write(&spec, "[[vm]]\nname = \"a\"\n").unwrap();
        for op in protocol::OPS {
            let op_spec = op_args(op, &spec);
            let args = ["vmfleet", "ctl", op]
                .into_iter()
                .chain(op_spec.iter().map(String::as_str));
            let parsed =
                crate::cli::Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{op}: {e}"));
            let crate::cli::Command::Ctl(ctl) = parsed.command else {
                panic!("{op}: not a ctl command");
            };
            assert_eq!(request_of(&ctl.request).unwrap().op(), *op);
        }
        let _ = std::fs::remove_file(&spec);
    }

    /// The arguments `vmfleet ctl OP` needs.
    fn op_args(op: &str, spec: &Path) -> Vec<String> {
        match protocol::Op::on_wire(op).map(protocol::Op::fields) {
            Some(["spec"]) => vec![spec.display().to_string()],
            Some([]) | None => vec![],
            Some(_) => vec!["a".to_string()],
        }
    }

    #[test]
    fn an_absent_daemon_is_named_with_its_socket() {
        let path =
            std::env::temp_dir().join(format!("vmfleet-ctl-{}-none.sock", std::process::id()));
        let e = send(&path, &Request::List).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("vmfleet serve"), "{e}");
    }

    /// A stand-in daemon on a fresh socket: answers `ok` to lines containing "list", an error to
    /// any other, and closes the connection after `answers` lines.
    fn fake_daemon(name: &str, answers: usize) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vmfleet-ctl-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fake.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            for _ in 0..answers {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let reply = if line.contains("list") {
                    Response::ok(Value::Array(vec![]))
                } else {
                    Response::error(format!("no: {}", line.trim_end()))
                };
                reader
                    .get_mut()
                    .write_all(reply.to_line().as_bytes())
                    .unwrap();
            }
        });
        path
    }

    #[test]
    fn send_passes_every_line_and_exits_by_the_replies() {
        let socket = fake_daemon("send-ok", 2);
        let status = send_lines(
            &socket,
            Some("{\"op\":\"list\"}\n\n  \r\n{\"op\":\"list\"}"),
        )
        .unwrap();
        assert_eq!(status, Status::Success, "blank lines are not sent");

        let socket = fake_daemon("send-refused", 3);
        let status = send_lines(
            &socket,
            Some("{\"op\":\"list\"}\n{\"op\":\"frob\"}\n{\"op\":\"list\"}"),
        )
        .unwrap();
        assert_eq!(status, Status::Refused, "one error reply is enough");

        let socket = fake_daemon("send-cut", 1);
        let e = send_lines(&socket, Some("{\"op\":\"list\"}\n{\"op\":\"list\"}")).unwrap_err();
        assert_eq!(crate::exit::status_of(&e), Status::Unreachable, "{e:#}");
        assert!(
            format!("{e:#}").contains("closed the connection after 1 reply line(s)"),
            "{e:#}"
        );
        // The process serving is this test's, so it is trusted; a one-line exchange works too.
        let socket = fake_daemon("send-one", 1);
        let line = send(&socket, &Request::List).unwrap();
        assert_eq!(line, "{\"ok\":true,\"result\":[]}\n");
    }
}
