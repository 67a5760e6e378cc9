//! `vmfleet serve`: a fleet that keeps running, controlled over a Unix socket ([`protocol::wire`]).
//!
//! Start-up: check the socket's directory ([`crate::socket`]: the default one is created 0700 and
//! must be ours and private; a `--socket` one must be ours), open KVM, write the trace header
//! (when recording), claim the socket (refusing if another daemon answers on it or the file is
//! another user's, replacing a stale socket file of ours), bring the fleet spec's VMs up, then
//! serve. The socket file is created with mode 0600 *before* it gets its name, so there is no
//! moment at which another user could connect. Clients that connect during start-up wait until
//! the fleet is up.
//!
//! Every connection's peer is checked with `SO_PEERCRED` before anything is read from it: only
//! this user and root are served. Anyone else (who could reach the socket only if its
//! permissions were loosened by hand) gets one error line, the connection closed, and a warning
//! in the daemon's log.
//!
//! Serving: one tokio task per connection, each reading request lines with a size cap and
//! answering each in order. Control requests go through [`Fleet::handle`], which carries requests
//! of different connections out concurrently and records each when it completes; `list` reads
//! the fleet's state directly. Each request runs in a task of its own while its connection
//! watches for the client hanging up. A `wait` whose client is gone ends there (unrecorded: it
//! changed nothing); any other request is carried out to the end, so the fleet and its trace
//! never see a half-done request. A connection's failure (garbage, a disconnect, even a panic)
//! ends that connection only.
//!
//! Stopping: a `shutdown` request, SIGINT or SIGTERM. Either way the daemon carries out
//! [`Request::ShutdownForExit`] through [`Fleet::handle`] (so a replay sees it): every VM
//! stopped and its final report collected, but no VM torn down one by one (the process's exit
//! does that, linearly; see [`crate::fleet::ShutdownMode::ProcessExit`]). Then it stops
//! accepting, removes its socket file, closes the trace, prints the final report and exits.
//! Exit status 0 after a clean shutdown, whatever the VMs did (the table shows their fate); 2 if
//! the daemon could not start or could not close its trace.

use crate::cli::ServeArgs;
use crate::common::{
    COMMAND_SERVE, DEFAULT_FLEET_NAME, close_trace, emit, runtime, say_where_the_trace_goes,
};
use crate::exit::{Status, StatusExt as _};
use crate::fleet::{ControlValue, Fleet, StartMode};
use crate::report::{self, JobReport};
use crate::socket::{self, Peer};
use crate::{host, spec};
use anyhow::{Context, Result, anyhow, bail};
use protocol::{Frame, MAX_REQUEST_BYTES, Request, Response, StatusView};
use recorder::{JobInputs, Output, RecordingHypervisor, TraceHeader, TraceOptions, TraceWriter};
use std::fs;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use vcpu::Hypervisor;
use vcpu::hypervisor::kvm::KvmHypervisor;

/// `vmfleet serve`.
pub fn serve(args: &ServeArgs) -> Result<Status> {
    let (source, text) = match &args.fleet {
        Some(path) => {
            let text = spec::read_spec_file(path)
                .with_context(|| format!("reading fleet spec {}", path.display()))
                .or_status(Status::BadInput)?;
            (path.display().to_string(), text)
        }
        None => (String::new(), String::new()),
    };
    let spec = match &args.fleet {
        Some(_) => Some(spec::parse(&text, &source).or_status(Status::BadInput)?),
        None => None,
    };
    // Before KVM: a socket that cannot be used safely is refused without touching anything else.
    let socket = match &args.socket {
        Some(path) => {
            socket::given_dir(path).map_err(|e| anyhow!(e))?;
            path.clone()
        }
        None => {
            let path = socket::default_path();
            socket::private_dir(socket::dir_of(&path)).map_err(|e| anyhow!(e))?;
            path
        }
    };
    // The trace's path, and the fleet's architecture, are refused before anything is created:
    // a refused daemon leaves the file it was pointed at untouched.
    if let Some(record) = &args.record {
        Output::check(record, args.force)
            .with_context(|| format!("cannot record to {}", record.display()))?;
    }
    let arch =
        vcpu::hypervisor::kvm::host_arch().context("this host architecture has no KVM backend")?;
    if let Some(spec) = &spec {
        crate::fleet::check_arch(spec.arch, arch)?;
    }
    let kvm = KvmHypervisor::open().or_status(Status::NoKvm)?;
    let header = TraceHeader::new(
        env!("CARGO_PKG_VERSION"),
        arch,
        host::fingerprint(&kvm),
        JobInputs {
            command: COMMAND_SERVE.into(),
            spec_source: source,
            spec_text: text,
        },
    );
    // A daemon runs for long: the trace writer does not keep events in memory.
    let writer = match &args.record {
        Some(path) => {
            let options = TraceOptions {
                keep_events: false,
                replace: args.force,
            };
            let (_, writer) = TraceWriter::create_with(path, &header, options)
                .with_context(|| format!("creating trace {}", path.display()))?;
            say_where_the_trace_goes(&writer);
            Some(writer)
        }
        None => None,
    };
    let hv: Arc<dyn Hypervisor> = match &writer {
        Some(writer) => Arc::new(RecordingHypervisor::new(
            Box::new(kvm),
            writer.recorder().clone(),
        )),
        None => Arc::new(kvm),
    };
    let runtime = runtime()?;
    let result = runtime.block_on(daemon(hv, spec, &socket, writer.as_ref()));
    // Connection tasks still running (a client mid-request) are cancelled; the fleet is gone.
    runtime.shutdown_timeout(Duration::from_secs(2));
    // Close the trace of a daemon that served; one that could not start (its socket taken, say)
    // leaves an existing trace as it was, and no partial file.
    if let Some(writer) = writer {
        match &result {
            Ok(_) => close_trace(writer)?,
            Err(_) => writer.discard(),
        }
    }
    let report = result?;
    emit(&report::table_colored(
        &report,
        crate::term::term().stdout_color,
    ))?;
    // A clean shutdown is a success whatever the VMs did: their failures were answered to the
    // requests that met them and are in the table. (Unlike `vmfleet run`, a daemon's VMs are
    // stopped at arbitrary moments, and one stopped before its guest finished a probe pass
    // reports failed checks.)
    Ok(Status::Success)
}

