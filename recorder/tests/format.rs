//! The trace file format: round trip, and every way a file can be cut short or damaged.

mod common;

use common::{header, scratch, table};
use recorder::{
    Corruption, Cut, Event, Recorder, Trace, TraceCall, TraceEnd, TraceError, TraceWriter,
};
use serde::Serialize;
use std::collections::BTreeMap;
use vcpu::{
    Call, Errno, Failure, Origin, Outcome, Reply, RunDecision, Stream, SystemCall, VcpuCall,
    VcpuExit, VcpuId, VmCall, VmId,
};

const PREAMBLE: usize = 12;

/// Where a trace's header frame ends (the first byte of its events).
fn header_end(bytes: &[u8]) -> usize {
    let len = u32::from_le_bytes(bytes[PREAMBLE..PREAMBLE + 4].try_into().unwrap()) as usize;
    PREAMBLE + 8 + len
}

/// Record a small but varied set of events into `recorder`.
fn record_sample(recorder: &Recorder) {
    let vcpu = Stream::Vcpu(VmId(0), VcpuId(1));
    recorder.record(
        Stream::Host,
        Call::System(SystemCall::GetApiVersion),
        Ok(Reply::Value(12)),
        None,
    );
    recorder.record(
        Stream::Vm(VmId(0)),
        Call::System(SystemCall::CreateVm {
            vm: VmId(0),
            name: "alpha".into(),
        }),
        Ok(Reply::Done),
        None,
    );
    recorder.record(
        Stream::Vm(VmId(0)),
        Call::Vm(VmCall::AddMemory {
            slot: 0,
            guest_phys_addr: 0,
            size: 0x10000,
        }),
        Ok(Reply::Done),
        None,
    );
    recorder.record(
        vcpu,
        Call::Vm(VmCall::CreateVcpu { vcpu: VcpuId(1) }),
        Ok(Reply::Done),
        None,
    );
    recorder.record(
        vcpu,
        Call::Vcpu(VcpuCall::SetCpuid2 { table: table() }),
        Ok(Reply::Done),
        None,
    );
    recorder.record(
        vcpu,
        Call::Vcpu(VcpuCall::GetOneReg { id: 0 }),
        Err(Failure {
            errno: Errno::ENOENT,
            origin: Origin::Kernel,
        }),
        None,
    );
    recorder.record(
        vcpu,
        Call::Vcpu(VcpuCall::Run),
        Ok(Reply::Exit(VcpuExit::IoOut {
            port: 0x3f8,
            data: vec![b'h'].into(),
        })),
        None,
    );
    recorder.record(
        vcpu,
        Call::Vcpu(VcpuCall::Run),
        Ok(Reply::Exit(VcpuExit::Hlt)),
        None,
    );
    recorder.record(
        vcpu,
        Call::Vcpu(VcpuCall::SetCpuid2 {
            table: common::table_without_avx2(),
        }),
        Err(Failure {
            errno: Errno::EINVAL,
            origin: Origin::Lock,
        }),
        Some("vmfleet refused SET_CPUID2 …".into()),
    );
}

/// The sample as a format-2 trace (one frame per event: the layout formats 1 and 2 share, which
/// vmfleet still reads), built frame by frame from what the writer recorded: the frame-level
/// tests below cut and damage it frame by frame.
fn sample_trace(name: &str) -> (Vec<u8>, Vec<Event>) {
    let (_, events) = sample_trace_v3(name);
    let mut bytes = b"VMFLTRC\0".to_vec();
    bytes.extend_from_slice(&2u32.to_le_bytes());
    let v2 = header_v2();
    // A format-2 header: every field but the last (`exit_budgets`), in order.
    let fields = (
        v2.format_version,
        &v2.vmfleet_version,
        v2.guest_arch,
        &v2.host,
        &v2.job,
    );
    bytes.extend(frame(&encode(&fields)));
    for event in &events {
        bytes.extend(frame(&encode(&Record::Event(event))));
    }
    bytes.extend(frame(&encode(&Record::End {
        events: events.len() as u64,
    })));
    (bytes, events)
}

