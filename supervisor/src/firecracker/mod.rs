//! Firecracker interop: its custom CPU template JSON and the golden host fingerprints its
//! `cpu-template-helper fingerprint dump` writes (`docs/cpu_templates/` in Firecracker).
//!
//! [`format`] is the data model of both documents with a strict parser (every bitmap checked,
//! every error naming the key path and the character) and a serializer in Firecracker's shape.
//! [`fingerprint`] turns a Firecracker fingerprint into a *partial* vmfleet host (the engine's
//! facts plus the trace header's host facts), stating what the document lacks: a Firecracker
//! fingerprint holds the guest's CPU configuration only (no writable masks, no register list,
//! no capabilities, no kernel probes), so the rules fall back to their conservative side.
//! [`convert`] turns a Firecracker custom template into a vmfleet CPU template and back.

pub mod commands;
pub mod convert;
pub mod fingerprint;
pub mod format;
