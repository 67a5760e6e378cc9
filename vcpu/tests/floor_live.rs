//! Live tests of the floor (`vcpu::hypervisor::kvm::floor`) on the real `/dev/kvm`.
//!
//! Where `/dev/kvm` cannot be used (or the host is not x86_64), each test prints
//! `SKIPPED <test>: <reason>` and passes.

use std::path::Path;
use vcpu::VcpuExit;
use vcpu::guests::start::ProbeStart;
use vcpu::guests::x86::PORT_PASS_BEGIN;
use vcpu::hypervisor::kvm::KvmUnavailable;
use vcpu::hypervisor::kvm::floor::{Floor, FloorError};
use vcpu::{VcpuId, VmId};

/// Open the floor, or say clearly why the test is skipped.
fn floor(test: &str) -> Option<Floor> {
    match Floor::open() {
        Ok(floor) => Some(floor),
        Err(err) => {
            vcpu::skip::skipped(test, err);
            None
        }
    }
}

#[test]
fn every_vcpu_reaches_the_first_pass_begin() {
    let Some(floor) = floor("every_vcpu_reaches_the_first_pass_begin") else {
        return;
    };
    let run = floor
        .start_to_first_exit(&ProbeStart::default(), 2, 2)
        .expect("floor run");
    assert_eq!((run.vms, run.vcpus_per_vm), (2, 2));
    let order: Vec<(VmId, VcpuId)> = run.first_exits.iter().map(|f| (f.vm, f.vcpu)).collect();
    assert_eq!(
        order,
        [
            (VmId(0), VcpuId(0)),
            (VmId(0), VcpuId(1)),
            (VmId(1), VcpuId(0)),
            (VmId(1), VcpuId(1)),
        ]
    );
    for first in &run.first_exits {
        // What the kernel reported for this vCPU's first KVM_RUN: the guest's first `OUT dx, eax`,
        // pass number 0 to PORT_PASS_BEGIN.
        assert_eq!(
            first.exit,
            VcpuExit::IoOut {
                port: PORT_PASS_BEGIN,
                data: 0u32.to_le_bytes()[..].into(),
            },
            "{}/{}",
            first.vm,
            first.vcpu
        );
    }
    assert_eq!(run.unexpected_first_exit(&ProbeStart::default()), None);

    let p = &run.phases;
    let phases = p.supported_cpuid
        + p.create_vm
        + p.guest_memory
        + p.create_vcpu
        + p.cpuid
        + p.vcpu_threads
        + p.load_guest
        + p.boot_state
        + p.first_run;
    // Each VM's steps run on its own thread, within the run: their sum over the 2 VMs is at most
    // twice the run (the VMs start in parallel, so it may exceed the run itself).
    assert!(
        phases <= run.elapsed * 2,
        "{phases:?} > 2 x {:?}",
        run.elapsed
    );
    assert!(!p.first_run.is_zero() && !p.cpuid.is_zero(), "{p:?}");
    assert!(run.vms_per_second() > 0.0);
    eprintln!(
        "floor 2 VMs x 2 vCPUs: {:?} ({:.0} VMs/s), phases {p:?}, teardown {:?}",
        run.elapsed,
        run.vms_per_second(),
        run.teardown
    );
}

#[test]
fn bad_requests_are_errors() {
    let Some(floor) = floor("bad_requests_are_errors") else {
        return;
    };
    for (vms, vcpus) in [(0, 2), (2, 0)] {
        let error = floor
            .start_to_first_exit(&ProbeStart::default(), vms, vcpus)
            .unwrap_err();
        assert!(matches!(error, FloorError::Empty { .. }), "{error}");
    }
    // More vCPUs than KVM allows in a VM: the kernel's refusal, named with its step.
    let error = floor
        .start_to_first_exit(&ProbeStart::default(), 1, 100_000)
        .unwrap_err();
    assert!(
        matches!(
            error,
            FloorError::Step {
                step: "KVM_CREATE_VCPU",
                ..
            }
        ),
        "{error}"
    );
    eprintln!("too many vCPUs: {error}");
}

#[test]
fn open_reports_what_is_wrong() {
    match Floor::open_path(Path::new("/nonexistent/kvm")).unwrap_err() {
        FloorError::Unavailable(KvmUnavailable::Missing { .. }) => {}
        FloorError::UnsupportedArch { arch } => assert_ne!(arch, "x86_64"),
        other => panic!("unexpected: {other}"),
    }
}
