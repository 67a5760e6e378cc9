//! How results come back from the guest: framed base64 on the serial console. Both ends live
//! here: [`GUEST_FUNCTIONS`] is the shell the guest's `/init` uses to send, [`decode`] reads it
//! back on the host.
//!
//! The console carries the kernel's and the guest's text too, so every line of the protocol
//! starts with [`PREFIX`], and everything else is ignored:
//!
//! ```text
//! @@vmfleet-lab begin 1 UPTIME                 /init started (protocol version 1)
//! @@vmfleet-lab kernel RELEASE                 uname -r
//! @@vmfleet-lab timeout SECS                   vmfleet ran out of time and was stopped
//! @@vmfleet-lab session CODE                   a control session's `vmfleet ctl send` exit status
//! @@vmfleet-lab status CODE UPTIME0 UPTIME1    vmfleet's exit status, and when it ran
//! @@vmfleet-lab file KIND SIZE SHA256 NAME     KIND: `lab` (stdout, stderr, dmesg,
//!                                              replies, ctl-stderr) or `out`
//! <base64 lines>
//! @@vmfleet-lab end
//! @@vmfleet-lab error MESSAGE                  the guest could not do something
//! @@vmfleet-lab done COUNT                     COUNT file frames were sent; nothing follows
//! ```
//!
//! Each file is checked against its size and SHA-256. A frame without its `end`, a missing
//! `done`, a count that does not match, a size or digest that does not match: all are errors
//! that say which file and what was wrong. Lines inside a frame that are not base64 (a kernel
//! message that slipped in despite `dmesg -n 1`) are skipped; the digest says whether anything
//! was lost.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

pub const PREFIX: &str = "@@vmfleet-lab ";
const VERSION: &str = "1";

/// Results-directory names the lab writes itself; the guest's files may not use them.
pub const CONSOLE: &str = "console.log";
pub const INITRAMFS: &str = "initramfs.cpio.gz";
pub const MARKER: &str = ".arm64-lab";
pub const STATUS: &str = "vmfleet.status";
/// The `lab` files and where they go.
const LAB_FILES: &[(&str, &str)] = &[
    ("stdout", "vmfleet.stdout"),
    ("stderr", "vmfleet.stderr"),
    ("dmesg", "dmesg.log"),
    ("replies", "ctl.replies"),
    ("ctl-stderr", "ctl.stderr"),
];

/// Shell functions for the guest's `/init` (busybox ash): `up` (uptime in seconds),
/// `emit KIND NAME PATH` (one file frame), `fail MESSAGE`. `$sent` counts the frames.
pub const GUEST_FUNCTIONS: &str = r#"sent=0
up() { read -r u _ < /proc/uptime; echo "$u"; }
fail() { echo "@@vmfleet-lab error $*"; }
emit() {
    if [ ! -f "$3" ]; then fail "cannot send $2: not a regular file"; return; fi
    size=$(stat -c %s "$3")
    sum=$(sha256sum "$3")
    echo "@@vmfleet-lab file $1 $size ${sum%% *} $2"
    base64 "$3"
    echo "@@vmfleet-lab end"
    sent=$((sent + 1))
}
"#;

/// The guest's lines that frame its results, for the `/init` script.
pub fn guest_begin() -> String {
    format!("echo \"{PREFIX}begin {VERSION} $(up)\"\necho \"{PREFIX}kernel $(uname -r)\"\n")
}

/// What vmfleet's run came to.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub code: i32,
    pub timed_out: bool,
    /// Guest uptime when vmfleet started and ended.
    pub started: Duration,
    pub ended: Duration,
}

/// One file sent by the guest.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// `lab` or `out`.
    pub kind: String,
    pub name: String,
    pub data: Vec<u8>,
}

/// Everything the guest sent.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub kernel_release: String,
    pub status: Status,
    pub frames: Vec<Frame>,
    /// Non-base64 lines skipped inside frames.
    pub skipped: usize,
    /// A control session's `vmfleet ctl send` exit status (`None`: no session).
    pub session: Option<i32>,
}

