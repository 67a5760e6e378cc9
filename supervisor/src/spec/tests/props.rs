//! Tests of `spec` (props), kept beside it so the module itself stays short.

use super::*;
use proptest::prelude::*;

const VALID: &[&str] = &[
    include_str!("../../demo.toml"),
    include_str!("../../../../fixtures/specs/single.toml"),
    include_str!("../../../../fixtures/specs/fleet.toml"),
    include_str!("../../../../fixtures/specs/hidden.toml"),
    include_str!("../../../../fixtures/specs/lock.toml"),
    include_str!("../../../../fixtures/specs/control.toml"),
    include_str!("../../../../fixtures/specs/arm64-6.1-max.toml"),
    include_str!("../../../../fixtures/specs/arm64-6.12-max.toml"),
    include_str!("../../../../fixtures/specs/arm64-6.12-neoverse-n1.toml"),
];

/// Keys that mutations insert: every key the parser reads (its own tables, so mutants get past
/// the syntax into the rules), then some that are wrong.
fn keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = TABLES
        .iter()
        .flat_map(|(_, keys)| keys.iter().copied())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.extend(["vcpu_count", "nmae", "-x", "\"quoted key\"", "a.b"]);
    keys
}

/// Values and bits of TOML that mutations insert: the spec's own words and some that are wrong.
const VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "65",
    "4096",
    "100001",
    "9223372036854775807",
    "\"\"",
    "\"-x\"",
    "\"a b\"",
    "\"aarch64\"",
    "\"x86_64\"",
    "\"host\"",
    "\"hide\"",
    "\"set\"",
    "\"rewrite-identical\"",
    "[\"avx2\"]",
    "[\"avx512\"]",
    "[\"psci-0.2\", \"pmu-v3\"]",
    "[\"power-off\"]",
    "\"ID_AA64PFR0_EL1.CSV3\"",
    "{ \"ID_AA64ISAR0_EL1.AES\" = 16 }",
    "{ trng = 1 }",
    "\"1.0\"",
    "\"0.1\"",
    "true",
    "1.5",
    "[]",
    "{}",
    "[[1]]",
    "\"\\u00e9\"",
];
const LINES: &[&str] = &[
    "[[vm]]",
    "[vm]",
    "[[vm.after_run]]",
    "[vm.arm64]",
    "[vm.cpu]",
    "[[vm]",
    "[",
    "=",
    "name = ",
    "\"unterminated",
    "# comment",
    "",
    "é = 1",
    "\t",
    "a = 1 = 2",
];

