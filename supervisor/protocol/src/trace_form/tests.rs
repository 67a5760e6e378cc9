//! Tests of the trace form (`trace_form`): golden bytes and JSON for every request, taken from
//! the encoding of the old `vcpu::ControlCall` before it was deleted, so traces recorded with it
//! read as before.

use super::*;

fn bincode_of(request: &Request) -> Vec<u8> {
    bincode::serde::encode_to_vec(request, bincode::config::standard())
        .unwrap_or_else(|e| panic!("encoding {request:?}: {e}"))
}

fn from_bincode(bytes: &[u8]) -> Request {
    let (request, used) =
        bincode::serde::decode_from_slice::<Request, _>(bytes, bincode::config::standard())
            .unwrap_or_else(|e| panic!("decoding {bytes:?}: {e}"));
    assert_eq!(
        used,
        bytes.len(),
        "{bytes:?}: every byte belongs to the request"
    );
    request
}

/// Every request with a trace form, its bincode bytes (variant index, then fields) and its JSON,
/// as `vcpu::ControlCall` encoded them.
fn golden() -> Vec<(Request, Vec<u8>, &'static str)> {
    let a = || "a".to_string();
    vec![
        (
            Request::Create {
                spec: "[[vm]]\nname = \"a\"\n".into(),
            },
            vec![
                0, 18, 91, 91, 118, 109, 93, 93, 10, 110, 97, 109, 101, 32, 61, 32, 34, 97, 34, 10,
            ],
            r#"{"Create":{"spec":"[[vm]]\nname = \"a\"\n"}}"#,
        ),
        (
            Request::Start {
                vm: a(),
                paused: false,
            },
            vec![1, 1, 97],
            r#"{"Start":{"vm":"a"}}"#,
        ),
        (
            Request::Pause { vm: a() },
            vec![2, 1, 97],
            r#"{"Pause":{"vm":"a"}}"#,
        ),
        (
            Request::Resume { vm: a() },
            vec![3, 1, 97],
            r#"{"Resume":{"vm":"a"}}"#,
        ),
        (
            Request::Stop { vm: a() },
            vec![4, 1, 97],
            r#"{"Stop":{"vm":"a"}}"#,
        ),
        (
            Request::Wait { vm: a() },
            vec![5, 1, 97],
            r#"{"Wait":{"vm":"a"}}"#,
        ),
        (
            Request::Remove { vm: a() },
            vec![6, 1, 97],
            r#"{"Remove":{"vm":"a"}}"#,
        ),
        (
            Request::Model { vm: a() },
            vec![7, 1, 97],
            r#"{"Model":{"vm":"a"}}"#,
        ),
        (
            Request::SetModel {
                vm: a(),
                hide: vec!["avx2".into(), "x2apic".into()],
                set: vec![],
            },
            vec![
                8, 1, 97, 2, 4, 97, 118, 120, 50, 6, 120, 50, 97, 112, 105, 99,
            ],
            r#"{"SetModel":{"vm":"a","hide":["avx2","x2apic"]}}"#,
        ),
        (Request::StopAll, vec![9], r#""StopAll""#),
        (Request::Shutdown, vec![10], r#""Shutdown""#),
        (
            Request::Start {
                vm: a(),
                paused: true,
            },
            vec![11, 1, 97],
            r#"{"StartPaused":{"vm":"a"}}"#,
        ),
        (Request::ShutdownForExit, vec![12], r#""ShutdownForExit""#),
        // Appended after format 1's variants: arm64 `set-model` writes.
        (
            Request::SetModel {
                vm: a(),
                hide: vec![],
                set: vec!["MIDR_EL1=0x1".into()],
            },
            vec![
                13, 1, 97, 0, 1, 12, 77, 73, 68, 82, 95, 69, 76, 49, 61, 48, 120, 49,
            ],
            r#"{"SetModelWrites":{"vm":"a","hide":[],"set":["MIDR_EL1=0x1"]}}"#,
        ),
    ]
}

#[test]
fn every_request_has_the_bytes_and_json_of_format_1() {
    let cases = golden();
    for (request, bytes, json) in &cases {
        assert_eq!(&bincode_of(request), bytes, "{request:?}");
        assert_eq!(&from_bincode(bytes), request, "{bytes:?}");
        let shown = serde_json::to_string(request).unwrap_or_else(|e| panic!("{request:?}: {e}"));
        assert_eq!(&shown, json, "{request:?}");
        assert_eq!(&serde_json::from_str::<Request>(json).unwrap(), request);
    }
    // Every kind but `list` has a case, paused and running starts both.
    let kinds: std::collections::BTreeSet<_> = cases.iter().map(|(r, ..)| r.op()).collect();
    assert_eq!(kinds.len(), 12, "every kind but `list`: {kinds:?}");
    assert_eq!(
        cases.len(),
        14,
        "one case per variant of the format-1 layout, and the arm64 `set-model` appended"
    );
}

#[test]
fn list_has_no_trace_form() {
    let e = bincode::serde::encode_to_vec(&Request::List, bincode::config::standard())
        .expect_err("list is never recorded");
    assert!(e.to_string().contains("`list` is never recorded"), "{e}");
    assert!(serde_json::to_string(&Request::List).is_err());
}

#[test]
fn an_unknown_variant_is_an_error_not_a_request() {
    let e = bincode::serde::decode_from_slice::<Request, _>(&[14], bincode::config::standard())
        .expect_err("variant 14 does not exist");
    assert!(!e.to_string().is_empty());
    assert!(serde_json::from_str::<Request>(r#""List""#).is_err());
}
