//! Replay snapshot tests live in tests/.
