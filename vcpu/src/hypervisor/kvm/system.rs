//! The system layer: the `/dev/kvm` fd, its ioctls, and VM creation.

use super::unavailable::KvmUnavailable;
use super::vm::KvmVm;
use super::{KVM_PATH, arch, host_arch, kernel};
use crate::hypervisor::backend::{Hypervisor, Vm};
use crate::hypervisor::call::{Reply, SystemCall};
use crate::hypervisor::errno::Errno;
use crate::hypervisor::error::CallError;
use crate::hypervisor::ids::GuestArch;
use crate::hypervisor::ids::VmId;
use kvm_ioctls::Kvm;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The only KVM API version there has ever been a stable ABI for.
const KVM_API_VERSION: i32 = 12;

/// An open KVM device. Implements [`Hypervisor`].
#[derive(Debug)]
pub struct KvmHypervisor {
    kvm: Kvm,
    path: PathBuf,
    arch: GuestArch,
}

impl KvmHypervisor {
    /// Open `/dev/kvm` and check that it is a usable KVM device.
    pub fn open() -> Result<KvmHypervisor, KvmUnavailable> {
        Self::open_path(Path::new(KVM_PATH))
    }

    /// Open the KVM device at `path` (tests use this to point at `/dev/null` or a missing file).
    ///
    /// Checks, in order: that the file opens read-write, that `KVM_GET_API_VERSION` succeeds on it
    /// (a non-KVM file fails with `ENOTTY`), and that the version is 12.
    pub fn open_path(path: &Path) -> Result<KvmHypervisor, KvmUnavailable> {
        let (kvm, arch) = open_device(path)?;
        super::kick::install_handler().map_err(|e| KvmUnavailable::KickSignal {
            errno: Errno(e.errno()),
        })?;
        Ok(KvmHypervisor {
            kvm,
            path: path.to_path_buf(),
            arch,
        })
    }

    /// The device this hypervisor was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Open the KVM device at `path` and check it (see [`KvmHypervisor::open_path`]); also used by
/// [`super::floor`], which needs the bare `kvm-ioctls` handle.
pub(super) fn open_device(path: &Path) -> Result<(Kvm, GuestArch), KvmUnavailable> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| KvmUnavailable::Open {
        path: path.to_path_buf(),
        errno: Errno::EINVAL,
    })?;
    // `Kvm::new_with_path`: open(2) with O_RDWR | O_CLOEXEC.
    let kvm = Kvm::new_with_path(&c_path)
        .map_err(|e| KvmUnavailable::from_open_errno(path.to_path_buf(), e.errno()))?;
    let version = api_version(&kvm).map_err(|errno| KvmUnavailable::NotKvm {
        path: path.to_path_buf(),
        errno,
    })?;
    if version != KVM_API_VERSION {
        return Err(KvmUnavailable::ApiVersion {
            path: path.to_path_buf(),
            found: version,
            expected: KVM_API_VERSION,
        });
    }
    let arch = host_arch().ok_or_else(|| KvmUnavailable::UnsupportedArch {
        arch: std::env::consts::ARCH.to_string(),
    })?;
    Ok((kvm, arch))
}

/// `KVM_GET_API_VERSION`. `kvm-ioctls` returns the raw ioctl result, so a negative value means
/// the ioctl failed and errno says why (read right away, on the same thread).
fn api_version(kvm: &Kvm) -> Result<i32, Errno> {
    let version = kvm.get_api_version();
    if version < 0 {
        return Err(Errno(vmm_sys_util::errno::Error::last().errno()));
    }
    Ok(version)
}

impl Hypervisor for KvmHypervisor {
    fn arch(&self) -> GuestArch {
        self.arch
    }

    fn call(&self, call: &SystemCall) -> Result<Reply, CallError> {
        match call {
            // KVM_GET_API_VERSION on /dev/kvm.
            SystemCall::GetApiVersion => {
                let version = api_version(&self.kvm).map_err(CallError::Kernel)?;
                Ok(Reply::Value(version as u64))
            }
            // KVM_CHECK_EXTENSION on /dev/kvm, with the raw capability number (so capabilities
            // newer than kvm-ioctls' `Cap` enum can be asked about too). 0 means absent; a
            // negative return is an ioctl failure.
            SystemCall::CheckExtension { cap } => {
                let value = self.kvm.check_extension_raw(libc::c_ulong::from(*cap));
                if value < 0 {
                    return Err(super::last_kernel_error());
                }
                Ok(Reply::Value(value as u64))
            }
            // KVM_GET_VCPU_MMAP_SIZE: the size of each vCPU's shared `kvm_run` area.
            SystemCall::GetVcpuMmapSize => {
                let size = self.kvm.get_vcpu_mmap_size().map_err(kernel)?;
                Ok(Reply::Value(size as u64))
            }
            // KVM_GET_SUPPORTED_CPUID (x86 only).
            SystemCall::GetSupportedCpuid => arch::supported_cpuid(&self.kvm, call),
            // KVM_GET_EMULATED_CPUID (x86 only).
            SystemCall::GetEmulatedCpuid => arch::emulated_cpuid(&self.kvm, call),
            SystemCall::CreateVm { .. } => Err(CallError::Backend(format!(
                "{call} must be issued with Hypervisor::create_vm, not Hypervisor::call"
            ))),
        }
    }

    /// `KVM_CREATE_VM` with the default machine type (on arm64, with the host's largest IPA
    /// size, as `kvm-ioctls` does). `kvm-ioctls` also queries `KVM_GET_VCPU_MMAP_SIZE` here,
    /// once per VM, so `KVM_RUN` never has to.
    fn create_vm(&self, vm: VmId, name: &str) -> Result<Box<dyn Vm>, CallError> {
        let fd = self.kvm.create_vm().map_err(kernel)?;
        Ok(Box::new(KvmVm::new(vm, name, fd)))
    }
}
