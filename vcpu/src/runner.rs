//! vCPU run loop (placeholder).
