//! A folding-only recorder (`Recorder::folding`, what a replay uses): its recording objects fold
//! their calls straight into their stream's part of the transcript, and the transcript is the one
//! `render_streams` makes of the same calls recorded as events, byte for byte.

mod common;

use common::{Drive, Scripted, Variant, drive, record_trace, refusal, table};
use recorder::{Recorder, RecordingHypervisor, ReplayHypervisor, TraceCall, render_streams};
use vcpu::{
    CallError, Errno, GuestArch, Hypervisor, Reply, Stream, SystemCall, Vcpu, VcpuCall, VcpuId, Vm,
    VmId,
};

fn transcript(recorder: &Recorder) -> String {
    recorder.transcript().expect("a folding recorder").render()
}

#[test]
fn a_folded_replay_renders_what_its_events_render() {
    for (name, vcpus, threads) in [
        ("fold-one.trace", 1, false),
        ("fold-threads.trace", 4, true),
    ] {
        let opts = Drive {
            vcpus,
            threads,
            variant: Variant::Reference,
        };
        let (trace, _) = record_trace(name, &opts);
        for _ in 0..3 {
            let replay = ReplayHypervisor::new(&trace).unwrap();
            let monitor = replay.monitor();
            let recorder = Recorder::folding();
            let hv = RecordingHypervisor::new(Box::new(replay), recorder.clone());
            drive(&hv, &opts).unwrap();
            monitor.finish().unwrap();
            assert_eq!(transcript(&recorder), render_streams(&trace.events));
            assert_eq!(recorder.recorded(), trace.events.len() as u64);
            assert!(!recorder.keeps_events());
        }
    }
}

#[test]
fn control_events_fold_in_order_beside_the_objects_streams() {
    let recorder = Recorder::folding();
    let in_memory = Recorder::in_memory();
    for r in [&recorder, &in_memory] {
        let hv = RecordingHypervisor::new(
            Box::new(Scripted {
                runs_before_halt: 3,
            }),
            r.clone(),
        );
        r.record(
            Stream::Control,
            TraceCall::Control(protocol::Request::StopAll),
            Ok(Reply::Control("stopped 0".into())),
            None,
        );
        let mut vm = hv.create_vm(VmId(0), "alpha").unwrap();
        let mut vcpu = vm.create_vcpu(VcpuId(0)).unwrap();
        for _ in 0..4 {
            vcpu.call(&VcpuCall::Run).unwrap();
        }
        // A refusal, with its detail, between two runs of RUNs.
        vcpu.note_refused(
            &VcpuCall::SetCpuid2 { table: table() },
            &refusal(Errno::EINVAL),
        )
        .unwrap();
        let _ = vcpu.call(&VcpuCall::Run);
        r.record(
            Stream::Control,
            TraceCall::Control(protocol::Request::ShutdownForExit),
            Ok(Reply::Control("shut down".into())),
            None,
        );
    }
    let events = in_memory.events();
    let folded = recorder.transcript().unwrap();
    assert_eq!(folded.render(), render_streams(&events));
    assert!(folded.render().contains("      "), "the refusal's detail");
    let control: Vec<_> = events
        .iter()
        .filter(|e| e.stream == Stream::Control)
        .map(|e| (&e.call, &e.outcome))
        .collect();
    let replayed: Vec<_> = folded
        .control_events()
        .iter()
        .map(|e| (&e.call, &e.outcome))
        .collect();
    assert_eq!(replayed, control);
    assert_eq!(recorder.recorded(), events.len() as u64);
}

/// VM `alpha` and its vCPU 0 on a scripted backend, recorded by `recorder`.
fn alpha_vcpu(recorder: &Recorder) -> (Box<dyn Vm>, Box<dyn Vcpu>) {
    let hv = RecordingHypervisor::new(
        Box::new(Scripted {
            runs_before_halt: 3,
        }),
        recorder.clone(),
    );
    let mut vm = hv.create_vm(VmId(0), "alpha").unwrap();
    let vcpu = vm.create_vcpu(VcpuId(0)).unwrap();
    (vm, vcpu)
}

#[test]
fn a_transcript_is_a_snapshot() {
    let recorder = Recorder::folding();
    let (_vm, mut vcpu) = alpha_vcpu(&recorder);
    vcpu.call(&VcpuCall::Run).unwrap();
    let before = recorder.transcript().unwrap();
    let text = before.render();
    vcpu.call(&VcpuCall::Run).unwrap();
    assert_eq!(before.render(), text, "later calls do not reach a snapshot");
    assert_ne!(transcript(&recorder), text);
}

/// A transcript taken is the same text a copy renders, and the recorder has none left.
#[test]
fn a_taken_transcript_is_the_copy_and_leaves_none() {
    let recorder = Recorder::folding();
    let (_vm, mut vcpu) = alpha_vcpu(&recorder);
    vcpu.call(&VcpuCall::Run).unwrap();
    vcpu.call(&VcpuCall::Run).unwrap();
    let copy = recorder.transcript().unwrap().render();
    assert!(copy.contains("RUN x2"), "{copy}");
    let taken = recorder.take_transcript().unwrap();
    assert_eq!(taken.render(), copy);
    assert!(recorder.take_transcript().is_none());
    assert!(recorder.transcript().is_none());
}

/// A backend whose every call fails before reaching a kernel: nothing is an answer.
struct Broken;

impl Hypervisor for Broken {
    fn arch(&self) -> GuestArch {
        GuestArch::X86_64
    }
    fn call(&self, _: &SystemCall) -> Result<Reply, CallError> {
        Err(CallError::Backend("broken".into()))
    }
    fn create_vm(&self, _: VmId, _: &str) -> Result<Box<dyn Vm>, CallError> {
        Err(CallError::Backend("broken".into()))
    }
}

#[test]
fn a_stream_with_no_answer_has_no_part() {
    let recorder = Recorder::folding();
    let hv = RecordingHypervisor::new(Box::new(Broken), recorder.clone());
    assert!(hv.call(&SystemCall::GetApiVersion).is_err());
    assert!(hv.create_vm(VmId(0), "alpha").is_err());
    assert_eq!(transcript(&recorder), "");
    assert_eq!(recorder.recorded(), 0);

    // A kernel error is an answer, so VM 7 has its part; VM 0 answered nothing again.
    let in_memory = Recorder::in_memory();
    for r in [&recorder, &in_memory] {
        let hv = RecordingHypervisor::new(
            Box::new(Scripted {
                runs_before_halt: 0,
            }),
            r.clone(),
        );
        hv.call(&SystemCall::GetApiVersion).unwrap();
        assert!(hv.create_vm(VmId(7), "big").is_err());
    }
    assert_eq!(transcript(&recorder), render_streams(&in_memory.events()));
    let text = transcript(&recorder);
    assert!(
        text.ends_with("\n\nvm7\n  CREATE_VM vm7 name=\"big\" -> ENOMEM (kernel)\n"),
        "{text}"
    );
}

#[test]
fn folding_again_keeps_what_was_folded() {
    let recorder = Recorder::folding();
    let (_vm, mut vcpu) = alpha_vcpu(&recorder);
    vcpu.call(&VcpuCall::Run).unwrap();
    let before = transcript(&recorder);
    recorder.fold_transcript();
    assert_eq!(transcript(&recorder), before);
    vcpu.call(&VcpuCall::Run).unwrap();
    assert!(
        transcript(&recorder).contains("RUN x2"),
        "{}",
        transcript(&recorder)
    );
}
