//! The KVM backend on a host architecture vmfleet does not run KVM guests on: it can never be
//! opened, so the type has no values, but the crate (and replay) still builds.

use super::unavailable::KvmUnavailable;
use crate::hypervisor::backend::{Hypervisor, Vm};
use crate::hypervisor::call::{Reply, SystemCall};
use crate::hypervisor::error::CallError;
use crate::hypervisor::ids::GuestArch;
use crate::hypervisor::ids::VmId;
use std::path::Path;

/// No values: [`KvmHypervisor::open`] always fails here.
#[derive(Debug)]
enum Never {}

/// The KVM backend on an unsupported host architecture; cannot be constructed.
#[derive(Debug)]
pub struct KvmHypervisor {
    never: Never,
}

impl KvmHypervisor {
    /// Always [`KvmUnavailable::UnsupportedArch`].
    pub fn open() -> Result<KvmHypervisor, KvmUnavailable> {
        Self::open_path(Path::new(super::KVM_PATH))
    }

    /// Always [`KvmUnavailable::UnsupportedArch`].
    pub fn open_path(_path: &Path) -> Result<KvmHypervisor, KvmUnavailable> {
        Err(KvmUnavailable::UnsupportedArch {
            arch: std::env::consts::ARCH.to_string(),
        })
    }

    pub fn path(&self) -> &Path {
        match self.never {}
    }
}

impl Hypervisor for KvmHypervisor {
    fn arch(&self) -> GuestArch {
        match self.never {}
    }

    fn call(&self, _call: &SystemCall) -> Result<Reply, CallError> {
        match self.never {}
    }

    fn create_vm(&self, _vm: VmId, _name: &str) -> Result<Box<dyn Vm>, CallError> {
        match self.never {}
    }
}
