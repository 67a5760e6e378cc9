//! Bounded recording: past a vCPU's `record_exits` budget its counted exits are folded into
//! summaries (`RUN_COUNTED -> COUNTED x…`), recorded before the vCPU's next other call or when it
//! is dropped; a replay serves the summaries, and the replayed run's report and transcript match.

mod common;

use common::Scripted;
use recorder::{Event, Recorder, RecordingHypervisor, ReplayHypervisor, TraceCall, render_streams};
use vcpu::guests::{ExitDecoder, Step};
use vcpu::runtime::runner::{ProbeEnd, RunLimits, RunOutcome, run_decoded};
use vcpu::{
    GuestArch, Hypervisor, Reply, RunControl, Stream, VcpuCall, VcpuExit, VcpuId, VmHandle, VmId,
};

/// Takes every exit; done at `HLT`.
struct Anything;

impl ExitDecoder for Anything {
    type Report = ();
    fn feed(&mut self, exit: &VcpuExit) -> Result<Step, String> {
        Ok(if *exit == VcpuExit::Hlt {
            Step::Done
        } else {
            Step::Continue
        })
    }
    fn finish(self) {}
}

/// Run one vCPU of one VM on `hv` under `limits`; destroy it unless `drop_only`.
fn run_one(hv: &dyn Hypervisor, limits: RunLimits, drop_only: bool) -> RunOutcome<()> {
    let vm = VmHandle::new(hv.create_vm(VmId(0), "alpha").unwrap(), "alpha", hv.arch());
    let vcpu = vm.create_vcpu(VcpuId(0)).unwrap();
    let outcome = run_decoded(&vcpu, Anything, limits, &RunControl::new(), &mut |_| {});
    if !drop_only {
        vcpu.plain_call(VcpuCall::Destroy).unwrap();
    }
    drop(vcpu);
    outcome
}

fn record(
    runs_before_halt: u32,
    limits: RunLimits,
    drop_only: bool,
) -> (RunOutcome<()>, Vec<Event>) {
    let recorder = Recorder::in_memory();
    let hv = RecordingHypervisor::new(Box::new(Scripted { runs_before_halt }), recorder.clone());
    let outcome = run_one(&hv, limits, drop_only);
    (outcome, recorder.events())
}

fn limits(record_exits: u64) -> RunLimits {
    RunLimits {
        exit_budget: None,
        record_exits: Some(record_exits),
        pause_at_first_exit: false,
    }
}

fn vcpu_calls(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.stream == Stream::Vcpu(VmId(0), VcpuId(0)))
        .map(|e| match &e.outcome {
            Ok(reply) => format!("{} -> {reply}", e.call),
            Err(f) => format!("{} -> {}", e.call, f.errno),
        })
        .collect()
}

#[test]
fn counted_exits_fold_into_one_summary_recorded_before_the_next_call() {
    let (outcome, events) = record(1000, limits(10), false);
    assert!(
        matches!(&outcome.end, ProbeEnd::EndedBeyondBudget(e) if e.contains("exit #1001: HLT")),
        "{}",
        outcome.end
    );
    assert_eq!((outcome.exits, outcome.counted), (1001, 991));
    let calls = vcpu_calls(&events);
    // CREATE_VCPU, 10 RUNs, one summary of 990 I/O exits, the HLT (not foldable), DESTROY.
    assert_eq!(calls.len(), 14, "{calls:#?}");
    assert!(calls[1..11].iter().all(|c| c.starts_with("RUN -> IO_OUT")));
    assert!(
        calls[11].starts_with("RUN_COUNTED -> COUNTED x990: IO_OUT x990 (digest "),
        "{}",
        calls[11]
    );
    assert_eq!(calls[12], "RUN_COUNTED -> HLT");
    assert_eq!(calls[13], "DESTROY_VCPU -> ok");
    let transcript = render_streams(&events);
    assert!(
        transcript.contains(
            "  RUN x10 -> IO_OUT x10\n  RUN_COUNTED x991 -> HLT x1, IO_OUT x990 (digest "
        ),
        "{transcript}"
    );
}

#[test]
fn a_pending_summary_is_recorded_when_the_vcpu_is_dropped() {
    let limits = RunLimits {
        exit_budget: Some(500),
        ..limits(100)
    };
    let (outcome, events) = record(1000, limits, true);
    assert!(
        matches!(outcome.end, ProbeEnd::ExitBudget),
        "{}",
        outcome.end
    );
    let calls = vcpu_calls(&events);
    let last = calls.last().unwrap();
    assert!(
        last.starts_with("RUN_COUNTED -> COUNTED x400: IO_OUT x400"),
        "{last}"
    );
}

#[test]
fn a_summarised_run_replays_with_the_same_outcome_and_transcript() {
    for (runs, record_exits, exit_budget) in
        [(1000, 10, None), (5000, 1, Some(3000)), (50, 100, None)]
    {
        let limits = RunLimits {
            exit_budget,
            ..limits(record_exits)
        };
        let (live, events) = record(runs, limits, false);
        let replay = ReplayHypervisor::from_events(GuestArch::X86_64, events.clone());
        let monitor = replay.monitor();
        let recorder = Recorder::in_memory();
        let hv = RecordingHypervisor::new(Box::new(replay), recorder.clone());
        let replayed = run_one(&hv, limits, false);
        monitor.finish().unwrap();
        assert_eq!(
            (replayed.exits, replayed.counted),
            (live.exits, live.counted)
        );
        assert_eq!(replayed.end.to_string(), live.end.to_string());
        assert_eq!(render_streams(&recorder.events()), render_streams(&events));
    }
}

