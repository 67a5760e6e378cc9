//! `vmfleet nfd --templates DIR`: tell Kubernetes which CPU templates this host can run, as a
//! node-feature-discovery local feature file. vmfleet does not schedule across hosts; with one
//! label per template on every node, Kubernetes does (`nodeSelector:
//! {vmfleet.dev/template.NAME: "true"}`).
//!
//! The command gathers the inputs (the fingerprint, live or from `--fingerprint`; every `*.toml`
//! in DIR and the rule engine's verdict on each, the one `vmfleet check TEMPLATE FP` gives; a
//! template for the other architecture is `false`), hands them to the pure writer ([`file`]),
//! and writes the result atomically: a dot-file in the same directory (nfd-worker skips
//! dot-files), synced, then renamed over the target, so nfd never reads half a file. `--out -`
//! prints it instead.
//! `--expiry` adds `# +expiry-time=` (now plus the duration, from the system clock), after which
//! nfd drops the labels unless the file was rewritten: a host whose timer stopped loses them.
//!
//! Exit status: 0 written; 4 (bad_input) an unreadable fingerprint, templates directory or
//! template, two templates with one label, or a file too large for nfd; 6 (no_kvm) no
//! `--fingerprint` and no usable /dev/kvm; 2 (usage) `--json` with `--out -`; 10 (error) the
//! file cannot be written. JSON (`--json`, schema `vmfleet.nfd.v1`,
//! supervisor/schemas/nfd.v1.schema.json).

pub mod file;

use crate::common::{emit, emit_json};
use crate::exit::{Status, StatusExt};
use crate::fingerprint::Fingerprint;
use crate::fingerprint::digest::document_digest;
use crate::model_cmd::{ModelHost, host_from_str};
use anyhow::{Context, Result, anyhow};
use file::{FeatureFile, Label, TemplateVerdict};
use serde::Serialize;
use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use vcpu::model::engine::template::TemplateCheckError;
use vcpu::model::template::CpuTemplate;

/// The schema of `vmfleet nfd --json`.
pub const NFD_SCHEMA: &str = "vmfleet.nfd.v1";

/// Where nfd-worker reads local feature files, and vmfleet's file there: `--out`'s default.
pub const DEFAULT_OUT: &str = "/etc/kubernetes/node-feature-discovery/features.d/vmfleet";

/// The longest `--expiry` (ten years): the timestamp keeps four year digits.
pub const MAX_EXPIRY: Duration = Duration::from_secs(3650 * 86_400);

/// Whether the host can run a template: the rule engine's verdict in [`run`], a stand-in in
/// tests of [`run_with`].
pub type Verdict<'a> = &'a dyn Fn(&CpuTemplate, &ModelHost) -> Result<bool>;

/// The document `--json` prints.
#[derive(Debug, Serialize)]
struct NfdReport<'a> {
    schema: &'static str,
    /// The file written.
    path: String,
    fingerprint_digest: &'a str,
    /// The `# +expiry-time=` written, if any.
    expiry_time: Option<&'a str>,
    labels: &'a [Label],
}

/// `vmfleet nfd` with its arguments: each template judged by the rule engine, as `vmfleet check
/// TEMPLATE FP` judges it ([`crate::template_cmd::template_verdict`]). A template for the other
/// architecture is one this host cannot run (`false`), not an error: one directory may serve a
/// fleet of both.
pub fn run(args: &crate::cli::NfdArgs) -> Result<Status> {
    run_with(
        args,
        &|template, host| match crate::template_cmd::template_verdict(template, host) {
            Ok(check) => Ok(check.runs()),
            Err(TemplateCheckError::MixedArch { .. }) => Ok(false),
        },
    )
}

