//! Every fixture trace replays, deterministically, to its snapshot; and replay catches a damaged
//! trace and a supervisor that issues different calls.

use recorder::Trace;
use replay_tests::{fixture_name, fixture_traces, fixtures_dir};
use supervisor::commands::{ReplayOutcome, replay_trace};
use supervisor::spec::{self, FleetSpec};

/// The fixtures issue "x86 slice" promises: these must exist.
const REQUIRED: &[&str] = &[
    "control",
    "single",
    "fleet",
    "hidden",
    "lock",
    "arm64-6.12-max",
    "arm64-6.1-max",
    "arm64-6.12-neoverse-n1",
    "arm64-6.12-max+model",
    "arm64-6.12-max+serve",
];

/// The arm64 fixtures, recorded on real arm64 KVM in the arm64 lab.
const ARM64: &[&str] = &["arm64-6.12-max", "arm64-6.1-max", "arm64-6.12-neoverse-n1"];

fn load(name: &str) -> (Trace, FleetSpec) {
    let path = fixtures_dir().join(format!("{name}.trace"));
    let trace = Trace::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = spec::parse(&trace.header.job.spec_text, &trace.header.job.spec_source)
        .unwrap_or_else(|e| panic!("{name}: the spec in the header does not parse: {e}"));
    (trace, spec)
}

fn replay_ok(name: &str, trace: &Trace, spec: &FleetSpec) -> String {
    let outcome: ReplayOutcome =
        replay_trace(trace, spec).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    if let Some(d) = outcome.divergence {
        panic!("{name}: replay diverged: {d}");
    }
    outcome.transcript.expect("no divergence, so a transcript")
}

#[test]
fn kvm_is_unusable_when_the_xtask_says_so() {
    match std::env::var_os("VMFLEET_EXPECT_NO_KVM") {
        Some(_) => {
            let open = vcpu::hypervisor::kvm::KvmHypervisor::open();
            assert!(
                open.is_err(),
                "this run is meant to prove replay needs no KVM, but /dev/kvm opened"
            );
            eprintln!(
                "confirmed: /dev/kvm is unusable in this run ({})",
                open.err().unwrap()
            );
        }
        None => vcpu::skip::skipped(
            "kvm_is_unusable_when_the_xtask_says_so",
            "not the no-KVM run (cargo xtask test runs it with /dev/kvm unusable)",
        ),
    }
}

#[test]
fn the_required_fixtures_exist() {
    let names: Vec<String> = fixture_traces().iter().map(|p| fixture_name(p)).collect();
    for required in REQUIRED {
        assert!(
            names.iter().any(|n| n == required),
            "fixtures/{required}.trace is missing (have {names:?})"
        );
    }
}

#[test]
fn every_fixture_matches_its_spec_file() {
    for path in fixture_traces() {
        let name = fixture_name(&path);
        let (trace, _) = load(&name);
        let spec_path = fixtures_dir().join("specs").join(format!("{name}.toml"));
        // As `vmfleet run` read it: with the templates it names embedded, so a template edited
        // since the recording shows here too.
        let text = spec::read_spec_file(&spec_path)
            .unwrap_or_else(|e| panic!("{e} (every fixture is recorded from a spec)"));
        assert_eq!(
            trace.header.job.spec_text,
            text,
            "fixtures/{name}.trace was recorded from another version of {}; run `cargo xtask record {name}`",
            spec_path.display()
        );
    }
}

#[test]
fn every_fixture_replays_to_its_snapshot() {
    let traces = fixture_traces();
    assert!(!traces.is_empty(), "no fixtures to replay");
    for path in traces {
        let name = fixture_name(&path);
        let (trace, spec) = load(&name);
        let transcript = replay_ok(&name, &trace, &spec);
        insta::assert_snapshot!(name.clone(), transcript);
    }
}

