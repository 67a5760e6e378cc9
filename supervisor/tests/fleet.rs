//! The fleet runtime on the real `/dev/kvm`: VMs controlled while others run, failures kept to
//! the VM they happen in, and a recorded control session that replays to the same transcript.
//!
//! Every test prints `SKIPPED <test>: ...` and passes where `/dev/kvm` cannot be used.

use protocol::Request;
use recorder::{HostFingerprint, JobInputs, RecordingHypervisor, Trace, TraceHeader, TraceWriter};
use std::sync::Arc;
use std::time::{Duration, Instant};
use supervisor::commands::replay_trace;
use supervisor::common::COMMAND_SERVE;
use supervisor::fleet::lifecycle::{ExitReason, Lifecycle};
use supervisor::fleet::{ControlValue, Fleet, StartMode};
use supervisor::report::{self, VmState};
use supervisor::spec;
use vcpu::hypervisor::backend::{Kick, Vcpu, Vm};
use vcpu::hypervisor::kvm::KvmHypervisor;
use vcpu::{
    CallError, GuestArch, Hypervisor, LockRefusal, Reply, RunDecision, SystemCall, VcpuCall,
    VcpuId, VmId,
};

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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Three long-running VMs (they would take minutes to finish on their own).
const LONG_FLEET: &str = r#"
name = "control"

[[vm]]
name = "steady"
vcpus = 2
probe_repeats = 100000

[[vm]]
name = "paused"
vcpus = 2
probe_repeats = 100000
cpu = { hide = ["avx2"] }

[[vm]]
name = "stopped"
vcpus = 1
probe_repeats = 100000
"#;

/// The state of the newest VM named `vm` (a removed VM's name can be taken again).
fn state(fleet: &Fleet, vm: &str) -> String {
    fleet
        .list()
        .into_iter()
        .rev()
        .find(|v| v.name == vm)
        .map(|v| v.state)
        .unwrap_or_else(|| panic!("{vm} is not listed"))
}