/// `vmfleet nfd`, asking `verdict` whether this host can run each template.
pub fn run_with(args: &crate::cli::NfdArgs, verdict: Verdict<'_>) -> Result<Status> {
    let to_stdout = args.out.as_os_str() == "-";
    if to_stdout && args.json {
        return Err(anyhow!(
            "--json prints a summary on stdout, and --out - would print the file there too: \
             give --out a file"
        ))
        .or_status(Status::Usage);
    }
    if !to_stdout {
        // Before anything is measured: a file that cannot be written is known now.
        out_target(&args.out)?;
    }
    let (document, source) = fingerprint_document(args.fingerprint.as_deref())?;
    let host = host_from_str(&document.to_string(), &source).or_status(Status::BadInput)?;
    let digest = document_digest(&document);
    let templates = read_templates(&args.templates)?;
    let verdicts = templates
        .iter()
        .map(|(path, template)| {
            let runs = verdict(template, &host)
                .with_context(|| format!("judging template {}", path.display()))
                .or_status(Status::BadInput)?;
            Ok(TemplateVerdict {
                template: template.name.clone(),
                runs,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if verdicts.is_empty() {
        crate::note!(
            "vmfleet nfd: no *.toml template in {}: the file holds only the fingerprint",
            args.templates.display()
        );
    }
    let expiry = args
        .expiry
        .map(|after| expiry_time(SystemTime::now(), after))
        .transpose()?;
    let feature_file = file::feature_file(&digest, &verdicts, expiry.as_deref())
        .map_err(|e| {
            let file_of = |name: &str| {
                templates
                    .iter()
                    .find(|(_, t)| t.name == name)
                    .map_or_else(String::new, |(path, _)| path.display().to_string())
            };
            match &e {
                file::FileError::SlugCollision { first, second, .. } => {
                    anyhow::Error::new(e.clone()).context(format!(
                        "templates {} and {}",
                        file_of(first),
                        file_of(second)
                    ))
                }
                _ => anyhow::Error::new(e)
                    .context(format!("templates in {}", args.templates.display())),
            }
        })
        .or_status(Status::BadInput)?;
    if to_stdout {
        emit(&feature_file.text)?;
        return Ok(Status::Success);
    }
    write_atomically(&args.out, &feature_file.text)?;
    if args.json {
        emit_json(&NfdReport {
            schema: NFD_SCHEMA,
            path: args.out.display().to_string(),
            fingerprint_digest: &digest,
            expiry_time: expiry.as_deref(),
            labels: &feature_file.labels,
        })?;
    } else {
        emit(&summary(&args.out, &feature_file))?;
    }
    Ok(Status::Success)
}

/// The fingerprint document as JSON, and what errors call it: `path`'s, or this host's
/// measured live.
fn fingerprint_document(path: Option<&Path>) -> Result<(Value, String)> {
    if let Some(path) = path {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading fingerprint {}", path.display()))
            .or_status(Status::BadInput)?;
        let document = serde_json::from_str(&text)
            .with_context(|| format!("fingerprint {} is not JSON", path.display()))
            .or_status(Status::BadInput)?;
        return Ok((document, path.display().to_string()));
    }
    let kvm = vcpu::hypervisor::kvm::KvmHypervisor::open()
        .map_err(anyhow::Error::new)
        .context(
            "vmfleet nfd needs a usable /dev/kvm to measure this host's fingerprint (or give \
             --fingerprint FP.json)",
        )
        .or_status(Status::NoKvm)?;
    let facts = crate::fingerprint::live::facts(&kvm)
        .context("measuring this host's fingerprint on a scratch VM")?;
    let document = serde_json::to_value(Fingerprint::build(&facts))
        .context("rendering this host's fingerprint as JSON")?;
    Ok((document, "this host's fingerprint".into()))
}

/// Every `*.toml` in `dir` (not dot-files), by name.
pub fn template_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading templates directory {}", dir.display()))
        .or_status(Status::BadInput)?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry
            .with_context(|| format!("reading templates directory {}", dir.display()))
            .or_status(Status::BadInput)?;
        let path = entry.path();
        let name = entry.file_name();
        let hidden = name.as_encoded_bytes().starts_with(b".");
        if hidden || path.extension().is_none_or(|x| x != "toml") || !path.is_file() {
            continue;
        }
        files.push(path);
    }
    files.sort();
    Ok(files)
}

/// Every template in `dir` ([`template_files`]), read and checked
/// ([`crate::template_cmd::load_template`]); two files with one template name are refused,
/// naming both.
pub fn read_templates(dir: &Path) -> Result<Vec<(PathBuf, CpuTemplate)>> {
    let mut templates: Vec<(PathBuf, CpuTemplate)> = Vec::new();
    for path in template_files(dir)? {
        let template = crate::template_cmd::load_template(&path)?;
        if let Some((other, _)) = templates.iter().find(|(_, t)| t.name == template.name) {
            return Err(anyhow!(
                "templates {} and {} are both named {:?}",
                other.display(),
                path.display(),
                template.name
            ))
            .or_status(Status::BadInput);
        }
        templates.push((path, template));
    }
    Ok(templates)
}

/// `now + after` as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn expiry_time(now: SystemTime, after: Duration) -> Result<String> {
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    Ok(rfc3339_utc((since_epoch + after).as_secs()))
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn rfc3339_utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days to civil date (Howard Hinnant's algorithm), in unsigned arithmetic from 1970 on.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `--expiry`'s value: one or more `<number><unit>` with unit `s`, `m`, `h` or `d` (`1h`,
/// `90m`, `1h30m`, `2d`), more than zero and at most ten years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{text:?} is not a duration: give a number and a unit, s, m, h or d (1h, 90m, 1h30m)"
        )
    };
    let mut total: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit = match rest[digits..].chars().next() {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3600,
            Some('d') => 86_400,
            _ => return Err(bad()),
        };
        total = number
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("{text:?} is over ten years"))?;
        rest = &rest[digits + 1..];
    }
    let duration = Duration::from_secs(total);
    if duration.is_zero() {
        return Err(format!(
            "{text:?} is zero: the labels would expire as they are written"
        ));
    }
    if duration > MAX_EXPIRY {
        return Err(format!("{text:?} is over ten years"));
    }
    Ok(duration)
}

