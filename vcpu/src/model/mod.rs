//! The guest CPU models, as data and rules: x86 ([`x86`]: the named feature catalog, building a
//! model from a request, drift between what was asked and what is held) and arm64 ([`arm64`]:
//! register ids, the ID-register catalog and field tables, firmware registers and hypercall
//! bitmaps, KVM's write rules, the spec and its planner, drift between what was planned and what is
//! held); which CPU-model writes the pre-run lock holds after the first run and how it judges them
//! identical ([`lock_policy`]); and the one "did you mean" rule of vmfleet ([`suggest`]).
//!
//! Must not: do I/O, or import anything but the hypervisor boundary's types (never
//! `hypervisor::kvm`, `guests` or `runtime`): every rule here is a function of
//! values, so it compiles and is tested the same way on any host.

pub mod arm64;
pub mod engine;
pub mod lock_policy;
pub mod suggest;
pub mod template;
pub mod tristate;
pub mod x86;
