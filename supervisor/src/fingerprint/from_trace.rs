//! The facts of a fingerprint as a trace recorded them: the header's host facts plus the
//! answers of the calls the fingerprint needs (see [`facts`]). A trace that lacks a call leaves
//! its fact `None`; nothing is guessed.

use super::{Arm64Facts, Facts, X86Facts};
use recorder::{Event, Trace, TraceCall};
use vcpu::hypervisor::cpuid::CpuidTable;
use vcpu::{GuestArch, Reply, Stream, SystemCall, VcpuCall, VcpuId, VmCall, VmId};

/// The facts of `trace`:
/// - x86: the host stream's `GET_SUPPORTED_CPUID` reply; the first vCPU's (lowest VM, then
///   lowest vCPU, with a successful `SET_CPUID2`) first `SET_CPUID2` and the `GET_CPUID2` that
///   follows it.
/// - arm64: the first vCPU with a successful `ARM_VCPU_INIT` (lowest VM, then vCPU): its VM's
///   `ARM_PREFERRED_TARGET` reply, its init features, its first `GET_REG_LIST`, its
///   `GET_ONE_REG`s after the init of registers no vCPU of its VM had written yet (the values
///   before any write); the masks reply of its VM (else of the lowest VM that asked).
pub fn facts(trace: &Trace) -> Facts {
    let arch = trace.header.guest_arch;
    let events = &trace.events;
    let (x86, arm64) = match arch {
        GuestArch::X86_64 => (x86_facts(events), Arm64Facts::default()),
        GuestArch::Aarch64 => (X86Facts::default(), arm64_facts(events)),
    };
    Facts {
        arch,
        host: trace.header.host.clone(),
        x86,
        arm64,
    }
}

fn vcpu_of(stream: Stream) -> Option<(VmId, VcpuId)> {
    match stream {
        Stream::Vcpu(vm, vcpu) => Some((vm, vcpu)),
        _ => None,
    }
}

/// The lowest vCPU stream with an event `pick` accepts.
fn first_vcpu(events: &[Event], pick: impl Fn(&Event) -> bool) -> Option<(VmId, VcpuId)> {
    events
        .iter()
        .filter(|e| pick(e))
        .filter_map(|e| vcpu_of(e.stream))
        .min_by_key(|&(vm, vcpu)| (vm.0, vcpu.0))
}

fn x86_facts(events: &[Event]) -> X86Facts {
    let supported = events.iter().find_map(|e| match (&e.call, &e.outcome) {
        (TraceCall::System(SystemCall::GetSupportedCpuid), Ok(Reply::Cpuid(t)))
            if e.stream == Stream::Host =>
        {
            Some(t.clone())
        }
        _ => None,
    });
    let is_set = |e: &Event| {
        matches!(e.call, TraceCall::Vcpu(VcpuCall::SetCpuid2 { .. })) && e.outcome.is_ok()
    };
    let pair = first_vcpu(events, is_set).and_then(|(vm, vcpu)| {
        let stream = Stream::Vcpu(vm, vcpu);
        let mut own = events.iter().filter(|e| e.stream == stream);
        let written: CpuidTable = own
            .by_ref()
            .find(|e| is_set(e))
            .and_then(|e| match &e.call {
                TraceCall::Vcpu(VcpuCall::SetCpuid2 { table }) => Some(table.clone()),
                _ => None,
            })?;
        let held = own.find_map(|e| match (&e.call, &e.outcome) {
            (TraceCall::Vcpu(VcpuCall::GetCpuid2), Ok(Reply::Cpuid(t))) => Some(t.clone()),
            _ => None,
        });
        Some((written, held))
    });
    let (written, held) = match pair {
        Some((written, held)) => (Some(written), held),
        None => (None, None),
    };
    X86Facts {
        supported,
        written,
        held,
    }
}

fn arm64_facts(events: &[Event]) -> Arm64Facts {
    let is_init = |e: &Event| {
        matches!(e.call, TraceCall::Vcpu(VcpuCall::ArmVcpuInit { .. })) && e.outcome.is_ok()
    };
    let masks_of = |vm: Option<VmId>| {
        events
            .iter()
            .find_map(|e| match (&e.call, &e.outcome, e.stream) {
                (
                    TraceCall::Vm(VmCall::ArmGetRegWritableMasks),
                    Ok(Reply::Masks(m)),
                    Stream::Vm(v),
                ) if vm.is_none_or(|vm| vm == v) => Some((v, m.clone())),
                _ => None,
            })
    };
    let lowest_masks = || {
        let mut asked: Vec<VmId> = events
            .iter()
            .filter(|e| {
                matches!(e.call, TraceCall::Vm(VmCall::ArmGetRegWritableMasks))
                    && matches!(e.outcome, Ok(Reply::Masks(_)))
            })
            .filter_map(|e| match e.stream {
                Stream::Vm(vm) => Some(vm),
                _ => None,
            })
            .collect();
        asked.sort_by_key(|vm| vm.0);
        asked
            .first()
            .and_then(|&vm| masks_of(Some(vm)))
            .map(|(_, m)| m)
    };
    let Some((vm, vcpu)) = first_vcpu(events, is_init) else {
        return Arm64Facts {
            masks: lowest_masks(),
            ..Arm64Facts::default()
        };
    };
    let preferred_target = events.iter().find_map(|e| match (&e.call, &e.outcome) {
        (TraceCall::Vm(VmCall::ArmPreferredTarget), Ok(Reply::VcpuInit { target, .. }))
            if e.stream == Stream::Vm(vm) =>
        {
            Some(*target)
        }
        _ => None,
    });
    let stream = Stream::Vcpu(vm, vcpu);
    let own: Vec<&Event> = events.iter().filter(|e| e.stream == stream).collect();
    let init_at = own.iter().position(|e| is_init(e));
    let vcpu_init_features = init_at.and_then(|i| match &own[i].call {
        TraceCall::Vcpu(VcpuCall::ArmVcpuInit { features, .. }) => Some(*features),
        _ => None,
    });
    let reg_list = own.iter().find_map(|e| match (&e.call, &e.outcome) {
        (TraceCall::Vcpu(VcpuCall::GetRegList), Ok(Reply::RegList(ids))) => Some(ids.clone()),
        _ => None,
    });
    // A register's value before any write: read on this vCPU after its init, before any vCPU of
    // its VM wrote that register (ID registers and bitmaps are VM-wide).
    let init_seq = init_at.map_or(u64::MAX, |i| own[i].seq);
    let mut written: Vec<u64> = Vec::new();
    let mut initial_reads: Vec<(u64, u64)> = Vec::new();
    for e in events.iter().filter(|e| e.seq > init_seq) {
        match (&e.call, &e.outcome, e.stream) {
            (TraceCall::Vcpu(VcpuCall::SetOneReg { id, .. }), _, Stream::Vcpu(v, _)) if v == vm => {
                written.push(*id);
            }
            (TraceCall::Vcpu(VcpuCall::GetOneReg { id }), Ok(Reply::Value(value)), s)
                if s == stream
                    && !written.contains(id)
                    && !initial_reads.iter().any(|(seen, _)| seen == id) =>
            {
                initial_reads.push((*id, *value));
            }
            _ => {}
        }
    }
    Arm64Facts {
        preferred_target,
        vcpu_init_features,
        reg_list,
        initial_reads,
        masks: masks_of(Some(vm)).map(|(_, m)| m).or_else(lowest_masks),
    }
}
