//! Drift and guest-view comparison (placeholder).
