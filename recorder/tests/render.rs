//! The transcript and `trace show` renderings.

mod common;

use common::{header, scratch};
use recorder::{Event, Trace, TraceWriter, render_streams, show_json_lines, show_text};
use vcpu::{
    Call, Errno, Failure, Origin, Outcome, Reply, Stream, SystemCall, VcpuCall, VcpuExit, VcpuId,
    VmCall, VmId,
};

fn event(seq: u64, stream: Stream, call: Call, outcome: Outcome, detail: Option<&str>) -> Event {
    Event {
        seq,
        stream,
        call: call.into(),
        outcome,
        detail: detail.map(str::to_string),
        at_ns: seq * 1_500_000,
    }
}

fn out(byte: u8) -> Outcome {
    Ok(Reply::Exit(VcpuExit::IoOut {
        port: 0x3f8,
        data: vec![byte].into(),
    }))
}

/// Streams interleaved the way threads interleave them, VMs created out of id order.
fn sample() -> Vec<Event> {
    let v00 = Stream::Vcpu(VmId(0), VcpuId(0));
    let v01 = Stream::Vcpu(VmId(0), VcpuId(1));
    let v10 = Stream::Vcpu(VmId(1), VcpuId(0));
    let run = || Call::Vcpu(VcpuCall::Run);
    let kernel = |errno| {
        Err(Failure {
            errno,
            origin: Origin::Kernel,
        })
    };
    vec![
        event(
            0,
            Stream::Host,
            Call::System(SystemCall::GetApiVersion),
            Ok(Reply::Value(12)),
            None,
        ),
        event(
            1,
            Stream::Vm(VmId(1)),
            Call::System(SystemCall::CreateVm {
                vm: VmId(1),
                name: "beta".into(),
            }),
            Ok(Reply::Done),
            None,
        ),
        event(
            2,
            Stream::Vm(VmId(0)),
            Call::System(SystemCall::CreateVm {
                vm: VmId(0),
                name: "alpha".into(),
            }),
            Ok(Reply::Done),
            None,
        ),
        event(
            3,
            v10,
            Call::Vm(VmCall::CreateVcpu { vcpu: VcpuId(0) }),
            Ok(Reply::Done),
            None,
        ),
        event(
            4,
            v01,
            Call::Vm(VmCall::CreateVcpu { vcpu: VcpuId(1) }),
            Ok(Reply::Done),
            None,
        ),
        event(
            5,
            v00,
            Call::Vm(VmCall::CreateVcpu { vcpu: VcpuId(0) }),
            Ok(Reply::Done),
            None,
        ),
        event(
            6,
            Stream::Host,
            Call::System(SystemCall::CheckExtension { cap: 1 }),
            kernel(Errno::EINVAL),
            None,
        ),
        event(7, v00, run(), out(b'h'), None),
        event(8, v01, run(), out(b'x'), None),
        event(9, v00, run(), out(b'i'), None),
        event(10, v00, run(), Ok(Reply::Exit(VcpuExit::Hlt)), None),
        event(11, v01, run(), Ok(Reply::Exit(VcpuExit::Hlt)), None),
        event(
            12,
            v00,
            Call::Vcpu(VcpuCall::GetOneReg { id: 0 }),
            kernel(Errno::ENOENT),
            None,
        ),
        event(13, v00, run(), kernel(Errno::EINTR), None),
        event(14, v00, run(), out(b'!'), None),
        event(
            15,
            v00,
            Call::Vcpu(VcpuCall::SetOneReg { id: 0x10, value: 1 }),
            Err(Failure {
                errno: Errno::EBUSY,
                origin: Origin::Lock,
            }),
            Some("vmfleet refused SET_ONE_REG"),
        ),
        event(
            16,
            Stream::Vm(VmId(0)),
            Call::Vm(VmCall::Destroy),
            Ok(Reply::Done),
            None,
        ),
    ]
}

#[test]
fn render_streams_groups_by_stream_and_collapses_runs() {
    let expected = "\
host
  GET_API_VERSION -> 0xc
  CHECK_EXTENSION cap=1 -> EINVAL (kernel)

vm0
  CREATE_VM vm0 name=\"alpha\" -> ok
  DESTROY_VM -> ok

vm0/vcpu0
  CREATE_VCPU vcpu0 -> ok
  RUN x3 -> IO_OUT x2, HLT x1
  GET_ONE_REG 0x0000000000000000 -> ENOENT (kernel)
  RUN x2 -> EINTR (kernel) x1, IO_OUT x1
  SET_ONE_REG 0x0000000000000010 = 0x0000000000000001 -> EBUSY (refused by vmfleet)
      vmfleet refused SET_ONE_REG

vm0/vcpu1
  CREATE_VCPU vcpu1 -> ok
  RUN x2 -> IO_OUT x1, HLT x1

vm1
  CREATE_VM vm1 name=\"beta\" -> ok

vm1/vcpu0
  CREATE_VCPU vcpu0 -> ok
";
    assert_eq!(render_streams(&sample()), expected);
}