/// Write `text` to `path` so that a reader sees the old file or the new one, never a part: a
/// dot-file beside it (nfd-worker ignores dot-files), synced, renamed over `path`. The dot-file
/// is removed if any step fails.
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let (dir, name) = out_target(path)?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = dir.join(temp_name);
    let written = write_new(&temp, text).and_then(|()| {
        std::fs::rename(&temp, path)
            .with_context(|| format!("renaming {} to {}", temp.display(), path.display()))
    });
    if written.is_err() {
        // Best effort: the error that matters is the write's.
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// The directory `path` is in (which must exist) and its file name.
fn out_target(path: &Path) -> Result<(&Path, &std::ffi::OsStr)> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("--out {} names no file", path.display()))
        .or_status(Status::Usage)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(anyhow!(
            "directory {} does not exist (is node-feature-discovery installed? create it, or \
             give --out)",
            dir.display()
        ));
    }
    Ok((dir, name))
}

/// Create `path` (mode 0644; a leftover of the same name is replaced), write `text`, sync.
fn write_new(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing leftover {}", path.display()));
        }
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// What the command prints when it wrote the file.
fn summary(path: &Path, file: &FeatureFile) -> String {
    let count = file.labels.len();
    let mut text = format!(
        "wrote {} ({count} label{}, {} bytes)\n",
        path.display(),
        if count == 1 { "" } else { "s" },
        file.text.len()
    );
    for label in &file.labels {
        text += &format!("  {}={}", label.name, label.value);
        if let Some(template) = &label.template {
            if file::slug(template) != *template {
                text += &format!("  (template {template:?})");
            }
        }
        text += "\n";
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_709_164_799), "2024-02-28T23:59:59Z");
        assert_eq!(rfc3339_utc(4_102_444_800), "2100-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_796_310_000), "2026-12-03T15:00:00Z");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_306_400);
        assert_eq!(
            expiry_time(at, Duration::from_secs(3600)).unwrap(),
            "2026-12-03T15:00:00Z"
        );
    }

    #[test]
    fn durations_parse_by_unit() {
        let secs = |t: &str| parse_duration(t).map(|d| d.as_secs());
        assert_eq!(secs("1h"), Ok(3600));
        assert_eq!(secs("90m"), Ok(5400));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("2d"), Ok(172_800));
        assert_eq!(secs("45s"), Ok(45));
        assert_eq!(secs("3650d"), Ok(MAX_EXPIRY.as_secs()));
        for bad in [
            "",
            "1",
            "h",
            "1x",
            "1 h",
            "-1h",
            "1h30",
            "0s",
            "3651d",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_atomic_write_replaces_the_file_and_leaves_no_dot_file() {
        let dir = std::env::temp_dir().join(format!("vmfleet-nfd-write-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("vmfleet");
        write_atomically(&out, "a/b=1\n").unwrap();
        write_atomically(&out, "a/b=2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a/b=2\n");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["vmfleet"]);
        // A directory that does not exist: refused, nothing created.
        let missing = dir.join("nope/vmfleet");
        let err = write_atomically(&missing, "x").unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
        assert!(!dir.join("nope").exists());
        // A target the rename cannot replace (a directory): the dot-file goes too.
        let blocked = dir.join("blocked");
        std::fs::create_dir_all(blocked.join("inside")).unwrap();
        assert!(write_atomically(&blocked, "x").is_err());
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["blocked", "vmfleet"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
