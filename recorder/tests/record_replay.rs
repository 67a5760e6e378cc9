//! Recording a run through the decorator, and replaying it: same calls succeed with the same
//! outcomes, anything else diverges, deterministically.

mod common;

use common::{Drive, Scripted, Variant, drive, header, record_trace, refusal, scratch, table};
use recorder::{
    Event, Recorder, RecordingHypervisor, ReplayHypervisor, Trace, TraceCall, TraceWriter,
    render_streams,
};
use vcpu::{
    CallError, Errno, Failure, GuestArch, Hypervisor, Origin, ReplayFailure, Reply, Stream,
    SystemCall, VcpuCall, VcpuId, VmCall, VmId,
};

/// Record `opts` live through a trace file; returns the trace read back and the drive's log.
/// What a replay came to: the drive's log (or its divergence), the verdict, the replayed events.
struct Replayed {
    log: Result<Vec<String>, ReplayFailure>,
    verdict: Result<(), ReplayFailure>,
    events: Vec<Event>,
}

/// Replay `trace` with `opts`, recording the replayed calls in memory like the supervisor does.
fn replay(trace: &Trace, opts: &Drive) -> Replayed {
    let replay = ReplayHypervisor::new(trace).unwrap();
    assert_eq!(replay.arch(), GuestArch::X86_64);
    let monitor = replay.monitor();
    let recorder = Recorder::in_memory();
    let hv = RecordingHypervisor::new(Box::new(replay), recorder.clone());
    let log = drive(&hv, opts);
    Replayed {
        log,
        verdict: monitor.finish(),
        events: recorder.events(),
    }
}

fn opts(vcpus: u32, threads: bool, variant: Variant) -> Drive {
    Drive {
        vcpus,
        threads,
        variant,
    }
}

fn find(trace: &Trace, stream: Stream, pred: impl Fn(&TraceCall) -> bool) -> &Event {
    trace
        .events
        .iter()
        .find(|e| e.stream == stream && pred(&e.call))
        .expect("event in trace")
}

#[test]
fn replaying_the_same_calls_returns_the_same_outcomes() {
    let reference = opts(2, false, Variant::Reference);
    let (trace, live_log) = record_trace("same.trace", &reference);
    // The drive hit kernel errors, real guest memory and a lock refusal; all were recorded.
    assert!(
        live_log
            .iter()
            .any(|l| l.contains("error") && l.contains("EINVAL"))
    );
    assert!(live_log.contains(&"guest memory byte: 0xf4".to_string()));
    let refusals: Vec<&Event> = trace
        .events
        .iter()
        .filter(|e| {
            matches!(
                e.outcome,
                Err(Failure {
                    origin: Origin::Lock,
                    ..
                })
            )
        })
        .collect();
    assert_eq!(refusals.len(), 2, "one refusal per vCPU");
    assert!(
        refusals[0]
            .detail
            .as_deref()
            .unwrap()
            .starts_with("vmfleet refused SET_CPUID2")
    );
    assert!(trace.events.iter().any(|e| e.outcome
        == Err(Failure {
            errno: Errno::ENOENT,
            origin: Origin::Kernel
        })));

    let Replayed {
        log,
        verdict,
        events: replayed,
    } = replay(&trace, &reference);
    assert_eq!(log.unwrap(), live_log);
    verdict.unwrap();
    assert_eq!(render_streams(&replayed), render_streams(&trace.events));
    // The replayed run issued the same calls with the same outcomes, per stream.
    let strip = |events: &[Event]| {
        let mut v: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.stream,
                    e.call.clone(),
                    e.outcome.clone(),
                    e.detail.clone(),
                )
            })
            .collect();
        v.sort_by_key(|(s, ..)| *s);
        v
    };
    assert_eq!(strip(&replayed), strip(&trace.events));
}

