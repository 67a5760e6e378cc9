//! The baseline figure: `vmfleet baseline` of 1,000 host fingerprints, read from their JSON
//! documents and settled until every host accepts the template, in under a second.
//!
//! The hosts are the repository's two measured arm64 fingerprints (Linux 6.12 and 7.2 under the
//! lab's TCG `max` CPU), each copy with lower-safe fields of ID_AA64ISAR0_EL1 lowered by its
//! index, so the copies differ the way a mixed fleet does and every field is decided by its rule,
//! not by equality. The documents are written before the clock starts; the figure is what
//! `vmfleet baseline` does with them: parse, build the template, check it on every host.

use super::BenchError;
use crate::model_cmd::{ModelHost, host_from_str};
use crate::template_cmd::baseline::make;
use serde_json::Value;
use std::time::{Duration, Instant};

/// How many fingerprints the figure takes.
pub const BASELINE_HOSTS: usize = 1000;
/// The target for them.
pub const BASELINE_TARGET: Duration = Duration::from_secs(1);

const FINGERPRINTS: [&str; 2] = [
    include_str!("../../../fixtures/fingerprints/arm64-6.12-max.host.json"),
    include_str!("../../../fixtures/fingerprints/arm64-7.2-max.host.json"),
];

/// ID_AA64ISAR0_EL1's id, as the documents spell it.
const ISAR0: &str = "0x603000000013c030";

/// `hosts` fingerprint documents: the two measured ones in turn, copy `i` with ISAR0's AES,
/// SHA1 and SHA2 fields (lower-safe, each at most 2) lowered to `i % 3`, `i % 2`, `i % 3`.
pub fn documents(hosts: usize) -> Result<Vec<String>, BenchError> {
    let parsed: Vec<Value> = FINGERPRINTS
        .iter()
        .map(|text| serde_json::from_str(text))
        .collect::<Result<_, _>>()
        .map_err(|e| BenchError::Failed(format!("a bundled fingerprint: {e}")))?;
    (0..hosts)
        .map(|i| {
            let mut doc = parsed[i % parsed.len()].clone();
            let limits = doc["arm64"]["limits"]
                .as_array_mut()
                .ok_or_else(|| BenchError::Failed("a bundled fingerprint has no limits".into()))?;
            for entry in limits.iter_mut().filter(|e| e["id"] == ISAR0) {
                let value = entry["value"]
                    .as_str()
                    .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
                    .ok_or_else(|| BenchError::Failed("ID_AA64ISAR0_EL1 unreadable".into()))?;
                let i = i as u64;
                let lowered = value & !0xfff0 | (i % 3) << 4 | (i % 2) << 8 | (i % 3) << 12;
                entry["value"] = Value::String(format!("{lowered:#x}"));
            }
            serde_json::to_string(&doc).map_err(|e| BenchError::Failed(e.to_string()))
        })
        .collect()
}

/// How long `vmfleet baseline` takes for `hosts` fingerprints (see the module).
pub fn vmfleet_baseline(hosts: usize) -> Result<Duration, BenchError> {
    let docs = documents(hosts)?;
    let started = Instant::now();
    let facts: Vec<ModelHost> = docs
        .iter()
        .enumerate()
        .map(|(i, text)| host_from_str(text, &format!("fingerprint {i}")))
        .collect::<Result<_, _>>()
        .map_err(|e| BenchError::Failed(format!("{e:#}")))?;
    let found = make(&facts, "bench").map_err(|e| BenchError::Failed(format!("{e:#}")))?;
    let took = started.elapsed();
    // The template must be the lowest copy's: AES and SHA2 at 0 on a 1,000-host fleet.
    if !found
        .limited
        .iter()
        .any(|l| l.what == "ID_AA64ISAR0_EL1.AES")
    {
        return Err(BenchError::Failed(
            "the baseline did not lower ID_AA64ISAR0_EL1.AES".into(),
        ));
    }
    Ok(took)
}
