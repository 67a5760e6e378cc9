//! KVM backend (placeholder).