#[test]
fn a_different_argument_diverges_naming_the_expected_event() {
    let (trace, _) = record_trace("arg.trace", &opts(2, false, Variant::Reference));
    let stream = Stream::Vcpu(VmId(0), VcpuId(1));
    let expected = find(&trace, stream, |c| {
        matches!(c, TraceCall::Vcpu(VcpuCall::SetBootState { .. }))
    });

    let Replayed { log, verdict, .. } = replay(&trace, &opts(2, false, Variant::OtherEntry(1)));
    let failure = log.unwrap_err();
    assert_eq!(failure.seq, Some(expected.seq));
    assert_eq!(failure.stream, stream);
    assert_eq!(failure.expected, "SET_BOOT_STATE entry=0x1000");
    assert_eq!(failure.actual, "SET_BOOT_STATE entry=0x2000");
    assert_eq!(
        failure.to_string(),
        format!(
            "replay diverged at event #{} on vm0/vcpu1: expected SET_BOOT_STATE entry=0x1000, got \
             SET_BOOT_STATE entry=0x2000",
            expected.seq
        )
    );
    assert_eq!(verdict.unwrap_err(), failure);
}

#[test]
fn a_different_cpuid_table_names_the_first_differing_entry() {
    let (trace, _) = record_trace("table.trace", &opts(1, false, Variant::Reference));
    let Replayed {
        log, verdict: _, ..
    } = replay(&trace, &opts(1, false, Variant::OtherTable));
    let failure = log.unwrap_err();
    assert!(
        failure.expected.starts_with("SET_CPUID2 entries=3 digest="),
        "{failure}"
    );
    assert!(
        failure.actual.starts_with("SET_CPUID2 entries=3 digest="),
        "{failure}"
    );
    assert_ne!(failure.expected, failure.actual);
    assert_eq!(
        failure.detail,
        "first difference at entry 2: leaf 0x7.0 ebx recorded 0xd19f4fbb, this run 0xd19f4f9b"
    );
}

#[test]
fn an_extra_call_diverges() {
    let (trace, _) = record_trace("extra.trace", &opts(1, false, Variant::Reference));
    let stream = Stream::Vcpu(VmId(0), VcpuId(0));
    let expected = find(&trace, stream, |c| {
        matches!(c, TraceCall::Vcpu(VcpuCall::SetBootState { .. }))
    });
    let Replayed { log, verdict, .. } = replay(&trace, &opts(1, false, Variant::ExtraCall));
    let failure = log.unwrap_err();
    assert_eq!((failure.seq, failure.stream), (Some(expected.seq), stream));
    assert_eq!(failure.expected, "SET_BOOT_STATE entry=0x1000");
    assert_eq!(failure.actual, "GET_ONE_REG 0x0000000000000005");
    assert_eq!(verdict.unwrap_err(), failure);
}

#[test]
fn a_call_past_the_end_of_its_stream_diverges() {
    let reference = opts(1, false, Variant::Reference);
    let (trace, _) = record_trace("past-end.trace", &reference);
    let replay = ReplayHypervisor::new(&trace).unwrap();
    drive(&replay, &reference).unwrap();
    replay.finish().unwrap();
    let err = replay.call(&SystemCall::GetApiVersion).unwrap_err();
    let CallError::Replay(failure) = err else {
        panic!("{err:?}")
    };
    assert_eq!(failure.seq, None);
    assert_eq!(failure.stream, Stream::Host);
    assert_eq!(failure.expected, "end of stream");
    assert_eq!(failure.actual, "GET_API_VERSION");
    assert_eq!(replay.finish().unwrap_err(), *failure);
    // A VM the trace never saw.
    let replay = ReplayHypervisor::new(&trace).unwrap();
    let Err(CallError::Replay(failure)) = replay.create_vm(VmId(3), "ghost") else {
        panic!()
    };
    assert_eq!(
        (failure.stream, failure.expected.as_str()),
        (Stream::Vm(VmId(3)), "end of stream")
    );
}

#[test]
fn a_missing_call_is_reported_at_finish() {
    let (trace, _) = record_trace("missing.trace", &opts(1, false, Variant::Reference));
    let destroy = find(&trace, Stream::Vm(VmId(0)), |c| {
        *c == TraceCall::Vm(VmCall::Destroy)
    });
    let Replayed { log, verdict, .. } = replay(&trace, &opts(1, false, Variant::MissingDestroy));
    log.unwrap();
    let failure = verdict.unwrap_err();
    assert_eq!(failure.seq, Some(destroy.seq));
    assert_eq!(failure.expected, "DESTROY_VM");
    assert_eq!(failure.actual, "end of stream");
    assert_eq!(failure.detail, "1 recorded event(s) left on vm0");
}

