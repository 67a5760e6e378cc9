//! The guest's initramfs: a gzipped cpio (newc) archive written here with the `cpio` and `flate2`
//! crates (no root, no staging directory, byte-for-byte reproducible: every entry is owned by
//! root with mtime 0).
//!
//! ```text
//! /init                 the script below
//! /bin/busybox, /bin/sh busybox-static (the other applets are linked by `busybox --install -s`)
//! /bin/vmfleet          the static aarch64 vmfleet
//! /dev/console          so /init has a console before devtmpfs is mounted
//! /lab/in/NAME          the inputs, copied into /lab/work at boot
//! /lab/requests         a control session's request lines (only with a session)
//! /proc /sys /tmp /root mount points and HOME
//! ```

use super::console::{self, GUEST_FUNCTIONS, PREFIX};
use crate::e2e::shell_quote;
use anyhow::{Context, Result, bail};
use flate2::Compression;
use flate2::write::GzEncoder;
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// What goes into the archive.
pub struct Contents<'a> {
    pub path: &'a Path,
    pub busybox: &'a Path,
    pub vmfleet: &'a Path,
    pub inputs: &'a [std::path::PathBuf],
    pub args: &'a [String],
    pub timeout: Duration,
    /// A control session's request lines: `vmfleet ctl send` sends them to the socket
    /// [`super::SESSION_SOCKET`] of the vmfleet that `args` runs (`serve ... --socket` it).
    pub session: Option<&'a [String]>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