/// The sample header as a format-2 trace carries it.
fn header_v2() -> recorder::TraceHeader {
    recorder::TraceHeader {
        format_version: 2,
        exit_budgets: false,
        ..header()
    }
}

/// A complete trace file as the writer writes it (format 3: compressed blocks), and its events.
fn sample_trace_v3(name: &str) -> (Vec<u8>, Vec<Event>) {
    let path = scratch(name);
    let (recorder, writer) = TraceWriter::create_keeping_events(&path, &header()).unwrap();
    record_sample(&recorder);
    let summary = writer.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(summary.bytes, bytes.len() as u64);
    assert_eq!(summary.events, 9);
    (bytes, recorder.events())
}

/// Frame end offsets, by walking the length fields of a known-good file: [header, events…, end].
fn frame_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = PREAMBLE;
    while pos < bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 8 + len;
        ends.push(pos);
    }
    assert_eq!(pos, bytes.len());
    ends
}

/// The same shape as the crate's private frame record (serde encodes variants by index).
#[derive(Serialize)]
enum Record<'a> {
    Event(&'a Event),
    End { events: u64 },
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
}

#[test]
fn round_trip() {
    let (bytes, events) = sample_trace_v3("round-trip.trace");
    assert_eq!(&bytes[..8], b"VMFLTRC\0");
    let trace = Trace::from_bytes(&bytes).unwrap();
    assert_eq!(trace.header, header());
    assert_eq!(trace.events, events);
    assert_eq!(
        trace.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );
    assert_eq!(trace.end, TraceEnd::Complete { events: 9 });
    trace.require_complete().unwrap();
    assert_eq!(Trace::open(scratch("round-trip.trace")).unwrap(), trace);
}

#[test]
fn a_trace_cut_at_every_offset_reads_its_whole_events() {
    let (bytes, events) = sample_trace("cut.trace");
    let ends = frame_ends(&bytes);
    let header_end = ends[0];
    assert_eq!(ends.len(), events.len() + 2);
    for cut in 0..=bytes.len() {
        // Leniently too: a cut is never taken for damage.
        match Trace::from_bytes_lenient(&bytes[..cut]) {
            Ok(Trace {
                end: TraceEnd::Corrupt { .. },
                ..
            }) => panic!("cut at {cut} read as corrupt"),
            Err(e) if !e.is_cut_short() && cut > 0 => panic!("cut at {cut}: {e}"),
            _ => {}
        }
        let result = Trace::from_bytes(&bytes[..cut]);
        if cut == 0 {
            assert!(
                matches!(result, Err(TraceError::Empty)),
                "cut at 0: {result:?}"
            );
            continue;
        }
        if cut < header_end {
            match result {
                Err(TraceError::HeaderCut { offset, .. }) => assert_eq!(offset, cut as u64),
                other => panic!("cut at {cut} (inside the header): {other:?}"),
            }
            continue;
        }
        let trace = result.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(trace.header, header_v2());
        if cut == bytes.len() {
            assert!(trace.is_complete());
            assert_eq!(trace.events, events);
            continue;
        }
        // Whole event frames are those ending at or before the cut (the end frame is not an event).
        let whole = ends[1..=events.len()]
            .iter()
            .filter(|&&end| end <= cut)
            .count();
        let last_boundary = *ends[..=events.len()]
            .iter()
            .rev()
            .find(|&&end| end <= cut)
            .unwrap();
        assert_eq!(trace.events, events[..whole], "cut at {cut}");
        match &trace.end {
            TraceEnd::Truncated {
                offset,
                whole_events,
                reason,
            } => {
                assert_eq!(*offset, last_boundary as u64, "cut at {cut}");
                assert_eq!(*whole_events, whole as u64);
                if cut == last_boundary {
                    assert_eq!(*reason, Cut::MissingEnd);
                } else if cut - last_boundary < 8 {
                    assert!(
                        matches!(reason, Cut::InFrameHeader { .. }),
                        "cut at {cut}: {reason:?}"
                    );
                } else {
                    assert!(
                        matches!(reason, Cut::InPayload { .. }),
                        "cut at {cut}: {reason:?}"
                    );
                }
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
        let message = trace.require_complete().unwrap_err().to_string();
        let after = match whole {
            0 => "before any event".to_string(),
            n => format!("after event #{}", n - 1),
        };
        assert!(
            message.starts_with(&format!(
                "trace was cut short at byte {last_boundary} {after}"
            )),
            "{message}"
        );
    }
}

#[test]
fn a_flipped_byte_is_an_error_or_a_cut_never_different_events() {
    let (bytes, events) = sample_trace("flip.trace");
    let mut errors = 0;
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[i] ^= mask;
            for lenient in [false, true] {
                let result = if lenient {
                    Trace::from_bytes_lenient(&damaged)
                } else {
                    Trace::from_bytes(&damaged)
                };
                match result {
                    Err(e) => {
                        assert!(!e.is_cut_short(), "byte {i} ^ {mask:#x}: {e}");
                        errors += 1;
                    }
                    Ok(trace) => {
                        assert!(!trace.is_complete(), "byte {i} ^ {mask:#x} went unnoticed");
                        // Damage is never mistaken for a cut: every byte is still there.
                        assert!(
                            matches!(trace.end, TraceEnd::Corrupt { .. }),
                            "byte {i} ^ {mask:#x}: {}",
                            trace.end
                        );
                        assert_eq!(trace.header, header_v2(), "byte {i} ^ {mask:#x}");
                        assert!(
                            events.starts_with(&trace.events),
                            "byte {i} ^ {mask:#x} changed the events"
                        );
                        assert!(trace.require_complete().is_err());
                    }
                }
            }
        }
    }
    assert!(
        errors > bytes.len(),
        "most flips must be reported as errors"
    );
}