/// Record: create a VM and vCPU, then one `SET_CPUID2`, refused by the lock or passed on.
fn record_one_write(refused: bool) -> Vec<Event> {
    let recorder = Recorder::in_memory();
    let hv = RecordingHypervisor::new(
        Box::new(Scripted {
            runs_before_halt: 0,
        }),
        recorder.clone(),
    );
    let mut vm = hv.create_vm(VmId(0), "alpha").unwrap();
    let mut vcpu = vm.create_vcpu(VcpuId(0)).unwrap();
    let call = VcpuCall::SetCpuid2 { table: table() };
    if refused {
        vcpu.note_refused(&call, &refusal(Errno::EINVAL)).unwrap();
    } else {
        vcpu.call(&call).unwrap();
    }
    recorder.events()
}

#[test]
fn a_lock_refusal_replays_only_as_a_lock_refusal() {
    let call = VcpuCall::SetCpuid2 { table: table() };
    let events = record_one_write(true);
    assert_eq!(
        events.last().unwrap().detail.as_deref(),
        Some(refusal(Errno::EINVAL).recorded().as_str()),
        "traces keep the one-line text of the first recordings"
    );

    // The same refusal replays.
    let replay = ReplayHypervisor::from_events(GuestArch::X86_64, events.clone());
    let mut vcpu = replay
        .create_vm(VmId(0), "alpha")
        .unwrap()
        .create_vcpu(VcpuId(0))
        .unwrap();
    vcpu.note_refused(&call, &refusal(Errno::EINVAL)).unwrap();
    replay.finish().unwrap();

    // The call reaching the backend instead diverges.
    let replay = ReplayHypervisor::from_events(GuestArch::X86_64, events.clone());
    let mut vcpu = replay
        .create_vm(VmId(0), "alpha")
        .unwrap()
        .create_vcpu(VcpuId(0))
        .unwrap();
    let Err(CallError::Replay(failure)) = vcpu.call(&call) else {
        panic!("must diverge")
    };
    assert_eq!(failure.seq, Some(2));
    assert_eq!(
        failure.detail,
        "the recorded run's lock refused this call (EINVAL); this run passed it to the backend"
    );
    assert_eq!(replay.finish().unwrap_err(), *failure);

    // A refusal with another errno diverges.
    let replay = ReplayHypervisor::from_events(GuestArch::X86_64, events);
    let mut vcpu = replay
        .create_vm(VmId(0), "alpha")
        .unwrap()
        .create_vcpu(VcpuId(0))
        .unwrap();
    let Err(CallError::Replay(failure)) = vcpu.note_refused(&call, &refusal(Errno::EBUSY)) else {
        panic!("must diverge")
    };
    assert!(
        failure
            .detail
            .contains("with EINVAL; this run's with EBUSY"),
        "{failure}"
    );
}

#[test]
fn a_refusal_where_the_recorded_run_passed_the_call_diverges() {
    let call = VcpuCall::SetCpuid2 { table: table() };
    let replay = ReplayHypervisor::from_events(GuestArch::X86_64, record_one_write(false));
    let mut vcpu = replay
        .create_vm(VmId(0), "alpha")
        .unwrap()
        .create_vcpu(VcpuId(0))
        .unwrap();
    let Err(CallError::Replay(failure)) = vcpu.note_refused(&call, &refusal(Errno::EINVAL)) else {
        panic!("must diverge")
    };
    assert_eq!(
        failure.detail,
        "this run's lock refused this call (EINVAL); the recorded run passed it to the backend, \
         which answered ok"
    );
}

#[test]
fn after_a_divergence_every_later_call_fails_fast() {
    let (trace, _) = record_trace("fail-fast.trace", &opts(1, false, Variant::Reference));
    let replay = ReplayHypervisor::new(&trace).unwrap();
    let Err(CallError::Replay(first)) = replay.call(&SystemCall::GetVcpuMmapSize) else {
        panic!()
    };
    assert_eq!(first.expected, "GET_API_VERSION");
    // The VM stream's events come later in the trace than the divergence: they are not served.
    let Err(CallError::Replay(again)) = replay.create_vm(VmId(0), "alpha") else {
        panic!()
    };
    assert_eq!(again, first);
    assert_eq!(replay.finish().unwrap_err(), *first);
    assert_eq!(replay.monitor().first_divergence(), Some(*first));
}

