//! `KVM_RUN` and the translation of its exits into vmfleet's [`VcpuExit`].

use super::kernel;
use crate::hypervisor::call::VcpuExit;
use crate::hypervisor::error::CallError;
use kvm_bindings::KVM_EXIT_INTERNAL_ERROR;
use kvm_ioctls::{VcpuExit as KvmExit, VcpuFd};

/// What to do after the borrow of the `kvm_run` area by [`KvmExit`] has ended.
enum Translated {
    /// The exit is fully translated.
    Exit(VcpuExit),
    /// `KVM_EXIT_INTERNAL_ERROR`: read `kvm_run.internal.suberror`.
    InternalError,
    /// Anything vmfleet does not act on: report `kvm_run.exit_reason` as is.
    Other,
}

/// `KVM_RUN` once.
///
/// - `EINTR` (a signal kicked the vCPU) is the exit [`VcpuExit::Interrupted`], not an error.
/// - Port reads are answered with all ones and MMIO reads with zeros before the next `KVM_RUN`
///   (vmfleet's guests do neither; the answers just have to be deterministic).
/// - Every other errno is [`CallError::Kernel`].
///
/// No system ioctl is issued here: the `kvm_run` mapping size was queried once, when the VM was
/// created.
pub(super) fn run(fd: &mut VcpuFd) -> Result<VcpuExit, CallError> {
    let translated = match fd.run() {
        Ok(exit) => translate(exit),
        Err(e) if e.errno() == libc::EINTR => Translated::Exit(VcpuExit::Interrupted),
        Err(e) => return Err(kernel(e)),
    };
    Ok(match translated {
        Translated::Exit(exit) => exit,
        Translated::InternalError => VcpuExit::InternalError {
            suberror: internal_suberror(fd),
        },
        Translated::Other => VcpuExit::Other {
            reason: fd.get_kvm_run().exit_reason,
        },
    })
}

fn translate(exit: KvmExit<'_>) -> Translated {
    Translated::Exit(match exit {
        KvmExit::IoOut(port, data) => VcpuExit::IoOut {
            port,
            data: data.into(),
        },
        KvmExit::IoIn(port, data) => {
            data.fill(0xff);
            VcpuExit::IoIn {
                port,
                size: u8::try_from(data.len()).unwrap_or(u8::MAX),
            }
        }
        KvmExit::MmioWrite(addr, data) => VcpuExit::MmioWrite {
            addr,
            data: data.into(),
        },
        KvmExit::MmioRead(addr, data) => {
            data.fill(0);
            VcpuExit::MmioRead {
                addr,
                len: u8::try_from(data.len()).unwrap_or(u8::MAX),
            }
        }
        KvmExit::Hlt => VcpuExit::Hlt,
        KvmExit::Shutdown => VcpuExit::Shutdown,
        KvmExit::SystemEvent(kind, data) => VcpuExit::SystemEvent {
            kind,
            data: data.to_vec(),
        },
        KvmExit::FailEntry(reason, _cpu) => VcpuExit::FailEntry { reason },
        // KVM_EXIT_INTR with a successful return (rare: normally KVM_RUN fails with EINTR).
        KvmExit::Intr => VcpuExit::Interrupted,
        KvmExit::InternalError => return Translated::InternalError,
        // Everything else (including `KVM_EXIT_MEMORY_FAULT`, which comes with EFAULT but still
        // sets exit_reason) is reported by its raw KVM exit reason.
        _ => return Translated::Other,
    })
}

/// `kvm_run.internal.suberror` after a `KVM_EXIT_INTERNAL_ERROR` (`KVM_INTERNAL_ERROR_*`:
/// 1 emulation, 2 simultaneous exceptions, 3 event delivery, 4 unexpected exit reason).
fn internal_suberror(fd: &mut VcpuFd) -> u32 {
    let run = fd.get_kvm_run();
    if run.exit_reason != KVM_EXIT_INTERNAL_ERROR {
        return 0;
    }
    // SAFETY: `exit_reason == KVM_EXIT_INTERNAL_ERROR` tells us the kernel filled the `internal`
    // member of the exit union; it is plain old data (u32 fields), so any bit pattern is valid.
    unsafe { run.__bindgen_anon_1.internal.suberror }
}
