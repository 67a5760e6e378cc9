//! Tests of `wire` (the socket's JSON), kept beside it so the module itself stays short.

use super::*;

fn parse(line: &str) -> Result<Request, String> {
    Request::parse(line.as_bytes())
}

fn error(line: &[u8]) -> String {
    match Request::parse(line) {
        Ok(request) => panic!("{:?} parsed as {request:?}", String::from_utf8_lossy(line)),
        Err(e) => e,
    }
}

#[test]
fn every_op_parses() {
    let vm = || "a".to_string();
    let cases = [
        (r#"{"op":"list"}"#, Request::List),
        (
            r#"{"op":"create","spec":"[[vm]]\nname = \"a\"\n"}"#,
            Request::Create {
                spec: "[[vm]]\nname = \"a\"\n".into(),
            },
        ),
        (
            r#"{"op":"start","vm":"a"}"#,
            Request::Start {
                vm: vm(),
                paused: false,
            },
        ),
        (
            r#"{"op":"start","vm":"a","paused":true}"#,
            Request::Start {
                vm: vm(),
                paused: true,
            },
        ),
        (r#"{"op":"pause","vm":"a"}"#, Request::Pause { vm: vm() }),
        (r#"{"op":"resume","vm":"a"}"#, Request::Resume { vm: vm() }),
        (r#"{"op":"stop","vm":"a"}"#, Request::Stop { vm: vm() }),
        (r#"{"op":"wait","vm":"a"}"#, Request::Wait { vm: vm() }),
        (r#"{"op":"remove","vm":"a"}"#, Request::Remove { vm: vm() }),
        (r#"{"op":"model","vm":"a"}"#, Request::Model { vm: vm() }),
        (
            r#"{"op":"set-model","vm":"a","hide":["avx2","x2apic"]}"#,
            Request::SetModel {
                vm: vm(),
                hide: vec!["avx2".into(), "x2apic".into()],
                set: vec![],
            },
        ),
        (
            r#"{"op":"set-model","vm":"a","hide":[]}"#,
            Request::SetModel {
                vm: vm(),
                hide: vec![],
                set: vec![],
            },
        ),
        (
            r#"{"op":"set-model","vm":"a","set":["ID_AA64ISAR0_EL1.AES=0","MIDR_EL1=0x1"]}"#,
            Request::SetModel {
                vm: vm(),
                hide: vec![],
                set: vec!["ID_AA64ISAR0_EL1.AES=0".into(), "MIDR_EL1=0x1".into()],
            },
        ),
        (r#"{"op":"stop-all"}"#, Request::StopAll),
        (r#" { "op" : "shutdown" } "#, Request::Shutdown),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (line, expected) in cases {
        assert_eq!(parse(line), Ok(expected.clone()), "{line}");
        seen.insert(expected.op());
    }
    assert_eq!(seen.len(), OPS.len(), "every op has a case");
}

#[test]
fn what_the_client_sends_is_what_the_daemon_parses() {
    let requests = [
        Request::List,
        Request::Create {
            spec: "[[vm]]\nname = \"x\"\ncpu = { hide = [\"avx2\"] }\n".into(),
        },
        Request::Start {
            vm: "x".into(),
            paused: false,
        },
        Request::Start {
            vm: "x".into(),
            paused: true,
        },
        Request::Pause { vm: "x".into() },
        Request::Resume { vm: "x".into() },
        Request::Stop { vm: "x".into() },
        Request::Remove { vm: "x".into() },
        Request::Model { vm: "x".into() },
        Request::SetModel {
            vm: "x".into(),
            hide: vec!["avx2".into()],
            set: vec![],
        },
        Request::SetModel {
            vm: "x".into(),
            hide: vec![],
            set: vec!["MIDR_EL1=0x1".into()],
        },
        Request::StopAll,
        Request::Shutdown,
    ];
    for request in requests {
        let line = request.to_line();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        assert!(
            line.contains(&format!(r#""op":"{}""#, request.op())),
            "{line}"
        );
        let Frame::Line(body) = frame(line.as_bytes()) else {
            panic!("not a line: {line}");
        };
        assert_eq!(Request::parse(body), Ok(request));
    }
}

#[test]
fn shutdown_for_exit_is_never_read_from_the_socket() {
    let line = Request::ShutdownForExit.to_line();
    assert_eq!(line, "{\"op\":\"shutdown-for-exit\"}\n");
    let e = error(line.trim_end().as_bytes());
    assert!(e.starts_with("unknown op `shutdown-for-exit`"), "{e}");
    assert!(!OPS.contains(&Op::ShutdownForExit.name()));
}

#[test]
fn lines_are_written_as_the_derived_serializer_wrote_them() {
    // What clients and logs saw before `to_line` was written by hand.
    let cases = [
        (Request::List, r#"{"op":"list"}"#),
        (
            Request::Start {
                vm: "a\"b".into(),
                paused: false,
            },
            r#"{"op":"start","vm":"a\"b"}"#,
        ),
        (
            Request::Start {
                vm: "a".into(),
                paused: true,
            },
            r#"{"op":"start","vm":"a","paused":true}"#,
        ),
        (
            Request::SetModel {
                vm: "a".into(),
                hide: vec!["avx2".into()],
                set: vec![],
            },
            r#"{"op":"set-model","vm":"a","hide":["avx2"]}"#,
        ),
        (
            Request::SetModel {
                vm: "a".into(),
                hide: vec![],
                set: vec!["MIDR_EL1=0x1".into()],
            },
            r#"{"op":"set-model","vm":"a","hide":[],"set":["MIDR_EL1=0x1"]}"#,
        ),
        (
            Request::Create {
                spec: "[[vm]]\n".into(),
            },
            r#"{"op":"create","spec":"[[vm]]\n"}"#,
        ),
        (Request::StopAll, r#"{"op":"stop-all"}"#),
    ];
    for (request, line) in cases {
        assert_eq!(request.to_line(), format!("{line}\n"));
    }
}

#[test]
fn garbage_gets_an_error_that_names_the_problem() {
    let cases: &[(&[u8], &str)] = &[
        (b"hello", "not JSON"),
        (b"{\"op\":\"list\"", "not JSON"),
        (b"", "empty request"),
        (b"   ", "empty request"),
        (b"[1,2,3]", "not an array"),
        (b"[\"list\"]", "not an array"),
        (b"\"list\"", "not a string"),
        (b"42", "not a number"),
        (b"null", "not null"),
        (b"{}", "no field `op`"),
        (b"{\"vm\":\"a\"}", "no field `op`"),
        (b"{\"op\":7}", "field `op` must be a string"),
        (
            b"{\"op\":\"frob\"}",
            "unknown op `frob`; expected one of list, create",
        ),
        (b"{\"op\":\"START\",\"vm\":\"a\"}", "unknown op `START`"),
        (
            b"{\"op\":\"start\"}",
            "op `start` needs field `vm` (a VM name)",
        ),
        (
            b"{\"op\":\"start\",\"name\":\"a\"}",
            "op `start` has no field `name`; it takes `vm` and `paused`",
        ),
        (
            b"{\"op\":\"start\",\"vm\":\"a\",\"paused\":\"yes\"}",
            "field `paused` of op `start` must be true or false, not a string",
        ),
        (
            b"{\"op\":\"start\",\"vm\":3}",
            "field `vm` of op `start` must be a string, not a number",
        ),
        (
            b"{\"op\":\"start\",\"vm\":null}",
            "must be a string, not null",
        ),
        (b"{\"op\":\"create\"}", "op `create` needs field `spec`"),
        (
            b"{\"op\":\"create\",\"spec\":[\"a\"]}",
            "field `spec` of op `create` must be a string, not an array",
        ),
        (
            b"{\"op\":\"set-model\",\"vm\":\"a\"}",
            "op `set-model` needs field `hide` (x86: the features to hide) or `set` (arm64",
        ),
        (
            b"{\"op\":\"set-model\",\"vm\":\"a\",\"hide\":\"avx2\"}",
            "must be an array of strings, not a string",
        ),
        (
            b"{\"op\":\"set-model\",\"vm\":\"a\",\"hide\":[\"avx2\",1]}",
            "element 1 is a number",
        ),
        (
            b"{\"op\":\"list\",\"vm\":\"a\"}",
            "op `list` has no field `vm`; it takes no fields",
        ),
        (
            b"{\"op\":\"stop-all\",\"vm\":\"a\"}",
            "op `stop-all` has no field `vm`",
        ),
        (b"\xff\xfe{\"op\":\"list\"}", "not UTF-8"),
        (b"{\"op\":\"list\"} {\"op\":\"list\"}", "not JSON"),
        (
            b"{\"op\":\"list\",\"op\":\"shutdown\"}",
            "the request has the key `op` twice in one object",
        ),
        (
            b"{\"op\":\"start\",\"vm\":\"a\",\"vm\":\"b\"}",
            "the key `vm` twice",
        ),
        (
            b"{\"op\":\"set-model\",\"vm\":\"a\",\"hide\":[{\"x\":1,\"x\":2}]}",
            "the key `x` twice",
        ),
        (
            b"{\"op\":\"start\",\"vm\":\"a\",\"paused\":true,\"paused\":false}",
            "at line 1 column",
        ),
    ];
    for (line, needle) in cases {
        let e = error(line);
        assert!(
            e.contains(needle),
            "{:?}: expected {needle:?} in {e:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let line = "[".repeat(100_000);
    assert!(error(line.as_bytes()).contains("not JSON"));
    let line = format!("{}{}", "{\"a\":".repeat(50_000), "1");
    assert!(error(line.as_bytes()).contains("not JSON"));
}

#[test]
fn random_bytes_never_panic() {
    // A small deterministic generator: every byte value, every length up to 64.
    let mut state: u32 = 0x1234_5678;
    for len in 0..64 {
        for _ in 0..64 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    (state >> 24) as u8
                })
                .collect();
            assert!(Request::parse(&bytes).is_err());
        }
    }
}

#[test]
fn frames_split_lines_and_catch_oversized_and_cut_ones() {
    assert_eq!(
        frame(b"{\"op\":\"list\"}\n"),
        Frame::Line(b"{\"op\":\"list\"}")
    );
    assert_eq!(
        frame(b"{\"op\":\"list\"}\r\n"),
        Frame::Line(b"{\"op\":\"list\"}")
    );
    assert_eq!(frame(b"\n"), Frame::Line(b""));
    assert_eq!(frame(b"{\"op\":\"shutd"), Frame::Unterminated);
    let mut exactly = vec![b' '; MAX_REQUEST_BYTES];
    assert_eq!(frame(&exactly), Frame::Unterminated);
    exactly.push(b'\n');
    assert!(matches!(frame(&exactly), Frame::Line(l) if l.len() == MAX_REQUEST_BYTES));
    let over = vec![b'x'; MAX_REQUEST_BYTES + 1];
    assert_eq!(frame(&over), Frame::TooLong);
    let reply = too_long();
    assert!(!reply.ok);
    assert!(
        reply
            .error
            .unwrap()
            .contains(&MAX_REQUEST_BYTES.to_string())
    );
}

#[test]
fn replies_are_one_json_line() {
    let ok = Response::ok(serde_json::json!([{"name": "a"}]));
    let line = ok.to_line();
    assert_eq!(line, "{\"ok\":true,\"result\":[{\"name\":\"a\"}]}\n");
    assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), ok);
    let err = Response::error("no VM named \"b\"\nsecond line");
    let line = err.to_line();
    assert_eq!(line.matches('\n').count(), 1, "newlines inside are escaped");
    assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), err);
    assert!(!line.contains("result"));
}

#[test]
fn duplicate_keys_are_told_apart_from_lookalikes() {
    // Same letters, different keys: fine (and then judged on their own).
    let e = error(br#"{"op":"start","vm":"a","Vm":"b"}"#);
    assert!(e.contains("has no field `Vm`"), "{e}");
    // An escaped spelling of the same key is the same key.
    let e = error(br#"{"op":"start","vm":"a","\u0076m":"b"}"#);
    assert!(e.contains("the key `vm` twice"), "{e}");
    // The same key in two sibling objects is not a duplicate.
    assert!(
        error(br#"{"op":"set-model","vm":"a","hide":[{"k":1},{"k":2}]}"#)
            .contains("element 0 is an object")
    );
    // A long key is cut short in the message.
    let long = "k".repeat(10_000);
    let line = format!(r#"{{"op":"list","{long}":1,"{long}":2}}"#);
    let e = error(line.as_bytes());
    assert!(e.contains("twice") && e.len() < 300, "{e}");
    assert_eq!(shown("a\nb"), "a\\nb");
}