/// The hard case: a damaged length field that points past the end of the file looks like a cut.
/// Every single-bit flip of every frame's length field must be reported as damage at that frame,
/// never as a trace cut short, strictly and leniently, and whether or not the file was complete.
#[test]
fn a_flipped_bit_in_any_length_field_is_corruption_at_its_frame() {
    let (bytes, events) = sample_trace("length-flip.trace");
    let ends = frame_ends(&bytes);
    let starts: Vec<usize> = std::iter::once(PREAMBLE)
        .chain(ends[..ends.len() - 1].iter().copied())
        .collect();
    // The complete file, and the file cut after its last event (no end marker), which must not
    // change the verdict on frames before the cut.
    let without_end = &bytes[..ends[events.len()]];
    for file in [&bytes[..], without_end] {
        for (frame, &start) in starts.iter().enumerate() {
            if start >= file.len() {
                continue;
            }
            for bit in 0..32 {
                let mut damaged = file.to_vec();
                damaged[start + bit / 8] ^= 1 << (bit % 8);
                let what = format!("frame {frame} at {start}, length bit {bit}");
                match Trace::from_bytes(&damaged) {
                    Err(TraceError::Corrupt { offset, problem }) => {
                        assert_eq!(offset, start as u64, "{what}: {problem}");
                        let length = u32::from_le_bytes(file[start..start + 4].try_into().unwrap());
                        match problem {
                            Corruption::DamagedLength { fits, .. } => {
                                assert_eq!(fits, length, "{what}: the real length is found")
                            }
                            Corruption::FrameTooLong { .. } => {}
                            other => panic!("{what}: {other:?}"),
                        }
                    }
                    other => panic!("{what}: {other:?}"),
                }
                if frame == 0 {
                    // Without its header nothing is readable, leniently or not.
                    let err = Trace::from_bytes_lenient(&damaged).unwrap_err();
                    assert!(
                        matches!(err, TraceError::Corrupt { offset: 12, .. }),
                        "{err:?}"
                    );
                    continue;
                }
                let trace = Trace::from_bytes_lenient(&damaged).unwrap();
                let whole = frame as u64 - 1;
                assert_eq!(trace.events, events[..whole as usize], "{what}");
                match &trace.end {
                    TraceEnd::Corrupt {
                        offset,
                        whole_events,
                        ..
                    } => assert_eq!((*offset, *whole_events), (start as u64, whole), "{what}"),
                    other => panic!("{what}: {other}"),
                }
                assert!(
                    trace
                        .end
                        .to_string()
                        .starts_with(&format!("corrupt at byte {start} ")),
                    "{what}: {}",
                    trace.end
                );
            }
        }
    }
}

