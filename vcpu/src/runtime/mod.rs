//! The vCPU runtime: the pre-run lock ([`lock`]), the handles that route every call and every
//! CPU-model write through it ([`handle`]), a VM's run control ([`control`]), and the run loop that
//! drives a guest program on one OS thread per vCPU ([`runner`]).
//!
//! May use the boundary, the models and the guests; must not reach the KVM backend
//! (`hypervisor::kvm`) itself: it drives whatever backend it is handed, live, recording or
//! replaying, through the [`crate::Hypervisor`] / [`crate::Vm`] / [`crate::Vcpu`] traits.

pub mod control;
pub mod handle;
pub mod lock;
pub mod runner;