#[test]
fn replay_is_deterministic() {
    for name in ["fleet", "lock"] {
        let (trace, spec) = load(name);
        let first = replay_ok(name, &trace, &spec);
        for _ in 0..3 {
            assert_eq!(
                replay_ok(name, &trace, &spec),
                first,
                "{name}: two replays differ"
            );
        }
    }
}

/// The fleet recorded through `vmfleet serve` under control requests: several VMs with two vCPUs
/// each, paused, resumed, stopped, one triple-faulting, a model change refused by the lock while
/// running and accepted before the first run, and every vCPU decision at its recorded exit.
#[test]
fn the_control_fixture_shows_a_fleet_under_control() {
    let (trace, spec) = load("control");
    assert_eq!(trace.header.job.command, "serve");
    let outcome = replay_trace(&trace, &spec).expect("replays");
    assert!(outcome.divergence.is_none(), "{:?}", outcome.divergence);
    let report = outcome.report.expect("report");
    let state = |name: &str| {
        report
            .vms
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("{name} in the report"))
    };
    assert!(report.vms.len() >= 5, "{} VMs", report.vms.len());
    assert!(report.vms.iter().all(|v| v.vcpu_count >= 2));
    match &state("crash").state {
        supervisor::report::VmState::Failed(why) => assert!(why.contains("guest fault"), "{why}"),
        other => panic!("crash: {other:?}"),
    }
    for healthy in ["web", "db", "batch", "late"] {
        assert!(
            !state(healthy).failed(),
            "{healthy}: {:?}",
            state(healthy).state
        );
    }
    assert_eq!(state("late").requested_hidden, vec!["x2apic".to_string()]);
    let transcript = outcome.transcript.expect("transcript");
    for needle in [
        "CONTROL_POINT -> pause",
        "CONTROL_POINT -> run",
        "CONTROL_POINT -> stop",
        "pause web -> ok: web paused",
        "set-model db hide=avx2,sse4_2 -> error:",
        "set-model late hide=x2apic -> ok: model of late: open",
        "pause nope -> error: no VM named",
    ] {
        assert!(transcript.contains(needle), "{needle:?} missing");
    }
    let refusal = transcript
        .lines()
        .find(|l| l.contains("set-model db hide=avx2,sse4_2"))
        .unwrap();
    assert!(refusal.contains("locked"), "{refusal}");
}

/// `arm64-6.12-max+serve`: an arm64 fleet under `vmfleet serve`, driven by `vmfleet ctl send` in
/// the arm64 lab (real arm64 KVM 6.12, `-cpu max`). VMs paused and resumed; `set-model` on a VM
/// that has run rewriting values it holds (accepted: ISAR0.AES, and PFR0.CSV3 although KVM cleared
/// PFR0.GIC at the first run) and changing a field (refused by the lock, EBUSY); a late VM created, its model lowered by `set-model` before it started
/// (judged by the model, written), started and finished; a VM stopped and removed; shutdown.
#[test]
fn the_arm64_serve_fixture_shows_an_arm64_fleet_under_control() {
    let name = "arm64-6.12-max+serve";
    let (trace, spec) = load(name);
    assert_eq!(trace.header.job.command, "serve");
    assert_eq!(trace.header.guest_arch, vcpu::GuestArch::Aarch64);
    let outcome = replay_trace(&trace, &spec).expect("replays");
    assert!(outcome.divergence.is_none(), "{:?}", outcome.divergence);
    let report = outcome.report.expect("report");
    let vm = |n: &str| {
        report
            .vms
            .iter()
            .find(|v| v.name == n)
            .unwrap_or_else(|| panic!("{n} in the report"))
    };
    for v in &report.vms {
        assert!(!v.failed(), "{}: {:?}", v.name, v.state);
        let arm64 = v.arm64.as_ref().expect("an arm64 VM reports its model");
        assert_eq!(arm64.disagreements(), 0, "{}", v.name);
    }
    // The late VM's model was lowered by set-model before its first run, and its guest saw it.
    let late = vm("late").arm64.as_ref().unwrap();
    assert!(
        late.writes
            .iter()
            .any(|w| w.register == "ID_AA64ISAR0_EL1" && w.sent && w.outcome == "written"),
        "{:?}",
        late.writes
    );
    for v in &vm("late").vcpus {
        assert!(v.arm64_guest.as_ref().unwrap().consistent());
    }
    let transcript = outcome.transcript.expect("transcript");
    for needle in [
        "CONTROL_POINT -> pause",
        "CONTROL_POINT -> stop",
        "pause web -> ok: web paused",
        "resume web -> ok: web running",
        "set-model db set=ID_AA64ISAR0_EL1.AES=0 -> ok: model of db: locked",
        "set-model db set=ID_AA64PFR0_EL1.CSV3=1 -> ok: model of db: locked",
        "set-model db set=ID_AA64PFR0_EL1.CSV3=0 -> error: db: vmfleet refused SET_ONE_REG",
        "set-model late set=ID_AA64ISAR0_EL1.SHA2=1 -> ok: model of late: open",
        "start late -> ok: late started",
        "wait late -> ok: late exited (guest halted)",
        "wait batch -> ok: batch exited (guest halted)",
        "pause nope -> error: no VM named",
        "remove db -> ok: removed db",
    ] {
        assert!(transcript.contains(needle), "{needle:?} missing");
    }
    let refusal = transcript
        .lines()
        .find(|l| l.contains("set-model db set=ID_AA64PFR0_EL1.CSV3=0"))
        .unwrap();
    assert!(
        refusal.contains("its CPU model is locked") && refusal.contains("(EBUSY)"),
        "{refusal}"
    );
    assert!(trace.events.iter().any(|e| matches!(
        &e.outcome,
        Err(f) if f.origin == vcpu::Origin::Lock && f.errno == vcpu::Errno::EBUSY
    )));
}

