//! Running the `vmfleet` binary from a test: where the repository is, a scratch directory per
//! test, a fixture trace's host fingerprint, and a `--json` document checked against its schema.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `vmfleet` binary the test was built with.
pub fn vmfleet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmfleet"))
}

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh directory for `test` of suite `suite` (emptied if a crashed run left it).
pub fn scratch_dir(suite: &str, test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmfleet-{suite}-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The host fingerprint of fixture `name`'s trace (`vmfleet trace fingerprint --json`), written
/// into `dir` as `name.json`.
pub fn trace_fingerprint(name: &str, dir: &Path) -> PathBuf {
    let out = vmfleet()
        .args(["trace", "fingerprint", "--json"])
        .arg(root().join(format!("fixtures/{name}.trace")))
        .output()
        .unwrap();
    assert!(out.status.success(), "{name}");
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// `stdout` as one JSON document, valid against `supervisor/schemas/<schema>`.
pub fn schema_valid(stdout: &[u8], schema: &str) -> Value {
    let doc: Value = serde_json::from_slice(stdout).expect("only JSON on stdout");
    let schema_doc: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("supervisor/schemas").join(schema)).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema_doc).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{schema}: {errors:#?}\n{doc:#}");
    doc
}
