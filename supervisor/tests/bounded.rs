//! Bounded recording on the real `/dev/kvm`: a guest that keeps running past its `record_exits`
//! budget is traced as its first exits one by one and then a few summaries, and the trace
//! replays to the same transcript.
//!
//! Every test prints `SKIPPED <test>: ...` and passes where `/dev/kvm` cannot be used.

use protocol::Request;
use recorder::{HostFingerprint, JobInputs, RecordingHypervisor, Trace, TraceHeader, TraceWriter};
use std::sync::Arc;
use std::time::Duration;
use supervisor::commands::replay_trace;
use supervisor::common::COMMAND_SERVE;
use supervisor::fleet::{ControlValue, Fleet, StartMode};
use supervisor::report;
use supervisor::spec;
use vcpu::hypervisor::kvm::KvmHypervisor;
use vcpu::{GuestArch, Hypervisor, Reply, Stream, VcpuCall, VcpuExit, VcpuId, VmId};

fn kvm(test: &str) -> Option<KvmHypervisor> {
    match KvmHypervisor::open() {
        Ok(kvm) if kvm.arch() == GuestArch::X86_64 => Some(kvm),
        Ok(kvm) => {
            vcpu::skip::skipped(
                test,
                format!("the fleet runs x86 guests, this host runs {}", kvm.arch()),
            );
            None
        }
        Err(e) => {
            vcpu::skip::skipped(test, format!("/dev/kvm unusable: {e}"));
            None
        }
    }
}

/// One VM of two vCPUs that probe until stopped, 200 exits each recorded whole.
const SPINNING: &str = r#"
name = "bounded"

[[vm]]
name = "spin"
vcpus = 2
probe_repeats = 0
record_exits = 200
"#;

const BUDGET: usize = 200;

