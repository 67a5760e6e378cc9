//! Kernel error numbers, kept symbolic so that traces and transcripts read `EINVAL`, not `22`.
//!
//! The numbers are Linux's generic ones (identical on x86_64 and arm64), so a trace recorded on
//! one architecture decodes the same on the other.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A positive Linux errno value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Errno(pub i32);

impl Errno {
    /// `EPERM`, operation not permitted: opening `/dev/kvm` is refused with it or `EACCES`.
    pub const EPERM: Errno = Errno(1);
    /// `ENOENT`, no such entry: `/dev/kvm` is missing, or `KVM_{GET,SET}_ONE_REG` names a
    /// register the vCPU does not have.
    pub const ENOENT: Errno = Errno(2);
    /// `EINTR`, interrupted: `KVM_RUN` cut short by a signal, i.e. a kick ([`crate::Kick`]).
    pub const EINTR: Errno = Errno(4);
    /// `EIO`, I/O error.
    pub const EIO: Errno = Errno(5);
    /// `ENXIO`, no such device or address.
    pub const ENXIO: Errno = Errno(6);
    /// `E2BIG`, too big: a CPUID table over `KVM_MAX_CPUID_ENTRIES`, or a buffer too small for
    /// the kernel's answer (`KVM_GET_SUPPORTED_CPUID`, `KVM_GET_REG_LIST`).
    pub const E2BIG: Errno = Errno(7);
    /// `ENOEXEC`, not executable: arm64 `KVM_RUN` on a vCPU that `KVM_ARM_VCPU_INIT` has not
    /// initialised.
    pub const ENOEXEC: Errno = Errno(8);
    /// `EBADF`, bad file descriptor.
    pub const EBADF: Errno = Errno(9);
    /// `EAGAIN`, try again.
    pub const EAGAIN: Errno = Errno(11);
    /// `ENOMEM`, out of memory.
    pub const ENOMEM: Errno = Errno(12);
    /// `EACCES`, permission denied: opening `/dev/kvm` without access to it.
    pub const EACCES: Errno = Errno(13);
    /// `EFAULT`, bad address: a pointer the kernel could not read or write.
    pub const EFAULT: Errno = Errno(14);
    /// `EBUSY`, busy: arm64's answer to a changed ID or firmware register after the VM's first
    /// `KVM_RUN` (the kernel's own lock, which vmfleet's pre-run lock mirrors).
    pub const EBUSY: Errno = Errno(16);
    /// `EEXIST`, already exists: `KVM_CREATE_VCPU` with an id in use, or a memory region that
    /// overlaps one already registered (`KVM_SET_USER_MEMORY_REGION`).
    pub const EEXIST: Errno = Errno(17);
    /// `ENODEV`, no such device.
    pub const ENODEV: Errno = Errno(19);
    /// `EINVAL`, invalid argument: a malformed call, and x86's answer to a `KVM_SET_CPUID2` that
    /// changes the table after the first `KVM_RUN`.
    pub const EINVAL: Errno = Errno(22);
    /// `ENOTTY`, inappropriate ioctl: an ioctl of the other architecture (`KVM_SET_CPUID2` on
    /// arm64, `KVM_ARM_VCPU_INIT` on x86).
    pub const ENOTTY: Errno = Errno(25);
    /// `ENOSPC`, no space left.
    pub const ENOSPC: Errno = Errno(28);
    /// `ENOSYS`, not implemented.
    pub const ENOSYS: Errno = Errno(38);
    /// `EOPNOTSUPP`, operation not supported.
    pub const EOPNOTSUPP: Errno = Errno(95);

    /// The symbolic name, or `None` for numbers vmfleet has no reason to know.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            4 => "EINTR",
            5 => "EIO",
            6 => "ENXIO",
            7 => "E2BIG",
            8 => "ENOEXEC",
            9 => "EBADF",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            17 => "EEXIST",
            19 => "ENODEV",
            22 => "EINVAL",
            25 => "ENOTTY",
            28 => "ENOSPC",
            38 => "ENOSYS",
            95 => "EOPNOTSUPP",
            _ => return None,
        })
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "errno {}", self.0),
        }
    }
}