#[test]
fn the_lock_fixture_shows_refusal_and_identical_rewrite() {
    let (trace, spec) = load("lock");
    let outcome = replay_trace(&trace, &spec).expect("replays");
    let report = outcome.report.expect("report");
    let vm = &report.vms[0];
    assert!(
        vm.after_run
            .iter()
            .any(|a| a.action.starts_with("rewrite identical")
                && a.outcome == supervisor::report::Verdict::Allowed)
    );
    assert!(
        vm.after_run
            .iter()
            .any(|a| a.action.starts_with("hide sse4_2")
                && a.outcome == supervisor::report::Verdict::RefusedByLock)
    );
    // The refusal is in the trace as refused by vmfleet, not by the kernel.
    assert!(trace.events.iter().any(|e| matches!(
        &e.outcome,
        Err(f) if f.origin == vcpu::Origin::Lock && f.errno == vcpu::Errno::EINVAL
    )));
}

/// Each arm64 fixture shows, from real arm64 KVM: every write vmfleet sent was answered as it
/// predicted; a field raised above (or outside) what the host allows was refused by vmfleet
/// before the kernel, with the field named; the hidden TRNG service is NOT_SUPPORTED inside the
/// guest while the host's VMs see it; every guest read back its model; and a post-run change was
/// refused by vmfleet's lock (EBUSY class) while the identical rewrite was allowed. Every write
/// vmfleet refused was also sent to a scratch VM (`cross_check`), and the kernel refused it too.
#[test]
fn the_arm64_fixtures_show_the_model_validated_applied_seen_and_locked() {
    use supervisor::report::Verdict;
    for name in ARM64 {
        let (trace, spec) = load(name);
        assert_eq!(trace.header.guest_arch, vcpu::GuestArch::Aarch64, "{name}");
        let outcome = replay_trace(&trace, &spec).expect("replays");
        let report = outcome.report.expect("report");
        let by_name = |vm: &str| {
            report
                .vms
                .iter()
                .find(|v| v.name == vm)
                .unwrap_or_else(|| panic!("{name}: no VM {vm}"))
        };
        for vm in &report.vms {
            let arm64 = vm.arm64.as_ref().expect("an arm64 VM reports its model");
            assert!(arm64.registers_listed > 200, "{name}: {}", vm.name);
            // vmfleet's verdict and the real kernel's answer agree on every write it sent.
            assert_eq!(arm64.disagreements(), 0, "{name}: {}", vm.name);
            for v in &vm.vcpus {
                let guest = v.arm64_guest.as_ref().expect("the guest reported");
                assert!(guest.consistent(), "{name}: {}: {:?}", vm.name, guest);
                assert!(guest.registers_read > 50, "{name}");
            }
            assert!(!vm.failed(), "{name}: {} failed", vm.name);
        }
        // The hidden service: NOT_SUPPORTED inside; offered to the host-model VM.
        let trng = |vm: &str| -> String {
            by_name(vm).vcpus[0]
                .arm64_guest
                .as_ref()
                .unwrap()
                .calls
                .iter()
                .find(|c| c.starts_with("TRNG_VERSION"))
                .cloned()
                .unwrap()
        };
        assert_eq!(
            trng("lowered"),
            "TRNG_VERSION -> NOT_SUPPORTED (-1)",
            "{name}"
        );
        assert!(!trng("host").contains("NOT_SUPPORTED"), "{name}");
        // Lowering was accepted and sent; the refused writes never reached the kernel.
        let lowered = by_name("lowered").arm64.as_ref().unwrap();
        assert!(
            lowered
                .writes
                .iter()
                .all(|w| w.sent && w.outcome == "written")
        );
        let refused: Vec<_> = report
            .vms
            .iter()
            .flat_map(|vm| vm.arm64.as_ref().unwrap().writes.iter())
            .filter(|w| !w.sent)
            .collect();
        assert!(!refused.is_empty(), "{name}: no write was refused");
        for w in refused {
            assert!(
                w.verdict.starts_with("refused: ID_AA64"),
                "{name}: {}",
                w.verdict
            );
            assert!(
                w.verdict.contains("(bits "),
                "the field is named: {}",
                w.verdict
            );
            // Cross-checked on a scratch VM of the same kernel: it refused it too, same errno.
            let kernel = w
                .cross_check
                .as_deref()
                .unwrap_or_else(|| panic!("{name}: {} was not cross-checked", w.register));
            assert!(
                kernel.starts_with("the kernel refused it too"),
                "{name}: {kernel}"
            );
            assert!(w.agrees, "{name}: {}", w.register);
        }
        // The operator's table says the same in a word per VM.
        let table = supervisor::report::table(&report);
        let row = |vm: &str| {
            table
                .lines()
                .find(|l| l.starts_with(&format!("{vm} ")))
                .unwrap_or_else(|| panic!("{name}: no row for {vm} in\n{table}"))
                .to_string()
        };
        assert!(row("lowered").contains("= model"), "{}", row("lowered"));
        assert!(row("lowered").contains(" written"), "{}", row("lowered"));
        assert!(
            report
                .vms
                .iter()
                .any(|vm| row(&vm.name).contains("refused")),
            "{table}"
        );
        // The lock after the run: the change refused by vmfleet (EBUSY), the same value allowed.
        let after = &by_name("lowered").after_run;
        assert!(
            after
                .iter()
                .any(|a| a.action.starts_with("set ") && a.outcome == Verdict::RefusedByLock),
            "{name}"
        );
        assert!(
            after
                .iter()
                .any(|a| a.action == "rewrite identical" && a.outcome == Verdict::Allowed),
            "{name}"
        );
        assert!(trace.events.iter().any(|e| matches!(
            &e.outcome,
            Err(f) if f.origin == vcpu::Origin::Lock && f.errno == vcpu::Errno::EBUSY
        )));
    }
}

