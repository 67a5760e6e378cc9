//! # supervisor: the `vmfleet` program
//!
//! Owns fleet specs ([`spec`]), the host fingerprint (the trace header's facts, [`host`]; the
//! whole `vmfleet.fingerprint.v1` document from a trace or live, [`fingerprint`]), the fleet
//! runtime (an async control plane with one event-loop thread per VM, [`fleet`]), the job that
//! runs a whole spec on it against any backend ([`job`]), what a job reports and the canonical
//! transcript ([`report`]), the commands behind the CLI ([`commands`]; the model backend's, `replay --model` and `model judge`, in [`model_cmd`]), and the control daemon
//! `vmfleet serve` ([`serve`]), its client `vmfleet ctl` ([`ctl`]) (the wire protocol between
//! them, and the one control vocabulary, is the `protocol` crate's), what the subcommands share
//! ([`common`]: stdout, the async runtime, trace files), and the benchmark of vmfleet's figures
//! against the floor ([`mod@bench`]); how the terminal is written to ([`term`]: colour, progress
//! bars); and the node-feature-discovery labels that let Kubernetes place pods by CPU template
//! ([`nfd`]).
//!
//! Must not: reach a hypervisor backend except through `vcpu::runtime::handle` (that is where the
//! pre-run lock lives), or write trace bytes itself (that is `recorder`'s format to own).

#![deny(missing_docs)]

pub mod bench;
pub mod check;
pub mod cli;
pub mod commands;
pub mod common;
pub mod ctl;
pub mod docs;
pub mod exit;
pub mod fdlimit;
pub mod fingerprint;
pub mod firecracker;
pub mod fleet;
pub mod host;
pub mod job;
pub mod model_cmd;
pub mod nfd;
pub mod replay_stream;
pub mod report;
pub mod serve;
pub mod socket;
pub mod spec;
pub mod template_cmd;
pub mod term;
pub mod trace_cmd;

/// The built-in demo fleet `vmfleet run` runs when given no spec.
pub const DEMO_FLEET: &str = include_str!("demo.toml");

/// What traces and errors call the built-in demo fleet.
pub const DEMO_SOURCE: &str = "<built-in demo fleet>";
