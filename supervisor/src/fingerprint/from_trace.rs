//! The facts of a fingerprint as a trace recorded them: the header's host facts plus the
//! answers of the calls the fingerprint needs (see [`facts`]). A trace that lacks a call leaves
//! its fact `None`; nothing is guessed.

use super::{Arm64Facts, Facts, InitFacts, X86Facts};
use crate::fleet::probe::probe_vm;
use recorder::{Event, Trace, TraceCall};
use vcpu::hypervisor::cpuid::CpuidTable;
use vcpu::model::arm64::host::{KernelProbe, KernelProbes, PmuImpDef};
use vcpu::model::lock_policy;
use vcpu::{Errno, GuestArch, Reply, Stream, SystemCall, VcpuCall, VcpuId, VmCall, VmId};

/// The facts of `trace`:
/// - both: the header's host facts, which on x86 hold the `KVM_GET_EMULATED_CPUID` table from
///   trace format 2 on (`None` in a format-1 trace); a header without it takes the host stream's
///   `GET_EMULATED_CPUID` reply, if a job issued one;
/// - x86: the host stream's `GET_SUPPORTED_CPUID` reply; the first vCPU's (lowest VM, then
///   lowest vCPU, with a successful `SET_CPUID2`) first `SET_CPUID2` and the `GET_CPUID2` that
///   follows it.
/// - arm64: the first vCPU with a successful `ARM_VCPU_INIT` (lowest VM, then vCPU): its VM's
///   `ARM_PREFERRED_TARGET` reply, its init features, its first `GET_REG_LIST`, its
///   `GET_ONE_REG`s after the init of CPU-model registers (`lock_policy::is_model_register`, the
///   ones the live side reads) no vCPU of its VM had written yet (the values
///   before any write); the masks reply of its VM (else of the lowest VM that asked); the
///   EL0/EL1 floor probe's answer (the probe VM's `SET_ONE_REG` of ID_AA64PFR0_EL1), if the
///   fleet asked it.
pub fn facts(trace: &Trace) -> Facts {
    let arch = trace.header.guest_arch;
    let events = &trace.events;
    let (x86, arm64) = match arch {
        GuestArch::X86_64 => (x86_facts(events), Arm64Facts::default()),
        GuestArch::Aarch64 => (X86Facts::default(), arm64_facts(events)),
    };
    let mut host = trace.header.host.clone();
    if host.emulated_cpuid.is_none() {
        host.emulated_cpuid = events.iter().find_map(|e| match (&e.call, &e.outcome) {
            (TraceCall::System(SystemCall::GetEmulatedCpuid), Ok(Reply::Cpuid(t)))
                if e.stream == Stream::Host =>
            {
                Some(t.clone())
            }
            _ => None,
        });
    }
    Facts {
        arch,
        host,
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
        // A fleet never probes forced bits.
        probes: Vec::new(),
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
            probes: probes(events),
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
    let (
        vcpu_init_features,
        InitFacts {
            reg_list,
            initial_reads,
            ..
        },
    ) = init_facts(events, vm, vcpu);
    let other_inits = other_inits(events, vcpu_init_features, is_init);
    Arm64Facts {
        preferred_target,
        vcpu_init_features,
        reg_list,
        initial_reads,
        masks: masks_of(Some(vm)).map(|(_, m)| m).or_else(lowest_masks),
        other_inits,
        probes: probes(events),
    }
}

/// The kernel probes' answers ([`crate::fleet::probe`]), each from its scratch VM's
/// `SET_ONE_REG`: a floor probe's write accepted (`false`) or refused with `EINVAL` (`true`); the
/// PMUVer probe's refused, or accepted and then read back as 0 or 0xF. `None` for a probe the
/// trace does not have.
fn probes(events: &[Event]) -> KernelProbes {
    let mut probes = KernelProbes::NOT_MEASURED;
    for probe in KernelProbe::ALL {
        let (vm, _) = probe_vm(probe);
        let own: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e.stream, Stream::Vcpu(v, _) if v == vm))
            .collect();
        let Some(at) = own
            .iter()
            .position(|e| matches!(e.call, TraceCall::Vcpu(VcpuCall::SetOneReg { .. })))
        else {
            continue;
        };
        let refused = match &own[at].outcome {
            Ok(_) => false,
            Err(failure) if failure.errno == Errno::EINVAL => true,
            Err(_) => continue,
        };
        match probe {
            KernelProbe::ElFloor => probes.el_floor = Some(refused),
            KernelProbe::DebugVerFloor => probes.debug_ver_floor = Some(refused),
            KernelProbe::PmuImpDef if refused => probes.pmu_imp_def = Some(PmuImpDef::Refused),
            KernelProbe::PmuImpDef => {
                // What the kernel kept: the read after the write.
                let held = own[at + 1..]
                    .iter()
                    .find_map(|e| match (&e.call, &e.outcome) {
                        (TraceCall::Vcpu(VcpuCall::GetOneReg { .. }), Ok(Reply::Value(v))) => {
                            Some(*v)
                        }
                        _ => None,
                    });
                probes.pmu_imp_def = match held.map(|v| (v >> 8) & 0xF) {
                    Some(0) => Some(PmuImpDef::ReadsAsNotImplemented),
                    Some(0xF) => Some(PmuImpDef::Kept),
                    _ => None,
                };
            }
        }
    }
    probes
}