#[test]
fn a_guest_running_past_its_budget_is_summarised_and_replays() {
    let Some(kvm) = kvm("a_guest_running_past_its_budget_is_summarised_and_replays") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("vmfleet-bounded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bounded.trace");
    let header = TraceHeader::new(
        "test",
        GuestArch::X86_64,
        HostFingerprint::default(),
        JobInputs {
            command: COMMAND_SERVE.into(),
            spec_source: "SPINNING".into(),
            spec_text: SPINNING.into(),
        },
    );
    let (recorder, writer) = TraceWriter::create_keeping_events(&path, &header).unwrap();
    let hv: Arc<dyn Hypervisor> =
        Arc::new(RecordingHypervisor::new(Box::new(kvm), recorder.clone()));
    let spec = spec::parse(SPINNING, "SPINNING").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let live = runtime.block_on(async {
        let fleet = Fleet::new(hv, &spec.name)
            .await
            .unwrap()
            .with_control_log(recorder.clone());
        for result in fleet.create_all(spec.vms.clone()).await {
            result.unwrap();
        }
        for (vm, result) in fleet.start_all(StartMode::Running, |_, _| {}).await {
            result.unwrap_or_else(|e| panic!("{vm}: {e}"));
        }
        // Over a second: at least one summary falls due while the guest runs.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let ControlValue::Shutdown(report) = fleet.handle(Request::Shutdown).await.unwrap() else {
            panic!("shutdown reports")
        };
        *report
    });
    let summary = writer.finish().unwrap();
    eprintln!(
        "recorded {} events, {} bytes",
        summary.events,
        std::fs::metadata(&path).unwrap().len()
    );
    let vm = &live.vms[0];
    assert!(!vm.failed(), "{:?}", vm.state);
    let events = recorder.events();
    for (index, v) in vm.vcpus.iter().enumerate() {
        let stream = Stream::Vcpu(VmId(0), VcpuId(index as u32));
        let on = |call: VcpuCall| {
            events
                .iter()
                .filter(|e| e.stream == stream && e.call == recorder::TraceCall::Vcpu(call.clone()))
                .collect::<Vec<_>>()
        };
        let runs = on(VcpuCall::Run);
        let counted = on(VcpuCall::RunCounted);
        let summaries = counted
            .iter()
            .filter_map(|e| match &e.outcome {
                Ok(Reply::Exit(VcpuExit::Counted(s))) => Some(s.runs),
                _ => None,
            })
            .collect::<Vec<_>>();
        eprintln!(
            "vcpu{index}: {} exits, {} counted; {} RUN, {} RUN_COUNTED events ({} summaries)",
            v.exits,
            v.exits_counted,
            runs.len(),
            counted.len(),
            summaries.len()
        );
        assert_eq!(
            runs.len(),
            BUDGET,
            "vcpu{index}: the budget's exits one by one"
        );
        assert!(v.exits_counted > 0, "vcpu{index} ran past its budget");
        assert_eq!(v.exits, BUDGET as u64 + v.exits_counted);
        assert!(
            !summaries.is_empty() && counted.len() <= 10,
            "{}",
            counted.len()
        );
        let summarised: u64 = summaries.iter().sum();
        assert_eq!(
            summarised + (counted.len() - summaries.len()) as u64,
            v.exits_counted
        );
    }
    let live_transcript = report::transcript(&live, &header.host, &recorder.events());
    assert!(
        live_transcript.contains("beyond the record_exits budget: counted, not decoded"),
        "{live_transcript}"
    );
    assert!(
        live_transcript.contains("  RUN_COUNTED x"),
        "{live_transcript}"
    );

    let trace = Trace::open(&path).unwrap();
    let outcome = replay_trace(&trace, &spec).unwrap();
    if let Some(d) = &outcome.divergence {
        panic!("{d}");
    }
    assert_eq!(
        outcome.transcript.as_deref(),
        Some(live_transcript.as_str())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A trace recorded before `record_exits` existed: its spec does not say, every exit is a `RUN`,
/// and a vCPU took more than the default budget. It replays as recorded.
#[test]
fn a_trace_without_exit_budgets_replays_every_exit_decoded() {
    let Some(kvm) = kvm("a_trace_without_exit_budgets_replays_every_exit_decoded") else {
        return;
    };
    const OLD: &str = "name = \"old\"\n[[vm]]\nname = \"spin\"\nprobe_repeats = 0\n";
    let dir = std::env::temp_dir().join(format!("vmfleet-bounded-old-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("old.trace");
    // The header of a trace from before `record_exits` (format 3 and older say so).
    let header = TraceHeader {
        exit_budgets: false,
        ..TraceHeader::new(
            "test",
            GuestArch::X86_64,
            HostFingerprint::default(),
            JobInputs {
                command: COMMAND_SERVE.into(),
                spec_source: "OLD".into(),
                spec_text: OLD.into(),
            },
        )
    };
    let (recorder, writer) = TraceWriter::create_keeping_events(&path, &header).unwrap();
    let hv: Arc<dyn Hypervisor> =
        Arc::new(RecordingHypervisor::new(Box::new(kvm), recorder.clone()));
    let spec = spec::parse(OLD, "OLD").unwrap();
    assert_eq!(spec.vms[0].record_exits, Some(spec::DEFAULT_RECORD_EXITS));
    // Recorded as the vmfleet before `record_exits` did: every exit decoded and recorded.
    let whole = spec.recorded_whole();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let live = runtime.block_on(async {
        let fleet = Fleet::new(hv, &whole.name)
            .await
            .unwrap()
            .with_control_log(recorder.clone());
        for result in fleet.create_all(whole.vms.clone()).await {
            result.unwrap();
        }
        for (vm, result) in fleet.start_all(StartMode::Running, |_, _| {}).await {
            result.unwrap_or_else(|e| panic!("{vm}: {e}"));
        }
        let limit = spec::DEFAULT_RECORD_EXITS as usize + 2000;
        let started = std::time::Instant::now();
        while recorder.recorded() < limit as u64 && started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ControlValue::Shutdown(report) = fleet.handle(Request::Shutdown).await.unwrap() else {
            panic!("shutdown reports")
        };
        *report
    });
    writer.finish().unwrap();
    let v = &live.vms[0].vcpus[0];
    if v.exits <= spec::DEFAULT_RECORD_EXITS {
        vcpu::skip::skipped(
            "a_trace_without_exit_budgets_replays_every_exit_decoded",
            format!("the guest took only {} exits in a minute", v.exits),
        );
        return;
    }
    assert_eq!(v.exits_counted, 0);
    let live_transcript = report::transcript(&live, &header.host, &recorder.events());
    let trace = Trace::open(&path).unwrap();
    let outcome = replay_trace(&trace, &spec).unwrap();
    if let Some(d) = &outcome.divergence {
        panic!("{d}");
    }
    assert_eq!(
        outcome.transcript.as_deref(),
        Some(live_transcript.as_str())
    );
    let _ = std::fs::remove_dir_all(&dir);
}
