//! The hypervisor boundary: what vmfleet asks of a hypervisor and what it answers.
//!
//! Owns: the vocabulary of calls, replies and exits ([`call`]), the three-layer backend interface
//! ([`backend`]: system, VM, vCPU), the errors a call can end in ([`error`], [`errno`]), the
//! logical ids of the objects calls are issued on and the guest architecture ([`ids`]), the CPUID
//! table the x86 calls carry ([`cpuid`]), the pre-run lock's refusal as it crosses the boundary
//! ([`refusal`], with the first line every refusal opens with, [`headline`]), what a start
//! benchmark is handed to run ([`workload`]), every KVM number vmfleet names ([`abi`]), and the
//! KVM implementation of the interface ([`kvm`]), the only code in vmfleet with `unsafe` and
//! `cfg(target_arch)`.
//!
//! Must not: import the CPU models, the guests or the runtime (`model`, `guests`, `runtime`).
//! The boundary is what they are built on; what they decide reaches it as data (a CPUID table, a
//! refusal) or through a trait the boundary defines and they implement (a start workload), never
//! by the boundary reaching up to them.

pub mod abi;
pub mod backend;
pub mod call;
pub mod cpuid;
pub mod errno;
pub mod error;
pub mod headline;
pub mod ids;
pub mod kvm;
pub mod refusal;
pub mod workload;