#[test]
fn multithreaded_replays_are_identical() {
    let threaded = opts(4, true, Variant::Reference);
    let (trace, live_log) = record_trace("threads.trace", &threaded);
    let live_render = render_streams(&trace.events);
    let mut replays = Vec::new();
    for _ in 0..2 {
        let Replayed {
            log,
            verdict,
            events: replayed,
        } = replay(&trace, &threaded);
        verdict.unwrap();
        let log = log.unwrap();
        assert_eq!(log, live_log);
        let render = render_streams(&replayed);
        assert_eq!(render, live_render);
        replays.push((log, render));
    }
    assert_eq!(replays[0], replays[1]);
}

#[test]
fn multithreaded_divergences_report_the_earliest_one_every_time() {
    let (trace, _) = record_trace("threads-diverge.trace", &opts(4, true, Variant::Reference));
    // Every thread diverges at its first RUN; the earliest of those in the trace must be reported.
    let earliest = (0..4)
        .map(|i| {
            find(&trace, Stream::Vcpu(VmId(0), VcpuId(i)), |c| {
                *c == TraceCall::Vcpu(VcpuCall::Run)
            })
        })
        .min_by_key(|e| e.seq)
        .unwrap();
    for _ in 0..10 {
        let Replayed { log, verdict, .. } =
            replay(&trace, &opts(4, true, Variant::ExtraCallInEveryThread));
        assert!(log.is_err());
        let failure = verdict.unwrap_err();
        assert_eq!(
            (failure.seq, failure.stream),
            (Some(earliest.seq), earliest.stream)
        );
        assert_eq!(
            (failure.expected.as_str(), failure.actual.as_str()),
            ("RUN", "GET_REG_LIST")
        );
    }
}

#[test]
fn only_answers_are_recorded() {
    let recorder = Recorder::in_memory();
    let hv = RecordingHypervisor::new(
        Box::new(Scripted {
            runs_before_halt: 0,
        }),
        recorder.clone(),
    );
    // Backend errors (not an answer from the kernel) are passed on unrecorded.
    assert!(matches!(
        hv.call(&SystemCall::CreateVm {
            vm: VmId(0),
            name: "x".into()
        }),
        Err(CallError::Backend(_))
    ));
    assert!(recorder.events().is_empty());
    // Kernel errors are answers.
    assert!(hv.create_vm(VmId(7), "big").is_err());
    let mut vm = hv.create_vm(VmId(1), "b").unwrap();
    assert!(matches!(
        vm.call(&VmCall::CreateVcpu { vcpu: VcpuId(0) }),
        Err(CallError::Backend(_))
    ));
    let _vcpu = vm.create_vcpu(VcpuId(2)).unwrap();
    let got: Vec<(Stream, TraceCall, Result<Reply, Failure>)> = recorder
        .events()
        .into_iter()
        .map(|e| (e.stream, e.call, e.outcome))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Stream::Vm(VmId(7)),
                TraceCall::System(SystemCall::CreateVm {
                    vm: VmId(7),
                    name: "big".into()
                }),
                Err(Failure {
                    errno: Errno::ENOMEM,
                    origin: Origin::Kernel
                })
            ),
            (
                Stream::Vm(VmId(1)),
                TraceCall::System(SystemCall::CreateVm {
                    vm: VmId(1),
                    name: "b".into()
                }),
                Ok(Reply::Done)
            ),
            (
                Stream::Vcpu(VmId(1), VcpuId(2)),
                TraceCall::Vm(VmCall::CreateVcpu { vcpu: VcpuId(2) }),
                Ok(Reply::Done)
            ),
        ]
    );
}

#[test]
fn replay_needs_a_complete_trace() {
    let path = scratch("incomplete.trace");
    let (recorder, writer) = TraceWriter::create(&path, &header()).unwrap();
    let hv = RecordingHypervisor::new(
        Box::new(Scripted {
            runs_before_halt: 1,
        }),
        recorder,
    );
    drive(&hv, &opts(1, false, Variant::Reference)).unwrap();
    let partial = writer.writing_to().to_path_buf();
    drop(writer);
    // A dropped writer leaves its partial file, as a killed process would.
    assert!(!path.exists());
    let trace = Trace::open(&partial).unwrap();
    let err = ReplayHypervisor::new(&trace)
        .err()
        .expect("a cut trace must be refused");
    assert!(
        err.to_string().starts_with("trace was cut short at byte "),
        "{err}"
    );
}