#[derive(Clone, Debug)]
enum Mutation {
    /// XOR one byte (the text is made UTF-8 again, lossily).
    FlipByte {
        at: usize,
        bits: u8,
    },
    /// Put any character somewhere.
    InsertChar {
        at: usize,
        c: char,
    },
    DeleteLine(usize),
    DuplicateLine(usize),
    /// Swap the values (right of `=`) of two lines.
    SwapValues(usize, usize),
    /// Give a line's key another value.
    SetValue {
        line: usize,
        value: usize,
    },
    /// Add `key = value` before a line.
    AddKey {
        line: usize,
        key: usize,
        value: usize,
    },
    /// Rename a line's key.
    RenameKey {
        line: usize,
        key: usize,
    },
    /// Add a line of TOML structure before a line.
    AddLine {
        line: usize,
        text: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let i = || any::<prop::sample::Index>().prop_map(|i| i.index(1 << 16));
    prop_oneof![
        (i(), 1..=255u8).prop_map(|(at, bits)| Mutation::FlipByte { at, bits }),
        (i(), any::<char>()).prop_map(|(at, c)| Mutation::InsertChar { at, c }),
        i().prop_map(Mutation::DeleteLine),
        i().prop_map(Mutation::DuplicateLine),
        (i(), i()).prop_map(|(a, b)| Mutation::SwapValues(a, b)),
        (i(), i()).prop_map(|(line, value)| Mutation::SetValue { line, value }),
        (i(), i(), i()).prop_map(|(line, key, value)| Mutation::AddKey { line, key, value }),
        (i(), i()).prop_map(|(line, key)| Mutation::RenameKey { line, key }),
        (i(), i()).prop_map(|(line, text)| Mutation::AddLine { line, text }),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len().max(1);
    let split = |line: &str| -> Option<(String, String)> {
        line.split_once('=')
            .map(|(k, v)| (k.to_string(), v.to_string()))
    };
    match m {
        Mutation::FlipByte { at, bits } => {
            let mut bytes = text.as_bytes().to_vec();
            if !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] ^= bits;
            }
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        Mutation::InsertChar { at, c } => {
            let mut chars: Vec<char> = text.chars().collect();
            chars.insert(at % (chars.len() + 1), *c);
            return chars.into_iter().collect();
        }
        Mutation::DeleteLine(line) => {
            if !lines.is_empty() {
                lines.remove(line % n);
            }
        }
        Mutation::DuplicateLine(line) => {
            if !lines.is_empty() {
                let copy = lines[line % n].clone();
                lines.insert(line % n, copy);
            }
        }
        Mutation::SwapValues(a, b) => {
            if let (Some((ka, va)), Some((kb, vb))) = (
                lines.get(a % n).and_then(|l| split(l)),
                lines.get(b % n).and_then(|l| split(l)),
            ) {
                lines[a % n] = format!("{ka}={vb}");
                lines[b % n] = format!("{kb}={va}");
            }
        }
        Mutation::SetValue { line, value } => {
            if let Some((k, _)) = lines.get(line % n).and_then(|l| split(l)) {
                lines[line % n] = format!("{k}= {}", VALUES[value % VALUES.len()]);
            }
        }
        Mutation::AddKey { line, key, value } => {
            let keys = keys();
            let at = line % (lines.len() + 1);
            lines.insert(
                at,
                format!(
                    "{} = {}",
                    keys[key % keys.len()],
                    VALUES[value % VALUES.len()]
                ),
            );
        }
        Mutation::RenameKey { line, key } => {
            if let Some((_, v)) = lines.get(line % n).and_then(|l| split(l)) {
                let keys = keys();
                lines[line % n] = format!("{} ={v}", keys[key % keys.len()]);
            }
        }
        Mutation::AddLine { line, text } => {
            let at = line % (lines.len() + 1);
            lines.insert(at, LINES[text % LINES.len()].to_string());
        }
    }
    lines.join("\n") + "\n"
}

/// `Ok`, or an error whose text starts with `f.toml:LINE:COL: ` for a position in `text`.
fn check(text: &str) -> Result<(), TestCaseError> {
    let Err(e) = parse(text, "f.toml") else {
        return Ok(());
    };
    let shown = e.to_string();
    let prefix = format!("f.toml:{}:{}: ", e.line, e.column);
    prop_assert!(shown.starts_with(&prefix), "{shown}");
    prop_assert!(!e.message.trim().is_empty(), "{shown}");
    let lines: Vec<&str> = text.split('\n').collect();
    prop_assert!(e.line >= 1 && e.line <= lines.len(), "{shown}\n{text}");
    prop_assert!(
        e.column >= 1 && e.column <= lines[e.line - 1].chars().count() + 1,
        "{shown}\n{text}"
    );
    Ok(())
}

#[test]
fn the_valid_specs_parse() {
    for text in VALID {
        parse(text, "f.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_specs_parse_or_name_a_position(
        spec in 0..VALID.len(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut text = VALID[spec].to_string();
        for m in &mutations {
            text = apply(&text, m);
        }
        check(&text)?;
    }

    #[test]
    fn arbitrary_text_parses_or_names_a_position(text in "\\PC{0,200}") {
        check(&text)?;
    }
}
