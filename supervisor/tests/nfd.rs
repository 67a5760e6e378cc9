//! `vmfleet nfd`: the feature file it writes, read back by a checker of node-feature-discovery's
//! local-file rules written here from the format (not from the writer's code): each line a
//! comment, a directive or `<namespace>/<name>[=<value>]`; an allowed namespace; Kubernetes'
//! name and value rules; no name twice; at most 64 KiB. Then the command: over a saved
//! fingerprint with a temporary templates directory (the library's `run_with` with a stub
//! verdict, and the binary), its errors and exit statuses; the binary's labels against `vmfleet
//! check TEMPLATE FP`'s verdicts; and live on /dev/kvm (SKIPPED without it) the same digest
//! `host --fingerprint` gives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use supervisor::cli::NfdArgs;
use supervisor::exit::{Status, status_of};
use supervisor::nfd::file::{TemplateVerdict, feature_file};

fn vmfleet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmfleet"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmfleet-nfd-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const X86_FP: &str = "fixtures/fingerprints/x86-amd-family25-model17.host.json";
const ARM_FP: &str = "fixtures/fingerprints/arm64-7.2-max.host.json";

// ---- The checker: node-feature-discovery's local feature file rules --------------------------

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(inner)
}

/// A DNS subdomain (RFC 1123): at most 253 characters, dot-separated labels of
/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` of at most 63.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// nfd denies `kubernetes.io` and `*.kubernetes.io` but for its own two.
fn namespace_allowed(ns: &str) -> bool {
    let k8s = ns == "kubernetes.io" || ns.ends_with(".kubernetes.io");
    !k8s || ns == "feature.node.kubernetes.io" || ns == "profile.node.kubernetes.io"
}

/// `YYYY-MM-DDTHH:MM:SS` then `Z` or `±HH:MM` (RFC 3339 as Go's time.RFC3339 reads it), with
/// fields in range.
fn is_rfc3339(s: &str) -> bool {
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let sep = |i: usize, c: u8| s.as_bytes().get(i) == Some(&c);
    let (Some(_), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return false;
    };
    let zone = s.get(19..).unwrap_or("");
    let zone_ok = zone == "Z"
        || (zone.len() == 6 && matches!(&zone[..1], "+" | "-") && zone.as_bytes()[3] == b':');
    sep(4, b'-')
        && sep(7, b'-')
        && sep(10, b'T')
        && sep(13, b':')
        && sep(16, b':')
        && (1..=12).contains(&mo)
        && (1..=31).contains(&d)
        && h < 24
        && mi < 60
        && sec < 60
        && zone_ok
}

/// Read a feature file as nfd-worker does, failing on anything its rules refuse; returns each
/// label (`namespace/name` → value) and the expiry directive's value, if any.
fn nfd_read(text: &str) -> (BTreeMap<String, String>, Option<String>) {
    assert!(
        text.len() <= 65_536,
        "{} bytes: nfd ignores the file",
        text.len()
    );
    assert!(text.ends_with('\n'), "the last line is not ended");
    let mut labels = BTreeMap::new();
    let mut expiry = None;
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", n + 1);
        if let Some(directive) = line.strip_prefix("# +") {
            let (key, value) = directive.split_once('=').unwrap_or((directive, ""));
            match key {
                "expiry-time" => {
                    assert!(is_rfc3339(value), "{at}: not RFC 3339");
                    expiry = Some(value.to_string());
                }
                "no-label" | "no-feature" => {}
                _ => panic!("{at}: unknown directive"),
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        assert!(!line.trim().is_empty(), "{at}: blank line");
        let (key, value) = line.split_once('=').unwrap_or((line, "true"));
        let (ns, name) = key
            .split_once('/')
            .unwrap_or_else(|| panic!("{at}: no namespace"));
        assert!(
            is_dns_subdomain(ns),
            "{at}: namespace is not a DNS subdomain"
        );
        assert!(namespace_allowed(ns), "{at}: namespace denied");
        assert!(is_qualified_name(name), "{at}: bad name");
        assert!(
            value.is_empty() || is_qualified_name(value),
            "{at}: bad value"
        );
        assert!(
            labels.insert(key.to_string(), value.to_string()).is_none(),
            "{at}: the name appears twice"
        );
    }
    (labels, expiry)
}

#[test]
fn the_checker_refuses_what_nfd_refuses() {
    let refused = [
        "noslash=true\n",
        "kubernetes.io/x=true\n",
        "node.kubernetes.io/x=true\n",
        "vmfleet.dev/-x=true\n",
        "vmfleet.dev/x=a b\n",
        "Vmfleet.dev/x=true\n",
        "vmfleet.dev/x=true\nvmfleet.dev/x=false\n",
        "# +expiry-time=tomorrow\n",
        "vmfleet.dev/x=true",
    ];
    for text in refused {
        let result = std::panic::catch_unwind(|| nfd_read(text));
        assert!(result.is_err(), "accepted {text:?}");
    }
    let (labels, expiry) = nfd_read(
        "# a comment\n# +expiry-time=2026-12-03T15:00:00+01:00\nfeature.node.kubernetes.io/a\n\
         vmfleet.dev/b=\n",
    );
    assert_eq!(labels["feature.node.kubernetes.io/a"], "true");
    assert_eq!(labels["vmfleet.dev/b"], "");
    assert_eq!(expiry.as_deref(), Some("2026-12-03T15:00:00+01:00"));
}

// ---- The writer against the checker ----------------------------------------------------------

fn verdicts(names: &[&str]) -> Vec<TemplateVerdict> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| TemplateVerdict {
            template: name.to_string(),
            runs: i % 2 == 0,
        })
        .collect()
}

#[test]
fn the_written_file_follows_the_format() {
    let long_a = format!("{}-alpha", "neoverse".repeat(9));
    let long_b = format!("{}-beta", "neoverse".repeat(9));
    let sets: Vec<Vec<&str>> = vec![
        vec![],
        vec!["t2s"],
        vec![
            "Neoverse V1 (strict)",
            "graviton3",
            "zen4",
            "日本",
            "🦀 crab",
        ],
        vec![".hidden", "trailing-", "_under_", "a.b.c", "UPPER", "x/y:z"],
        vec![&long_a, &long_b, "0", "9lives"],
    ];
    let digest = "sha256-00112233445566778899aabbccddeeff";
    for names in &sets {
        for expiry in [None, Some("2026-12-03T15:00:00Z")] {
            let file = feature_file(digest, &verdicts(names), expiry).unwrap();
            let (labels, read_expiry) = nfd_read(&file.text);
            assert_eq!(read_expiry.as_deref(), expiry);
            // The expiry covers every label: it comes before the first.
            let first_label = file.text.lines().position(|l| !l.starts_with('#'));
            let directive = file
                .text
                .lines()
                .position(|l| l.starts_with("# +expiry-time="));
            if expiry.is_some() {
                assert!(directive < first_label, "{}", file.text);
            }
            assert_eq!(labels.len(), names.len() + 1, "{names:?}");
            assert_eq!(labels["vmfleet.dev/fingerprint"], digest);
            for (i, name) in names.iter().enumerate() {
                let label = file
                    .labels
                    .iter()
                    .find(|l| l.template.as_deref() == Some(*name))
                    .unwrap_or_else(|| panic!("no label for {name:?}"));
                assert!(label.name.starts_with("vmfleet.dev/template."));
                let want = if i % 2 == 0 { "true" } else { "false" };
                assert_eq!(labels[&label.name], want, "{name:?}");
            }
        }
    }
}

#[test]
fn the_largest_file_that_fits_is_read_and_the_next_is_refused() {
    let digest = "sha256-00112233445566778899aabbccddeeff";
    let names: Vec<String> = (0..2000).map(|i| format!("cpu-template-{i:04}")).collect();
    let mut fits = 0;
    for n in (0..names.len()).step_by(50) {
        let set: Vec<TemplateVerdict> = names[..n]
            .iter()
            .map(|t| TemplateVerdict {
                template: t.clone(),
                runs: true,
            })
            .collect();
        match feature_file(digest, &set, Some("2026-12-03T15:00:00Z")) {
            Ok(file) => {
                nfd_read(&file.text);
                fits = n;
            }
            Err(e) => {
                assert!(e.to_string().contains("65536"), "{e}");
                assert!(fits > 0);
                return;
            }
        }
    }
    panic!("2000 templates fit in 64 KiB?");
}

// ---- The command -----------------------------------------------------------------------------

fn args(templates: &Path, fingerprint: Option<&str>, out: &Path) -> NfdArgs {
    NfdArgs {
        templates: templates.to_path_buf(),
        fingerprint: fingerprint.map(|f| root().join(f)),
        out: out.to_path_buf(),
        expiry: Some(std::time::Duration::from_secs(3600)),
        json: false,
    }
}

/// A stub for the check engine: a template runs when its description says `runs`.
fn stub_verdict(
    template: &vcpu::model::template::CpuTemplate,
    _host: &supervisor::model_cmd::ModelHost,
) -> anyhow::Result<bool> {
    match template.description.as_deref() {
        Some("runs") => Ok(true),
        Some("does not run") => Ok(false),
        other => anyhow::bail!("the stub cannot judge {other:?}"),
    }
}

/// A template file's text: x86, described so that [`stub_verdict`] runs it or not.
fn template(runs: bool) -> String {
    let says = if runs { "runs" } else { "does not run" };
    format!("arch = \"x86_64\"\ndescription = \"{says}\"\n")
}

/// The digest of a fingerprint file as `vmfleet nfd` computes it.
fn digest_of(path: &Path) -> String {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    supervisor::fingerprint::digest::document_digest(&doc)
}

#[test]
fn the_command_labels_each_template_of_the_directory() {
    let dir = scratch_dir("labels");
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    for (name, text) in [
        ("graviton3.toml", template(true)),
        ("Neoverse V1.toml", template(false)),
        ("zen4.toml", template(true)),
        (
            "named.toml",
            format!("name = \"web-baseline.v2\"\n{}", template(false)),
        ),
        (".hidden.toml", "not read".into()),
        ("notes.txt", "not read".into()),
    ] {
        std::fs::write(templates.join(name), text).unwrap();
    }
    std::fs::create_dir_all(templates.join("subdir.toml")).unwrap();
    // A ConfigMap volume: each file a symbolic link into a hidden `..data` directory.
    std::fs::create_dir_all(templates.join("..data")).unwrap();
    std::fs::write(templates.join("..data/linked.toml"), template(true)).unwrap();
    std::os::unix::fs::symlink("..data/linked.toml", templates.join("linked.toml")).unwrap();
    let out = dir.join("features.d/vmfleet");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let status =
        supervisor::nfd::run_with(&args(&templates, Some(ARM_FP), &out), &stub_verdict).unwrap();
    assert_eq!(status, Status::Success);
    let text = std::fs::read_to_string(&out).unwrap();
    let (labels, expiry) = nfd_read(&text);
    assert!(expiry.is_some());
    let want: BTreeMap<String, String> = [
        ("vmfleet.dev/fingerprint", digest_of(&root().join(ARM_FP))),
        ("vmfleet.dev/template.Neoverse-V1", "false".into()),
        ("vmfleet.dev/template.graviton3", "true".into()),
        ("vmfleet.dev/template.linked", "true".into()),
        ("vmfleet.dev/template.web-baseline.v2", "false".into()),
        ("vmfleet.dev/template.zen4", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(labels, want);
    // Only the file: no dot-file left beside it.
    let names: Vec<String> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["vmfleet"]);

    // Every refusal is bad input, names what and where, and keeps the old file.
    let refused = |setup: &dyn Fn(), says: &[&str], undo: &dyn Fn()| {
        setup();
        let err = supervisor::nfd::run_with(&args(&templates, Some(ARM_FP), &out), &stub_verdict)
            .unwrap_err();
        let message = format!("{err:#}");
        for s in says {
            assert!(message.contains(s), "{s}: {message}");
        }
        assert_eq!(status_of(&err), Status::BadInput, "{message}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
        undo();
    };
    let write = |name: &str, text: &str| std::fs::write(templates.join(name), text).unwrap();
    let remove = |name: &str| std::fs::remove_file(templates.join(name)).unwrap();
    // Two templates with one label: both names and both files.
    refused(
        &|| {
            write("zen 4.toml", &template(true));
            write("zen-4.toml", &template(true));
        },
        &[
            "\"zen 4\"",
            "\"zen-4\"",
            "zen 4.toml",
            "zen-4.toml",
            "template.zen-4",
        ],
        &|| {
            remove("zen 4.toml");
            remove("zen-4.toml");
        },
    );
    // Two files with one template name.
    refused(
        &|| {
            write(
                "again.toml",
                &format!("name = \"zen4\"\n{}", template(true)),
            )
        },
        &["again.toml", "zen4.toml", "both named \"zen4\""],
        &|| remove("again.toml"),
    );
    // A template that is not one: its file, line and column.
    refused(
        &|| write("broken.toml", "arch = \"x86_64\"\nspeed = 11\n"),
        &["broken.toml:2:1"],
        &|| remove("broken.toml"),
    );
    // One the check engine cannot judge.
    refused(
        &|| write("odd.toml", "arch = \"x86_64\"\n"),
        &["judging template", "odd.toml", "cannot judge"],
        &|| remove("odd.toml"),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn run(args: &[&str]) -> Output {
    vmfleet().args(args).output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_binary_writes_the_file_and_names_what_it_refuses() {
    let dir = scratch_dir("binary");
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let t = templates.to_str().unwrap();
    let fp = root().join(X86_FP);
    let fp = fp.to_str().unwrap();
    let out_file = dir.join("vmfleet");
    let o = out_file.to_str().unwrap();

    // To stdout: the file itself, and nothing else.
    let out = run(&["nfd", "--templates", t, "--fingerprint", fp, "--out", "-"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let (labels, expiry) = nfd_read(&stdout);
    assert_eq!(expiry, None);
    assert_eq!(labels.len(), 1);
    assert_eq!(labels["vmfleet.dev/fingerprint"], digest_of(Path::new(fp)));
    assert!(stderr.contains("no *.toml template"), "{stderr}");

    // To a file, with an expiry about an hour ahead.
    let out = run(&[
        "nfd",
        "--templates",
        t,
        "--fingerprint",
        fp,
        "--out",
        o,
        "--expiry",
        "1h",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.starts_with(&format!("wrote {o} (1 label,")),
        "{stdout}"
    );
    let (_, expiry) = nfd_read(&std::fs::read_to_string(&out_file).unwrap());
    let expiry = expiry.unwrap();
    let now = std::time::SystemTime::now();
    let in_59m = supervisor::nfd::expiry_time(now, std::time::Duration::from_secs(59 * 60));
    let in_61m = supervisor::nfd::expiry_time(now, std::time::Duration::from_secs(61 * 60));
    assert!(
        in_59m.unwrap().as_str() < expiry.as_str() && expiry.as_str() < in_61m.unwrap().as_str(),
        "{expiry}"
    );

    // --json: only JSON on stdout, naming the file and each label.
    let out = run(&[
        "nfd",
        "--templates",
        t,
        "--fingerprint",
        fp,
        "--out",
        o,
        "--json",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("only JSON");
    assert_eq!(doc["path"], o);
    assert_eq!(doc["labels"][0]["name"], "vmfleet.dev/fingerprint");
    assert_eq!(doc["labels"][0]["value"], doc["fingerprint_digest"]);

    // The exit statuses of what it refuses.
    let bad_templates = dir.join("bad-templates");
    std::fs::create_dir_all(&bad_templates).unwrap();
    std::fs::write(bad_templates.join("bad.toml"), "arch = \"sparc\"\n").unwrap();
    let missing = dir.join("missing");
    let m = missing.to_str().unwrap();
    let garbage = dir.join("garbage.json");
    std::fs::write(&garbage, "{").unwrap();
    let not_fp = dir.join("not-fp.json");
    std::fs::write(&not_fp, r#"{"schema": "vmfleet.run.v1"}"#).unwrap();
    let nowhere = dir.join("no/such/dir/vmfleet");
    let b = bad_templates.to_str().unwrap();
    let cases: [(Vec<&str>, i32, &str); 9] = [
        (
            vec!["--templates", b, "--fingerprint", fp, "--out", "-"],
            4,
            "bad.toml:1:",
        ),
        (
            vec!["--templates", m, "--fingerprint", fp, "--out", "-"],
            4,
            "missing",
        ),
        (
            vec!["--templates", t, "--fingerprint", m, "--out", "-"],
            4,
            "missing",
        ),
        (
            vec![
                "--templates",
                t,
                "--fingerprint",
                garbage.to_str().unwrap(),
                "--out",
                "-",
            ],
            4,
            "garbage.json is not JSON",
        ),
        (
            vec![
                "--templates",
                t,
                "--fingerprint",
                not_fp.to_str().unwrap(),
                "--out",
                "-",
            ],
            4,
            "not-fp.json",
        ),
        (
            vec![
                "--templates",
                t,
                "--fingerprint",
                fp,
                "--out",
                "-",
                "--json",
            ],
            2,
            "--json",
        ),
        (
            vec!["--templates", t, "--fingerprint", fp, "--expiry", "soon"],
            2,
            "soon",
        ),
        (
            vec!["--templates", t, "--fingerprint", fp, "--expiry", "0s"],
            2,
            "zero",
        ),
        (
            vec![
                "--templates",
                t,
                "--fingerprint",
                fp,
                "--out",
                nowhere.to_str().unwrap(),
            ],
            10,
            "does not exist",
        ),
    ];
    for (extra, code, says) in cases {
        let mut all = vec!["nfd"];
        all.extend(&extra);
        let out = run(&all);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(code), "{extra:?}: {stderr}");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
        assert!(stdout.is_empty(), "{extra:?}: {stdout}");
    }
    assert!(!dir.join("no").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The binary's labels are `vmfleet check TEMPLATE FP`'s verdicts: each example template and a
/// template of the host's own model, against each saved fingerprint (x86 and arm64): `true`
/// where check exits 0, `false` where it exits 7 (refused) or the template is for the other
/// architecture (check exits 4 and says so).
#[test]
fn the_labels_are_checks_verdicts() {
    let dir = scratch_dir("check");
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    for entry in std::fs::read_dir(root().join("examples/templates")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, templates.join(path.file_name().unwrap())).unwrap();
    }
    for arch in ["x86_64", "aarch64"] {
        std::fs::write(
            templates.join(format!("host-{arch}.toml")),
            format!("arch = \"{arch}\"\n"),
        )
        .unwrap();
    }
    let files = supervisor::nfd::template_files(&templates).unwrap();
    assert!(files.len() >= 4);
    let mut seen = BTreeMap::new();
    for fp in std::fs::read_dir(root().join("fixtures/fingerprints")).unwrap() {
        let fp = fp.unwrap().path();
        let out = vmfleet()
            .args(["nfd", "--out", "-", "--templates"])
            .arg(&templates)
            .arg("--fingerprint")
            .arg(&fp)
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{}: {stderr}", fp.display());
        let (labels, _) = nfd_read(&stdout);
        assert_eq!(labels.len(), files.len() + 1);
        for file in &files {
            let check = vmfleet().arg("check").arg(file).arg(&fp).output().unwrap();
            let (_, check_err) = text(&check);
            let runs = match check.status.code() {
                Some(0) => "true",
                Some(7) => "false",
                Some(4) if check_err.contains("guests and the host runs") => "false",
                other => panic!(
                    "check {} {}: {other:?} {check_err}",
                    file.display(),
                    fp.display()
                ),
            };
            let template = vcpu::model::template::CpuTemplate::parse(
                &std::fs::read_to_string(file).unwrap(),
                "t",
                &file.file_stem().unwrap().to_string_lossy(),
            )
            .unwrap();
            let label = format!("vmfleet.dev/template.{}", template.name);
            assert_eq!(labels[&label], runs, "{label} on {}", fp.display());
            *seen.entry(runs).or_insert(0) += 1;
        }
    }
    // Both answers occur, so the agreement means something.
    assert!(seen.len() == 2, "{seen:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Live: the fingerprint measured here has the digest of `host --fingerprint --json`'s
/// document; without a usable /dev/kvm the command exits 6 and says why.
#[test]
fn live_the_digest_is_that_of_host_fingerprint() {
    let dir = scratch_dir("live");
    let t = dir.to_str().unwrap();
    if !vcpu::skip::kvm_usable("live_the_digest_is_that_of_host_fingerprint") {
        let out = run(&["nfd", "--templates", t, "--out", "-"]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(6), "{stderr}");
        assert!(stderr.contains("/dev/kvm"), "{stderr}");
        return;
    }
    let host = run(&["host", "--fingerprint", "--json"]);
    assert_eq!(host.status.code(), Some(0), "{}", text(&host).1);
    let fp = dir.join("host.json");
    std::fs::write(&fp, &host.stdout).unwrap();
    let out = run(&["nfd", "--templates", t, "--out", "-"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let (labels, _) = nfd_read(&stdout);
    assert_eq!(labels["vmfleet.dev/fingerprint"], digest_of(&fp));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `examples/kubernetes/`: every `vmfleet nfd` command line in the DaemonSet and the systemd
/// service parses with vmfleet's own command line, writes where nfd-worker reads (the
/// DaemonSet's host directory), and lets labels expire only after at least two rewrites were
/// missed; the pod selects a label vmfleet writes for `examples/templates/no-avx512.toml`.
#[test]
fn the_kubernetes_examples_fit_the_command() {
    use clap::Parser as _;
    let dir = root().join("examples/kubernetes");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let expiry_of = |file: &str| -> std::time::Duration {
        let text = read(file);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && l.contains("vmfleet nfd"))
            .collect();
        assert_eq!(lines.len(), 1, "{file}: {lines:?}");
        let command = lines[0][lines[0].find("vmfleet nfd").unwrap()..]
            .split("||")
            .next()
            .unwrap();
        let cli = supervisor::cli::Cli::try_parse_from(command.split_whitespace())
            .unwrap_or_else(|e| panic!("{file}: {command}: {e}"));
        let supervisor::cli::Command::Nfd(args) = cli.command else {
            panic!("{file}: {command} is not vmfleet nfd");
        };
        assert_eq!(
            args.templates,
            Path::new("/etc/vmfleet/templates"),
            "{file}"
        );
        assert_eq!(args.out, Path::new(supervisor::nfd::DEFAULT_OUT), "{file}");
        assert!(args.fingerprint.is_none() && !args.json, "{file}");
        args.expiry.unwrap_or_else(|| panic!("{file}: no --expiry"))
    };
    let minutes = std::time::Duration::from_secs(60);
    let daemonset = read("vmfleet-nfd-daemonset.yaml");
    assert!(daemonset.contains("sleep 600\n"));
    assert!(expiry_of("vmfleet-nfd-daemonset.yaml") >= 20 * minutes);
    let features_d = Path::new(supervisor::nfd::DEFAULT_OUT).parent().unwrap();
    assert!(
        daemonset.contains(&format!("path: {}\n", features_d.display())),
        "the DaemonSet mounts the host's features.d"
    );
    assert!(read("vmfleet-nfd.timer").contains("OnUnitActiveSec=15min\n"));
    assert!(expiry_of("vmfleet-nfd.service") >= 30 * minutes);

    let pod = read("pod.yaml");
    let selector = pod
        .lines()
        .find_map(|l| l.trim().strip_prefix("vmfleet.dev/template."))
        .expect("the pod selects a template label");
    assert_eq!(selector, "no-avx512: \"true\"");
    let out = vmfleet()
        .args(["nfd", "--out", "-", "--templates"])
        .arg(root().join("examples/templates"))
        .arg("--fingerprint")
        .arg(root().join(X86_FP))
        .output()
        .unwrap();
    let (labels, _) = nfd_read(&text(&out).0);
    assert!(
        labels.contains_key("vmfleet.dev/template.no-avx512"),
        "{labels:?}"
    );
}