enum Entry {
    Dir,
    File { mode: u32, data: Vec<u8> },
    Symlink(&'static str),
    CharDevice { major: u32, minor: u32 },
}

/// The `/init` section of a control session: once the daemon's socket exists (while the daemon
/// lives, for at most a minute), `vmfleet ctl send` sends /lab/requests on one connection, one
/// line after the other, each waiting for its reply; the replies and its stderr come back as the
/// `lab` files `replies` and `ctl-stderr`, its exit status on a `session` line. A session that
/// did not end the daemon (no `shutdown` among the requests) has it sent SIGTERM after 10 s (a
/// clean shutdown too), rather than wait for the watchdog. (`alive`: `kill -0` would also
/// succeed on the daemon's zombie, which nothing reaps before `wait`.)
fn session_section() -> String {
    let socket = shell_quote(super::SESSION_SOCKET);
    format!(
        r#"alive() {{ [ -e /proc/$1/status ] && ! grep -q '^State:.*Z' /proc/$1/status; }}
pause() {{ sleep 0.1 2>/dev/null || sleep 1; }}
n=0
while [ ! -S {socket} ] && alive $pid && [ $n -lt 600 ]; do pause; n=$((n + 1)); done
vmfleet ctl --socket {socket} send </lab/requests >/lab/replies 2>/lab/ctl-stderr
echo "{PREFIX}session $?"
n=0
while [ -S {socket} ] && alive $pid && [ $n -lt 100 ]; do pause; n=$((n + 1)); done
if [ -S {socket} ] && alive $pid; then kill -TERM $pid; fi
"#
    )
}

/// The `/init` script: mount, run vmfleet in /lab/work with a watchdog (with `session`, drive it
/// with the control requests, see [`session_section`]), send back its output, status and files
/// (see `console` for the framing), power off.
pub fn init_script(args: &[String], timeout: Duration, session: bool) -> String {
    let command = args
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let secs = timeout.as_secs().max(1);
    format!(
        r#"#!/bin/sh
# /init of the vmfleet arm64 lab, written by `cargo xtask arm64-lab`.
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root RUST_BACKTRACE=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Keep kernel messages off the console while the results are framed on it (they are in dmesg.log).
dmesg -n 1
{functions}{begin}mkdir -p /lab/work/out
cp -a /lab/in/. /lab/work/
cd /lab/work
t0=$(up)
vmfleet {command} </dev/null >/lab/stdout 2>/lab/stderr &
pid=$!
( sleep {secs} && : > /lab/timed-out && kill -TERM $pid && sleep 10 && kill -KILL $pid ) 2>/dev/null &
watchdog=$!
{session}wait $pid
status=$?
t1=$(up)
kill $watchdog 2>/dev/null
if [ -e /lab/timed-out ]; then echo "{PREFIX}timeout {secs}"; fi
echo "{PREFIX}status $status $t0 $t1"
emit lab stdout /lab/stdout
emit lab stderr /lab/stderr
{session_files}find . -type f | sort > /lab/list
while IFS= read -r f; do
    name=${{f#./}}
    if [ -f "/lab/in/$name" ] && cmp -s "/lab/in/$name" "$f"; then continue; fi
    emit out "$name" "$f"
done < /lab/list
dmesg > /lab/dmesg
emit lab dmesg /lab/dmesg
echo "{PREFIX}done $sent"
# Let the UART send what is still queued before the power goes: busybox stty sets the line
# with TCSADRAIN, which waits until the output has drained. (The host notices a lost tail anyway:
# no `done`, or a frame cut short.)
stty -F /dev/console -echo 2>/dev/null
poweroff -f
"#,
        functions = GUEST_FUNCTIONS,
        begin = console::guest_begin(),
        session = if session {
            session_section()
        } else {
            String::new()
        },
        session_files = if session {
            "emit lab replies /lab/replies\nemit lab ctl-stderr /lab/ctl-stderr\n"
        } else {
            ""
        },
    )
}

/// Write the gzipped initramfs.
pub fn write(contents: &Contents) -> Result<()> {
    let mut entries: Vec<(String, Entry)> = Vec::new();
    for dir in ["bin", "dev", "proc", "sys", "tmp", "root", "lab", "lab/in"] {
        entries.push((dir.into(), Entry::Dir));
    }
    entries.push((
        "dev/console".into(),
        Entry::CharDevice { major: 5, minor: 1 },
    ));
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    entries.push((
        "bin/busybox".into(),
        Entry::File {
            mode: 0o755,
            data: read(contents.busybox)?,
        },
    ));
    entries.push(("bin/sh".into(), Entry::Symlink("busybox")));
    entries.push((
        "bin/vmfleet".into(),
        Entry::File {
            mode: 0o755,
            data: read(contents.vmfleet)?,
        },
    ));
    let mut names = BTreeSet::new();
    for input in contents.inputs {
        let name = input
            .file_name()
            .with_context(|| format!("input {} has no file name", input.display()))?
            .to_str()
            .with_context(|| format!("input {} is not UTF-8", input.display()))?
            .to_string();
        if name == "out" || !names.insert(name.clone()) {
            bail!(
                "two inputs are named `{name}` (or one is named `out`): the guest's working \
                 directory holds them by file name"
            );
        }
        entries.push((
            format!("lab/in/{name}"),
            Entry::File {
                mode: 0o644,
                data: read(input)?,
            },
        ));
    }
    if let Some(requests) = contents.session {
        let mut text = String::new();
        for line in requests {
            if line.contains('\n') {
                bail!("a control request must be one line: {line:?}");
            }
            text.push_str(line);
            text.push('\n');
        }
        entries.push((
            "lab/requests".into(),
            Entry::File {
                mode: 0o644,
                data: text.into_bytes(),
            },
        ));
    }
    entries.push((
        "init".into(),
        Entry::File {
            mode: 0o755,
            data: init_script(contents.args, contents.timeout, contents.session.is_some())
                .into_bytes(),
        },
    ));

    let file = fs::File::create(contents.path)
        .with_context(|| format!("creating {}", contents.path.display()))?;
    let mut gz = GzEncoder::new(std::io::BufWriter::new(file), Compression::fast());
    for (ino, (name, entry)) in entries.into_iter().enumerate() {
        let (mode, data, rdev) = match entry {
            Entry::Dir => (S_IFDIR | 0o755, Vec::new(), None),
            Entry::File { mode, data } => (S_IFREG | mode, data, None),
            Entry::Symlink(target) => (S_IFLNK | 0o777, target.as_bytes().to_vec(), None),
            Entry::CharDevice { major, minor } => {
                (S_IFCHR | 0o600, Vec::new(), Some((major, minor)))
            }
        };
        let size = u32::try_from(data.len())
            .with_context(|| format!("{name} is too big for a cpio archive"))?;
        let mut builder = cpio::newc::Builder::new(&name)
            .ino(ino as u32 + 1)
            .mode(mode)
            .uid(0)
            .gid(0)
            .nlink(if mode & S_IFDIR != 0 { 2 } else { 1 })
            .mtime(0);
        if let Some((major, minor)) = rdev {
            builder = builder.rdev_major(major).rdev_minor(minor);
        }
        let mut writer = builder.write(&mut gz, size);
        writer.write_all(&data)?;
        writer.finish()?;
    }
    cpio::newc::trailer(&mut gz)?;
    gz.finish()?.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_quoted() {
        let script = init_script(
            &[
                "run".into(),
                "it's.toml".into(),
                "--record".into(),
                "out/t.vmft".into(),
            ],
            Duration::from_secs(60),
            false,
        );
        assert!(
            script.contains("vmfleet 'run' 'it'\\''s.toml' '--record' 'out/t.vmft' </dev/null")
        );
        assert!(script.contains("sleep 60 &&"));
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(!script.contains("ctl"));
    }

    #[test]
    fn a_session_sends_the_requests_once_the_socket_is_there() {
        let script = init_script(&["serve".into()], Duration::from_secs(60), true);
        let socket = script.find("[ ! -S '/lab/serve.sock' ]").unwrap();
        let send = script
            .find("vmfleet ctl --socket '/lab/serve.sock' send </lab/requests")
            .unwrap();
        let wait = script.find("wait $pid").unwrap();
        assert!(socket < send && send < wait, "{script}");
        assert!(script.contains("session $?"));
        assert!(
            script.contains("kill -TERM $pid; fi\nwait $pid"),
            "{script}"
        );
        assert!(script.contains("emit lab replies /lab/replies"));
    }

    #[test]
    fn the_archive_is_reproducible_and_readable() {
        let dir = std::env::temp_dir().join(format!("xtask-initramfs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (bb, vm, input) = (
            dir.join("busybox"),
            dir.join("vmfleet"),
            dir.join("spec.toml"),
        );
        fs::write(&bb, b"bb").unwrap();
        fs::write(&vm, b"vm").unwrap();
        fs::write(&input, b"name = \"x\"\n").unwrap();
        let archive = |path: &Path| {
            write(&Contents {
                path,
                busybox: &bb,
                vmfleet: &vm,
                inputs: std::slice::from_ref(&input),
                args: &["host".into()],
                timeout: Duration::from_secs(5),
                session: Some(&[r#"{"op":"list"}"#.to_string()]),
            })
            .unwrap();
            fs::read(path).unwrap()
        };
        let a = archive(&dir.join("a.cpio.gz"));
        let b = archive(&dir.join("b.cpio.gz"));
        assert_eq!(a, b);
        let mut cpio = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(a.as_slice()), &mut cpio)
            .unwrap();
        let mut names = Vec::new();
        let mut rest: &[u8] = &cpio;
        loop {
            let reader = cpio::NewcReader::new(rest).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            names.push(reader.entry().name().to_string());
            rest = reader.finish().unwrap();
        }
        assert!(names.contains(&"init".to_string()));
        assert!(names.contains(&"dev/console".to_string()));
        assert!(names.contains(&"lab/in/spec.toml".to_string()));
        assert!(names.contains(&"lab/requests".to_string()));
        fs::remove_dir_all(&dir).ok();
    }
}
