//! supervisor (placeholder)