#[test]
fn replayed_guest_memory_is_real() {
    let (trace, _) = record_trace("memory.trace", &opts(1, false, Variant::Reference));
    let replay = ReplayHypervisor::new(&trace).unwrap();
    replay.call(&SystemCall::GetApiVersion).unwrap();
    let mut vm = replay.create_vm(VmId(0), "alpha").unwrap();
    assert_eq!(vm::regions(vm.guest_memory()), 0);
    vm.call(&VmCall::AddMemory {
        slot: 0,
        guest_phys_addr: 0,
        size: 0x10000,
    })
    .unwrap();
    assert_eq!(vm::regions(vm.guest_memory()), 1);
    assert_eq!(vm::size(vm.guest_memory()), 0x10000);
}

mod vm {
    use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

    pub fn regions(m: &GuestMemoryMmap) -> usize {
        m.num_regions()
    }

    pub fn size(m: &GuestMemoryMmap) -> u64 {
        m.iter().map(|r| r.len()).sum()
    }
}

/// `KVM_GET_EMULATED_CPUID` is recorded like any system call, on the host stream, and the replay
/// backend answers it from the trace (and nothing else: a replay that does not issue it has the
/// event left over).
#[test]
fn the_emulated_cpuid_call_records_and_replays() {
    let path = scratch("emulated-call.trace");
    let (recorder, writer) = TraceWriter::create(&path, &header()).unwrap();
    let hv = RecordingHypervisor::new(
        Box::new(Scripted {
            runs_before_halt: 1,
        }),
        recorder,
    );
    let answer = hv.call(&SystemCall::GetEmulatedCpuid).unwrap();
    writer.finish().unwrap();
    let trace = Trace::open(&path).unwrap();
    let event = find(&trace, Stream::Host, |c| {
        *c == TraceCall::System(SystemCall::GetEmulatedCpuid)
    });
    assert_eq!(event.outcome, Ok(answer.clone()));
    assert_eq!(event.call.to_string(), "GET_EMULATED_CPUID");
    let replay = ReplayHypervisor::new(&trace).unwrap();
    assert_eq!(replay.call(&SystemCall::GetEmulatedCpuid).unwrap(), answer);
    replay.finish().unwrap();
    let unasked = ReplayHypervisor::new(&trace).unwrap();
    let failure = unasked.finish().unwrap_err();
    assert_eq!(failure.expected, "GET_EMULATED_CPUID");
    assert_eq!(failure.stream, Stream::Host);
}

/// The events of `calls` (each with its stream and outcome), numbered in order from 0.
fn numbered(calls: Vec<(TraceCall, Stream, Result<Reply, Failure>)>) -> Vec<Event> {
    calls
        .into_iter()
        .enumerate()
        .map(|(seq, (call, stream, outcome))| Event {
            seq: seq as u64,
            stream,
            call,
            outcome,
            detail: None,
            at_ns: 0,
        })
        .collect()
}