/// `arm64-6.12-max+model`, recorded on real arm64 KVM 6.12 (`-cpu max`): the issue-12 model met
/// the kernel and they agree. Every write vmfleet sent (AArch32 and ID_DFR0 fields lowered, whole
/// MPIDR/CLIDR/SMCCC_ARCH_WORKAROUND_1/ID_AA64ISAR0 writes, PFR0.EL1 = 0 after the floor probe)
/// was answered as predicted; the four it refused (an AArch32 raise, an SME and an FP8 field
/// raised, MIDR without capability 239) were refused by a scratch VM of the same kernel too, with
/// EINVAL; after the run a change was refused by the lock (EBUSY) while an identical rewrite and
/// PMUVer 0xF over 0 (the kernel's "no PMU" again) were allowed.
#[test]
fn the_arm64_model_fixture_agrees_with_the_real_kernel_on_every_write() {
    use supervisor::report::Verdict;
    let name = "arm64-6.12-max+model";
    let (trace, spec) = load(name);
    let outcome = replay_trace(&trace, &spec).expect("replays");
    let report = outcome.report.expect("report");
    let mut refused = Vec::new();
    for vm in &report.vms {
        assert!(!vm.failed(), "{}: failed: {:?}", vm.name, vm.state);
        let arm64 = vm.arm64.as_ref().expect("an arm64 VM reports its model");
        assert_eq!(arm64.disagreements(), 0, "{}", vm.name);
        for v in &vm.vcpus {
            let guest = v.arm64_guest.as_ref().expect("the guest reported");
            assert!(guest.consistent(), "{}: {:?}", vm.name, guest);
        }
        for w in &arm64.writes {
            assert!(w.agrees, "{}: {} {}", vm.name, w.register, w.verdict);
            if w.sent {
                assert_eq!(w.outcome, "written", "{}: {}", vm.name, w.register);
                continue;
            }
            let kernel = w
                .cross_check
                .as_deref()
                .unwrap_or_else(|| panic!("{}: {} was not cross-checked", vm.name, w.register));
            assert!(
                kernel.starts_with("the kernel refused it too (EINVAL)"),
                "{}: {kernel}",
                vm.name
            );
            refused.push((vm.name.as_str(), w.register.as_str()));
        }
    }
    assert_eq!(
        refused,
        [
            ("aarch32-raised", "ID_ISAR5_EL1"),
            ("fp8-sme", "ID_AA64SMFR0_EL1"),
            ("fp8-raised", "ID_AA64FPFR0_EL1"),
            ("midr", "MIDR_EL1"),
        ]
    );
    let vm = |n: &str| {
        report
            .vms
            .iter()
            .find(|v| v.name == n)
            .unwrap_or_else(|| panic!("no VM {n}"))
    };
    let sent = |n: &str| -> Vec<String> {
        vm(n)
            .arm64
            .as_ref()
            .unwrap()
            .writes
            .iter()
            .filter(|w| w.sent)
            .map(|w| w.register.clone())
            .collect()
    };
    assert_eq!(sent("aarch32-lowered"), ["ID_ISAR0_EL1", "ID_ISAR5_EL1"]);
    assert_eq!(sent("debug32"), ["ID_DFR0_EL1"]);
    assert_eq!(sent("el1-zero"), ["ID_AA64PFR0_EL1"]);
    assert_eq!(sent("whole").len(), 4, "{:?}", sent("whole"));
    // 6.12 has no EL0/EL1 floor: the probe's write of PFR0.EL1 = 0 was accepted.
    assert!(
        trace
            .events
            .iter()
            .any(|e| format!("{e:?}").contains("el-floor-probe"))
    );
    let after = |n: &str| -> Vec<(String, Verdict)> {
        vm(n)
            .after_run
            .iter()
            .map(|a| (a.action.clone(), a.outcome))
            .collect()
    };
    let locked = after("locked");
    assert_eq!(locked.len(), 4);
    for (action, outcome) in &locked[..3] {
        assert!(action.starts_with("set ") && *outcome == Verdict::RefusedByLock);
    }
    assert_eq!(
        locked[3],
        ("rewrite identical".to_string(), Verdict::Allowed)
    );
    // After the run the real kernel, asked on a scratch VM that has run, answered the three
    // refused writes as the lock did: EBUSY for the changed AES, EBUSY for EL0 = 0 (6.12 has no
    // EL0/EL1 floor, so the change is refused as a change, not as below a floor), and EINVAL for
    // a changed MIDR_EL1 (no capability 239: `set_imp_id_reg` refuses it before the run matters).
    let errnos = ["EBUSY", "EBUSY", "EINVAL"];
    for (report, errno) in vm("locked").after_run[..3].iter().zip(errnos) {
        let check = report.cross_check.as_ref().expect("cross-checked");
        assert!(check.agrees, "{}: {}", report.action, check.answer);
        assert!(check.answer.contains(errno), "{errno}: {}", check.answer);
        let message = report.message.as_deref().unwrap_or_default();
        assert!(
            message.contains(&format!("errno: {errno}")),
            "{errno}: {message}"
        );
    }
    let pmuver = after("pmuver");
    assert_eq!(pmuver.len(), 1);
    assert_eq!(pmuver[0].1, Verdict::Allowed, "{:?}", pmuver[0]);
}