/// Pause, resume and stop VMs while the others keep running; a CPU-model change is refused once
/// a VM ran and accepted before; then the recorded session replays to the same transcript.
#[test]
fn a_controlled_fleet_replays_to_the_same_transcript() {
    let Some(kvm) = kvm("a_controlled_fleet_replays_to_the_same_transcript") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("vmfleet-fleet-{}", std::process::id()));
    // A directory left by an earlier run whose process had the same id must not fail this one.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("control.trace");
    let header = TraceHeader::new(
        "test",
        GuestArch::X86_64,
        HostFingerprint::default(),
        JobInputs {
            command: COMMAND_SERVE.into(),
            spec_source: "LONG_FLEET".into(),
            spec_text: LONG_FLEET.into(),
        },
    );
    let (recorder, writer) = TraceWriter::create_keeping_events(&path, &header).unwrap();
    let hv: Arc<dyn Hypervisor> =
        Arc::new(RecordingHypervisor::new(Box::new(kvm), recorder.clone()));
    let spec = spec::parse(LONG_FLEET, "LONG_FLEET").unwrap();
    let live = runtime().block_on(async {
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
        let ask = |call: Request| {
            let fleet = &fleet;
            async move {
                let shown = call.to_string();
                let result = fleet.handle(call).await;
                eprintln!("{shown} -> {}", supervisor::fleet::reply_line(&result));
                result
            }
        };

        ask(Request::Pause {
            vm: "paused".into(),
        })
        .await
        .unwrap();
        assert_eq!(state(&fleet, "paused"), "paused");
        assert_eq!(state(&fleet, "steady"), "running");
        // The lock: once run, a changed model is refused, the same one is not.
        let refused = ask(Request::SetModel {
            vm: "steady".into(),
            hide: vec!["sse4_2".into()],
            set: vec![],
        })
        .await
        .expect_err("a changed model after the first run");
        // People see the change and the rule first, in one short line; the trace keeps the
        // one-line words replays compare.
        let shown = refused.to_string();
        let first = shown.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("steady: vm")
                && first.contains("/vcpu0: CPUID 0x1.0.ecx ")
                && first.contains(" 1 → 0"),
            "{shown}"
        );
        assert!(
            first.ends_with(vcpu::hypervisor::headline::LOCK_RULE),
            "{shown}"
        );
        assert!(
            first.chars().count() <= "steady: ".len() + vcpu::hypervisor::headline::HEADLINE_MAX
        );
        assert!(shown.contains("\n  refused write: SET_CPUID2"), "{shown}");
        let recorded = supervisor::fleet::reply_line(&Err(refused));
        assert!(
            recorded.starts_with("error: steady: vmfleet refused SET_CPUID2")
                && !recorded.contains('\n'),
            "{recorded}"
        );
        ask(Request::SetModel {
            vm: "paused".into(),
            hide: vec!["avx2".into()],
            set: vec![],
        })
        .await
        .expect("the same model again");
        ask(Request::Resume {
            vm: "paused".into(),
        })
        .await
        .unwrap();
        assert_eq!(state(&fleet, "paused"), "running");

        let asked = Instant::now();
        let stopped = ask(Request::Stop {
            vm: "stopped".into(),
        })
        .await
        .unwrap();
        let latency = asked.elapsed();
        eprintln!("stop latency of a spinning 1-vCPU VM: {latency:?}");
        let ControlValue::Status { status, .. } = stopped else {
            panic!("{stopped:?}")
        };
        assert_eq!(status.lifecycle, Lifecycle::Exited(ExitReason::Stopped));
        assert_eq!(state(&fleet, "steady"), "running");

        // A new VM: its model can change before it runs.
        ask(Request::Create {
            spec: "[[vm]]\nname = \"late\"\nvcpus = 1\nprobe_repeats = 3\n".into(),
        })
        .await
        .unwrap();
        ask(Request::SetModel {
            vm: "late".into(),
            hide: vec!["x2apic".into()],
            set: vec![],
        })
        .await
        .expect("a model change before the first run");
        // Started paused: every vCPU entered the guest once and waits there for `resume`.
        ask(Request::Start {
            vm: "late".into(),
            paused: true,
        })
        .await
        .unwrap();
        assert_eq!(state(&fleet, "late"), "paused");
        ask(Request::Resume { vm: "late".into() }).await.unwrap();
        fleet.wait_exited("late").await.unwrap();
        assert_eq!(state(&fleet, "late"), "exited (guest halted)");
        ask(Request::Remove {
            vm: "stopped".into(),
        })
        .await
        .unwrap();
        assert_eq!(state(&fleet, "stopped"), "removed");
        // Unknown VMs and bad requests are errors, not crashes.
        assert!(ask(Request::Pause { vm: "nope".into() }).await.is_err());
        assert!(
            ask(Request::Create {
                spec: "[[vm]\n".into()
            })
            .await
            .is_err()
        );
        let ControlValue::Shutdown(report) = ask(Request::Shutdown).await.unwrap() else {
            panic!("shutdown reports")
        };
        *report
    });
    let summary = writer.finish().unwrap();
    eprintln!("recorded {} events", summary.events);
    assert_eq!(live.vms.len(), 4);
    for vm in &live.vms {
        assert!(!vm.failed(), "{}: {:?}", vm.name, vm.state);
    }
    let late = live.vms.iter().find(|v| v.name == "late").unwrap();
    assert_eq!(late.state, VmState::Completed);
    assert_eq!(late.requested_hidden, vec!["x2apic".to_string()]);
    let live_transcript = report::transcript(&live, &header.host, &recorder.events());
    assert!(live_transcript.contains("CONTROL_POINT -> pause"));
    assert!(live_transcript.contains("CONTROL_POINT -> stop"));

    let trace = Trace::open(&path).unwrap();
    for round in 0..3 {
        let outcome = replay_trace(&trace, &spec).unwrap();
        if let Some(d) = &outcome.divergence {
            panic!("round {round}: {d}");
        }
        assert_eq!(
            outcome.transcript.as_deref(),
            Some(live_transcript.as_str()),
            "round {round}"
        );
    }
}

/// A backend decorator that makes the vCPU threads of one VM panic at their 50th run.
struct PanicAt {
    inner: Box<dyn Hypervisor>,
    victim: VmId,
}

struct PanicVm {
    inner: Box<dyn Vm>,
    victim: bool,
}

