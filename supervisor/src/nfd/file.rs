//! The node-feature-discovery local feature file `vmfleet nfd` writes, made from plain data:
//! the fingerprint's digest and, per CPU template, whether this host can run it. Pure (no I/O,
//! no clock), so every rule of the format is tested here.
//!
//! The format (nfd-worker's `local` source, `features.d/`): one `<namespace>/<name>[=<value>]`
//! per line, `#` comments, and the directive `# +expiry-time=<RFC3339>` for the lines after it;
//! a file over 64 KiB is ignored whole. Names follow Kubernetes' label rules: at most 63
//! characters of `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`; values the same, or empty.
//!
//! vmfleet's labels: `vmfleet.dev/fingerprint=<digest>`, then one
//! `vmfleet.dev/template.<slug>=true|false` per template, sorted by label. A template this host
//! cannot run is written `=false`, not left out, so that a node whose file is stale or whose
//! templates changed never keeps a `true` it no longer deserves by omission, and a selector on
//! `"true"` matches only hosts that said so. [`slug`] turns any template name into a valid name.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The label namespace (the part before `/`).
pub const NAMESPACE: &str = "vmfleet.dev";

/// The label carrying the fingerprint's digest.
pub const FINGERPRINT_LABEL: &str = "vmfleet.dev/fingerprint";

/// What every template label starts with: `vmfleet.dev/template.` then the template's slug.
pub const TEMPLATE_LABEL_PREFIX: &str = "vmfleet.dev/template.";

/// The most bytes a feature file may hold: nfd-worker ignores a larger one whole.
pub const MAX_FILE_BYTES: usize = 65_536;

/// The most characters of a label's name (after the `/`) and of its value.
pub const MAX_NAME_CHARS: usize = 63;

/// The most characters of a template's slug: a name is `template.` and the slug.
pub const MAX_SLUG_CHARS: usize = MAX_NAME_CHARS - "template.".len();

/// How many characters of a too-long name's slug are kept before its hash.
const LONG_SLUG_KEEP: usize = MAX_SLUG_CHARS - 1 - 8;

/// What can keep the file from being written.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    /// Two templates would carry the same label.
    #[error(
        "templates {first:?} and {second:?} both become label {label}: rename one (a label name \
         keeps only letters, digits, '-', '_' and '.')"
    )]
    SlugCollision {
        /// The first template (in the order given).
        first: String,
        /// The second.
        second: String,
        /// The label both would carry.
        label: String,
    },
    /// The same template name was given twice.
    #[error("template {0:?} is given twice")]
    DuplicateTemplate(String),
    /// A label's name or value breaks Kubernetes' rules (the digest, or a bug in the slug).
    #[error("label {label}: {problem}")]
    InvalidLabel {
        /// The whole `name=value` line.
        label: String,
        /// What is wrong.
        problem: String,
    },
    /// The expiry time is not an RFC 3339 timestamp of the shape the command writes.
    #[error("expiry time {0:?} is not an RFC 3339 UTC timestamp (2026-12-03T14:00:00Z)")]
    BadExpiry(String),
    /// The file would be larger than nfd-worker reads.
    #[error(
        "the feature file would be {bytes} bytes ({templates} templates); node-feature-discovery \
         ignores a file over {MAX_FILE_BYTES} bytes whole: use fewer templates"
    )]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// How many templates it labels.
        templates: usize,
    },
}

/// One template and whether this host can run it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateVerdict {
    /// The template's name (its `name`, or its file name without `.toml`).
    pub template: String,
    /// Whether this host can run it.
    pub runs: bool,
}

/// One label of the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Label {
    /// `vmfleet.dev/...`.
    pub name: String,
    /// Its value.
    pub value: String,
    /// The template it is about (`None` for the fingerprint's label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// The file: its labels, in file order, and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureFile {
    /// Every label, in the order the file lists them.
    pub labels: Vec<Label>,
    /// The file's text.
    pub text: String,
}