impl Decoded {
    /// A `lab` file's bytes (empty if it was not sent).
    pub fn lab_file(&self, name: &str) -> &[u8] {
        self.frames
            .iter()
            .find(|f| f.kind == "lab" && f.name == name)
            .map_or(&[], |f| f.data.as_slice())
    }

    /// Write the files into `out`: the `lab` ones under their results names, the `out` ones under
    /// their relative paths; plus `vmfleet.status`. Returns the `out` files written.
    pub fn write_into(&self, out: &Path) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        for frame in &self.frames {
            let path = match frame.kind.as_str() {
                "lab" => match LAB_FILES.iter().find(|(n, _)| *n == frame.name) {
                    Some((_, file)) => out.join(file),
                    None => bail!("the guest sent an unknown lab file `{}`", frame.name),
                },
                _ => {
                    let path = out.join(safe_relative(&frame.name)?);
                    written.push(path.clone());
                    path
                }
            };
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            fs::write(&path, &frame.data).with_context(|| format!("writing {}", path.display()))?;
        }
        fs::write(out.join(STATUS), format!("{}\n", self.status.code))?;
        Ok(written)
    }
}

/// A guest file name as a path under the results directory: relative, no `..`, and not one of
/// the names the lab writes itself.
fn safe_relative(name: &str) -> Result<PathBuf> {
    let path = PathBuf::from(name);
    let normal = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if name.is_empty() || !normal {
        bail!("the guest sent a file named `{name}`, which is not a plain relative path");
    }
    let reserved: Vec<&str> = [CONSOLE, INITRAMFS, MARKER, STATUS]
        .into_iter()
        .chain(LAB_FILES.iter().map(|(_, f)| *f))
        .collect();
    if reserved.contains(&name) {
        bail!(
            "vmfleet wrote `{name}` in its working directory, a name the lab's results use \
             themselves ({}); write it under another name",
            reserved.join(", ")
        );
    }
    Ok(path)
}

fn seconds(text: &str) -> Option<Duration> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

fn is_base64_line(line: &str) -> bool {
    !line.is_empty()
        && line
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
}

/// An open frame: its header and the base64 text so far.
struct Open {
    kind: String,
    size: usize,
    sha256: String,
    name: String,
    text: String,
}

