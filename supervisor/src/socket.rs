//! Where `vmfleet serve`'s control socket lives, and who may use it: shared by the daemon
//! ([`crate::serve`]) and its client ([`crate::ctl`]).
//!
//! Whoever controls the socket controls the fleet, and whoever answers on it is believed by
//! `ctl`. So the default socket lives in a directory only its user can enter, which vmfleet
//! creates itself and refuses to use when it is anything else (another user's, reachable by
//! others, a symbolic link): a predictable name in a shared directory could be taken first by
//! another local user. Both ends of every connection then check the other's credentials
//! (`SO_PEERCRED`, which the kernel fills in, so a peer cannot lie about them): the daemon
//! serves only its own user and root, and `ctl` talks only to a daemon of its own user or root.

use std::ffi::OsString;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The default socket's file name inside its directory.
pub const SOCKET_NAME: &str = "vmfleet.sock";

/// The effective user id of this process: the owner of the files it creates, and what its
/// peers see through `SO_PEERCRED`.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Where the daemon listens unless told otherwise (`vmfleet serve` creates the directory):
/// `$XDG_RUNTIME_DIR/vmfleet/vmfleet.sock` when that is set, else `/run/vmfleet/vmfleet.sock`
/// for root and `/tmp/vmfleet-<uid>/vmfleet.sock` for anyone else.
pub fn default_path() -> PathBuf {
    default_path_for(std::env::var_os("XDG_RUNTIME_DIR"), euid())
}

/// [`default_path`] for a given `XDG_RUNTIME_DIR` and user.
pub fn default_path_for(xdg_runtime_dir: Option<OsString>, uid: u32) -> PathBuf {
    let dir = match xdg_runtime_dir.filter(|d| !d.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("vmfleet"),
        None if uid == 0 => PathBuf::from("/run/vmfleet"),
        None => PathBuf::from(format!("/tmp/vmfleet-{uid}")),
    };
    dir.join(SOCKET_NAME)
}

/// The directory a socket path is in (`.` for a bare file name).
pub fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Create the default socket's directory with mode 0700 if it is missing, and make sure it is
/// private: a real directory (a symbolic link is not followed), owned by this user, that
/// group and others cannot enter. Anything else is refused, as tmux does, rather than repaired:
/// it may be another user's trap.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            // The umask may have taken bits away, never added any; 0700 exactly is wanted.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
                format!(
                    "cannot set the socket directory {} to mode 0700: {e}",
                    dir.display()
                )
            })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(format!(
                "cannot create the socket directory {}: {e}; pass --socket PATH or set \
                 XDG_RUNTIME_DIR",
                dir.display()
            ));
        }
    }
    // `symlink_metadata`: the directory itself, never where a link points.
    let meta = fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot check the socket directory {}: {e}", dir.display()))?;
    let refuse = |why: String| {
        Err(format!(
            "refusing the socket directory {}: {why}; remove it (another user may have put it \
             there) or pass --socket PATH",
            dir.display()
        ))
    };
    if meta.file_type().is_symlink() {
        return refuse("it is a symbolic link, which vmfleet does not follow".into());
    }
    if !meta.is_dir() {
        return refuse("it is not a directory".into());
    }
    let ours = euid();
    if meta.uid() != ours {
        return refuse(format!(
            "it belongs to uid {}, not to this user (uid {ours})",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        // Ours, so nobody else's trap; but whoever could enter it may have left something there.
        return Err(format!(
            "refusing the socket directory {}: its mode is {mode:04o}, so group or others can \
             reach it; it must be 0700 (`chmod 700 {}`) or pass --socket PATH",
            dir.display(),
            dir.display()
        ));
    }
    Ok(())
}

/// Make sure the directory of a socket path given with `--socket` cannot be used by another
/// user to replace or take over the socket: it must belong to this user, or be a root-owned
/// sticky directory such as /tmp (where nobody else can rename or remove our file).
pub fn given_dir(path: &Path) -> Result<(), String> {
    let dir = dir_of(path);
    // The user chose this path: links on the way to it are theirs to follow.
    let meta = fs::metadata(dir).map_err(|e| {
        format!(
            "cannot use the socket path {}: its directory {}: {e}",
            path.display(),
            dir.display()
        )
    })?;
    if !meta.is_dir() {
        return Err(format!(
            "cannot use the socket path {}: {} is not a directory",
            path.display(),
            dir.display()
        ));
    }
    let ours = euid();
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.uid() == ours || (meta.uid() == 0 && sticky) {
        return Ok(());
    }
    Err(format!(
        "refusing the socket path {}: its directory {} belongs to uid {}, not to this user (uid \
         {ours}), so that user could replace the socket; choose a directory of yours",
        path.display(),
        dir.display(),
        meta.uid()
    ))
}

/// The kernel's record of who is at the other end of a connected Unix socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its user id: each end trusts only its own user and root.
    pub uid: u32,
    /// Its process id, for the log.
    pub pid: i32,
}