#[test]
fn damage_names_its_byte_offset() {
    let (bytes, events) = sample_trace("offset.trace");
    let ends = frame_ends(&bytes);
    // A flipped payload byte of the third event.
    let mut damaged = bytes.clone();
    damaged[ends[2] + 8 + 1] ^= 0x10;
    let err = Trace::from_bytes(&damaged).unwrap_err();
    assert!(
        matches!(err, TraceError::Corrupt { offset, problem: Corruption::BadChecksum { .. } } if offset == ends[2] as u64),
        "{err:?}"
    );
    assert!(err.to_string().starts_with(&format!(
        "corrupt trace at byte {}: checksum mismatch",
        ends[2]
    )));
    // Leniently, the two events before it are shown, and where it stopped.
    let trace = Trace::from_bytes_lenient(&damaged).unwrap();
    assert_eq!(trace.events, events[..2]);
    assert!(
        matches!(trace.end, TraceEnd::Corrupt { offset, whole_events: 2, .. } if offset == ends[2] as u64)
    );
}

#[test]
fn a_huge_length_is_corruption_not_an_allocation() {
    let (bytes, _) = sample_trace("huge.trace");
    let ends = frame_ends(&bytes);
    for (at, cut_after) in [(PREAMBLE, false), (ends[0], false), (ends[3], true)] {
        let mut damaged = bytes.clone();
        damaged[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        if cut_after {
            damaged.truncate(at + 6);
        }
        match Trace::from_bytes(&damaged) {
            Err(TraceError::Corrupt {
                offset,
                problem: Corruption::FrameTooLong { length },
            }) => {
                assert_eq!((offset, length), (at as u64, u32::MAX));
            }
            other => panic!("length at {at}: {other:?}"),
        }
    }
    // Just over the cap is also refused.
    let mut damaged = bytes.clone();
    let over = (recorder::MAX_FRAME_LEN + 1) as u32;
    damaged[ends[0]..ends[0] + 4].copy_from_slice(&over.to_le_bytes());
    assert!(matches!(
        Trace::from_bytes(&damaged),
        Err(TraceError::Corrupt {
            problem: Corruption::FrameTooLong { .. },
            ..
        })
    ));
}

/// Had the decoder believed these lengths, the allocation (2^62 bytes, 2^43 bytes) would fail and
/// abort the test process.
#[test]
fn a_huge_length_inside_a_valid_frame_does_not_allocate() {
    // A header payload whose first string claims 2^62 bytes; the frame's checksum is right.
    let mut payload = vec![1u8]; // format_version = 1 (varint)
    payload.push(253); // varint marker for a u64
    payload.extend_from_slice(&(1u64 << 62).to_le_bytes());
    payload.extend_from_slice(b"abc");
    let mut bytes = b"VMFLTRC\0".to_vec();
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&frame(&payload));
    match Trace::from_bytes(&bytes) {
        Err(TraceError::Corrupt {
            offset: 12,
            problem: Corruption::Undecodable { .. },
        }) => {}
        other => panic!("{other:?}"),
    }
    // The same inside an event: a RegList reply claiming 2^40 entries.
    let (good, events) = sample_trace("huge-inner.trace");
    let ends = frame_ends(&good);
    let mut bytes = good[..ends[0]].to_vec();
    let mut payload = encode(&Record::Event(&Event {
        outcome: Ok(Reply::RegList(vec![7])),
        detail: None,
        at_ns: 0,
        ..events[0].clone()
    }));
    // The payload ends with the reply's vector length (1), its element (7), no detail, time 0.
    let at = payload.len() - 4;
    assert_eq!(&payload[at..], &[1, 7, 0, 0]);
    payload.splice(
        at..at + 1,
        [253].into_iter().chain((1u64 << 40).to_le_bytes()),
    );
    bytes.extend_from_slice(&frame(&payload));
    match Trace::from_bytes(&bytes) {
        Err(TraceError::Corrupt {
            offset,
            problem: Corruption::Undecodable { .. },
        }) => {
            assert_eq!(offset, ends[0] as u64)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn not_a_trace() {
    assert!(matches!(Trace::from_bytes(b""), Err(TraceError::Empty)));
    let elf = b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let err = Trace::from_bytes(elf).unwrap_err();
    assert!(matches!(err, TraceError::NotATrace { .. }), "{err:?}");
    assert!(err.to_string().starts_with("not a vmfleet trace"), "{err}");
    assert!(matches!(
        Trace::from_bytes(b"hello, world\n"),
        Err(TraceError::NotATrace { .. })
    ));
    assert!(matches!(
        Trace::from_bytes(b"VMF"),
        Err(TraceError::HeaderCut { offset: 3, .. })
    ));

    let empty = scratch("empty.trace");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(
        Trace::open(&empty).unwrap_err().to_string(),
        "not a vmfleet trace: the file is empty"
    );
    let missing = Trace::open(scratch("does-not-exist.trace")).unwrap_err();
    assert!(matches!(missing, TraceError::Io { .. }), "{missing:?}");
}

#[test]
fn an_unknown_format_version_is_named() {
    let (mut bytes, _) = sample_trace("version.trace");
    bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
    let err = Trace::from_bytes(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            TraceError::UnsupportedVersion {
                found: 7,
                supported: recorder::FORMAT_VERSION
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "unsupported trace format version 7: this vmfleet reads versions 1 to 4"
    );
    bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        Trace::from_bytes(&bytes),
        Err(TraceError::UnsupportedVersion { found: 0, .. })
    ));
}

/// The header of format 1, field by field: format 2 appended `emulated_cpuid` to the host facts.
#[derive(Serialize)]
struct HeaderV1<'a> {
    format_version: u32,
    vmfleet_version: &'a str,
    guest_arch: vcpu::GuestArch,
    host: HostV1<'a>,
    job: &'a recorder::JobInputs,
}

#[derive(Serialize)]
struct HostV1<'a> {
    kernel_release: &'a str,
    kvm_module: &'a Option<String>,
    cpu_vendor: &'a str,
    cpu_family: u32,
    cpu_model: u32,
    cpu_stepping: u32,
    cpu_model_name: &'a str,
    microcode: &'a Option<String>,
    kvm_api_version: Option<u32>,
    capabilities: &'a [recorder::Capability],
}