/// A replayed vCPU's run is at hand (it may run on a thread that serves other work) only when
/// its stream holds every exit up to one that ends the guest, with no kick and no control
/// decision on the way; calls before the first run are passed over, and a served exit is gone.
#[test]
fn a_run_is_at_hand_only_when_every_exit_to_the_end_is_queued_and_nothing_waits() {
    use vcpu::{RunDecision, VcpuExit};
    let (vm, vcpu) = (VmId(0), VcpuId(0));
    let exit = |e: VcpuExit| (TraceCall::Vcpu(VcpuCall::Run), Ok(Reply::Exit(e)));
    let io = || {
        exit(VcpuExit::IoOut {
            port: 0x511,
            data: [1u8, 0, 0, 0].into_iter().collect(),
        })
    };
    let at_hand = |runs: Vec<(TraceCall, Result<Reply, Failure>)>| {
        let mut calls = vec![
            (
                TraceCall::System(SystemCall::CreateVm {
                    vm,
                    name: "a".into(),
                }),
                Stream::Vm(vm),
                Ok(Reply::Done),
            ),
            (
                TraceCall::Vm(VmCall::CreateVcpu { vcpu }),
                Stream::Vcpu(vm, vcpu),
                Ok(Reply::Done),
            ),
            (
                TraceCall::Vcpu(VcpuCall::SetBootState { entry: 0x1000 }),
                Stream::Vcpu(vm, vcpu),
                Ok(Reply::Done),
            ),
        ];
        calls.extend(
            runs.into_iter()
                .map(|(call, outcome)| (call, Stream::Vcpu(vm, vcpu), outcome)),
        );
        let replay = ReplayHypervisor::from_events(GuestArch::X86_64, numbered(calls));
        let mut created = replay.create_vm(vm, "a").unwrap();
        let mut replayed = created.create_vcpu(vcpu).unwrap();
        let before = replayed.run_is_at_hand();
        replayed
            .call(&VcpuCall::SetBootState { entry: 0x1000 })
            .unwrap();
        let set_up = replayed.run_is_at_hand();
        assert_eq!(before, set_up, "calls before the first run are passed over");
        let served = if set_up {
            replayed.call(&VcpuCall::Run).unwrap();
            replayed.run_is_at_hand()
        } else {
            false
        };
        (set_up, served)
    };
    // To the halt, or to the first call that is not a run: at hand, and still after one exit.
    assert_eq!(at_hand(vec![io(), io(), exit(VcpuExit::Hlt)]), (true, true));
    assert_eq!(
        at_hand(vec![
            io(),
            io(),
            (TraceCall::Vcpu(VcpuCall::Destroy), Ok(Reply::Done))
        ]),
        (true, true)
    );
    // The halt is its last exit: once served, nothing is left to run.
    assert_eq!(at_hand(vec![io(), exit(VcpuExit::Hlt)]), (true, true));
    assert!(at_hand(vec![exit(VcpuExit::Hlt)]).0);
    // The queue ends before the guest does: the rest may wait for the feeder.
    assert_eq!(at_hand(vec![io(), io()]), (false, false));
    // A kick takes a control point, which may wait for the control plane.
    assert_eq!(
        at_hand(vec![io(), exit(VcpuExit::Interrupted), exit(VcpuExit::Hlt)]),
        (false, false)
    );
    assert_eq!(
        at_hand(vec![
            io(),
            (TraceCall::Decision, Ok(Reply::Decision(RunDecision::Stop))),
            exit(VcpuExit::Hlt)
        ]),
        (false, false)
    );
    // A real vCPU never says yes: its runs wait on the guest.
    let scripted = Scripted {
        runs_before_halt: 1,
    };
    let mut live_vm = scripted.create_vm(vm, "a").unwrap();
    assert!(!live_vm.create_vcpu(vcpu).unwrap().run_is_at_hand());
}

