//! Property tests of the control protocol's parser ([`protocol::Request::parse`]): valid
//! request lines, mutated every way a confused or hostile client could (flipped bytes, cut
//! lines, inserted bytes, any JSON value in any field, a key twice, huge numbers, deep nesting),
//! must give a valid request or a clean error, never a panic. The daemon answers whatever a
//! client sends with what `parse` returns, so a panic here would be a connection lost without
//! a reason, and an accepted duplicate key a request read two ways.

use proptest::prelude::*;
use protocol::Request;
use serde_json::Value;

/// A printable-ish string, with some of the characters JSON must escape.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{0,12}",
        "\\PC{0,16}",
        Just("quote\"back\\slash\nnewline\u{0}nul".to_string()),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::List),
        text().prop_map(|spec| Request::Create { spec }),
        (text(), any::<bool>()).prop_map(|(vm, paused)| Request::Start { vm, paused }),
        text().prop_map(|vm| Request::Pause { vm }),
        text().prop_map(|vm| Request::Resume { vm }),
        text().prop_map(|vm| Request::Stop { vm }),
        text().prop_map(|vm| Request::Wait { vm }),
        text().prop_map(|vm| Request::Remove { vm }),
        text().prop_map(|vm| Request::Model { vm }),
        (
            text(),
            prop::collection::vec(text(), 0..4),
            prop::collection::vec(text(), 0..3)
        )
            .prop_map(|(vm, hide, set)| Request::SetModel { vm, hide, set }),
        Just(Request::StopAll),
        Just(Request::Shutdown),
    ]
}

/// A request line as the client sends it, without its newline.
fn line_of(request: &Request) -> String {
    request.to_line().trim_end_matches('\n').to_string()
}

/// Any JSON value, nested a little.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Numbers no machine type holds.
fn huge_number() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[1-9][0-9]{20,400}",
        "-?[1-9][0-9]{0,3}\\.[0-9]{1,300}",
        "-?[0-9]e[+-]?[0-9]{3,12}",
        Just("1e999999999999999999999".to_string()),
    ]
}

/// The outcome every line must have: a request that survives its own round trip, or an error
/// that says something and does not dwarf the line it is about.
fn check(line: &[u8]) -> Result<(), TestCaseError> {
    match Request::parse(line) {
        Ok(request) => {
            let again = line_of(&request);
            prop_assert_eq!(Request::parse(again.as_bytes()), Ok(request));
        }
        Err(e) => {
            prop_assert!(!e.trim().is_empty(), "an empty error for {:?}", line);
            prop_assert!(
                e.len() <= line.len() + 1024,
                "an error of {} bytes for a line of {}: {}",
                e.len(),
                line.len(),
                e
            );
        }
    }
    Ok(())
}

/// Put `insert` just after the first `{` of `line` (every request line starts with one).
fn after_brace(line: &str, insert: &str) -> String {
    format!("{{{insert}{}", &line[1..])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn valid_lines_parse_back_to_their_request(request in request()) {
        prop_assert_eq!(Request::parse(line_of(&request).as_bytes()), Ok(request));
    }

    #[test]
    fn flipped_bytes_give_a_request_or_a_clean_error(
        request in request(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let mut line = line_of(&request).into_bytes();
        for (at, xor) in flips {
            let i = at.index(line.len());
            line[i] ^= xor;
        }
        check(&line)?;
    }

    #[test]
    fn a_cut_line_is_an_error(request in request(), at in any::<prop::sample::Index>()) {
        let line = line_of(&request).into_bytes();
        let cut = &line[..at.index(line.len())];
        prop_assert!(Request::parse(cut).is_err(), "{:?}", String::from_utf8_lossy(cut));
    }

    #[test]
    fn inserted_bytes_give_a_request_or_a_clean_error(
        request in request(),
        at in any::<prop::sample::Index>(),
        bytes in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        let mut line = line_of(&request).into_bytes();
        let i = at.index(line.len() + 1);
        line.splice(i..i, bytes);
        check(&line)?;
    }

    #[test]
    fn any_value_in_any_field_gives_a_request_or_a_clean_error(
        request in request(),
        field in prop_oneof![
            Just("op"), Just("vm"), Just("spec"), Just("paused"), Just("hide"), Just("other")
        ],
        value in json(),
    ) {
        let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(&line_of(&request))
        else {
            return Err(TestCaseError::fail("a request line is a JSON object"));
        };
        object.insert(field.to_string(), value);
        check(Value::Object(object).to_string().as_bytes())?;
    }

    #[test]
    fn a_key_twice_is_refused_by_name(
        request in request(),
        which in any::<prop::sample::Index>(),
        value in json(),
    ) {
        let line = line_of(&request);
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(&line) else {
            return Err(TestCaseError::fail("a request line is a JSON object"));
        };
        let keys: Vec<&String> = object.keys().collect();
        let key = keys[which.index(keys.len())];
        let line = after_brace(&line, &format!("{}:{value},", Value::String(key.clone())));
        let e = Request::parse(line.as_bytes()).expect_err(&line);
        prop_assert!(e.contains(&format!("the key `{key}` twice")), "{}", e);
    }

    #[test]
    fn a_key_twice_inside_a_field_is_refused(
        request in request(),
        key in text(),
        a in json(),
        b in json(),
    ) {
        let key = Value::String(key);
        let inner = format!("{{{key}:{a},{key}:{b}}}");
        let line = after_brace(&line_of(&request), &format!("\"hide\":[{inner}],"));
        let e = Request::parse(line.as_bytes()).expect_err(&line);
        prop_assert!(e.contains("twice"), "{}", e);
    }

    #[test]
    fn huge_numbers_give_a_request_or_a_clean_error(
        request in request(),
        field in prop_oneof![Just("op"), Just("vm"), Just("paused"), Just("x")],
        number in huge_number(),
    ) {
        let line = line_of(&request);
        let without = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(mut object)) => {
                object.remove(field);
                Value::Object(object).to_string()
            }
            _ => return Err(TestCaseError::fail("a request line is a JSON object")),
        };
        check(after_brace(&without, &format!("\"{field}\":{number},")).as_bytes())?;
        check(number.as_bytes())?;
    }

    #[test]
    fn deep_nesting_is_a_clean_error(
        request in request(),
        depth in 0usize..4096,
        arrays in any::<bool>(),
    ) {
        let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
        let value = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let line = after_brace(&line_of(&request), &format!("\"vm\":{value},"));
        check(line.as_bytes())?;
        check(value.as_bytes())?;
        // Left open: cut short at any depth.
        check(open.repeat(depth).as_bytes())?;
    }
}