/// A format-1 trace reads as it always did: its header's host facts have no emulated CPUID table
/// (`None`), and its events are the same bytes and the same events as in format 2.
#[test]
fn a_format_1_trace_reads_with_no_emulated_table() {
    let (good, events) = sample_trace("format-1.trace");
    let ends = frame_ends(&good);
    let h = header();
    let v1 = HeaderV1 {
        format_version: 1,
        vmfleet_version: &h.vmfleet_version,
        guest_arch: h.guest_arch,
        host: HostV1 {
            kernel_release: &h.host.kernel_release,
            kvm_module: &h.host.kvm_module,
            cpu_vendor: &h.host.cpu_vendor,
            cpu_family: h.host.cpu_family,
            cpu_model: h.host.cpu_model,
            cpu_stepping: h.host.cpu_stepping,
            cpu_model_name: &h.host.cpu_model_name,
            microcode: &h.host.microcode,
            kvm_api_version: h.host.kvm_api_version,
            capabilities: &h.host.capabilities,
        },
        job: &h.job,
    };
    let mut bytes = b"VMFLTRC\0".to_vec();
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&frame(&encode(&v1)));
    bytes.extend_from_slice(&good[ends[0]..]);
    let trace = Trace::from_bytes(&bytes).unwrap();
    assert_eq!(trace.header.format_version, 1);
    assert_eq!(trace.header.host.emulated_cpuid, None);
    assert_eq!(
        trace.header.host,
        recorder::HostFingerprint {
            emulated_cpuid: None,
            ..h.host.clone()
        }
    );
    assert_eq!(trace.events, events);
    trace.require_complete().unwrap();
    // A format-1 header under a format-2 preamble is not a format-2 header.
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert!(matches!(
        Trace::from_bytes(&bytes),
        Err(TraceError::Corrupt {
            offset: 12,
            problem: Corruption::Undecodable { .. }
        })
    ));
}

