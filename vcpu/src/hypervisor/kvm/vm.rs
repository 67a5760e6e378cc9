//! The VM layer: the VM fd, its guest memory, the VM ioctls and vCPU creation.

use super::vcpu::KvmVcpu;
use super::{arch, kernel};
use crate::hypervisor::backend::{Vcpu, Vm};
use crate::hypervisor::call::{Reply, VmCall};
use crate::hypervisor::error::CallError;
use crate::hypervisor::ids::{VcpuId, VmId};
use kvm_bindings::{kvm_enable_cap, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use std::sync::{Arc, Mutex};
use vm_memory::{Address, GuestAddress, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap};

/// Every memory region ever registered with a VM, kept mapped for as long as anything that can
/// still make the kernel touch it exists: the VM object and each of its vCPUs hold a clone.
///
/// Why the vCPUs too: a vCPU fd keeps the kernel's VM (and its memory slots, which point at these
/// host addresses) alive after the VM fd is closed. Unmapping a region while a vCPU could still
/// run would let the guest write into whatever the process maps at that address next.
#[derive(Debug, Default)]
pub(super) struct MemoryKeepAlive {
    regions: Mutex<Vec<Arc<GuestRegionMmap>>>,
}

impl MemoryKeepAlive {
    fn push(&self, region: Arc<GuestRegionMmap>) {
        self.regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(region);
    }
}

/// A KVM VM. Implements [`Vm`].
///
/// Field order is drop order: the VM fd is closed before the memory is unmapped.
#[derive(Debug)]
pub struct KvmVm {
    /// `None` once [`VmCall::Destroy`] closed it.
    fd: Option<VmFd>,
    id: VmId,
    name: String,
    /// What [`Vm::guest_memory`] shows: the regions added so far (emptied by `Destroy`).
    memory: GuestMemoryMmap,
    /// Slots registered so far (a slot is registered once; vmfleet never moves or deletes one).
    slots: Vec<u32>,
    keep_alive: Arc<MemoryKeepAlive>,
}

impl KvmVm {
    pub(super) fn new(id: VmId, name: &str, fd: VmFd) -> Self {
        KvmVm {
            fd: Some(fd),
            id,
            name: name.to_string(),
            memory: GuestMemoryMmap::new(),
            slots: Vec::new(),
            keep_alive: Arc::new(MemoryKeepAlive::default()),
        }
    }

    /// The name the supervisor gave this VM (KVM itself has no use for it).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn fd(&self, call: &dyn std::fmt::Display) -> Result<&VmFd, CallError> {
        self.fd.as_ref().ok_or_else(|| {
            CallError::Backend(format!(
                "{call} on {}: the VM was already destroyed",
                self.id
            ))
        })
    }

    /// [`VmCall::AddMemory`]: allocate an anonymous mapping of `size` bytes and register it as
    /// memory slot `slot` at `guest_phys_addr` with `KVM_SET_USER_MEMORY_REGION`.
    ///
    /// The kernel judges the slot number, alignment and overlap; vmfleet only refuses (as a
    /// backend error, before the kernel) a zero size (which would *delete* a slot) and reusing a
    /// slot number (which would move or resize it).
    fn add_memory(
        &mut self,
        call: &VmCall,
        slot: u32,
        guest_phys_addr: u64,
        size: u64,
    ) -> Result<Reply, CallError> {
        let fd = self.fd(call)?;
        if size == 0 {
            return Err(CallError::Backend(format!(
                "{call}: guest memory needs a non-zero size"
            )));
        }
        if self.slots.contains(&slot) {
            return Err(CallError::Backend(format!(
                "{call}: slot {slot} is already registered"
            )));
        }
        let len = usize::try_from(size)
            .map_err(|_| CallError::Backend(format!("{call}: size does not fit this host")))?;
        let region = GuestRegionMmap::from_range(GuestAddress(guest_phys_addr), len, None)
            .map_err(|e| CallError::Backend(format!("{call}: cannot map guest memory: {e}")))?;
        let region = Arc::new(region);
        // SAFETY: `register_region`'s contract is met: the mapping is kept alive at least as long
        // as the kernel can use it. `keep_alive` holds it, and both this VM object and every vCPU
        // object (whose fds keep the kernel VM alive) hold `keep_alive`; the VM fd and vCPU fds
        // are declared before it, so they are closed first. If the ioctl fails, the kernel did not
        // keep the address and the mapping can go.
        unsafe { register_region(fd, slot, &region) }?;
        self.keep_alive.push(Arc::clone(&region));
        self.slots.push(slot);
        match self.memory.insert_region(region) {
            Ok(memory) => {
                self.memory = memory;
                Ok(Reply::Done)
            }
            // The kernel rejects overlapping slots itself (EEXIST), so this is not expected; the
            // slot stays registered (and mapped) but is not shown in `guest_memory`.
            Err(e) => Err(CallError::Backend(format!(
                "{call}: registered with KVM, but cannot be added to the guest memory map: {e}"
            ))),
        }
    }

    /// [`VmCall::EnableCap`]: `KVM_ENABLE_CAP` on the VM fd. Its return value on success is 0.
    fn enable_cap(
        &self,
        call: &VmCall,
        cap: u32,
        flags: u32,
        args: [u64; 4],
    ) -> Result<Reply, CallError> {
        let request = kvm_enable_cap {
            cap,
            flags,
            args,
            ..Default::default()
        };
        self.fd(call)?.enable_cap(&request).map_err(kernel)?;
        Ok(Reply::Value(0))
    }
}