#[test]
fn summaries_split_in_time_render_as_one_line() {
    let (_, events) = record(1000, limits(10), false);
    // Cut the one summary in two, as a live run does every second: the transcript is the same.
    let mut split: Vec<Event> = Vec::new();
    for event in &events {
        match &event.outcome {
            Ok(Reply::Exit(VcpuExit::Counted(summary))) if summary.runs > 1 => {
                let mut first = vcpu::ExitSummary::default();
                for _ in 0..summary.runs / 2 {
                    first.add(&VcpuExit::IoOut {
                        port: 0,
                        data: vec![].into(),
                    });
                }
                let mut second = summary.clone();
                second.runs -= first.runs;
                let kind = second.kinds.get_mut("IO_OUT").unwrap();
                kind.count -= first.runs;
                kind.digest = kind.digest.wrapping_sub(first.kinds["IO_OUT"].digest);
                for part in [first, second] {
                    let mut e = event.clone();
                    e.outcome = Ok(Reply::Exit(VcpuExit::Counted(part)));
                    split.push(e);
                }
            }
            _ => split.push(event.clone()),
        }
    }
    assert_eq!(split.len(), events.len() + 1);
    assert!(
        split
            .iter()
            .any(|e| e.call == TraceCall::Vcpu(VcpuCall::RunCounted))
    );
    assert_eq!(render_streams(&split), render_streams(&events));
}

#[test]
fn a_trace_file_keeps_summaries_and_trace_show_counts_them() {
    let (_, events) = record(1000, limits(10), false);
    let path = common::scratch("summaries.trace");
    let (recorder, writer) = recorder::TraceWriter::create(&path, &common::header()).unwrap();
    for e in events.clone() {
        recorder.record(e.stream, e.call, e.outcome, e.detail);
    }
    writer.finish().unwrap();
    let trace = recorder::Trace::open(&path).unwrap();
    let read: Vec<String> = trace
        .events
        .iter()
        .map(|e| format!("{} {:?}", e.call, e.outcome))
        .collect();
    let written: Vec<String> = events
        .iter()
        .map(|e| format!("{} {:?}", e.call, e.outcome))
        .collect();
    assert_eq!(read, written);
    let text = recorder::show_text(&trace);
    assert!(
        text.contains(" vm0/vcpu0 RUN_COUNTED -> COUNTED x990: IO_OUT x990 (digest "),
        "{text}"
    );
    assert!(
        text.contains(
            "\nsummaries: 1 event(s) stand for 990 exits beyond the record_exits budget \
             (counted, not decoded)\nend: "
        ),
        "{text}"
    );
    let json = recorder::show_json_lines(&trace);
    let summary = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["call"] == "RUN_COUNTED")
        .unwrap();
    assert_eq!(
        summary["raw"]["outcome"]["Ok"]["Exit"]["Counted"]["runs"],
        990
    );
    let _ = std::fs::remove_file(&path);
}

/// A vCPU whose every run takes 17 ms: 64 of them (the recorder's folds between two looks at the
/// clock) take over a second.
struct Slow;

impl vcpu::Vcpu for Slow {
    fn id(&self) -> (VmId, VcpuId) {
        (VmId(0), VcpuId(0))
    }
    fn call(&mut self, call: &VcpuCall) -> Result<Reply, vcpu::CallError> {
        Ok(match call {
            VcpuCall::Run | VcpuCall::RunCounted => {
                std::thread::sleep(std::time::Duration::from_millis(17));
                Reply::Exit(VcpuExit::IoOut {
                    port: 1,
                    data: vec![2].into(),
                })
            }
            _ => Reply::Done,
        })
    }
    fn note_refused(&mut self, _: &VcpuCall, _: &vcpu::LockRefusal) -> Result<(), vcpu::CallError> {
        Ok(())
    }
    fn kicker(&self) -> std::sync::Arc<dyn vcpu::Kick> {
        std::sync::Arc::new(vcpu::NoKick)
    }
    fn control_point(
        &mut self,
        wanted: vcpu::RunDecision,
    ) -> Result<vcpu::RunDecision, vcpu::CallError> {
        Ok(wanted)
    }
}

#[test]
fn a_summary_pending_for_a_second_is_recorded() {
    let recorder = Recorder::in_memory();
    let mut vcpu =
        recorder::RecordingVcpu::new(VmId(0), VcpuId(0), Box::new(Slow), recorder.clone());
    let started = std::time::Instant::now();
    for _ in 0..70 {
        vcpu::Vcpu::call(&mut vcpu, &VcpuCall::RunCounted).unwrap();
    }
    assert!(started.elapsed() >= recorder::SUMMARY_INTERVAL);
    let runs = |events: &[Event]| -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match &e.outcome {
                Ok(Reply::Exit(VcpuExit::Counted(s))) => Some(s.runs),
                _ => None,
            })
            .collect()
    };
    assert_eq!(runs(&recorder.events()), vec![64], "due after a second");
    drop(vcpu);
    assert_eq!(
        runs(&recorder.events()),
        vec![64, 6],
        "the rest when dropped"
    );
}