impl Open {
    fn close(self) -> Result<Frame> {
        let data = base64::engine::general_purpose::STANDARD
            .decode(self.text.as_bytes())
            .with_context(|| format!("{}: the base64 text does not decode", self.name))?;
        let digest = hex(&Sha256::digest(&data));
        if data.len() != self.size || digest != self.sha256 {
            bail!(
                "{}: the guest sent {} bytes with SHA-256 {}, but {} bytes with SHA-256 {} arrived \
                 (the console lost or garbled data)",
                self.name,
                self.size,
                self.sha256,
                data.len(),
                digest
            );
        }
        Ok(Frame {
            kind: self.kind,
            name: self.name,
            data,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Read the guest's results off the console.
pub fn decode(console: &[u8]) -> Result<Decoded> {
    let text = String::from_utf8_lossy(console);
    let mut begun = false;
    let mut kernel_release = None;
    let mut status = None;
    let mut timed_out = false;
    let mut frames = Vec::new();
    let mut errors = Vec::new();
    let mut open: Option<Open> = None;
    let mut skipped = 0;
    let mut done = None;
    let mut session = None;
    for raw in text.split('\n') {
        let line = raw.trim_end_matches('\r');
        let Some(rest) = line.strip_prefix(PREFIX) else {
            if let Some(frame) = open.as_mut() {
                if is_base64_line(line) {
                    frame.text.push_str(line);
                } else if !line.is_empty() {
                    skipped += 1;
                }
            }
            continue;
        };
        let (word, args) = rest.split_once(' ').unwrap_or((rest, ""));
        if open.is_some() && word != "end" {
            let name = open.as_ref().map(|o| o.name.clone()).unwrap_or_default();
            bail!("{name}: its frame has no `end` before `{PREFIX}{word}` (the console lost data)");
        }
        match word {
            "begin" => {
                let version = args.split(' ').next().unwrap_or("");
                if version != VERSION {
                    bail!("the guest speaks lab protocol {version}, this xtask {VERSION}");
                }
                begun = true;
            }
            "kernel" => kernel_release = Some(args.to_string()),
            "timeout" => timed_out = true,
            "session" => {
                session = Some(
                    args.parse::<i32>()
                        .with_context(|| format!("a garbled session line: `{line}`"))?,
                );
            }
            "status" => {
                let mut w = args.split(' ');
                let (code, t0, t1) = (w.next(), w.next(), w.next());
                let parsed = (|| {
                    Some(Status {
                        code: code?.parse().ok()?,
                        timed_out,
                        started: seconds(t0?)?,
                        ended: seconds(t1?)?,
                    })
                })();
                status = Some(parsed.with_context(|| format!("a garbled status line: `{line}`"))?);
            }
            "file" => {
                let mut w = args.splitn(4, ' ');
                let (kind, size, sha, name) = (w.next(), w.next(), w.next(), w.next());
                let (Some(kind), Some(size), Some(sha), Some(name)) = (kind, size, sha, name)
                else {
                    bail!("a garbled file header: `{line}`");
                };
                open = Some(Open {
                    kind: kind.to_string(),
                    size: size
                        .parse()
                        .with_context(|| format!("a garbled file header: `{line}`"))?,
                    sha256: sha.to_string(),
                    name: name.to_string(),
                    text: String::new(),
                });
            }
            "end" => {
                let frame = open.take().context("an `end` without a file header")?;
                frames.push(frame.close()?);
            }
            "error" => errors.push(args.to_string()),
            "done" => {
                done = Some(
                    args.parse::<usize>()
                        .with_context(|| format!("a garbled done line: `{line}`"))?,
                );
                break;
            }
            _ => bail!("an unknown lab line: `{line}`"),
        }
    }
    if !begun {
        bail!(
            "the guest's /init never started (no `{PREFIX}begin` on the console): the kernel did \
             not boot or found no initramfs; see the end of the console log"
        );
    }
    if let Some(frame) = open {
        bail!(
            "{}: the console ends inside its frame ({} of {} base64 characters' worth arrived): \
             the guest stopped while sending",
            frame.name,
            frame.text.len(),
            frame.size.div_ceil(3) * 4
        );
    }
    if !errors.is_empty() {
        bail!("the guest reported: {}", errors.join("; "));
    }
    let Some(done) = done else {
        bail!(
            "the guest never said `{PREFIX}done` after {} file(s): it stopped (or was stopped) \
             before it had sent everything",
            frames.len()
        );
    };
    if done != frames.len() {
        bail!(
            "the guest sent {done} file(s) but {} arrived whole",
            frames.len()
        );
    }
    let status = status.context("the guest sent no vmfleet status")?;
    Ok(Decoded {
        kernel_release: kernel_release.unwrap_or_else(|| "unknown".into()),
        status,
        frames,
        skipped,
        session,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the guest's `emit` prints for `data`, with the console's CR LF line ends.
    fn frame(kind: &str, name: &str, data: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        let mut lines = String::new();
        for chunk in b64.as_bytes().chunks(76) {
            lines += std::str::from_utf8(chunk).unwrap();
            lines += "\r\n";
        }
        format!(
            "{PREFIX}file {kind} {} {} {name}\r\n{lines}{PREFIX}end\r\n",
            data.len(),
            hex(&Sha256::digest(data))
        )
    }

    fn console(frames: &[String], done: usize) -> String {
        format!(
            "[    0.000000] Booting Linux\r\n{PREFIX}begin 1 2.50\r\n{PREFIX}kernel 6.12.43+deb12-arm64\r\n\
             {PREFIX}status 0 2.60 3.10\r\n{}{PREFIX}done {done}\r\n[   4.0] reboot: Power down\r\n",
            frames.concat()
        )
    }

    fn binary(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 253) as u8).collect()
    }

    #[test]
    fn files_come_back_byte_exact() {
        let trace = binary(300_000);
        let text = console(
            &[
                frame("lab", "stdout", b"kernel: 6.12\n"),
                frame("out", "out/arm.trace", &trace),
                frame("out", "empty", b""),
            ],
            3,
        );
        let decoded = decode(text.as_bytes()).unwrap();
        assert_eq!(decoded.kernel_release, "6.12.43+deb12-arm64");
        assert_eq!(decoded.status.code, 0);
        assert_eq!(decoded.status.started, Duration::from_secs_f64(2.6));
        assert_eq!(decoded.lab_file("stdout"), b"kernel: 6.12\n");
        assert_eq!(decoded.frames[1].data, trace);
        assert!(decoded.frames[2].data.is_empty());
    }

    #[test]
    fn a_session_line_and_its_files_come_back() {
        let text = console(
            &[
                format!("{PREFIX}session 7\r\n"),
                frame("lab", "replies", b"{\"ok\":true}\n{\"ok\":false}\n"),
                frame("lab", "ctl-stderr", b""),
            ],
            2,
        );
        let decoded = decode(text.as_bytes()).unwrap();
        assert_eq!(decoded.session, Some(7));
        assert_eq!(
            decoded.lab_file("replies"),
            b"{\"ok\":true}\n{\"ok\":false}\n"
        );
        let plain = decode(console(&[], 0).as_bytes()).unwrap();
        assert_eq!(plain.session, None);
        let garbled = console(&[format!("{PREFIX}session x\r\n")], 0);
        assert!(decode(garbled.as_bytes()).is_err());
    }

    #[test]
    fn a_stray_kernel_line_is_skipped() {
        let data = binary(1000);
        let mut f = frame("out", "t", &data);
        let at = f.find("\r\n").unwrap() + 2;
        f.insert_str(at, "[   3.2] kvm [1]: something\r\n");
        let decoded = decode(console(&[f], 1).as_bytes()).unwrap();
        assert_eq!(decoded.frames[0].data, data);
        assert_eq!(decoded.skipped, 1);
    }

    #[test]
    fn a_flipped_byte_is_caught() {
        let f = frame("out", "t", &binary(1000));
        let at = f.find("\r\n").unwrap() + 10;
        let mut bytes = f.into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let err = decode(console(&[String::from_utf8(bytes).unwrap()], 1).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("SHA-256"), "{err}");
    }

    #[test]
    fn truncation_is_caught_everywhere() {
        let text = console(&[frame("out", "t", &binary(5000))], 1);
        let full = decode(text.as_bytes()).unwrap();
        assert_eq!(full.frames.len(), 1);
        let done_at = text.find(&format!("{PREFIX}done")).unwrap();
        // Cut anywhere before the end of the done line: always an error.
        for cut in (0..done_at + PREFIX.len() + 6).step_by(37) {
            assert!(decode(&text.as_bytes()[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_lost_frame_is_caught() {
        let err = decode(console(&[frame("out", "a", b"x")], 2).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("sent 2"), "{err}");
    }

    #[test]
    fn guest_errors_and_bad_names_fail() {
        let text = console(&[format!("{PREFIX}error cannot send x\r\n")], 0);
        assert!(decode(text.as_bytes()).is_err());
        for bad in ["../x", "/etc/passwd", "console.log", "vmfleet.stdout", ""] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
        assert!(safe_relative("out/trace.vmft").is_ok());
    }

    #[test]
    fn no_begin_means_no_init() {
        let err = decode(b"[ 0.0] Kernel panic - not syncing\r\n").unwrap_err();
        assert!(err.to_string().contains("never started"), "{err}");
    }
}
