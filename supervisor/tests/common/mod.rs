//! Helpers shared by the supervisor's integration tests. Each test binary uses part of them, so
//! what one binary leaves unused is not dead code.
#![allow(dead_code)]

pub mod arm64_kernel;
pub mod cli;