#[test]
fn a_trace_edited_by_one_byte_is_refused_with_its_offset() {
    let bytes = std::fs::read(fixtures_dir().join("lock.trace")).unwrap();
    // Spread over the file: the magic, the header, events, the end marker.
    let positions = [
        0,
        9,
        20,
        bytes.len() / 4,
        bytes.len() / 2,
        bytes.len() * 3 / 4,
        bytes.len() - 3,
    ];
    for pos in positions {
        let mut edited = bytes.clone();
        edited[pos] ^= 0x5a;
        let err = match Trace::from_bytes(&edited) {
            Err(e) => e.to_string(),
            Ok(trace) => match trace.require_complete() {
                Err(e) => e.to_string(),
                Ok(()) => panic!("a one-byte edit at offset {pos} went unnoticed"),
            },
        };
        // The magic and the version field have fixed places; their errors say what they found.
        let says_where = err.contains("byte")
            || (pos < 8 && err.contains("not a vmfleet trace"))
            || ((8..12).contains(&pos) && err.contains("format version"));
        assert!(says_where, "edit at {pos}: error does not say where: {err}");
    }
}

#[test]
fn a_supervisor_issuing_different_calls_diverges() {
    let (trace, spec) = load("lock");
    // The same job with one more feature hidden (one the host offers, so the table changes):
    // vmfleet now sends a different SET_CPUID2.
    let mut changed = spec.clone();
    assert!(!changed.vms[0].cpu.hide.contains(&"x2apic".to_string()));
    changed.vms[0].cpu.hide.push("x2apic".into());
    let outcome = replay_trace(&trace, &changed).expect("replay runs");
    let d = outcome
        .divergence
        .expect("a different CPU model must diverge");
    let text = d.to_string();
    assert!(text.contains("SET_CPUID2"), "{text}");
    assert!(
        d.seq.is_some(),
        "the divergence names the recorded event: {text}"
    );
    assert!(outcome.transcript.is_none());

    // The guest is told to probe once more: the recorded guest halts after one pass, so this run
    // fails the VM and tears it down where the recorded run read the table back after its run.
    let mut longer = spec.clone();
    longer.vms[0].probe_repeats += 1;
    let d = replay_trace(&trace, &longer)
        .expect("replay runs")
        .divergence
        .expect("must diverge");
    let text = d.to_string();
    assert!(
        text.contains("expected GET_CPUID2") && text.contains("got DESTROY_VCPU"),
        "{text}"
    );
}

