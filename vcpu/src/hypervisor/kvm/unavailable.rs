//! Why the KVM backend cannot be used on this machine.

use crate::hypervisor::errno::Errno;
use std::fmt;
use std::path::PathBuf;
use thiserror::Error;

/// The hint every [`KvmUnavailable`] message ends with: replay needs no KVM.
pub(crate) const REPLAY_HINT: &str =
    "to check a recorded run without KVM, use `vmfleet replay TRACE`";

/// `/dev/kvm` (or the path given to [`super::KvmHypervisor::open_path`]) cannot be used.
///
/// Each message says what is wrong and ends by pointing to `vmfleet replay TRACE`, which needs no
/// KVM.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KvmUnavailable {
    /// The device node does not exist (no KVM in this kernel, module not loaded, or not passed
    /// into this container).
    #[error(
        "{} does not exist: this machine offers no KVM (the kvm module is not loaded, the CPU has \
         no virtualization support, or the device was not passed into this container); {REPLAY_HINT}",
        path.display()
    )]
    Missing {
        /// The device node (`/dev/kvm`, or what `KvmHypervisor::open_path` was given).
        path: PathBuf,
    },

    /// Opening the device was refused.
    #[error(
        "permission denied opening {}: add this user to the group that owns it (usually `kvm`) or \
         run as root; {REPLAY_HINT}",
        path.display()
    )]
    PermissionDenied {
        /// The device node (`/dev/kvm`, or what `KvmHypervisor::open_path` was given).
        path: PathBuf,
    },

    /// Opening the device failed for another reason.
    #[error("cannot open {}: {}; {REPLAY_HINT}", path.display(), OsError(*errno))]
    Open {
        /// The device node (`/dev/kvm`, or what `KvmHypervisor::open_path` was given).
        path: PathBuf,
        /// What `open(2)` failed with.
        errno: Errno,
    },

    /// The file opened, but `KVM_GET_API_VERSION` failed on it: it is not a KVM device (for
    /// example `/dev/kvm` bind-mounted to `/dev/null` gives `ENOTTY`).
    #[error(
        "{} is not a KVM device: KVM_GET_API_VERSION failed with {} (is it bind-mounted to \
         something else, e.g. /dev/null?); {REPLAY_HINT}",
        path.display(), OsError(*errno)
    )]
    NotKvm {
        /// The device node (`/dev/kvm`, or what `KvmHypervisor::open_path` was given).
        path: PathBuf,
        /// What `KVM_GET_API_VERSION` failed with.
        errno: Errno,
    },

    /// The kernel speaks another KVM API version than the stable one (12).
    #[error(
        "{} speaks KVM API version {found}, vmfleet needs version {expected}; {REPLAY_HINT}",
        path.display()
    )]
    ApiVersion {
        /// The device node (`/dev/kvm`, or what `KvmHypervisor::open_path` was given).
        path: PathBuf,
        /// The version `KVM_GET_API_VERSION` returned.
        found: i32,
        /// The version vmfleet speaks (`KVM_API_VERSION`).
        expected: i32,
    },

    /// vmfleet's KVM backend does not support this host architecture.
    #[error(
        "vmfleet's KVM backend supports x86_64 and aarch64 hosts, and this one is {arch}; \
         {REPLAY_HINT}"
    )]
    UnsupportedArch {
        /// The host architecture (`std::env::consts::ARCH`).
        arch: String,
    },

    /// The signal handler that kicks vCPUs out of `KVM_RUN` could not be installed.
    #[error(
        "could not install the handler of the vCPU kick signal (SIGRTMIN): {errno}; vmfleet \
         cannot stop or pause a running guest without it"
    )]
    KickSignal {
        /// What `sigaction(2)` failed with.
        errno: Errno,
    },
}

// Only the real backend opens a device; the stub for other host architectures does not.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
impl KvmUnavailable {
    /// Classify a failed `open(2)` of the device.
    pub(crate) fn from_open_errno(path: PathBuf, errno: i32) -> Self {
        match errno {
            libc_errno::ENOENT | libc_errno::ENOTDIR => KvmUnavailable::Missing { path },
            libc_errno::EACCES | libc_errno::EPERM => KvmUnavailable::PermissionDenied { path },
            other => KvmUnavailable::Open {
                path,
                errno: Errno(other),
            },
        }
    }
}

/// The errno values used above; Linux's generic numbers (the same on x86_64 and arm64), spelled
/// out so that this file also compiles where `libc` is not a dependency.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EACCES: i32 = 13;
    pub const ENOTDIR: i32 = 20;
}

/// An errno printed with both its name and the C library's description.
struct OsError(Errno);

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let description = std::io::Error::from_raw_os_error(self.0.0);
        match self.0.name() {
            Some(name) => write!(f, "{name} ({description})"),
            None => write!(f, "{description}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<KvmUnavailable> {
        let path = PathBuf::from("/dev/kvm");
        vec![
            KvmUnavailable::Missing { path: path.clone() },
            KvmUnavailable::PermissionDenied { path: path.clone() },
            KvmUnavailable::Open {
                path: path.clone(),
                errno: Errno::EBUSY,
            },
            KvmUnavailable::NotKvm {
                path: path.clone(),
                errno: Errno(25),
            },
            KvmUnavailable::ApiVersion {
                path,
                found: 11,
                expected: 12,
            },
            KvmUnavailable::UnsupportedArch {
                arch: "riscv64".into(),
            },
        ]
    }

    #[test]
    fn every_message_ends_with_the_replay_hint() {
        for error in all() {
            let message = error.to_string();
            assert!(message.ends_with("use `vmfleet replay TRACE`"), "{message}");
        }
    }

    #[test]
    fn open_errors_are_classified() {
        let path = PathBuf::from("/nonexistent/kvm");
        assert!(matches!(
            KvmUnavailable::from_open_errno(path.clone(), 2),
            KvmUnavailable::Missing { .. }
        ));
        assert!(matches!(
            KvmUnavailable::from_open_errno(path.clone(), 13),
            KvmUnavailable::PermissionDenied { .. }
        ));
        assert_eq!(
            KvmUnavailable::from_open_errno(path.clone(), 16),
            KvmUnavailable::Open {
                path,
                errno: Errno::EBUSY
            }
        );
    }

    #[test]
    fn not_kvm_names_the_errno() {
        let message = KvmUnavailable::NotKvm {
            path: "/dev/kvm".into(),
            errno: Errno(25),
        }
        .to_string();
        assert!(message.contains("KVM_GET_API_VERSION failed"), "{message}");
        assert!(message.contains("ioctl"), "{message}");
    }
}
