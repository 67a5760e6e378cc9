//! A fingerprint's digest: one short, stable string that says "this host's kernel answers as
//! that one's did", for a label (`vmfleet nfd`'s `vmfleet.dev/fingerprint`) or a file name.
//!
//! The digest is SHA-256 over the document's canonical JSON: objects with their keys in byte
//! order, no whitespace, strings and numbers as `serde_json` writes them. So the same document
//! has the same digest whether it was measured live ([`Fingerprint::digest`]), read back from a
//! pretty-printed file, or had its keys reordered ([`document_digest`]). Nothing is left out:
//! the document holds no volatile part (the supported CPUID table already drops the answering
//! CPU's APIC ids, and the rewrites are measured on a fresh scratch vCPU), so two measurements
//! of one host agree, and any fact that changes (a kernel, microcode, a capability) changes it.
//!
//! The string is `sha256-` and the first 32 hex digits (128 bits) of the hash: 39 characters, a
//! valid Kubernetes label value (at most 63, `[A-Za-z0-9]` at both ends, `-` inside).

use super::Fingerprint;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// What every digest starts with: the hash it is made with.
pub const DIGEST_PREFIX: &str = "sha256-";

/// How many hex digits of the hash a digest keeps (128 bits).
pub const DIGEST_HEX_DIGITS: usize = 32;

impl Fingerprint {
    /// This document's digest (`sha256-` and 32 hex digits), equal to [`document_digest`] of the
    /// JSON `vmfleet host --fingerprint --json` prints for it. Errors only if the document cannot
    /// be turned into JSON (it always can; the error names the call).
    pub fn digest(&self) -> Result<String, serde_json::Error> {
        Ok(document_digest(&serde_json::to_value(self)?))
    }
}

/// The digest of a fingerprint document as JSON (`sha256-` and 32 hex digits): over its
/// canonical form, so key order and whitespace do not matter.
pub fn document_digest(document: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(document, &mut canonical);
    let hash = Sha256::digest(canonical.as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("{DIGEST_PREFIX}{}", &hex[..DIGEST_HEX_DIGITS])
}

/// `value` as compact JSON with every object's keys in byte order.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // Scalars: serde_json's own compact form.
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::{Arm64Facts, Facts, X86Facts};
    use recorder::HostFingerprint;
    use vcpu::GuestArch;

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/fingerprints")
            .join(name);
        std::fs::read_to_string(&path).unwrap()
    }

    #[test]
    fn the_digest_ignores_whitespace_and_key_order() {
        let text = fixture("x86-amd-family25-model17.host.json");
        let doc: Value = serde_json::from_str(&text).unwrap();
        let compact: Value = serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
        let digest = document_digest(&doc);
        assert_eq!(digest, document_digest(&compact));
        let mut canonical = String::new();
        write_canonical(&doc, &mut canonical);
        // Key order: the canonical text starts with the alphabetically first key.
        assert!(
            canonical.starts_with("{\"arch\":\"x86_64\","),
            "{canonical:.40}"
        );
        let reordered: Value =
            serde_json::from_str(r#"{"b": [1, {"d": "x", "c": null}], "a": true}"#).unwrap();
        let ordered: Value =
            serde_json::from_str(r#"{"a":true,"b":[1,{"c":null,"d":"x"}]}"#).unwrap();
        assert_eq!(document_digest(&reordered), document_digest(&ordered));
    }

    #[test]
    fn the_digest_is_a_label_value_and_changes_with_any_fact() {
        let text = fixture("arm64-7.2-max.host.json");
        let mut doc: Value = serde_json::from_str(&text).unwrap();
        let digest = document_digest(&doc);
        assert_eq!(digest.len(), DIGEST_PREFIX.len() + DIGEST_HEX_DIGITS);
        assert!(digest.starts_with(DIGEST_PREFIX));
        assert!(
            digest[DIGEST_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
        );
        doc["kernel_release"] = Value::String("7.2.1".into());
        assert_ne!(digest, document_digest(&doc));
        let other =
            document_digest(&serde_json::from_str(&fixture("arm64-6.12-max.host.json")).unwrap());
        assert_ne!(digest, other);
    }

    #[test]
    fn a_built_document_has_the_digest_of_its_json() {
        let fp = Fingerprint::build(&Facts {
            arch: GuestArch::X86_64,
            host: HostFingerprint::default(),
            x86: X86Facts::default(),
            arm64: Arm64Facts::default(),
        });
        let printed = serde_json::to_string_pretty(&fp).unwrap();
        let read: Value = serde_json::from_str(&printed).unwrap();
        assert_eq!(fp.digest().unwrap(), document_digest(&read));
        assert_eq!(fp.digest().unwrap(), fp.clone().digest().unwrap());
    }
}