/// A format-2 header keeps the emulated CPUID table it was given.
#[test]
fn the_emulated_table_round_trips_in_the_header() {
    let path = scratch("emulated.trace");
    let mut h = header();
    h.host.emulated_cpuid = Some(table());
    let (_, writer) = TraceWriter::create_keeping_events(&path, &h).unwrap();
    writer.finish().unwrap();
    let trace = Trace::open(&path).unwrap();
    assert_eq!(trace.header.format_version, recorder::FORMAT_VERSION);
    assert_eq!(trace.header, h);
    assert!(
        trace
            .header
            .to_string()
            .contains(&format!("  emulated CPUID: {} entries", table().len())),
        "{}",
        trace.header
    );
}

#[test]
fn end_marker_checks() {
    let (bytes, events) = sample_trace("end.trace");
    let ends = frame_ends(&bytes);
    let body_end = ends[events.len()];

    // Data after the end marker.
    let mut more = bytes.clone();
    more.extend_from_slice(b"x");
    assert!(matches!(
        Trace::from_bytes(&more),
        Err(TraceError::Corrupt { offset, problem: Corruption::DataAfterEnd { bytes: 1 } }) if offset == bytes.len() as u64
    ));

    // An end marker that counts wrong.
    let mut wrong = bytes[..body_end].to_vec();
    wrong.extend_from_slice(&frame(&encode(&Record::End { events: 3 })));
    let err = Trace::from_bytes(&wrong).unwrap_err();
    assert!(
        matches!(err, TraceError::Corrupt { offset, problem: Corruption::EndCountMismatch { end_says: 3, read: 9 } } if offset == body_end as u64),
        "{err:?}"
    );

    // Events out of order (two whole, valid frames swapped).
    let mut swapped = bytes[..ends[0]].to_vec();
    swapped.extend_from_slice(&bytes[ends[1]..ends[2]]);
    swapped.extend_from_slice(&bytes[ends[0]..ends[1]]);
    let err = Trace::from_bytes(&swapped).unwrap_err();
    assert!(
        matches!(
            err,
            TraceError::Corrupt {
                problem: Corruption::OutOfSequence {
                    expected: 0,
                    found: 1
                },
                ..
            }
        ),
        "{err:?}"
    );
}

/// Format 3 (compressed blocks, what the writer writes): a trace cut at every byte after its
/// header reads back to a prefix of its events, never corrupt and never other events; cut only
/// inside the end of its last block, every event before the cut block is there; whole, all.
#[test]
fn a_block_trace_cut_at_every_byte_reads_back_to_its_last_whole_event() {
    let (bytes, events) = sample_trace_v3("cut-v3.trace");
    let header_end = header_end(&bytes);
    let mut most = 0;
    for cut in header_end..=bytes.len() {
        let trace = Trace::from_bytes_lenient(&bytes[..cut])
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert!(
            !matches!(trace.end, TraceEnd::Corrupt { .. }),
            "cut at {cut} read as corrupt: {}",
            trace.end
        );
        assert!(
            events.starts_with(&trace.events),
            "cut at {cut}: other events"
        );
        assert!(
            trace.events.len() >= most,
            "cut at {cut}: fewer events than a shorter cut"
        );
        most = trace.events.len();
        if cut == bytes.len() {
            assert!(trace.is_complete());
            assert_eq!(trace.events, events);
        } else {
            assert!(!trace.is_complete(), "cut at {cut}");
            assert!(trace.require_complete().is_err());
        }
    }
}

