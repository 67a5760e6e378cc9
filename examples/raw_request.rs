//! A client of `vmfleet serve`'s wire protocol in a few lines of std, for scripts and for reading:
//! sends each argument (or, without arguments, each line of stdin) as one request line and prints
//! each reply line as it came.
//!
//! ```sh
//! cargo run -p supervisor --example raw_request -- '{"op":"list"}'
//! echo '{"op":"model","vm":"api"}' | cargo run -p supervisor --example raw_request
//! VMFLEET_SOCKET=/tmp/other.sock cargo run -p supervisor --example raw_request -- '{"op":"list"}'
//! ```
//!
//! The socket is `$VMFLEET_SOCKET`, else the daemon's default (`$XDG_RUNTIME_DIR/vmfleet.sock`,
//! else `/tmp/vmfleet-<uid>.sock`). Exits 1 when a reply says `"ok":false`, 2 when the daemon
//! cannot be reached or the connection breaks.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let socket = match std::env::var_os("VMFLEET_SOCKET") {
        Some(path) => PathBuf::from(path),
        None => match supervisor::api::default_socket() {
            Ok(path) => path,
            Err(e) => {
                eprintln!("raw_request: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let requests: Vec<String> = if std::env::args().len() > 1 {
        std::env::args().skip(1).collect()
    } else {
        std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .collect()
    };
    match send(&socket, &requests) {
        Ok(all_ok) if all_ok => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("raw_request: {}: {e}", socket.display());
            ExitCode::from(2)
        }
    }
}

/// Send every request on one connection, print every reply; whether all replies were `ok`.
fn send(socket: &PathBuf, requests: &[String]) -> std::io::Result<bool> {
    let stream = UnixStream::connect(socket)?;
    let mut writer = stream.try_clone()?;
    let mut replies = BufReader::new(stream);
    let mut all_ok = true;
    for request in requests {
        writeln!(writer, "{}", request.trim())?;
        let mut reply = String::new();
        if replies.read_line(&mut reply)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the daemon closed the connection before replying to {request}"),
            ));
        }
        let ok = serde_json::from_str::<serde_json::Value>(&reply)
            .is_ok_and(|v| v.get("ok") == Some(&serde_json::Value::Bool(true)));
        all_ok &= ok;
        // A closed stdout (`| head`) ends the output, not in a panic.
        if writeln!(std::io::stdout(), "{}", reply.trim_end()).is_err() {
            break;
        }
    }
    Ok(all_ok)
}
