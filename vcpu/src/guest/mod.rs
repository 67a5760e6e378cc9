//! Built-in guest programs (placeholder).
