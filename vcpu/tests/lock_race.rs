//! The pre-run lock under a real race, on the real `/dev/kvm`: one thread keeps changing the CPU
//! model of vCPU 1 while vCPU 0 makes its first `KVM_RUN`. No changed write may be accepted once
//! the VM is sealed, whatever the interleaving, and the kernel must end up holding the last table
//! vmfleet accepted. Prints `SKIPPED` where `/dev/kvm` cannot be used.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use vcpu::guests::x86::{self, ENTRY, MEMORY_SIZE};
use vcpu::hypervisor::call::{Reply, SystemCall};
use vcpu::hypervisor::cpuid::{CpuidReg, CpuidTable};
use vcpu::hypervisor::kvm::KvmHypervisor;
use vcpu::runtime::runner::{ProbeEnd, run_probe};
use vcpu::{Errno, GuestArch, Hypervisor, Seal, VcpuId, VmHandle, VmId};

/// Two tables that differ in one bit the kernel stores verbatim on every host seen so far
/// (0x80000001 ECX bit 5, `abm`), outside the runtime-managed bits.
fn variants(base: &CpuidTable) -> [CpuidTable; 2] {
    let mut with = base.clone();
    let mut without = base.clone();
    let entry = with.lookup_mut(0x8000_0001, 0).expect("leaf 0x80000001");
    *entry.reg_mut(CpuidReg::Ecx) |= 1 << 5;
    let entry = without.lookup_mut(0x8000_0001, 0).expect("leaf 0x80000001");
    *entry.reg_mut(CpuidReg::Ecx) &= !(1 << 5);
    [with, without]
}

#[test]
fn no_changed_write_slips_past_the_first_run() {
    let kvm = match KvmHypervisor::open() {
        Ok(kvm) if kvm.arch() == GuestArch::X86_64 => kvm,
        Ok(_) => {
            return vcpu::skip::skipped(
                "no_changed_write_slips_past_the_first_run",
                "not an x86 host",
            );
        }
        Err(e) => {
            return vcpu::skip::skipped(
                "no_changed_write_slips_past_the_first_run",
                format!("/dev/kvm unusable: {e}"),
            );
        }
    };
    let supported = match kvm
        .call(&SystemCall::GetSupportedCpuid)
        .expect("supported CPUID")
    {
        Reply::Cpuid(t) => t,
        other => panic!("unexpected {other}"),
    };
    for round in 0..8 {
        let vm = VmHandle::new(
            kvm.create_vm(VmId(round), "race").expect("create VM"),
            "race",
            kvm.arch(),
        );
        vm.add_memory(0, 0, MEMORY_SIZE).expect("memory");
        let runner = Arc::new(vm.create_vcpu(VcpuId(0)).expect("vcpu0"));
        let target = Arc::new(vm.create_vcpu(VcpuId(1)).expect("vcpu1"));
        let held0 = runner.set_cpuid(&supported).expect("configure vcpu0").held;
        let [a, b] = variants(&target.set_cpuid(&supported).expect("configure vcpu1").held);
        vm.with_memory(|mem| x86::load(mem, &held0.probe_points(), 1))
            .expect("load guest");
        runner.set_boot_state(ENTRY).expect("boot state");

        let start = Arc::new(Barrier::new(2));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (target, start, stop) =
                (Arc::clone(&target), Arc::clone(&start), Arc::clone(&stop));
            let (a, b) = (a.clone(), b.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut accepted_after_seal_with_change = 0;
                let mut last_accepted = None;
                let mut refused = 0;
                let mut i = 0u64;
                while !stop.load(Ordering::Acquire) || refused == 0 {
                    let table = if i % 2 == 0 { &a } else { &b };
                    i += 1;
                    match target.set_cpuid(table) {
                        Ok(write) => {
                            if write.after_run && write.held != *table {
                                accepted_after_seal_with_change += 1;
                            }
                            last_accepted = Some(write.held);
                        }
                        Err(e) => {
                            assert!(e.is_lock_refusal(), "only the lock may refuse here: {e}");
                            assert_eq!(e.errno(), Some(Errno::EINVAL));
                            refused += 1;
                        }
                    }
                    if i > 200_000 {
                        break;
                    }
                }
                (accepted_after_seal_with_change, last_accepted, refused)
            })
        };
        start.wait();
        let outcome = run_probe(&runner, &held0.probe_points(), 1, Some(10_000));
        assert!(
            matches!(outcome.end, ProbeEnd::Halted),
            "round {round}: {}",
            outcome.end
        );
        stop.store(true, Ordering::Release);
        let (slipped, last_accepted, refused) = writer.join().expect("writer thread");
        assert_eq!(
            vm.lock().state(),
            Seal::Sealed {
                first_run: VcpuId(0)
            }
        );
        assert_eq!(
            slipped, 0,
            "round {round}: a changed write was accepted after the seal"
        );
        assert!(refused > 0, "round {round}: the writer never met the lock");
        let holds = target.get_cpuid().expect("read back");
        if let Some(last) = last_accepted {
            assert_eq!(
                holds, last,
                "round {round}: the kernel holds something vmfleet never accepted"
            );
        }
    }
}