/// A lock refusal's first line says what changed (feature or register field), old → new, and the
/// rule, in at most 200 characters; the details follow on later lines. Checked on the refusals
/// the lock makes while replaying real recordings: the x86 post-run `hide` of `lock.trace`, and
/// the post-run `ID_AA64PFR0_EL1.CSV3` writes of the arm64 fixtures.
#[test]
fn lock_refusals_open_with_a_short_line_naming_the_change_and_the_rule() {
    let expected: &[(&str, &str)] = &[
        (
            "lock",
            "vm0/vcpu1: CPUID 0x1.0.ecx sse4_2 1 → 0 (and 1 more) refused: ",
        ),
        (
            "arm64-6.12-max",
            "vm0/vcpu0: ID_AA64PFR0_EL1.CSV3 1 → 0 refused: ",
        ),
        (
            "arm64-6.12-neoverse-n1",
            "vm0/vcpu0: ID_AA64PFR0_EL1.CSV3 1 → 0 refused: ",
        ),
        (
            "arm64-6.1-max",
            "vm0/vcpu0: ID_AA64PFR0_EL1.CSV3 0 → 1 refused: ",
        ),
    ];
    for (name, start) in expected {
        let (trace, spec) = load(name);
        let outcome = replay_trace(&trace, &spec).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let report = outcome
            .report
            .expect("a replay without divergence has a report");
        let messages: Vec<&str> = report
            .vms
            .iter()
            .flat_map(|vm| &vm.after_run)
            .filter(|a| a.outcome == supervisor::report::Verdict::RefusedByLock)
            .filter_map(|a| a.message.as_deref())
            .collect();
        assert!(!messages.is_empty(), "{name}: no lock refusal");
        for message in messages {
            let mut lines = message.lines();
            let first = lines.next().unwrap_or_default();
            assert!(
                first.chars().count() <= vcpu::hypervisor::headline::HEADLINE_MAX,
                "{name}: {} characters: {first}",
                first.chars().count()
            );
            assert!(first.starts_with(start), "{name}: {first}");
            assert!(
                first.ends_with(vcpu::hypervisor::headline::LOCK_RULE),
                "{name}: {first}"
            );
            let details: Vec<&str> = lines.collect();
            assert!(
                details.iter().any(|l| l.contains("refused write: SET_"))
                    && details.iter().any(|l| l.contains("errno: E")),
                "{name}: the details follow the first line: {message}"
            );
        }
    }
}