/// A replayed vCPU offers its queued plain runs' exits, in order, until the taker leaves one or
/// the queue holds anything else (a decision, a call of another kind); what is left is served
/// by calls, which still check it. Recorded through the decorator, each exit taken is the
/// plain `RUN` event it was, and the transcript folds them as it folds called runs.
#[test]
fn known_runs_are_the_queued_plain_runs_and_calls_serve_the_rest() {
    use vcpu::{RunDecision, TakeExit, VcpuExit};
    let (vm, vcpu) = (VmId(0), VcpuId(0));
    let on_vcpu = Stream::Vcpu(vm, vcpu);
    let exit = |e: VcpuExit| (TraceCall::Vcpu(VcpuCall::Run), on_vcpu, Ok(Reply::Exit(e)));
    let io = |value: u8| {
        exit(VcpuExit::IoOut {
            port: 0x511,
            data: [value, 0, 0, 0].into_iter().collect(),
        })
    };
    let calls = vec![
        (
            TraceCall::System(SystemCall::CreateVm {
                vm,
                name: "a".into(),
            }),
            Stream::Vm(vm),
            Ok(Reply::Done),
        ),
        (
            TraceCall::Vm(VmCall::CreateVcpu { vcpu }),
            on_vcpu,
            Ok(Reply::Done),
        ),
        io(1),
        io(2),
        exit(VcpuExit::Interrupted),
        (
            TraceCall::Decision,
            on_vcpu,
            Ok(Reply::Decision(RunDecision::Run)),
        ),
        io(3),
        io(4),
        io(5),
        exit(VcpuExit::Hlt),
        (TraceCall::Vcpu(VcpuCall::Destroy), on_vcpu, Ok(Reply::Done)),
    ];
    let events = numbered(calls);
    let replay = ReplayHypervisor::from_events(GuestArch::X86_64, events.clone());
    let monitor = replay.monitor();
    let recorder = Recorder::in_memory();
    let hv = RecordingHypervisor::new(Box::new(replay), recorder.clone());
    let mut created = hv.create_vm(vm, "a").unwrap();
    let mut replayed = created.create_vcpu(vcpu).unwrap();
    let mut seen = Vec::new();
    // Everything up to the decision, the kick included (whether to take it is the taker's).
    let taken = replayed.run_known(&mut |exit| {
        seen.push(exit.clone());
        TakeExit::Take
    });
    assert_eq!(taken, 3);
    assert_eq!(seen.last(), Some(&VcpuExit::Interrupted));
    // A decision is not a run: nothing is offered until it is served by its call.
    assert_eq!(replayed.run_known(&mut |_| TakeExit::Take), 0);
    assert_eq!(
        replayed.control_point(RunDecision::Run).unwrap(),
        RunDecision::Run
    );
    // A left exit stays queued: the next call is served it, and checked.
    let mut offered = 0;
    let taken = replayed.run_known(&mut |_| {
        offered += 1;
        if offered == 2 {
            TakeExit::Leave
        } else {
            TakeExit::Take
        }
    });
    assert_eq!((taken, offered), (1, 2));
    let left = replayed.call(&VcpuCall::Run).unwrap();
    assert_eq!(Ok(left), events[7].outcome);
    // The last one taken ends the offer, though the queue holds more runs.
    assert_eq!(replayed.run_known(&mut |_| TakeExit::Last), 1);
    // The halt is still queued: a call of another kind diverges, the offer did not hide it.
    let error = replayed.call(&VcpuCall::Destroy).unwrap_err();
    let CallError::Replay(failure) = error else {
        panic!("{error}")
    };
    assert_eq!(failure.seq, Some(9), "{failure}");
    assert!(monitor.finish().is_err());
    // Recorded, the taken exits are the plain runs they were, in order.
    let recorded: Vec<(TraceCall, Result<Reply, Failure>)> = recorder
        .events()
        .into_iter()
        .filter(|e| e.stream == on_vcpu && e.call == TraceCall::Vcpu(VcpuCall::Run))
        .map(|e| (e.call, e.outcome))
        .collect();
    let expected: Vec<(TraceCall, Result<Reply, Failure>)> = events[2..9]
        .iter()
        .filter(|e| e.call == TraceCall::Vcpu(VcpuCall::Run))
        .map(|e| (e.call.clone(), e.outcome.clone()))
        .collect();
    assert_eq!(recorded, expected);
}

/// Replayed VMs whose memory has the same layout share one mapping (a replay only checks that
/// programs fit), a different layout gets its own, and each VM's memory is the layout it asked
/// for.
#[test]
fn replayed_vms_of_one_memory_layout_share_one_mapping() {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let add = |slot, size| VmCall::AddMemory {
        slot,
        guest_phys_addr: 0,
        size,
    };
    let layouts = [(VmId(0), 0x10000), (VmId(1), 0x10000), (VmId(2), 0x20000)];
    let mut calls = Vec::new();
    for &(vm, size) in &layouts {
        let name = format!("vm{}", vm.0);
        calls.push((
            TraceCall::System(SystemCall::CreateVm { vm, name }),
            Stream::Vm(vm),
            Ok(Reply::Done),
        ));
        calls.push((TraceCall::Vm(add(0, size)), Stream::Vm(vm), Ok(Reply::Done)));
    }
    let replay = ReplayHypervisor::from_events(GuestArch::X86_64, numbered(calls));
    let vms: Vec<_> = layouts
        .iter()
        .map(|&(vm, size)| {
            let mut created = replay.create_vm(vm, &format!("vm{}", vm.0)).unwrap();
            created.call(&add(0, size)).unwrap();
            created
        })
        .collect();
    let region = |k: usize| {
        let memory = vms[k].guest_memory();
        assert_eq!(memory.num_regions(), 1);
        let region = memory.iter().next().unwrap();
        assert_eq!(
            region.len(),
            layouts[k].1,
            "vm{k}'s memory is its own layout"
        );
        region.as_ptr()
    };
    assert_eq!(region(0), region(1), "one layout, one mapping");
    assert_ne!(region(0), region(2), "another layout, another mapping");
}
