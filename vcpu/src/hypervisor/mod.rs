//! The hypervisor boundary: what vmfleet asks of a hypervisor and what it answers.
//!
//! Owns: the vocabulary of calls, replies and exits ([`call`]), the three-layer backend interface
//! ([`backend`]: system, VM, vCPU), the errors a call can end in ([`error`], [`errno`]), the
//! logical ids of the objects calls are issued on ([`ids`]), the CPUID table the x86 calls carry
//! ([`cpuid`]), every KVM number vmfleet names ([`abi`]), and the KVM implementation of the
//! interface ([`kvm`]), the only code in vmfleet with `unsafe` and `cfg(target_arch)`.
//!
//! Must not: import the CPU models, the guests or the runtime (`model`, `guests`,
//! `runtime`). The boundary is what they are built on; what they decide reaches it as data
//! (a table, a refusal, a guest image), never as a call back up.

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