/// Format 3 stores a payload once per block however many events repeat it, and its events come
/// back with their sequence numbers, streams and times.
#[test]
fn a_block_trace_stores_repeated_payloads_once() {
    let path = scratch("repeat-v3.trace");
    let (recorder, writer) = TraceWriter::create_keeping_events(&path, &header()).unwrap();
    for _ in 0..2000 {
        recorder.record(
            Stream::Vcpu(VmId(3), VcpuId(1)),
            Call::Vcpu(VcpuCall::Run),
            Ok(Reply::Exit(VcpuExit::IoOut {
                port: 0x511,
                data: vec![0, 0, 0, 0].into(),
            })),
            None,
        );
    }
    let summary = writer.finish().unwrap();
    assert!(
        summary.bytes < 2000 * 4,
        "2,000 identical exits took {} bytes",
        summary.bytes
    );
    let trace = Trace::open(&path).unwrap();
    assert!(trace.is_complete());
    let recorded = recorder.events();
    // One batch: the same calls, the first and last with their own times.
    assert_eq!(by_stream(&trace.events), by_stream(&recorded));
    assert_eq!(trace.events[0].at_ns, recorded[0].at_ns);
    assert_eq!(trace.events[1999].at_ns, recorded[1999].at_ns);
}

/// A trace's calls, stream by stream, without times or sequence numbers: what format 4 keeps of
/// a stream's consecutive `RUN`s (one batch, where its first stood).
fn by_stream(events: &[Event]) -> BTreeMap<Stream, Vec<(TraceCall, Outcome, Option<String>)>> {
    let mut streams: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for event in events {
        streams.entry(event.stream).or_default().push((
            event.call.clone(),
            event.outcome.clone(),
            event.detail.clone(),
        ));
    }
    streams
}

/// Record a fleet's shape: two VMs of two vCPUs whose guests exit alike and interleave with each
/// other and with VM calls, each vCPU ending with a call that closes its batch (or not).
fn record_interleaved(recorder: &Recorder) {
    let exit = |n: u8| {
        Ok(Reply::Exit(VcpuExit::IoOut {
            port: 0x511,
            data: vec![n].into(),
        }))
    };
    for vm in 0..2 {
        recorder.record(
            Stream::Vm(VmId(vm)),
            Call::Vm(VmCall::CreateVcpu { vcpu: VcpuId(0) }),
            Ok(Reply::Done),
            None,
        );
    }
    for round in 0..40u8 {
        for vm in 0..2 {
            for vcpu in 0..2 {
                let stream = Stream::Vcpu(VmId(vm), VcpuId(vcpu));
                recorder.record(stream, Call::Vcpu(VcpuCall::Run), exit(round % 7), None);
                if round == 20 && vcpu == 1 {
                    recorder.record(
                        stream,
                        Call::Decision,
                        Ok(Reply::Decision(RunDecision::Run)),
                        None,
                    );
                }
            }
            if round % 10 == 0 {
                recorder.record(
                    Stream::Vm(VmId(vm)),
                    Call::Vm(VmCall::Destroy),
                    Ok(Reply::Done),
                    None,
                );
            }
        }
    }
    recorder.record(
        Stream::Vcpu(VmId(0), VcpuId(0)),
        Call::Vcpu(VcpuCall::Run),
        Ok(Reply::Exit(VcpuExit::Hlt)),
        None,
    );
    recorder.record(
        Stream::Vcpu(VmId(0), VcpuId(0)),
        Call::Vcpu(VcpuCall::Destroy),
        Ok(Reply::Done),
        None,
    );
}