struct PanicVcpu {
    inner: Box<dyn Vcpu>,
    runs: u32,
    victim: bool,
}

impl Hypervisor for PanicAt {
    fn arch(&self) -> GuestArch {
        self.inner.arch()
    }
    fn call(&self, call: &SystemCall) -> Result<Reply, CallError> {
        self.inner.call(call)
    }
    fn create_vm(&self, vm: VmId, name: &str) -> Result<Box<dyn Vm>, CallError> {
        Ok(Box::new(PanicVm {
            inner: self.inner.create_vm(vm, name)?,
            victim: vm == self.victim,
        }))
    }
}

impl Vm for PanicVm {
    fn id(&self) -> VmId {
        self.inner.id()
    }
    fn call(&mut self, call: &vcpu::VmCall) -> Result<Reply, CallError> {
        self.inner.call(call)
    }
    fn create_vcpu(&mut self, vcpu: VcpuId) -> Result<Box<dyn Vcpu>, CallError> {
        Ok(Box::new(PanicVcpu {
            inner: self.inner.create_vcpu(vcpu)?,
            runs: 0,
            victim: self.victim,
        }))
    }
    fn guest_memory(&self) -> &vm_memory::GuestMemoryMmap {
        self.inner.guest_memory()
    }
}

impl Vcpu for PanicVcpu {
    fn id(&self) -> (VmId, VcpuId) {
        self.inner.id()
    }
    fn call(&mut self, call: &VcpuCall) -> Result<Reply, CallError> {
        if *call == VcpuCall::Run {
            self.runs += 1;
            assert!(
                !(self.victim && self.runs == 50),
                "injected vCPU thread panic"
            );
        }
        self.inner.call(call)
    }
    fn note_refused(&mut self, call: &VcpuCall, refusal: &LockRefusal) -> Result<(), CallError> {
        self.inner.note_refused(call, refusal)
    }
    fn kicker(&self) -> Arc<dyn Kick> {
        self.inner.kicker()
    }
    fn control_point(&mut self, wanted: RunDecision) -> Result<RunDecision, CallError> {
        self.inner.control_point(wanted)
    }
}

/// One VM's vCPU thread panics: that VM fails with the reason, its other vCPU is stopped, the
/// other VMs run to completion.
#[test]
fn a_panicking_vcpu_thread_fails_only_its_vm() {
    let Some(kvm) = kvm("a_panicking_vcpu_thread_fails_only_its_vm") else {
        return;
    };
    let text = r#"
[[vm]]
name = "healthy"
vcpus = 2
probe_repeats = 3

[[vm]]
name = "victim"
vcpus = 2
probe_repeats = 100000

[[vm]]
name = "bystander"
vcpus = 1
probe_repeats = 3
"#;
    let spec = spec::parse(text, "test").unwrap();
    let hv: Arc<dyn Hypervisor> = Arc::new(PanicAt {
        inner: Box::new(kvm),
        victim: VmId(1),
    });
    let report = runtime()
        .block_on(supervisor::job::run_job(hv, &spec))
        .unwrap();
    let by_name = |n: &str| report.vms.iter().find(|v| v.name == n).unwrap();
    let victim = by_name("victim");
    match &victim.state {
        VmState::Failed(why) => assert!(why.contains("its thread panicked"), "{why}"),
        other => panic!("victim: {other:?}"),
    }
    assert!(victim.vcpus.iter().any(|v| v.end == "its thread panicked"));
    for name in ["healthy", "bystander"] {
        let vm = by_name(name);
        assert_eq!(vm.state, VmState::Completed, "{name}");
        assert!(!vm.failed(), "{name}");
    }
}

