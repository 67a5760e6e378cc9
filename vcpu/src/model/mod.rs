//! The guest CPU models, as data and rules: x86 ([`x86`]: CPUID tables, the named feature
//! catalog, building a model from a request, drift between asked and held) and arm64 ([`arm64`]:
//! register ids, the ID-register catalog and field tables, firmware registers and hypercall
//! bitmaps, KVM's write rules, the spec and its planner), the one "did you mean" rule of vmfleet
//! ([`suggest`]) and the first line of every refusal ([`headline`]).
//!
//! Must not: do I/O, or import anything but the hypervisor boundary's types (never
//! `crate::hypervisor::kvm`, `crate::guests` or `crate::runtime`): every rule here is a function of
//! values, so it compiles and is tested the same way on any host.

pub mod arm64;
pub mod headline;
pub mod suggest;
pub mod x86;