/// Format 4 stores a stream's consecutive `RUN`s as one batch where its first stood: every
/// stream reads back with its calls in order, sequence numbers consecutive, and a trace cut at
/// any byte reads back, stream by stream, to a prefix of what was recorded (never corrupt, never
/// other calls).
#[test]
fn batched_runs_read_back_stream_by_stream_whole_and_cut_at_every_byte() {
    let path = scratch("batches-v4.trace");
    let (recorder, writer) = TraceWriter::create_keeping_events(&path, &header()).unwrap();
    record_interleaved(&recorder);
    writer.finish().unwrap();
    let recorded = recorder.events();
    let bytes = std::fs::read(&path).unwrap();
    let whole = Trace::from_bytes(&bytes).unwrap();
    assert_eq!(by_stream(&whole.events), by_stream(&recorded));
    assert!(
        whole
            .events
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as u64)
    );
    // A stream's first RUN keeps its time, and so does its last.
    let runs = |events: &[Event], stream| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e.stream == stream && e.call == TraceCall::from(Call::Vcpu(VcpuCall::Run)))
            .map(|e| e.at_ns)
            .collect()
    };
    let stream = Stream::Vcpu(VmId(1), VcpuId(1));
    let (read, written) = (runs(&whole.events, stream), runs(&recorded, stream));
    assert_eq!(read.first(), written.first());
    assert_eq!(read.last(), written.last());
    let written_streams = by_stream(&recorded);
    let header_end = header_end(&bytes);
    for cut in header_end..bytes.len() {
        let trace = Trace::from_bytes_lenient(&bytes[..cut])
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert!(
            !matches!(trace.end, TraceEnd::Corrupt { .. }),
            "cut at {cut} read as corrupt: {}",
            trace.end
        );
        for (stream, calls) in by_stream(&trace.events) {
            assert!(
                written_streams[&stream].starts_with(&calls),
                "cut at {cut}: {stream} reads back other calls"
            );
        }
    }
}

/// Format 3: a flipped byte anywhere after the header is damage (the block's checksum), never a
/// cut and never different events.
#[test]
fn a_flipped_byte_in_a_block_trace_is_damage_never_different_events() {
    let (bytes, events) = sample_trace_v3("flip-v3.trace");
    let header_end = header_end(&bytes);
    for i in header_end..bytes.len() {
        for mask in [0x01u8, 0x80] {
            let mut damaged = bytes.clone();
            damaged[i] ^= mask;
            match Trace::from_bytes_lenient(&damaged) {
                Err(e) => assert!(!e.is_cut_short(), "byte {i} ^ {mask:#x}: {e}"),
                Ok(trace) => {
                    // Damage is never mistaken for a cut: every byte is still there.
                    assert!(
                        matches!(trace.end, TraceEnd::Corrupt { .. }),
                        "byte {i} ^ {mask:#x}: {}",
                        trace.end
                    );
                    assert!(
                        events.starts_with(&trace.events),
                        "byte {i} ^ {mask:#x} changed the events"
                    );
                    assert!(Trace::from_bytes(&damaged).is_err(), "byte {i} ^ {mask:#x}");
                }
            }
        }
    }
}

/// A trace vmfleet records now says it applied `record_exits` budgets; one from before format 4
/// says it did not, and keeps saying so once converted to the current format (a replay then
/// replays every exit one by one, as they were recorded).
#[test]
fn exit_budgets_are_set_by_new_traces_and_kept_by_convert() {
    let (v2_bytes, _) = sample_trace("budgets-v2.trace");
    let v2 = Trace::from_bytes(&v2_bytes).unwrap();
    assert!(!v2.header.exit_budgets);
    let bytes = recorder::encode_trace(&v2.header, &v2.events, true).unwrap();
    let converted = Trace::from_bytes(&bytes).unwrap();
    assert_eq!(converted.header.format_version, recorder::FORMAT_VERSION);
    assert!(!converted.header.exit_budgets);
    let (v4_bytes, _) = sample_trace_v3("budgets-v4.trace");
    assert!(Trace::from_bytes(&v4_bytes).unwrap().header.exit_budgets);
}