/// Stopping a VM whose guest spins is prompt: a kick, not a wait for the guest.
#[test]
fn stopping_a_spinning_guest_is_prompt() {
    let Some(kvm) = kvm("stopping_a_spinning_guest_is_prompt") else {
        return;
    };
    let spec = spec::parse(
        "[[vm]]\nname = \"spin\"\nvcpus = 2\nprobe_repeats = 100000\n",
        "test",
    )
    .unwrap();
    let hv: Arc<dyn Hypervisor> = Arc::new(kvm);
    runtime().block_on(async {
        let fleet = Fleet::new(hv, "spin").await.unwrap();
        fleet.create_all(spec.vms.clone()).await[0]
            .as_ref()
            .unwrap();
        fleet.start("spin").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let asked = Instant::now();
        let status = fleet.stop("spin").await.unwrap();
        let took = asked.elapsed();
        eprintln!("stop took {took:?}");
        assert_eq!(status.lifecycle, Lifecycle::Exited(ExitReason::Stopped));
        // Far below what the guest's 100000 passes would take (minutes): the kick worked.
        assert!(took < Duration::from_secs(5), "{took:?}");
        let report = fleet.shutdown().await;
        assert_eq!(report.vms[0].state, VmState::Stopped);
        assert!(
            report.vms[0]
                .vcpus
                .iter()
                .all(|v| v.end == "stopped by request")
        );
    });
}