/// Every fixture (recorded in formats 1 and 2) converted to the current format (4: compressed
/// blocks, what `vmfleet trace convert` writes) reads back to the same header and each stream's
/// calls, is smaller, and replays to the very same transcript.
#[test]
fn every_fixture_converted_to_the_current_format_replays_the_same() {
    for path in fixture_traces() {
        let name = fixture_name(&path);
        let (trace, spec) = load(&name);
        let bytes = recorder::encode_trace(&trace.header, &trace.events, trace.is_complete())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let original = std::fs::metadata(&path).unwrap().len();
        assert!(
            (bytes.len() as u64) < original,
            "{name}: format 4 is {} bytes, the original {original}",
            bytes.len()
        );
        let converted = Trace::from_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(converted.header.format_version, recorder::FORMAT_VERSION);
        assert_eq!(converted.header.job, trace.header.job, "{name}");
        assert_eq!(converted.header.host, trace.header.host, "{name}");
        // Each stream's calls in order (a stream's consecutive RUNs are one batch where the first
        // stood), sequence numbers consecutive.
        assert_eq!(
            by_stream(&converted.events),
            by_stream(&trace.events),
            "{name}"
        );
        assert!(
            converted
                .events
                .iter()
                .enumerate()
                .all(|(i, e)| e.seq == i as u64),
            "{name}"
        );
        assert!(converted.is_complete(), "{name}");
        assert_eq!(
            replay_ok(&name, &converted, &spec),
            replay_ok(&name, &trace, &spec),
            "{name}: the converted trace replays otherwise"
        );
    }
}

/// A trace's calls, stream by stream (what the current format keeps in order).
fn by_stream(
    events: &[recorder::Event],
) -> std::collections::BTreeMap<vcpu::Stream, Vec<(&recorder::TraceCall, &vcpu::Outcome)>> {
    let mut streams = std::collections::BTreeMap::<_, Vec<_>>::new();
    for event in events {
        streams
            .entry(event.stream)
            .or_default()
            .push((&event.call, &event.outcome));
    }
    streams
}