/// Why the daemon stops.
enum Stop {
    Signal(&'static str),
    /// A `shutdown` request was carried out; its report.
    Requested(Box<JobReport>),
}

async fn daemon(
    hv: Arc<dyn Hypervisor>,
    spec: Option<spec::FleetSpec>,
    socket: &Path,
    writer: Option<&TraceWriter>,
) -> Result<JobReport> {
    // Installed first, so a signal during start-up is seen once serving begins.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let listener = SocketFile::claim(socket)?;

    let name = spec
        .as_ref()
        .map_or(DEFAULT_FLEET_NAME, |s| s.name.as_str());
    if let Some(spec) = &spec {
        crate::fleet::check_arch(spec.arch, hv.arch())?;
    }
    let mut fleet = Fleet::new(hv, name).await?;
    if let Some(writer) = writer {
        fleet = fleet.with_control_log(writer.recorder().clone());
    }
    let fleet = Arc::new(fleet);
    if let Some(spec) = &spec {
        for result in fleet.create_all(spec.vms.clone()).await {
            if let Err(e) = result {
                tracing::warn!("{e}");
            }
        }
        fleet
            .start_all(StartMode::Running, |vm, result| {
                if let Err(e) = result {
                    tracing::warn!("starting {vm}: {e}");
                }
            })
            .await;
    }
    match &spec {
        Some(_) => eprintln!(
            "vmfleet: serving fleet {} ({} VM(s)) on {}",
            fleet.name(),
            fleet.list().len(),
            socket.display()
        ),
        None => eprintln!("vmfleet: serving an empty fleet on {}", socket.display()),
    }

    let (stop_tx, mut stop_rx) = mpsc::unbounded_channel::<Box<JobReport>>();
    let stop = loop {
        tokio::select! {
            accepted = listener.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let fleet = Arc::clone(&fleet);
                    let stop_tx = stop_tx.clone();
                    tokio::spawn(async move {
                        let Some(stream) = admit(stream).await else {
                            return;
                        };
                        if let Err(e) = connection(stream, fleet, &stop_tx).await {
                            tracing::debug!("control connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors, say: the daemon goes on, and tries again shortly.
                    tracing::warn!("accepting a control connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = sigint.recv() => break Stop::Signal("SIGINT"),
            _ = sigterm.recv() => break Stop::Signal("SIGTERM"),
            Some(report) = stop_rx.recv() => break Stop::Requested(report),
        }
    };
    // No new clients from here on.
    drop(listener);
    let report = match stop {
        Stop::Requested(report) => *report,
        Stop::Signal(name) => {
            eprintln!("vmfleet: {name}: stopping every VM");
            match fleet.handle(Request::ShutdownForExit).await {
                Ok(ControlValue::Shutdown(report)) => *report,
                Ok(other) => {
                    tracing::warn!("shutdown answered {}", other.summary());
                    fleet.report()
                }
                Err(e) => {
                    tracing::warn!("shutdown: {e}");
                    fleet.report()
                }
            }
        }
    };
    Ok(report)
}

/// Let in this user and root only. Anyone else gets one error line (if it can take it at once)
/// and the connection closed, and the daemon's log says who it was.
async fn admit(mut stream: UnixStream) -> Option<UnixStream> {
    let ours = socket::euid();
    let peer = match Peer::of(&stream) {
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!(
                "refused a control connection: cannot tell whose it is (SO_PEERCRED): {e}"
            );
            return None;
        }
    };
    if peer.trusted_by(ours) {
        return Some(stream);
    }
    let served = match ours {
        0 => "root".to_string(),
        _ => format!("uid {ours} and root"),
    };
    tracing::warn!(
        "refused a control connection from uid {} (pid {}): this daemon serves only {served}",
        peer.uid,
        peer.pid
    );
    let reply = Response::error(format!(
        "this vmfleet daemon serves only {served}, not uid {}; closing the connection",
        peer.uid
    ));
    // Bounded: a peer that does not read must not hold this task.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(reply.to_line().as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    None
}

/// Serve one client: answer each request line in order until it disconnects.
async fn connection(
    stream: UnixStream,
    fleet: Arc<Fleet>,
    stop: &mpsc::UnboundedSender<Box<JobReport>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let limit = MAX_REQUEST_BYTES as u64 + 1;
        let n = (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let response = match protocol::frame(&buf) {
            Frame::Line(line) => match Request::parse(line) {
                Ok(request) => {
                    let Some((response, stopped)) =
                        answer_while_connected(&fleet, request, &mut reader).await
                    else {
                        tracing::debug!("a client went away while its request was carried out");
                        return Ok(());
                    };
                    if let Some(report) = stopped {
                        // The daemon stops whether or not this client is still there to hear it.
                        let written = write.write_all(response.to_line().as_bytes()).await;
                        let _ = stop.send(report);
                        return written;
                    }
                    response
                }
                Err(e) => Response::error(e),
            },
            Frame::TooLong => {
                write
                    .write_all(protocol::too_long().to_line().as_bytes())
                    .await?;
                write.shutdown().await?;
                return Ok(());
            }
            Frame::Unterminated => {
                tracing::debug!("a client disconnected in the middle of a request");
                return Ok(());
            }
        };
        write.write_all(response.to_line().as_bytes()).await?;
    }
}

/// Carry out one request in a task of its own while watching the client: `None` when the client
/// of a `wait` hung up first: the `wait` ends there (it has changed nothing, and nobody is there
/// to tell). Any other request goes on to its end (and its record) whether the client stays.
async fn answer_while_connected(
    fleet: &Arc<Fleet>,
    request: Request,
    client: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
) -> Option<(Response, Option<Box<JobReport>>)> {
    let ends_with_client = matches!(request, Request::Wait { .. });
    let mut task = {
        let fleet = Arc::clone(fleet);
        tokio::spawn(async move { answer(&fleet, request).await })
    };
    // Once the client has sent more (pipelined requests), its next bytes are buffered and it
    // cannot be told apart from a live client until they are read: stop watching then.
    let mut watching = true;
    loop {
        tokio::select! {
            done = &mut task => {
                return match done {
                    Ok(answered) => Some(answered),
                    Err(e) => Some((Response::error(format!("the request failed: {e}")), None)),
                };
            }
            more = client.fill_buf(), if watching => match more {
                Ok([]) | Err(_) if ends_with_client => {
                    task.abort();
                    return None;
                }
                // Gone or not, the request is carried out; a `shutdown` still stops the daemon.
                Ok(_) | Err(_) => watching = false,
            },
        }
    }
}

/// Carry out one request: the reply, and the final report if it shut the fleet down.
async fn answer(fleet: &Fleet, request: Request) -> (Response, Option<Box<JobReport>>) {
    // The daemon exits once shut down: its VMs are left to the process's exit, not torn down one
    // by one (the trace records which of the two happened).
    let request = match request {
        Request::Shutdown => Request::ShutdownForExit,
        request => request,
    };
    let value = match fleet.handle(request).await {
        Ok(value) => value,
        Err(e) => return (Response::error(e.to_string()), None),
    };
    let response = match value {
        ControlValue::Created(models) => Response::from_result(&models),
        ControlValue::Status { vm, status, .. } => Response::from_result(&StatusView {
            vm,
            state: status.lifecycle.to_string(),
            phase: status.lifecycle.phase().to_string(),
            exit_reason: status.lifecycle.exit_reason().map(str::to_string),
            exits: status.exits,
        }),
        ControlValue::Listed(vms) => Response::from_result(&vms),
        ControlValue::Model(model) => Response::from_result(&model),
        ControlValue::Removed(report) => Response::from_result(&report),
        ControlValue::Stopped(_) => Response::from_result(&fleet.list()),
        ControlValue::Shutdown(report) => {
            return (Response::from_result(&report), Some(report));
        }
    };
    (response, None)
}

/// The daemon's listening socket and its file, removed when dropped (if it is still ours).
struct SocketFile {
    listener: tokio::net::UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we created.
    identity: (u64, u64),
}

impl SocketFile {
    /// Listen on `path` with mode 0600: refuse if a daemon answers there or the path is not a
    /// socket of ours; replace a stale socket file.
    fn claim(path: &Path) -> Result<SocketFile> {
        clear_stale(path)?;
        // Bind under a temporary name, restrict it, then give it its name with a hard link, which
        // fails instead of replacing a socket another daemon created meanwhile.
        let dir = socket::dir_of(path);
        let temp = dir.join(format!(".vmfleet-{}.sock", std::process::id()));
        let _ = fs::remove_file(&temp);
        let listener = std::os::unix::net::UnixListener::bind(&temp)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        let named = fs::set_permissions(&temp, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {} to mode 0600", temp.display()))
            .and_then(|()| {
                fs::hard_link(&temp, path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        anyhow!(
                            "another vmfleet daemon created {} while this one was starting",
                            path.display()
                        )
                    } else {
                        anyhow!("cannot create the socket file {}: {e}", path.display())
                    }
                })
            });
        let _ = fs::remove_file(&temp);
        named?;
        let meta = fs::symlink_metadata(path)
            .with_context(|| format!("reading the socket file {}", path.display()))?;
        let identity = (meta.dev(), meta.ino());
        let socket = |listener: std::os::unix::net::UnixListener| -> Result<SocketFile> {
            listener
                .set_nonblocking(true)
                .context("making the control socket non-blocking")?;
            Ok(SocketFile {
                listener: tokio::net::UnixListener::from_std(listener)
                    .context("registering the control socket")?,
                path: path.to_path_buf(),
                identity,
            })
        };
        match socket(listener) {
            Ok(socket) => Ok(socket),
            Err(e) => {
                let _ = fs::remove_file(path);
                Err(e)
            }
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Only our own file: never one a later daemon put there.
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.identity {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Make sure nothing is at `path`: nothing there, or a stale socket of ours (removed).
fn clear_stale(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => bail!("cannot check the socket path {}: {e}", path.display()),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; remove it or choose another --socket",
            path.display()
        );
    }
    let ours = socket::euid();
    if meta.uid() != ours {
        bail!(
            "refusing the socket {}: it belongs to uid {}, not to this user (uid {ours}); \
             choose another --socket",
            path.display(),
            meta.uid()
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!(
            "another vmfleet daemon is serving on {}; stop it with `vmfleet ctl --socket {} \
             shutdown` or choose another --socket",
            path.display(),
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!("removing the stale socket {}", path.display());
            fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))
        }
        Err(e) => bail!(
            "{} exists and cannot be checked for a live daemon: {e}",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmfleet-serve-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_socket_is_0600_refuses_a_second_daemon_and_is_removed() {
        let dir = scratch("claim");
        let path = dir.join("d.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let first = SocketFile::claim(&path).expect("claim a free path");
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let e = SocketFile::claim(&path)
                .err()
                .expect("a live daemon refuses");
            assert!(e.to_string().contains("another vmfleet daemon"), "{e}");
            assert!(path.exists(), "the refusal leaves the live socket alone");
            let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().collect();
            assert_eq!(leftovers.len(), 1, "no temporary socket left behind");
            drop(first);
            assert!(!path.exists(), "the socket file goes with its daemon");
        });
    }

    #[test]
    fn a_stale_socket_is_replaced_and_other_files_are_not() {
        let dir = scratch("stale");
        let path = dir.join("s.sock");
        // A socket file nobody listens on.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let socket = SocketFile::claim(&path).expect("a stale socket is replaced");
            drop(socket);
        });
        let file = dir.join("plain");
        fs::write(&file, "keep me").unwrap();
        let e = rt
            .block_on(async { SocketFile::claim(&file).err() })
            .expect("a plain file is refused");
        assert!(e.to_string().contains("is not a socket"), "{e}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "keep me");
        let e = rt
            .block_on(async { SocketFile::claim(&dir.join("no/such/dir/x.sock")).err() })
            .expect("a missing directory is an error");
        assert!(e.to_string().contains("cannot listen on"), "{e}");
    }

    #[test]
    fn a_socket_file_of_another_user_is_refused_by_name() {
        if socket::euid() != 0 {
            vcpu::skip::skipped(
                "a_socket_file_of_another_user_is_refused_by_name",
                "needs root",
            );
            return;
        }
        let dir = scratch("theirs");
        let path = dir.join("t.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let e = clear_stale(&path).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("belongs to uid 65534"),
            "{e}"
        );
        assert!(path.exists(), "their file is left alone");
    }
}