/// Concurrent requests: a `wait` blocks nobody while it waits, one abandoned half-way ends
/// unrecorded, requests issued together all answer, a VM removed before it started says so and
/// its name is taken again. The control stream records each request when it completed, in an
/// order the replay re-issues one after the other with the same replies.
#[test]
fn concurrent_requests_record_an_order_that_replays() {
    let Some(kvm) = kvm("concurrent_requests_record_an_order_that_replays") else {
        return;
    };
    const FLEET: &str = "name = \"busy\"\n\n[[vm]]\nname = \"a\"\nvcpus = 2\nprobe_repeats = 100000\n\n[[vm]]\nname = \"b\"\nvcpus = 1\nprobe_repeats = 100000\n";
    let dir = std::env::temp_dir().join(format!("vmfleet-fleet-conc-{}", std::process::id()));
    // A directory left by an earlier run whose process had the same id must not fail this one.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("concurrent.trace");
    let header = TraceHeader::new(
        "test",
        GuestArch::X86_64,
        HostFingerprint::default(),
        JobInputs {
            command: COMMAND_SERVE.into(),
            spec_source: "FLEET".into(),
            spec_text: FLEET.into(),
        },
    );
    let (recorder, writer) = TraceWriter::create_keeping_events(&path, &header).unwrap();
    let hv: Arc<dyn Hypervisor> =
        Arc::new(RecordingHypervisor::new(Box::new(kvm), recorder.clone()));
    let spec = spec::parse(FLEET, "FLEET").unwrap();
    // Generous: only a hang (a request blocked behind a wait) comes anywhere near it.
    let hang = Duration::from_secs(10);
    let live = runtime().block_on(async {
        let fleet = Arc::new(
            Fleet::new(hv, &spec.name)
                .await
                .unwrap()
                .with_control_log(recorder.clone()),
        );
        for result in fleet.create_all(spec.vms.clone()).await {
            result.unwrap();
        }
        for (vm, result) in fleet.start_all(StartMode::Running, |_, _| {}).await {
            result.unwrap_or_else(|e| panic!("{vm}: {e}"));
        }
        let spawn = |call: Request| {
            let fleet = Arc::clone(&fleet);
            tokio::spawn(async move { fleet.handle(call).await })
        };
        let ask = |call: Request| {
            let shown = call.to_string();
            let task = spawn(call);
            async move {
                tokio::time::timeout(hang, task)
                    .await
                    .unwrap_or_else(|_| panic!("{shown} did not answer within {hang:?}"))
                    .unwrap()
            }
        };
        let waiting = spawn(Request::Wait { vm: "a".into() });
        let abandoned = spawn(Request::Wait { vm: "b".into() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Its client went away: the request ends there.
        abandoned.abort();
        assert!(abandoned.await.unwrap_err().is_cancelled());

        // Requests issued at once, with a wait outstanding: every one answers.
        let together = futures::future::join_all([
            ask(Request::Pause { vm: "b".into() }),
            ask(Request::Model { vm: "a".into() }),
            ask(Request::Create {
                spec: "[[vm]]\nname = \"c\"\nvcpus = 1\nprobe_repeats = 2\n".into(),
            }),
            ask(Request::Pause { vm: "nope".into() }),
        ])
        .await;
        assert!(together[0].is_ok(), "{:?}", together[0]);
        assert!(together[1].is_ok(), "{:?}", together[1]);
        assert!(together[2].is_ok(), "{:?}", together[2]);
        assert!(together[3].is_err());
        assert_eq!(state(&fleet, "b"), "paused");
        assert!(!waiting.is_finished(), "a is still running: the wait waits");

        // Removed before it started: a state of its own, not "completed"; the name is free.
        let removed = ask(Request::Remove { vm: "c".into() }).await.unwrap();
        let ControlValue::Removed(report) = &removed else {
            panic!("{removed:?}")
        };
        assert_eq!(report.state, VmState::RemovedBeforeStart);
        assert_eq!(state(&fleet, "c"), "removed before start");
        let gone = ask(Request::Wait { vm: "c".into() }).await.unwrap();
        assert_eq!(gone.summary(), "c exited (removed before start)");
        ask(Request::Create {
            spec: "[[vm]]\nname = \"c\"\nvcpus = 2\nprobe_repeats = 2\n".into(),
        })
        .await
        .expect("a removed VM's name can be taken again");
        assert_eq!(state(&fleet, "c"), "created");
        ask(Request::Start {
            vm: "c".into(),
            paused: false,
        })
        .await
        .unwrap();
        let halted = ask(Request::Wait { vm: "c".into() }).await.unwrap();
        assert_eq!(halted.summary(), "c exited (guest halted)");

        ask(Request::Resume { vm: "b".into() }).await.unwrap();
        ask(Request::Stop { vm: "a".into() }).await.unwrap();
        let waited = tokio::time::timeout(hang, waiting)
            .await
            .expect("the wait answers once a has stopped")
            .unwrap()
            .unwrap();
        assert_eq!(waited.summary(), "a exited (stopped)");
        let ControlValue::Shutdown(report) = ask(Request::Shutdown).await.unwrap() else {
            panic!("shutdown reports")
        };
        *report
    });
    writer.finish().unwrap();
    let states: Vec<(&str, &VmState)> = live
        .vms
        .iter()
        .map(|v| (v.name.as_str(), &v.state))
        .collect();
    assert_eq!(
        states,
        [
            ("a", &VmState::Stopped),
            ("b", &VmState::Stopped),
            ("c", &VmState::RemovedBeforeStart),
            ("c", &VmState::Completed),
        ]
    );

    let trace = Trace::open(&path).unwrap();
    trace.require_complete().unwrap();
    let control: Vec<String> = trace.control_events().map(|e| e.call.to_string()).collect();
    assert!(
        !control.iter().any(|c| c == "wait b"),
        "an abandoned wait is not recorded: {control:?}"
    );
    let at = |call: &str| {
        control
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("{call} in {control:?}"))
    };
    assert!(
        at("wait a") > at("stop a"),
        "a wait is recorded after the request that ended its VM: {control:?}"
    );
    let live_transcript = report::transcript(&live, &header.host, &recorder.events());
    for round in 0..2 {
        let outcome = replay_trace(&trace, &spec).unwrap();
        if let Some(d) = &outcome.divergence {
            panic!("round {round}: {d}");
        }
        assert_eq!(
            outcome.transcript.as_deref(),
            Some(live_transcript.as_str()),
            "round {round}"
        );
    }
}

/// Fleet-wide limits hold across requests: creates issued together share them, the one that
/// would exceed them is refused naming the limit and leaves nothing behind, and a removed VM
/// no longer counts.
#[test]
fn create_requests_share_the_fleet_limits() {
    let Some(kvm) = kvm("create_requests_share_the_fleet_limits") else {
        return;
    };
    let hv: Arc<dyn Hypervisor> = Arc::new(kvm);
    runtime().block_on(async {
        let fleet = Arc::new(
            Fleet::new(hv, "limited")
                .await
                .unwrap()
                .with_limits(supervisor::fleet::FleetLimits { vms: 100, vcpus: 8 }),
        );
        let creates = (0..5).map(|i| {
            let fleet = Arc::clone(&fleet);
            tokio::spawn(async move {
                fleet
                    .handle(Request::Create {
                        spec: format!("[[vm]]\nname = \"v{i}\"\nvcpus = 2\nmemory_mib = 1\n"),
                    })
                    .await
            })
        });
        let results: Vec<_> = futures::future::join_all(creates)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let refused: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        assert_eq!(refused.len(), 1, "5 x 2 vCPUs against 8: {results:?}");
        assert!(
            refused[0].contains("would bring the fleet to 10 vCPUs (it has 8); at most 8 vCPUs"),
            "{}",
            refused[0]
        );
        let listed = fleet.list();
        assert_eq!(
            listed.len(),
            4,
            "nothing of the refused request: {listed:?}"
        );
        assert_eq!(listed.iter().map(|v| v.vcpus).sum::<u32>(), 8);
        assert!(refused[0].contains("creating v"), "{}", refused[0]);

        // Several VMs in one request: all of them fit, or none is created.
        let two = "[[vm]]\nname = \"w\"\nvcpus = 1\nmemory_mib = 1\ncount = 2\n".to_string();
        let e = fleet
            .handle(Request::Create { spec: two.clone() })
            .await
            .expect_err("the fleet is full");
        assert!(e.to_string().contains("creating w-0"), "{e}");
        let victim = listed[0].name.clone();
        fleet.handle(Request::Remove { vm: victim }).await.unwrap();
        fleet
            .handle(Request::Create { spec: two })
            .await
            .expect("a removed VM's vCPUs are free again");
        let live: u32 = fleet
            .list()
            .iter()
            .filter(|v| !v.state.starts_with("removed"))
            .map(|v| v.vcpus)
            .sum();
        assert_eq!(live, 8);
        fleet.handle(Request::Shutdown).await.unwrap();
    });
}

/// A backend decorator under which creating the VM named `broken` fails.
struct FailCreate {
    inner: Box<dyn Hypervisor>,
}

impl Hypervisor for FailCreate {
    fn arch(&self) -> GuestArch {
        self.inner.arch()
    }
    fn call(&self, call: &SystemCall) -> Result<Reply, CallError> {
        self.inner.call(call)
    }
    fn create_vm(&self, vm: VmId, name: &str) -> Result<Box<dyn Vm>, CallError> {
        if name == "broken" {
            return Err(CallError::Backend("injected failure".into()));
        }
        self.inner.create_vm(vm, name)
    }
}

/// A create whose second VM fails to come up: the request fails naming that VM, and the VMs it
/// had made are torn down and forgotten (their names are free).
#[test]
fn a_create_is_all_or_nothing() {
    let Some(kvm) = kvm("a_create_is_all_or_nothing") else {
        return;
    };
    let hv: Arc<dyn Hypervisor> = Arc::new(FailCreate {
        inner: Box::new(kvm),
    });
    runtime().block_on(async {
        let fleet = Fleet::new(hv, "partial").await.unwrap();
        let spec = "[[vm]]\nname = \"first\"\nvcpus = 2\n\n[[vm]]\nname = \"broken\"\n\n\
                    [[vm]]\nname = \"third\"\n";
        let e = fleet
            .handle(Request::Create { spec: spec.into() })
            .await
            .expect_err("broken cannot be created");
        let e = e.to_string();
        assert!(
            e.contains("broken failed to come up") && e.contains("injected failure"),
            "{e}"
        );
        assert!(
            fleet.list().is_empty(),
            "nothing remains: {:?}",
            fleet.list()
        );
        fleet
            .handle(Request::Create {
                spec: "[[vm]]\nname = \"first\"\n".into(),
            })
            .await
            .expect("its names are free");
        assert_eq!(state(&fleet, "first"), "created");
        let report = fleet.shutdown().await;
        assert_eq!(report.vms.len(), 1, "{:?}", report.vms);
    });
}

/// A name taken again while a `wait` on its removed VM has not answered yet: whichever order
/// the requests take, the control stream replays, and the `wait` on the old VM is recorded
/// before the `create` that reuses its name (a replay binds `wait NAME` to the newest VM).
#[test]
fn a_name_reused_while_a_wait_on_it_is_outstanding_replays() {
    let Some(kvm) = kvm("a_name_reused_while_a_wait_on_it_is_outstanding_replays") else {
        return;
    };
    const FLEET: &str =
        "name = \"reuse\"\n\n[[vm]]\nname = \"r\"\nvcpus = 1\nprobe_repeats = 100000\n";
    let dir = std::env::temp_dir().join(format!("vmfleet-fleet-reuse-{}", std::process::id()));
    // A directory left by an earlier run whose process had the same id must not fail this one.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("reuse.trace");
    let header = TraceHeader::new(
        "test",
        GuestArch::X86_64,
        HostFingerprint::default(),
        JobInputs {
            command: COMMAND_SERVE.into(),
            spec_source: "FLEET".into(),
            spec_text: FLEET.into(),
        },
    );
    let (recorder, writer) = TraceWriter::create_keeping_events(&path, &header).unwrap();
    let hv: Arc<dyn Hypervisor> =
        Arc::new(RecordingHypervisor::new(Box::new(kvm), recorder.clone()));
    let spec = spec::parse(FLEET, "FLEET").unwrap();
    let hang = Duration::from_secs(10);
    let live = runtime().block_on(async {
        let fleet = Arc::new(
            Fleet::new(hv, &spec.name)
                .await
                .unwrap()
                .with_control_log(recorder.clone()),
        );
        for result in fleet.create_all(spec.vms.clone()).await {
            result.unwrap();
        }
        fleet.start_all(StartMode::Running, |_, _| {}).await;
        let spawn = |call: Request| {
            let fleet = Arc::clone(&fleet);
            tokio::spawn(async move { fleet.handle(call).await })
        };
        let waiting = spawn(Request::Wait { vm: "r".into() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let removed = spawn(Request::Remove { vm: "r".into() });
        // Queued behind the removal, and (mostly) ahead of the wait's record.
        tokio::task::yield_now().await;
        let created = spawn(Request::Create {
            spec: "[[vm]]\nname = \"r\"\nvcpus = 1\nprobe_repeats = 1\n".into(),
        });
        for (what, task) in [("wait", waiting), ("remove", removed), ("create", created)] {
            let answer = tokio::time::timeout(hang, task)
                .await
                .unwrap_or_else(|_| panic!("{what} did not answer within {hang:?}"))
                .unwrap();
            eprintln!("{what} -> {}", supervisor::fleet::reply_line(&answer));
        }
        let ControlValue::Shutdown(report) = fleet.handle(Request::Shutdown).await.unwrap() else {
            panic!("shutdown reports")
        };
        *report
    });
    writer.finish().unwrap();
    let trace = Trace::open(&path).unwrap();
    let control: Vec<(String, String)> = trace
        .control_events()
        .map(|e| {
            (
                e.call.to_string(),
                recorder::render::outcome(&e.outcome).to_string(),
            )
        })
        .collect();
    let at = |call: &str| control.iter().position(|(c, _)| c.starts_with(call));
    let create = at("create").expect("create recorded");
    if control[create].1.contains("ok") {
        assert!(
            at("wait r").expect("wait recorded") < create,
            "the wait on the old r comes before r is created again: {control:?}"
        );
    }
    let live_transcript = report::transcript(&live, &header.host, &recorder.events());
    let outcome = replay_trace(&trace, &spec).unwrap();
    if let Some(d) = &outcome.divergence {
        panic!("{d}\n{control:?}");
    }
    assert_eq!(
        outcome.transcript.as_deref(),
        Some(live_transcript.as_str())
    );
}

/// A shutdown for exit (what `vmfleet serve` ends with) stops every VM whatever its state and
/// reports on each as a teardown would, but closes nothing and ends no thread: no `DESTROY` is
/// recorded, the VMs' loop threads are still there afterwards, and the trace replays to the
/// same transcript (the replay takes the same path).
#[test]
fn a_shutdown_for_exit_closes_nothing_and_replays() {
    let Some(kvm) = kvm("a_shutdown_for_exit_closes_nothing_and_replays") else {
        return;
    };
    const FLEET: &str = "name = \"exiting\"\n\n\
        [[vm]]\nname = \"xrun\"\nvcpus = 2\nprobe_repeats = 100000\n\n\
        [[vm]]\nname = \"xpaused\"\nvcpus = 2\nprobe_repeats = 100000\n\n\
        [[vm]]\nname = \"xdone\"\nvcpus = 1\nprobe_repeats = 1\n";
    let dir = std::env::temp_dir().join(format!("vmfleet-fleet-exit-{}", std::process::id()));
    // A directory left by an earlier run whose process had the same id must not fail this one.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("exit.trace");
    let _ = std::fs::remove_file(&path);
    let header = TraceHeader::new(
        "test",
        GuestArch::X86_64,
        HostFingerprint::default(),
        JobInputs {
            command: COMMAND_SERVE.into(),
            spec_source: "FLEET".into(),
            spec_text: FLEET.into(),
        },
    );
    let (recorder, writer) = TraceWriter::create_keeping_events(&path, &header).unwrap();
    let hv: Arc<dyn Hypervisor> =
        Arc::new(RecordingHypervisor::new(Box::new(kvm), recorder.clone()));
    let spec = spec::parse(FLEET, "FLEET").unwrap();
    let hang = Duration::from_secs(20);
    let live = runtime().block_on(async {
        let fleet = Fleet::new(hv, &spec.name)
            .await
            .unwrap()
            .with_control_log(recorder.clone());
        for result in fleet.create_all(spec.vms.clone()).await {
            result.unwrap();
        }
        fleet.start_all(StartMode::Running, |_, _| {}).await;
        let ask = |call| async {
            tokio::time::timeout(hang, fleet.handle(call))
                .await
                .expect("answered in time")
        };
        ask(Request::Pause {
            vm: "xpaused".into(),
        })
        .await
        .unwrap();
        ask(Request::Wait { vm: "xdone".into() }).await.unwrap();
        // Created by request and never started.
        ask(Request::Create {
            spec: "[[vm]]\nname = \"xidle\"\nvcpus = 1\nprobe_repeats = 1\n".into(),
        })
        .await
        .unwrap();
        let ControlValue::Shutdown(report) = ask(Request::ShutdownForExit).await.unwrap() else {
            panic!("a shutdown reports")
        };
        let states: Vec<(String, VmState)> = report
            .vms
            .iter()
            .map(|v| (v.name.clone(), v.state.clone()))
            .collect();
        assert_eq!(
            states,
            [
                ("xrun".to_string(), VmState::Stopped),
                ("xpaused".to_string(), VmState::Stopped),
                ("xdone".to_string(), VmState::Completed),
                ("xidle".to_string(), VmState::Stopped),
            ]
        );
        for vm in fleet.list() {
            assert_eq!(vm.state, "removed", "{vm:?}");
        }
        *report
    });
    // Nothing was let go: the VMs' loop threads are parked, not ended (the threads of the VM
    // that halted on its own before the shutdown ended then, as always). Reading
    // /proc/self/task can skip entries while the other tests of this binary start and end
    // threads, so a few scans are pooled: a thread that has ended shows up in none of them.
    let expected = ["vm-xrun", "vm-xpaused", "vm-xdone", "vm-xidle"];
    let mut loops = std::collections::BTreeSet::new();
    for _ in 0..20 {
        loops.extend(
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|comm| comm.trim().to_string())
                .filter(|comm| comm.starts_with("vm-x")),
        );
        if expected.iter().all(|vm| loops.contains(*vm)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for vm in expected {
        assert!(
            loops.iter().any(|l| l == vm),
            "{vm}'s loop thread is parked until the process exits: {loops:?}"
        );
    }
    writer.finish().unwrap();
    let trace = Trace::open(&path).unwrap();
    let destroys: Vec<String> = trace
        .events
        .iter()
        .filter(|e| {
            matches!(
                e.call,
                recorder::TraceCall::Vm(vcpu::VmCall::Destroy)
                    | recorder::TraceCall::Vcpu(VcpuCall::Destroy)
            )
        })
        .map(|e| format!("{} {}", e.stream, e.call))
        .collect();
    assert!(destroys.is_empty(), "nothing was destroyed: {destroys:?}");
    let live_transcript = report::transcript(&live, &header.host, &recorder.events());
    let outcome = replay_trace(&trace, &spec).unwrap();
    if let Some(d) = &outcome.divergence {
        panic!("{d}");
    }
    assert_eq!(
        outcome.transcript.as_deref(),
        Some(live_transcript.as_str())
    );
    assert!(live_transcript.contains("shutdown for exit -> ok: shut down 4 VM(s)"));
}
