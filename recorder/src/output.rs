//! Files written at a path the user named (traces, transcripts), written so that nothing the user
//! already has is harmed.
//!
//! - An existing file is never overwritten unless the caller asked to replace it (`--force`), and
//!   the refusal comes from [`Output::check`], before any work is done.
//! - A symbolic link is never followed: without `--force` it is refused; with it, the link itself
//!   is replaced by the new file (a rename replaces the link, it does not write through it).
//! - The bytes go to `<target>.partial` beside the target, created with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW` and mode 0600 (a trace describes the host's CPU, microcode and
//!   kernel), and the finished file is renamed into place. So a refused, failed or killed run
//!   leaves an existing target byte for byte as it was, and a killed run leaves its partial file
//!   for inspection (a trace's partial file reads back to its last whole event).
//! - A partial file left by an earlier run that never finished is refused by name (the user may
//!   want it), or replaced with `--force`.
//! - Without `--force`, the rename refuses to replace a target that appeared while the file was
//!   being written (`RENAME_NOREPLACE`, or a hard link where the filesystem lacks it).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The suffix of the file written beside the target until it is complete.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// The permissions of every output file: only its owner may read it.
pub const MODE: u32 = 0o600;

/// Why an output file cannot be written.
#[derive(Debug, Error)]
pub enum OutputError {
    /// The target exists and replacing it was not asked for.
    #[error("{} already exists; vmfleet does not overwrite it (pass --force to replace it)",
        path.display())]
    Exists {
        /// The target.
        path: PathBuf,
    },

    /// The target is a symbolic link and replacing it was not asked for.
    #[error("{} is a symbolic link; vmfleet does not write through links (pass --force to \
        replace the link itself)", path.display())]
    Symlink {
        /// The target, a symbolic link.
        path: PathBuf,
    },

    /// The target (or its partial file) is a directory, a socket, a FIFO..., or the path ends in
    /// no file name (`/`, `..`): never replaced.
    #[error("{} is a directory or another special file, not a file vmfleet can write",
        path.display())]
    NotAFile {
        /// The target (or its partial file, if that is a directory).
        path: PathBuf,
    },

    /// A partial file from an earlier run is beside the target and replacing it was not asked
    /// for.
    #[error("{} is in the way: an earlier run that did not finish writing {} left it there (or \
        one still running is writing it); remove it, or pass --force to replace it",
        partial.display(), target.display())]
    StalePartial {
        /// The partial file in the way.
        partial: PathBuf,
        /// The target it is beside.
        target: PathBuf,
    },

    /// Something took the target's name while the file was written (without `--force`): the
    /// rename refused to replace it.
    #[error("{} appeared while vmfleet was writing it, so it was not replaced; what vmfleet wrote \
        is in {}", target.display(), partial.display())]
    Appeared {
        /// The target, now someone else's file.
        target: PathBuf,
        /// The finished file vmfleet wrote, left in place.
        partial: PathBuf,
    },

    /// A file system call failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file it was about: the target or the partial file.
        path: PathBuf,
        /// The call's error.
        #[source]
        source: std::io::Error,
    },
}

/// A checked output path: where the file goes and where it is written until it is complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    target: PathBuf,
    partial: PathBuf,
    replace: bool,
}

impl Output {
    /// Check that `target` may be written: nothing is there (or `replace` is set and it is a file
    /// or a symbolic link), and no partial file from an earlier run is beside it (or `replace`).
    /// Touches nothing; call it before any work, so that a refusal costs nothing.
    pub fn check(target: impl AsRef<Path>, replace: bool) -> Result<Output, OutputError> {
        let target = target.as_ref().to_path_buf();
        let Some(name) = target.file_name() else {
            return Err(OutputError::NotAFile { path: target });
        };
        let mut partial_name = name.to_os_string();
        partial_name.push(PARTIAL_SUFFIX);
        let partial = target.with_file_name(partial_name);
        match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.file_type().is_symlink() && !replace => {
                return Err(OutputError::Symlink { path: target });
            }
            Ok(meta) if meta.file_type().is_symlink() || meta.is_file() => {
                if !replace {
                    return Err(OutputError::Exists { path: target });
                }
            }
            Ok(_) => return Err(OutputError::NotAFile { path: target }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(OutputError::Io {
                    path: target,
                    source,
                });
            }
        }
        match std::fs::symlink_metadata(&partial) {
            Ok(meta) if meta.is_dir() => return Err(OutputError::NotAFile { path: partial }),
            Ok(_) if !replace => return Err(OutputError::StalePartial { partial, target }),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(OutputError::Io {
                    path: partial,
                    source,
                });
            }
        }
        Ok(Output {
            target,
            partial,
            replace,
        })
    }

    /// Where the file goes once complete.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Where the file is written until it is complete (`<target>.partial`).
    pub fn partial(&self) -> &Path {
        &self.partial
    }

    /// Whether an existing target is replaced.
    pub fn replaces(&self) -> bool {
        self.replace
    }

    /// Create the partial file, mode 0600, never through a link and never over an existing file
    /// (under `replace`, a stale partial file is removed first: `remove_file` removes a link
    /// itself, not what it points to).
    pub fn create_partial(&self) -> Result<File, OutputError> {
        let io = |source| OutputError::Io {
            path: self.partial.clone(),
            source,
        };
        if self.replace {
            match std::fs::remove_file(&self.partial) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                _ => {}
            }
        }
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.partial)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    OutputError::StalePartial {
                        partial: self.partial.clone(),
                        target: self.target.clone(),
                    }
                } else {
                    io(e)
                }
            })
    }

    /// Rename the (complete, synced) partial file into place: never over an existing target
    /// unless `replace`.
    pub fn publish(&self) -> Result<(), OutputError> {
        let io = |source| OutputError::Io {
            path: self.target.clone(),
            source,
        };
        if self.replace {
            std::fs::rename(&self.partial, &self.target).map_err(io)?;
        } else {
            self.rename_noreplace()?;
        }
        // Make the rename itself durable; a filesystem that cannot sync a directory still
        // renamed the file, so a failure here is not worth failing the run for.
        if let Some(dir) = self.target.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }

    fn rename_noreplace(&self) -> Result<(), OutputError> {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        let appeared = || OutputError::Appeared {
            target: self.target.clone(),
            partial: self.partial.clone(),
        };
        let io = |source| OutputError::Io {
            path: self.target.clone(),
            source,
        };
        match renameat_with(
            CWD,
            &self.partial,
            CWD,
            &self.target,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::EXIST) => return Err(appeared()),
            // The filesystem (or kernel) has no RENAME_NOREPLACE: a hard link also refuses an
            // existing name.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
            Err(e) => return Err(io(e.into())),
        }
        match std::fs::hard_link(&self.partial, &self.target) {
            Ok(()) => {
                let _ = std::fs::remove_file(&self.partial);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(appeared()),
            Err(e) => Err(io(e)),
        }
    }

    /// Remove the partial file (a run that was refused or failed before it produced anything).
    pub fn discard(&self) {
        let _ = std::fs::remove_file(&self.partial);
    }

    /// Write a whole file at once: create the partial file, write, sync, rename into place. On
    /// failure the partial file is removed (there is nothing in it worth keeping).
    pub fn write_all(&self, bytes: &[u8]) -> Result<(), OutputError> {
        let mut file = self.create_partial()?;
        let written = file
            .write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|source| OutputError::Io {
                path: self.partial.clone(),
                source,
            });
        drop(file);
        let published = written.and_then(|()| self.publish());
        if published.is_err() && !matches!(published, Err(OutputError::Appeared { .. })) {
            self.discard();
        }
        published
    }
}