/// Whether `c` may appear inside a label name or value.
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Why `text` is not a valid label name (the part after `/`) or non-empty value, if it is not:
/// at most 63 characters of `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn label_text_problem(text: &str) -> Option<String> {
    let len = text.chars().count();
    if len == 0 {
        return Some("is empty".into());
    }
    if len > MAX_NAME_CHARS {
        return Some(format!("is {len} characters, over {MAX_NAME_CHARS}"));
    }
    if let Some(c) = text.chars().find(|&c| !name_char(c)) {
        return Some(format!(
            "holds {c:?} (only letters, digits, '-', '_' and '.')"
        ));
    }
    let ends = [text.chars().next(), text.chars().last()];
    if ends.iter().flatten().any(|c| !c.is_ascii_alphanumeric()) {
        return Some("must begin and end with a letter or a digit".into());
    }
    None
}

/// The first 8 hex digits of `name`'s SHA-256: what tells apart names a slug shortens.
fn short_hash(name: &str) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(name.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The part of a template's label after `template.`, valid for any template name:
///
/// - a name that is already valid (letters, digits, `-`, `_`, `.`; a letter or digit at both
///   ends; at most [`MAX_SLUG_CHARS`]) is kept as it is, so `vmfleet.dev/template.NAME` is what
///   one expects;
/// - otherwise every other character (spaces, `/`, `:`, non-ASCII letters) becomes `-`, runs
///   of `-` become one, and punctuation at either end is dropped: `"Neoverse V1 (strict)"` →
///   `Neoverse-V1-strict`;
/// - a result over [`MAX_SLUG_CHARS`] keeps its first 45 characters, then `-` and 8 hex digits
///   of the whole name's SHA-256, so long names that share a beginning stay apart;
/// - a name with nothing left (`"日本"`, `"--"`) becomes those 8 hex digits alone.
///
/// Different names can still meet (`"a b"` and `"a/b"` both give `a-b`): [`feature_file`]
/// refuses that with both names.
pub fn slug(name: &str) -> String {
    if label_text_problem(name).is_none() && name.chars().count() <= MAX_SLUG_CHARS {
        return name.to_string();
    }
    let mut mapped = String::new();
    for c in name.chars() {
        let c = if name_char(c) { c } else { '-' };
        if !(c == '-' && mapped.ends_with('-')) {
            mapped.push(c);
        }
    }
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        return short_hash(name);
    }
    if trimmed.len() <= MAX_SLUG_CHARS {
        return trimmed.to_string();
    }
    // ASCII only by now, so byte positions are character positions.
    let kept = trimmed[..LONG_SLUG_KEEP].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{kept}-{}", short_hash(name))
}

/// The label a template carries: `vmfleet.dev/template.` and its [`slug`].
pub fn template_label(name: &str) -> String {
    format!("{TEMPLATE_LABEL_PREFIX}{}", slug(name))
}

/// Whether `expiry` has the shape `YYYY-MM-DDTHH:MM:SSZ` (what the command writes).
fn is_rfc3339_utc(expiry: &str) -> bool {
    let b = expiry.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    b.len() == 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'Z'
}

/// Check one label against Kubernetes' rules.
fn check(label: &Label) -> Result<(), FileError> {
    let invalid = |problem: String| FileError::InvalidLabel {
        label: format!("{}={}", label.name, label.value),
        problem,
    };
    let name = label
        .name
        .strip_prefix(NAMESPACE)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| invalid(format!("is not in namespace {NAMESPACE}")))?;
    if let Some(problem) = label_text_problem(name) {
        return Err(invalid(format!("the name {name:?} {problem}")));
    }
    if !label.value.is_empty() {
        if let Some(problem) = label_text_problem(&label.value) {
            return Err(invalid(format!("the value {problem}")));
        }
    }
    Ok(())
}

