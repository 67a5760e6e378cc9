//! Requested x86 CPU models (placeholder).