impl Peer {
    /// The credentials of the process at the other end of `socket` (`SO_PEERCRED`: those it had
    /// when it connected or started listening).
    pub fn of(socket: impl AsFd) -> std::io::Result<Peer> {
        let cred = rustix::net::sockopt::socket_peercred(socket)?;
        Ok(Peer {
            uid: cred.uid.as_raw(),
            pid: cred.pid.as_raw_nonzero().get(),
        })
    }

    /// Whether a process of user `ours` may trust this peer: the same user, or root (who can
    /// reach everything anyway).
    pub fn trusted_by(self, ours: u32) -> bool {
        self.uid == ours || self.uid == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vmfleet-socket-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_default_path_is_per_user_and_in_a_directory_of_its_own() {
        assert_eq!(
            default_path_for(Some("/run/user/1000".into()), 1000),
            Path::new("/run/user/1000/vmfleet/vmfleet.sock")
        );
        assert_eq!(
            default_path_for(Some("".into()), 1000),
            Path::new("/tmp/vmfleet-1000/vmfleet.sock")
        );
        assert_eq!(
            default_path_for(None, 1000),
            Path::new("/tmp/vmfleet-1000/vmfleet.sock")
        );
        assert_eq!(
            default_path_for(None, 0),
            Path::new("/run/vmfleet/vmfleet.sock")
        );
        assert_eq!(
            default_path_for(Some("/run/user/0".into()), 0),
            Path::new("/run/user/0/vmfleet/vmfleet.sock")
        );
        assert_eq!(dir_of(Path::new("x.sock")), Path::new("."));
        assert_eq!(dir_of(Path::new("/a/x.sock")), Path::new("/a"));
    }

    #[test]
    fn a_private_dir_is_created_0700_and_anything_else_is_refused() {
        let root = scratch("private");
        let dir = root.join("vmfleet");
        private_dir(&dir).expect("a missing directory is created");
        let meta = fs::symlink_metadata(&dir).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, 0o700);
        private_dir(&dir).expect("our own 0700 directory is reused");

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let e = private_dir(&dir).unwrap_err();
        assert!(
            e.contains("0755") && e.contains(&dir.display().to_string()),
            "{e}"
        );

        let link = root.join("link");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        symlink(&dir, &link).unwrap();
        let e = private_dir(&link).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");

        let file = root.join("file");
        fs::write(&file, "").unwrap();
        let e = private_dir(&file).unwrap_err();
        assert!(e.contains("not a directory"), "{e}");

        let e = private_dir(&root.join("no/such/parent")).unwrap_err();
        assert!(e.contains("cannot create"), "{e}");

        // Another user's directory (only root can make one to test with).
        if euid() == 0 {
            let theirs = root.join("theirs");
            fs::DirBuilder::new().mode(0o700).create(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let e = private_dir(&theirs).unwrap_err();
            assert!(e.contains("belongs to uid 65534"), "{e}");
            let e = given_dir(&theirs.join("x.sock")).unwrap_err();
            assert!(e.contains("belongs to uid 65534"), "{e}");
        }
    }

    #[test]
    fn a_given_socket_needs_a_directory_of_ours_or_a_sticky_one_of_root() {
        let root = scratch("given");
        given_dir(&root.join("x.sock")).expect("our own directory");
        let e = given_dir(&root.join("missing/x.sock")).unwrap_err();
        assert!(e.contains("missing"), "{e}");
        // /tmp: root's, sticky.
        given_dir(Path::new("/tmp/x.sock")).expect("a sticky directory of root");
    }

    #[test]
    fn peers_are_trusted_when_they_are_the_same_user_or_root() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let peer = Peer::of(&a).unwrap();
        assert_eq!(peer.uid, euid());
        assert_eq!(peer.pid, std::process::id() as i32);
        assert_eq!(Peer::of(&b).unwrap(), peer);
        assert!(peer.trusted_by(euid()));
        let other = Peer { uid: 4242, pid: 1 };
        assert!(!other.trusted_by(1000));
        assert!(other.trusted_by(4242));
        assert!(Peer { uid: 0, pid: 1 }.trusted_by(1000));
    }
}
