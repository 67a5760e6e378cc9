//! # replay-tests: vmfleet's hardware-free regression suite
//!
//! Replays every trace in `fixtures/` (recorded on real KVM by `cargo xtask record`) through the
//! real supervisor and snapshot-tests the canonical transcript with `insta`. The tests are in
//! `tests/`; this library only locates the fixtures.
//!
//! Must not: need `/dev/kvm` (`cargo xtask test` runs this crate again with `/dev/kvm` replaced by
//! `/dev/null` to prove it), or contain traces that were not recorded on a real kernel.

#![deny(missing_docs)]

use std::path::{Path, PathBuf};

/// The workspace's `fixtures/` directory.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fixtures")
}

/// Every `fixtures/*.trace`, sorted by name.
pub fn fixture_traces() -> Vec<PathBuf> {
    let mut traces: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures/ exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "trace"))
        .collect();
    traces.sort();
    traces
}

/// A fixture's name: its file stem.
pub fn fixture_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