/// What vCPU `vcpu` of `vm` was initialised with, its register list, and its reads of CPU-model
/// registers after the init that no vCPU of its VM had written yet (the values before any write).
fn init_facts(events: &[Event], vm: VmId, vcpu: VcpuId) -> (Option<[u32; 7]>, InitFacts) {
    let stream = Stream::Vcpu(vm, vcpu);
    let own: Vec<&Event> = events.iter().filter(|e| e.stream == stream).collect();
    let init_at = own.iter().position(|e| {
        matches!(e.call, TraceCall::Vcpu(VcpuCall::ArmVcpuInit { .. })) && e.outcome.is_ok()
    });
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
                    && lock_policy::is_model_register(GuestArch::Aarch64, *id)
                    && !written.contains(id)
                    && !initial_reads.iter().any(|(seen, _)| seen == id) =>
            {
                initial_reads.push((*id, *value));
            }
            _ => {}
        }
    }
    let facts = InitFacts {
        features: vcpu_init_features.unwrap_or_default(),
        reg_list,
        initial_reads,
    };
    (vcpu_init_features, facts)
}

/// For each `KVM_ARM_VCPU_INIT` feature set other than `main` the trace used, in order of first
/// use by the lowest vCPU (lowest VM, then vCPU): that vCPU's facts.
fn other_inits(
    events: &[Event],
    main: Option<[u32; 7]>,
    is_init: impl Fn(&Event) -> bool,
) -> Vec<InitFacts> {
    let mut vcpus: Vec<(VmId, VcpuId)> = events
        .iter()
        .filter(|e| is_init(e))
        .filter_map(|e| vcpu_of(e.stream))
        .collect();
    vcpus.sort_by_key(|&(vm, vcpu)| (vm.0, vcpu.0));
    vcpus.dedup();
    let mut seen: Vec<[u32; 7]> = main.into_iter().collect();
    let mut out = Vec::new();
    for (vm, vcpu) in vcpus {
        let (features, facts) = init_facts(events, vm, vcpu);
        let Some(features) = features else { continue };
        if seen.contains(&features) {
            continue;
        }
        seen.push(features);
        out.push(facts);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use recorder::{HostFingerprint, JobInputs, TraceEnd, TraceHeader};
    use vcpu::hypervisor::cpuid::CpuidEntry;
    use vcpu::{Failure, Origin, Outcome};

    fn trace(arch: GuestArch, calls: Vec<(Stream, TraceCall, Outcome)>) -> Trace {
        let events: Vec<Event> = calls
            .into_iter()
            .enumerate()
            .map(|(seq, (stream, call, outcome))| Event {
                seq: seq as u64,
                stream,
                call,
                outcome,
                detail: None,
                at_ns: seq as u64,
            })
            .collect();
        Trace {
            header: TraceHeader::new(
                "test",
                arch,
                HostFingerprint::default(),
                JobInputs {
                    command: "run".into(),
                    spec_source: "test".into(),
                    spec_text: String::new(),
                },
            ),
            end: TraceEnd::Complete {
                events: events.len() as u64,
            },
            events,
        }
    }

    fn table(eax: u32) -> CpuidTable {
        CpuidTable::new(vec![CpuidEntry {
            function: 0,
            index: 0,
            flags: 0,
            eax,
            ebx: 0,
            ecx: 0,
            edx: 0,
        }])
    }

    fn vcpu(vm: u32, vcpu: u32) -> Stream {
        Stream::Vcpu(VmId(vm), VcpuId(vcpu))
    }

    #[test]
    fn x86_takes_the_lowest_vcpu_with_a_successful_write_and_its_read_back() {
        let refused = Err(Failure {
            errno: vcpu::Errno::EINVAL,
            origin: Origin::Kernel,
        });
        let set = |n| TraceCall::Vcpu(VcpuCall::SetCpuid2 { table: table(n) });
        let get = TraceCall::Vcpu(VcpuCall::GetCpuid2);
        let t = trace(
            GuestArch::X86_64,
            vec![
                (
                    Stream::Host,
                    TraceCall::System(SystemCall::GetSupportedCpuid),
                    Ok(Reply::Cpuid(table(1))),
                ),
                (vcpu(1, 0), set(2), Ok(Reply::Done)),
                (vcpu(1, 0), get.clone(), Ok(Reply::Cpuid(table(3)))),
                (vcpu(0, 1), set(9), refused),
                (vcpu(0, 1), set(4), Ok(Reply::Done)),
                (vcpu(0, 1), get.clone(), Ok(Reply::Cpuid(table(5)))),
                (vcpu(0, 1), set(6), Ok(Reply::Done)),
                (vcpu(0, 1), get, Ok(Reply::Cpuid(table(7)))),
            ],
        );
        let facts = facts(&t).x86;
        assert_eq!(facts.supported, Some(table(1)));
        assert_eq!(facts.written, Some(table(4)));
        assert_eq!(facts.held, Some(table(5)));
    }

    #[test]
    fn the_emulated_table_comes_from_the_header_else_from_a_recorded_call() {
        let asked = (
            Stream::Host,
            TraceCall::System(SystemCall::GetEmulatedCpuid),
            Ok(Reply::Cpuid(table(2))),
        );
        let mut t = trace(GuestArch::X86_64, vec![asked]);
        assert_eq!(facts(&t).host.emulated_cpuid, Some(table(2)));
        t.header.host.emulated_cpuid = Some(table(1));
        assert_eq!(facts(&t).host.emulated_cpuid, Some(table(1)));
        assert_eq!(
            facts(&trace(GuestArch::X86_64, Vec::new()))
                .host
                .emulated_cpuid,
            None
        );
    }

    #[test]
    fn a_trace_without_the_calls_has_no_facts() {
        let facts = facts(&trace(GuestArch::X86_64, Vec::new()));
        assert!(facts.x86.supported.is_none() && facts.x86.written.is_none());
        let facts = super::facts(&trace(GuestArch::Aarch64, Vec::new()));
        assert!(facts.arm64.preferred_target.is_none() && facts.arm64.initial_reads.is_empty());
    }

    #[test]
    fn arm64_reads_count_until_the_vm_writes_that_register() {
        let (a, b, c) = (
            0x6030_0000_0013_c020,
            0x6030_0000_0013_c021,
            0x6030_0000_0014_0000,
        );
        let get = |id| TraceCall::Vcpu(VcpuCall::GetOneReg { id });
        let t = trace(
            GuestArch::Aarch64,
            vec![
                (
                    Stream::Vm(VmId(0)),
                    TraceCall::Vm(VmCall::ArmPreferredTarget),
                    Ok(Reply::VcpuInit {
                        target: 5,
                        features: [0; 7],
                    }),
                ),
                (vcpu(0, 0), get(a), Ok(Reply::Value(99))),
                (
                    vcpu(0, 0),
                    TraceCall::Vcpu(VcpuCall::ArmVcpuInit {
                        target: 5,
                        features: [4, 0, 0, 0, 0, 0, 0],
                    }),
                    Ok(Reply::Done),
                ),
                (
                    vcpu(0, 0),
                    TraceCall::Vcpu(VcpuCall::GetRegList),
                    Ok(Reply::RegList(vec![a, b, c])),
                ),
                (vcpu(0, 0), get(c), Ok(Reply::Value(0x10001))),
                (
                    vcpu(0, 1),
                    TraceCall::Vcpu(VcpuCall::SetOneReg { id: c, value: 2 }),
                    Ok(Reply::Done),
                ),
                (vcpu(0, 0), get(a), Ok(Reply::Value(1))),
                (vcpu(0, 0), get(c), Ok(Reply::Value(2))),
                (vcpu(0, 0), get(a), Ok(Reply::Value(7))),
                (
                    vcpu(0, 0),
                    TraceCall::Vcpu(VcpuCall::SetOneReg { id: b, value: 3 }),
                    Ok(Reply::Done),
                ),
                (vcpu(0, 0), get(b), Ok(Reply::Value(3))),
                (
                    Stream::Vm(VmId(0)),
                    TraceCall::Vm(VmCall::ArmGetRegWritableMasks),
                    Ok(Reply::Masks(vec![0; 192])),
                ),
            ],
        );
        let facts = facts(&t).arm64;
        assert_eq!(facts.preferred_target, Some(5));
        assert_eq!(facts.vcpu_init_features.map(|f| f[0]), Some(4));
        assert_eq!(facts.reg_list.as_ref().map(Vec::len), Some(3));
        // a before init is not a limit; c's first read counts, b was written before it was read.
        assert_eq!(facts.initial_reads, vec![(c, 0x10001), (a, 1)]);
        assert_eq!(facts.masks.map(|m| m.len()), Some(192));
    }

    #[test]
    fn arm64_other_feature_sets_keep_their_own_list_and_values() {
        let pfr0 = 0x6030_0000_0013_c020;
        let init = |features0| {
            TraceCall::Vcpu(VcpuCall::ArmVcpuInit {
                target: 5,
                features: [features0, 0, 0, 0, 0, 0, 0],
            })
        };
        let list = TraceCall::Vcpu(VcpuCall::GetRegList);
        let get = TraceCall::Vcpu(VcpuCall::GetOneReg { id: pfr0 });
        let t = trace(
            GuestArch::Aarch64,
            vec![
                (vcpu(0, 0), init(0xc), Ok(Reply::Done)),
                (vcpu(0, 0), list.clone(), Ok(Reply::RegList(vec![pfr0, 1]))),
                (vcpu(0, 0), get.clone(), Ok(Reply::Value(0x11))),
                (vcpu(1, 0), init(0x4), Ok(Reply::Done)),
                (vcpu(1, 0), list.clone(), Ok(Reply::RegList(vec![pfr0]))),
                (vcpu(1, 0), get.clone(), Ok(Reply::Value(0x1))),
                (vcpu(2, 0), init(0xc), Ok(Reply::Done)),
                (vcpu(3, 0), init(0x4), Ok(Reply::Done)),
            ],
        );
        let facts = facts(&t).arm64;
        assert_eq!(facts.initial_reads, vec![(pfr0, 0x11)]);
        assert_eq!(facts.other_inits.len(), 1);
        let other = &facts.other_inits[0];
        assert_eq!(other.features[0], 0x4);
        assert_eq!(other.reg_list, Some(vec![pfr0]));
        assert_eq!(other.initial_reads, vec![(pfr0, 0x1)]);
    }

    #[test]
    fn arm64_the_el_floor_probe_is_read_when_the_trace_has_it() {
        let pfr0 = 0x6030_0000_0013_c020;
        let probe = |outcome| {
            trace(
                GuestArch::Aarch64,
                vec![(
                    vcpu(probe_vm(KernelProbe::ElFloor).0.0, 0),
                    TraceCall::Vcpu(VcpuCall::SetOneReg {
                        id: pfr0,
                        value: 0x01,
                    }),
                    outcome,
                )],
            )
        };
        assert_eq!(
            facts(&probe(Ok(Reply::Done))).arm64.probes.el_floor,
            Some(false)
        );
        let refused = Err(Failure {
            errno: vcpu::Errno::EINVAL,
            origin: Origin::Kernel,
        });
        assert_eq!(facts(&probe(refused)).arm64.probes.el_floor, Some(true));
        // The same write on a fleet VM is not the probe.
        let t = trace(
            GuestArch::Aarch64,
            vec![(
                vcpu(0, 0),
                TraceCall::Vcpu(VcpuCall::SetOneReg {
                    id: pfr0,
                    value: 0x01,
                }),
                Ok(Reply::Done),
            )],
        );
        assert_eq!(facts(&t).arm64.probes, KernelProbes::NOT_MEASURED);
    }

    #[test]
    fn arm64_the_pmuver_probe_is_read_with_what_the_kernel_kept() {
        let dfr0 = 0x6030_0000_0013_c028;
        let at = vcpu(probe_vm(KernelProbe::PmuImpDef).0.0, 0);
        let probe = |outcome, held: u64| {
            trace(
                GuestArch::Aarch64,
                vec![
                    (
                        at,
                        TraceCall::Vcpu(VcpuCall::SetOneReg {
                            id: dfr0,
                            value: 0xF06,
                        }),
                        outcome,
                    ),
                    (
                        at,
                        TraceCall::Vcpu(VcpuCall::GetOneReg { id: dfr0 }),
                        Ok(Reply::Value(held)),
                    ),
                ],
            )
        };
        let answer = |t: &Trace| facts(t).arm64.probes.pmu_imp_def;
        assert_eq!(
            answer(&probe(Ok(Reply::Done), 0x006)),
            Some(PmuImpDef::ReadsAsNotImplemented)
        );
        assert_eq!(
            answer(&probe(Ok(Reply::Done), 0xF06)),
            Some(PmuImpDef::Kept)
        );
        let refused = Err(Failure {
            errno: vcpu::Errno::EINVAL,
            origin: Origin::Kernel,
        });
        assert_eq!(answer(&probe(refused, 0x006)), Some(PmuImpDef::Refused));
        // The other probes are not measured by it.
        let probes = facts(&probe(Ok(Reply::Done), 0x006)).arm64.probes;
        assert_eq!((probes.el_floor, probes.debug_ver_floor), (None, None));
    }
}