#[test]
fn render_streams_ignores_seq_times_and_cross_stream_order() {
    let events = sample();
    // Another interleaving of the same per-stream sequences, renumbered, other times.
    let mut shuffled: Vec<Event> = events.iter().rev().cloned().collect();
    shuffled.sort_by_key(|e| (e.stream != Stream::Host, std::cmp::Reverse(e.stream), e.seq));
    for (i, e) in shuffled.iter_mut().enumerate() {
        e.seq = i as u64 + 100;
        e.at_ns = 7;
    }
    assert_eq!(render_streams(&shuffled), render_streams(&events));
    assert_eq!(render_streams(&[]), "");
}

#[test]
fn a_single_run_keeps_its_exit_details() {
    let events = vec![event(
        0,
        Stream::Vcpu(VmId(0), VcpuId(0)),
        Call::Vcpu(VcpuCall::Run),
        out(b'A'),
        None,
    )];
    assert_eq!(
        render_streams(&events),
        "vm0/vcpu0\n  RUN -> IO_OUT port=0x3f8 data=[41]\n"
    );
}

fn write(name: &str, finish: bool) -> Trace {
    let path = scratch(name);
    let (recorder, writer) = TraceWriter::create(&path, &header()).unwrap();
    for e in sample() {
        recorder.record(e.stream, e.call, e.outcome, e.detail);
    }
    let partial = writer.writing_to().to_path_buf();
    if finish {
        writer.finish().unwrap();
        Trace::open(&path).unwrap()
    } else {
        // A dropped writer leaves its partial file, as a killed process would.
        drop(writer);
        Trace::open(&partial).unwrap()
    }
}

#[test]
fn show_text_lists_every_event_and_how_the_trace_ends() {
    let trace = write("show.trace", true);
    let text = show_text(&trace);
    assert!(
        text.starts_with("trace format: 4\nvmfleet:      0.1.0-test\nguest arch:   x86_64\n"),
        "{text}"
    );
    assert!(text.contains("kvm module:   kvm_intel\n"), "{text}");
    assert!(text.contains("  KVM_CAP_ONE_REG (70) = 1\n"), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("  #")).collect();
    assert_eq!(lines.len(), 17);
    assert!(lines[0].starts_with("  #0 +0."), "{}", lines[0]);
    assert!(
        lines[0].ends_with("s host GET_API_VERSION -> 0xc"),
        "{}",
        lines[0]
    );
    assert!(
        lines[6].ends_with("host CHECK_EXTENSION cap=1 -> EINVAL [kernel]"),
        "{}",
        lines[6]
    );
    assert!(
        lines[15].ends_with("-> EBUSY [vmfleet lock]"),
        "{}",
        lines[15]
    );
    assert!(text.contains("\n      vmfleet refused SET_ONE_REG\n"));
    assert!(text.ends_with("end: complete: 17 events\n"), "{text}");

    let cut = write("show-cut.trace", false);
    let text = show_text(&cut);
    assert!(text.contains("end: cut short at byte "), "{text}");
    assert!(
        text.ends_with(
            "after event #16: the file ends after a whole frame but has no end marker\n"
        ),
        "{text}"
    );
}

#[test]
fn show_json_lines_is_one_object_per_line() {
    let trace = write("json.trace", true);
    let text = show_json_lines(&trace);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1 + 17 + 1);
    for line in &lines {
        assert_eq!(line["schema"], recorder::TRACE_SHOW_SCHEMA);
    }
    assert_eq!(lines[0]["kind"], "header");
    assert_eq!(lines[0]["job"]["command"], "run");
    assert_eq!(lines[1]["kind"], "event");
    assert_eq!(lines[1]["seq"], 0);
    assert_eq!(lines[1]["stream"]["kind"], "host");
    assert_eq!(lines[1]["outcome"]["ok"], true);
    assert_eq!(lines[1]["raw"]["outcome"]["Ok"]["Value"], 12);
    assert_eq!(lines[18]["kind"], "end");
    assert_eq!(lines[18]["status"], "complete");
    assert_eq!(lines[18]["events"], 17);
}