/// `KVM_SET_USER_MEMORY_REGION`: register `region` (an anonymous mapping that `vm-memory` made)
/// as memory slot `slot` of the VM, at the region's guest-physical start address.
///
/// # Safety
///
/// From the moment this returns `Ok` the kernel may read and write the mapping on behalf of the
/// guest, at any time, until the VM is gone. The caller must keep `region` mapped until the VM fd
/// *and every vCPU fd of the VM* are closed (a vCPU fd keeps the kernel VM, and so the slot,
/// alive). On `Err` the kernel kept nothing.
pub(super) unsafe fn register_region(
    fd: &VmFd,
    slot: u32,
    region: &GuestRegionMmap,
) -> Result<(), CallError> {
    let memory_region = kvm_userspace_memory_region {
        slot,
        flags: 0,
        guest_phys_addr: region.start_addr().raw_value(),
        memory_size: region.len(),
        userspace_addr: region.as_ptr() as u64,
    };
    // SAFETY: `userspace_addr..+memory_size` is exactly the mapping owned by `region`, which is
    // page aligned (mmap) and valid for reads and writes; the caller keeps it mapped for as long
    // as the kernel can use it (this function's contract).
    unsafe { fd.set_user_memory_region(memory_region) }.map_err(kernel)
}

impl Vm for KvmVm {
    fn id(&self) -> VmId {
        self.id
    }

    fn call(&mut self, call: &VmCall) -> Result<Reply, CallError> {
        match call {
            VmCall::AddMemory {
                slot,
                guest_phys_addr,
                size,
            } => self.add_memory(call, *slot, *guest_phys_addr, *size),
            VmCall::EnableCap { cap, flags, args } => self.enable_cap(call, *cap, *flags, *args),
            VmCall::CreateVcpu { .. } => Err(CallError::Backend(format!(
                "{call} must be issued with Vm::create_vcpu, not Vm::call"
            ))),
            // Close the VM fd. The kernel VM lives on while any of its vCPU fds is open; the
            // memory stays mapped for those vCPUs (see `MemoryKeepAlive`).
            VmCall::Destroy => {
                self.fd(call)?;
                self.fd = None;
                self.memory = GuestMemoryMmap::new();
                Ok(Reply::Done)
            }
            VmCall::ArmPreferredTarget | VmCall::ArmGetRegWritableMasks => {
                let fd = self.fd(call)?;
                arch::vm_call(fd, call)
            }
        }
    }

    /// `KVM_CREATE_VCPU` with the vCPU's logical id as its KVM id (and so its APIC id / MPIDR
    /// affinity).
    fn create_vcpu(&mut self, vcpu: VcpuId) -> Result<Box<dyn Vcpu>, CallError> {
        let call = VmCall::CreateVcpu { vcpu };
        let fd = self
            .fd(&call)?
            .create_vcpu(u64::from(vcpu.0))
            .map_err(kernel)?;
        Ok(Box::new(KvmVcpu::new(
            self.id,
            vcpu,
            fd,
            Arc::clone(&self.keep_alive),
        )))
    }

    fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }
}