/// The feature file for a host whose fingerprint has `digest`, given each template's verdict;
/// `expiry` (`YYYY-MM-DDTHH:MM:SSZ`) makes nfd drop the labels after that time unless the file is
/// rewritten first. Labels are sorted by name after the fingerprint's, so an unchanged host
/// gives the same bytes.
pub fn feature_file(
    digest: &str,
    verdicts: &[TemplateVerdict],
    expiry: Option<&str>,
) -> Result<FeatureFile, FileError> {
    let mut by_label: BTreeMap<String, &TemplateVerdict> = BTreeMap::new();
    for verdict in verdicts {
        let label = template_label(&verdict.template);
        if let Some(first) = by_label.get(&label) {
            return Err(if first.template == verdict.template {
                FileError::DuplicateTemplate(verdict.template.clone())
            } else {
                FileError::SlugCollision {
                    first: first.template.clone(),
                    second: verdict.template.clone(),
                    label,
                }
            });
        }
        by_label.insert(label, verdict);
    }
    let mut labels = vec![Label {
        name: FINGERPRINT_LABEL.into(),
        value: digest.into(),
        template: None,
    }];
    labels.extend(by_label.into_iter().map(|(name, verdict)| Label {
        name,
        value: verdict.runs.to_string(),
        template: Some(verdict.template.clone()),
    }));
    for label in &labels {
        check(label)?;
    }
    let mut text = String::new();
    text += "# Written by `vmfleet nfd` (vmfleet ";
    text += env!("CARGO_PKG_VERSION");
    text += ") for node-feature-discovery's local source. Rewritten whole: do not edit.\n";
    text += "# vmfleet.dev/fingerprint: the digest of this host's vmfleet fingerprint.\n";
    text += "# vmfleet.dev/template.<name>: true if this host can run the CPU template, false if not.\n";
    if let Some(expiry) = expiry {
        if !is_rfc3339_utc(expiry) {
            return Err(FileError::BadExpiry(expiry.into()));
        }
        // Writing to a String cannot fail.
        let _ = writeln!(text, "# +expiry-time={expiry}");
    }
    for label in &labels {
        let _ = writeln!(text, "{}={}", label.name, label.value);
    }
    if text.len() > MAX_FILE_BYTES {
        return Err(FileError::TooLarge {
            bytes: text.len(),
            templates: verdicts.len(),
        });
    }
    Ok(FeatureFile { labels, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256-0123456789abcdef0123456789abcdef";

    fn verdict(template: &str, runs: bool) -> TemplateVerdict {
        TemplateVerdict {
            template: template.into(),
            runs,
        }
    }

    #[test]
    fn a_valid_name_is_its_own_slug() {
        for name in ["t2s", "Neoverse-V1", "graviton3_strict", "a.b", "x", "0"] {
            assert_eq!(slug(name), name);
        }
        let longest = "a".repeat(MAX_SLUG_CHARS);
        assert_eq!(slug(&longest), longest);
    }

    #[test]
    fn other_names_are_made_valid() {
        assert_eq!(slug("Neoverse V1 (strict)"), "Neoverse-V1-strict");
        assert_eq!(slug("-lead_"), "lead");
        assert_eq!(slug("..x.."), "x");
        assert_eq!(slug("a / b"), "a-b");
        assert_eq!(slug("café"), "caf");
        assert_eq!(slug("zoë-2"), "zo-2");
        for name in ["日本", "--", "", " ", "_"] {
            let s = slug(name);
            assert_eq!(s.len(), 8, "{name:?} → {s}");
            assert!(label_text_problem(&s).is_none(), "{name:?} → {s}");
        }
        assert_ne!(slug("日本"), slug("中国"));
    }

    #[test]
    fn long_names_keep_a_beginning_and_a_hash() {
        let a = format!("{}-a", "x".repeat(80));
        let b = format!("{}-b", "x".repeat(80));
        let (sa, sb) = (slug(&a), slug(&b));
        assert_ne!(sa, sb);
        for s in [&sa, &sb] {
            assert_eq!(s.len(), MAX_SLUG_CHARS, "{s}");
            assert!(s.starts_with(&"x".repeat(LONG_SLUG_KEEP)), "{s}");
            assert!(
                label_text_problem(&format!("template.{s}")).is_none(),
                "{s}"
            );
        }
        // A cut that lands on punctuation drops it before the hash.
        let dashed = format!("{}--{}", "y".repeat(LONG_SLUG_KEEP - 1), "z".repeat(40));
        let s = slug(&dashed);
        assert!(
            s.starts_with(&format!("{}-", "y".repeat(LONG_SLUG_KEEP - 1))),
            "{s}"
        );
        assert!(!s.contains("--"), "{s}");
        // One character over: shortened too.
        assert_eq!(slug(&"a".repeat(MAX_SLUG_CHARS + 1)).len(), MAX_SLUG_CHARS);
    }

    #[test]
    fn every_slug_makes_a_valid_label() {
        let names = [
            "plain",
            "with space",
            "ünïcödé",
            "🦀",
            "trailing.",
            ".leading",
            "a\nb",
            "tab\there",
            "slash/in/name",
            "x=y",
            "#comment",
            &"long-".repeat(30),
            &"é".repeat(70),
        ];
        for name in names {
            let label = template_label(name);
            let part = label.strip_prefix("vmfleet.dev/").unwrap();
            assert!(label_text_problem(part).is_none(), "{name:?} → {label}");
        }
    }

    #[test]
    fn the_file_lists_the_fingerprint_then_each_template_sorted() {
        let file = feature_file(
            DIGEST,
            &[
                verdict("zen4", false),
                verdict("t2s", true),
                verdict("Neoverse V1", true),
            ],
            None,
        )
        .unwrap();
        let lines: Vec<&str> = file.text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "vmfleet.dev/fingerprint=sha256-0123456789abcdef0123456789abcdef",
                "vmfleet.dev/template.Neoverse-V1=true",
                "vmfleet.dev/template.t2s=true",
                "vmfleet.dev/template.zen4=false",
            ]
        );
        assert_eq!(file.labels[1].template.as_deref(), Some("Neoverse V1"));
        assert_eq!(file.labels[0].template, None);
        assert!(file.text.starts_with("# Written by `vmfleet nfd`"));
        assert!(!file.text.contains("+expiry-time"));
        // No comment line is read as a directive.
        assert!(!file.text.lines().any(|l| l.starts_with("# +")));
    }

    #[test]
    fn the_expiry_comes_before_every_label() {
        let file =
            feature_file(DIGEST, &[verdict("a", true)], Some("2026-12-03T15:00:00Z")).unwrap();
        let lines: Vec<&str> = file.text.lines().collect();
        let at = lines
            .iter()
            .position(|l| *l == "# +expiry-time=2026-12-03T15:00:00Z")
            .unwrap();
        assert!(lines[..at].iter().all(|l| l.starts_with('#')));
        for bad in [
            "2026-12-03 15:00:00Z",
            "2026-12-03T15:00:00Z\nx=y",
            "tomorrow",
            "",
        ] {
            assert_eq!(
                feature_file(DIGEST, &[], Some(bad)),
                Err(FileError::BadExpiry(bad.into()))
            );
        }
    }

    #[test]
    fn colliding_templates_are_named_both() {
        let err =
            feature_file(DIGEST, &[verdict("a b", true), verdict("a/b", false)], None).unwrap_err();
        assert_eq!(
            err,
            FileError::SlugCollision {
                first: "a b".into(),
                second: "a/b".into(),
                label: "vmfleet.dev/template.a-b".into(),
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("\"a b\"") && text.contains("\"a/b\""),
            "{text}"
        );
        assert_eq!(
            feature_file(DIGEST, &[verdict("a", true), verdict("a", true)], None),
            Err(FileError::DuplicateTemplate("a".into()))
        );
    }

    #[test]
    fn a_bad_digest_is_refused() {
        for digest in ["", "sha256:abc", &"a".repeat(64), "-abc"] {
            let err = feature_file(digest, &[], None);
            if digest.is_empty() {
                // An empty value is valid for Kubernetes.
                assert!(err.is_ok());
            } else {
                assert!(
                    matches!(err, Err(FileError::InvalidLabel { .. })),
                    "{digest}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn a_file_over_64_kib_is_refused() {
        let many: Vec<TemplateVerdict> = (0..1500)
            .map(|i| verdict(&format!("template-number-{i:05}"), i % 2 == 0))
            .collect();
        let err = feature_file(DIGEST, &many, None).unwrap_err();
        assert!(
            matches!(err, FileError::TooLarge { bytes, templates: 1500 } if bytes > MAX_FILE_BYTES),
            "{err:?}"
        );
        let fits = feature_file(DIGEST, &many[..1000], None).unwrap();
        assert!(fits.text.len() <= MAX_FILE_BYTES);
    }
}
